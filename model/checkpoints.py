"""Sana transformer checkpoints (docs/model.md §2): architecture inference, strict loading, lossless conversion.

Accepted sources: an NVlabs `.pth`, a single `.safetensors` in either key layout, a diffusers transformer
folder or a pipeline root holding `transformer/` (see `checkpoint_files`). Every source is first brought to
our module's (NVlabs) key names, so there is one inference path and one strict check.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch

from model.checkpoint_files import DIFFUSERS_CLASS, Checkpoint, read_checkpoint, write_diffusers_dir
from model.config import ALIASES, PRESETS, TransformerConfig, get_preset
from model.transformer import SanaTransformer, build_transformer, sincos_pos_embed
from model.transformer_keys import POS_EMBED, Y_EMBEDDING, nvlabs_to_diffusers
from model.weights_io import (
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIX,
    CheckpointError,
    check_state_dict,
    load_strict,
    save_safetensors,
    save_torch,
    sha256_file,
)

logger = logging.getLogger(__name__)

TargetFormat = Literal["nvlabs", "diffusers", "safetensors"]
_FIELDS = {f.name for f in dataclasses.fields(TransformerConfig)}
# NVlabs stores no cross-attention head count; these four fields pick the presets it may be taken from.
_MATCH_KEYS = ("depth", "hidden_size", "qk_norm", "cross_norm")
# Fields the weights (or config.json) fix; a preset named by the caller must agree with them.
_ARCH_FIELDS = ("depth", "hidden_size", "cross_heads", "linear_head_dim", "mlp_ratio", "in_channels",
                "patch_size", "caption_channels", "qk_norm", "cross_norm")
_BLOCK_INDEX = re.compile(r"blocks\.(\d+)\.")

# `SanaTransformer2DModel.__init__` defaults (diffusers 0.42.1), used for keys a config.json leaves out.
_DIFFUSERS_DEFAULTS = dict(
    in_channels=32, out_channels=32, num_attention_heads=70, attention_head_dim=32, num_layers=20,
    num_cross_attention_heads=20, cross_attention_head_dim=112, cross_attention_dim=2240, caption_channels=2304,
    mlp_ratio=2.5, dropout=0.0, attention_bias=False, sample_size=32, patch_size=1, norm_elementwise_affine=False,
    norm_eps=1e-6, interpolation_scale=None, guidance_embeds=False, guidance_embeds_scale=0.1, qk_norm=None,
    timestep_scale=1.0)
# Options our model does not implement; every released Sana checkpoint uses these values (docs/model.md §2.2).
_DIFFUSERS_FIXED = dict(attention_bias=False, norm_elementwise_affine=False, norm_eps=1e-6, guidance_embeds=False,
                        timestep_scale=1.0)
_DIFFUSERS_QK_NORM = "rms_norm_across_heads"
_DIFFUSERS_VERSION = "0.32.0"  # the first release with SanaTransformer2DModel


# ---------------------------------------------------------------------------------------------------------
# Architecture inference (docs/model.md §1.1, §1.2, §2.1, §2.2).

def architecture_from_weights(weights: Mapping[str, torch.Tensor], source: str = "state dict") -> dict:
    """The config fields that the shapes and key names of NVlabs-layout weights determine."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in weights:
            raise CheckpointError(f"{source}: missing {key}; cannot infer the architecture")
        return tuple(weights[key].shape)

    embed = shape("x_embedder.proj.weight")
    if len(embed) != 4:
        raise CheckpointError(f"{source}: x_embedder.proj.weight has shape {embed}, expected a 4-D conv kernel")
    hidden, in_channels, patch, _ = embed
    ffn = shape("blocks.0.mlp.point_conv.conv.weight")[1]
    mlp_ratio = ffn / hidden
    if int(mlp_ratio * hidden) != ffn:
        raise CheckpointError(f"{source}: Mix-FFN width {ffn} is not int(ratio * {hidden}) for any float ratio")
    return dict(
        depth=1 + max(int(m.group(1)) for k in weights if (m := _BLOCK_INDEX.match(k))),
        hidden_size=hidden, in_channels=in_channels, patch_size=patch, mlp_ratio=mlp_ratio,
        caption_channels=shape("y_embedder.y_proj.fc1.weight")[1],
        qk_norm="blocks.0.attn.q_norm.weight" in weights,
        cross_norm="blocks.0.cross_attn.q_norm.weight" in weights,
    )


def carried_by_extras(extras: Mapping[str, torch.Tensor], arch: Mapping[str, object], source: str) -> dict:
    """Config fields that the NVlabs buffers reveal; both are shape-checked, then set aside (§2.1)."""
    out: dict[str, object] = {}
    if (y := extras.get(Y_EMBEDDING)) is not None:
        if y.ndim != 2 or y.shape[1] != arch["caption_channels"]:
            raise CheckpointError(f"{source}: {Y_EMBEDDING} has shape {tuple(y.shape)}, expected "
                                  f"(model_max_length, {arch['caption_channels']})")
        out["model_max_length"] = y.shape[0]
    if (pe := extras.get(POS_EMBED)) is not None:
        tokens = pe.shape[1] if pe.ndim == 3 else 0
        side = math.isqrt(tokens)
        if pe.ndim != 3 or pe.shape[0] != 1 or pe.shape[2] != arch["hidden_size"] or side < 2 or side**2 != tokens:
            raise CheckpointError(f"{source}: {POS_EMBED} has shape {tuple(pe.shape)}, expected "
                                  f"(1, S², {arch['hidden_size']}) for a training latent grid of S×S tokens")
        out["sample_size"] = side * arch["patch_size"]
        if not pe.is_meta:  # NVlabs stores zeros when use_pe is false
            out["use_pe"] = bool(pe.any())
            if out["use_pe"]:
                out["pe_interpolation"] = _pe_interpolation(pe, source)
    return out


def _pe_interpolation(pos_embed: torch.Tensor, source: str) -> float:
    # §1.9: on the S×S training grid, channel 0 of token (row 0, col 1) is sin(1 / pe_interpolation); with
    # the halves in the other order it is channel 0 of token (row 1, col 0). Taking the larger accepts both.
    side = math.isqrt(pos_embed.shape[1])
    value = max(float(pos_embed[0, 1, 0]), float(pos_embed[0, side, 0]))
    if not 0.0 < value <= 1.0:
        raise CheckpointError(f"{source}: {POS_EMBED} is neither zeros nor a 2-D sin-cos table "
                              f"(entries [0, 1, 0] and [0, {side}, 0] are not in (0, 1])")
    return round(1.0 / math.asin(value), 1)  # one decimal absorbs bf16 storage error; released: 1.0, 2.0


def config_from_diffusers(raw: Mapping[str, object], source: str = "config.json") -> dict:
    """Our config fields from a `SanaTransformer2DModel` config.json (docs/model.md §2.2)."""
    cfg = {**_DIFFUSERS_DEFAULTS, **{k: v for k, v in raw.items() if not k.startswith("_")}}
    for key, value in _DIFFUSERS_FIXED.items():
        if cfg[key] != value:
            raise CheckpointError(f"{source}: {key}={cfg[key]!r} is not supported (Sana uses {value!r})")
    hidden = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    heads = cfg["num_cross_attention_heads"]
    if cfg["cross_attention_head_dim"] * heads != hidden or cfg["cross_attention_dim"] != hidden:
        raise CheckpointError(f"{source}: cross-attention {heads}×{cfg['cross_attention_head_dim']} "
                              f"(cross_attention_dim {cfg['cross_attention_dim']}) does not match hidden size {hidden}")
    if cfg["out_channels"] not in (None, cfg["in_channels"]):
        raise CheckpointError(f"{source}: out_channels {cfg['out_channels']} ≠ in_channels {cfg['in_channels']}")
    if cfg["qk_norm"] not in (None, _DIFFUSERS_QK_NORM):
        raise CheckpointError(f"{source}: qk_norm={cfg['qk_norm']!r} is not supported "
                              f"(None or {_DIFFUSERS_QK_NORM!r})")
    scale = cfg["interpolation_scale"]
    fields = dict(depth=cfg["num_layers"], hidden_size=hidden, cross_heads=heads,
                  linear_head_dim=cfg["attention_head_dim"], mlp_ratio=float(cfg["mlp_ratio"]),
                  in_channels=cfg["in_channels"], patch_size=cfg["patch_size"],
                  caption_channels=cfg["caption_channels"], sample_size=cfg["sample_size"], use_pe=scale is not None,
                  qk_norm=cfg["qk_norm"] is not None, cross_norm=cfg["qk_norm"] is not None)
    if scale is not None:
        fields["pe_interpolation"] = float(scale)
    return fields


def diffusers_config(config: TransformerConfig) -> dict:
    """A config.json that `SanaTransformer2DModel.from_pretrained` builds this architecture from."""
    if config.qk_norm != config.cross_norm:
        raise ValueError(f"diffusers has one qk_norm switch for both attentions; this model has "
                         f"qk_norm={config.qk_norm}, cross_norm={config.cross_norm}")
    return {
        "_class_name": DIFFUSERS_CLASS, "_diffusers_version": _DIFFUSERS_VERSION, **_DIFFUSERS_DEFAULTS,
        "in_channels": config.in_channels, "out_channels": config.out_channels,
        "num_attention_heads": config.self_heads, "attention_head_dim": config.linear_head_dim,
        "num_layers": config.depth, "num_cross_attention_heads": config.cross_heads,
        "cross_attention_head_dim": config.hidden_size // config.cross_heads,
        "cross_attention_dim": config.hidden_size, "caption_channels": config.caption_channels,
        "mlp_ratio": config.mlp_ratio, "sample_size": config.sample_size, "patch_size": config.patch_size,
        "interpolation_scale": config.pe_interpolation if config.use_pe else None,
        "qk_norm": _DIFFUSERS_QK_NORM if config.qk_norm else None,
    }


def dominant_dtype(tensors: Mapping[str, torch.Tensor]) -> torch.dtype:
    """The dtype holding most elements (a checkpoint's storage precision)."""
    counts: Counter[torch.dtype] = Counter()
    for tensor in tensors.values():
        counts[tensor.dtype] += tensor.numel()
    return counts.most_common(1)[0][0] if counts else torch.float32


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def match_preset(known: Mapping[str, object], dtype: torch.dtype | None = None) -> str | None:
    """The preset with the same (depth, hidden, qk_norm, cross_norm) that agrees on most other known fields;
    ties go to the earlier preset in PRESETS."""
    candidates = [name for name, p in PRESETS.items() if all(getattr(p, k) == known[k] for k in _MATCH_KEYS)]
    hints = {**known, **({"dtype": _dtype_name(dtype)} if dtype is not None else {})}

    def agreement(name: str) -> int:
        return sum(getattr(PRESETS[name], k) == v for k, v in hints.items() if k in _FIELDS)

    return max(candidates, key=agreement, default=None)


def infer_config(weights: Mapping[str, torch.Tensor], *, extras: Mapping[str, torch.Tensor] | None = None,
                 diffusers_config: Mapping[str, object] | None = None, preset: str | None = None,
                 source: str = "state dict", **overrides: object) -> tuple[TransformerConfig, str | None]:
    """(config, preset name) for NVlabs-layout weights.

    Precedence, lowest first: the preset (`preset=`, else the best match), then what the checkpoint states
    (config.json, or the weights plus the NVlabs buffers) unless `preset=` was given, then `overrides`.
    A preset named by the caller must agree with the architecture the checkpoint states.
    """
    unknown = sorted(set(overrides) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown transformer option(s): {', '.join(unknown)}")
    if diffusers_config is not None:
        known = config_from_diffusers(diffusers_config, source)
    else:
        known = architecture_from_weights(weights, source)
        known.update(carried_by_extras(extras or {}, known, source))
    if preset is not None:
        try:
            base = get_preset(preset)
        except KeyError as err:
            raise ValueError(err.args[0]) from None
        clash = [f"{k}: checkpoint {v!r}, preset {getattr(base, k)!r}" for k, v in known.items()
                 if k in _ARCH_FIELDS and getattr(base, k) != v]
        if clash:
            raise CheckpointError(f"{source}: preset {preset} does not fit ({'; '.join(clash)})")
        name, fields = ALIASES.get(preset, preset), dataclasses.asdict(base)
    else:
        storage = dominant_dtype(weights) if weights else None
        name = match_preset(known, storage)
        fields = {**(dataclasses.asdict(PRESETS[name]) if name else {}), **known}
        if name is None and storage in (torch.float16, torch.bfloat16, torch.float32):
            fields["dtype"] = _dtype_name(storage)  # no preset states the inference precision
    fields.update(overrides)
    if "cross_heads" not in fields:
        raise CheckpointError(f"{source}: no preset has depth {known['depth']}, hidden {known['hidden_size']}, "
                              f"qk_norm {known['qk_norm']}, cross_norm {known['cross_norm']}, and NVlabs weights do "
                              f"not store the cross-attention head count; pass cross_heads= or preset= (sana-eval "
                              f"convert: --cross-heads)")
    try:
        return TransformerConfig(**fields), name
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from None


def _infer(ckpt: Checkpoint, preset: str | None, overrides: dict) -> tuple[TransformerConfig, str | None]:
    return infer_config(ckpt.weights, extras=ckpt.extras, diffusers_config=ckpt.diffusers_config, preset=preset,
                        source=ckpt.source, **overrides)


def _expected_shapes(config: TransformerConfig) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in build_transformer(config, device="meta").state_dict().items()}


# ---------------------------------------------------------------------------------------------------------
# Loading.

def load_transformer(path_or_preset: str | os.PathLike, dtype: torch.dtype | None = None,
                     device: torch.device | str | None = None, *, preset: str | None = None,
                     variant: str | None = None, **overrides: object) -> SanaTransformer:
    """A SanaTransformer from a checkpoint (strict: every key, every shape) or, for a bare preset name, with
    random weights.

    dtype: default the checkpoint's storage dtype (float32 for a preset); when given, it also becomes
    `config.dtype`. preset / overrides: see `infer_config`. variant: which diffusers weight variant to read.
    """
    if dtype is not None and _dtype_name(dtype) in ("float16", "bfloat16", "float32"):
        overrides["dtype"] = _dtype_name(dtype)
    path = Path(path_or_preset)
    if not path.exists():
        name = str(path_or_preset)
        if name in PRESETS or name in ALIASES:
            if preset is not None or variant is not None:
                raise ValueError(f"{name} is a preset name; preset= and variant= apply to checkpoint files only")
            return build_transformer(get_preset(name).replace(**overrides), device=device, dtype=dtype).eval()
        raise CheckpointError(f"{path}: no such file or directory, and not a preset (known: {', '.join(PRESETS)})")
    ckpt = read_checkpoint(path, variant)
    config, name = _infer(ckpt, preset, overrides)
    model = build_transformer(config, device="meta")
    load_strict(model, ckpt.weights, ckpt.source)  # assigns the file's tensors: no second copy
    dtype = dtype or dominant_dtype(ckpt.weights)
    logger.info("loaded %s (%s, preset %s, %s)", ckpt.source, ckpt.format, name, _dtype_name(dtype))
    del ckpt
    return model.to(device=device, dtype=dtype).eval()


# ---------------------------------------------------------------------------------------------------------
# Conversion and description.

def _nvlabs_extras(ckpt: Checkpoint, config: TransformerConfig) -> dict[str, torch.Tensor]:
    """The two buffers of an NVlabs file (§2.1): kept as read; for a diffusers source, where they do not
    exist, `pos_embed` is rebuilt from the config (zeros without PE, as NVlabs stores it) so the file states
    sample_size and use_pe, and `y_embedding` is a zero placeholder (unused at inference) because diffusers'
    `from_single_file` requires both keys."""
    extras = dict(ckpt.extras)
    dtype = dominant_dtype(ckpt.weights)
    if Y_EMBEDDING not in extras:
        extras[Y_EMBEDDING] = torch.zeros(config.model_max_length, config.caption_channels, dtype=dtype)
    if POS_EMBED not in extras:
        side, hidden = config.sample_size // config.patch_size, config.hidden_size
        if config.use_pe:
            extras[POS_EMBED] = sincos_pos_embed(hidden, side, side, side, config.pe_interpolation).to(dtype)
        else:
            extras[POS_EMBED] = torch.zeros(1, side * side, hidden, dtype=dtype)
    return extras


def convert(src: str | os.PathLike, dst: str | os.PathLike, fmt: TargetFormat, *,
            layout: Literal["nvlabs", "diffusers"] = "nvlabs", max_shard_size: int | str = "5GB",
            variant: str | None = None, save_variant: str | None = None, preset: str | None = None,
            overwrite: bool = False, **overrides: object) -> Path:
    """Rewrite a checkpoint in another format with bit-identical tensors.

    fmt: "nvlabs" → `{"state_dict": …}` torch file (dst ends in .pth/.pt); "diffusers" → a transformer folder
    (config.json + safetensors, sharded with an index past `max_shard_size`; `save_variant` names the files
    e.g. `.fp16`); "safetensors" → one file in the `layout` key layout. NVlabs targets keep `y_embedding` and
    `pos_embed`; diffusers targets cannot hold them. `variant` picks the source variant; `preset` / overrides
    supply what an NVlabs source does not state (see `infer_config`). Returns dst.
    """
    if fmt not in ("nvlabs", "diffusers", "safetensors") or layout not in ("nvlabs", "diffusers"):
        raise ValueError(f"fmt must be nvlabs|diffusers|safetensors and layout nvlabs|diffusers, got {fmt!r}, "
                         f"{layout!r}")
    dst = Path(dst)
    wanted = {"nvlabs": PICKLE_SUFFIXES, "safetensors": (SAFETENSORS_SUFFIX,)}.get(fmt)
    if wanted and dst.suffix not in wanted:
        raise ValueError(f"{dst}: a {fmt} file must end in {' or '.join(wanted)}")
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst}: already exists (pass overwrite=True to replace it)")
    ckpt = read_checkpoint(src, variant)
    config, _ = _infer(ckpt, preset, overrides)
    check_state_dict(_expected_shapes(config), ckpt.weights, ckpt.source)
    to_diffusers = fmt == "diffusers" or (fmt == "safetensors" and layout == "diffusers")
    if to_diffusers and ckpt.extras:
        logger.info("%s: %s not written (no diffusers equivalent)", ckpt.source, ", ".join(ckpt.extras))
    if fmt == "diffusers":
        write_diffusers_dir(nvlabs_to_diffusers(ckpt.weights, ckpt.source), diffusers_config(config), dst,
                            max_shard_size, save_variant, overwrite)
    elif to_diffusers:
        save_safetensors(nvlabs_to_diffusers(ckpt.weights, ckpt.source), dst, {"format": "pt"})
    elif fmt == "safetensors":
        save_safetensors({**ckpt.weights, **_nvlabs_extras(ckpt, config)}, dst, {"format": "pt"})
    else:
        save_torch({"state_dict": {**ckpt.weights, **_nvlabs_extras(ckpt, config)}}, dst)
    return dst


def describe(path: str | os.PathLike, *, variant: str | None = None, preset: str | None = None,
             **overrides: object) -> dict:
    """JSON-ready facts about a checkpoint: format, files with sha256, inferred preset and config, dtypes,
    parameter and tensor counts, and the strict-check verdict ("ok" or the error text)."""
    ckpt = read_checkpoint(path, variant)
    dtypes = Counter(_dtype_name(t.dtype) for t in [*ckpt.weights.values(), *ckpt.extras.values()])
    info: dict[str, object] = {
        "path": str(ckpt.path), "format": ckpt.format, "layout": ckpt.layout,
        "files": [{"name": f.name, "bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in ckpt.files],
        "num_tensors": ckpt.num_tensors, "parameters": sum(t.numel() for t in ckpt.weights.values()),
        "dtypes": dict(sorted(dtypes.items())), "storage_dtype": _dtype_name(dominant_dtype(ckpt.weights)),
        "extras": {k: list(v.shape) for k, v in ckpt.extras.items()},
        "preset": None, "config": None, "check": "ok",
    }
    try:
        config, name = _infer(ckpt, preset, overrides)
        info.update(preset=name, config=dataclasses.asdict(config))
        check_state_dict(_expected_shapes(config), ckpt.weights, ckpt.source)
    except CheckpointError as err:
        info["check"] = str(err)
    return info
