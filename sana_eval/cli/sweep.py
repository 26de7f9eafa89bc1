"""`sana-eval sweep`: an inference ablation (Fig. 8 steps, CFG, CHI, shift): generate, score, plot."""
from __future__ import annotations

import argparse
from pathlib import Path

from sana_eval.cli import checks
from sana_eval.cli.common import add_command
from sana_eval.reproduce.sweeps import SWEEPS, SweepExecution, SweepSettings, run_sweep


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "sweep", run=run,
                         help="an inference ablation (Fig. 8): generate, score, plot",
                         description="an inference ablation (Fig. 8 steps, CFG, CHI, shift): generate, score, plot; "
                                     "a rerun reuses every finished point",
                         examples=["sana-eval sweep fig8-steps --weights Sana_1600M_1024px.pth --mjhq data/MJHQ-30K "
                                   "--out runs/fig8 --limit 2048"])
    parser.add_argument("name", choices=sorted(SWEEPS), help="the sweep")
    model = parser.add_argument_group("model")
    model.add_argument("--weights", required=True, help="transformer checkpoint or diffusers pipeline root")
    model.add_argument("--vae", help="DC-AE folder/file or preset name (as sana-eval generate)")
    model.add_argument("--text-encoder", help="Gemma-2 folder or Hugging Face repo id (as sana-eval generate)")
    images = parser.add_argument_group("generation")
    images.add_argument("--limit", type=checks.positive_int, help="first N prompts of the benchmark")
    images.add_argument("--resolution", type=checks.resolution,
                        help="image side in px, a multiple of 32 (default: the checkpoint's)")
    images.add_argument("--seed", type=int, default=0)
    images.add_argument("--batch-size", type=checks.positive_int, default=1)
    images.add_argument("--data", help="folder holding the official prompt files")
    scoring = parser.add_argument_group("scoring")
    scoring.add_argument("--mjhq", help="local MJHQ-30K copy (FID reference, prompts)")
    scoring.add_argument("--fid-size", type=checks.positive_int, default=512,
                         help="FID Resize+CenterCrop size (default 512)")
    scoring.add_argument("--allow-few-images", action="store_true", help="FID on < 2048 images (warns)")
    scoring.add_argument("--cache-dir", help="feature/statistics cache")
    weights = parser.add_argument_group("scorer weights")
    weights.add_argument("--fid-weights", help="pt_inception-2015-12-05-6726825d.pth (default: torch hub cache)")
    weights.add_argument("--clip-weights", help="OpenAI ViT-L/14 weights file (default: caches)")
    weights.add_argument("--detector-weights", help="GenEval's detector weights (folder or checkpoint)")
    execution = parser.add_argument_group("execution")
    execution.add_argument("--device", type=checks.device, help="cuda or cpu (default: cuda when available)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", required=True, help="sweep folder (sweep.json, sweep.md, sweep.png, points/)")
    return parser


def run(args: argparse.Namespace) -> int:
    checks.check_paths(args, {"--out": checks.output_dir, "--weights": checks.transformer_weights, "--vae": checks.vae,
                              "--text-encoder": checks.path_or_repo_id, "--data": checks.existing_path,
                              "--mjhq": checks.existing_dir, "--cache-dir": checks.output_dir,
                              "--fid-weights": checks.existing_file, "--clip-weights": checks.existing_file,
                              "--detector-weights": checks.path_or_repo_id})
    # Only the options given reach the scorers, keyed as run_sweep expects: {"mjhq": ..., "geneval": ...}.
    common = {k: v for k, v in {"device": args.device, "cache_dir": args.cache_dir,
                                "clip_weights": args.clip_weights}.items() if v}
    scorer = {"mjhq": {**common, **({"fid_weights": args.fid_weights} if args.fid_weights else {})},
              "geneval": {**common, **({"detector_weights": args.detector_weights} if args.detector_weights else {})}}
    settings = SweepSettings(args.weights, resolution=args.resolution, seed=args.seed, vae=args.vae,
                             text_encoder=args.text_encoder, data=args.data, mjhq=args.mjhq, fid_size=args.fid_size,
                             allow_few_images=args.allow_few_images)
    execution = SweepExecution(limit=args.limit, batch_size=args.batch_size, device=args.device, scorer=scorer)
    path = run_sweep(args.name, settings, Path(args.out), execution)
    print(f"wrote {path}")
    return 0
