"""`sana-eval export`: prompt sets and per-item scores as a 🤗 `datasets.DatasetDict` on disk."""
from __future__ import annotations

import argparse

from sana_eval.cli import checks
from sana_eval.cli.common import add_command
from sana_eval.export import export_datasets
from sana_eval.generation.prompt_sets import get_benchmark


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "export", run=run,
                         help="prompt sets and per-item scores as a datasets.DatasetDict (save_to_disk)",
                         description="a benchmark's prompts (split 'prompts') and results bundles' per-item "
                                     "numbers (split 'scores') as a datasets.DatasetDict saved with save_to_disk; "
                                     "load it with datasets.load_from_disk(DIR)",
                         examples=["sana-eval export --to datasets out/geneval-ds --benchmark geneval "
                                   "--results runs/a.json runs/b.json",
                                   "sana-eval export --to datasets out/mine --benchmark prompts:my_prompts.txt"])
    where = parser.add_argument_group("output")
    where.add_argument("--to", choices=["datasets"], required=True, help="the format (datasets: 🤗 save_to_disk)")
    where.add_argument("out", metavar="DIR", help="a new (or empty) folder")
    what = parser.add_argument_group("what to export")
    what.add_argument("--benchmark", help="a prompt set: mjhq30k | geneval | dpg | imagereward | prompts:FILE")
    what.add_argument("--data", help="folder or file holding the prompt set (else $SANA_EVAL_DATA or the cache)")
    what.add_argument("--no-verify", action="store_true",
                      help="accept a prompt file whose sha256 is not the official one (recorded in export.json)")
    what.add_argument("--results", nargs="+", default=[], metavar="FILE", help="results bundles (sana-eval score)")
    return parser


def run(args: argparse.Namespace) -> int:
    checks.check_paths(args, {"out": checks.output_dir, "--data": checks.existing_path,
                              "--results": checks.existing_file})
    prompts = get_benchmark(args.benchmark).load(args.data, verify=not args.no_verify) if args.benchmark else None
    out = export_datasets(args.out, prompts=prompts, results=args.results)
    print(f"wrote {out} (load with datasets.load_from_disk)")
    return 0
