"""`sana-eval convert`: a transformer checkpoint rewritten in another format, losslessly."""
from __future__ import annotations

import argparse

from model.checkpoints import convert
from sana_eval.cli.common import add_command

FORMATS = ("nvlabs", "diffusers", "safetensors")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "convert", run=run,
                         help="rewrite a transformer checkpoint in another format",
                         description="rewrite a transformer checkpoint in another format, losslessly",
                         examples=["sana-eval convert Sana_600M_1024px.pth out/transformer --to diffusers",
                                   "sana-eval convert out/transformer back.pth --to nvlabs"])
    files = parser.add_argument_group("files")
    files.add_argument("src", help="NVlabs .pth, diffusers directory or .safetensors file")
    files.add_argument("dst", help="output path (never overwritten)")
    files.add_argument("--to", required=True, choices=FORMATS, help="the output format")
    return parser


def run(args: argparse.Namespace) -> int:
    written = convert(args.src, args.dst, args.to)
    print(f"wrote {written}")
    return 0
