"""Runners for the speed cells (Tables 5, 7, 14) and the text-encoder cells (Tables 9, 13).

Random weights (speed does not depend on them) on whatever CUDA GPU this machine has. The verdict applies the
column's tolerance as on the paper's GPU; each cell's detail names the GPU it ran on and, when that is not the
paper's, says the verdict compares hardware as much as code. Timings are cached per process, so Table 7 and
Table 14 (and a row's throughput and speedup) share one measurement.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from .recipes import CLI_DTYPES
from .runners import UNIT_SCALE, Measurement, register_runner
from .schema import Column, Setting

if TYPE_CHECKING:
    from sana_eval.bench_e2e import E2ETiming
    from sana_eval.bench_text import TextEncoderTiming

_SECONDS = {"s": 1.0, "ms": 1000.0}


def gpu_caveat(paper_gpu: str, ran_on: str) -> str:
    if paper_gpu.lower() in ran_on.lower():
        return f"on {ran_on}"
    return (f"on {ran_on}, not the paper's {paper_gpu}: the tolerance is meaningful on the paper's GPU only, "
            f"so this verdict compares hardware as much as code")


@functools.lru_cache(maxsize=None)
def _e2e(preset: str, resolution: int, batch: int, dtype: str, steps: int) -> E2ETiming:
    from sana_eval.bench_e2e import time_sana_e2e

    return time_sana_e2e(preset, resolution, batch, dtype, steps)


def _seconds(column: Column, seconds: float) -> float:
    if column.unit not in _SECONDS:
        raise ValueError(f"latency column {column.key!r} has unit {column.unit!r}; expected s or ms")
    return seconds * _SECONDS[column.unit]


# Paper Tables 7 and 14 (and Table 5's FP16 row): throughput at batch 16, latency at batch 1, 20 steps, FP16.
@register_runner("speed")
def run_speed(settings: dict[str, Setting], column: Column) -> Measurement:
    measure, scope = settings["measure"], settings.get("scope", "end_to_end")
    if settings.get("quantization") or measure == "speedup":  # the recipe's needs stop these before they get here
        raise ValueError(f"speed runner: {measure} {settings.get('quantization') or ''} needs its own timing code "
                         f"(the recipe's needs name it)")
    if scope not in ("end_to_end", "denoise"):
        raise ValueError(f"speed recipe: unknown scope {scope!r}; expected end_to_end or denoise")
    t = _e2e(str(settings["preset"]), int(settings["resolution"]), int(settings["batch"]),
             CLI_DTYPES[str(settings["dtype"])], int(settings["steps"]))
    whole = scope == "end_to_end"
    if measure == "throughput":
        value = t.img_per_s if whole else t.denoise_img_per_s
    elif measure == "latency":
        value = _seconds(column, t.total_s if whole else t.denoise_s)
    else:
        raise ValueError(f"speed recipe: unknown measure {measure!r}; expected throughput, latency or speedup")
    memory = f"{t.peak_mem_gib:.1f} GiB" if t.peak_mem_gib is not None else "-"
    detail = (f"cell = {'end to end' if whole else 'denoising only'}; {t.total_s:.3f} s end to end = text "
              f"{t.text_s:.3f} + {t.steps} steps {t.denoise_s:.3f} + decode {t.decode_s:.3f}; "
              f"{t.img_per_s:.3f} img/s ({t.denoise_img_per_s:.3f} denoising only); batch {t.batch} on {t.rows} "
              f"rows, {t.dtype}, Gemma-2 {t.text_tokens} tokens, {t.achieved_tflops:.0f} TFLOP/s, peak {memory}; "
              + gpu_caveat(str(settings["gpu"]), t.device))
    return Measurement(value, detail)


@functools.lru_cache(maxsize=None)
def _text_latency(name: str, batch: int, seq: int, dtype: str) -> TextEncoderTiming:
    from sana_eval.bench_text import time_text_encoder

    return time_text_encoder(name, batch, seq, dtype)


_COUNTED = {"t5": "T5 encoder only (T5EncoderModel)", "gemma": "decoder stack without the LM head",
            "gemma2": "decoder stack without the LM head"}


# Paper Tables 9 and 13: parameters of the published architecture; latency at batch 32, 300 tokens, FP16.
@register_runner("text_encoder")
def run_text_encoder(settings: dict[str, Setting], column: Column) -> Measurement:
    from sana_eval.bench_text import TEXT_ENCODERS, count_text_encoder_parameters, text_encoder_name

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
