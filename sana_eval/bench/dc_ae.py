"""Speed of DC-AE decoding, ours against the peer (diffusers' AutoencoderDC), on one GPU: the baseline's
`dcae_decode` case (../shared/bench/diffusers_baseline.py), random weights and latents."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import torch

from model.dc_ae import DCAE, DCAEConfig, get_dc_ae_preset
from model.kernel_choice import resolve
from sana_eval.bench.clock import (
    device_name,
    median_seconds,
    peak_memory_gib,
    reset_peak_memory,
    timing_device,
    torch_dtype,
)


@dataclass(frozen=True)
class DecodeTiming:
    impl: str
    kernels: str                # ours: "eager" or "triton" (channels-last, docs/model.md §3.6); the peer: "diffusers"
    resolution: int
    batch: int
    dtype: str
    tile: int | None
    decode_s: float
    img_per_s: float
    peak_mem_gib: float
    gpu: str

    def to_dict(self) -> dict:
        return asdict(self)


def peer_dc_ae(config: DCAEConfig) -> torch.nn.Module:
    """diffusers' AutoencoderDC of the same architecture, randomly initialised."""
    from diffusers import AutoencoderDC  # heavy, optional: only the peer's timing needs diffusers

    # model/dc_ae_keys.py reads a diffusers config into a DCAEConfig; nothing in model/ writes one back.
    return AutoencoderDC(
        latent_channels=config.latent_channels, attention_head_dim=config.attention_head_dim,
        encoder_block_types=config.block_types, decoder_block_types=config.block_types,
        encoder_block_out_channels=config.widths, decoder_block_out_channels=config.widths,
        encoder_layers_per_block=config.encoder_depths, decoder_layers_per_block=config.decoder_depths,
        encoder_qkv_multiscales=config.qkv_multiscales, decoder_qkv_multiscales=config.qkv_multiscales,
        upsample_block_type="interpolate", downsample_block_type="conv", scaling_factor=config.scaling_factor)


@torch.no_grad()
def time_dc_ae_decode(resolution: int, batch: int, dtype: str = "bf16", impl: str = "ours",
                      tile: int | None = None, repeats: int = 3, kernels: str = "auto") -> DecodeTiming:
    """DC-AE f32c32 decoding of `batch` random latents (the baseline's `dcae_decode` case)."""
    device, dt = timing_device("cuda"), torch_dtype(dtype)
    config = dataclasses.replace(get_dc_ae_preset("dc-ae-f32c32-sana-1.0"), kernels=kernels)
    if impl == "ours":
        with torch.device(device):
            ae = DCAE(config).to(dt).eval()
        decode = lambda z: ae.decode(z, tile_size=tile)  # noqa: E731
    elif impl == "diffusers":
        ae = peer_dc_ae(config).to(device, dt).eval()
        decode = lambda z: ae.decode(z).sample  # noqa: E731
    else:
        raise ValueError(f"unknown impl {impl!r}; expected 'ours' or 'diffusers'")
    side = resolution // config.spatial_compression
    z = torch.randn(batch, config.latent_channels, side, side, device=device, dtype=dt)
    reset_peak_memory(device)
    seconds = median_seconds(lambda: decode(z), device, repeats, warmup=1)
    return DecodeTiming(impl=impl, kernels=resolve(kernels, device) if impl == "ours" else impl,
                        resolution=resolution, batch=batch, dtype=dtype, tile=tile, decode_s=seconds,
                        img_per_s=batch / seconds, peak_mem_gib=peak_memory_gib(device), gpu=device_name(device))
