"""Dataset specs -> datasets with fixed train/val/test splits.

Spec strings (a contract; the README's table lists them): ``digits`` (scikit-learn's bundled
8x8 handwritten digits, no download), ``mnist:ROOT``, ``fashion-mnist:ROOT``,
``cifar10:ROOT``, ``cifar100:ROOT`` (torchvision's on-disk formats, never
downloaded), ``imagefolder:DIR``, ``synthetic`` (random inputs of the
model's input shape, no labels: latency and size only; random token ids for a
language model) and ``text:FILE`` (UTF-8 text as next-token blocks for a causal
language model: ``text_data.py``) and ``tensors:PATH`` (your own arrays in a .npz/.safetensors/.pt file or a
folder of train/val/test files; classification or regression: ``tensor_data.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from ..errors import DatasetError
from ..fileio import expand

SPLITS = ("train", "val", "test")
SPLIT_SEED = 0

# Normalisation of the digits dataset, stated once: pixel values 0..16 are
# scaled to 0..1, then standardised with the mean/std of the whole dataset.
DIGITS_SCALE = 16.0
DIGITS_MEAN = 0.3050
DIGITS_STD = 0.3760
# Split sizes for digits: 1,797 images -> 1,257 train / 180 val / 360 test.
DIGITS_VAL = 180
DIGITS_TEST = 360

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

SYNTHETIC_SAMPLES = 256
SYNTHETIC_BYTES = 512 * 2**20    # big inputs get fewer synthetic samples (at least 16)


@dataclass
class DatasetBundle:
    """A dataset resolved from a spec: three splits, input shape, class count."""

    spec: str
    name: str
    splits: dict[str, Dataset | None]
    input_shape: tuple[int, ...]
    num_classes: int | None
    has_labels: bool = True
    notes: list[str] = field(default_factory=list)
    _device_tensors: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    metric: str = "accuracy"        # "perplexity" for next-token data, "mse" for regression (train.metric)

    def split(self, split: str) -> Dataset:
        if split not in SPLITS:
            raise DatasetError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
        ds = self.splits.get(split)
        if ds is None or len(ds) == 0:
            raise DatasetError(f"The dataset {self.spec} has no '{split}' split (or it is empty).")
        return ds

    def size(self, split: str) -> int:
        ds = self.splits.get(split)
        return 0 if ds is None else len(ds)

    def batches(self, split: str, batch_size: int = 256, shuffle: bool = False,
                seed: int = 0, limit: int | None = None, shard: "Shard | None" = None,
                device: torch.device | str | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Yield ``(inputs, labels)``; labels are ``None`` for unlabelled data.

        In-memory tensor datasets are sliced directly (no per-item collate), which keeps evaluation of small
        datasets fast; with ``device`` they are moved there once (cached) and sliced on the device.
        ``shard`` gives this process its part of every batch (data-parallel training or evaluation): see
        :class:`Shard`.
        """
        ds = self.split(split)
        n = len(ds) if limit is None else min(limit, len(ds))
        if shuffle:
            order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
        else:
            order = torch.arange(n)
        chunks = shard.chunks(order, batch_size) if shard is not None else (
            order[i:i + batch_size] for i in range(0, n, batch_size))
        dev = torch.device(device) if device is not None else None
        tensors = self._tensors(split, dev)
        if tensors is not None:
            x_all, y_all = tensors
            for idx in chunks:
                if dev is not None and dev.type != "cpu":
                    idx = idx.to(dev)
                yield x_all[idx], (None if y_all is None else y_all[idx])
            return
        for idx in chunks:
            loader = DataLoader(Subset(ds, idx.tolist()), batch_size=max(1, len(idx)), shuffle=False, num_workers=0)
            for batch in loader:
                if isinstance(batch, (list, tuple)):
                    x, y = batch[0], (batch[1] if len(batch) > 1 and self.has_labels else None)
                else:
                    x, y = batch, None
                if dev is not None:
                    x = x.to(dev, non_blocking=True)
                    y = None if y is None else y.to(dev, non_blocking=True)
                yield x, y

    def _tensors(self, split: str, device: torch.device | None):
        """The split's (inputs, labels) tensors when it is held in memory; on an accelerator they are moved
        there once and kept (the host copy is what the splits already hold)."""
        on_device = device is not None and device.type != "cpu"
        key = (split, str(device))
        if on_device and key in self._device_tensors:
            return self._device_tensors[key]
        tensors = _tensors_of(self.split(split))
        if tensors is None or not on_device:
            return tensors
        tensors = tuple(None if t is None else t.to(device) for t in tensors)
        self._device_tensors[key] = tensors
        return tensors

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """A fixed input of the dataset's shape (the first samples of the test split when there is one)."""
        for split in ("test", "val", "train"):
            if self.size(split):
                x, _ = next(self.batches(split, batch_size=batch))
                if x.shape[0] < batch:
                    reps = -(-batch // x.shape[0])
                    x = x.repeat(reps, *([1] * (x.dim() - 1)))[:batch]
                return x
        return torch.zeros(batch, *self.input_shape)


@dataclass(frozen=True)
class Shard:
    """This process's part of every batch in data-parallel work (``rank`` of ``world_size`` processes).

    Every process draws the same order (same seed). Training (``pad``): the order is padded by wrapping to a
    multiple of ``world_size`` (as torch's DistributedSampler does) and every global batch of
    ``ceil(batch_size / world_size) * world_size`` samples is dealt out round-robin, so each process gets the
    same number of batches of equal size and the processes together see what one process with that batch
    size would. Evaluation (no ``pad``): every sample exactly once, dealt round-robin; sums are all-reduced.
    """

    rank: int
    world_size: int
    pad: bool = True

    def chunks(self, order: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        w = self.world_size
        if not self.pad:
            mine = order[self.rank::w]
            for i in range(0, len(mine), batch_size):
                yield mine[i:i + batch_size]
            return
        if len(order) % w:
            reps = -(-w // max(1, len(order)))
            order = torch.cat([order, order.repeat(reps)[:w - len(order) % w]])
        global_batch = -(-batch_size // w) * w
        for i in range(0, len(order), global_batch):
            yield order[i:i + global_batch][self.rank::w]


def _tensors_of(ds: Dataset):
    """(inputs, labels) if ``ds`` is an in-memory TensorDataset (or a Subset of one)."""
    if isinstance(ds, TensorDataset):
        return ds.tensors[0], (ds.tensors[1] if len(ds.tensors) > 1 else None)
    if isinstance(ds, Subset) and isinstance(ds.dataset, TensorDataset):
        idx = torch.as_tensor(ds.indices)
        t = ds.dataset.tensors
        return t[0][idx], (t[1][idx] if len(t) > 1 else None)
    return None


def dataset_names() -> list[str]:
    return ["digits", "tiny-text", "mnist:ROOT", "fashion-mnist:ROOT", "cifar10:ROOT", "cifar100:ROOT",
            "imagefolder:DIR", "synthetic", "text:FILE", "tensors:PATH"]


def load_dataset(spec: str | None, input_shape: tuple[int, ...] | None = None,
                 tokens: dict | None = None) -> DatasetBundle:
    """Resolve a dataset spec. ``input_shape`` is needed for ``synthetic`` and used to size images.
    ``tokens`` describes a language model's inputs (``vocab_size``, ``tokenizer`` folder): synthetic data
    are then token ids, and ``text:FILE`` is tokenized for it."""
    spec = (spec or "digits").strip()
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    if kind == "text":
        return _text(spec, arg, input_shape, tokens)
    if kind == "tiny-text":
        return _tiny_text(spec, input_shape, tokens)
    if kind == "tensors":
        return _tensors(spec, arg)
    if tokens and kind != "synthetic":
        raise DatasetError(f"A language model reads text, not the image dataset {spec}.",
                           "Use text:FILE (a UTF-8 text file) or synthetic.")
    if kind == "digits":
        return _digits(spec, input_shape)
    if kind == "synthetic":
        if tokens and input_shape:
            from .text_data import token_splits
            return DatasetBundle(spec="synthetic", name="synthetic", input_shape=tuple(input_shape), num_classes=None,
                                 splits=token_splits(input_shape, tokens["vocab_size"], SYNTHETIC_SAMPLES // 4,
                                                     SPLIT_SEED), has_labels=False,
                                 notes=["random token ids without labels: latency and size only, no perplexity"])
        return _synthetic(spec, input_shape)
    if kind in ("mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder"):
        if not arg:
            what = "DIR" if kind == "imagefolder" else "ROOT"
            raise DatasetError(f"The dataset spec '{spec}' needs a folder: write it as {kind}:{what}.")
        root = expand(arg)
        if not root.exists():
            raise DatasetError(f"The folder '{root}' for dataset {kind} does not exist.",
                               "Check the path; datasets are read from disk and never downloaded.")
        if kind == "imagefolder":
            return _imagefolder(spec, root, input_shape)
        return _torchvision_dataset(spec, kind, root)
    raise DatasetError(f"Unknown dataset spec '{spec}'.",
                       f"Use one of: {', '.join(dataset_names())}.")


def _text(spec: str, arg: str, input_shape, tokens: dict | None) -> DatasetBundle:
    from .text_data import text_splits

    if not arg:
        raise DatasetError("The dataset spec 'text:' needs a file: write it as text:FILE (a UTF-8 text file).")
    if not tokens:
        raise DatasetError(f"{spec} is text, for a causal language model; this model takes other inputs.",
                           "Open a language model (hf:DIR with a …ForCausalLM), or choose an image dataset.")
    block = int(input_shape[0]) if input_shape and len(input_shape) == 1 else 128
    vocab = tokens.get("vocab_size")
    splits, note = text_splits(arg, block, tokens.get("tokenizer"), vocab)
    return DatasetBundle(spec=spec, name="text", splits=splits, input_shape=(block,), num_classes=vocab, notes=[note],
                         metric="perplexity")


def _tiny_text(spec: str, input_shape, tokens: dict | None) -> DatasetBundle:
    from .text_data import TINY_TEXT, tiny_text_file

    path = tiny_text_file(spec, tokens)
    b = _text(f"text:{path}", str(path), input_shape, tokens)
    b.spec, b.name = TINY_TEXT, TINY_TEXT
    return b


def _tensors(spec: str, arg: str) -> DatasetBundle:
    from .tensor_data import tensor_splits

    if not arg:
        raise DatasetError("The dataset spec 'tensors:' needs a path: write it as tensors:FILE (.npz, .safetensors "
                           "or .pt with x and y) or tensors:DIR (train.*, val.*, test.*).")
    splits, shape, classes, metric, note = tensor_splits(arg)
    return DatasetBundle(spec=spec, name="tensors", splits=splits, input_shape=shape, num_classes=classes,
                         notes=[note], metric=metric)


def _seeded_split(n: int, sizes: tuple[int, int], seed: int = SPLIT_SEED):
    """Indices (train, val, test) of a fixed, seeded permutation; sizes = (val, test)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val, n_test = sizes
    test = perm[:n_test]
    val = perm[n_test:n_test + n_val]
    train = perm[n_test + n_val:]
    return train.tolist(), val.tolist(), test.tolist()


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as (images N x 8 x 8 in 0..16, labels), read from its CSV file directly:
    the same numbers as ``sklearn.datasets.load_digits``, without importing scikit-learn (seconds at start-up)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.exists():
        from sklearn.datasets import load_digits  # an unusual install: let scikit-learn find its data
        d = load_digits()
        return d.images, d.target
    a = np.loadtxt(path, delimiter=",")
    return a[:, :-1].reshape(-1, 8, 8), a[:, -1].astype(np.int64)


def _digits(spec: str, input_shape=None) -> DatasetBundle:
    """The 8x8 digits; for a model that takes bigger single-channel images (digits-vgg: 1x32x32) they are
    upscaled once, bilinearly, before the same normalisation."""
    images, target = digits_arrays()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / DIGITS_SCALE
    size = tuple(input_shape[1:]) if input_shape and len(input_shape) == 3 and input_shape[0] == 1 else (8, 8)
    if size != (8, 8):
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    x = (x - DIGITS_MEAN) / DIGITS_STD
    y = torch.tensor(target, dtype=torch.long)
    full = TensorDataset(x, y)
    train, val, test = _seeded_split(len(full), (DIGITS_VAL, DIGITS_TEST))
    splits = {"train": TensorDataset(x[train], y[train]),
              "val": TensorDataset(x[val], y[val]),
              "test": TensorDataset(x[test], y[test])}
    return DatasetBundle(spec="digits", name="digits", splits=splits, input_shape=(1, *size), num_classes=10)


class SyntheticInputs(Dataset):
    """Seeded random inputs made when asked for (sample ``i`` is always the same tensor), so that 256 samples of
    a 224x224 model cost no memory until a batch of them is used (they were 154 MB held for the whole run)."""

    def __init__(self, shape: tuple[int, ...], start: int, stop: int):
        self.shape, self.start, self.stop = shape, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> tuple[torch.Tensor]:
        i = int(i)                      # numpy and tensor indices too, and negative ones, as TensorDataset takes
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        g = torch.Generator().manual_seed(SPLIT_SEED * 100_003 + self.start + i)
        return (torch.randn(self.shape, generator=g),)


def _synthetic(spec: str, input_shape) -> DatasetBundle:
    if not input_shape:
        raise DatasetError("The synthetic dataset needs an input shape.",
                           "Give --input-shape C,H,W (the model does not declare one).")
    per_sample = 4 * int(np.prod(input_shape))
    n = max(16, min(SYNTHETIC_SAMPLES, SYNTHETIC_BYTES // max(1, per_sample)) // 4 * 4)
    half = n // 2
    shape = tuple(int(d) for d in input_shape)
    splits = {"train": SyntheticInputs(shape, 0, half), "val": SyntheticInputs(shape, half, 3 * half // 2),
              "test": SyntheticInputs(shape, 3 * half // 2, n)}
    return DatasetBundle(spec="synthetic", name="synthetic", splits=splits, input_shape=tuple(input_shape),
                         num_classes=None, has_labels=False,
                         notes=["random inputs without labels: latency and size only, no accuracy"])


_TV = {
    "mnist": ("MNIST", (1, 28, 28), 10, MNIST_MEAN, MNIST_STD),
    "fashion-mnist": ("FashionMNIST", (1, 28, 28), 10, FASHION_MEAN, FASHION_STD),
    "cifar10": ("CIFAR10", (3, 32, 32), 10, CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": ("CIFAR100", (3, 32, 32), 100, CIFAR100_MEAN, CIFAR100_STD),
}
TV_VAL = 5000  # images held out of the official training set as the val split (at most a tenth of it)


def _as_tensors(ds, mean, std, classes: int) -> TensorDataset:
    """torchvision's in-memory uint8 images -> one normalised float tensor (fast batches, no per-item PIL).
    Labels outside 0..classes-1 are refused here, not as an index error deep inside training."""
    data = ds.data
    x = torch.as_tensor(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
    if x.dim() == 3:                       # MNIST-like: N x H x W
        x = x.unsqueeze(1)
    elif x.shape[-1] in (1, 3):            # CIFAR: N x H x W x C
        x = x.permute(0, 3, 1, 2)
    x = x.float().div_(255.0)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    sd = torch.tensor(std).view(1, -1, 1, 1)
    x = (x - m) / sd
    y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        bad = int(y[(y < 0) | (y >= classes)][0])
        raise DatasetError(f"The labels hold {bad}, outside the {classes} classes 0..{classes - 1} of this dataset.",
                           "The label file is damaged or belongs to another dataset.")
    return TensorDataset(x.contiguous(), y)


def _torchvision_dataset(spec: str, kind: str, root: Path) -> DatasetBundle:
    import torchvision

    cls_name, shape, classes, mean, std = _TV[kind]
    cls = getattr(torchvision.datasets, cls_name)
    try:
        train_full = _as_tensors(cls(str(root), train=True, download=False), mean, std, classes)
        test = _as_tensors(cls(str(root), train=False, download=False), mean, std, classes)
    except (RuntimeError, OSError, ValueError, TypeError, AssertionError) as e:
        raise DatasetError(
            f"No readable {cls_name} data under '{root}' ({str(e).strip() or type(e).__name__}).",
            f"Put torchvision's {cls_name} files there (e.g. copy them from a machine with internet, "
            f"where torchvision.datasets.{cls_name}(root, download=True) fetches them); the app never downloads.") from None
    n = len(train_full)
    n_val = min(TV_VAL, n // 10)
    perm = torch.as_tensor(np.random.default_rng(SPLIT_SEED).permutation(n))
    x, y = train_full.tensors
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    splits = {"train": TensorDataset(x[train_idx], y[train_idx]), "val": TensorDataset(x[val_idx], y[val_idx]),
              "test": test}
    return DatasetBundle(spec=spec, name=kind, splits=splits, input_shape=shape, num_classes=classes)


IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _open_image(path: str):
    """PIL's loader, with a clear error naming the file when an image is damaged or not an image."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DatasetError(f"The image '{path}' cannot be read ({type(e).__name__}: {str(e)[:120]}).",
                           "Remove or replace the damaged file, then open the dataset again.") from None


READ_CHECK = 64     # images tried when a folder is opened (images are read lazily afterwards)


def _check_some_readable(samples: list, d: Path) -> None:
    """Refuse a folder whose images cannot be read (every command, not only those that evaluate): reading
    stops at the first good image, so a healthy folder costs one image; a damaged one later is named then."""
    first = None
    for path, _ in samples[:READ_CHECK]:
        try:
            _open_image(path)
            return
        except DatasetError as e:
            first = first or e
    if first is not None:
        which = f"the first {READ_CHECK}" if len(samples) > READ_CHECK else f"the {len(samples)}"
        raise DatasetError(f"None of {which} images in '{d}' can be read; {first.message[0].lower()}"
                           f"{first.message[1:]}", first.hint)


def _imagefolder(spec: str, root: Path, input_shape) -> DatasetBundle:
    from torchvision import datasets
    from torchvision import transforms as T

    if not root.is_dir():
        raise DatasetError(f"'{root}' is not a folder.", "imagefolder:DIR needs a folder with one sub-folder per class.")
    size = tuple(input_shape[1:]) if input_shape and len(input_shape) == 3 else (224, 224)
    channels = input_shape[0] if input_shape and len(input_shape) == 3 else 3
    steps = [T.Resize(size)]
    if channels == 1:
        steps.append(T.Grayscale(1))
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN[:channels] if channels == 3 else (0.5,),
                                        IMAGENET_STD[:channels] if channels == 3 else (0.5,))]
    tf = T.Compose(steps)

    def open_folder(d: Path):
        try:
            folder = datasets.ImageFolder(str(d), transform=tf, loader=_open_image)
        except (FileNotFoundError, RuntimeError) as e:
            raise DatasetError(f"No images found in '{d}' ({e}).",
                               "imagefolder:DIR needs one sub-folder per class, each with image files "
                               f"({', '.join(IMG_EXTENSIONS[:5])}, ...).") from None
        _check_some_readable(folder.samples, d)
        return folder

    sub = {s: root / s for s in SPLITS if (root / s).is_dir()}
    if "train" in sub and ("val" in sub or "test" in sub):
        splits = {s: open_folder(d) for s, d in sub.items()}
        if "test" not in splits:
            splits["test"] = splits["val"]
        if "val" not in splits:
            splits["val"] = splits["test"]
        classes = len(splits["train"].classes)
    else:
        full = open_folder(root)
        n = len(full)
        n_test = max(1, n // 10) if n >= 3 else 0
        n_val = max(1, n // 10) if n >= 3 else 0
        tr, va, te = _seeded_split(n, (n_val, n_test))
        splits = {"train": Subset(full, tr), "val": Subset(full, va) if va else None,
                  "test": Subset(full, te) if te else Subset(full, tr)}
        classes = len(full.classes)
    return DatasetBundle(spec=spec, name="imagefolder", splits=splits, input_shape=(channels, *size),
                         num_classes=classes)


def labelled_by_model(bundle: DatasetBundle, module, batch_size: int = 256) -> DatasetBundle:
    """The same inputs, labelled by the model's own predictions (for benchmarks on random weights:
    the dense model scores 100% and pruning shows a real accuracy curve)."""
    splits = {}
    module.eval()
    classes = 0
    with torch.inference_mode():
        for name in SPLITS:
            ds = bundle.splits.get(name)
            if ds is None or len(ds) == 0:
                splits[name] = ds
                continue
            xs, ys = [], []
            for x, _ in bundle.batches(name, batch_size=batch_size):
                out = module(x)
                out = out[0] if isinstance(out, (tuple, list)) else out
                xs.append(x)
                ys.append(out.argmax(1))
            x, y = torch.cat(xs), torch.cat(ys)
            classes = max(classes, int(out.shape[1]))
            splits[name] = TensorDataset(x, y)
    return DatasetBundle(spec=bundle.spec + "+self-labelled", name=bundle.name, splits=splits,
                         input_shape=bundle.input_shape, num_classes=classes, has_labels=True,
                         notes=["labels are the dense model's own predictions"])
