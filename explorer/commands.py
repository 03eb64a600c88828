"""Implementations of the CLI subcommands (argument parsing lives in cli.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from explorer.core.errors import ExplorerError
from explorer.core.model.metrics import format_bytes, format_count


def _open_session(args):
    from explorer.core.session import Session, parse_input_shape

    return Session.open(args.model, args.dataset, weights=args.weights, arch=args.arch, trust=args.trust,
                        input_shape=parse_input_shape(args.input_shape))


def run_command(args) -> int:
    cmd = args.command
    if cmd == "gui":
        from explorer.gui.app import run_gui
        return run_gui(args)
    if cmd == "info":
        return cmd_info(args)
    if cmd == "prune":
        from explorer.core.deploy.bundle import cmd_prune
        return cmd_prune(args)
    if cmd == "sensitivity":
        from explorer.core.deploy.bundle import cmd_sensitivity
        return cmd_sensitivity(args)
    if cmd == "train-builtin":
        return cmd_train(args)
    raise ExplorerError(f"Unknown command {cmd}")


def info_dict(session) -> dict:
    t = session.totals()
    r = session.require()
    layers = []
    for l in session.layers:
        c = session.layer_counts(l.name)
        lp = session.plan.get(l.name)
        layers.append({
            "name": l.name, "type": l.kind, "shape": list(l.weight_shape), "params": l.params,
            "macs": l.macs, "sparsity": round(c.sparsity, 6), "nonzero": c.nonzero,
            "granularity": lp.granularity, "criterion": lp.criterion, "output_shape": list(l.output_shape),
            "is_output": l.is_output, "linked": list(session.linked_layers(l.name)) if len(session.linked_layers(l.name)) > 1 else [],
        })
    return {
        "model": session.model_spec, "dataset": session.dataset.spec, "input_shape": list(r.input_shape),
        "layers": layers,
        "totals": {"params": t.params, "prunable_params": t.prunable_params, "nonzero_params": t.nonzero_params,
                   "macs": t.macs, "size_bytes": t.dense_bytes, "sparsity": round(t.sparsity, 6),
                   "layers": len(layers)},
        "notes": r.notes,
    }


def cmd_info(args) -> int:
    if args.list_models:
        from explorer.core.model.zoo import BUILTINS, torchvision_archs

        if args.json:
            print(json.dumps({"builtin": list(BUILTINS), "torchvision": torchvision_archs()}, indent=2))
        else:
            print("built-in:")
            for b in BUILTINS.values():
                print(f"  {b.name:12s} {b.description}")
            print("torchvision (random weights; torchvision:<arch>):")
            print("  " + ", ".join(torchvision_archs()))
        return 0
    s = _open_session(args)
    d = info_dict(s)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"model {d['model']}   dataset {d['dataset']}   input {tuple(d['input_shape'])}")
    rows = [(l["name"], l["type"], "x".join(map(str, l["shape"])), format_count(l["params"]),
             format_count(l["macs"]), f"{l['sparsity']:.1%}") for l in d["layers"]]
    head = ("layer", "type", "shape", "params", "MACs", "sparsity")
    w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    print("  ".join(h.ljust(w[i]) if i < 3 else h.rjust(w[i]) for i, h in enumerate(head)))
    for r in rows:
        print("  ".join(str(v).ljust(w[i]) if i < 3 else str(v).rjust(w[i]) for i, v in enumerate(r)))
    t = d["totals"]
    print(f"{t['layers']} prunable layers; {t['params']:,} parameters ({t['prunable_params']:,} prunable), "
          f"{t['macs']:,} MACs per sample, {format_bytes(t['size_bytes'])} fp32")
    for n in d["notes"]:
        print(f"note: {n}")
    return 0


def cmd_train(args) -> int:
    from explorer import RESOURCES
    from explorer.core.train.builtin_training import train_builtin

    out = Path(args.out) if args.out else RESOURCES / "models"
    for name in args.models:
        if name not in ("digits-mlp", "digits-cnn"):
            raise ExplorerError(f"Only the built-in digits models can be retrained here, not '{name}'.")
        train_builtin(name, out, seed=args.seed, log=lambda m: print(m, file=sys.stderr))
    return 0
