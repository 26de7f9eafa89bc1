"""Per-item results cache for scorers whose per-item output is a JSON record (GenEval rows, DPG answers).

Same contract as `metrics.base.FeatureCache`: one folder per (metric, protocol), atomically written chunk
files, a folder made with another protocol is refused; a rerun reads the chunks back and skips done items.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metrics.base import (
    ProtocolMismatchError,
    atomic_path,
    canonical_json,
    chunk_name,
    protocol_id,
    remove_dead_writers_temps,
    write_json_atomic,
)


class ResultsCache:
    """item key -> JSON record, stored as `<root>/<metric>-<protocol_id>/chunk-<n>-<pid>.jsonl`."""

    def __init__(self, root: str | os.PathLike, metric: str, protocol: Mapping[str, Any], flush_every: int = 32):
        self.dir = Path(root) / f"{metric}-{protocol_id(protocol)}"
        self.flush_every = flush_every
        self._mem: dict[str, Any] = {}
        self._read: set[str] = set()        # chunk files already in _mem: a reload reads only the others
        self._pending: dict[str, Any] = {}
        proto_file = self.dir / "protocol.json"
        if proto_file.exists():
            if canonical_json(json.loads(proto_file.read_text())) != canonical_json(dict(protocol)):
                raise ProtocolMismatchError(f"results cache {proto_file} was made with another protocol")
        else:
            write_json_atomic(proto_file, dict(protocol))
        remove_dead_writers_temps(self.dir)
        self.reload()

    def reload(self) -> None:
        """Read the chunks other processes sharing the folder added since the last read."""
        for chunk in sorted(self.dir.glob("chunk-*.jsonl")):
            if chunk.name in self._read:
                continue
            self._read.add(chunk.name)
            for line in chunk.read_text().splitlines():
                rec = json.loads(line)
                self._mem[rec["key"]] = rec["value"]

    def __len__(self) -> int:
        return len(self._mem) + len(self._pending)

    def get(self, key: str) -> Any | None:
        return self._mem.get(key, self._pending.get(key))

    def put(self, key: str, value: Any) -> None:
        self._pending[key] = value
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        target = self.dir / chunk_name(self.dir, ".jsonl")
        self._read.add(target.name)
        with atomic_path(target) as tmp:
            tmp.write_text("".join(json.dumps({"key": k, "value": v}) + "\n" for k, v in self._pending.items()))
        self._mem.update(self._pending)
        self._pending.clear()
