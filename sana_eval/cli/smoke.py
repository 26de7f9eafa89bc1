"""`sana-eval smoke`: the whole chain on tiny random models, offline on CPU."""
from __future__ import annotations

import argparse
from pathlib import Path

from sana_eval.cli import checks
from sana_eval.cli.common import add_command
from sana_eval.smoke.chain import run_smoke


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "smoke", run=run,
                         help="the whole chain on tiny random models, offline on CPU",
                         description="the whole chain on tiny random models, offline on CPU; its numbers are NOT "
                                     "comparable to the paper",
                         examples=["sana-eval smoke --out reports/smoke"])
    output = parser.add_argument_group("output")
    output.add_argument("--out", default="reports/smoke", help="output folder (default: reports/smoke)")
    return parser


def run(args: argparse.Namespace) -> int:
    checks.check_paths(args, {"--out": checks.output_dir})
    report = run_smoke(Path(args.out), progress=True)
    print(report.read_text().splitlines()[0])
    print(f"wrote {report}")
    return 0
