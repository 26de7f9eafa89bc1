"""Runners for the speed cells (Tables 5, 7, 8, 14) and the text-encoder cells (Tables 9, 13).

Random weights (speed does not depend on them) on whatever CUDA GPU this machine has. The verdict applies the
column's tolerance as on the paper's GPU; each cell's detail names the GPU it ran on and, when that is not the
paper's, says the verdict compares hardware as much as code. Timings are cached per process, so Table 7 and
Table 14 (and a row's throughput and speedup) share one measurement.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from model.config import get_preset
from sana_eval.bench import e2e
from sana_eval.bench.peer_models import peer_name
from sana_eval.bench.peers import PeerE2ESpec, time_peer
from sana_eval.bench.text_encoders import (
    TEXT_ENCODERS,
    count_text_encoder_parameters,
    text_encoder_name,
    time_text_encoder,
)
from sana_eval.reproduce.measurement import BLOCK_DESIGN, UNIT_SCALE, Measurement
from sana_eval.tables.recipes import CLI_DTYPES, PEER_TIMED_STEPS
from sana_eval.tables.schema import Column, Setting

if TYPE_CHECKING:
    from model.config import TransformerConfig
    from sana_eval.bench.e2e import E2ETiming
    from sana_eval.bench.peers import PeerTiming
    from sana_eval.bench.text_encoders import TextEncoderTiming

_SECONDS = {"s": 1.0, "ms": 1000.0}


def gpu_caveat(paper_gpu: str, ran_on: str) -> str:
    if paper_gpu.lower() in ran_on.lower():
        return f"on {ran_on}"
    return (f"on {ran_on}, not the paper's {paper_gpu}: the tolerance is meaningful on the paper's GPU only, "
            f"so this verdict compares hardware as much as code")


@functools.cache
def _e2e(config: TransformerConfig, resolution: int, batch: int, dtype: str, steps: int,
         vae: str | None, quantize: str) -> E2ETiming:
    return e2e.time_sana_e2e(e2e.E2ESpec(config, resolution, batch, dtype, steps, vae=vae or e2e.DEFAULT_VAE,
                                         quantize=quantize))


@functools.cache
def _peer(name: str, resolution: int, batch: int, dtype: str, timed_steps: int | None) -> PeerTiming:
    return time_peer(PeerE2ESpec(peer_name(name), resolution, batch, dtype, timed_steps=timed_steps))


def _timing(settings: dict[str, Setting]) -> E2ETiming | PeerTiming:
    """The row model's timing: a peer (diffusers, its own steps) or a Sana preset (our pipeline, 20 steps)."""
    resolution, batch, dtype = int(settings["resolution"]), int(settings["batch"]), CLI_DTYPES[str(settings["dtype"])]
    if settings.get("peer"):
        timed = settings.get("timed_steps")
        return _peer(str(settings["peer"]), resolution, batch, dtype, int(timed) if timed else None)
    vae = settings.get("vae")
    return _e2e(sana_config(settings), resolution, batch, dtype, int(settings["steps"]), str(vae) if vae else None,
                str(settings.get("quantize") or "none"))


def sana_config(settings: dict[str, Setting]) -> TransformerConfig:
    """The recipe's preset with its block design (Table 8) and kernel path, where the recipe sets them."""
    overrides = {k: settings[k] for k in BLOCK_DESIGN if k in settings}
    if settings.get("kernels"):
        overrides["kernels"] = settings["kernels"]
    return get_preset(str(settings["preset"])).replace(**overrides)


def _describe(t: E2ETiming | PeerTiming, whole: bool) -> str:
    what = (f"{t.name} ({t.repo}, diffusers), text encoders {t.text_encoders}, {t.steps} steps"
            + (f" (denoiser timed over {t.timed_steps} and scaled)" if t.timed_steps < t.steps else "")
            if hasattr(t, "repo")
            else f"Gemma-2 {t.text_tokens} tokens, {t.steps} steps, {t.blocks}, decoder {t.vae}, kernels "
                 f"{t.kernels}, DiT GEMMs {t.quantize if t.quantize != 'none' else t.dtype}, CUDA graphs: denoiser "
                 f"{'on' if t.cuda_graphs else 'off'}, text "
                 f"{'on' if t.text_cuda_graphs else 'off'}, {t.achieved_tflops:.0f} TFLOP/s")
    memory = f"{t.peak_mem_gib:.1f} GiB" if t.peak_mem_gib is not None else "-"
    return (f"cell = {'end to end' if whole else 'denoising only'}; {t.total_s:.3f} s end to end = text "
            f"{t.text_s:.3f} + denoise {t.denoise_s:.3f} + decode {t.decode_s:.3f}; {t.img_per_s:.3f} img/s "
            f"({t.denoise_img_per_s:.3f} denoising only); batch {t.batch} on {t.rows} rows, {t.dtype}, {what}, "
            f"peak {memory}")


def _seconds(column: Column, seconds: float) -> float:
    if column.unit not in _SECONDS:
        raise ValueError(f"latency column {column.key!r} has unit {column.unit!r}; expected s or ms")
    return seconds * _SECONDS[column.unit]


# Paper Tables 7 and 14 (and Table 5's FP16 row): throughput at batch 16, latency at batch 1, FP16; Sana at 20
# steps, the peers at their own (sana_eval/bench/peer_models.py); speedup = throughput over the baseline's.
def run_speed(settings: dict[str, Setting], column: Column) -> Measurement:
    measure, scope = settings["measure"], settings.get("scope", "end_to_end")
    if scope not in ("end_to_end", "denoise"):
        raise ValueError(f"speed recipe: unknown scope {scope!r}; expected end_to_end or denoise")
    t, whole = _timing(settings), scope == "end_to_end"
    caveat = gpu_caveat(str(settings["gpu"]), t.device)
    if measure == "speedup":  # Tables 7 and 14: throughput over the baseline's, both at the recipe's batch
        base = _peer(str(settings["baseline"]), t.resolution, t.batch, t.dtype, PEER_TIMED_STEPS)
        ours, theirs = (x.img_per_s if whole else x.denoise_img_per_s for x in (t, base))
        return Measurement(ours / theirs, f"{ours:.4f} / {theirs:.4f} img/s of {base.name} at batch {t.batch}; "
                                          f"row: {_describe(t, whole)}; baseline: {_describe(base, whole)}; {caveat}")
    if measure == "throughput":
        value = t.img_per_s if whole else t.denoise_img_per_s
    elif measure == "latency":
        value = _seconds(column, t.total_s if whole else t.denoise_s)
    else:
        raise ValueError(f"speed recipe: unknown measure {measure!r}; expected throughput, latency or speedup")
    return Measurement(value, f"{_describe(t, whole)}; {caveat}")


@functools.cache
def _text_latency(name: str, batch: int, seq: int, dtype: str) -> TextEncoderTiming:
    return time_text_encoder(name, batch, seq, dtype)


_COUNTED = {"t5": "T5 encoder only (T5EncoderModel)", "gemma": "decoder stack without the LM head",
            "gemma2": "decoder stack without the LM head"}


# Paper Tables 9 and 13: parameters of the published architecture; latency at batch 32, 300 tokens, FP16.
def run_text_encoder(settings: dict[str, Setting], column: Column) -> Measurement:
    name, measure = text_encoder_name(str(settings["model"])), settings["measure"]
    spec = TEXT_ENCODERS[name]
    if measure == "params":
        count = count_text_encoder_parameters(name)
        return Measurement(count / UNIT_SCALE[column.unit],
                           f"{count:,} parameters of the {spec.repo} architecture, {_COUNTED[spec.family]}")
    if measure != "latency":
        raise ValueError(f"text_encoder recipe: unknown measure {measure!r}; expected params or latency")
    t = _text_latency(name, int(settings["batch"]), int(settings["sequence_length"]),
                      CLI_DTYPES[str(settings["dtype"])])
    memory = f"{t.peak_mem_gib:.1f} GiB" if t.peak_mem_gib is not None else "-"
    return Measurement(_seconds(column, t.latency_s),
                       f"{t.latency_s:.4f} s for {t.batch} x {t.seq} tokens of {spec.repo} (random weights), "
                       f"{t.dtype}, {t.attn_implementation} attention, peak {memory}; "
                       + gpu_caveat(str(settings["gpu"]), t.device))
