"""`sana-eval info`: a preset's config and parameter count, or what a weight file holds."""
from __future__ import annotations

import argparse
import dataclasses
import json

from model.checkpoints import describe
from model.config import PRESETS, get_preset
from model.transformer import count_parameters
from sana_eval.cli import checks
from sana_eval.cli.common import add_command


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "info", run=run,
                         help="a preset's config and size, or a weight file's format",
                         description="a preset's config and parameter count, or a weight file's format, inferred "
                                     "preset, dtypes and sha256",
                         examples=["sana-eval info Sana_600M_1024px --json",
                                   "sana-eval info --weights Sana_1600M_1024px.pth --json",
                                   "sana-eval info        # every preset with its parameter count"])
    what = parser.add_argument_group("what to describe")
    what.add_argument("preset", nargs="?", help="preset name (omit to list all presets)")
    what.add_argument("--weights", help="describe this checkpoint instead (file or diffusers directory)")
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    checks.check_paths(args, {"--weights": checks.existing_path})
    if args.weights:
        info = describe(args.weights)
    elif args.preset:
        cfg = get_preset(args.preset)
        info = {"preset": args.preset, "config": dataclasses.asdict(cfg),
                "self_heads": cfg.self_heads, "ffn_hidden": cfg.ffn_hidden,
                "parameters": count_parameters(cfg)}
    else:
        info = {"presets": {name: count_parameters(cfg) for name, cfg in PRESETS.items()}}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0
