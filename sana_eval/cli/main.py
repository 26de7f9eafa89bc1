"""`sana-eval`: one entry point, one subcommand per job; each is a thin call into the modules."""
from __future__ import annotations

import argparse
import sys

from sana_eval.cli import commands
from sana_eval.reproduce.sweeps import SWEEPS

EXAMPLES = """examples:
  sana-eval info Sana_1600M_1024px --json
  sana-eval info --weights Sana_1600M_1024px.pth --json
  sana-eval convert Sana_1600M_1024px.pth out/transformer --to diffusers
  sana-eval reproduce table6 --out reports
  sana-eval generate --benchmark geneval --weights Sana_1600M_1024px.pth --out runs/geneval
  sana-eval score --benchmark mjhq30k --images runs/mjhq --mjhq data/MJHQ-30K --out runs/mjhq.json
  sana-eval compare runs/a.json runs/b.json --fail-if-worse geneval:0.02
  sana-eval sweep fig8-steps --weights Sana_1600M_1024px.pth --mjhq data/MJHQ-30K --out runs/fig8 --limit 2048
  sana-eval bench --preset Sana_600M_1024px --batch 1 16 --impl ours diffusers
"""


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
    info.set_defaults(func=commands.cmd_info)

    convert = sub.add_parser("convert", help="rewrite a transformer checkpoint in another format, losslessly",
                             epilog="example:\n  sana-eval convert Sana_600M_1024px.pth out/transformer "
                                    "--to diffusers",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_argument("src", help="NVlabs .pth, diffusers directory or .safetensors file")
    convert.add_argument("dst", help="output path")
    convert.add_argument("--to", required=True, choices=["nvlabs", "diffusers", "safetensors"])
    convert.set_defaults(func=commands.cmd_convert)

    convert_det = sub.add_parser(
        "convert-detector", help="rewrite GenEval's official mmdet Mask2Former checkpoint for transformers (no mmdet "
                                 "needed to run it after)",
        epilog="example:\n  sana-eval convert-detector mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth "
               "weights/geneval-mask2former\n  sana-eval score --benchmark geneval --images runs/geneval "
               "--detector transformers --detector-weights weights/geneval-mask2former",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    convert_det.add_argument("checkpoint", help="the mmdet 2.x checkpoint (.pth)")
    convert_det.add_argument("out", help="new folder for config.json, model.safetensors and conversion.json")
    convert_det.add_argument("--attention-heads", type=int, default=8,
                             help="heads of the pixel decoder and the transformer decoder (not stored in the weights; "
                                  "GenEval's config: 8)")
    convert_det.set_defaults(func=commands.cmd_convert_detector)

    reproduce = sub.add_parser("reproduce", help="rerun paper tables and write versioned reports",
                               epilog="example:\n  sana-eval reproduce table6 --out reports",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    reproduce.add_argument("tables", nargs="+", help="table ids (table1 … table14) or 'all'")
    reproduce.add_argument("--out", default="reports", help="reports folder (default: reports)")
    reproduce.add_argument("--version", help="report version name (default: <UTC date>-<git sha>)")
    reproduce.set_defaults(func=commands.cmd_reproduce)
    gen = sub.add_parser("generate", help="generate a benchmark's images in its scorer's layout (resumable)",
                         epilog="examples:\n"
                                "  sana-eval generate --benchmark geneval --weights Sana_1600M_1024px.pth "
                                "--out runs/geneval\n"
                                "  sana-eval generate --benchmark prompts:my_prompts.txt --weights ckpt_dir "
                                "--out runs/mine --limit 8 --steps 20 --cfg 4.5\n"
                                "  sana-eval generate --benchmark geneval --weights Sana_1600M_1024px.pth "
                                "--out runs/geneval-nvlabs-rounding --kernels eager",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--benchmark", required=True, help="mjhq30k | geneval | dpg | imagereward | prompts:FILE")
    gen.add_argument("--weights", required=True,
                     help="transformer checkpoint (.pth, .safetensors, diffusers dir) or diffusers pipeline root")
    gen.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    gen.add_argument("--vae", help="DC-AE folder/file or preset name (default: the pipeline root's vae/, "
                                   "else dc-ae-f32c32-sana-1.0)")
    gen.add_argument("--text-encoder", help="Gemma-2 folder or Hugging Face repo id (default: the pipeline root, "
                                            "else Efficient-Large-Model/gemma-2-2b-it; HF_HUB_OFFLINE=1 honoured)")
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
    gen.add_argument("--kernels", choices=["auto", "eager", "triton"], default="auto",
                     help="the DiT's and DC-AE's fused Triton kernels or eager PyTorch (NVlabs' rounding); auto: "
                          "fused on CUDA")
    gen.add_argument("--cuda-graphs", choices=["auto", "on", "off"], default="auto",
                     help="replay denoiser steps from CUDA graphs (bit-identical; auto: small batch x resolution)")
    gen.set_defaults(func=commands.cmd_generate)

    score = sub.add_parser("score", help="score an image folder (FID, CLIP score) or an autoencoder (Table 1)",
                           epilog="examples:\n"
                                  "  sana-eval score --benchmark mjhq30k --images runs/mjhq --mjhq data/MJHQ-30K "
                                  "--fid-size 512 --out runs/mjhq/results.json\n"
                                  "  sana-eval score --benchmark recon --ae dc-ae-f32c32 --weights dc-ae-dir "
                                  "--mjhq data/MJHQ-30K --resolution 1024 --out recon.json\n"
                                  "  sana-eval score --benchmark geneval --images runs/geneval --out geneval.json\n"
                                  "  sana-eval score --benchmark dpg --images runs/dpg --dpg-mode official "
                                  "--out dpg.json\n"
                                  "  sana-eval score --benchmark imagereward --images runs/ir --out ir.json\n"
                                  "  sana-eval score --benchmark folder --images runs/mine --reference real/ "
                                  "--out mine.json",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    score.add_argument("--benchmark", required=True, choices=["mjhq30k", "recon", "geneval", "dpg", "imagereward", "folder"],
                       help="folder: any flat image folder (FID vs --reference, CLIP vs --prompts)")
    score.add_argument("--images", help="generated images (mjhq30k: <id>.jpg as sana-eval generate writes)")
    score.add_argument("--out", required=True, help="results JSON (a list of metric results)")
    score.add_argument("--reference", help="folder: the real images FID compares against")
    score.add_argument("--prompts", help="folder: JSON {image stem: prompt} (default: the generate manifest)")
    score.add_argument("--mjhq", help="local MJHQ-30K copy: meta_data.json + <category>/<id>.jpg")
    score.add_argument("--cache-dir", help="feature/statistics cache, and where MJHQ-30K is downloaded")
    score.add_argument("--limit", type=int, help="first N MJHQ ids (meta_data.json order)")
    score.add_argument("--metrics", default="fid,clip_score",
                       help="mjhq30k, folder: comma list of fid, clip_score")
    score.add_argument("--fid-size", type=int, default=512, help="FID Resize+CenterCrop size (Sana: 512)")
    score.add_argument("--ext", default=".jpg", help="generated image extension (default .jpg)")
    score.add_argument("--ae", choices=["dc-ae-f32c32", "sdxl-vae", "sd-f32c64"], default="dc-ae-f32c32")
    score.add_argument("--weights", help="recon: autoencoder weights (DC-AE dir/file or AutoencoderKL dir); "
                                         "imagereward: ImageReward.pt")
    score.add_argument("--resolution", type=int, default=1024, help="recon: image side (default 1024)")
    score.add_argument("--fid-weights", help="pt_inception-2015-12-05-6726825d.pth (default: torch hub cache)")
    score.add_argument("--clip-weights", help="OpenAI ViT-L/14 weights file (default: caches)")
    score.add_argument("--detector", choices=["transformers", "mmdet"], default="transformers",
                       help="geneval: Mask2Former backend (mmdet = the official checkpoint, needs mmdet)")
    score.add_argument("--detector-weights", help="geneval: detector weights (folder or checkpoint)")
    score.add_argument("--vqa", choices=["mplug", "blip"], default="mplug",
                       help="dpg: VQA model (mplug = the official one, needs modelscope)")
    score.add_argument("--vqa-weights", help="dpg: VQA weights folder")
    score.add_argument("--dpg-mode", choices=["fixed", "official"], default="fixed",
                       help="dpg: 'official' keeps ELLA's scorer bugs for comparability")
    score.add_argument("--dpg-csv", help="dpg: dpg_bench.csv (default: data folder, cache or pinned download)")
    score.add_argument("--grid", choices=["exact", "sana-padded"], default="exact",
                       help="dpg: unpadded 2x2 grids, or Sana's make_grid padding")
    score.add_argument("--tile", type=int, help="dpg: tile side in px (default: from the image size)")
    score.add_argument("--data", help="folder holding the official prompt files (else cache or download)")
    score.add_argument("--cross-check", action="append", default=[], metavar="NAME",
                       help="extra columns, never the headline (repeatable): FID torchmetrics, "
                            "torchmetrics-noantialias, clean-fid; CLIP score torchmetrics")
    score.add_argument("--allow-few-images", action="store_true", help="FID on < 2048 images (warns)")
    score.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    score.set_defaults(func=commands.cmd_score)

    cmp = sub.add_parser("compare", help="B − A per metric with bootstrap CIs; exit 1 on a regression",
                         epilog="example:\n  sana-eval compare a/results.json b/results.json "
                                "--fail-if-worse geneval:0.02 --fail-if-worse fid:0.5 --out compare/",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    cmp.add_argument("run_a", help="results JSON of the baseline")
    cmp.add_argument("run_b", help="results JSON of the candidate")
    cmp.add_argument("--fail-if-worse", action="append", default=[], metavar="METRIC:THRESHOLD",
                     help="exit 1 if B is worse than A by more than THRESHOLD (repeatable)")
    cmp.add_argument("--require-significant", action="store_true",
                     help="a regression must also have its 95%% CI exclude zero")
    cmp.add_argument("--out", help="folder for compare.md, compare.json and compare.png")
    cmp.add_argument("--n-boot", type=int, default=1000)
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--device", help="where FID bootstraps run (cuda is much faster)")
    cmp.set_defaults(func=commands.cmd_compare)


    sweep = sub.add_parser("sweep", help="an inference ablation (Fig. 8 steps, CFG, CHI, shift): generate, score, "
                                         "plot; a rerun reuses every finished point",
                           epilog="example:\n  sana-eval sweep fig8-steps --weights Sana_1600M_1024px.pth "
                                  "--mjhq data/MJHQ-30K --out runs/fig8 --limit 2048",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("name", choices=sorted(SWEEPS))
    sweep.add_argument("--weights", required=True, help="transformer checkpoint or diffusers pipeline root")
    sweep.add_argument("--out", required=True, help="sweep folder (sweep.json, sweep.md, sweep.png, points/)")
    sweep.add_argument("--limit", type=int, help="first N prompts of the benchmark")
    sweep.add_argument("--resolution", type=int)
    sweep.add_argument("--seed", type=int, default=0)
    sweep.add_argument("--vae")
    sweep.add_argument("--text-encoder")
    sweep.add_argument("--data", help="folder holding the official prompt files")
    sweep.add_argument("--mjhq", help="local MJHQ-30K copy (FID reference, prompts)")
    sweep.add_argument("--fid-size", type=int, default=512)
    sweep.add_argument("--allow-few-images", action="store_true")
    sweep.add_argument("--batch-size", type=int, default=1)
    sweep.add_argument("--device")
    sweep.add_argument("--cache-dir")
    sweep.add_argument("--fid-weights")
    sweep.add_argument("--clip-weights")
    sweep.add_argument("--detector-weights")
    sweep.set_defaults(func=commands.cmd_sweep)

    smoke = sub.add_parser("smoke", help="the whole chain on tiny random models, offline on CPU; its numbers are "
                                         "NOT comparable to the paper",
                           epilog="example:\n  sana-eval smoke --out reports/smoke",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    smoke.add_argument("--out", default="reports/smoke", help="output folder (default: reports/smoke)")
    smoke.set_defaults(func=commands.cmd_smoke)

    bench = sub.add_parser("bench", help="speed on a CUDA GPU: transformer (ours and the peer), end to end, "
                                         "text encoders, DC-AE, FID features",
                           epilog="examples:\n  sana-eval bench --preset Sana_600M_1024px --batch 1 16 "
                                  "--impl ours diffusers\n"
                                  "  sana-eval bench --suite sana --resolutions 512 1024 --dtype fp16 --out runs/bench\n"
                                  "  sana-eval bench --suite text-encoders --dtype fp16 --out runs/bench\n"
                                  "  sana-eval bench --suite peers --peers flux-dev sd3-medium --resolutions 1024 "
                                  "--batch 1 --dtype fp16 --out runs/peers\n"
                                  "  sana-eval bench --preset Sana_600M_1024px --batch 16 --dtype fp16 "
                                  "--kernels eager triton\n"
                                  "  sana-eval bench --profile --preset Sana_600M_1024px --batch 16 --kernels triton\n"
                                  "  sana-eval bench --preset Sana_600M_1024px --batch 1 --cuda-graphs off on\n"
                                  "  sana-eval bench --component e2e --preset Sana_600M_1024px --batch 16 --dtype fp16 "
                                  "--set in_channels=4 --set patch_size=2 --vae sdxl-vae --kernels triton",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--component", choices=["transformer", "e2e", "text-encoder", "dc-ae", "fid-features",
                                               "attention"],
                       default="transformer",
                       help="the denoising transformer (20 CFG steps), Sana end to end (Gemma-2 + 20 steps + DC-AE, "
                            "Tables 7/14), a text encoder (Tables 9/13), DC-AE decoding, or FID feature extraction "
                            "of --images JPEGs of --resolution px (DataLoader workers 0/4/8/16)")
    bench.add_argument("--peers", nargs="+", help="suite peers: flux-dev flux-schnell sd3-medium pixart-sigma "
                                                  "pixart-alpha hunyuan-dit sdxl playground-v2.5 lumina-next")
    bench.add_argument("--timed-steps", type=int,
                       help="suite peers: denoiser forwards timed, scaled to each peer's step count")
    bench.add_argument("--suite", choices=["sana", "text-encoders", "peers"],
                       help="a whole grid written to --out as JSON lines + Markdown (+ plot): sana = --models x "
                            "--resolutions x --batch end to end; text-encoders = Table 13's encoders")
    bench.add_argument("--out", default="runs/bench", help="suite: output folder")
    bench.add_argument("--models", nargs="+", default=["Sana-0.6B", "Sana-1.6B"],
                       help="suite sana: paper model names (presets per resolution as in Table 14)")
    bench.add_argument("--resolutions", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    bench.add_argument("--text-encoder", nargs="+",
                       default=["t5-small", "t5-base", "t5-large", "t5-xl", "t5-xxl", "gemma-2b", "gemma-2-2b"],
                       help="text-encoder: names or Hugging Face repo ids (e.g. google/t5-v1_1-xxl)")
    bench.add_argument("--sequence-length", type=int, default=300, help="text-encoder: tokens per row")
    bench.add_argument("--text-dtype", choices=["bf16", "fp16", "fp32"], help="e2e: Gemma-2 (default --dtype)")
    bench.add_argument("--vae-dtype", choices=["bf16", "fp16", "fp32"], help="e2e: DC-AE (default --dtype)")
    bench.add_argument("--chi-tokens", type=int, default=200, help="e2e: Gemma tokens of the CHI (estimate)")
    bench.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                       help="e2e: override a field of each --preset, e.g. Table 8's block designs: --set "
                            "self_attention=softmax --set ffn=mlp --set mlp_ratio=4.0 --set in_channels=4 "
                            "--set patch_size=2")
    bench.add_argument("--vae", choices=["dc-ae-f32c32-sana-1.0", "dc-ae-f32c32-sana-1.1", "sdxl-vae"],
                       help="e2e: the decoder (default dc-ae-f32c32-sana-1.0; sdxl-vae: Table 8's F8C4, with "
                            "--set in_channels=4 --set patch_size=2)")
    bench.add_argument("--images", type=int, default=2000, help="fid-features: how many JPEGs")
    bench.add_argument("--fid-size", type=int, default=512, help="fid-features: Sana's FID resize (512)")
    bench.add_argument("--decode-tile", type=int, help="dc-ae: tiled decoding with this latent tile side")
    bench.add_argument("--preset", nargs="+", default=["Sana_600M_1024px"])
    bench.add_argument("--resolution", type=int, default=1024)
    bench.add_argument("--batch", type=int, nargs="+", help="default 1 16 (text-encoder: 32)")
    bench.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    bench.add_argument("--impl", nargs="+", choices=["ours", "diffusers"], default=["ours"])
    bench.add_argument("--steps", type=int, default=20)
    bench.add_argument("--kernels", nargs="+", choices=["auto", "eager", "triton"], default=["auto"],
                       help="transformer/e2e/attention/dc-ae: eager PyTorch or our fused Triton kernels (paper "
                            "§2.2); auto: Triton on CUDA")
    bench.add_argument("--cuda-graphs", nargs="+", choices=["auto", "on", "off"], default=["auto"],
                       help="transformer/e2e: replay our denoiser steps from CUDA graphs (bit-identical); auto: at "
                            "small batch x resolution, where a step is launch-bound")
    bench.add_argument("--profile", action="store_true",
                       help="transformer: print the GPU kernels of one forward by time instead of timing")
    bench.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 16384],
                       help="attention: image tokens (1024 px = 1024, 2K = 4096, 4K = 16384)")
    bench.set_defaults(func=commands.cmd_bench)
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
