"""`sana-eval generate`: a benchmark's images in its scorer's layout, resumable."""
from __future__ import annotations

import argparse
from pathlib import Path

from model.pipeline import SamplingConfig
from sana_eval import distributed
from sana_eval.cli.common import add_command
from sana_eval.generation import sana


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "generate", run=run, help="a benchmark's images in its scorer's layout (resumable)",
        examples=["sana-eval generate --benchmark geneval --weights Sana_1600M_1024px.pth --out runs/geneval",
                  "sana-eval generate --benchmark prompts:my_prompts.txt --weights ckpt_dir --out runs/mine "
                  "--limit 8 --steps 20 --cfg 4.5",
                  "sana-eval generate --benchmark geneval --weights Sana_1600M_1024px.pth "
                  "--out runs/geneval-nvlabs-rounding --kernels eager",
                  "torchrun --nproc-per-node 8 -m sana_eval generate --benchmark geneval "
                  "--weights Sana_1600M_1024px.pth --out runs/geneval"])
    bench = parser.add_argument_group("benchmark")
    bench.add_argument("--benchmark", required=True, help="mjhq30k | geneval | dpg | imagereward | prompts:FILE")
    bench.add_argument("--data", help="folder holding the official prompt files (else cache or download)")
    bench.add_argument("--limit", type=int, help="only the first N prompts")
    bench.add_argument("--shard", help="i/n: this launch's share of the samples, for schedulers that start "
                                       "launches themselves (torchrun spreads one launch over its processes)")
    model = parser.add_argument_group("model")
    model.add_argument("--weights", required=True,
                       help="transformer checkpoint (.pth, .safetensors, diffusers dir) or diffusers pipeline root")
    model.add_argument("--vae", help="DC-AE folder/file or preset name (default: the pipeline root's vae/, "
                                     "else dc-ae-f32c32-sana-1.0)")
    model.add_argument("--text-encoder", help="Gemma-2 folder or Hugging Face repo id (default: the pipeline root, "
                                              "else Efficient-Large-Model/gemma-2-2b-it; HF_HUB_OFFLINE=1 honoured)")
    model.add_argument("--conventions", choices=["nvlabs", "diffusers"], default="nvlabs",
                       help="whose CHI text, prompt cleaning, CFG mask and numerics to follow (default nvlabs)")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--sampler", choices=["flow_dpm_solver", "flow_euler"], default="flow_dpm_solver")
    sampling.add_argument("--steps", type=int, help="default 20 (DPM-Solver) or 28 (Euler)")
    sampling.add_argument("--cfg", type=float, default=4.5, help="classifier-free guidance scale (default 4.5)")
    sampling.add_argument("--shift", type=float, help="flow shift (default: the checkpoint's)")
    sampling.add_argument("--pag-scale", type=float, default=1.0, help="perturbed-attention guidance (> 1 enables)")
    sampling.add_argument("--chi", choices=["auto", "on", "off"], default="auto",
                          help="Complex Human Instruction; auto follows Sana's script for the benchmark")
    sampling.add_argument("--resolution", type=int, help="image side in px (default: the checkpoint's)")
    sampling.add_argument("--seed", type=int, default=0)
    execution = parser.add_argument_group("execution")
    execution.add_argument("--batch-size", type=int, default=1)
    execution.add_argument("--encode-workers", type=int, default=4,
                           help="threads encoding and writing images while the next batch generates (default 4)")
    execution.add_argument("--device", help="cuda or cpu (default: cuda when available; under torchrun "
                                            "cuda:LOCAL_RANK)")
    execution.add_argument("--decode-tile", type=int, help="tiled DC-AE decoding with this latent tile side (2K/4K)")
    execution.add_argument("--kernels", choices=["auto", "eager", "triton"], default="auto",
                           help="the DiT's and DC-AE's fused Triton kernels or eager PyTorch (NVlabs' rounding); "
                                "auto: fused on CUDA")
    execution.add_argument("--cuda-graphs", choices=["auto", "on", "off"], default="auto",
                           help="replay denoiser steps from CUDA graphs (bit-identical; auto: small batch x "
                                "resolution)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    output.add_argument("--layout", help="override the scorer layout (e.g. dpg-sana, mjhq-png)")
    return parser


def run(args: argparse.Namespace) -> int:
    sampling = SamplingConfig(sampler=args.sampler, steps=args.steps, cfg_scale=args.cfg, shift=args.shift,
                              pag_scale=args.pag_scale, decode_tile=args.decode_tile)
    request = sana.GenerateRequest(
        benchmark=args.benchmark, weights=args.weights, out=Path(args.out), vae=args.vae,
        text_encoder=args.text_encoder, conventions=args.conventions, sampling=sampling, chi=args.chi,
        resolution=args.resolution, seed=args.seed, limit=args.limit, batch_size=args.batch_size,
        shard=args.shard, layout=args.layout, data=args.data, device=args.device, kernels=args.kernels,
        cuda_graphs=args.cuda_graphs, encode_workers=args.encode_workers)
    with distributed.launched(args.device) as world:
        summary = sana.run(request, world)
    if world.is_main:
        print(f"{summary.written} written, {summary.kept} kept of {summary.files} files in {summary.out_dir} by "
              f"{summary.world_size} process(es) ({summary.seconds:.1f} s)")
    return 0
