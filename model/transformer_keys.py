"""Key maps between the NVlabs and the diffusers layouts of the Sana transformer (docs/model.md §2.3).

Both directions are lossless: a tensor is either renamed, or split into equal row chunks (NVlabs fused
`qkv` / `kv_linear`) and concatenated back in the same order, so a round trip is bit-identical.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import torch

from model.weights_io import CheckpointError

Layout = Literal["nvlabs", "diffusers"]

# docs/model.md §2.3: single-file checkpoints may carry the ldm-style wrapper prefix.
NVLABS_PREFIX = "model.diffusion_model."
# The key whose presence marks the NVlabs layout (the rule diffusers' single-file loader uses, §2.3).
NVLABS_MARKER = "blocks.0.cross_attn.q_linear.weight"
DIFFUSERS_MARKER = "transformer_blocks.0.attn2.to_q.weight"
# NVlabs buffers that are not parameters of our module (§2.1): the learned null caption and the PE table.
Y_EMBEDDING = "y_embedder.y_embedding"
POS_EMBED = "pos_embed"
NVLABS_EXTRAS = (Y_EMBEDDING, POS_EMBED)

# (NVlabs prefix, diffusers prefix); a prefix ending in "." carries the `weight` / `bias` suffix along.
_GLOBAL_RENAMES = (
    ("x_embedder.proj.", "patch_embed.proj."),
    ("t_embedder.mlp.0.", "time_embed.emb.timestep_embedder.linear_1."),
    ("t_embedder.mlp.2.", "time_embed.emb.timestep_embedder.linear_2."),
    ("t_block.1.", "time_embed.linear."),
    ("y_embedder.y_proj.fc1.", "caption_projection.linear_1."),
    ("y_embedder.y_proj.fc2.", "caption_projection.linear_2."),
    ("attention_y_norm.", "caption_norm."),
    ("final_layer.linear.", "proj_out."),
    ("final_layer.scale_shift_table", "scale_shift_table"),
)
_BLOCK_RENAMES = (
    ("scale_shift_table", "scale_shift_table"),
    ("attn.proj.", "attn1.to_out.0."),
    ("attn.q_norm.", "attn1.norm_q."),
    ("attn.k_norm.", "attn1.norm_k."),
    ("cross_attn.q_linear.", "attn2.to_q."),
    ("cross_attn.q_norm.", "attn2.norm_q."),
    ("cross_attn.k_norm.", "attn2.norm_k."),
    ("cross_attn.proj.", "attn2.to_out.0."),
    ("mlp.inverted_conv.conv.", "ff.conv_inverted."),
    ("mlp.depth_conv.conv.", "ff.conv_depth."),
    ("mlp.point_conv.conv.", "ff.conv_point."),
)
# Fused NVlabs projections: rows are the diffusers tensors stacked in this order (Q, K, V / K, V).
_BLOCK_SPLITS = (
    ("attn.qkv.", ("attn1.to_q.", "attn1.to_k.", "attn1.to_v.")),
    ("cross_attn.kv_linear.", ("attn2.to_k.", "attn2.to_v.")),
)
_NV_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_HF_BLOCK = re.compile(r"transformer_blocks\.(\d+)\.(.+)")


def strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the optional `model.diffusion_model.` prefix (all keys carry it, or none are changed)."""
    if state_dict and all(k.startswith(NVLABS_PREFIX) for k in state_dict):
        return {k[len(NVLABS_PREFIX):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def detect_layout(keys: Mapping[str, object] | set[str], source: str) -> Layout:
    if NVLABS_MARKER in keys:
        return "nvlabs"
    if DIFFUSERS_MARKER in keys:
        return "diffusers"
    raise CheckpointError(f"{source}: not a Sana transformer checkpoint (neither {NVLABS_MARKER!r} "
                          f"nor {DIFFUSERS_MARKER!r} is present among {len(keys)} keys)")


def split_extras(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(module weights, NVlabs extra buffers) of an NVlabs-layout state dict."""
    weights = {k: v for k, v in state_dict.items() if k not in NVLABS_EXTRAS}
    extras = {k: state_dict[k] for k in NVLABS_EXTRAS if k in state_dict}
    return weights, extras


def _rename(rest: str, table: tuple[tuple[str, str], ...], reverse: bool) -> str | None:
    for nv, hf in table:
        src, dst = (hf, nv) if reverse else (nv, hf)
        if rest == src or (src.endswith(".") and rest.startswith(src)):
            return dst + rest[len(src):]
    return None


def _unmapped(keys: list[str], target: str, source: str) -> CheckpointError:
    shown = ", ".join(keys[:5]) + (", …" if len(keys) > 5 else "")
    return CheckpointError(f"{source}: {len(keys)} key(s) with no {target} equivalent ({shown})")


def nvlabs_to_diffusers(state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> dict[str, torch.Tensor]:
    """NVlabs module weights → diffusers `SanaTransformer2DModel` keys (docs/model.md §2.3).

    The extras (`y_embedding`, `pos_embed`) have no diffusers equivalent: split them off first.
    Split chunks are cloned so that no two output tensors share storage (safetensors refuses that).
    """
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, tensor in state_dict.items():
        match = _NV_BLOCK.fullmatch(key)
        if match is None:
            name = _rename(key, _GLOBAL_RENAMES, reverse=False)
            if name is None:
                unmapped.append(key)
            else:
                out[name] = tensor
            continue
        index, rest = match.groups()
        prefix = f"transformer_blocks.{index}."
        name = _rename(rest, _BLOCK_RENAMES, reverse=False)
        if name is not None:
            out[prefix + name] = tensor
            continue
        for fused, parts in _BLOCK_SPLITS:
            if rest.startswith(fused):
                if tensor.shape[0] % len(parts):
                    raise CheckpointError(f"{source}: {key} has {tensor.shape[0]} rows, not divisible into "
                                          f"{len(parts)} equal parts")
                suffix = rest[len(fused):]
                for part, chunk in zip(parts, tensor.chunk(len(parts), dim=0)):
                    out[prefix + part + suffix] = chunk.clone()
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise _unmapped(sorted(unmapped), "diffusers", source)
    return out


def diffusers_to_nvlabs(state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> dict[str, torch.Tensor]:
    """diffusers `SanaTransformer2DModel` keys → NVlabs module weights; fused tensors are concatenated back."""
    out: dict[str, torch.Tensor] = {}
    pending: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}  # (block, fused, suffix) -> parts
    unmapped = []
    for key, tensor in state_dict.items():
        match = _HF_BLOCK.fullmatch(key)
        if match is None:
            name = _rename(key, _GLOBAL_RENAMES, reverse=True)
            if name is None:
                unmapped.append(key)
            else:
                out[name] = tensor
            continue
        index, rest = match.groups()
        name = _rename(rest, _BLOCK_RENAMES, reverse=True)
        if name is not None:
            out[f"blocks.{index}.{name}"] = tensor
            continue
        for fused, parts in _BLOCK_SPLITS:
            part = next((p for p in parts if rest.startswith(p)), None)
            if part is not None:
                pending.setdefault((index, fused, rest[len(part):]), {})[part] = tensor
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise _unmapped(sorted(unmapped), "NVlabs", source)
    incomplete = []
    for (index, fused, suffix), found in pending.items():
        parts = dict(_BLOCK_SPLITS)[fused]
        absent = [f"transformer_blocks.{index}.{p}{suffix}" for p in parts if p not in found]
        if absent:
            incomplete.extend(absent)
            continue
        tensors = [found[p] for p in parts]
        if len({(t.shape[1:], t.dtype) for t in tensors}) > 1:
            shapes = ", ".join(f"{p}{suffix} {tuple(t.shape)} {t.dtype}" for p, t in zip(parts, tensors))
            raise CheckpointError(f"{source}: block {index} parts of {fused}{suffix} do not stack ({shapes})")
        out[f"blocks.{index}.{fused}{suffix}"] = torch.cat(tensors, dim=0)
    if incomplete:
        shown = ", ".join(sorted(incomplete)[:5])
        raise CheckpointError(f"{source}: missing keys {len(incomplete)} ({shown}) needed to rebuild the fused "
                              f"NVlabs projections")
    return out
