"""Whether this machine meets a recipe's needs: a CUDA GPU, local weights, data files, implemented metrics."""
from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch

from sana_eval.paths import DATA_ENV, WEIGHTS_ENV, data_dir, local_weights
from sana_eval.tables.schema import Need

# dataset key -> (path under the data folder, what it is)
DATASETS: dict[str, tuple[str, str]] = {
    "mjhq30k_prompts": ("mjhq30k/meta_data.json", "MJHQ-30K prompts"),
    "mjhq30k_images": ("mjhq30k/imgs", "MJHQ-30K reference images"),
    "geneval_prompts": ("geneval/evaluation_metadata.jsonl", "GenEval prompts"),
    "dpg_bench_prompts": ("dpg_bench/prompts", "DPG-Bench prompts"),
    "dpg_bench_questions": ("dpg_bench/dpg_bench.csv", "DPG-Bench questions"),
    "imagereward_prompts": ("imagereward/benchmark-prompts.json", "ImageReward prompts"),
}


def _gpu(need: Need) -> str | None:
    if torch.cuda.is_available():
        return None
    return f"needs a CUDA GPU ({need.name}, {need.detail})" if need.detail else f"needs a CUDA GPU ({need.name})"


def _weights(need: Need) -> str | None:
    if local_weights(need.name):
        return None
    return f"needs weights {need.name} ({need.detail}), not found under ${WEIGHTS_ENV} or in the HF cache"


def _dataset(need: Need) -> str | None:
    if need.name not in DATASETS:
        raise ValueError(f"unknown dataset need {need.name!r}; known: {', '.join(DATASETS)}")
    relative, what = DATASETS[need.name]
    path = data_dir() / relative
    return None if path.exists() else f"needs {what} at {path} (set ${DATA_ENV})"


def _module(need: Need, label: str) -> str | None:
    try:
        found = importlib.util.find_spec(need.name) is not None
    except ModuleNotFoundError:
        found = False
    return None if found else f"needs {label}, not implemented yet ({need.detail})"


def _package(need: Need) -> str | None:
    found = importlib.util.find_spec(need.name) is not None
    return None if found else f"needs the Python package {need.name} installed ({need.detail})"


CHECKS: dict[str, Callable[[Need], str | None]] = {
    "package": _package,
    "gpu": _gpu,
    "weights": _weights,
    "dataset": _dataset,
    "metric": lambda need: _module(Need("code", f"metrics.{need.name}", need.detail), f"metric {need.name}"),
    "code": lambda need: _module(need, f"module {need.name}"),
}


def unmet(needs: tuple[Need, ...]) -> list[str]:
    """One reason per need this machine does not meet, in the recipe's order."""
    reasons = []
    for need in needs:
        if need.kind not in CHECKS:
            raise ValueError(f"unknown need kind {need.kind!r}; known: {', '.join(CHECKS)}")
        reason = CHECKS[need.kind](need)
        if reason:
            reasons.append(reason)
    return reasons
