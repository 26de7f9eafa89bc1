"""Where things live: the repository, the data and weight folders the environment names, and the runs folder."""
from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import constants as hub_constants

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_ENV = "SANA_EVAL_WEIGHTS"          # a folder holding <org>/<name> or <org>--<name> checkpoint folders
DATA_ENV = "SANA_EVAL_DATA"                # a folder laid out like shared/data (see each SOURCE.md)
RUNS_ENV = "SANA_EVAL_RUNS"                # where `reproduce` keeps generated images and scores (default <repo>/runs)


def data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV) or REPO_ROOT / "data")


def local_weights(repo_id: str) -> Path | None:
    """The local folder of a Hugging Face repo: under $SANA_EVAL_WEIGHTS, else in the HF cache; never online."""
    org, _, name = repo_id.partition("/")
    root = os.environ.get(WEIGHTS_ENV)
    if root:
        for candidate in (Path(root, org, name), Path(root, f"{org}--{name}"), Path(root, name)):
            if candidate.is_dir() and any(candidate.iterdir()):
                return candidate
    snapshots = Path(hub_constants.HF_HUB_CACHE, f"models--{org}--{name}", "snapshots")
    found = sorted(p for p in snapshots.glob("*") if p.is_dir() and any(p.iterdir())) if snapshots.is_dir() else []
    return found[-1] if found else None


def runs_root() -> Path:
    return Path(os.environ.get(RUNS_ENV) or REPO_ROOT / "runs")
