"""What the speed suites (sana_eval/bench/suite.py, peers.py) write around each timing: the machine it ran on, the
paper cell it is set against, JSON lines kept on disk case by case, and the Markdown pieces their reports share.

The paper timed an A100 in FP16, so on other GPUs the comparison is of hardware as much as of code: every record
names its GPU, driver, clocks and software.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from sana_eval.io import write_text
from sana_eval.provenance import git_state, nvidia_smi
from sana_eval.tables import get_table
from sana_eval.tables.recipes import PAPER_GPU


def machine_info() -> dict:
    """What a timing depends on besides the code: GPU, driver, clocks now, torch and CUDA, git commit."""
    commit, dirty = git_state()
    cuda = torch.cuda.is_available()
    return {"gpu": torch.cuda.get_device_name() if cuda else "cpu", "nvidia_smi": nvidia_smi() if cuda else {},
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None, "git_commit": commit, "git_dirty": dirty,
            "paper_gpu": PAPER_GPU}


def paper_cell(table_id: str, row: str, column: str) -> str | None:
    """The paper's printed value of one cell; None where the table has no such row."""
    for r in get_table(table_id).rows:
        if r.id == row:
            return r.cells[column].paper.text
    return None


class JsonLines:
    """Records rewritten atomically after each case, so an interrupted suite keeps what it measured."""

    def __init__(self, path: Path) -> None:
        self.path, self.records = path, []

    def add(self, record: dict) -> None:
        self.records.append(record)
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))


def run_case(measure: Callable[[], object]) -> dict:
    """One case's record; an error (often out of memory at 4K x 16) becomes the record instead of the end."""
    try:
        return measure().to_dict()
    except (RuntimeError, ValueError) as err:  # torch.OutOfMemoryError is a RuntimeError
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}


def fmt(value: object, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def machine_lines(record: dict) -> list[str]:
    """The Markdown bullets naming the machine of a record (its "machine" entry, from machine_info)."""
    machine, smi = record["machine"], record["machine"]["nvidia_smi"]
    clocks = (f"; SM {smi.get('clocks.sm')}/{smi.get('clocks.max.sm')} MHz, memory {smi.get('clocks.mem')}/"
              f"{smi.get('clocks.max.mem')} MHz, power limit {smi.get('power.limit')} W") if smi else ""
    return [f"- GPU: {machine['gpu']}; driver {smi.get('driver_version', '-')}{clocks}",
            f"- torch {machine['torch']}, CUDA {machine['cuda']}, cuDNN {machine['cudnn']}; git "
            f"{(machine['git_commit'] or '')[:8] or 'no commit'}{' (dirty)' if machine['git_dirty'] else ''}",
            f"- The paper timed an {PAPER_GPU} in FP16: on another GPU, compare ratios, not absolute times."]
