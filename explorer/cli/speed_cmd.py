"""``pruning-explorer speed``: the speed map of a model's layers as JSON (issue 22).

The work is :func:`explorer.core.analyse.speed.session_speed_map`; this module reads the flags, prints the
break-even sparsity of each layer and kernel, and writes the file atomically."""
from __future__ import annotations

import json

from explorer.core.errors import ExplorerError

from .progress import log, tqdm_progress


def add_speed_parser(sub, common, add_device, make) -> None:
    """The ``speed`` subcommand's flags (``make`` builds a subparser with the project's help formatter)."""
    p = make(sub, "speed", "the speed map: each layer's own forward time dense vs sparse kernels (CSR, 2:4 on "
                           "CUDA, fewer channels) across sparsities, and the break-even sparsity")
    common(p)
    p.add_argument("--layers", nargs="+", default=None, metavar="NAME", help="only these layers (default: all)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the timed input")
    p.add_argument("--sparsities", default="0.5,0.6,0.7,0.8,0.9,0.95,0.98,0.99",
                   help="comma-separated sparsities in (0,1)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per kernel and sparsity (interleaved; median)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads while timing (0: torch's default; recorded in the JSON)")
    add_device(p)
    p.add_argument("--out", "-o", required=True, metavar="S.json", help="where to write the speed map")


def cmd_speed(args, open_session, device_of) -> int:
    from explorer.core.analyse.speed import parse_sparsities, session_speed_map
    from explorer.core.fileio import atomic_write_json, out_path

    sparsities = parse_sparsities(args.sparsities)      # refused before the model is opened
    if args.batch < 1:
        raise ExplorerError(f"--batch must be at least 1 (got {args.batch}).")
    if args.threads < 0:
        raise ExplorerError(f"--threads must be 0 (torch's default) or more (got {args.threads}).")
    if args.runs < 1:
        raise ExplorerError(f"--runs must be at least 1 (got {args.runs}).")
    out = out_path(args.out, "--out")
    session = open_session(args)
    if args.layers:
        for n in args.layers:
            session.layer(n)
    skipped: dict[str, str] = {} if not args.layers else None
    bar = tqdm_progress("speed")
    try:
        result = session_speed_map(session, args.layers, args.batch, sparsities, runs=args.runs,
                                   device=device_of(args), threads=args.threads or None, progress=bar,
                                   skipped=skipped)
    finally:
        bar.close()
    for n, why in (skipped or {}).items():
        log(f"note: {n} not measured: {why}")
    for layer in result.layers:
        for k, why in layer.unavailable.items():
            log(f"note: {layer.name}: no {k}: {why}")
    d = result.as_dict()
    atomic_write_json(out, d)
    for layer in result.layers:
        parts = [f"{k.kernel} " + (f"wins above {k.break_even:.0%}" if k.break_even is not None else "never wins")
                 for k in layer.kernels]
        print(f"{layer.name} {'x'.join(map(str, layer.shape))}: " + ", ".join(parts))
    print(json.dumps({"out": str(out), "layers": len(d["layers"]), "device": d["device"], "threads": d["threads"],
                      "batch": d["batch"]}))
    return 0
