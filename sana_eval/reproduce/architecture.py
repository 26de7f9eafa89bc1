"""Runners for the cells computed from configs alone: architecture fields and parameter counts (Table 6, the
"Params" columns) and multiply-accumulates of block designs (Table 8), counted on the meta device."""
from __future__ import annotations

import functools

from model.config import TransformerConfig, get_preset
from model.macs import macs_by_part
from model.transformer import count_parameters
from sana_eval.bench.peer_models import count_peer_parameters
from sana_eval.reproduce.measurement import BLOCK_DESIGN, UNIT_SCALE, Measurement
from sana_eval.tables.schema import Column, Setting


@functools.cache
def _parameter_count(preset: str) -> int:
    return count_parameters(preset)


# Paper Table 6: width, depth, Mix-FFN hidden size, linear-attention heads (hidden / 32), parameters.
def run_architecture(settings: dict[str, Setting], column: Column) -> Measurement:
    preset, quantity = str(settings["preset"]), settings["quantity"]
    if quantity == "params":
        count = _parameter_count(preset)
        return Measurement(count / UNIT_SCALE[column.unit], f"{count:,} parameters ({preset})")
    config = get_preset(preset)
    fields = {"width": config.hidden_size, "depth": config.depth, "ffn": config.ffn_hidden,
              "heads": config.self_heads}
    if quantity not in fields:
        raise ValueError(f"architecture recipe: unknown quantity {quantity!r}; known: params, {', '.join(fields)}")
    return Measurement(float(fields[quantity]), f"{preset}")


@functools.cache
def _peer_parameter_count(peer: str) -> int:
    return count_peer_parameters(peer)


# The "Params (B)" of the peer rows (Tables 7, 10, 11): the denoiser of each published config.
def run_peer_params(settings: dict[str, Setting], column: Column) -> Measurement:
    peer = str(settings["peer"])
    count = _peer_parameter_count(peer)
    return Measurement(count / UNIT_SCALE[column.unit], f"{count:,} denoiser parameters ({peer}, published config)")


@functools.cache
def _macs_by_part(config: TransformerConfig, resolution: int, text_tokens: int,
                  batch: int) -> tuple[tuple[str, int], ...]:
    return tuple(macs_by_part(config, resolution, text_tokens=text_tokens, batch=batch).items())


# Paper Table 8: multiply-accumulates of one forward pass of a block-design variant, counted on the meta device.
def run_macs(settings: dict[str, Setting], column: Column) -> Measurement:
    config = get_preset(str(settings["preset"])).replace(**{k: settings[k] for k in BLOCK_DESIGN})
    parts = dict(_macs_by_part(config, int(settings["resolution"]), int(settings["text_tokens"]),
                               int(settings["batch"])))
    total = sum(parts.values())
    tera = {k: v / 1e12 for k, v in parts.items()}
    detail = (f"{total:,} MACs: self-attention {tera['self_attention']:.3f} + core {tera['self_attention_core']:.3f}"
              f", cross-attention {tera['cross_attention']:.3f} + core {tera['cross_attention_core']:.3f}, "
              f"FFN {tera['ffn']:.3f}, rest {tera['rest']:.3f} T; "
              f"2 x (all - cross-attention core) = {2 * (total - parts['cross_attention_core']) / 1e12:.3f} T")
    return Measurement(total / UNIT_SCALE[column.unit], detail)
