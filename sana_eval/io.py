"""Files written whole or not at all: text, bytes and figures go to a temp file that is renamed into place."""
from __future__ import annotations

from pathlib import Path

from model.weights_io import atomic_path


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def save_figure(fig, path: Path) -> Path:
    """A matplotlib `Figure` as PNG (no pyplot, so no global backend state)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return Path(path)
