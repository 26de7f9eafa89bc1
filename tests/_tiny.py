"""Tiny random components shared by the tests: a Gemma-like tokenizer trained here, diffusers peers."""
from __future__ import annotations

import torch
from diffusers import AutoencoderDC

from sana_eval.smoke.tiny import randomise, train_tokenizer  # noqa: F401  (shared with `make smoke`)


def diffusers_ae(cfg) -> AutoencoderDC:
    return AutoencoderDC(
        in_channels=cfg.in_channels, latent_channels=cfg.latent_channels, attention_head_dim=cfg.attention_head_dim,
        encoder_block_types=cfg.block_types, decoder_block_types=cfg.block_types,
        encoder_block_out_channels=cfg.widths, decoder_block_out_channels=cfg.widths,
        encoder_layers_per_block=cfg.encoder_depths, decoder_layers_per_block=cfg.decoder_depths,
        encoder_qkv_multiscales=cfg.qkv_multiscales, decoder_qkv_multiscales=cfg.qkv_multiscales,
        upsample_block_type="interpolate", downsample_block_type="conv", scaling_factor=cfg.scaling_factor)


def diffusers_kwargs(cfg) -> dict:
    return dict(in_channels=cfg.in_channels, out_channels=cfg.out_channels, num_attention_heads=cfg.self_heads,
                attention_head_dim=cfg.linear_head_dim, num_layers=cfg.depth,
                num_cross_attention_heads=cfg.cross_heads,
                cross_attention_head_dim=cfg.hidden_size // cfg.cross_heads,
                cross_attention_dim=cfg.hidden_size, caption_channels=cfg.caption_channels,
                mlp_ratio=cfg.mlp_ratio, attention_bias=False, sample_size=cfg.sample_size,
                patch_size=cfg.patch_size, norm_elementwise_affine=False, norm_eps=1e-6,
                interpolation_scale=cfg.pe_interpolation if cfg.use_pe else None,
                qk_norm="rms_norm_across_heads" if cfg.qk_norm else None)


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Every parameter random (the diffusers init zeroes some, which would hide errors), scaled by fan-in so
    activations stay finite through a full-depth model."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            scale = p.shape[1:].numel() ** -0.5 if p.ndim > 1 else 0.2
            p.copy_(torch.randn(p.shape, generator=gen, device="cpu").to(p.device) * scale)
