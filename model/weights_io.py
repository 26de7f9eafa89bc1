"""Reading and writing weight files safely: no unpickled code, strict key checks, atomic writes."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"


class CheckpointError(ValueError):
    """A weight file that cannot be used as asked; the message is one line and names the file."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of one file (`.safetensors`, or a torch pickle read with `weights_only=True`).

    A pickle may wrap its tensors in a dict (NVlabs puts them under "state_dict"); that dict is returned as
    read, and the caller decides which key holds the weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == SAFETENSORS_SUFFIX:
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(err)})") from None
    if path.suffix in PICKLE_SUFFIXES:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for truncated/corrupt/unsafe pickles
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({_first_line(err)})") from None
    raise CheckpointError(f"{path}: unknown weight file type {path.suffix!r} "
                          f"(expected {SAFETENSORS_SUFFIX} or one of {', '.join(PICKLE_SUFFIXES)})")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _summarise(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{len(names)} ({shown}{', …' if len(names) > limit else ''})"


def check_state_dict(expected: Mapping[str, torch.Size | tuple[int, ...]],
                     state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise one `CheckpointError` listing every missing, unexpected and misshaped key; nothing is loaded."""
    missing = sorted(k for k in expected if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in expected)
    misshaped = sorted(f"{k} {tuple(state_dict[k].shape)}≠{tuple(expected[k])}"
                       for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k]))
    problems = []
    if missing:
        problems.append(f"missing keys {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_summarise(unexpected)}")
    if misshaped:
        problems.append(f"misshaped keys {_summarise(misshaped)}")
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every tensor or nothing: keys and shapes are checked before any parameter is touched."""
    expected = {k: v.shape for k, v in module.state_dict().items()}
    check_state_dict(expected, state_dict, source)
    on_meta = any(p.is_meta for p in module.parameters())
    module.load_state_dict(dict(state_dict), strict=True, assign=on_meta)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block finishes without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
                     metadata: Mapping[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=dict(metadata or {}))


def save_torch(obj: object, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def sha256_tree(path: str | os.PathLike) -> dict[str, str]:
    """sha256 of a weight file, or of every file under a checkpoint folder (keyed by relative path)."""
    path = Path(path)
    if path.is_file():
        return {path.name: sha256_file(path)}
    return {str(f.relative_to(path)): sha256_file(f) for f in sorted(path.rglob("*")) if f.is_file()}
