"""Opening models and datasets: File ▸ Open, recent files, the Built-in models menu, the dataset chooser.

Loading runs as a job (``model.loading.resolve`` in a worker); on success the session takes the result, on
error a dialog explains and the current model stays.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QComboBox, QInputDialog

from explorer.core.errors import ExplorerError
from explorer.core.jobs import Progress
from explorer.core.model.loading import parse_input_shape, resolve, resolve_dataset_for
from explorer.core.model.zoo import BUILTINS, torchvision_archs

from ..window.context import AppContext
from ..window.dialogs import OpenModelDialog, ask_folder, ask_model_file

MAX_RECENT = 8
DATASET_CHOICES = ["digits", "tiny-text", "synthetic", "mnist:…", "fashion-mnist:…", "cifar10:…", "cifar100:…",
                   "imagefolder:…", "text:…", "tensors:…"]
POPULAR_TORCHVISION = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "vgg16", "vgg11_bn",
                       "efficientnet_b0", "densenet121", "squeezenet1_1", "alexnet", "vit_b_16"]


class ModelActions:
    def __init__(self, ctx: AppContext, parent, recent_menu, models_menu):
        self.ctx = ctx
        self.session = ctx.session
        self.parent = parent
        self.recent_menu = recent_menu
        for b in BUILTINS.values():
            ctx.action(b.name, lambda _=False, n=b.name: self.load_model(n), None, b.description, models_menu)
        tv = models_menu.addMenu("torchvision (random weights)")
        for a in POPULAR_TORCHVISION:
            ctx.action(a, lambda _=False, n=a: self.load_model(f"torchvision:{n}"), None,
                       f"torchvision {a} with random weights (synthetic inputs)", tv)
        tv.addSeparator()
        ctx.action("Other torchvision architecture…", self.ask_torchvision, None, "", tv)
        self.dataset_combo = QComboBox()
        self.dataset_combo.addItems(DATASET_CHOICES)
        self.dataset_combo.setToolTip("Dataset for accuracy, fine-tuning and scans; '…' entries ask for a folder")
        self.dataset_combo.activated.connect(self._dataset_chosen)
        self.refresh_recent()

    # ------------------------------------------------------------------ models
    def load_model(self, spec: str, dataset: str | None = None, remember: bool = False, **kw):
        """Load in the background; on error the current model stays."""
        def work(progress, cancel):
            progress(Progress(None, f"loading {spec}"))
            return resolve(spec, dataset, **kw)

        def done(result):
            self.session.apply_load(result)
            if remember:
                self.remember(spec, kw)
            self.ctx.status(f"loaded {result.model.name} ({len(result.profile.layers)} prunable layers)", 5000)

        return self.ctx.runner.run(f"Opening {Path(spec).name if '/' in spec else spec}", work, on_done=done,
                                   cancellable=False)

    def open_dialog(self) -> None:
        path = ask_model_file(self.parent)
        if path:
            self.open_file(path)

    def open_file(self, path: str, ask: bool = True) -> None:
        kw = {}
        if ask:
            dlg = OpenModelDialog(path, list(BUILTINS) + [f"torchvision:{a}" for a in torchvision_archs()], self.parent)
            if dlg.exec() != dlg.DialogCode.Accepted:
                return
            v = dlg.values()
            try:
                kw = {"arch": v["arch"], "trust": v["trust"], "input_shape": parse_input_shape(v["input_shape"])}
            except ExplorerError as e:
                self.ctx.report_error(e)
                return
        self.load_model(path, remember=True, **kw)

    def ask_torchvision(self) -> None:
        arch, ok = QInputDialog.getItem(self.parent, "torchvision architecture", "Architecture (random weights):",
                                        torchvision_archs(), 0, False)
        if ok and arch:
            self.load_model(f"torchvision:{arch}")

    # ------------------------------------------------------------------ datasets
    def _dataset_chosen(self, index: int) -> None:
        choice = self.dataset_combo.itemText(index)
        if choice.endswith(":…"):
            kind = choice[:-2]
            if kind == "text":      # a language model's UTF-8 text file, not a folder
                from PySide6.QtWidgets import QFileDialog
                folder, _ = QFileDialog.getOpenFileName(self.parent, "UTF-8 text file", "", "Text (*.txt);;All (*)")
            elif kind == "tensors":     # your own arrays: one file with x and y (a folder of train/val/test: type it)
                from PySide6.QtWidgets import QFileDialog
                folder, _ = QFileDialog.getOpenFileName(self.parent, "Arrays x and y (or train.* in a folder)", "",
                                                        "Arrays (*.npz *.safetensors *.pt);;All (*)")
                if folder and Path(folder).stem in ("train", "val", "test"):
                    folder = str(Path(folder).parent)      # a split file: the folder of the three
            else:
                folder = ask_folder(self.parent, f"Folder of {kind}")
            if not folder:
                self.sync_dataset_combo()
                return
            choice = f"{kind}:{folder}"
        self.set_dataset(choice)

    def set_dataset(self, spec: str) -> None:
        s = self.session
        if not s.loaded_ok:
            return
        r = s.require()

        def work(progress, cancel):
            progress(Progress(None, f"opening dataset {spec}"))
            return resolve_dataset_for(r, spec)

        def done(new):
            s.apply_dataset(new)
            self.ctx.status(f"dataset {new.dataset.spec}: {new.dataset.size('test')} test samples", 5000)

        def failed(e):
            self.sync_dataset_combo()
            self.ctx.report_error(e)

        self.ctx.runner.run(f"Opening dataset {spec}", work, on_done=done, on_error=failed, cancellable=False)

    def sync_dataset_combo(self) -> None:
        if not self.session.loaded_ok:
            return
        spec = self.session.dataset.spec
        i = self.dataset_combo.findText(spec)
        if i < 0:
            self.dataset_combo.addItem(spec)
            i = self.dataset_combo.count() - 1
        self.dataset_combo.setCurrentIndex(i)

    # ------------------------------------------------------------------ recent files
    def remember(self, spec: str, kw: dict) -> None:
        settings = self.ctx.settings
        items = [x for x in (settings.value("recent", []) or []) if x != spec]
        items.insert(0, spec)
        settings.setValue("recent", items[:MAX_RECENT])
        if kw.get("arch"):
            settings.setValue(f"arch/{spec}", kw["arch"])
        self.refresh_recent()

    def refresh_recent(self) -> None:
        self.recent_menu.clear()
        items = self.ctx.settings.value("recent", []) or []
        if isinstance(items, str):
            items = [items]
        for spec in items:
            arch = self.ctx.settings.value(f"arch/{spec}", None)
            act = self.recent_menu.addAction(spec)      # owned by the menu: clear() frees it
            act.triggered.connect(lambda _=False, s=spec, a=arch: self.load_model(s, arch=a))
        self.recent_menu.setEnabled(bool(items))
