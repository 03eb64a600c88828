"""Dialogs: errors, opening a model file (architecture + trust), choosing a dataset folder."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QVBoxLayout,
    QWidget,
)

from explorer.core.errors import ExplorerError

MODEL_FILTER = "Models (*.pt *.pth *.pth.tar *.ckpt *.bin *.ts *.jit *.npz);;All files (*)"


def show_error(parent: QWidget | None, title: str, message: str, details: str = "") -> QMessageBox:
    """A window-modal, non-blocking error box (tests and the event loop keep running)."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Warning if not details else QMessageBox.Critical)
    box.setWindowTitle(title)
    box.setText(f"<b>{title}</b>")
    box.setInformativeText(message)
    if details:
        box.setDetailedText(details)
    box.setStandardButtons(QMessageBox.Ok)
    box.setObjectName("errorDialog")
    box.setStyleSheet("QLabel#qt_msgbox_informativelabel { min-width: 460px; }")
    free_when_closed(box)
    box.open()
    return box


def free_when_closed(dialog) -> None:
    """A dialog shown with open() is hidden, not freed, when answered: free it then (else every error
    leaks a dialog)."""
    dialog.setAttribute(Qt.WA_DeleteOnClose)
    dialog.finished.connect(dialog.deleteLater)


def error_text(e: Exception) -> tuple[str, str]:
    if isinstance(e, ExplorerError):
        return getattr(e, "title", "Problem"), str(e)
    return "Unexpected error", f"{type(e).__name__}: {e}"


class OpenModelDialog(QDialog):
    """A checkpoint file plus what it needs: the architecture (state_dicts) and trust (pickles)."""

    def __init__(self, path: str, archs: list[str], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Open model file")
        self.arch = QComboBox()
        self.arch.setEditable(True)
        self.arch.addItem("(detect: built-in match or TorchScript)")
        self.arch.addItems(archs)
        self.arch.setToolTip("A state_dict holds only weights: name the architecture it was saved from")
        self.trust = QCheckBox("Trust this file (TorchScript or a whole pickled module: runs code from the file)")
        self.trust.setToolTip("Only for files you trust: a TorchScript archive and a pickled module are code, which "
                              "runs while the file is loaded. State_dicts and sparse archives never need this.")
        self.input_shape = QLineEdit()
        self.input_shape.setPlaceholderText("C,H,W (only if it cannot be inferred)")
        form = QFormLayout()
        form.addRow("File", QLabel(Path(path).name))
        form.addRow("Architecture", self.arch)
        form.addRow("Input shape", self.input_shape)
        form.addRow("", self.trust)
        buttons = QDialogButtonBox(QDialogButtonBox.Open | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(buttons)

    def values(self) -> dict:
        arch = self.arch.currentText().strip()
        return {"arch": None if arch.startswith("(") or not arch else arch, "trust": self.trust.isChecked(),
                "input_shape": self.input_shape.text().strip() or None}


def ask_model_file(parent) -> str | None:
    path, _ = QFileDialog.getOpenFileName(parent, "Open model", "", MODEL_FILTER)
    return path or None


def ask_folder(parent, title: str) -> str | None:
    d = QFileDialog.getExistingDirectory(parent, title)
    return d or None
