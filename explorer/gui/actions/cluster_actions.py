"""Fine-tuning on a cluster from the window: Export ▸ Fine-tune job for a cluster… writes the recipe and a ready
torchrun command (core: ``finetune_job.write_job``); File ▸ Import result… reads the folder the cluster
wrote back into the History (``read_result`` + ``session.results.adopt_result``)."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
)

from explorer.core.device import cuda_count
from explorer.core.finetune_job import JOB_SCRIPT, read_result, torchrun_command, write_job
from explorer.core.prune.recipe import plan_to_recipe

from ..window.context import AppContext
from ..window.dialogs import free_when_closed


class JobDialog(QDialog):
    """How many processes and nodes, on which device, how many epochs."""

    def __init__(self, epochs: int, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Fine-tune job for a cluster")
        form = QFormLayout()
        self.nproc = QSpinBox()
        self.nproc.setRange(1, 256)
        self.nproc.setValue(max(1, cuda_count()) if cuda_count() else 4)
        self.nproc.setToolTip("Processes per node: one per GPU, or a few per machine on CPUs (gloo)")
        self.nnodes = QSpinBox()
        self.nnodes.setRange(1, 4096)
        self.nnodes.setToolTip("Machines: with more than one, run the script on each with NODE_RANK and "
                               "MASTER_ADDR set")
        self.device = QComboBox()
        self.device.addItems(["auto", "cuda", "cpu"])
        self.device.setToolTip("auto: NCCL on GPUs when the node has them, else gloo on CPUs")
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 10_000)
        self.epochs.setValue(epochs)
        self.epochs.setToolTip("Epochs per step (the other settings come from the Fine-tune tab)")
        form.addRow("Processes per node", self.nproc)
        form.addRow("Nodes", self.nnodes)
        form.addRow("Device", self.device)
        form.addRow("Epochs", self.epochs)
        note = QLabel("Each process takes its share of every batch (distributed data parallel); the masks are "
                      "computed once and checked identical on every process. The job starts from the model as "
                      "its spec loads it.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(note)
        lay.addWidget(buttons)
        self.setMinimumWidth(460)


class ClusterActions:
    """``act_job`` and ``act_import``: the window puts them in its Export and File menus."""

    def __init__(self, ctx: AppContext, parent, finetune_config: Callable):
        self.ctx, self.parent, self.finetune_config = ctx, parent, finetune_config
        self.session = ctx.session
        self.act_job = ctx.action("Fine-tune &job for a cluster…", self.ask_job, None,
                                  "Write the recipe and a ready torchrun command that fine-tunes it with distributed "
                                  "data parallel")
        self.act_import = ctx.action("&Import result…", self.ask_import, "Ctrl+I",
                                     "Read a results folder (from `pruning-explorer finetune` on a cluster, or "
                                     "prune) into the History")

    # ------------------------------------------------------------------ export a job
    def recipe(self, epochs: int) -> dict:
        from dataclasses import replace

        s = self.session
        cfg = replace(self.finetune_config(), epochs=epochs)
        return plan_to_recipe(s.plan, s.model_spec, s.dataset.spec, seed=s.seed,
                              extra={"finetune": cfg.as_dict(), **s.calibration.record()})

    def ask_job(self) -> None:
        if not self.session.loaded_ok:
            return
        dlg = JobDialog(self.finetune_config().epochs, self.parent)
        free_when_closed(dlg)
        dlg.accepted.connect(lambda: self._choose_folder(dlg.nproc.value(), dlg.nnodes.value(),
                                                         dlg.device.currentText(), dlg.epochs.value()))
        dlg.open()

    def _choose_folder(self, nproc: int, nnodes: int, device: str, epochs: int) -> None:
        folder = QFileDialog.getExistingDirectory(self.parent, "Folder for the fine-tune job")
        if folder:
            self.write(folder, nproc, nnodes, device, epochs)

    def write(self, folder: str, nproc: int = 4, nnodes: int = 1, device: str = "auto", epochs: int = 3):
        try:
            files = write_job(folder, self.recipe(epochs), nproc, nnodes, device)
        except Exception as e:
            self.ctx.report_error(e)
            return None
        self.ctx.status(f"fine-tune job written: {files['script']}", 6000)
        self._show_command(Path(folder), torchrun_command("recipe.json", "result", nproc, nnodes, device))
        return files

    def _show_command(self, folder: Path, line: str) -> None:
        dlg = QDialog(self.parent)
        dlg.setWindowTitle("Fine-tune job written")
        text = QPlainTextEdit(f"cd {shlex.quote(str(folder))}\n{line}")
        text.setReadOnly(True)
        text.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        text.setMinimumSize(640, 90)
        text.setMaximumHeight(110)
        info = QLabel(f"<b>{folder / 'recipe.json'}</b> and <b>{folder / JOB_SCRIPT}</b> are written. Run the "
                      "script (or this line) where the GPUs are; add <code>--resume</code> after an interruption. "
                      "Then File ▸ Import result… and choose its <code>result</code> folder.")
        info.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok)
        buttons.accepted.connect(dlg.accept)
        lay = QVBoxLayout(dlg)
        lay.addWidget(info)
        lay.addWidget(text)
        lay.addWidget(buttons)
        free_when_closed(dlg)
        dlg.setObjectName("jobWrittenDialog")
        dlg.open()

    # ------------------------------------------------------------------ import a result
    def ask_import(self) -> None:
        if not self.session.loaded_ok:
            return
        folder = QFileDialog.getExistingDirectory(self.parent, "Import a results folder")
        if folder:
            self.import_result(folder)

    def import_result(self, folder: str):
        s = self.session
        return self.ctx.start_job("Importing result", lambda p, c: read_result(folder, s),
                                  on_done=s.results.adopt_result)
