"""File ▸ Export: pruned checkpoint, recipe, sparse archive, compacted model (+TorchScript), everything."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QFileDialog

from explorer.core.deploy import export
from explorer.core.deploy.compact import channel_removals, compact_model, has_structure
from explorer.core.jobs import Progress
from explorer.core.analyse.latency import latency_input
from explorer.core.prune.recipe import plan_to_recipe
from .results import model_copy


class ExportActions:
    def __init__(self, win):
        self.win = win
        self.session = win.session
        m = win.export_menu
        win._act("Pruned &checkpoint (.pt)…", self.ask_checkpoint, QKeySequence("Ctrl+E"),
                 "state_dict with exact zeros; loads into the original architecture with plain torch", m)
        win._act("&Recipe (.json)…", self.ask_recipe, QKeySequence("Ctrl+Shift+E"),
                 "Per-layer sparsity/granularity/criterion: reproduces the masks", m)
        win._act("&Sparse archive (.npz)…", self.ask_archive, None,
                 "CSR per prunable layer (scipy.sparse), dense for the rest; reloads bit-identically", m)
        win._act("C&ompacted model (.pt + TorchScript)…", self.ask_compact, None,
                 "Channels physically removed: a smaller dense network (whole module and TorchScript)", m)
        m.addSeparator()
        win._act("&Everything to a folder…", self.ask_folder, None,
                 "model.pt, recipe.json, report.json, model_sparse.npz (+ model_compact.pt)", m)

    def _path(self, title: str, name: str, filt: str) -> str | None:
        p, _ = QFileDialog.getSaveFileName(self.win, title, name, filt)
        return p or None

    def _recipe(self) -> dict:
        s = self.session
        return plan_to_recipe(s.plan, s.model_spec, s.dataset.spec, seed=s.seed,
                              extra={"weights": s.base_label})

    def _done(self, what: str, path) -> None:
        s = self.session
        s.saved_plan = s.plan.copy()
        self.win.status(f"exported {what}: {path}", 6000)
        self.win._update_actions()

    # each export runs as a job: materialising masks of a big model takes a moment
    def checkpoint(self, path: str):
        s = self.session
        plan = s.plan.copy()
        return self.win.runner.run("Exporting checkpoint",
                                   lambda p, c: export.export_checkpoint(s.masked_state(plan), Path(path)),
                                   on_done=lambda r: self._done("checkpoint", r))

    def recipe(self, path: str):
        try:
            r = export.export_recipe(self._recipe(), Path(path))
            self._done("recipe", r)
        except Exception as e:
            self.win.report_error(e)

    def archive(self, path: str):
        s = self.session
        plan = s.plan.copy()
        meta = {"model": s.model_spec, "arch": s.require().model.arch, "dataset": s.dataset.spec}
        return self.win.runner.run("Exporting sparse archive",
                                   lambda p, c: export.export_sparse_archive(s.masked_state(plan), s.layer_names,
                                                                             meta, Path(path)),
                                   on_done=lambda r: self._done("sparse archive", r))

    def compact(self, path: str):
        s = self.session
        plan = s.plan.copy()
        if not has_structure(plan):
            self.win.show_error("Nothing to compact", "Compaction removes channels pruned with 'channel' "
                                                      "granularity; this plan has none, so the compacted model would "
                                                      "equal the masked one.")
            return None
        removals = channel_removals(s, plan)
        example = latency_input(s.dataset, s.require().input_shape, 2)

        def work(progress, cancel):
            state = s.masked_state(plan)
            masked = model_copy(s, state)
            m = compact_model(masked, state, removals, example, progress, cancel)
            out = export.export_module(m, Path(path), example)
            progress(Progress(0.9, "writing TorchScript"))
            ts = Path(path).with_suffix(".ts")
            try:
                export.export_torchscript(m, ts, example)
            except Exception as e:  # tracing can fail on exotic models; the .pt is still valid
                return out, f"TorchScript skipped: {e}"
            return out, str(ts)

        return self.win.runner.run("Exporting compacted model", work,
                                   on_done=lambda r: self._done("compacted model", f"{r[0]} ({r[1]})"))

    def everything(self, folder: str):
        s = self.session
        plan = s.plan.copy()
        meta = {"model": s.model_spec, "arch": s.require().model.arch, "dataset": s.dataset.spec}
        structured = has_structure(plan)
        removals = channel_removals(s, plan) if structured else {}
        example = latency_input(s.dataset, s.require().input_shape, 2)
        recipe = self._recipe()
        dense_eval = s.results.get("dense_eval")
        cur = s.results.get("current_eval")
        lat = s.results.get("latency")

        def work(progress, cancel):
            from explorer.core.deploy.report import build_report, compact_block
            out = Path(folder)
            state = s.masked_state(plan)
            progress(Progress(0.2, "writing model.pt"))
            export.export_checkpoint(state, out / "model.pt")
            export.export_recipe(recipe, out / "recipe.json")
            progress(Progress(0.4, "writing model_sparse.npz"))
            export.export_sparse_archive(state, s.layer_names, meta, out / "model_sparse.npz")
            compact = None
            if structured:
                progress(Progress(0.6, "compacting"))
                m = compact_model(model_copy(s, state), state, removals, example, cancel=cancel)
                export.export_module(m, out / "model_compact.pt", example)
                L = lat[1] if lat else None
                compact = compact_block(m, s.require().input_shape, None,
                                        L["compact"].median_ms if L and L.get("compact") and L["plan"] == plan else None)
            L = lat[1] if lat and lat[1]["plan"] == plan else None
            report = build_report(s, plan, s.original_state(), state,
                                  dense_eval.accuracy if dense_eval else None,
                                  cur[1].accuracy if cur and s.applied_plan == plan and cur[0] == s.version else None,
                                  L["dense"].median_ms if L else None, L["masked"].median_ms if L else None, compact)
            export.atomic_write_json(out / "report.json", report)
            return out

        return self.win.runner.run("Exporting everything", work, on_done=lambda r: self._done("everything", r))

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

    def ask_folder(self):
        d = QFileDialog.getExistingDirectory(self.win, "Export everything to folder")
        if d:
            self.everything(d)
