"""`sana-eval bench MODE`: speed on a CUDA GPU, one sub-subcommand per thing timed, each with only the options
that apply to it (a suite takes no --kernels, DC-AE decoding no --set).

Timing modes print one JSON line per measurement; `bench suite sana|text-encoders|peers|evaluate` writes a whole
grid to --out (JSON lines + Markdown, + a plot).
"""
from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable, Sequence

from model.config import TransformerConfig, get_preset
from sana_eval.bench import clock, e2e
from sana_eval.bench.dc_ae import time_dc_ae_decode
from sana_eval.bench.fid_features import time_fid_features
from sana_eval.bench.kernels import profile_transformer, time_linear_attention
from sana_eval.bench.peer_models import PEERS, peer_name
from sana_eval.bench.peers import PeerE2ESpec, time_peer
from sana_eval.bench.quantization import quantization_errors
from sana_eval.bench.suite import BATCHES, MODELS
from sana_eval.bench.text_encoders import time_text_encoder
from sana_eval.bench.transformer import time_transformer
from sana_eval.cli import checks
from sana_eval.cli.bench_options import (
    PRESET,
    add_batches,
    add_chi_tokens,
    add_cuda_graphs,
    add_decode_tile,
    add_dtype,
    add_e2e_dtypes,
    add_impl,
    add_kernels,
    add_null_prompt,
    add_presets,
    add_quantize,
    add_resolution,
    add_sequence_length,
    add_steps,
    add_text_encoders,
)
from sana_eval.cli.bench_suite import add_suite_parser, run_suite
from sana_eval.cli.common import add_command
from sana_eval.tables.recipes import PEER_TIMED_STEPS

VAES = ("dc-ae-f32c32-sana-1.0", "dc-ae-f32c32-sana-1.1", "sdxl-vae")
SET_HELP = ("override a field of each --preset, e.g. Table 8's block designs: --set self_attention=softmax "
            "--set ffn=mlp --set mlp_ratio=4.0 --set in_channels=4 --set patch_size=2")


# --- the modes --------------------------------------------------------------------------------------------------

def _add_transformer(modes: argparse._SubParsersAction) -> None:
    parser = add_command(modes, "transformer", run=run,
                         help="the denoising transformer, ours and diffusers'",
                         description="the denoising transformer: one forward and --steps forwards of a CFG batch "
                                     "(2·batch rows), ours and diffusers' (the peer) in the same run",
                         examples=[f"sana-eval bench transformer --preset {PRESET} --batch 1 16 --impl ours diffusers",
                                   f"sana-eval bench transformer --preset {PRESET} --batch 16 --dtype fp16 "
                                   "--kernels eager triton",
                                   f"sana-eval bench transformer --preset {PRESET} --batch 1 --cuda-graphs off on",
                                   f"sana-eval bench transformer --preset {PRESET} --batch 16 --dtype fp16 "
                                   "--quantize none w8a8 fp8"])
    model = parser.add_argument_group("model")
    add_presets(model)
    add_impl(model)
    workload = parser.add_argument_group("workload")
    add_resolution(workload)
    add_batches(workload, BATCHES)
    add_steps(workload)
    add_dtype(workload)
    implementation = parser.add_argument_group("implementation (ours)")
    add_kernels(implementation)
    add_cuda_graphs(implementation)
    add_quantize(implementation)


def _add_e2e(modes: argparse._SubParsersAction) -> None:
    parser = add_command(modes, "e2e", run=run,
                         help="Sana end to end: Gemma-2, steps, DC-AE (Tables 7, 8, 14)",
                         description="Sana end to end: Gemma-2 with the CHI, --steps CFG steps and DC-AE decoding "
                                     "(Tables 7, 8, 14); one JSON line per case with the phases, MFU and memory",
                         examples=[f"sana-eval bench e2e --preset {PRESET} --batch 1 16 --dtype fp16",
                                   f"sana-eval bench e2e --preset {PRESET} --batch 16 --dtype fp16 --set in_channels=4 "
                                   "--set patch_size=2 --vae sdxl-vae --kernels triton",
                                   f"sana-eval bench e2e --preset {PRESET} Sana_1600M_1024px --batch 1 --dtype fp16 "
                                   "--cuda-graphs off on",
                                   f"sana-eval bench e2e --preset {PRESET} --batch 16 --dtype fp16 "
                                   "--quantize none fp8",
                                   "sana-eval bench e2e --preset Sana_1600M_1024px --batch 16 --dtype fp16 "
                                   "--baseline flux-dev   # Table 7's speedup"])
    model = parser.add_argument_group("model")
    add_presets(model)
    model.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE", help=SET_HELP)
    model.add_argument("--vae", choices=VAES, metavar="VAE",
                       help=f"the decoder: {', '.join(VAES)} (default {VAES[0]}; sdxl-vae: Table 8's F8C4, with "
                            "--set in_channels=4 --set patch_size=2)")
    workload = parser.add_argument_group("workload")
    add_resolution(workload)
    add_batches(workload, BATCHES)
    add_steps(workload)
    add_chi_tokens(workload)
    add_null_prompt(workload)
    precision = parser.add_argument_group("precision")
    add_dtype(precision)
    add_e2e_dtypes(precision)
    implementation = parser.add_argument_group("implementation")
    add_kernels(implementation)
    add_cuda_graphs(implementation)
    add_quantize(implementation, errors=False)
    add_decode_tile(implementation)
    parser.add_argument_group("peer").add_argument(
        "--baseline", metavar="PEER",
        help="a peer model (a `bench suite peers` name, paper label or repo id) timed end to end in the same run "
             "at each --batch, its denoiser over a few forwards scaled to its steps as the reproduction does; each "
             "case is followed by its speedup, throughput over the peer's (Tables 7, 14)")


def _add_dc_ae(modes: argparse._SubParsersAction) -> None:
    parser = add_command(modes, "dc-ae", run=run, help="DC-AE decoding of random latents, ours and diffusers'",
                         description="DC-AE f32c32 decoding of random latents, ours (eager or fused) and diffusers'",
                         examples=["sana-eval bench dc-ae --resolution 1024 --batch 1 4 --impl ours diffusers",
                                   "sana-eval bench dc-ae --resolution 4096 --decode-tile 32 --batch 1 --dtype fp16 "
                                   "--kernels eager triton"])
    model = parser.add_argument_group("model")
    add_impl(model)
    workload = parser.add_argument_group("workload")
    add_resolution(workload)
    add_batches(workload, BATCHES)
    add_dtype(workload)
    implementation = parser.add_argument_group("implementation (ours)")
    add_kernels(implementation)
    add_decode_tile(implementation)


def _add_attention(modes: argparse._SubParsersAction) -> None:
    parser = add_command(modes, "attention", run=run,
                         help="one block's linear attention, eager against fused",
                         description="one block's ReLU linear attention on 2·batch CFG rows at the preset's width, "
                                     "eager against fused, with the error between them",
                         examples=["sana-eval bench attention --tokens 1024 4096 16384 --batch 1 16 "
                                   "--kernels eager triton"])
    model = parser.add_argument_group("model")
    model.add_argument("--preset", type=checks.preset, default=PRESET,
                       help=f"the preset whose width is timed (default {PRESET})")
    workload = parser.add_argument_group("workload")
    workload.add_argument("--tokens", type=checks.positive_int, nargs="+", default=[1024, 4096, 16384],
                          help="image tokens (1024 px = 1024, 2K = 4096, 4K = 16384; default all three)")
    add_batches(workload, BATCHES)
    add_dtype(workload)
    add_kernels(parser.add_argument_group("implementation"))


def _add_text_encoder(modes: argparse._SubParsersAction) -> None:
    parser = add_command(modes, "text-encoder", run=run,
                         help="a text encoder's latency (Tables 9, 13)",
                         description="a text encoder's latency on random weights of its published architecture "
                                     "(Tables 9, 13: batch 32, 300 tokens, fp16)",
                         examples=["sana-eval bench text-encoder --text-encoder google/t5-v1_1-xxl --batch 32 "
                                   "--sequence-length 300 --dtype fp16"])
    add_text_encoders(parser.add_argument_group("model"))
    workload = parser.add_argument_group("workload")
    add_batches(workload, (32,))
    add_sequence_length(workload)
    add_dtype(workload)


def _add_fid_features(modes: argparse._SubParsersAction) -> None:
    parser = add_command(modes, "fid-features", run=run,
                         help="FID feature extraction: bound by JPEG decoding?",
                         description="FID feature extraction of --images JPEGs of --resolution px with 0/4/8/16 "
                                     "DataLoader workers: is it bound by JPEG decoding?",
                         examples=["sana-eval bench fid-features --images 2000"])
    workload = parser.add_argument_group("workload")
    workload.add_argument("--images", type=checks.positive_int, default=2000, help="how many JPEGs (default 2000)")
    add_resolution(workload, "side of the JPEGs in px", checks.positive_int)
    workload.add_argument("--fid-size", type=checks.positive_int, default=512, help="Sana's FID resize (default 512)")


def _add_profile(modes: argparse._SubParsersAction) -> None:
    parser = add_command(modes, "profile", run=run,
                         help="the GPU kernels of one transformer forward, by time",
                         description="the GPU kernels of one transformer CFG forward by total device time "
                                     "(torch.profiler's table), instead of timing",
                         examples=[f"sana-eval bench profile --preset {PRESET} --batch 16 --kernels triton"])
    add_presets(parser.add_argument_group("model"))
    workload = parser.add_argument_group("workload")
    add_resolution(workload)
    add_batches(workload, (1,))
    add_dtype(workload)
    add_kernels(parser.add_argument_group("implementation"))


MODES: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "transformer": _add_transformer, "e2e": _add_e2e, "dc-ae": _add_dc_ae, "attention": _add_attention,
    "text-encoder": _add_text_encoder, "fid-features": _add_fid_features, "profile": _add_profile,
    "suite": lambda modes: add_suite_parser(modes, run)}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "bench", help="speed on a CUDA GPU, one MODE per thing timed",
        description=__doc__,
        examples=[f"sana-eval bench transformer --preset {PRESET} --batch 1 16 --impl ours diffusers",
                  f"sana-eval bench e2e --preset {PRESET} --batch 16 --dtype fp16 --set in_channels=4 "
                  "--set patch_size=2 --vae sdxl-vae --kernels triton",
                  "sana-eval bench dc-ae --resolution 1024 --batch 1 4 --impl ours diffusers",
                  "sana-eval bench attention --tokens 1024 4096 16384 --batch 1 16 --kernels eager triton",
                  "sana-eval bench text-encoder --text-encoder google/t5-v1_1-xxl --batch 32 --dtype fp16",
                  "sana-eval bench fid-features --images 2000",
                  f"sana-eval bench profile --preset {PRESET} --batch 16 --kernels triton",
                  "sana-eval bench suite sana --resolutions 512 1024 --dtype fp16 --out runs/bench"])
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    for add in MODES.values():
        add(modes)
    return parser


# --- running ------------------------------------------------------------------------------------------------------

def apply_overrides(preset: str, overrides: Sequence[str]) -> str | TransformerConfig:
    """`--set FIELD=VALUE` items applied over a preset (paper Table 8's block designs); the preset name if none.
    Each value is parsed as the type of the field it replaces."""
    if not overrides:
        return preset
    config, fields = get_preset(preset), {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not hasattr(config, key):
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with a transformer config field, e.g. "
                             f"self_attention=softmax")
        kind = type(getattr(config, key))
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError(f"--set {item!r}: {key} takes true or false")
            fields[key] = text.lower() == "true"
            continue
        try:
            fields[key] = kind(text)
        except ValueError:
            raise ValueError(f"--set {item!r}: {key} expects {kind.__name__}") from None
    return config.replace(**fields)


def _emit(row: object) -> None:
    """One measurement as one JSON line, flushed, so a long grid shows its progress (and survives a kill)."""
    print(json.dumps(row.to_dict()), flush=True)


def _transformer(args: argparse.Namespace) -> None:
    for preset, batch, impl in itertools.product(args.preset, args.batch, args.impl):
        # kernels and graphs are ours; the diffusers model runs as diffusers ships it
        paths = (itertools.product(args.kernels, args.cuda_graphs, args.quantize) if impl == "ours"
                 else [("auto", "off", "none")])
        for kernels, graphs, quantize in paths:
            _emit(time_transformer(preset, args.resolution, batch, args.dtype, impl, args.steps, kernels=kernels,
                                   cuda_graphs=graphs, quantize=quantize))
    if "ours" in args.impl and set(args.quantize) - {"none"}:
        for preset, batch in itertools.product(args.preset, args.batch):
            for row in quantization_errors(preset, args.resolution, batch, args.dtype, args.quantize, args.steps):
                _emit(row)


def _e2e(args: argparse.Namespace) -> None:
    models = [apply_overrides(preset, args.overrides) for preset in args.preset]   # a bad --set fails before timing
    vae = {"vae": args.vae} if args.vae else {}
    peak = clock.measure_matmul_peak(args.dtype)
    baselines = {}
    for model, batch in itertools.product(models, args.batch):
        if args.baseline and batch not in baselines:
            baselines[batch] = time_peer(PeerE2ESpec(args.baseline, args.resolution, batch, args.dtype,
                                                     timed_steps=PEER_TIMED_STEPS))
            _emit(baselines[batch])
        for kernels, graphs, quantize in itertools.product(args.kernels, args.cuda_graphs, args.quantize):
            spec = e2e.E2ESpec(model, args.resolution, batch, args.dtype, args.steps, decode_tile=args.decode_tile,
                               text_dtype=args.text_dtype, vae_dtype=args.vae_dtype, chi_tokens=args.chi_tokens,
                               null_prompt=args.null_prompt,
                               kernels=kernels, cuda_graphs=graphs, quantize=quantize, **vae)
            timing = e2e.time_sana_e2e(spec, matmul_peak_tflops=peak)
            _emit(timing)
            if args.baseline:
                base = baselines[batch]
                print(json.dumps({"speedup": timing.img_per_s / base.img_per_s, "batch": batch,
                                  "preset": timing.preset, "quantize": quantize, "img_per_s": timing.img_per_s,
                                  "baseline": base.name, "baseline_img_per_s": base.img_per_s}), flush=True)


def _dc_ae(args: argparse.Namespace) -> None:
    for batch, impl in itertools.product(args.batch, args.impl):
        for kernels in args.kernels if impl == "ours" else ["auto"]:
            _emit(time_dc_ae_decode(args.resolution, batch, args.dtype, impl, args.decode_tile, kernels=kernels))


def _attention(args: argparse.Namespace) -> None:
    width = get_preset(args.preset).hidden_size
    for tokens, batch, kernels in itertools.product(args.tokens, args.batch, args.kernels):
        _emit(time_linear_attention(2 * batch, tokens, width, dtype=args.dtype, kernels=kernels))


def _text_encoder(args: argparse.Namespace) -> None:
    for name, batch in itertools.product(args.text_encoder, args.batch):
        _emit(time_text_encoder(name, batch, args.sequence_length, args.dtype))


def _fid_features(args: argparse.Namespace) -> None:
    for row in time_fid_features(args.images, args.resolution, args.fid_size):
        _emit(row)


def _profile(args: argparse.Namespace) -> None:
    for preset, batch, kernels in itertools.product(args.preset, args.batch, args.kernels):
        print(f"# {preset}, {args.resolution} px, batch {batch} (CFG: {2 * batch} rows), {args.dtype}, "
              f"kernels {kernels}")
        print(profile_transformer(preset, args.resolution, batch, args.dtype, kernels), flush=True)


RUNNERS: dict[str, Callable[[argparse.Namespace], None]] = {
    "transformer": _transformer, "e2e": _e2e, "dc-ae": _dc_ae, "attention": _attention,
    "text-encoder": _text_encoder, "fid-features": _fid_features, "profile": _profile, "suite": run_suite}


def check(args: argparse.Namespace) -> None:
    """What the argument types cannot see alone, before a model is built or --out is written: the model names,
    kernels and CUDA graphs this machine cannot run, and for a suite, a GPU (a suite on the CPU would write a report
    of errors)."""
    for option, names, known in (("--models", getattr(args, "models", ()), MODELS),
                                 ("--peers", getattr(args, "peers", ()), PEERS)):
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"{option} {' '.join(unknown)}: unknown; known: {', '.join(known)}")
    if getattr(args, "baseline", None):
        try:
            peer_name(args.baseline)
        except ValueError as err:
            raise ValueError(f"--baseline: {err}") from None
    for kernels, graphs in itertools.product(getattr(args, "kernels", ["auto"]), getattr(args, "cuda_graphs", ["off"])):
        checks.check_kernels(None, kernels, graphs)
    if args.mode == "suite":
        checks.check_paths(args, {"--out": checks.output_dir})
        if not getattr(args, "tiny", False):  # `suite evaluate --tiny` checks the wiring on any device
            checks.require_cuda(f"sana-eval bench suite {args.suite}")


def run(args: argparse.Namespace) -> int:
    check(args)
    RUNNERS[args.mode](args)
    return 0
