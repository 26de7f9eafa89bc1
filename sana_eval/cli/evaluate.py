"""`sana-eval evaluate`: a checkpoint's whole quality row (Tables 7 and 11) — generate every benchmark, score it,
write one results bundle, the row in the tables' format and its provenance. Under torchrun the work is spread over
the processes; the images and numbers are those of one process."""
from __future__ import annotations

import argparse
from pathlib import Path

from sana_eval import distributed
from sana_eval.cli import checks, generation_args
from sana_eval.cli.common import add_command
from sana_eval.evaluation import ROW_BENCHMARKS, SCORING_OPTION_NAMES, EvaluateRequest, evaluate


def benchmark_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in ROW_BENCHMARKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of {','.join(ROW_BENCHMARKS)}")
    return names


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "evaluate", run=run, description=__doc__.strip(),
        help="a checkpoint's whole quality row: generate and score every benchmark (resumable, torchrun)",
        examples=["sana-eval evaluate --weights Sana_1600M_1024px.pth --out runs/sana-1.6b --mjhq data/MJHQ-30K "
                  "--detector-weights geneval-mask2former --vqa-weights mplug-large",
                  "torchrun --nproc-per-node 8 -m sana_eval evaluate --weights Sana_1600M_1024px.pth "
                  "--out runs/sana-1.6b --mjhq data/MJHQ-30K --batch-size 16",
                  "sana-eval evaluate --weights candidate.pth --out runs/candidate --benchmarks geneval,dpg "
                  "--subset 100",
                  "sana-eval compare runs/baseline/results.json runs/candidate/results.json "
                  "--fail-if-worse geneval:0.02"])
    row = parser.add_argument_group("row")
    row.add_argument("--out", required=True,
                     help="output folder: <benchmark>/ images, cache/, results.json, row.md (rerun to resume)")
    row.add_argument("--name", help="the row's label (default: the --out folder's name)")
    row.add_argument("--benchmarks", type=benchmark_list, default=ROW_BENCHMARKS,
                     help=f"comma list (default {','.join(ROW_BENCHMARKS)})")
    row.add_argument("--subset", type=checks.positive_int,
                     help="N prompts per benchmark keeping its category mix: a quick run, comparable with another "
                          "on the same subset only (docs/generation.md §6)")
    generation_args.add_model_arguments(parser)
    generation_args.add_sampling_arguments(parser)
    data = parser.add_argument_group("data")
    data.add_argument("--mjhq",
                      help="local MJHQ-30K copy (meta_data.json + <category>/<id>.jpg): its prompts and FID's real "
                           "images (default: the Hugging Face cache, HF_HUB_OFFLINE=1 honoured)")
    data.add_argument("--data",
                      help="folder holding the official GenEval, DPG-Bench and ImageReward prompt files "
                           "(else $SANA_EVAL_DATA, the cache or a download)")
    data.add_argument("--dpg-csv",
                      help="dpg_bench.csv (default: the data folder, the cache or the pinned download)")
    data.add_argument("--no-verify-csv", action="store_true", default=None,
                      help="score a --dpg-csv of your own (not the official file's hash); its protocol says so")
    scorers = parser.add_argument_group("scorers (defaults: `sana-eval score`'s)")
    scorers.add_argument("--fid-size", type=checks.positive_int, help="FID Resize+CenterCrop size (default 512)")
    scorers.add_argument("--fid-weights", help="FID Inception weights file")
    scorers.add_argument("--clip-weights", help="OpenAI CLIP ViT-L/14 weights file")
    scorers.add_argument("--allow-few-images", action="store_true", default=None,
                         help="FID on < 2048 images (a --subset run; warns)")
    scorers.add_argument("--detector", choices=["transformers", "mmdet"], help="GenEval's Mask2Former backend")
    scorers.add_argument("--detector-weights", help="GenEval detector weights")
    scorers.add_argument("--geneval-protocol", choices=["official", "sana"], help="default official")
    scorers.add_argument("--vqa", choices=["mplug", "blip"], help="DPG-Bench VQA model (default mplug)")
    scorers.add_argument("--vqa-weights", help="VQA weights folder")
    scorers.add_argument("--dpg-mode", choices=["fixed", "official"], help="default fixed")
    generation_args.add_execution_arguments(parser)
    return parser


def request_of(args: argparse.Namespace) -> EvaluateRequest:
    out = Path(args.out)
    scoring = {name: getattr(args, name) for name in SCORING_OPTION_NAMES if getattr(args, name, None) is not None}
    return EvaluateRequest(generation_args.generate_request(args, args.benchmarks[0], out), out, args.name or "",
                           args.benchmarks, args.subset, scoring)


def run(args: argparse.Namespace) -> int:
    checks.check_paths(args, {"--out": checks.output_dir, "--weights": checks.transformer_weights, "--vae": checks.vae,
                              "--text-encoder": checks.path_or_repo_id, "--mjhq": checks.existing_dir,
                              "--data": checks.existing_path, "--dpg-csv": checks.existing_file,
                              "--fid-weights": checks.existing_file, "--clip-weights": checks.existing_file,
                              "--detector-weights": checks.path_or_repo_id, "--vqa-weights": checks.path_or_repo_id})
    checks.check_kernels(args.device, args.kernels, args.cuda_graphs)
    request = request_of(args)
    with distributed.launched(args.device) as world:
        summary = evaluate(request, world)
    if world.is_main:
        print(f"evaluate: {summary.images} images generated in {summary.generate_s:.1f} s, scored in "
              f"{summary.score_s:.1f} s by {world.size} process(es); wrote {summary.bundle} and {summary.row}")
    return 0
