"""The manifests of an output folder (`manifest*.jsonl`): reading them, checking a folder against a run, writing them.

A manifest is a header line (the run's identity: schema, seed rule, seed, layout, benchmark, run_config) then one
record per written file (item, images, seeds, prompt, sha256), appended one batch per write (docs/generation.md §3).
Each shard and rank has its own; all manifests of a folder share one identity, and readers merge them. A kill at any
moment leaves at most one line cut short, which readers ignore and the next writer drops.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.weights_io import sha256_file
from sana_eval.distributed import SINGLE_PROCESS, World
from sana_eval.generation.layouts import OutputFile
from sana_eval.generation.prompt_files import Item
from sana_eval.io import write_text

MANIFEST_SCHEMA = 1


# The run's errors live here rather than in runner.py: reading a folder's manifests raises them too, and runner.py
# imports this module.
class GenerationError(ValueError):
    """Bad arguments, a bad `generate_fn` output, or an output folder that holds another run."""


class RunConfigMismatchError(GenerationError):
    pass


def manifest_name(shard: tuple[int, int] | None, world: World = SINGLE_PROCESS) -> str:
    """One manifest per shard and rank: processes never append to the same file."""
    name = "manifest" if shard is None else f"manifest.shard-{shard[0]:03d}-of-{shard[1]:03d}"
    return name + (f".rank-{world.rank:03d}-of-{world.size:03d}" if world.size > 1 else "") + ".jsonl"


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """Complete lines only: a trailing line without '\\n' is a write cut short by a kill, and is ignored."""
    raw = path.read_bytes()
    rows = []
    for lineno, line in enumerate(raw.split(b"\n")[:-1], start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            fix = (f"delete line {lineno} (the files it recorded are made again on the next run)" if lineno > 1
                   else "delete the manifest (every file in it is made again on the next run)")
            raise GenerationError(f"{path} line {lineno}: bad JSON ({err.msg}); the manifest is damaged: {fix}, "
                                  f"or use another output folder") from None
    if not rows or rows[0].get("kind") != "header":
        raise GenerationError(f"{path}: no header line; not a sana-eval manifest")
    return rows


def read_run(out_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """(identity shared by all manifests, records by file path) of an output folder; for scorers and reruns."""
    out_dir = Path(out_dir)
    identity: dict[str, Any] | None = None
    records: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out_dir.glob("manifest*.jsonl")):
        rows = _read_lines(path)
        if identity is None:
            identity = rows[0]["identity"]
        elif canon(rows[0]["identity"]) != canon(identity):
            raise RunConfigMismatchError(f"{path}: its run differs from the other manifests in {out_dir} "
                                         f"({first_difference(identity, rows[0]['identity'])})")
        for row in rows[1:]:
            records.setdefault(row["file"], []).append(row)
    return identity or {}, records


def canon(obj: Any) -> str:
    """Canonical JSON of `obj` (sorted keys, no spaces): equal text means an equal identity."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def first_difference(old: Any, new: Any, prefix: str = "") -> str:
    """The first dotted key (sorted order) where `old` and `new` differ, with both values, for error messages."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            if canon(old.get(key)) != canon(new.get(key)):
                return first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.') or 'value'}: {canon(old)} then, {canon(new)} now"


class ManifestWriter:
    """Appends batches of records to one manifest, creating it with `header` or resuming it after a kill."""

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path = path
        if not path.exists():
            write_text(path, json.dumps(header) + "\n")
        else:  # drop a line cut short by a kill, so the next append starts on a fresh line
            raw = path.read_bytes()
            if not raw.endswith(b"\n"):
                with open(path, "r+b") as fh:
                    fh.truncate(raw.rfind(b"\n") + 1)

    def append(self, rows: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def file_sha256(path: Path) -> str | None:
    """The sha256 of the file at `path`; None when there is none."""
    return sha256_file(path) if path.is_file() else None


def is_recorded(out_dir: Path, records: Sequence[dict[str, Any]], it: Item, f: OutputFile, seeds: list[int]) -> bool:
    """On disk with the bytes a manifest recorded for exactly this item, images, seeds and prompt."""
    if not records:
        return False
    on_disk = file_sha256(out_dir / f.path)
    return any(r["sha256"] == on_disk and r["item"] == it.id and r["k"] == list(f.ks) and r["seed"] == seeds
               and r["prompt"] == it.prompt for r in records)


def refuse_other_batch_sizes(out_dir: Path, batch_size: int) -> None:
    """Files still to make with another batch size than the folder's would come from other chunks and batches,
    whose numerics may differ in the last bits on some hardware: the folder would match no single run."""
    sizes = set()
    for path in out_dir.glob("manifest*.jsonl"):
        with open(path, "rb") as fh:
            sizes.add(json.loads(fh.readline()).get("batch_size"))
    other = sorted(size for size in sizes - {batch_size} if size is not None)
    if other:
        raise RunConfigMismatchError(
            f"{out_dir} was started with --batch-size {' and '.join(map(str, other))}, now {batch_size}: the images "
            f"still to make could differ in their bytes; rerun with --batch-size {other[0]}, or use another output "
            f"folder")


def remove_stale_temps(out_dir: Path, paths: Sequence[str]) -> None:
    """Temp files (`.<name>.<random>.tmp`, see `model.weights_io.atomic_path`) that a killed run left beside this
    run's own files.

    Only temps of this run's files go: another shard may be writing its own right now.
    """
    by_dir: dict[Path, set[str]] = {}
    for rel in paths:
        path = out_dir / rel
        by_dir.setdefault(path.parent, set()).add(path.name)
    for folder, names in by_dir.items():
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name.startswith(".") and entry.name.endswith(".tmp") \
                        and entry.name[1:-4].rpartition(".")[0] in names:
                    entry.unlink(missing_ok=True)
