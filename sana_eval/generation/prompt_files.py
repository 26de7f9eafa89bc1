"""Official prompt-file schemas -> benchmark items; every error names the file and the line or entry."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class BenchmarkError(ValueError):
    """Bad benchmark name, prompt file or data; the message is one line naming the file, line or key."""


class UnknownBenchmarkError(BenchmarkError):
    pass


class PromptFileError(BenchmarkError):
    pass


class IntegrityError(BenchmarkError):
    """A file whose sha256 is not the pinned one."""


class DataUnavailableError(BenchmarkError):
    """Not on disk and not downloadable (offline)."""


@dataclass(frozen=True)
class Item:
    """One prompt: `n_images` images are made from it; `metadata` is what its scorer needs (do not mutate)."""
    id: str
    prompt: str
    n_images: int
    metadata: dict[str, Any] = field(default_factory=dict)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise PromptFileError(f"{path}: not UTF-8 (byte {err.start})") from None


def _jsonl_objects(path: Path, *, skip_blank: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            if skip_blank:
                continue
            raise PromptFileError(f"{path} line {lineno}: empty line")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise PromptFileError(f"{path} line {lineno}: bad JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise PromptFileError(f"{path} line {lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise PromptFileError(f"{path} line {err.lineno}: bad JSON ({err.msg} at column {err.colno})") from None


def _prompt_of(obj: dict[str, Any], where: str) -> str:
    if "prompt" not in obj:
        raise PromptFileError(f"{where}: no 'prompt' key")
    if not isinstance(obj["prompt"], str) or not obj["prompt"].strip():
        raise PromptFileError(f"{where}: 'prompt' must be a non-empty string")
    return obj["prompt"]


def _id_of(obj: dict[str, Any], where: str) -> str:
    if "id" not in obj:
        raise PromptFileError(f"{where}: no 'id' key")
    if not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool):
        raise PromptFileError(f"{where}: 'id' must be a string or an integer")
    return str(obj["id"])


def check_ids(items: tuple[Item, ...], path: Path) -> None:
    """Ids become file names: they must be unique and must not leave the output folder."""
    seen: set[str] = set()
    for it in items:
        if not it.id or it.id.startswith(".") or re.search(r"[/\\\x00-\x1f]", it.id):
            raise PromptFileError(f"{path}: item id {it.id!r} cannot be a file name")
        if it.id in seen:
            raise PromptFileError(f"{path}: item id {it.id!r} appears twice")
        seen.add(it.id)


def parse_geneval(path: Path, n_images: int) -> list[Item]:
    """`evaluation_metadata.jsonl`: line N (0-based) is item `NNNNN`; the whole object is its metadata
    (docs/protocols.md §3.1)."""
    items = []
    for lineno, obj in _jsonl_objects(path, skip_blank=False):
        prompt = _prompt_of(obj, f"{path} line {lineno}")
        if "tag" not in obj or "include" not in obj:
            raise PromptFileError(f"{path} line {lineno}: GenEval metadata needs 'tag' and 'include' keys")
        items.append(Item(f"{len(items):05d}", prompt, n_images, obj))
    return items


def parse_dpg(folder: Path, n_images: int) -> list[Item]:
    """`prompts/<item_id>.txt`, one prompt per file, in name order (SANA's metadata order, docs/protocols.md §4.4).

    Prompts are stripped: two official files carry stray whitespace that SANA's copy strips (SOURCE.md).
    """
    items = []
    for file in sorted((p for p in folder.iterdir() if p.suffix == ".txt" and p.is_file()), key=lambda p: p.name):
        prompt = _read_text(file).strip()
        if not prompt:
            raise PromptFileError(f"{file}: empty prompt")
        items.append(Item(file.stem, prompt, n_images, {}))
    return items


def _entries(path: Path, *, ids_required: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, prompt, other keys) from a JSON list of {"id", "prompt", ...} or a dict {id: {"prompt", ...} | str}."""
    data = _read_json(path)
    out = []
    if isinstance(data, list):
        for i, obj in enumerate(data):
            where = f"{path} entry {i}"
            if not isinstance(obj, dict):
                raise PromptFileError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            ident = _id_of(obj, where) if ids_required or "id" in obj else f"{i:05d}"
            out.append((ident, _prompt_of(obj, where), {k: v for k, v in obj.items() if k not in ("id", "prompt")}))
    elif isinstance(data, dict):
        for key, obj in data.items():
            where = f"{path} entry {key!r}"
            if isinstance(obj, str):
                obj = {"prompt": obj}
            if not isinstance(obj, dict):
                raise PromptFileError(f"{where}: expected a prompt string or an object with 'prompt'")
            out.append((key, _prompt_of(obj, where), {k: v for k, v in obj.items() if k != "prompt"}))
    else:
        raise PromptFileError(f"{path}: expected a JSON list or object, got {type(data).__name__}")
    return out


def parse_imagereward(path: Path, n_images: int) -> list[Item]:
    """`benchmark-prompts.json`: a list of {"id", "prompt"} (docs/protocols.md §5.1)."""
    return [Item(i, p, n_images, meta) for i, p, meta in _entries(path, ids_required=True)]


def parse_mjhq(path: Path, n_images: int) -> list[Item]:
    """`meta_data.json`: {id: {"category", "prompt"}}; key order is the sample order (docs/protocols.md §1.1),
    kept as read."""
    items = []
    for ident, prompt, meta in _entries(path, ids_required=True):
        if "category" not in meta:
            raise PromptFileError(f"{path} entry {ident!r}: no 'category' key")
        items.append(Item(ident, prompt, n_images, meta))
    return items


def parse_prompt_file(path: Path, n_images: int) -> list[Item]:
    """`.txt`: one prompt per non-blank line (id = 5-digit index); `.jsonl`/`.json`: objects with "prompt" (+ "id")."""
    if path.suffix == ".jsonl":
        rows = list(_jsonl_objects(path, skip_blank=True))
        return [Item(_id_of(obj, f"{path} line {n}") if "id" in obj else f"{i:05d}",
                     _prompt_of(obj, f"{path} line {n}"), n_images,
                     {k: v for k, v in obj.items() if k not in ("id", "prompt")}) for i, (n, obj) in enumerate(rows)]
    if path.suffix == ".json":
        return [Item(i, p, n_images, meta) for i, p, meta in _entries(path, ids_required=False)]
    lines = [line.strip() for line in _read_text(path).splitlines() if line.strip()]
    return [Item(f"{i:05d}", line, n_images, {}) for i, line in enumerate(lines)]
