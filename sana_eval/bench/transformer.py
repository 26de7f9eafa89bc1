"""Speed of the denoising transformer, ours against the peer (diffusers), on one GPU (paper Tables 7, 14).

Protocol of ../shared/bench/diffusers_baseline.py so numbers compare: random weights (speed does not depend on
them), classifier-free guidance doubles the batch, a 300-token caption, one forward timed as the median of
repeats after warm-up, and 20 forwards back to back for the denoising time.
"""
from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from model.config import TransformerConfig, get_preset
from model.cuda_graph import CudaGraphs, GraphedDenoiser, use_graphs
from model.kernel_choice import resolve
from model.transformer import build_transformer
from model.dc_ae import DCAE, get_dc_ae_preset
from metrics.fid import InceptionEncoder, fid_transform
from metrics.images import ImageFileDataset

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class TransformerTiming:
    impl: str
    kernels: str                # ours: "eager" or "triton" (paper §2.2 kernel fusion); the peer: "diffusers"
    cuda_graphs: bool           # ours: forwards replayed from a CUDA graph (model/cuda_graph.py)
    preset: str
    resolution: int
    batch: int
    dtype: str
    step_s: float
    denoise20_s: float
    img_per_s: float
    peak_mem_gib: float
    gpu: str

    def to_dict(self) -> dict:
        return asdict(self)


def _median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def _peer_model(preset: str) -> torch.nn.Module:
    from diffusers import SanaTransformer2DModel

    cfg = get_preset(preset)
    return SanaTransformer2DModel(
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, num_attention_heads=cfg.self_heads,
        attention_head_dim=cfg.linear_head_dim, num_layers=cfg.depth, num_cross_attention_heads=cfg.cross_heads,
        cross_attention_head_dim=cfg.hidden_size // cfg.cross_heads, cross_attention_dim=cfg.hidden_size,
        caption_channels=cfg.caption_channels, mlp_ratio=cfg.mlp_ratio, attention_bias=False,
        sample_size=cfg.sample_size, patch_size=cfg.patch_size, norm_elementwise_affine=False, norm_eps=1e-6,
        interpolation_scale=cfg.pe_interpolation if cfg.use_pe else None,
        qk_norm="rms_norm_across_heads" if cfg.qk_norm else None)


def _inputs(cfg: TransformerConfig, resolution: int, rows: int, device: torch.device,
            dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Random latents and caption embeddings of a CFG batch, a full caption mask and t = 999."""
    side = resolution // 32                                   # the DC-AE f32 latent
    gen = torch.Generator(device).manual_seed(0)
    x = torch.randn(rows, cfg.in_channels, side, side, device=device, dtype=dtype, generator=gen)
    y = torch.randn(rows, cfg.model_max_length, cfg.caption_channels, device=device, dtype=dtype, generator=gen)
    mask = torch.ones(rows, cfg.model_max_length, device=device, dtype=torch.long)
    return x, torch.full((rows,), 999, device=device, dtype=torch.long), y, mask


@torch.no_grad()
def time_transformer(preset: str, resolution: int, batch: int, dtype: str = "bf16", impl: str = "ours",
                     steps: int = 20, repeats: int = 5, kernels: str = "auto",
                     cuda_graphs: CudaGraphs = "auto") -> TransformerTiming:
    """One forward and `steps` forwards of a 2·batch CFG pass at `resolution` px. `cuda_graphs` applies to ours
    ("auto": at small batch x resolution, as the pipeline does)."""
    if not torch.cuda.is_available():
        raise RuntimeError("time_transformer needs a CUDA GPU")
    device, torch_dtype = torch.device("cuda"), DTYPES[dtype]
    cfg = get_preset(preset).replace(kernels=kernels)
    if impl == "ours":
        model = build_transformer(cfg, device=device, dtype=torch_dtype).eval()
    elif impl == "diffusers":
        model = _peer_model(preset).to(device, torch_dtype).eval()
    else:
        raise ValueError(f"unknown impl {impl!r}; expected 'ours' or 'diffusers'")
    x, t, y, mask = _inputs(cfg, resolution, 2 * batch, device, torch_dtype)
    graphed = impl == "ours" and use_graphs(cuda_graphs, model, x)
    if impl == "ours":
        run = GraphedDenoiser(model) if graphed else model
        forward = lambda: run(x, t, y, mask)  # noqa: E731
    else:
        forward = lambda: model(x, y, t, encoder_attention_mask=mask, return_dict=False)  # noqa: E731

    def denoise() -> None:
        for _ in range(steps):
            forward()

    torch.cuda.reset_peak_memory_stats()
    step_s = _median_seconds(forward, repeats)
    denoise_s = _median_seconds(denoise, max(1, repeats // 2), warmup=1)
    return TransformerTiming(impl=impl, kernels=resolve(cfg.kernels, device) if impl == "ours" else impl,
                             cuda_graphs=graphed, preset=preset, resolution=resolution, batch=batch, dtype=dtype,
                             step_s=step_s, denoise20_s=denoise_s, img_per_s=batch / denoise_s,
                             peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30,
                             gpu=torch.cuda.get_device_name())


@dataclass(frozen=True)
class DecodeTiming:
    impl: str
    kernels: str                # ours: "eager" or "triton" (RMSNorm2d + residual fused); the peer: "diffusers"
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


@torch.no_grad()
def time_dc_ae_decode(resolution: int, batch: int, dtype: str = "bf16", impl: str = "ours",
                      tile: int | None = None, repeats: int = 3, kernels: str = "auto") -> DecodeTiming:
    """DC-AE f32c32 decoding of `batch` random latents (the baseline's `dcae_decode` case)."""
    if not torch.cuda.is_available():
        raise RuntimeError("time_dc_ae_decode needs a CUDA GPU")

    device, torch_dtype = torch.device("cuda"), DTYPES[dtype]
    config = dataclasses.replace(get_dc_ae_preset("dc-ae-f32c32-sana-1.0"), kernels=kernels)
    if impl == "ours":
        with torch.device(device):
            ae = DCAE(config).to(torch_dtype).eval()
        decode = lambda z: ae.decode(z, tile_size=tile)  # noqa: E731
    elif impl == "diffusers":
        from diffusers import AutoencoderDC

        ae = AutoencoderDC(
            latent_channels=config.latent_channels, attention_head_dim=config.attention_head_dim,
            encoder_block_types=config.block_types, decoder_block_types=config.block_types,
            encoder_block_out_channels=config.widths, decoder_block_out_channels=config.widths,
            encoder_layers_per_block=config.encoder_depths, decoder_layers_per_block=config.decoder_depths,
            encoder_qkv_multiscales=config.qkv_multiscales, decoder_qkv_multiscales=config.qkv_multiscales,
            upsample_block_type="interpolate", downsample_block_type="conv",
            scaling_factor=config.scaling_factor).to(device, torch_dtype).eval()
        decode = lambda z: ae.decode(z).sample  # noqa: E731
    else:
        raise ValueError(f"unknown impl {impl!r}; expected 'ours' or 'diffusers'")
    side = resolution // config.spatial_compression
    z = torch.randn(batch, config.latent_channels, side, side, device=device, dtype=torch_dtype)
    torch.cuda.reset_peak_memory_stats()
    seconds = _median_seconds(lambda: decode(z), repeats, warmup=1)
    return DecodeTiming(impl=impl, kernels=resolve(kernels, device) if impl == "ours" else impl,
                        resolution=resolution, batch=batch, dtype=dtype, tile=tile, decode_s=seconds,
                        img_per_s=batch / seconds, peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30,
                        gpu=torch.cuda.get_device_name())


@dataclass(frozen=True)
class FeatureThroughput:
    images: int
    source_px: int
    img_size: int
    workers: int
    decode_img_per_s: float     # JPEG decode + Sana's resize/crop alone
    features_img_per_s: float   # the same plus FID-Inception on the GPU
    gpu: str

    def to_dict(self) -> dict:
        return asdict(self)


def _write_jpegs(folder, count: int, side: int) -> list:
    """Smooth random images saved like Sana's generated files (PIL JPEG, default quality)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        low = rng.integers(0, 256, (side // 64, side // 64, 3), dtype=np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(low).resize((side, side), Image.BILINEAR).save(path)
        paths.append(path)
    return paths


def _random_fid_inception() -> torch.nn.Module:
    """pytorch-fid's FID-Inception with random weights: throughput does not depend on them."""
    from unittest import mock

    import torchvision
    from pytorch_fid import inception as pfid

    with mock.patch.object(torchvision.models.inception.Inception3, "load_state_dict", lambda self, sd: None), \
            mock.patch.object(pfid, "load_state_dict_from_url", lambda *a, **k: {}):
        return pfid.InceptionV3([pfid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])


@torch.no_grad()
def time_fid_features(count: int = 2000, source_px: int = 1024, img_size: int = 512,
                      workers: tuple[int, ...] = (0, 4, 8, 16)) -> list[FeatureThroughput]:
    """FID feature extraction of `count` JPEGs: is it bound by JPEG decoding (issue: use DataLoader workers)?"""
    import tempfile
    import time
    from pathlib import Path


    device = torch.device("cuda")
    encode = InceptionEncoder(_random_fid_inception(), device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = _write_jpegs(Path(tmp), count, source_px)
        dataset = ImageFileDataset(paths, range(len(paths)), fid_transform(img_size))
        for n in workers:
            def passes(model: bool) -> float:
                loader = torch.utils.data.DataLoader(dataset, batch_size=50, num_workers=n, pin_memory=True)
                start = time.perf_counter()
                for _, batch in loader:
                    if model:
                        encode(batch)
                torch.cuda.synchronize()
                return count / (time.perf_counter() - start)

            decode = passes(False)
            rows.append(FeatureThroughput(count, source_px, img_size, n, decode, passes(True),
                                          torch.cuda.get_device_name()))
    return rows
