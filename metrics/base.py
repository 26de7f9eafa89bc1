"""The metric interface (docs/architecture.md §3.3), the result type, and the per-image feature cache.

Every number carries the `protocol` that made it; results whose protocols differ refuse to merge.
Nothing here imports the `model` package: metrics score images on disk, whoever made them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import socket
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np


class MetricError(ValueError):
    """Bad input to a metric; the message is one line naming the file, key or value at fault."""


class ProtocolMismatchError(MetricError):
    """Two numbers (or a cache and a request) made with different protocols."""


# ----------------------------------------------------------------------------------------------
# Small shared helpers.
# `sha256_file` and `atomic_path` are copies of model.weights_io's (metrics must not import model); tests/test_io.py
# holds the two to the same hashes, bytes, file mode and temp-file cleanup.

def sha256_file(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def protocol_id(protocol: Mapping[str, Any]) -> str:
    """Short stable id of a protocol dict; used in cache folder and stat file names."""
    return hashlib.sha256(canonical_json(protocol).encode()).hexdigest()[:16]


def package_versions(*names: str) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


# ----------------------------------------------------------------------------------------------
# Result type.

def _json_float(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@dataclass(frozen=True)
class Result:
    """One metric's output: headline numbers, per-item values and how they were made.

    aggregate: name -> number (e.g. {"fid": 5.6, "fid/animals": 7.1}); cross-check columns are
    kept in provenance["cross_checks"], never here.
    per_item: item id -> {name: number}.
    """
    metric: str
    protocol: Mapping[str, Any]
    aggregate: Mapping[str, float]
    per_item: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def same_protocol(self, other: Result) -> bool:
        return self.metric == other.metric and canonical_json(self.protocol) == canonical_json(other.protocol)

    def merge(self, other: Result) -> Result:
        """Union of two partial results (e.g. two shards of per-item scores) made with one protocol.

        Aggregates are not recomputed: overlapping keys must agree exactly, so a merged mean
        can never be silently wrong.
        """
        if not self.same_protocol(other):
            raise ProtocolMismatchError(
                f"cannot merge {self.metric} [{protocol_id(self.protocol)}] with "
                f"{other.metric} [{protocol_id(other.protocol)}]: protocols differ")
        for name, mine, theirs in (("aggregate", self.aggregate, other.aggregate),
                                   ("per_item", self.per_item, other.per_item)):
            clash = [k for k in set(mine) & set(theirs) if mine[k] != theirs[k]]
            if clash:
                raise MetricError(f"cannot merge {self.metric}: {name} key {sorted(clash)[0]!r} differs")
        return Result(self.metric, self.protocol, {**self.aggregate, **other.aggregate},
                      {**self.per_item, **other.per_item},
                      {"merged": [dict(self.provenance), dict(other.provenance)]})

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["protocol_id"] = protocol_id(self.protocol)
        d["aggregate"] = {k: _json_float(v) for k, v in self.aggregate.items()}
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Result:
        agg = {k: (math.nan if v is None else float(v)) for k, v in d["aggregate"].items()}
        return cls(d["metric"], d["protocol"], agg, d.get("per_item", {}), d.get("provenance", {}))


class Metric(ABC):
    """A scorer with a name and a protocol dict saying exactly how its number is made."""

    name: str
    # Whether a larger number is better, declared with the metric (as torchmetrics' `Metric.higher_is_better`):
    # one bool for every aggregate key, or {key stem: bool} where keys differ ("fid/animals" has stem "fid").
    higher_is_better: bool | Mapping[str, bool]

    @property
    @abstractmethod
    def protocol(self) -> dict[str, Any]:
        """Weights (+sha256), resize, dtype, image size, mode, implementation versions."""

    @property
    def protocol_id(self) -> str:
        return protocol_id(self.protocol)


# ----------------------------------------------------------------------------------------------
# Per-image feature cache: an interrupted scoring run resumes from the last flushed chunk.

HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]   # names this machine in chunk names


def chunk_name(folder: Path, suffix: str) -> str:
    """A new chunk file's name: numbered in write order, unique across the processes (and hosts) sharing `folder`:
    `chunk-<n>-<pid>-<host>-<random><suffix>`."""
    n = len(list(folder.glob(f"chunk-*{suffix}")))
    return f"chunk-{n:06d}-{os.getpid()}-{HOST}-{secrets.token_hex(4)}{suffix}"


def remove_dead_writers_temps(folder: Path) -> None:
    """Delete the temporary chunk files that processes of this machine killed mid-write left in `folder`; a live
    process's (another rank writing right now) and other machines' are left alone."""
    for tmp in folder.glob(".chunk-*.tmp"):
        parts = tmp.name.split("-")
        if len(parts) < 5 or not parts[2].isdigit() or parts[3] != HOST:
            continue
        try:
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's
            continue


def image_key(path: str | os.PathLike, mode: str = "stat") -> str:
    """Cache key of one image file: resolved path + size + mtime ("stat"), or its content sha256."""
    path = Path(path)
    if mode == "sha256":
        return "sha256:" + sha256_file(path)
    if mode == "stat":
        st = path.stat()
        return f"stat:{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    raise MetricError(f"unknown image key mode {mode!r} (expected 'stat' or 'sha256')")


class FeatureCache:
    """Features per image key, for one protocol, stored as atomically written chunk files.

    Layout: <root>/<metric>-<protocol_id>/protocol.json and chunk-<n>.npz (keys, feats).
    Opening a folder whose protocol.json differs from the requested protocol is refused.
    """

    def __init__(self, root: str | os.PathLike, metric: str, protocol: Mapping[str, Any]):
        self.dir = Path(root) / f"{metric}-{protocol_id(protocol)}"
        self.protocol = dict(protocol)
        self._mem: dict[str, np.ndarray] = {}
        self._read: set[str] = set()        # chunk files already in _mem: a reload reads only the others
        self._pending: dict[str, np.ndarray] = {}
        proto_file = self.dir / "protocol.json"
        if proto_file.exists():
            stored = json.loads(proto_file.read_text())
            if canonical_json(stored) != canonical_json(self.protocol):
                raise ProtocolMismatchError(f"feature cache {proto_file} was made with another protocol")
        else:
            write_json_atomic(proto_file, self.protocol)
        remove_dead_writers_temps(self.dir)
        self.reload()

    def reload(self) -> None:
        """Read the chunks other processes sharing the folder added since the last read."""
        for chunk in sorted(self.dir.glob("chunk-*.npz")):
            if chunk.name in self._read:
                continue
            self._read.add(chunk.name)
            with np.load(chunk, allow_pickle=False) as z:
                for k, v in zip(z["keys"].tolist(), z["feats"]):
                    self._mem[k] = v

    def __len__(self) -> int:
        return len(self._mem) + len(self._pending)

    def get(self, key: str) -> np.ndarray | None:
        return self._mem.get(key, self._pending.get(key))

    def put(self, keys: Sequence[str], feats: np.ndarray) -> None:
        for k, v in zip(keys, feats):
            self._pending[k] = np.asarray(v)

    def flush(self) -> None:
        if not self._pending:
            return
        keys = list(self._pending)
        target = self.dir / chunk_name(self.dir, ".npz")
        self._read.add(target.name)
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, keys=np.array(keys), feats=np.stack([self._pending[k] for k in keys]))
        self._mem.update(self._pending)
        self._pending.clear()


# ----------------------------------------------------------------------------------------------
# Per-item work split across processes (docs/architecture.md §4.7): each process computes its share of the items
# into the shared cache, waits for the others, then reads every item back, so all of them hold the full result.

@dataclass(frozen=True)
class WorkShare:
    """Which items this process computes: items go in blocks of `block` consecutive indices, block b to process
    b % size. With `block` = the batch size, a batch holds exactly the items it holds in one process, so features
    (and every number made from them) do not depend on the process count. `wait(what)` returns once every process
    has reached `what` (a barrier); one process needs none."""

    rank: int = 0
    size: int = 1
    wait: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.size or (self.size > 1 and self.wait is None):
            raise ValueError(f"WorkShare(rank={self.rank}, size={self.size}): need 0 <= rank < size and a wait "
                             f"function for more than one process")

    @property
    def split(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """The process whose files and aggregate are kept; the others may skip what only it needs."""
        return self.rank == 0

    def owns(self, index: int, block: int = 1) -> bool:
        return (index // block) % self.size == self.rank

    def require_cache(self, cache: object | None, what: str) -> None:
        """Refuse to split work whose parts could not be exchanged (they travel through the cache folder)."""
        if self.split and cache is None:
            raise MetricError(f"{what}: split across {self.size} processes needs a cache folder (cache_dir) that "
                              f"every process can read")

    def gather(self, cache: FeatureCache | Any, keys: Sequence[str], what: str) -> list[Any]:
        """After this process flushed its part: wait for the others, then every key's value from the cache."""
        if self.split:
            self.wait(what)
            cache.reload()
        values = [cache.get(k) for k in keys]
        missing = [k for k, v in zip(keys, values) if v is None]
        if missing:
            raise MetricError(f"{what}: {len(missing)} item(s) missing from the shared cache {cache.dir} after every "
                              f"process finished, first {missing[0]}")
        return values


ONE_PROCESS = WorkShare()
