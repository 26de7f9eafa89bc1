"""Timing for the speed suite (paper §2 "How speed was measured"): phases of one run marked on the device's
timeline, medians over repeats after a warm-up, peak memory, and the matmul peak that TFLOP/s are compared to.

On a GPU the marks are CUDA events, so the host never waits between phases; on the CPU (tests) they are
`time.perf_counter` readings.
"""
from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPES)}")
    return DTYPES[name]


def timing_device(device: str | torch.device) -> torch.device:
    """The device to time on; a clear error where CUDA is asked for and absent."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("speed timing needs a CUDA GPU and none is available (device='cpu' runs the same code "
                         "paths for testing, timed with perf_counter)")
    return dev


class Clock:
    """Marks between the phases of one run; `intervals()` gives the seconds between consecutive marks."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._marks: list = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append(event)
        else:
            self._marks.append(time.perf_counter())

    def intervals(self) -> list[float]:
        if len(self._marks) < 2:
            raise ValueError(f"a clock needs at least two marks, got {len(self._marks)}")
        pairs = zip(self._marks, self._marks[1:])
        if self.cuda:
            torch.cuda.synchronize()
            return [start.elapsed_time(end) / 1000 for start, end in pairs]
        return [end - start for start, end in pairs]


@dataclass(frozen=True)
class PhaseTimes:
    phases: tuple[float, ...]   # median seconds of each phase over the repeats
    total: float                # median of the per-run totals (first mark to last)
    repeats: int


def median_phases(run: Callable[[Clock], None], device: torch.device, repeats: int,
                  warmup: Callable[[], None] | None = None, budget_s: float | None = None) -> PhaseTimes:
    """Run `warmup` (default: one `run`) once, then `run` up to `repeats` times, each marking its own phases.

    With `budget_s`, repeating stops once that much wall time has passed (at least one timed run): a 4K
    batch of 16 takes minutes per run.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    (warmup or (lambda: run(Clock(device))))()
    samples, started = [], time.perf_counter()
    for _ in range(repeats):
        clock = Clock(device)
        run(clock)
        samples.append(clock.intervals())
        if budget_s is not None and time.perf_counter() - started > budget_s:
            break
    return PhaseTimes(tuple(statistics.median(column) for column in zip(*samples)),
                      statistics.median(sum(s) for s in samples), len(samples))


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median seconds of one `fn()` over `repeats` calls, after `warmup` untimed ones."""
    def run(clock: Clock) -> None:
        clock.mark()
        fn()
        clock.mark()

    def warm() -> None:
        for _ in range(warmup):
            fn()

    return median_phases(run, device, repeats, warmup=warm).total


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak allocated GPU memory since the last reset; None on the CPU (not tracked)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def free_memory(device: torch.device) -> None:
    """Hand back what a finished case held, so the next one starts on an empty GPU."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


@torch.no_grad()
def measure_matmul_peak(dtype: str = "bf16", n: int = 8192, repeats: int = 10, device: str = "cuda") -> float:
    """TFLOP/s of an n×n by n×n matmul (2·n³ FLOPs), median of repeats: what "achieved TFLOP/s" is set against."""
    dev = timing_device(device)
    gen = torch.Generator(dev).manual_seed(0)
    a, b = (torch.randn(n, n, device=dev, dtype=torch_dtype(dtype), generator=gen) for _ in range(2))
    out = torch.empty_like(a)
    # Three warm-up products: cuBLAS picks its kernel and the clocks ramp up.
    seconds = median_seconds(lambda: torch.matmul(a, b, out=out), dev, repeats, warmup=3)
    return 2 * n**3 / seconds / 1e12
