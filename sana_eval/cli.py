"""`sana-eval`: one entry point, one subcommand per job; each is a thin call into the modules."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

EXAMPLES = """examples:
  sana-eval info Sana_1600M_1024px --json
  sana-eval info --weights Sana_1600M_1024px.pth --json
  sana-eval convert Sana_1600M_1024px.pth out/transformer --to diffusers
  sana-eval reproduce table6 --out reports
  sana-eval generate --benchmark geneval --weights Sana_1600M_1024px.pth --out runs/geneval
  sana-eval score --benchmark mjhq30k --images runs/mjhq --mjhq data/MJHQ-30K --out runs/mjhq.json
  sana-eval bench --preset Sana_600M_1024px --batch 1 16 --impl ours diffusers
"""


def _cmd_info(args: argparse.Namespace) -> int:
    from model.config import PRESETS, get_preset
    from model.transformer import count_parameters

    if args.weights:
        from model.checkpoints import describe

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


def _cmd_convert(args: argparse.Namespace) -> int:
    from model.checkpoints import convert

    written = convert(args.src, args.dst, args.to)
    print(f"wrote {written}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from sana_eval.reproduce import reproduce

    for path in reproduce(args.tables, Path(args.out), version=args.version):
        print(f"wrote {path}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from model.pipeline import SamplingConfig
    from sana_eval.run_generate import GenerateRequest, run

    sampling = SamplingConfig(sampler=args.sampler, steps=args.steps, cfg_scale=args.cfg, shift=args.shift,
                              pag_scale=args.pag_scale, decode_tile=args.decode_tile)
    request = GenerateRequest(
        benchmark=args.benchmark, weights=args.weights, out=Path(args.out), vae=args.vae,
        text_encoder=args.text_encoder, conventions=args.conventions, sampling=sampling, chi=args.chi,
        resolution=args.resolution, seed=args.seed, limit=args.limit, batch_size=args.batch_size,
        shard=args.shard, layout=args.layout, data=args.data, device=args.device)
    summary = run(request)
    print(f"{summary.written} written, {summary.kept} kept of {summary.files} files in {summary.out_dir} "
          f"({summary.seconds:.1f} s); manifest {summary.manifest}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from sana_eval.score import MJHQSource, score_mjhq, score_recon, write_results

    source = MJHQSource(folder=args.mjhq, cache_dir=args.cache_dir, limit=args.limit)
    common = dict(device=args.device, cache_dir=args.cache_dir, fid_weights=args.fid_weights,
                  allow_few_images=args.allow_few_images)
    if args.benchmark == "mjhq30k":
        if not args.images:
            raise ValueError("--benchmark mjhq30k needs --images DIR (the generated <id>.jpg files)")
        results = score_mjhq(args.images, source, args.metrics.split(","), fid_size=args.fid_size, ext=args.ext,
                             clip_weights=args.clip_weights, **common)
    else:
        results = [score_recon(args.ae, args.weights, source, resolution=args.resolution, **common)]
    for result in results:
        headline = ", ".join(f"{k} {v:.4f}" for k, v in result.aggregate.items() if "/" not in k)
        print(f"{result.metric}: {headline}")
    print(f"wrote {write_results(results, args.out)}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from sana_eval.bench import time_transformer

    for preset in args.preset:
        for batch in args.batch:
            for impl in args.impl:
                timing = time_transformer(preset, args.resolution, batch, args.dtype, impl, args.steps)
                print(json.dumps(timing.to_dict()), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sana-eval", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="a preset's config and parameter count, or a weight file's format",
                          epilog="examples:\n  sana-eval info Sana_600M_1024px --json\n"
                                 "  sana-eval info --weights model.safetensors --json",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    info.add_argument("preset", nargs="?", help="preset name (omit to list all presets)")
    info.add_argument("--weights", help="describe this checkpoint instead (file or diffusers directory)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_cmd_info)

    convert = sub.add_parser("convert", help="rewrite a transformer checkpoint in another format, losslessly",
                             epilog="example:\n  sana-eval convert Sana_600M_1024px.pth out/transformer "
                                    "--to diffusers",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_argument("src", help="NVlabs .pth, diffusers directory or .safetensors file")
    convert.add_argument("dst", help="output path")
    convert.add_argument("--to", required=True, choices=["nvlabs", "diffusers", "safetensors"])
    convert.set_defaults(func=_cmd_convert)

    reproduce = sub.add_parser("reproduce", help="rerun paper tables and write versioned reports",
                               epilog="example:\n  sana-eval reproduce table6 --out reports",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    reproduce.add_argument("tables", nargs="+", help="table ids (table1 … table14) or 'all'")
    reproduce.add_argument("--out", default="reports", help="reports folder (default: reports)")
    reproduce.add_argument("--version", help="report version name (default: <UTC date>-<git sha>)")
    reproduce.set_defaults(func=_cmd_reproduce)
    gen = sub.add_parser("generate", help="generate a benchmark's images in its scorer's layout (resumable)",
                         epilog="examples:\n"
                                "  sana-eval generate --benchmark geneval --weights Sana_1600M_1024px.pth "
                                "--out runs/geneval\n"
                                "  sana-eval generate --benchmark prompts:my_prompts.txt --weights ckpt_dir "
                                "--out runs/mine --limit 8 --steps 20 --cfg 4.5",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--benchmark", required=True, help="mjhq30k | geneval | dpg | imagereward | prompts:FILE")
    gen.add_argument("--weights", required=True, help="transformer checkpoint (.pth, .safetensors, diffusers dir)")
    gen.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    gen.add_argument("--vae", default="dc-ae-f32c32-sana-1.0", help="DC-AE folder/file or preset name")
    gen.add_argument("--text-encoder", default="Efficient-Large-Model/gemma-2-2b-it",
                     help="Gemma-2 folder or Hugging Face repo id (cache; HF_HUB_OFFLINE=1 honoured)")
    gen.add_argument("--conventions", choices=["nvlabs", "diffusers"], default="nvlabs",
                     help="whose CHI text, prompt cleaning, CFG mask and numerics to follow")
    gen.add_argument("--sampler", choices=["flow_dpm_solver", "flow_euler"], default="flow_dpm_solver")
    gen.add_argument("--steps", type=int, help="default 20 (DPM-Solver) or 28 (Euler)")
    gen.add_argument("--cfg", type=float, default=4.5, help="classifier-free guidance scale (default 4.5)")
    gen.add_argument("--shift", type=float, help="flow shift (default: the checkpoint's)")
    gen.add_argument("--pag-scale", type=float, default=1.0, help="perturbed-attention guidance (> 1 enables)")
    gen.add_argument("--chi", choices=["auto", "on", "off"], default="auto",
                     help="Complex Human Instruction; auto follows Sana's script for the benchmark")
    gen.add_argument("--resolution", type=int, help="image side in px (default: the checkpoint's)")
    gen.add_argument("--decode-tile", type=int, help="tiled DC-AE decoding with this latent tile side (2K/4K)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--limit", type=int, help="only the first N prompts")
    gen.add_argument("--batch-size", type=int, default=1)
    gen.add_argument("--shard", help="i/n: this process's share of the samples (multi-GPU)")
    gen.add_argument("--layout", help="override the scorer layout (e.g. dpg-sana, mjhq-png)")
    gen.add_argument("--data", help="folder holding the official prompt files (else cache or download)")
    gen.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    gen.set_defaults(func=_cmd_generate)

    score = sub.add_parser("score", help="score an image folder (FID, CLIP score) or an autoencoder (Table 1)",
                           epilog="examples:\n"
                                  "  sana-eval score --benchmark mjhq30k --images runs/mjhq --mjhq data/MJHQ-30K "
                                  "--fid-size 512 --out runs/mjhq/results.json\n"
                                  "  sana-eval score --benchmark recon --ae dc-ae-f32c32 --weights dc-ae-dir "
                                  "--mjhq data/MJHQ-30K --resolution 1024 --out recon.json",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    score.add_argument("--benchmark", required=True, choices=["mjhq30k", "recon"])
    score.add_argument("--images", help="generated images (mjhq30k: <id>.jpg as sana-eval generate writes)")
    score.add_argument("--out", required=True, help="results JSON (a list of metric results)")
    score.add_argument("--mjhq", help="local MJHQ-30K copy: meta_data.json + <category>/<id>.jpg")
    score.add_argument("--cache-dir", help="feature/statistics cache, and where MJHQ-30K is downloaded")
    score.add_argument("--limit", type=int, help="first N MJHQ ids (meta_data.json order)")
    score.add_argument("--metrics", default="fid,clip_score", help="mjhq30k: comma list of fid, clip_score")
    score.add_argument("--fid-size", type=int, default=512, help="FID Resize+CenterCrop size (Sana: 512)")
    score.add_argument("--ext", default=".jpg", help="generated image extension (default .jpg)")
    score.add_argument("--ae", choices=["dc-ae-f32c32", "sdxl-vae", "sd-f32c64"], default="dc-ae-f32c32")
    score.add_argument("--weights", help="recon: autoencoder weights (DC-AE dir/file or AutoencoderKL dir)")
    score.add_argument("--resolution", type=int, default=1024, help="recon: image side (default 1024)")
    score.add_argument("--fid-weights", help="pt_inception-2015-12-05-6726825d.pth (default: torch hub cache)")
    score.add_argument("--clip-weights", help="OpenAI ViT-L/14 weights file (default: caches)")
    score.add_argument("--allow-few-images", action="store_true", help="FID on < 2048 images (warns)")
    score.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    score.set_defaults(func=_cmd_score)

    bench = sub.add_parser("bench", help="time the denoising transformer on a CUDA GPU, ours and the peer",
                           epilog="example:\n  sana-eval bench --preset Sana_600M_1024px --batch 1 16 "
                                  "--impl ours diffusers",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--preset", nargs="+", default=["Sana_600M_1024px"])
    bench.add_argument("--resolution", type=int, default=1024)
    bench.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    bench.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    bench.add_argument("--impl", nargs="+", choices=["ours", "diffusers"], default=["ours"])
    bench.add_argument("--steps", type=int, default=20)
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"sana-eval {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
