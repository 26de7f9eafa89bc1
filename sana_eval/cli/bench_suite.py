"""`sana-eval bench suite sana|text-encoders|peers|evaluate`: a whole grid written to --out as JSON lines, Markdown
and a plot (sana_eval/bench/suite.py, peers.py, evaluate_cost.py); the timing modes are in bench.py."""
from __future__ import annotations

import argparse
from collections.abc import Callable

from sana_eval.bench import evaluate_cost, scorer_speed
from sana_eval.bench.peer_models import PEERS
from sana_eval.bench.peers import run_peer_suite
from sana_eval.bench.suite import BATCHES, MODELS, RESOLUTIONS, run_speed_suite, run_text_encoder_suite
from sana_eval.cli import checks
from sana_eval.cli.bench_options import (
    add_batches,
    add_chi_tokens,
    add_decode_tile,
    add_dtype,
    add_e2e_dtypes,
    add_null_prompt,
    add_out,
    add_quantize,
    add_sequence_length,
    add_steps,
    add_text_encoders,
)
from sana_eval.cli.common import add_command

SUITES = ("sana", "text-encoders", "peers", "evaluate")


def add_suite_parser(modes: argparse._SubParsersAction, run: Callable[[argparse.Namespace], int]) -> None:
    """`bench suite SUITE` with its four suites; `run` is the bench command's runner (bench.py)."""
    parser = add_command(modes, "suite", help="a whole grid to --out: sana, text-encoders, peers or evaluate",
                         description="a whole grid written to --out as JSON lines + Markdown (+ a plot)",
                         examples=["sana-eval bench suite sana --resolutions 512 1024 --dtype fp16 --out runs/bench",
                                   "sana-eval bench suite text-encoders --dtype fp16 --out runs/bench",
                                   "sana-eval bench suite peers --peers flux-dev sd3-medium --resolutions 1024 "
                                   "--batch 1 --dtype fp16 --out runs/peers",
                                   "sana-eval bench suite evaluate --out runs/bench-evaluate"])
    suites = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")

    sana = add_command(suites, "sana", run=run,
                       help="Sana end to end over models x resolutions x batches",
                       description="Sana end to end over --models x --resolutions x --batch (Tables 7, 14)",
                       examples=["sana-eval bench suite sana --resolutions 512 1024 --dtype fp16 --out runs/bench",
                                 "sana-eval bench suite sana --dtype bf16 --resolutions 1024 4096 --batch 1 16",
                                 "sana-eval bench suite sana --resolutions 1024 --dtype fp16 --quantize none w8a8 fp8 "
                                 "--peer --out runs/bench-h200"])
    model = sana.add_argument_group("model")
    model.add_argument("--models", nargs="+", default=list(MODELS),
                       help=f"paper model names, presets per resolution as in Table 14 (default {' '.join(MODELS)})")
    workload = sana.add_argument_group("workload")
    workload.add_argument("--resolutions", type=checks.resolution, nargs="+", default=list(RESOLUTIONS),
                          help=f"image sides in px (default {' '.join(map(str, RESOLUTIONS))})")
    add_batches(workload, BATCHES)
    add_steps(workload)
    add_chi_tokens(workload)
    add_null_prompt(workload)
    precision = sana.add_argument_group("precision")
    add_dtype(precision)
    add_e2e_dtypes(precision)
    implementation = sana.add_argument_group("implementation")
    add_decode_tile(implementation)
    add_quantize(implementation, errors=False)
    implementation.add_argument("--peer", action="store_true",
                                help="also time diffusers' denoiser of each case in the same run (needs diffusers)")
    add_out(sana)

    text = add_command(suites, "text-encoders", run=run, help="Table 13's text encoders, one batch each",
                       examples=["sana-eval bench suite text-encoders --dtype fp16 --out runs/bench"])
    add_text_encoders(text.add_argument_group("model"))
    workload = text.add_argument_group("workload")
    workload.add_argument("--batch", type=checks.positive_int, default=32, help="rows per batch (default 32)")
    add_sequence_length(workload)
    add_dtype(workload)
    add_out(text)

    peers = add_command(suites, "peers", run=run,
                        help="the peer models (FLUX, SD3, PixArt, ...) end to end",
                        description="the peer models (FLUX, SD3, PixArt, ...) end to end with random weights "
                                    "(their diffusers implementations)",
                        examples=["sana-eval bench suite peers --peers flux-dev sd3-medium --resolutions 1024 "
                                  "--batch 1 --dtype fp16 --out runs/peers"])
    model = peers.add_argument_group("model")
    model.add_argument("--peers", nargs="+", default=list(PEERS), help=f"default all: {' '.join(PEERS)}")
    workload = peers.add_argument_group("workload")
    workload.add_argument("--resolutions", type=checks.resolution, nargs="+", default=list(RESOLUTIONS),
                          help=f"image sides in px (default {' '.join(map(str, RESOLUTIONS))})")
    add_batches(workload, (1,))
    workload.add_argument("--timed-steps", type=checks.positive_int,
                          help="denoiser forwards timed, scaled to each peer's step count (default: all steps)")
    add_dtype(workload)
    add_out(peers)

    evaluate = add_command(
        suites, "evaluate", run=run, help="what a full Table 7/11 row costs on one GPU: generation and each scorer",
        description="images/s of generation through the real runner in each benchmark's layout (set against the "
                    "e2e bench) and of each scoring network from its official configuration (random weights), and "
                    "from them the wall time of a full quality row on one GPU with each part's share",
        examples=["sana-eval bench suite evaluate --out runs/bench-evaluate",
                  "sana-eval bench suite evaluate --models Sana-0.6B --batches 3 --repeats 2 --out runs/evaluate",
                  "sana-eval bench suite evaluate --tiny --steps 2 --out runs/evaluate-tiny   # any device: wiring"])
    model = evaluate.add_argument_group("model")
    model.add_argument("--models", nargs="+", default=list(evaluate_cost.MODELS),
                       help=f"paper model names at 1024 px (default {' '.join(evaluate_cost.MODELS)})")
    model.add_argument("--tiny", action="store_true",
                       help="tiny random models and scorers on this machine's device, the CPU too: checks the "
                            "wiring, the numbers mean nothing")
    workload = evaluate.add_argument_group("workload")
    workload.add_argument("--batch", type=checks.positive_int, default=16,
                          help="images per generate call, as `generate --batch-size` (default 16)")
    workload.add_argument("--batches", type=checks.positive_int, default=4,
                          help="batches per benchmark, the first one the warm-up; at least 2 (default 4)")
    workload.add_argument("--repeats", type=checks.positive_int, default=3,
                          help="timed runs of the e2e bench it is set against (default 3)")
    add_steps(workload)
    workload.add_argument("--scorer-images", type=checks.positive_int,
                          help="synthetic files timed through FID, CLIP score and ImageReward (default "
                               f"{scorer_speed.OFFICIAL_SIZES.images})")
    workload.add_argument("--workers", type=checks.non_negative_int,
                          help="DataLoader workers of the scorers that read files (default: each scorer's own, 4)")
    row = evaluate.add_argument_group("row")
    row.add_argument("--dpg-csv", help="dpg_bench.csv to count DPG-Bench's questions per prompt (default "
                                       "$SANA_EVAL_DATA/dpg_bench/dpg_bench.csv, else an estimate)")
    row.add_argument("--dpg-questions-per-prompt", type=float, help="use this count instead of the file's")
    add_out(evaluate)



def run_suite(args: argparse.Namespace) -> None:
    if args.suite == "sana":
        path = run_speed_suite(args.out, args.models, args.resolutions, args.batch, args.dtype, steps=args.steps,
                               decode_tile=args.decode_tile, text_dtype=args.text_dtype, vae_dtype=args.vae_dtype,
                               chi_tokens=args.chi_tokens, null_prompt=args.null_prompt, quantize=args.quantize,
                               peer=args.peer)
    elif args.suite == "evaluate":
        models, sizes, device = evaluate_cost.suite_setup(args.models, args.tiny, args.scorer_images, args.workers)
        path = evaluate_cost.run_evaluate_suite(
            args.out, models, sizes, batch=args.batch, batches=args.batches, repeats=args.repeats, steps=args.steps,
            dpg_csv=args.dpg_csv, dpg_questions_per_prompt=args.dpg_questions_per_prompt, device=device)
    elif args.suite == "peers":
        path = run_peer_suite(args.out, args.peers, args.resolutions, args.batch, args.dtype,
                              timed_steps=args.timed_steps)
    else:
        path = run_text_encoder_suite(args.out, args.text_encoder, args.batch, args.sequence_length, args.dtype)
    print(f"wrote {path}")
