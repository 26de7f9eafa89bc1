"""Loading DC-AE weights: diffusers `vae/` folders and original efficientvit `model.safetensors`
(docs/model.md §3.4-3.5).

Format is detected from the files and keys; loading is strict (every bad key listed, nothing partially loaded) and
never unpickles code.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from huggingface_hub import snapshot_download

from model.dc_ae import DCAE, DCAE_PRESETS, DCAEConfig
from model.weights_io import CheckpointError, load_strict, read_tensors

# The diffusers conversions of the efficientvit releases, fetched when `load_dc_ae` gets a preset name.
DCAE_HUB_REPOS = {
    "dc-ae-f32c32-sana-1.0": "mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers",
    "dc-ae-f32c32-sana-1.1": "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers",
}
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
EFFICIENTVIT_WEIGHTS = "model.safetensors"

# ----------------------------------------------------------------------------------------------------------
# efficientvit -> diffusers key renames (§3.5), substring rules applied in this order. The two `aggreg` rules
# are written for any branch index where §3.5 spells out branch 0 (the only one in the released models).
EFFICIENTVIT_RENAMES: tuple[tuple[str, str], ...] = (
    (r"main\.", ""),
    (r"op_list\.", ""),
    (r"context_module", "attn"),
    (r"local_module", "conv_out"),
    (r"aggreg\.(\d+)\.0", r"to_qkv_multiscale.\1.proj_in"),
    (r"aggreg\.(\d+)\.1", r"to_qkv_multiscale.\1.proj_out"),
    (r"depth_conv\.conv", "conv_depth"),
    (r"inverted_conv\.conv", "conv_inverted"),
    (r"point_conv\.conv", "conv_point"),
    (r"point_conv\.norm", "norm"),
    (r"conv\.conv\.", "conv."),
    (r"conv1\.conv", "conv1"),
    (r"conv2\.conv", "conv2"),
    (r"conv2\.norm", "norm"),
    (r"proj\.norm", "norm_out"),
    (r"encoder\.project_in\.conv", "encoder.conv_in"),
    (r"encoder\.project_out\.0\.conv", "encoder.conv_out"),
    (r"encoder\.stages", "encoder.down_blocks"),
    (r"decoder\.project_in\.conv", "decoder.conv_in"),
    (r"decoder\.project_out\.0", "decoder.norm_out"),
    (r"decoder\.project_out\.2\.conv", "decoder.conv_out"),
    (r"decoder\.stages", "decoder.up_blocks"),
)
_QKV, _PROJ = ".qkv.conv.weight", ".proj.conv.weight"


def is_efficientvit_layout(keys: Mapping[str, object]) -> bool:
    return "encoder.project_in.conv.weight" in keys or any(".op_list." in k for k in keys)


def efficientvit_to_diffusers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename by §3.5; then split each fused qkv 1×1 conv (3C, C, 1, 1) into to_q/to_k/to_v (C, C) and flatten
    each proj 1×1 conv (C, 2C, 1, 1) to to_out (C, 2C)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in sd.items():
        new = key
        for pattern, replacement in EFFICIENTVIT_RENAMES:
            new = re.sub(pattern, replacement, new)
        if new.endswith(_QKV) and tensor.ndim == 4 and tensor.shape[0] % 3 == 0:
            parent = new[: -len(_QKV)]
            for name, part in zip(("to_q", "to_k", "to_v"), tensor.chunk(3, dim=0)):
                out[f"{parent}.{name}.weight"] = part.flatten(1)
        elif new.endswith(_PROJ) and tensor.ndim == 4:
            out[new[: -len(_PROJ)] + ".to_out.weight"] = tensor.flatten(1)
        else:
            out[new] = tensor
    return out


# ----------------------------------------------------------------------------------------------------------
# diffusers `config.json` -> DCAEConfig. Missing keys mean diffusers' own defaults; a known option set to
# something our network does not implement is refused rather than approximated.
_DIFFUSERS_DEFAULTS: dict[str, object] = dict(
    in_channels=3, latent_channels=32, attention_head_dim=32,
    encoder_block_types="ResBlock", decoder_block_types="ResBlock",
    encoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
    decoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
    encoder_layers_per_block=[2, 2, 2, 3, 3, 3], decoder_layers_per_block=[3, 3, 3, 3, 3, 3],
    encoder_qkv_multiscales=[[], [], [], [5], [5], [5]], decoder_qkv_multiscales=[[], [], [], [5], [5], [5]],
    upsample_block_type="pixel_shuffle", downsample_block_type="pixel_unshuffle",
    decoder_norm_types="rms_norm", decoder_act_fns="silu", encoder_out_shortcut=True, decoder_in_shortcut=True,
    decoder_conv_act_fn="relu", scaling_factor=1.0,
)
_REQUIRED = dict(upsample_block_type="interpolate", downsample_block_type="conv", decoder_norm_types="rms_norm",
                 decoder_act_fns="silu", encoder_out_shortcut=True, decoder_in_shortcut=True,
                 decoder_conv_act_fn="relu")


def config_from_diffusers(raw: Mapping[str, object], source: str) -> DCAEConfig:
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in _DIFFUSERS_DEFAULTS)
    if unknown:  # diffusers ignores these too; any that changed the architecture would fail the strict key check
        warnings.warn(f"{source}: ignoring unknown AutoencoderDC option(s) {', '.join(unknown)}", stacklevel=3)
    cfg = {**_DIFFUSERS_DEFAULTS, **{k: v for k, v in raw.items() if not k.startswith("_")}}
    n = len(cfg["encoder_block_out_channels"])
    for key, want in _REQUIRED.items():
        values = cfg[key] if isinstance(cfg[key], list) else [cfg[key]]
        if any(v != want for v in values):
            raise CheckpointError(f"{source}: {key}={cfg[key]!r} is not implemented (only {want!r})")

    def per_stage(key: str) -> tuple:
        value = cfg[key]
        return (value,) * n if isinstance(value, str) else tuple(tuple(v) if isinstance(v, list) else v
                                                                   for v in value)

    for part in ("block_types", "block_out_channels", "qkv_multiscales"):
        if per_stage(f"encoder_{part}") != per_stage(f"decoder_{part}"):
            raise CheckpointError(f"{source}: encoder_{part} differs from decoder_{part}; only mirrored "
                                  f"encoder/decoder stages are implemented")
    try:
        return DCAEConfig(widths=per_stage("encoder_block_out_channels"),
                          encoder_depths=per_stage("encoder_layers_per_block"),
                          decoder_depths=per_stage("decoder_layers_per_block"),
                          block_types=per_stage("encoder_block_types"),
                          qkv_multiscales=per_stage("encoder_qkv_multiscales"),
                          in_channels=cfg["in_channels"], latent_channels=cfg["latent_channels"],
                          attention_head_dim=cfg["attention_head_dim"], scaling_factor=cfg["scaling_factor"])
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from None


# ----------------------------------------------------------------------------------------------------------
# Finding the files.

def _diffusers_weight_files(folder: Path, variant: str | None) -> list[Path] | None:
    stem = DIFFUSERS_WEIGHTS + (f".{variant}" if variant else "")
    single, index, pickle = (folder / f"{stem}.safetensors", folder / f"{stem}.safetensors.index.json",
                             folder / f"{stem}.bin")
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, AttributeError, TypeError) as err:
            raise CheckpointError(f"{index}: not a safetensors index ({err})") from None
        return [folder / shard for shard in shards]
    if pickle.is_file():
        return [pickle]
    return None


def _read_json(path: Path) -> dict:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return raw


def _locate(path: Path, variant: str | None) -> tuple[list[Path], Path | None]:
    """Weight files and the diffusers config.json (None for a bare efficientvit file)."""
    if path.is_file():
        config = path.parent / "config.json"
        return [path], config if config.is_file() and path.name.startswith(DIFFUSERS_WEIGHTS) else None
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such file or folder, and not a DC-AE preset "
                              f"({', '.join(DCAE_HUB_REPOS)})")
    if (path / "vae").is_dir():
        path = path / "vae"
    files = _diffusers_weight_files(path, variant)
    if files is not None:
        config = path / "config.json"
        if not config.is_file():
            raise CheckpointError(f"{path}: diffusers weights without config.json")
        return files, config
    if variant is None and (path / EFFICIENTVIT_WEIGHTS).is_file():
        return [path / EFFICIENTVIT_WEIGHTS], None
    others = sorted(p.name for p in path.glob(f"{DIFFUSERS_WEIGHTS}.*"))
    wanted = f"{DIFFUSERS_WEIGHTS}{'.' + variant if variant else ''}.safetensors"
    hint = f" (found {', '.join(others)}; pass variant=...)" if others else ""
    raise CheckpointError(f"{path}: no DC-AE weights: looked for {wanted} with config.json, and "
                          f"{EFFICIENTVIT_WEIGHTS}{hint}")


def _from_hub(preset: str) -> Path:
    repo = DCAE_HUB_REPOS[preset]
    try:
        return Path(snapshot_download(repo, allow_patterns=["config.json", f"{DIFFUSERS_WEIGHTS}*"]))
    except Exception as err:  # the hub client raises many types (offline, 404, network, cache)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(f"{preset}: could not fetch {repo} from the Hugging Face hub ({first})") from None


# ----------------------------------------------------------------------------------------------------------

def load_dc_ae(path_or_preset: str | os.PathLike, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None, *, variant: str | None = None,
               config: DCAEConfig | None = None, kernels: str = "auto") -> DCAE:
    """A DC-AE in eval mode from a diffusers `vae/` folder (or a pipeline root holding one), a diffusers weight
    file, an efficientvit `model.safetensors` (or its folder), or a preset name (downloaded from the hub).

    `dtype` defaults to float32 (the NVlabs metric scripts decode in fp32, §3.1). `config` is the architecture
    for files that carry none (efficientvit files default to the SANA f32c32 preset) and overrides config.json.
    `kernels`: DCAEConfig.kernels, the eager or fused RMSNorm2d ("auto": fused on CUDA).
    """
    path = Path(path_or_preset)
    if not path.exists() and str(path_or_preset) in DCAE_HUB_REPOS:
        path = _from_hub(str(path_or_preset))
    files, config_file = _locate(path, variant)
    state: dict[str, torch.Tensor] = {}
    for file in files:
        tensors = read_tensors(file)
        bad = sorted(k for k, v in tensors.items() if not isinstance(v, torch.Tensor))
        if bad:
            raise CheckpointError(f"{file}: not a flat tensor dict (non-tensor entries {', '.join(bad[:5])})")
        state.update(tensors)
    source = ", ".join(str(f) for f in files)
    if is_efficientvit_layout(state):
        state = efficientvit_to_diffusers(state)
        source += " (efficientvit layout; keys named after the §3.5 renames)"
    if config is None:
        config = (config_from_diffusers(_read_json(config_file), str(config_file)) if config_file is not None
                  else DCAE_PRESETS["dc-ae-f32c32-sana-1.0"])
    config = dataclasses.replace(config, kernels=kernels)
    dtype = dtype or torch.float32
    nonfloat = sorted(k for k, v in state.items() if not v.is_floating_point())
    if nonfloat:
        raise CheckpointError(f"{source}: non-floating-point tensors {', '.join(nonfloat[:5])}")
    with torch.device("meta"):
        model = DCAE(config)
    load_strict(model, {k: v.to(dtype) for k, v in state.items()}, source)
    return model.to(device).eval()
