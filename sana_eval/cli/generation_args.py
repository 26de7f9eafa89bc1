"""The model, sampling and execution flags `generate` and `evaluate` share, and the request they make."""
from __future__ import annotations

import argparse
from pathlib import Path

from model.pipeline import SamplingConfig
from model.quantize import MODES
from sana_eval.cli import checks
from sana_eval.generation import sana


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("--weights", required=True,
                       help="transformer checkpoint (.pth, .safetensors, diffusers dir) or diffusers pipeline root")
    model.add_argument("--vae", help="DC-AE folder/file or preset name (default: the pipeline root's vae/, "
                                     "else dc-ae-f32c32-sana-1.0)")
    model.add_argument("--text-encoder",
                       help="Gemma-2 folder or Hugging Face repo id (default: the pipeline root, else "
                            "Efficient-Large-Model/gemma-2-2b-it; HF_HUB_OFFLINE=1 honoured)")
    model.add_argument("--conventions", choices=["nvlabs", "diffusers"], default="nvlabs",
                       help="whose CHI text, prompt cleaning, CFG mask and numerics to follow (default nvlabs)")


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--sampler", choices=["flow_dpm_solver", "flow_euler"], default="flow_dpm_solver")
    sampling.add_argument("--steps", type=checks.positive_int, help="default 20 (DPM-Solver) or 28 (Euler)")
    sampling.add_argument("--cfg", type=checks.finite_float, default=4.5,
                          help="classifier-free guidance scale (default 4.5)")
    sampling.add_argument("--shift", type=checks.positive_float, help="flow shift > 0 (default: the checkpoint's)")
    sampling.add_argument("--pag-scale", type=checks.non_negative_float, default=1.0,
                          help="perturbed-attention guidance (> 1 enables)")
    sampling.add_argument("--chi", choices=["auto", "on", "off"], default="auto",
                          help="Complex Human Instruction; auto follows Sana's script for the benchmark")
    sampling.add_argument("--resolution", type=checks.resolution,
                          help="image side in px, a multiple of 32 (default: the checkpoint's)")
    sampling.add_argument("--seed", type=int, default=0)


def add_execution_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    execution = parser.add_argument_group("execution")
    execution.add_argument("--batch-size", type=checks.positive_int, default=1)
    execution.add_argument("--encode-workers", type=checks.positive_int, default=4,
                           help="threads encoding and writing images while the next batch generates (default 4)")
    execution.add_argument("--device", type=checks.device,
                           help="cuda or cpu (default: cuda when available; under torchrun cuda:LOCAL_RANK)")
    execution.add_argument("--decode-tile", type=checks.positive_int,
                           help="tiled DC-AE decoding with this latent tile side (2K/4K)")
    execution.add_argument("--kernels", choices=["auto", "eager", "triton"], default="auto",
                           help="the DiT's and DC-AE's fused Triton kernels or eager PyTorch (NVlabs' rounding); "
                                "auto: fused on CUDA")
    execution.add_argument("--cuda-graphs", choices=["auto", "on", "off"], default="auto",
                           help="replay denoiser steps from CUDA graphs (bit-identical; auto: small batch x "
                                "resolution)")
    execution.add_argument("--quantize", choices=MODES, default="none",
                           help="the DiT's linear layers in W8A8 (paper §4) or FP8: images differ from fp16 ones, "
                                "and the run records it (default none)")
    return execution


def generate_request(args: argparse.Namespace, benchmark: str, out: Path) -> sana.GenerateRequest:
    """The request of the model, sampling and execution flags (the benchmark-specific ones stay at their
    defaults unless `args` has them)."""
    sampling = SamplingConfig(sampler=args.sampler, steps=args.steps, cfg_scale=args.cfg, shift=args.shift,
                              pag_scale=args.pag_scale, decode_tile=args.decode_tile)
    return sana.GenerateRequest(
        benchmark=benchmark, weights=args.weights, out=out, vae=args.vae, text_encoder=args.text_encoder,
        conventions=args.conventions, sampling=sampling, chi=args.chi, resolution=args.resolution, seed=args.seed,
        limit=getattr(args, "limit", None), subset=getattr(args, "subset", None), batch_size=args.batch_size,
        shard=getattr(args, "shard", None), layout=getattr(args, "layout", None), data=getattr(args, "data", None),
        device=args.device, kernels=args.kernels, cuda_graphs=args.cuda_graphs, encode_workers=args.encode_workers,
        quantize=args.quantize)
