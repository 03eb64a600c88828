"""Exports people deploy: safetensors, ONNX, and a Hugging Face folder -- each reloaded and checked before
it is renamed into place (``fileio.atomic_write``).

- ``model.safetensors``: the same tensors as ``model.pt`` (every key, bit for bit); safetensors holds
  tensors and a JSON header only, so loading it runs no code.
- ``model.onnx``: the model as a graph (the pruned model, or the compacted one when there is one), exported
  with torch.export (falling back to the TorchScript-based exporter), batch size left free; reloaded with
  onnxruntime and run on the example, whose outputs must equal PyTorch's within ``ONNX_RTOL`` of their scale.
- ``model_hf/``: a pruned Hugging Face model, written by ``save_pretrained`` and loaded back by
  ``from_pretrained`` to check its logits (``model.hf.save_folder``).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ExplorerError
from ..extras import require
from ..fileio import atomic_write, bit_equal

EXPORT_FORMATS = ("safetensors", "onnx")
ONNX_RTOL = 1e-4       # max |onnxruntime - PyTorch| over max |PyTorch|
ONNX_OPSET = 18


def parse_exports(text: str | None) -> tuple[str, ...]:
    """``--export safetensors,onnx`` -> ("safetensors", "onnx"); unknown names are one clear error."""
    if not text:
        return ()
    names = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    bad = [n for n in names if n not in EXPORT_FORMATS]
    if bad:
        raise ExplorerError(f"Unknown export format '{bad[0]}'.", f"Use one or more of: {', '.join(EXPORT_FORMATS)} "
                            "(comma-separated, e.g. --export safetensors,onnx).")
    return tuple(dict.fromkeys(names))


def export_safetensors(state: dict[str, torch.Tensor], path: Path) -> Path:
    """Every tensor of ``state`` (contiguous copies: safetensors refuses shared or strided storage)."""
    st = require("safetensors.torch", "The safetensors export")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}

    def save(tmp):
        st.save_file(tensors, str(tmp), metadata={"format": "pt"})

    def verify(tmp):
        back = st.load_file(str(tmp), device="cpu")
        if set(back) != set(state):
            raise ExplorerError(f"The safetensors export did not reload with the same tensors: "
                                f"{sorted(set(back) ^ set(state))[:5]}")
        for k, v in state.items():
            if not bit_equal(back[k], v.detach().cpu()):
                raise ExplorerError(f"The safetensors export did not reload identically (tensor {k}).")
    return atomic_write(Path(path), save, verify)


def graph_module(module: nn.Module) -> nn.Module:
    """The module as a plain function of one tensor to one tensor (transformers models return their logits)."""
    from ..model.hf import LogitsOnly, is_hf

    return LogitsOnly(module).eval() if is_hf(module) else module.eval()


def _reference(module: nn.Module, example: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = module(example)
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.detach()


def _export_onnx(module: nn.Module, example: torch.Tensor, path: str) -> None:
    errors = []
    for dynamo in (True, False):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if dynamo:
                    require("onnxscript", "The ONNX export")
                    batch = torch.export.Dim("batch", min=1, max=65536)
                    torch.onnx.export(module, (example,), path, dynamo=True, input_names=["input"],
                                      output_names=["output"], dynamic_shapes=({0: batch},), verbose=False,
                                      external_data=False)
                else:
                    torch.onnx.export(module, (example,), path, dynamo=False, input_names=["input"],
                                      output_names=["output"], opset_version=ONNX_OPSET,
                                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
            return
        except ExplorerError:
            raise
        except Exception as e:
            errors.append(f"{'torch.export' if dynamo else 'TorchScript'}: {type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}")
    raise ExplorerError("The model could not be exported to ONNX (" + "; ".join(errors) + ").",
                        "The PyTorch exports (model.pt, model.safetensors) are still written.")


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime session on the CPU."""
    ort = require("onnxruntime", "Running an ONNX model")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def check_onnx(path: str | Path, reference: torch.Tensor, example: torch.Tensor) -> float:
    """Run the ONNX file on ``example`` with onnxruntime; the relative difference to ``reference``."""
    onnx = require("onnx", "The ONNX export")
    try:
        onnx.checker.check_model(str(path))
        sess = onnx_session(path)
        name = sess.get_inputs()[0].name
        out = torch.from_numpy(sess.run(None, {name: example.numpy()})[0])
    except ExplorerError:
        raise
    except Exception as e:
        raise ExplorerError(f"The ONNX export does not run in onnxruntime ({type(e).__name__}: "
                            f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}).") from None
    if tuple(out.shape) != tuple(reference.shape):
        raise ExplorerError(f"The ONNX export returns shape {tuple(out.shape)}, PyTorch {tuple(reference.shape)}.")
    return float((out.float() - reference.float()).abs().max() / reference.abs().max().clamp_min(1e-12))


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """``model.onnx``: written, reloaded with onnxruntime and compared with PyTorch on ``example``."""
    require("onnx", "The ONNX export")
    require("onnxruntime", "The ONNX export")
    g = graph_module(module)
    ref = _reference(g, example)

    def verify(tmp):
        rel = check_onnx(tmp, ref, example)
        if rel > ONNX_RTOL:
            raise ExplorerError(f"The ONNX export's outputs differ from PyTorch's by {rel:.2g} of their scale "
                                f"(at most {ONNX_RTOL:g} allowed), so it was not written.")
    return atomic_write(Path(path), lambda tmp: _export_onnx(g, example, str(tmp)), verify)
