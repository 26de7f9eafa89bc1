"""Multiply-accumulates of one transformer forward (paper Table 8 "MACs"), counted on the meta device.

torch's FlopCounterMode counts 2 FLOPs per MAC of every matmul (mm/addmm/bmm: the linear layers, both
products of the linear attention, and SDPA, which the meta device decomposes into two bmm) and of every
convolution (the patch embedding and Mix-FFN's 1×1 and 3×3 depth-wise convs, per group). Element-wise work
(norms, activations, softmax, modulation, bias adds) is not counted, the usual MAC convention.
"""
from __future__ import annotations

import re

import torch
from torch.utils.flop_counter import FlopCounterMode

from model.config import TransformerConfig, get_preset
from model.transformer import build_transformer

TEXT_TOKENS = 300                          # Gemma-2 caption length (model_max_length)
AE_DOWNSAMPLE = {32: 32, 4: 8}             # latent channels -> pixels per latent side: DC-AE F32C32, SD/SDXL VAE F8C4
# "*_core": the products between activations (q·k, attention·v, or the linear attention's two products);
# the attention modules' other MACs are their q/k/v/output projections.
PARTS = ("self_attention", "self_attention_core", "cross_attention", "cross_attention_core", "ffn", "rest")
_BLOCK_PART = re.compile(r"\.blocks\.\d+\.(attn|cross_attn|mlp)$")
_PART_OF = {"attn": "self_attention", "cross_attn": "cross_attention", "mlp": "ffn"}
_PROJECTION_OPS = (torch.ops.aten.mm, torch.ops.aten.addmm)   # nn.Linear; any other product is a core


def latent_side(config: TransformerConfig, resolution: int) -> int:
    """Latent height/width of a square image of `resolution` pixels under the config's autoencoder."""
    if config.in_channels not in AE_DOWNSAMPLE:
        raise ValueError(f"no autoencoder known for in_channels={config.in_channels}; known: "
                         f"{', '.join(map(str, AE_DOWNSAMPLE))}")
    down = AE_DOWNSAMPLE[config.in_channels]
    if resolution % (down * config.patch_size):
        raise ValueError(f"resolution {resolution} is not a multiple of {down * config.patch_size} "
                         f"(autoencoder F{down}, patch size {config.patch_size})")
    return resolution // down


def macs_by_part(config: TransformerConfig | str, resolution: int, *, text_tokens: int = TEXT_TOKENS,
                 batch: int = 1) -> dict[str, int]:
    """MACs of one forward at `resolution` px, split into the blocks' self-attention, cross-attention (each as
    projections and core) and FFN, summed over depth, and the rest (patch embedding, timestep and caption
    embedders, final layer)."""
    config = get_preset(config) if isinstance(config, str) else config
    side = latent_side(config, resolution)
    model = build_transformer(config, device="meta")
    with torch.device("meta"):
        latent = torch.empty(batch, config.in_channels, side, side)
        caption = torch.empty(batch, text_tokens, config.caption_channels)
        mask = torch.ones(batch, text_tokens, dtype=torch.bool)
        timestep = torch.full((batch,), 500.0)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(latent, timestep, caption, mask)
    per_module = counter.get_flop_counts()
    parts = dict.fromkeys(PARTS, 0)
    for name, ops in per_module.items():
        found = _BLOCK_PART.search(name)
        if found:
            part = _PART_OF[found.group(1)]
            for op, flops in ops.items():
                parts[part if part == "ffn" or op in _PROJECTION_OPS else f"{part}_core"] += flops
    if config.depth and not parts["cross_attention_core"]:  # SDPA outside the counter's formulas would vanish silently
        raise RuntimeError(f"FlopCounterMode counted no cross-attention product on torch {torch.__version__}")
    parts["rest"] = counter.get_total_flops() - sum(parts.values())
    return {part: flops // 2 for part, flops in parts.items()}


def count_macs(config: TransformerConfig | str, resolution: int, *, text_tokens: int = TEXT_TOKENS,
               batch: int = 1) -> int:
    """MACs of one forward (batch 1, no CFG pair) at `resolution` px with a `text_tokens`-token caption."""
    return sum(macs_by_part(config, resolution, text_tokens=text_tokens, batch=batch).values())
