"""End-to-end Sana timing with random weights (paper Tables 7, 8 and 14; §2 "How speed was measured").

One run = Gemma-2-2B text encoding + `steps` Flow-DPM-Solver forwards of our SanaTransformer on the CFG batch +
decoding, each phase marked on the device timeline; medians over repeats after a warm-up. Speed does not depend on
weight values, so every model is randomly initialised directly on the device.

The decoder is Sana's DC-AE (F32C32) or, for Table 8's F8C4P2 block designs, an AutoencoderKL of the SDXL VAE's
config (`vae="sdxl-vae"`, sana_eval/peer_models.py; its encoder is dropped, only the decoder runs).

Choices the paper leaves open (paper.md §2, §7), recorded in every E2ETiming:
- Precision: everything in `dtype` (the paper's tables say FP16). Our metric pipeline instead runs Gemma in bf16
  and the DC-AE in fp32 (model/pipeline.py); `text_dtype` / `vae_dtype` select that policy.
- Text length: the prompt rows are CHI + prompt, `chi_tokens + 298` tokens (model_spec §4.3); the CHI's Gemma
  token count is estimated at 200 (1,057 characters, 166 words; no tokenizer is available offline), a parameter.
  With CFG the negative prompt "" is encoded per call at 300 tokens without CHI, as diffusers' SanaPipeline does
  (NVlabs caches it once, which would make the text phase cheaper).
- Gemma-2's attention: eager, as the pipeline loads it (model/text_encoder.py): only eager applies Gemma-2's
  attention-logit softcapping; `attn_implementation` can time another kernel.
- Decoding: `decode_chunk` images per decoder call (default: at most 16 megapixels per call, so a batch of 16 at
  2K/4K fits in memory), in 1024 px tiles from 4K up unless `decode_tile` says otherwise (0: never tiled).
"""
from __future__ import annotations

import dataclasses
import gc
from dataclasses import asdict, dataclass

import torch

from model.config import PRESETS, TransformerConfig, get_preset
from model.cuda_graph import CudaGraphs, GraphedDenoiser, use_graphs
from model.dc_ae import DCAE, DCAE_PRESETS, DCAEConfig, decode_tiled
from model.kernel_choice import resolve
from model.macs import count_macs
from model.samplers import classifier_free_guidance, flow_dpm_solver
from model.text_encoder import select_tokens
from model.transformer import build_transformer
from sana_eval.bench.clock import (Clock, device_name, median_phases, peak_memory_gib, reset_peak_memory, timing_device,
                                   torch_dtype)
from sana_eval.bench.text_encoders import TextEncoderSpec, building, build_text_encoder, get_text_encoder, random_tokens
from sana_eval.bench.peer_models import VAES, VaeSpec

CHI_TOKENS = 200                    # estimated Gemma tokens of the CHI text, BOS included (model_spec §4.3 n_chi)
CAPTION_TOKENS = 300                # embeddings per prompt after the cut (model_max_length)
CFG_SCALE = 4.5
DECODE_PIXELS = 16 * 1024**2        # default decoder call size: 16 images at 1024 px, 4 at 2K, 1 at 4K
TILED_FROM_PX = 4096                # decode tiled from this image side up (default_decode_tile)
TILE_PX = 1024
WARMUP_STEPS = 2                    # the warm-up run compiles the same shapes; more steps teach it nothing
DEFAULT_VAE = "dc-ae-f32c32-sana-1.0"
SDXL_VAE = "sdxl-vae"               # Table 8's F8C4 autoencoder (the paper's F8C4P2 rows)
KL_TILE_OVERLAP = 0.25              # AutoencoderKL tiles share a quarter of their side, as diffusers' tiling does
Autoencoder = DCAEConfig | VaeSpec


def resolve_vae(vae: str | Autoencoder) -> tuple[str, Autoencoder]:
    """A decoder name (a DC-AE preset or "sdxl-vae") or config -> (the name a record carries, its config)."""
    if isinstance(vae, str):
        if vae not in (*DCAE_PRESETS, SDXL_VAE):
            raise ValueError(f"unknown autoencoder {vae!r}; known: {', '.join((*DCAE_PRESETS, SDXL_VAE))}")
        return vae, VAES["sdxl"] if vae == SDXL_VAE else DCAE_PRESETS[vae]
    return f"custom {'DC-AE' if isinstance(vae, DCAEConfig) else 'AutoencoderKL'}", vae


def vae_factor(vae: Autoencoder) -> int:
    """Pixels per latent side: DC-AE halves per stage; AutoencoderKL downsamples in all blocks but the last."""
    return vae.spatial_compression if isinstance(vae, DCAEConfig) else 2 ** (len(vae.block_out_channels) - 1)


def block_design(config: TransformerConfig, factor: int) -> str:
    """Table 8's row key: the autoencoder/patching and the block's attention and FFN."""
    return (f"F{factor}C{config.in_channels}P{config.patch_size}, {config.self_attention} attention, "
            f"{config.ffn} FFN x{config.mlp_ratio}")


@dataclass(frozen=True)
class E2ETiming:
    preset: str
    resolution: int
    batch: int                      # images; the transformer sees 2·batch rows with CFG
    rows: int
    steps: int
    cfg: bool
    dtype: str                      # the transformer's
    kernels: str                    # the transformer's and DC-AE's: "eager" or fused "triton" kernels (paper §2.2)
    cuda_graphs: bool               # denoiser forwards replayed from a CUDA graph (model/cuda_graph.py)
    blocks: str                     # block design (Table 8): e.g. "F32C32P1, linear attention, mix FFN x2.5"
    vae: str                        # the decoder: a DC-AE preset, "sdxl-vae" or "custom ..."
    text_dtype: str
    vae_dtype: str
    text_encoder: str
    attn_implementation: str        # Gemma's attention kernel
    text_tokens: int                # prompt-row length before the 300-token cut
    decode_tile: int | None
    decode_chunk: int
    text_s: float
    denoise_s: float
    decode_s: float
    total_s: float                  # median of whole runs: the latency at batch 1
    step_s: float                   # denoise_s / steps
    img_per_s: float                # batch / total_s: the throughput at batch 16
    denoise_img_per_s: float        # batch / denoise_s: the same without text encoding and decoding
    macs_per_forward: int           # one transformer forward on `rows` rows (model/macs.py)
    achieved_tflops: float          # 2 · MACs · steps / denoise_s
    matmul_peak_tflops: float | None
    mfu: float | None               # achieved / matmul peak
    peak_mem_gib: float | None
    repeats: int
    device: str

    def to_dict(self) -> dict:
        return asdict(self)


class SanaWorkload:
    """Random Gemma-2 + SanaTransformer + decoder on one device, and one generation of `batch` images as phases."""

    def __init__(self, config: TransformerConfig, resolution: int, batch: int, *, dtype: str, text_dtype: str,
                 vae_dtype: str, cfg: bool, vae: Autoencoder, text_encoder: TextEncoderSpec, chi_tokens: int,
                 decode_tile: int | None, decode_chunk: int, device: torch.device,
                 attn_implementation: str | None = None, cuda_graphs: CudaGraphs = "auto") -> None:
        factor, kind = vae_factor(vae), "DC-AE" if isinstance(vae, DCAEConfig) else "AutoencoderKL"
        if resolution % factor:
            raise ValueError(f"resolution {resolution} is not a multiple of the {kind}'s {factor}")
        side = resolution // factor
        if side % config.patch_size:
            raise ValueError(f"latent side {side} ({resolution} px / {kind} factor {factor}) is not a multiple of "
                             f"the transformer's patch_size {config.patch_size}")
        if vae.latent_channels != config.in_channels or text_encoder.hidden != config.caption_channels:
            raise ValueError(f"models do not fit: transformer in_channels {config.in_channels} / caption_channels "
                             f"{config.caption_channels}, {kind} latents {vae.latent_channels}, text encoder hidden "
                             f"{text_encoder.hidden}")
        self.config, self.batch, self.cfg, self.device, self.factor = config, batch, cfg, device, factor
        self.decode_tile, self.decode_chunk = decode_tile, decode_chunk
        self.transformer = build_transformer(config, device=device, dtype=torch_dtype(dtype)).eval()
        if isinstance(vae, DCAEConfig):
            with device:
                self.vae = DCAE(vae).to(torch_dtype(vae_dtype)).eval()
        else:
            with building(device, torch_dtype(vae_dtype)):
                self.vae = vae.build().eval()
            del self.vae.encoder, self.vae.quant_conv   # generation only decodes: no encoder weights in memory
        self.text_encoder = build_text_encoder(text_encoder, device, text_dtype, attn_implementation)
        self.text_tokens = chi_tokens + CAPTION_TOKENS - 2
        self.prompt_ids = random_tokens(text_encoder, batch, self.text_tokens, device, seed=0)
        self.null_ids = random_tokens(text_encoder, batch, CAPTION_TOKENS, device, seed=1)
        gen = torch.Generator(device).manual_seed(2)
        self.noise = torch.randn(batch, config.in_channels, side, side, device=device, generator=gen)  # fp32
        rows = self.noise[:1].expand(2 * batch if cfg else batch, -1, -1, -1)  # the shape the DiT sees
        self.graphed = GraphedDenoiser(self.transformer) if use_graphs(cuda_graphs, self.transformer, rows) else None

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Sampler latents (B, C, h, w) -> images (B, 3, f·h, f·w); each decoder undoes its own scaling."""
        if isinstance(self.vae, DCAE):
            return self.vae.decode(latents, tile_size=self.decode_tile)
        scaling, shift = self.vae.config.scaling_factor, self.vae.config.shift_factor or 0.0
        z = latents / scaling + shift                                    # as diffusers' pipelines do

        def decode(tile: torch.Tensor) -> torch.Tensor:
            return self.vae.decode(tile).sample                          # (B, 3, f·h, f·w)

        if self.decode_tile is None or max(z.shape[-2:]) <= self.decode_tile:
            return decode(z)
        return decode_tiled(decode, z, self.decode_tile, int(self.decode_tile * KL_TILE_OVERLAP), self.factor)

    def _encode(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, D)
        return select_tokens(features, CAPTION_TOKENS), select_tokens(mask, CAPTION_TOKENS)  # (B, 300, D), (B, 300)

    @torch.no_grad()
    def __call__(self, clock: Clock, steps: int) -> torch.Tensor:
        clock.mark()
        emb, mask = self._encode(*self.prompt_ids)
        if self.cfg:                                                     # rows ordered [uncond; cond]
            null_emb, null_mask = self._encode(*self.null_ids)
            emb, mask = torch.cat([null_emb, emb]), torch.cat([null_mask, mask])
        dtype = self.transformer.dtype
        emb = emb.to(dtype)                                              # (rows, 300, D)
        clock.mark()

        denoiser = self.graphed or self.transformer

        def batched(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return denoiser(x.to(dtype), t, emb, mask).float()

        velocity = classifier_free_guidance(batched, CFG_SCALE) if self.cfg else batched
        latents = flow_dpm_solver(velocity, self.noise, steps, self.config.flow_shift)  # (B, C, h, w) fp32
        clock.mark()
        vae_dtype = next(self.vae.parameters()).dtype
        images = [self._decode(chunk.to(vae_dtype)) for chunk in latents.split(self.decode_chunk)]
        clock.mark()
        return torch.cat(images)                                         # (B, 3, H, W)


def _preset(preset: str | TransformerConfig) -> tuple[str, TransformerConfig]:
    """A preset name or config -> (the name a record carries, the config); a config equal to a preset keeps its
    name ("custom" otherwise: `blocks` and `kernels` then say what differs)."""
    if isinstance(preset, str):
        return preset, get_preset(preset)
    named = [name for name, config in PRESETS.items() if config == preset.replace(kernels="auto")]
    return (named[0] if named else "custom"), preset


def default_decode_tile(resolution: int, factor: int) -> int | None:
    """Latent tile side for 4K and above (1024 px tiles, as diffusers' 4K examples): one untiled 4K DC-AE decode
    takes more memory than an 80 GB GPU has beside the transformer; below 4K, None (untiled)."""
    return TILE_PX // factor if resolution >= TILED_FROM_PX else None


def default_decode_chunk(resolution: int) -> int:
    return max(1, DECODE_PIXELS // resolution**2)


def time_sana_e2e(preset: str | TransformerConfig, resolution: int, batch: int, dtype: str = "fp16",
                  steps: int = 20, cfg: bool = True, decode_tile: int | None = None, *,
                  text_dtype: str | None = None, vae_dtype: str | None = None, chi_tokens: int = CHI_TOKENS,
                  decode_chunk: int | None = None, vae: str | Autoencoder = DEFAULT_VAE,
                  text_encoder: str | TextEncoderSpec = "gemma-2-2b", attn_implementation: str | None = None,
                  repeats: int = 3, budget_s: float | None = 30.0, matmul_peak_tflops: float | None = None,
                  kernels: str | None = None, cuda_graphs: CudaGraphs = "auto", device: str = "cuda") -> E2ETiming:
    """Time text encoding, `steps` denoising forwards and decoding of `batch` images at `resolution` px.

    Latency is `total_s` at batch 1, throughput `img_per_s` at batch 16 (paper Table 7 caption). Repeats stop
    after `budget_s` seconds of timed runs (at least one). `matmul_peak_tflops` (measure_matmul_peak) turns the
    achieved TFLOP/s into a fraction of the GPU's peak. `kernels` overrides the fused paths of the transformer and
    of a DC-AE; `cuda_graphs` is the pipeline's option ("auto": graphs at small batch x resolution).
    `attn_implementation`: Gemma-2's attention (None: eager, as the pipeline runs it).
    `vae`: a DC-AE preset, "sdxl-vae" (Table 8's F8C4 rows: give a config with in_channels=4, patch_size=2) or a
    DCAEConfig / VaeSpec; its latent channels must be the transformer's in_channels.
    """
    name, config = _preset(preset)
    if kernels is not None:
        config = config.replace(kernels=kernels)
    dev = timing_device(device)
    text_dtype, vae_dtype = text_dtype or dtype, vae_dtype or dtype
    vae_name, vae_config = resolve_vae(vae)
    if kernels is not None and isinstance(vae_config, DCAEConfig):
        vae_config = dataclasses.replace(vae_config, kernels=kernels)
    spec = get_text_encoder(text_encoder)
    if attn_implementation is None and spec.family == "gemma2":
        attn_implementation = "eager"
    chunk = decode_chunk or default_decode_chunk(resolution)
    factor = vae_factor(vae_config)
    decode_tile = default_decode_tile(resolution, factor) if decode_tile is None else (decode_tile or None)
    work = SanaWorkload(config, resolution, batch, dtype=dtype, text_dtype=text_dtype, vae_dtype=vae_dtype, cfg=cfg,
                        vae=vae_config, text_encoder=spec, chi_tokens=chi_tokens, decode_tile=decode_tile,
                        decode_chunk=chunk, device=dev, attn_implementation=attn_implementation,
                        cuda_graphs=cuda_graphs)
    rows = 2 * batch if cfg else batch
    try:
        reset_peak_memory(dev)
        times = median_phases(lambda clock: work(clock, steps), dev, repeats,
                              warmup=lambda: work(Clock(dev), min(steps, WARMUP_STEPS)), budget_s=budget_s)
        peak = peak_memory_gib(dev)
        attn = str(work.text_encoder.config._attn_implementation)
        graphed = work.graphed is not None
    finally:  # the next case of a suite must find the GPU empty, not this one's models and cached blocks
        del work
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    text_s, denoise_s, decode_s = times.phases
    # MACs do not depend on kernel fusion; they are counted on the meta device, where no kernel runs.
    macs = count_macs(config.replace(kernels="eager"), resolution, text_tokens=CAPTION_TOKENS, batch=rows)
    achieved = 2 * macs * steps / denoise_s / 1e12
    return E2ETiming(
        preset=name, resolution=resolution, batch=batch, rows=rows, steps=steps, cfg=cfg, dtype=dtype,
        kernels=resolve(config.kernels, dev), cuda_graphs=graphed, blocks=block_design(config, factor), vae=vae_name,
        text_dtype=text_dtype, vae_dtype=vae_dtype, text_encoder=spec.repo, attn_implementation=attn,
        text_tokens=chi_tokens + CAPTION_TOKENS - 2, decode_tile=decode_tile, decode_chunk=chunk, text_s=text_s,
        denoise_s=denoise_s, decode_s=decode_s, total_s=times.total, step_s=denoise_s / steps,
        img_per_s=batch / times.total, denoise_img_per_s=batch / denoise_s, macs_per_forward=macs,
        achieved_tflops=achieved, matmul_peak_tflops=matmul_peak_tflops,
        mfu=achieved / matmul_peak_tflops if matmul_peak_tflops else None, peak_mem_gib=peak,
        repeats=times.repeats, device=device_name(dev))
