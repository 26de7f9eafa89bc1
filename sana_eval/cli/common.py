"""What every `sana-eval` subcommand parser shares: a one-line help, runnable examples in the epilog."""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


def add_command(subparsers: argparse._SubParsersAction, name: str, *, help: str, examples: Sequence[str],
                run: Callable[[argparse.Namespace], int] | None = None,
                description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand parser whose --help ends with `examples` (full command lines, run as written).

    `run` handles the parsed arguments; leave it out for a parser that only holds sub-subcommands. `prog` is
    recorded so that main() prefixes an error with the full command (`sana-eval bench e2e: error: ...`)."""
    parser = subparsers.add_parser(name, help=help, description=description or help,
                                   epilog="examples:\n" + "".join(f"  {line}\n" for line in examples),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    if run is not None:
        parser.set_defaults(func=run, prog=parser.prog)
    return parser
