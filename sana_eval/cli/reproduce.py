"""`sana-eval reproduce`: rerun paper tables and write versioned reports."""
from __future__ import annotations

import argparse
from pathlib import Path

from sana_eval.cli import checks
from sana_eval.cli.common import add_command
from sana_eval.reproduce.run import reproduce


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "reproduce", run=run, help="rerun paper tables into versioned reports",
                         examples=["sana-eval reproduce table6 --out reports",
                                   "sana-eval reproduce all --out reports"])
    tables = parser.add_argument_group("tables")
    tables.add_argument("tables", nargs="+", help="table ids (table1 … table14) or 'all'")
    output = parser.add_argument_group("output")
    output.add_argument("--out", default="reports", help="reports folder (default: reports)")
    output.add_argument("--version", type=checks.path_component,
                        help="report version name (default: <UTC date>-<git sha>)")
    return parser


def run(args: argparse.Namespace) -> int:
    checks.check_paths(args, {"--out": checks.output_dir})
    for path in reproduce(args.tables, Path(args.out), version=args.version):
        print(f"wrote {path}")
    return 0
