"""`sana-eval convert-detector`: GenEval's official mmdet Mask2Former checkpoint, rewritten for transformers."""
from __future__ import annotations

import argparse

from metrics.detectors.mmdet_convert import convert_checkpoint
from sana_eval.cli import checks
from sana_eval.cli.common import add_command


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "convert-detector", run=run,
        help="GenEval's mmdet Mask2Former checkpoint, for transformers",
        description="rewrite GenEval's official mmdet Mask2Former checkpoint for transformers (no mmdet needed to "
                    "run it after)",
        examples=["sana-eval convert-detector mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth "
                  "weights/geneval-mask2former",
                  "sana-eval score --benchmark geneval --images runs/geneval --detector transformers "
                  "--detector-weights weights/geneval-mask2former --out geneval.json"])
    files = parser.add_argument_group("files")
    files.add_argument("checkpoint", help="the mmdet 2.x checkpoint (.pth)")
    files.add_argument("out", help="new folder for config.json, model.safetensors and conversion.json")
    model = parser.add_argument_group("model")
    model.add_argument("--attention-heads", type=checks.positive_int, default=8,
                       help="heads of the pixel decoder and the transformer decoder (not stored in the weights; "
                            "GenEval's config: 8)")
    return parser


def run(args: argparse.Namespace) -> int:
    checks.check_paths(args, {"checkpoint": checks.existing_file, "out": checks.new_path})
    out = convert_checkpoint(args.checkpoint, args.out, attention_heads=args.attention_heads)
    print(f"wrote {out} (use it with: sana-eval score --benchmark geneval --detector transformers "
          f"--detector-weights {out})")
    return 0
