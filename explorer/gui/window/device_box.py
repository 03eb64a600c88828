"""The device chooser in the status bar: where evaluation, fine-tuning, scans and latency run."""
from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QLabel, QStatusBar

from explorer.core.device import available_devices, describe, resolve_device

from .context import AppContext

SETTING = "device"
TIP = ("Where jobs run: evaluation, fine-tuning, quantization training, scans and latency. auto takes the first "
       "CUDA GPU when there is one. The weights you see and edit stay on the CPU; each job copies the model to "
       "the device and moves the data there once.")


class DeviceBox:
    """A labelled combo box; the choice is the session's device and is remembered between runs."""

    def __init__(self, ctx: AppContext, bar: QStatusBar):
        self.ctx = ctx
        self.label = QLabel("Device:")
        self.combo = QComboBox()
        self.combo.setToolTip(TIP)
        self.label.setToolTip(TIP)
        for name in available_devices():
            self.combo.addItem(self._text(name), name)
        self.combo.setSizeAdjustPolicy(QComboBox.AdjustToContents)
        bar.addPermanentWidget(self.label)
        bar.addPermanentWidget(self.combo)
        wanted = str(ctx.settings.value(SETTING, "auto"))
        index = self.combo.findData(wanted)
        self.combo.setCurrentIndex(index if index >= 0 else 0)
        self._choose(self.combo.currentIndex(), quiet=True)
        self.combo.currentIndexChanged.connect(self._choose)
        ctx.runner.job_started.connect(lambda *_: self.combo.setEnabled(False))   # a job keeps its device
        ctx.runner.job_finished.connect(lambda *_: self.combo.setEnabled(not ctx.runner.busy))

    @staticmethod
    def _text(name: str) -> str:
        if name == "auto":
            return f"auto ({describe(resolve_device('auto'))})"
        return describe(resolve_device(name)) if name != "cpu" else "CPU"

    def _choose(self, index: int, quiet: bool = False) -> None:
        name = self.combo.itemData(index) or "auto"
        try:
            dev = self.ctx.session.set_device(name)
        except Exception as e:   # a device that went away (driver reset, unplugged eGPU): back to the CPU
            self.ctx.session.set_device("cpu")
            if not quiet:
                self.ctx.report_error(e)
            return
        self.ctx.settings.setValue(SETTING, name)
        if not quiet:
            self.ctx.status(f"jobs now run on {describe(dev)}", 3000)
