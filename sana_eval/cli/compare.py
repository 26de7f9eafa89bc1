"""`sana-eval compare`: B − A per metric with bootstrap confidence intervals; exit 1 on a regression; an HTML page
with the images side by side."""
from __future__ import annotations

import argparse
from pathlib import Path

from sana_eval.cli import checks
from sana_eval.cli.common import add_command
from sana_eval.compare.report import compare_command


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "compare", run=run,
                         help="B − A per metric with CIs; exit 1 on a regression",
                         description="B − A per metric with paired bootstrap CIs; exit 1 on a regression",
                         examples=["sana-eval compare a/results.json b/results.json --fail-if-worse geneval:0.02 "
                                   "--fail-if-worse fid:0.5 --out compare/",
                                   "sana-eval compare a/gen.json b/gen.json c/gen.json --html cmp/index.html"])
    runs = parser.add_argument_group("runs")
    runs.add_argument("run_a", help="results JSON of the baseline")
    runs.add_argument("run_b", help="results JSON of the candidate")
    runs.add_argument("run_c", nargs="*", help="more candidates, each compared with run_a")
    gate = parser.add_argument_group("regression gate")
    gate.add_argument("--fail-if-worse", action="append", default=[], metavar="METRIC:THRESHOLD",
                      help="exit 1 if B is worse than A by more than THRESHOLD (repeatable)")
    gate.add_argument("--require-significant", action="store_true",
                      help="a regression must also have its 95%% CI exclude zero")
    boot = parser.add_argument_group("bootstrap")
    boot.add_argument("--n-boot", type=checks.positive_int, default=1000, help="bootstrap resamples (default 1000)")
    boot.add_argument("--seed", type=int, default=0)
    boot.add_argument("--device", type=checks.device, help="where FID bootstraps run (cuda is much faster)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", help="folder for compare.md, compare.json and compare.png (two runs only)")
    output.add_argument("--html", metavar="OUT/index.html",
                        help="a static page: metric table, plots, every run's images of the same prompts side by side")
    output.add_argument("--images", action="append", default=[], metavar="DIR",
                        help="a run's `sana-eval generate` folder, in the runs' order (repeatable; default: the "
                             "folder its results record)")
    output.add_argument("--html-prompts", type=checks.positive_int, default=300, metavar="N",
                        help="prompts shown on the page (default 300)")
    return parser


def run(args: argparse.Namespace) -> int:
    checks.check_paths(args, {"run_a": checks.existing_file, "run_b": checks.existing_file,
                              "run_c": checks.existing_file, "--images": checks.existing_dir,
                              "--out": checks.output_dir, "--html": checks.output_file})
    return compare_command(Path(args.run_a), Path(args.run_b), args.fail_if_worse,
                           Path(args.out) if args.out else None, args.n_boot, args.seed,
                           require_significant=args.require_significant, device=args.device,
                           others=[Path(p) for p in args.run_c], html=Path(args.html) if args.html else None,
                           images=args.images, html_prompts=args.html_prompts)
