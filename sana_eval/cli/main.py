"""`sana-eval`: one entry point, one subcommand per job (one module each in sana_eval/cli/); each is a thin call
into the packages."""
from __future__ import annotations

import argparse
import os
import sys

from sana_eval.cli import (
    bench,
    compare,
    convert,
    convert_detector,
    evaluate,
    export,
    generate,
    info,
    reproduce,
    score,
    smoke,
    sweep,
)
from sana_eval.cli.checks import OneLineParser

DEBUG_ENV = "SANA_EVAL_DEBUG"
# In the order `sana-eval --help` lists them: the data flow, then the tools around it.
COMMANDS = {"info": info, "convert": convert, "convert-detector": convert_detector, "generate": generate,
            "score": score, "evaluate": evaluate, "compare": compare, "export": export, "reproduce": reproduce,
            "sweep": sweep, "bench": bench, "smoke": smoke}

EXAMPLES = """examples:
  sana-eval info Sana_1600M_1024px --json
  sana-eval info --weights Sana_1600M_1024px.pth --json
  sana-eval convert Sana_1600M_1024px.pth out/transformer --to diffusers
  sana-eval generate --benchmark geneval --weights Sana_1600M_1024px.pth --out runs/geneval
  sana-eval score --benchmark mjhq30k --images runs/mjhq --mjhq data/MJHQ-30K --out runs/mjhq.json
  torchrun --nproc-per-node 8 -m sana_eval evaluate --weights Sana_1600M_1024px.pth --out runs/a --mjhq data/MJHQ-30K
  sana-eval compare runs/a.json runs/b.json --fail-if-worse geneval:0.02
  sana-eval compare runs/a.json runs/b.json runs/c.json --html runs/compare/index.html
  sana-eval reproduce table6 --out reports
  sana-eval sweep fig8-steps --weights Sana_1600M_1024px.pth --mjhq data/MJHQ-30K --out runs/fig8 --limit 2048
  sana-eval bench transformer --preset Sana_600M_1024px --batch 1 16 --impl ours diffusers
  sana-eval smoke --out reports/smoke

`sana-eval COMMAND --help` for a command's options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="sana-eval", description=__doc__, epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an error, for bug reports (or set {DEBUG_ENV}=1)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(subparsers)
    return parser


def _one_line(err: BaseException) -> str:
    # KeyError's str() would add quotes; a message spread over lines would read as several errors.
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return args.func(args)
    except (ValueError, KeyError, OSError) as err:
        if debug:
            raise
        # One line naming the command, as argparse reports a usage error.
        print(f"{args.prog}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{args.prog}: interrupted (a rerun of the same command resumes)", file=sys.stderr)
        return 130
    except Exception as err:  # a bug, not bad input: still one line, the traceback on request
        if debug:
            raise
        print(f"{args.prog}: internal error: {type(err).__name__}: {_one_line(err)} (rerun with --debug or "
              f"{DEBUG_ENV}=1 for the traceback, and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
