"""File ▸ Export: pruned checkpoint, recipe, sparse archive, compacted model (+TorchScript), everything.

Each export runs as a job (materialising the masks of a big model takes a moment) and is written
atomically, reloaded and checked by core before it replaces anything. "Everything" is the same results
bundle the CLI's ``prune`` writes, with the measurements the window has for the exported state.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QFileDialog

from explorer.core.analyse.latency import latency_input
from explorer.core.deploy import export
from explorer.core.deploy.bundle import write_bundle
from explorer.core.jobs import Progress
from explorer.core.prune.compact import channel_removals, compact_checked, has_structure
from explorer.core.prune.recipe import plan_to_recipe
from explorer.core.train.metric import metric_of

from ..window.context import AppContext


class ExportActions:
    def __init__(self, ctx: AppContext, menu, parent):
        self.ctx = ctx
        self.session = ctx.session
        self.parent = parent
        a = ctx.action
        a("Pruned &checkpoint (.pt)…", self.ask_checkpoint, QKeySequence("Ctrl+E"),
          "state_dict with exact zeros; loads into the original architecture with plain torch", menu)
        a("&Recipe (.json)…", self.ask_recipe, QKeySequence("Ctrl+Shift+E"),
          "Per-layer sparsity/granularity/criterion: reproduces the masks", menu)
        a("&Sparse archive (.npz)…", self.ask_archive, None,
          "CSR per prunable layer (scipy.sparse), dense for the rest; reloads bit-identically", menu)
        a("C&ompacted model (.pt + TorchScript)…", self.ask_compact, None,
          "Channels physically removed: a smaller dense network (whole module and TorchScript)", menu)
        a("Sparse r&untime (TorchScript)…", self.ask_sparse_runtime, None,
          "The pruned model with each layer measured faster as CSR (at its sparsity and the Latency tab's batch) "
          "replaced by a sparse kernel, the rest dense; runs with torch alone", menu)
        menu.addSeparator()
        a("&Everything to a folder…", self.ask_folder, None,
          "model.pt, recipe.json, report.json, model_sparse.npz (+ model_compact.pt)", menu)

    def _path(self, title: str, name: str, filt: str) -> str | None:
        p, _ = QFileDialog.getSaveFileName(self.parent, title, name, filt)
        return p or None

    def _recipe(self) -> dict:
        s = self.session
        return plan_to_recipe(s.plan, s.model_spec, s.dataset.spec, seed=s.seed,
                              extra={"weights": s.base_label, **s.calibration.record(),
                                     "reconstruct": s.base_label.startswith("reconstructed")})

    def _archive_meta(self) -> dict:
        s = self.session
        return {"model": s.model_spec, "arch": s.require().model.arch, "dataset": s.dataset.spec}

    def _done(self, what: str, path, plan) -> None:
        self.session.editor.mark_saved(plan)
        self.ctx.status(f"exported {what}: {path}", 6000)

    def _export_job(self, title: str, what: str, fn):
        """Run ``fn(snapshot, progress, cancel)`` on a snapshot of the current plan (the job never reads the live
        session); the plan is marked saved when it is done."""
        snap = self.session.snapshot()
        return self.ctx.runner.run(title, lambda p, c: fn(snap, p, c),
                                   on_done=lambda r: self._done(what, r, snap.plan))

    def checkpoint(self, path: str):
        return self._export_job("Exporting checkpoint", "checkpoint",      # with the module versions (metadata)
                                lambda snap, p, c: export.export_checkpoint(snap.masked_state(), Path(path),
                                                                            snap.module))

    def recipe(self, path: str):
        try:
            self._done("recipe", export.export_recipe(self._recipe(), Path(path)), self.session.plan)
        except Exception as e:
            self.ctx.report_error(e)

    def archive(self, path: str):
        meta = self._archive_meta()
        return self._export_job("Exporting sparse archive", "sparse archive",
                                lambda snap, p, c: export.export_sparse_archive(snap.masked_state(), snap.layer_names,
                                                                                meta, Path(path)))

    def _compaction(self, plan):
        """(removals, example input) for compacting ``plan``; a plan without channel pruning has nothing to remove."""
        s = self.session
        return channel_removals(s, plan), latency_input(s.dataset, s.require().input_shape, 2)

    def compact(self, path: str):
        s = self.session
        if not has_structure(s.plan):
            self.ctx.show_error("Nothing to compact", "Compaction removes channels pruned with 'channel' granularity; "
                                                      "this plan has none, so the compacted model would equal the "
                                                      "masked one.")
            return None
        try:
            removals, example = self._compaction(s.plan)
        except Exception as e:
            self.ctx.report_error(e)
            return None

        def work(snap, progress, cancel):
            state = snap.masked_state()
            m, _ = compact_checked(snap.model_copy(state), state, removals, example, progress, cancel)
            out = export.export_module(m, Path(path), example)
            progress(Progress(0.9, "writing TorchScript"))
            ts = Path(path).with_suffix(".ts")
            try:
                export.export_torchscript(m, ts, example)
            except Exception as e:  # tracing can fail on exotic models; the .pt is still valid
                return f"{out} (TorchScript skipped: {e})"
            return f"{out} ({ts})"

        return self._export_job("Exporting compacted model", "compacted model", work)

    def sparse_runtime(self, path: str):
        """The sparse runtime (core/deploy/sparse_runtime.py) of the plan, timed and saved on the CPU."""
        from explorer.core.deploy.sparse_runtime import build_sparse_runtime, save_sparse_runtime

        s = self.session
        batch = int(self.ctx.settings.value("latency/batch", 1))
        example = latency_input(s.dataset, s.require().input_shape, batch)

        def work(snap, progress, cancel):
            rt = build_sparse_runtime(snap.model_copy(snap.masked_state()), example, snap.layer_names,
                                      progress=progress, cancel=cancel)
            save_sparse_runtime(rt, Path(path), example)
            return f"{path} ({len(rt.layers)} of {len(snap.layer_names)} layer(s) as CSR at batch {batch})"

        return self._export_job("Exporting sparse runtime", "sparse runtime", work)

    def everything(self, folder: str):
        from explorer.core.deploy.report import build_report, compact_block

        s = self.session
        structured = has_structure(s.plan)
        try:
            removals, example = self._compaction(s.plan) if structured else ({}, None)
        except Exception as e:
            self.ctx.report_error(e)
            return None
        recipe, meta = self._recipe(), self._archive_meta()
        m = s.measurements
        metric = metric_of(s.dataset)        # accuracy, or a language model's perplexity
        fresh_acc = metric.value(m.current.value) if s.is_fresh(m.current) else None
        lat = m.latency.value if s.is_fresh(m.latency) else None

        def work(snap, progress, cancel):
            state = snap.masked_state()
            compacted = compact = None
            if structured:
                progress(Progress(0.3, "compacting"))
                compacted, _ = compact_checked(snap.model_copy(state), state, removals, example, cancel=cancel)
                compact = compact_block(compacted, snap.input_shape, None,
                                        lat.compact.median_ms if lat and lat.compact else None, metric.name,
                                        example[:1])
            report = build_report(snap, snap.plan, snap.original, state, metric.value(m.dense), fresh_acc,
                                  lat.dense.median_ms if lat else None, lat.masked.median_ms if lat else None, compact,
                                  metric=metric.name)
            progress(Progress(0.6, "writing the results folder"))
            write_bundle(folder, state, recipe, report, snap.layer_names, archive_meta=meta, compacted=compacted,
                         example=example, like=snap.module)
            return folder

        return self._export_job("Exporting everything", "everything", work)

    # dialogs
    def ask_checkpoint(self):
        p = self._path("Export pruned checkpoint", "model.pt", "PyTorch (*.pt *.pth)")
        if p:
            self.checkpoint(p)

    def ask_recipe(self):
        p = self._path("Export recipe", "recipe.json", "JSON (*.json)")
        if p:
            self.recipe(p)

    def ask_archive(self):
        p = self._path("Export sparse archive", "model_sparse.npz", "NumPy archive (*.npz)")
        if p:
            self.archive(p)

    def ask_compact(self):
        p = self._path("Export compacted model", "model_compact.pt", "PyTorch (*.pt)")
        if p:
            self.compact(p)

    def ask_sparse_runtime(self):
        p = self._path("Export sparse runtime", "model_sparse_runtime.ts", "TorchScript (*.ts *.pt)")
        if p:
            self.sparse_runtime(p)

    def ask_folder(self):
        d = QFileDialog.getExistingDirectory(self.parent, "Export everything to folder")
        if d:
            self.everything(d)
