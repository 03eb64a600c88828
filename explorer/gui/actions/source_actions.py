"""Built-in models ▸ Hugging Face folder / timm / your own class: the model sources beyond checkpoint files.

A Hugging Face folder loads offline and never runs code from the folder; your own class is code, so the
window asks before importing it (the CLI's ``--trust``). Loading runs in the background like every model.
"""
from __future__ import annotations

from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox

from ..window.context import AppContext


class SourceActions:
    def __init__(self, ctx: AppContext, parent, models_menu, load_model):
        self.ctx = ctx
        self.parent = parent
        self.load_model = load_model     # ModelActions.load_model(spec, dataset=None, remember=False, **kw)
        models_menu.addSeparator()
        ctx.action("Hugging Face folder (hf:DIR)…", self.ask_hf, None,
                   "A folder written by save_pretrained: image classifiers and causal language models; "
                   "loaded offline, never running code from the folder", models_menu)
        ctx.action("timm architecture…", self.ask_timm, None, "Any timm architecture with random weights",
                   models_menu)
        ctx.action("Your own class (module.path:ClassName)…", self.ask_class, None,
                   "Import your module and build ClassName() -- importing runs its code", models_menu)

    def ask_hf(self) -> None:
        d = QFileDialog.getExistingDirectory(self.parent, "Hugging Face model folder (config.json + model.safetensors)")
        if d:
            self.load_model(f"hf:{d}", remember=True)

    def ask_timm(self) -> None:
        from explorer.core.model.sources import timm_archs

        try:
            archs = timm_archs()
        except Exception as e:
            self.ctx.report_error(e)
            return
        arch, ok = QInputDialog.getItem(self.parent, "timm architecture", "Architecture (random weights):", archs,
                                        archs.index("resnet18") if "resnet18" in archs else 0, True)
        if ok and arch:
            self.load_model(f"timm:{arch.strip()}")

    def ask_class(self) -> None:
        spec, ok = QInputDialog.getText(self.parent, "Your own class",
                                        "module.path:ClassName (found from the current folder or PYTHONPATH):")
        if not ok or not spec.strip():
            return
        answer = QMessageBox.question(
            self.parent, "Run this module's code?",
            f"Opening {spec.strip()} imports its module, which runs the module's code. Only continue for code you "
            "wrote or trust.", QMessageBox.Yes | QMessageBox.Cancel, QMessageBox.Cancel)
        if answer == QMessageBox.Yes:
            self.load_model(spec.strip(), trust=True)
