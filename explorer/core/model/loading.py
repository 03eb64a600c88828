"""Loading: a model spec + a dataset spec -> a checked :class:`LoadResult` (module, dataset, profile, channel
groups, notes). Pure and possibly slow; the window runs it in a worker and hands the result to the session."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import ExplorerError, ShapeMismatchError
from ..prune.groups import ChannelGroups, channel_groups
from . import data as data_mod
from . import zoo
from .layers import ModelProfile, profile_model


@dataclass
class LoadResult:
    """Everything :meth:`Session.resolve` built; applied atomically by :meth:`Session.apply_load`."""

    model: zoo.LoadedModel
    dataset: data_mod.DatasetBundle
    profile: ModelProfile
    groups: ChannelGroups
    input_shape: tuple[int, ...]
    notes: list[str] = field(default_factory=list)


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
            arch: str | None = None, trust: bool = False, input_shape: tuple[int, ...] | None = None) -> LoadResult:
    """Load a model and a dataset and check that they fit. Pure and possibly slow (run it in a worker)."""
    lm = zoo.load_model(model, weights=weights, arch=arch, trust=trust)
    if lm.input_shape is None and not dataset and not input_shape:
        # a TorchScript/pickled model does not say what it eats: try the built-in digits, else ask
        try:
            return resolve(model, "digits", weights, arch, trust, None)
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
    groups = channel_groups(lm.module, profile, example)
    if groups.note:
        notes.append(groups.note)
    nonfinite = [n for n, p in lm.module.named_parameters() if p.is_floating_point() and not torch.isfinite(p).all()]
    if nonfinite:
        notes.append(f"non-finite weights (NaN/inf) in {len(nonfinite)} tensor(s): {', '.join(nonfinite[:3])}"
                     " -- they are never pruned silently")
    if profile.skipped:
        notes.append(f"{len(profile.skipped)} layer(s) not listed (not used by the forward pass, or tied to another "
                     "weight): " + ", ".join(profile.skipped[:3]))
    if ds.metric != "accuracy":
        notes += ds.notes
    return LoadResult(model=lm, dataset=ds, profile=profile, groups=groups, input_shape=tuple(shape), notes=notes)


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
        return example, profile_model(lm.module, shape, example=example)
    except ShapeMismatchError as e:
        raise ShapeMismatchError(
            f"{lm.name} does not fit the dataset {ds.spec} (inputs {tuple(shape)}): {e.message}",
            "Choose a dataset of the model's input shape"
            + (f" {lm.input_shape}" if lm.input_shape else "") + ", or another model.") from None


def resolve_dataset_for(r: LoadResult, spec: str) -> LoadResult:
    """Re-resolve only the dataset for an already-loaded model (keeps the module object)."""
    lm = r.model
    ds = data_mod.load_dataset(spec, input_shape=r.input_shape if spec.split(":")[0] in ("synthetic", "imagefolder",
                                                                                         "text")
                               else lm.input_shape, tokens=token_inputs(lm))
    shape = ds.input_shape
    example, profile = _profile_on(lm, ds, shape)
    if [l.name for l in profile.layers] != [l.name for l in r.profile.layers]:
        raise ShapeMismatchError(f"{lm.name} uses different layers on {ds.spec}; reload the model instead.")
    notes = [n for n in r.notes if not n.startswith("model outputs")]
    return LoadResult(model=lm, dataset=ds, profile=profile, groups=channel_groups(lm.module, profile, example),
                      input_shape=tuple(shape), notes=notes)
