"""File ▸ Export ▸ safetensors / ONNX: the formats people deploy with.

``model.safetensors`` holds the pruned state_dict (the tensors of the pruned checkpoint); ``model.onnx`` is the
pruned model as a graph -- compacted first when the plan prunes channels -- checked with onnxruntime against
PyTorch before it replaces anything (core ``deploy.formats``). Both run as jobs.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from explorer.core.analyse.latency import latency_input
from explorer.core.deploy.formats import export_onnx, export_safetensors
from explorer.core.jobs import Progress
from explorer.core.prune.compact import compact_checked, compaction_plan, has_structure

from ..window.context import AppContext


class DeployExports:
    def __init__(self, ctx: AppContext, menu, parent):
        self.ctx = ctx
        self.session = ctx.session
        self.parent = parent
        ctx.action("Safe&tensors (.safetensors)…", self.ask_safetensors, None,
                   "The pruned state_dict as safetensors: tensors only, so loading it never runs code", menu)
        ctx.action("O&NX (.onnx)…", self.ask_onnx, None,
                   "The pruned model (compacted when channels are pruned) as an ONNX graph, checked with "
                   "onnxruntime against PyTorch (within 1e-4)", menu)

    def _done(self, what: str, path, plan) -> None:
        self.session.editor.mark_saved(plan)
        self.ctx.status(f"exported {what}: {path}", 6000)

    def safetensors(self, path: str):
        snap = self.session.snapshot()
        return self.ctx.runner.run("Exporting safetensors",
                                   lambda p, c: export_safetensors(snap.masked_state(), Path(path)),
                                   on_done=lambda r: self._done("safetensors", r, snap.plan))

    def onnx(self, path: str):
        s, plan = self.session, self.session.plan
        try:
            removals = compaction_plan(s, plan)[0] if has_structure(plan) else {}
        except Exception as e:
            self.ctx.report_error(e)
            return None
        example = latency_input(s.dataset, s.require().input_shape, 1)

        snap = s.snapshot(plan)

        def work(progress, cancel):
            state = snap.masked_state()
            model = snap.model_copy(state)
            if removals:
                progress(Progress(0.2, "compacting"))
                model, _ = compact_checked(model, state, removals, example, cancel=cancel)
            progress(Progress(0.5, "exporting ONNX and checking it with onnxruntime"))
            return export_onnx(model, example, Path(path))

        return self.ctx.runner.run("Exporting ONNX", work, on_done=lambda r: self._done("ONNX model", r, plan))

    def ask_safetensors(self):
        p, _ = QFileDialog.getSaveFileName(self.parent, "Export safetensors", "model.safetensors",
                                           "safetensors (*.safetensors)")
        if p and self.session.loaded_ok:
            self.safetensors(p)

    def ask_onnx(self):
        p, _ = QFileDialog.getSaveFileName(self.parent, "Export ONNX", "model.onnx", "ONNX (*.onnx)")
        if p and self.session.loaded_ok:
            self.onnx(p)
