"""The options `sana-eval bench` modes and suites share (sana_eval/cli/bench.py, bench_suite.py): one definition
each, added to an argument group."""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from model.quantize import MODES as QUANTIZE_MODES
from sana_eval.bench.e2e import NULL_PROMPTS
from sana_eval.bench.text_encoders import TEXT_ENCODERS
from sana_eval.cli import checks

DTYPES = ("bf16", "fp16", "fp32")
PRESET = "Sana_600M_1024px"


def add_presets(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--preset", nargs="+", type=checks.preset, default=[PRESET],
                       help=f"transformer presets (default {PRESET})")


def add_resolution(group: argparse._ArgumentGroup, what: str = "image side in px, a multiple of 32",
                   kind: Callable[[str], int] = checks.resolution) -> None:
    group.add_argument("--resolution", type=kind, default=1024, help=f"{what} (default 1024)")


def add_batches(group: argparse._ArgumentGroup, default: Sequence[int]) -> None:
    group.add_argument("--batch", type=checks.positive_int, nargs="+", default=list(default),
                       help=f"batch sizes (default {' '.join(map(str, default))})")


def add_steps(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--steps", type=checks.positive_int, default=20, help="denoising steps, with CFG (default 20)")


def add_dtype(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--dtype", choices=DTYPES, default="bf16", help="precision (default bf16)")


def add_e2e_dtypes(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--text-dtype", choices=DTYPES, help="Gemma-2's precision (default --dtype)")
    group.add_argument("--vae-dtype", choices=DTYPES, help="DC-AE's precision (default --dtype)")


def add_chi_tokens(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--chi-tokens", type=checks.non_negative_int, default=200,
                       help="Gemma tokens of the CHI (estimate; default 200)")


def add_null_prompt(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--null-prompt", choices=NULL_PROMPTS, default=NULL_PROMPTS[0],
                       help="CFG's empty prompt: encoded once per run, as our pipeline and NVlabs do (cached, the "
                            "default), or for every row in every run, as diffusers' SanaPipeline does (per-call)")


def add_impl(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--impl", nargs="+", choices=["ours", "diffusers"], default=["ours"],
                       help="our implementation and/or diffusers' (the peer), in the same run (default ours)")


def add_kernels(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--kernels", nargs="+", choices=["auto", "eager", "triton"], default=["auto"], metavar="K",
                       help="auto, eager and/or triton: eager PyTorch or our fused Triton kernels (paper §2.2); "
                            "auto (default): Triton on CUDA")


def add_cuda_graphs(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--cuda-graphs", nargs="+", choices=["auto", "on", "off"], default=["auto"], metavar="G",
                       help="auto, on and/or off: replay our denoiser steps from CUDA graphs (bit-identical); auto "
                            "(default): at small batch x resolution, where a step is launch-bound")


def add_quantize(group: argparse._ArgumentGroup, errors: bool = True) -> None:
    rows = "; each quantised mode also gets a row of its error against none" if errors else ""
    group.add_argument("--quantize", nargs="+", choices=QUANTIZE_MODES, default=["none"], metavar="Q",
                       help="none, w8a8 and/or fp8: the DiT blocks' GEMMs in the model dtype, the paper's W8A8 (§4, "
                            f"Table 5) or FP8 e4m3 (model/quantize.py){rows} (default none)")


def add_decode_tile(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--decode-tile", type=checks.positive_int,
                       help="tiled DC-AE decoding with this latent tile side")


def add_text_encoders(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--text-encoder", nargs="+", default=list(TEXT_ENCODERS),
                       help="names or Hugging Face repo ids, e.g. google/t5-v1_1-xxl (default: Table 13's "
                            f"{' '.join(TEXT_ENCODERS)})")


def add_sequence_length(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--sequence-length", type=checks.positive_int, default=300, help="tokens per row (default 300)")


def add_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument_group("output").add_argument("--out", default="runs/bench",
                                                     help="output folder (default runs/bench)")
