"""Finding, reading and writing the files of a Sana transformer checkpoint (docs/model.md §2.1, §2.2).

Three containers: an NVlabs torch pickle (weights under "state_dict"), a single `.safetensors` file (either
key layout), and a diffusers folder (`config.json` + one or several `diffusion_pytorch_model*.safetensors`).
Every tensor is read through `weights_io.read_tensors`, so no pickled code ever runs.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from model.transformer_keys import Layout, detect_layout, diffusers_to_nvlabs, split_extras, strip_prefix
from model.weights_io import PICKLE_SUFFIXES, SAFETENSORS_SUFFIX, CheckpointError, read_tensors, save_safetensors

SourceFormat = Literal["nvlabs-pth", "nvlabs-safetensors", "diffusers-pth", "diffusers-safetensors", "diffusers-dir"]

WEIGHTS_NAME = "diffusion_pytorch_model"
CONFIG_NAME = "config.json"
DIFFUSERS_CLASS = "SanaTransformer2DModel"
_SINGLE = re.compile(rf"{WEIGHTS_NAME}(?:\.(\w+))?\.safetensors")
# diffusers names a variant index `….safetensors.index.<variant>.json`; `…<variant>.safetensors.index.json` too.
_INDEX = re.compile(rf"{WEIGHTS_NAME}(?:\.(\w+))?\.safetensors\.index(?:\.(\w+))?\.json")
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


@dataclass
class Checkpoint:
    """The weights of one checkpoint, already in our (NVlabs) key layout."""

    path: Path                                  # the file or the transformer folder that was read
    format: SourceFormat
    layout: Layout                              # the key layout as stored
    files: tuple[Path, ...]                     # every file read (weights, config, index)
    weights: dict[str, torch.Tensor]            # exactly the keys of SanaTransformer.state_dict()
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # NVlabs y_embedding / pos_embed
    diffusers_config: dict | None = None        # config.json of a diffusers folder
    num_tensors: int = 0                        # as stored (before the fused projections are rebuilt)

    @property
    def source(self) -> str:
        return str(self.path)


# ---------------------------------------------------------------------------------------------------------
# Reading.

def read_checkpoint(path: str | os.PathLike, variant: str | None = None) -> Checkpoint:
    """Detect the format of `path` (file, diffusers transformer folder or pipeline root) and read it."""
    path = Path(path)
    if path.is_dir():
        return _read_diffusers_dir(_transformer_folder(path), variant)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.suffix == SAFETENSORS_SUFFIX:
        stored = read_tensors(path)
        container = "safetensors"
    elif path.suffix in PICKLE_SUFFIXES:
        stored = _unwrap_pickle(read_tensors(path), path)
        container = "pth"
    else:
        raise CheckpointError(f"{path}: unknown checkpoint type {path.suffix!r} (expected {SAFETENSORS_SUFFIX}, "
                              f"{', '.join(PICKLE_SUFFIXES)} or a diffusers folder)")
    stored = strip_prefix(stored)
    layout = detect_layout(stored, str(path))
    fmt: SourceFormat = f"{layout}-{container}"  # type: ignore[assignment]
    if layout == "nvlabs":
        weights, extras = split_extras(stored)
    else:
        weights, extras = diffusers_to_nvlabs(stored, str(path)), {}
    return Checkpoint(path, fmt, layout, (path,), weights, extras, None, len(stored))


def _unwrap_pickle(obj: object, path: Path) -> dict[str, torch.Tensor]:
    # docs/model.md §2.1: NVlabs keeps the weights under "state_dict"; other top-level keys are not weights.
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} entries are not tensors ({', '.join(map(str, bad[:5]))}); "
                              f"expected a state dict or a dict with a 'state_dict' entry")
    return dict(state)


def _transformer_folder(folder: Path) -> Path:
    names = {p.name for p in folder.iterdir()}
    if CONFIG_NAME not in names and (folder / "transformer").is_dir():
        return folder / "transformer"  # a pipeline root (model_index.json, transformer/, vae/, …)
    return folder


def _weight_files(folder: Path, variant: str | None) -> tuple[str | None, Path | None, Path | None]:
    """(chosen variant, single weights file, index file) of a diffusers folder."""
    singles: dict[str | None, Path] = {}
    indexes: dict[str | None, Path] = {}
    for item in sorted(folder.iterdir()):
        if match := _SINGLE.fullmatch(item.name):
            singles[match.group(1)] = item
        elif match := _INDEX.fullmatch(item.name):
            indexes[match.group(1) or match.group(2)] = item
    found = set(singles) | set(indexes)
    if not found:
        present = sorted(p.name for p in folder.iterdir())[:5]
        raise CheckpointError(f"{folder}: no Sana transformer weights (expected a .pth/.safetensors file, or a "
                              f"folder with {CONFIG_NAME} + {WEIGHTS_NAME}[.variant].safetensors[.index.json], "
                              f"or a pipeline folder with transformer/); found {present or 'nothing'}")
    names = ", ".join(sorted(v or "(plain)" for v in found))
    if variant is not None and variant not in found:
        raise CheckpointError(f"{folder}: no weights of variant {variant!r} (found {names})")
    if variant is None:
        if None in found:
            variant = None
        elif len(found) == 1:
            variant = next(iter(found))
        else:
            raise CheckpointError(f"{folder}: several weight variants ({names}); choose one with variant=")
    return variant, singles.get(variant), indexes.get(variant)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not readable JSON ({str(err).splitlines()[0][:200]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _read_diffusers_dir(folder: Path, variant: str | None) -> Checkpoint:
    variant, single, index = _weight_files(folder, variant)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise CheckpointError(f"{folder}: diffusers weights without {CONFIG_NAME}")
    config = _read_json(config_path)
    if config.get("_class_name", DIFFUSERS_CLASS) != DIFFUSERS_CLASS:
        raise CheckpointError(f"{config_path}: _class_name is {config['_class_name']!r}, not {DIFFUSERS_CLASS!r}")
    if single is not None:
        stored, files = read_tensors(single), [config_path, single]
    else:
        stored, shards = _read_shards(index)
        files = [config_path, index, *shards]
    weights = diffusers_to_nvlabs(stored, str(folder))
    return Checkpoint(folder, "diffusers-dir", "diffusers", tuple(files), weights, {}, config, len(stored))


def _read_shards(index: Path) -> tuple[dict[str, torch.Tensor], list[Path]]:
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: no 'weight_map' in the shard index")
    stored: dict[str, torch.Tensor] = {}
    shards = [index.parent / name for name in sorted(set(weight_map.values()))]
    for shard in shards:
        if not shard.is_file():
            raise CheckpointError(f"{index}: lists shard {shard.name}, which does not exist")
        tensors = read_tensors(shard)
        misplaced = sorted(k for k in tensors if weight_map.get(k) != shard.name)
        if misplaced:
            raise CheckpointError(f"{shard}: {len(misplaced)} tensor(s) not assigned to this shard by {index.name} "
                                  f"({', '.join(misplaced[:5])})")
        stored.update(tensors)
    absent = sorted(set(weight_map) - set(stored))
    if absent:
        raise CheckpointError(f"{index}: {len(absent)} indexed tensor(s) missing from the shards "
                              f"({', '.join(absent[:5])})")
    return stored, shards


# ---------------------------------------------------------------------------------------------------------
# Writing a diffusers folder.

def parse_size(size: int | str) -> int:
    """Bytes from an int or a string such as "5GB" (decimal units, as diffusers uses) or "100KiB"."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?B|B)?\s*", size.upper())
    if match is None:
        raise ValueError(f"cannot read {size!r} as a size (e.g. 5GB, 200MB, 100KiB, or a byte count)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2) or "B"])


def _shards(tensors: Mapping[str, torch.Tensor], max_bytes: int) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    used = 0
    for key in sorted(tensors):
        size = tensors[key].numel() * tensors[key].element_size()
        if groups[-1] and used + size > max_bytes:
            groups.append([])
            used = 0
        groups[-1].append(key)
        used += size
    return groups


def write_diffusers_dir(tensors: Mapping[str, torch.Tensor], config: Mapping[str, object], dst: Path,
                        max_shard_size: int | str, variant: str | None, overwrite: bool) -> None:
    """Write `config.json` + weights (sharded with an index past `max_shard_size`) into a temporary folder
    beside `dst`, then rename it into place, so a reader never sees a half-written folder."""
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst}: already exists (pass overwrite=True to replace it)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        (tmp / CONFIG_NAME).write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
        groups = _shards(tensors, parse_size(max_shard_size))
        tag = f".{variant}" if variant else ""
        if len(groups) == 1:
            save_safetensors(tensors, tmp / f"{WEIGHTS_NAME}{tag}.safetensors", {"format": "pt"})
        else:
            weight_map = {}
            for i, keys in enumerate(groups, 1):
                name = f"{WEIGHTS_NAME}{tag}-{i:05d}-of-{len(groups):05d}.safetensors"
                save_safetensors({k: tensors[k] for k in keys}, tmp / name, {"format": "pt"})
                weight_map.update(dict.fromkeys(keys, name))
            total = sum(t.numel() * t.element_size() for t in tensors.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / f"{WEIGHTS_NAME}.safetensors.index{tag}.json").write_text(json.dumps(index, indent=2) + "\n")
        _replace_dir(tmp, dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _replace_dir(new: Path, dst: Path) -> None:
    if not dst.exists():
        os.replace(new, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
    os.replace(dst, old / dst.name)
    os.replace(new, dst)
    shutil.rmtree(old)
