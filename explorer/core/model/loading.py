"""Loading: a model spec + a dataset spec -> a checked :class:`LoadResult` (module, dataset, profile, channel
groups, notes). Pure and possibly slow; the window runs it in a worker and hands the result to the session."""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from typing import Callable

import torch

from ..errors import ExplorerError, ShapeMismatchError
from ..finite import all_finite
from . import data as data_mod
from . import zoo
from .groups import ChannelGroups, channel_groups
from .layers import ModelProfile, profile_model


class LoadResult:
    """Everything :meth:`Session.resolve` built; applied atomically by :meth:`Session.apply_load`.

    ``groups`` may be given as a function: the channel-group analysis (Torch-Pruning's dependency graph, whose
    import alone takes seconds) then runs on first use of :attr:`groups` -- the window starts it in the
    background after its first frame -- and its note joins :attr:`notes` then."""

    def __init__(self, model: zoo.LoadedModel, dataset: data_mod.DatasetBundle, profile: ModelProfile,
                 groups: ChannelGroups | Callable[[], ChannelGroups], input_shape: tuple[int, ...],
                 notes: list[str] | None = None):
        self.model, self.dataset, self.profile = model, dataset, profile
        self.input_shape = tuple(input_shape)
        self.notes = list(notes or [])
        self._groups_lock = threading.Lock()
        self._groups: ChannelGroups | None = None
        self._groups_fn: Callable[[], ChannelGroups] | None = None
        if callable(groups) and not isinstance(groups, ChannelGroups):
            self._groups_fn = groups
        else:
            self._groups = groups

    @property
    def groups_ready(self) -> bool:
        """The channel groups are known (False while a deferred analysis has not run yet)."""
        return self._groups is not None

    @property
    def groups(self) -> ChannelGroups:
        if self._groups is None:
            with self._groups_lock:
                if self._groups is None:
                    g = self._groups_fn()
                    if g.note:
                        self.notes.append(g.note)
                    self._groups, self._groups_fn = g, None
        return self._groups

    @groups.setter
    def groups(self, value: ChannelGroups) -> None:
        with self._groups_lock:
            self._groups, self._groups_fn = value, None

    def take_groups_of(self, other: "LoadResult") -> None:
        """Adopt ``other``'s channel groups, still deferred if they are (switching datasets)."""
        with self._groups_lock:
            self._groups, self._groups_fn = other._groups, other._groups_fn


MAX_INPUT_ELEMENTS = 3 * 4096 * 4096     # one sample of at most 192 MiB in fp32


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        shape = tuple(int(x) for x in str(text).replace("x", ",").split(",") if x.strip())
    except ValueError:
        raise ExplorerError(f"Input shape '{text}' is not a list of integers; write it as C,H,W (e.g. 3,224,224).") from None
    if not shape or any(s <= 0 for s in shape):
        raise ExplorerError(f"Input shape '{text}' must be positive integers, e.g. 3,224,224.")
    if len(shape) > 4 or math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise ExplorerError(f"Input shape '{text}' is too large for one sample ({math.prod(shape):,} values; at most "
                            f"{MAX_INPUT_ELEMENTS:,}, e.g. 3,4096,4096).", "Give the shape the model really takes.")
    return shape


def resolve(model: str | None = None, dataset: str | None = None, weights: str | None = None,
            arch: str | None = None, trust: bool = False, input_shape: tuple[int, ...] | None = None,
            defer_groups: bool = False) -> LoadResult:
    """Load a model and a dataset and check that they fit. Pure and possibly slow (run it in a worker).

    ``defer_groups``: leave the channel-group analysis for the first use of ``result.groups`` (the window
    shows itself first and runs it in the background)."""
    lm = zoo.load_model(model, weights=weights, arch=arch, trust=trust)
    if lm.input_shape is None and not dataset and not input_shape:
        # a TorchScript/pickled model does not say what it eats: try the built-in digits, else ask
        try:
            return resolve(model, "digits", weights, arch, trust, None, defer_groups)
        except ShapeMismatchError:
            raise ShapeMismatchError(
                f"The input shape of {lm.name} is unknown (it does not take the built-in 1x8x8 digits).",
                "Give it with --input-shape C,H,W (e.g. 3,224,224; in the window: the Input shape field), "
                "or choose a dataset.") from None
    ds_spec = dataset or lm.default_dataset
    shape = tuple(input_shape) if input_shape else None
    notes = list(lm.notes)
    tokens = token_inputs(lm)
    if tokens and shape is not None and len(shape) != 1:
        raise ShapeMismatchError(f"{lm.name} is a language model: its input is a block of tokens, so --input-shape "
                                 f"is one number (tokens per block), not {shape}.")
    if ds_spec.split(":")[0] == "synthetic":
        shape = shape or lm.input_shape
        if shape is None:
            raise ShapeMismatchError(f"The input shape of {lm.name} is unknown.",
                                     "Give it with --input-shape C,H,W (e.g. 3,224,224), or choose a dataset.")
        ds = data_mod.load_dataset(ds_spec, input_shape=shape, tokens=tokens)
    else:
        ds = data_mod.load_dataset(ds_spec, input_shape=shape or lm.input_shape, tokens=tokens)
        if shape and tuple(shape) != tuple(ds.input_shape):
            notes.append(f"dataset gives {ds.input_shape}, --input-shape said {shape}: using the dataset's")
        shape = ds.input_shape
    if lm.input_shape and tuple(lm.input_shape) != tuple(shape):
        notes.append(f"{lm.name} is usually fed {lm.input_shape}; running it at {tuple(shape)}")
    example, profile = _profile_on(lm, ds, shape)
    if not profile.layers:
        raise ExplorerError(f"{lm.name} has no prunable layers (Conv1d/Conv2d/Conv3d/Linear with a weight).",
                            "Nothing to prune here; open a network with convolutional or linear layers.")
    out_dim = profile.output_shape[0] if profile.output_shape else None
    if ds.has_labels and ds.num_classes and out_dim is not None and len(profile.output_shape) == 1:
        if out_dim < ds.num_classes:
            raise ShapeMismatchError(
                f"{lm.name} outputs {out_dim} classes but {ds.spec} has {ds.num_classes}.",
                "Choose a model trained for this dataset.")
        if out_dim != ds.num_classes:
            notes.append(f"model outputs {out_dim} classes, dataset has {ds.num_classes}: accuracy uses the first "
                         f"{ds.num_classes}")
    from .tensor_data import check_fits_model

    check_fits_model(ds, profile.output_shape, lm.name)
    if defer_groups:
        groups = (lambda: channel_groups(lm.module, profile, example))
    else:
        groups = channel_groups(lm.module, profile, example)
        if groups.note:
            notes.append(groups.note)
    nonfinite = [n for n, p in lm.module.named_parameters() if not all_finite(p)]
    if nonfinite:
        notes.append(f"non-finite weights (NaN/inf) in {len(nonfinite)} tensor(s): {', '.join(nonfinite[:3])}"
                     " -- they are never pruned silently")
    if profile.skipped:
        notes.append(f"{len(profile.skipped)} layer(s) not listed (not used by the forward pass, or tied to another "
                     "weight): " + ", ".join(profile.skipped[:3]))
    if ds.metric != "accuracy" or ds.name == "tensors":
        notes += ds.notes
    return LoadResult(model=lm, dataset=ds, profile=profile, groups=groups, input_shape=tuple(shape), notes=notes)


SMALL_MODEL_PARAMS = 5_000_000   # profiled on one thread: waking a thread pool costs more than such a forward


@contextmanager
def _threads_for(module: torch.nn.Module):
    """One intra-op thread while profiling a small model: its batch-1 forward takes a few ms on one thread, and
    10-300 ms with the pool's first wake-up on a busy machine (part of every start-up); big models keep all."""
    small = sum(p.numel() for p in module.parameters()) < SMALL_MODEL_PARAMS
    before = torch.get_num_threads()
    if small and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def token_inputs(lm: zoo.LoadedModel) -> dict | None:
    """What a language model's datasets need (vocabulary, tokenizer folder); None for other models."""
    if lm.task != "causal-lm":
        return None
    return {"vocab_size": lm.vocab_size, "tokenizer": lm.tokenizer}


def _profile_on(lm: zoo.LoadedModel, ds: data_mod.DatasetBundle, shape) -> tuple[torch.Tensor, ModelProfile]:
    """(an example input, the model's profile) on the dataset; a model that cannot take its inputs is refused."""
    try:
        example = ds.example_input(1)
    except ExplorerError:
        example = torch.zeros(1, *shape, dtype=torch.long if lm.task == "causal-lm" else torch.float32)
    try:
        with _threads_for(lm.module):
            return example, profile_model(lm.module, shape, example=example)
    except ShapeMismatchError as e:
        raise ShapeMismatchError(
            f"{lm.name} does not fit the dataset {ds.spec} (inputs {tuple(shape)}): {e.message}",
            "Choose a dataset of the model's input shape"
            + (f" {lm.input_shape}" if lm.input_shape else "") + ", or another model.") from None


def resolve_dataset_for(r: LoadResult, spec: str, defer_groups: bool = False) -> LoadResult:
    """Re-resolve only the dataset for an already-loaded model (keeps the module object)."""
    lm = r.model
    ds = data_mod.load_dataset(spec, input_shape=r.input_shape if spec.split(":")[0] in ("synthetic", "imagefolder",
                                                                                         "text", "tensors")
                               else lm.input_shape, tokens=token_inputs(lm))
    shape = ds.input_shape
    example, profile = _profile_on(lm, ds, shape)
    if [l.name for l in profile.layers] != [l.name for l in r.profile.layers]:
        raise ShapeMismatchError(f"{lm.name} uses different layers on {ds.spec}; reload the model instead.")
    from .tensor_data import check_fits_model

    check_fits_model(ds, profile.output_shape, lm.name)
    notes = [n for n in r.notes if not n.startswith("model outputs")]
    groups = (lambda: channel_groups(lm.module, profile, example)) if defer_groups else \
        channel_groups(lm.module, profile, example)
    return LoadResult(model=lm, dataset=ds, profile=profile, groups=groups, input_shape=tuple(shape), notes=notes)
