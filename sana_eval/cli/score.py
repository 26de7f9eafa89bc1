"""`sana-eval score`: an image folder (or an autoencoder) -> a results JSON, through the scoring dispatcher.

An option marked [names] in --help belongs to those benchmarks only: given to another, it is an error, not
silently ignored. Defaults are the scorers'.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from sana_eval import distributed
from sana_eval.cli import checks
from sana_eval.cli.common import add_command
from sana_eval.results import write_results
from sana_eval.scoring.dispatch import BENCHMARKS, OPTIONS, benchmarks_taking, score_benchmark
from sana_eval.scoring.scorers import AUTOENCODERS, MJHQ_METRICS


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _for(option: str) -> str:
    """`[mjhq30k, folder] ` before an option's help: the benchmarks that take it."""
    return f"[{', '.join(benchmarks_taking(option))}] "


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "score", run=run, help="score an image folder, or an autoencoder (Table 1)",
        description=__doc__.strip() + "\n\nbenchmarks:\n"
                    + "".join(f"  {name:12} {spec.summary}\n" for name, spec in BENCHMARKS.items()),
        examples=["sana-eval score --benchmark mjhq30k --images runs/mjhq --mjhq data/MJHQ-30K --fid-size 512 "
                  "--out runs/mjhq/results.json",
                  "sana-eval score --benchmark mjhq30k --images runs/mjhq --mjhq data/MJHQ-30K --limit 1000 "
                  "--metrics image_reward --out runs/mjhq/image_reward.json",
                  "sana-eval score --benchmark recon --ae dc-ae-f32c32 --weights dc-ae-dir --mjhq data/MJHQ-30K "
                  "--resolution 1024 --out recon.json",
                  "sana-eval score --benchmark geneval --images runs/geneval --out geneval.json",
                  "sana-eval score --benchmark dpg --images runs/dpg --dpg-mode official --out dpg.json",
                  "sana-eval score --benchmark imagereward --images runs/ir --out ir.json",
                  "sana-eval score --benchmark folder --images runs/mine --reference real/ --out mine.json"])
    what = parser.add_argument_group("benchmark and images")
    what.add_argument("--benchmark", required=True, choices=list(BENCHMARKS),
                      help="folder: any flat image folder (FID vs --reference, CLIP vs --prompts)")
    what.add_argument("--images",
                      help="generated images (all but recon; mjhq30k: <id>.jpg as sana-eval generate writes)")
    what.add_argument("--limit", type=checks.positive_int,
                      help=_for("limit") + "first N prompts (MJHQ: meta_data.json order)")
    what.add_argument("--subset", type=int, help=_for("subset") + "the N prompts `generate --subset N` made (the "
                                                                 "category mix kept; docs/generation.md §6)")
    what.add_argument("--ext", help=_for("ext") + "generated image extension (default .jpg)")
    what.add_argument("--data",
                      help=_for("data") + "folder holding the official prompt files (else cache or download)")
    reference = parser.add_argument_group("reference data")
    reference.add_argument("--mjhq",
                           help=_for("mjhq") + "local MJHQ-30K copy: meta_data.json + <category>/<id>.jpg")
    reference.add_argument("--reference",
                           help=_for("reference") + "the real images FID compares against")
    reference.add_argument("--prompts",
                           help=_for("prompts") + "JSON {image stem: prompt} (default: the generate manifest)")
    reference.add_argument("--dpg-csv",
                           help=_for("dpg_csv") + "dpg_bench.csv (default: data folder, cache or pinned download)")
    reference.add_argument("--no-verify-csv", action="store_true", default=None,
                           help=_for("no_verify_csv") + "score a --dpg-csv of your own (not the official file's "
                                                        "hash); its protocol says so")
    reference.add_argument("--cache-dir",
                           help="per-image features and answers, FID statistics, and where MJHQ-30K is downloaded "
                                "(default: <out>.cache beside the results, so a killed run resumes; under torchrun "
                                "it must be on a shared filesystem)")
    metrics = parser.add_argument_group("metrics")
    metrics.add_argument("--metrics", type=comma_list,
                         help=_for("metrics") + f"comma list of {', '.join(MJHQ_METRICS)} (image_reward: mjhq30k "
                                                f"only; default fid,clip_score)")
    metrics.add_argument("--fid-size", type=checks.positive_int,
                         help=_for("fid_size") + "FID Resize+CenterCrop size (default 512, Sana's)")
    metrics.add_argument("--resolution", type=checks.resolution,
                         help=_for("resolution") + "image side, a multiple of 32 (default 1024)")
    metrics.add_argument("--allow-few-images", action="store_true", default=None,
                         help=_for("allow_few_images") + "FID on < 2048 images (warns)")
    metrics.add_argument("--cross-check", action="append", metavar="NAME",
                         help=_for("cross_check") + "extra columns, never the headline (repeatable): FID "
                                                    "torchmetrics, torchmetrics-noantialias, clean-fid; CLIP score "
                                                    "torchmetrics")
    models = parser.add_argument_group("scorer models")
    models.add_argument("--ae", choices=AUTOENCODERS, help=_for("ae") + "the autoencoder (default dc-ae-f32c32)")
    models.add_argument("--detector", choices=["transformers", "mmdet"],
                        help=_for("detector") + "Mask2Former backend (default transformers; mmdet = the official "
                                                "checkpoint, needs mmdet)")
    models.add_argument("--geneval-protocol", choices=["official", "sana"],
                        help=_for("geneval_protocol") + "default official; 'sana' drops counting's exclude clause as "
                                                        "SANA's inference_geneval.py did (docs/protocols.md §3.7)")
    models.add_argument("--vqa", choices=["mplug", "blip"],
                        help=_for("vqa") + "VQA model (default mplug = the official one, needs modelscope)")
    models.add_argument("--dpg-mode", choices=["fixed", "official"],
                        help=_for("dpg_mode") + "default fixed; 'official' keeps ELLA's scorer bugs for "
                                                "comparability")
    models.add_argument("--grid", choices=["exact", "sana-padded"],
                        help=_for("grid") + "unpadded 2x2 grids (default exact), or Sana's make_grid padding")
    models.add_argument("--tile", type=checks.positive_int,
                        help=_for("tile") + "tile side in px (default: from the image size)")
    weights = parser.add_argument_group("scorer weights")
    weights.add_argument("--weights",
                         help=_for("weights") + "recon: autoencoder weights (DC-AE dir/file or AutoencoderKL dir); "
                                                "imagereward and mjhq30k --metrics image_reward: ImageReward.pt")
    weights.add_argument("--fid-weights",
                         help=_for("fid_weights") + "pt_inception-2015-12-05-6726825d.pth (default: torch hub cache)")
    weights.add_argument("--clip-weights",
                         help=_for("clip_weights") + "OpenAI ViT-L/14 weights file (default: caches)")
    weights.add_argument("--detector-weights",
                         help=_for("detector_weights") + "detector weights (folder or checkpoint)")
    weights.add_argument("--vqa-weights", help=_for("vqa_weights") + "VQA weights folder")
    execution = parser.add_argument_group("execution")
    execution.add_argument("--device", type=checks.device, help="cuda or cpu (default: cuda when available)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", required=True, help="results JSON (a list of metric results)")
    return parser


def default_cache_dir(out: str) -> str:
    """Per-image features and answers beside the results file, so a killed `score` resumes where it stopped and
    torchrun's processes exchange their parts."""
    return str(Path(out).with_suffix(".cache"))


def run(args: argparse.Namespace) -> int:
    checks.check_paths(args, checks.SCORE_PATHS)
    options = {option: getattr(args, option) for option in OPTIONS}
    if BENCHMARKS[args.benchmark].splits:
        options["cache_dir"] = options["cache_dir"] or default_cache_dir(args.out)
    start = time.perf_counter()
    with distributed.launched(args.device) as world:
        results = score_benchmark(args.benchmark, args.images, world, **options)
    if world.is_main:
        print(f"scored {args.benchmark} in {time.perf_counter() - start:.1f} s by {world.size} process(es)")
        for result in results:
            headline = ", ".join(f"{k} {v:.4f}" for k, v in result.aggregate.items() if "/" not in k)
            print(f"{result.metric}: {headline}")
            if "results_file" in result.provenance:  # the scorer's own per-image file, beside the image folder
                print(f"wrote {result.provenance['results_file']} ({result.metric}'s per-item results)")
        print(f"wrote {write_results(results, args.out)}")
    return 0
