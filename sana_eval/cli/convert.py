"""`sana-eval convert`: a transformer checkpoint rewritten in another format, losslessly."""
from __future__ import annotations

import argparse

from model.checkpoints import convert
from sana_eval.cli import checks
from sana_eval.cli.common import add_command

FORMATS = ("nvlabs", "diffusers", "safetensors")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "convert", run=run,
                         help="rewrite a transformer checkpoint in another format",
                         description="rewrite a transformer checkpoint in another format, losslessly",
                         examples=["sana-eval convert Sana_600M_1024px.pth out/transformer --to diffusers",
                                   "sana-eval convert out/transformer back.pth --to nvlabs",
                                   "sana-eval convert my_12_block_finetune.pth out/transformer --to diffusers "
                                   "--cross-heads 16",
                                   "sana-eval convert Sana_1600M_1024px.pth out/bf16 --to diffusers "
                                   "--preset Sana_1600M_1024px_BF16"])
    files = parser.add_argument_group("files")
    files.add_argument("src", help="NVlabs .pth, diffusers directory or .safetensors file")
    files.add_argument("dst", help="output path (never overwritten)")
    files.add_argument("--to", required=True, choices=FORMATS, help="the output format")
    # What an NVlabs .pth does not state (model.checkpoints.infer_config's preset= and cross_heads=).
    unstated = parser.add_argument_group("what an NVlabs .pth does not say (its architecture matches no preset, or "
                                         "several)")
    unstated.add_argument("--preset", type=checks.preset,
                          help="take the settings the file does not state from this preset (it must agree with "
                               "the architecture the file states) instead of the best-matching one")
    unstated.add_argument("--cross-heads", type=checks.positive_int,
                          help="cross-attention head count, which NVlabs weights do not store (needed when no "
                               "preset has the file's depth and width, e.g. a custom depth)")
    return parser


def run(args: argparse.Namespace) -> int:
    checks.check_paths(args, {"src": checks.existing_path, "dst": checks.new_path})
    stated = {"cross_heads": args.cross_heads} if args.cross_heads is not None else {}
    written = convert(args.src, args.dst, args.to, preset=args.preset, **stated)
    print(f"wrote {written}")
    return 0
