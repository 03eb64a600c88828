"""The ``pruning-explorer`` command. Every window action is also a subcommand here.

    pruning-explorer [gui] [--model M] [--dataset D] [--screenshot FILE.png]
    pruning-explorer info --model M [--json]
    pruning-explorer prune --model M (--recipe R.json | --sparsity S ...) --out DIR
    pruning-explorer compress --model M (--recipe R.json | --sparsity S ...) [--bits ...] --out DIR
    pruning-explorer sensitivity --model M --out S.json
    pruning-explorer compare --model M --criteria l1,taylor,hessian,wanda --sparsities 0.5,0.7,0.9 --out C.json
    pruning-explorer finetune --recipe R.json [--epochs N] [--device D] [--resume] --out DIR
        (under torchrun --nproc_per_node=K --no-python: distributed data parallel)
    pruning-explorer train-builtin [--out DIR]

Errors a user can fix print one paragraph and exit with status 2 (no
traceback unless --debug).
"""
from __future__ import annotations

import sys

from explorer.core.errors import Cancelled, ExplorerError

from .parser import build_parser

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    commands = {"gui", "info", "prune", "compress", "compare", "sensitivity", "train-builtin", "finetune", "speed"}
    if not argv or (argv[0] not in commands and argv[0] not in ("-h", "--help", "--version")):
        argv = ["gui", *argv]
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    startup = None
    if args.command == "gui":       # no cyclic GC until the window is up (explorer.gui.window.startup.pause_gc)
        from explorer.gui.window import startup
        startup.pause_gc()
    try:
        from .commands import run_command
        return run_command(args)
    except ExplorerError as e:
        if debug:
            raise
        title = getattr(e, "title", "Problem")
        print(f"error: {title}: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Cancelled:
        print("cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: say so plainly, traceback on request
        if debug:
            raise
        print(f"internal error: {type(e).__name__}: {e}\n(run again with --debug for the traceback, "
              "and please report it)", file=sys.stderr)
        return 1
    finally:
        if startup is not None:
            startup.resume_gc()


if __name__ == "__main__":
    sys.exit(main())
