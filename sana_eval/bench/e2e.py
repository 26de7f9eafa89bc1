"""End-to-end Sana timing with random weights (paper Tables 7, 8 and 14; docs/tables.md §2).

One run = Gemma-2-2B text encoding + `steps` Flow-DPM-Solver forwards of our SanaTransformer on the CFG batch +
decoding, each phase marked on the device timeline; medians over repeats after a warm-up. Speed does not depend on
weight values, so every model is randomly initialised directly on the device.

The decoder is Sana's DC-AE (F32C32) or, for Table 8's F8C4P2 block designs, an AutoencoderKL of the SDXL VAE's
config (`vae="sdxl-vae"`, sana_eval/bench/peer_models.py; its encoder is dropped, only the decoder runs).

Choices the paper leaves open (docs/tables.md §2, §7), recorded in every E2ETiming:
- Precision: everything in `dtype` (the paper's tables say FP16). Our metric pipeline instead runs Gemma in bf16
  and the DC-AE in fp32 (model/pipeline.py); `text_dtype` / `vae_dtype` select that policy.
- Text length: the prompt rows are CHI + prompt, `chi_tokens + 298` tokens (docs/model.md §4.3); the CHI's Gemma
  token count is estimated at 200 (1,057 characters, 166 words; no tokenizer is available offline), a parameter.
  With CFG the negative prompt "" (300 tokens, no CHI) is by default encoded once per run, outside the timed phases,
  as our pipeline (model/text_encoder.py, `null_embedding`) and NVlabs' do, and repeated for the batch rows in
  each run; `null_prompt="per-call"` encodes it for every row in every run, as diffusers' SanaPipeline does.
- Gemma-2's attention: eager, as the pipeline loads it (model/text_encoder.py): only eager applies Gemma-2's
  attention-logit softcapping; `attn_implementation` can time another kernel. As in the pipeline, `cuda_graphs`
  replays eager Gemma-2 from a CUDA graph where its forward is launch-bound (decided on the prompt rows, applied to
  both text forwards; `text_cuda_graphs` records it).
- Decoding: `decode_chunk` images per decoder call (default: at most 16 megapixels per call, so a batch of 16 at
  2K/4K fits in memory), in 1024 px tiles from 4K up unless `decode_tile` says otherwise (0: never tiled).
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import torch

from model.config import TransformerConfig
from model.cuda_graph import CudaGraphs, GraphedModule, use_graphs
from model.dc_ae import DCAE, DCAE_PRESETS, DCAEConfig
from model.kernel_choice import resolve
from model.macs import count_macs
from model.quantize import quantize_transformer
from model.samplers import classifier_free_guidance, flow_dpm_solver
from model.text_encoder import Gemma2Forward, select_tokens
from model.tiled_decode import decode_tiled
from model.transformer import build_transformer
from sana_eval.bench.clock import (
    Clock,
    device_name,
    free_memory,
    median_phases,
    peak_memory_gib,
    reset_peak_memory,
    timing_device,
    torch_dtype,
)
from sana_eval.bench.peer_models import VAES, VaeSpec
from sana_eval.bench.text_encoders import TextEncoderSpec, build_text_encoder, building, get_text_encoder, random_tokens
from sana_eval.bench.transformer import named_config

CHI_TOKENS = 200                    # estimated Gemma tokens of the CHI text, BOS included (docs/model.md §4.3 n_chi)
CAPTION_TOKENS = 300                # embeddings per prompt after the cut (model_max_length)
NULL_PROMPTS = ("cached", "per-call")  # E2ESpec.null_prompt (module docstring)
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
class E2ESpec:
    """One end-to-end case: the model, the images, and the choices the paper leaves open (module docstring)."""

    preset: str | TransformerConfig     # a preset name, or a config (Table 8's block designs)
    resolution: int
    batch: int                          # images; with CFG the transformer sees 2·batch rows
    dtype: str = "fp16"                 # the transformer's, and the default of text_dtype and vae_dtype
    steps: int = 20
    cfg: bool = True
    decode_tile: int | None = None      # latent tile side; None: default_decode_tile, 0: never tiled
    text_dtype: str | None = None
    vae_dtype: str | None = None
    chi_tokens: int = CHI_TOKENS
    null_prompt: str = "cached"         # CFG's "" encoded once per run ("cached") or per row and run ("per-call")
    decode_chunk: int | None = None     # images per decoder call; None: default_decode_chunk
    vae: str | Autoencoder = DEFAULT_VAE    # a DC-AE preset, "sdxl-vae", or a DCAEConfig / VaeSpec
    text_encoder: str | TextEncoderSpec = "gemma-2-2b"
    attn_implementation: str | None = None  # Gemma's attention; None: eager for Gemma-2, as the pipeline runs it
    kernels: str | None = None          # overrides the fused paths of the transformer and of a DC-AE
    cuda_graphs: CudaGraphs = "auto"    # the pipeline's option ("auto": graphs at small batch x resolution)
    quantize: str = "none"              # the DiT blocks' GEMMs: "w8a8" (paper §4, Table 5) or "fp8" (model/quantize.py)
    repeats: int = 3
    budget_s: float | None = 30.0       # timed runs stop after this many seconds (at least one)
    device: str | torch.device = "cuda"


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
    quantize: str = "none"          # the DiT blocks' GEMMs (model/quantize.py); rows recorded before it had none
    text_cuda_graphs: bool = False  # Gemma-2 forwards replayed from a CUDA graph (model/text_encoder.py)
    null_prompt: str = "per-call"   # how CFG's "" was encoded (E2ESpec); rows recorded before the field: per call

    def to_dict(self) -> dict:
        return asdict(self)


class SanaWorkload:
    """Random Gemma-2 + SanaTransformer + decoder of one case on its device, and one generation as phases.

    The spec's defaults (decoder, text encoder, tiling, chunking, dtypes) are settled here, once, and kept as
    attributes, so the record says what ran."""

    def __init__(self, spec: E2ESpec) -> None:
        if spec.null_prompt not in NULL_PROMPTS:  # before any model is built
            raise ValueError(f"null_prompt {spec.null_prompt!r}; expected one of {', '.join(NULL_PROMPTS)}")
        device = timing_device(spec.device)
        self.name, config = named_config(spec.preset)
        self.vae_name, vae = resolve_vae(spec.vae)
        if spec.kernels is not None:
            config = config.replace(kernels=spec.kernels)
            if isinstance(vae, DCAEConfig):
                vae = dataclasses.replace(vae, kernels=spec.kernels)
        text_encoder = get_text_encoder(spec.text_encoder)
        factor, kind = vae_factor(vae), "DC-AE" if isinstance(vae, DCAEConfig) else "AutoencoderKL"
        if spec.resolution % factor:
            raise ValueError(f"resolution {spec.resolution} is not a multiple of the {kind}'s {factor}")
        side = spec.resolution // factor
        if side % config.patch_size:
            raise ValueError(f"latent side {side} ({spec.resolution} px / {kind} factor {factor}) is not a multiple "
                             f"of the transformer's patch_size {config.patch_size}")
        if vae.latent_channels != config.in_channels or text_encoder.hidden != config.caption_channels:
            raise ValueError(f"models do not fit: transformer in_channels {config.in_channels} / caption_channels "
                             f"{config.caption_channels}, {kind} latents {vae.latent_channels}, text encoder hidden "
                             f"{text_encoder.hidden}")
        self.config, self.resolution, self.batch, self.cfg = config, spec.resolution, spec.batch, spec.cfg
        self.device, self.factor, self.rows = device, factor, 2 * spec.batch if spec.cfg else spec.batch
        self.dtype, self.text_dtype = spec.dtype, spec.text_dtype or spec.dtype
        self.vae_dtype = spec.vae_dtype or spec.dtype
        self.decode_tile = (default_decode_tile(spec.resolution, factor) if spec.decode_tile is None
                            else spec.decode_tile or None)
        self.decode_chunk = spec.decode_chunk or default_decode_chunk(spec.resolution)
        self.text_repo = text_encoder.repo
        self.quantize = spec.quantize
        self.transformer = quantize_transformer(build_transformer(config, device=device, dtype=torch_dtype(spec.dtype))
                                                .eval(), spec.quantize)
        if isinstance(vae, DCAEConfig):
            with device:
                self.vae = DCAE(vae).to(torch_dtype(self.vae_dtype)).eval()
        else:
            with building(device, torch_dtype(self.vae_dtype)):
                self.vae = vae.build().eval()
            del self.vae.encoder, self.vae.quant_conv   # generation only decodes: no encoder weights in memory
        attn = spec.attn_implementation or ("eager" if text_encoder.family == "gemma2" else None)
        self.text_encoder = build_text_encoder(text_encoder, device, self.text_dtype, attn)
        self.text_tokens = spec.chi_tokens + CAPTION_TOKENS - 2
        self.prompt_ids = random_tokens(text_encoder.vocab, spec.batch, self.text_tokens, device, seed=0)
        self.text_forward = Gemma2Forward(self.text_encoder) if text_encoder.family == "gemma2" else None
        self.text_graphs = (self.text_forward is not None and self.text_forward.eager
                            and self.text_forward.use_graphs(spec.cuda_graphs, self.prompt_ids[0]))
        self.null_prompt = spec.null_prompt
        cached = spec.null_prompt == "cached"
        self.null_ids = random_tokens(text_encoder.vocab, 1 if cached else spec.batch, CAPTION_TOKENS, device, seed=1)
        # As the pipeline's null embedding: computed once, eagerly (a graph would cost more than it saves).
        self.null_features = self._encode(*self.null_ids, graphs=False) if cached and spec.cfg else None
        gen = torch.Generator(device).manual_seed(2)
        self.noise = torch.randn(spec.batch, config.in_channels, side, side, device=device, generator=gen)  # fp32
        rows = self.noise[:1].expand(self.rows, -1, -1, -1)                 # the shape the DiT sees
        self.graphed = (GraphedModule(self.transformer) if use_graphs(spec.cuda_graphs, self.transformer, rows)
                        else None)

    def described(self) -> dict:
        """The E2ETiming fields that say what ran (the spec with its defaults settled)."""
        return dict(preset=self.name, resolution=self.resolution, batch=self.batch, rows=self.rows, cfg=self.cfg,
                    dtype=self.dtype, kernels=resolve(self.config.kernels, self.device),
                    cuda_graphs=self.graphed is not None, text_cuda_graphs=self.text_graphs, quantize=self.quantize,
                    blocks=block_design(self.config, self.factor), vae=self.vae_name, text_dtype=self.text_dtype,
                    vae_dtype=self.vae_dtype, text_encoder=self.text_repo,
                    attn_implementation=str(self.text_encoder.config._attn_implementation),
                    text_tokens=self.text_tokens, decode_tile=self.decode_tile, decode_chunk=self.decode_chunk,
                    null_prompt=self.null_prompt)

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

    @torch.no_grad()
    def _encode(self, ids: torch.Tensor, mask: torch.Tensor,
                graphs: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and mask after the 300-token cut; `graphs` (None: as decided for the prompt rows) replays
        Gemma-2 from a CUDA graph."""
        graphs = self.text_graphs if graphs is None else graphs
        if self.text_forward is None:
            features = self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, D)
        else:  # Gemma-2 as TextEncoder runs it
            features = self.text_forward(ids, mask, "on" if graphs else "off")
        return select_tokens(features, CAPTION_TOKENS), select_tokens(mask, CAPTION_TOKENS)  # (B, 300, D), (B, 300)

    @torch.no_grad()
    def __call__(self, clock: Clock, steps: int) -> torch.Tensor:
        clock.mark()
        emb, mask = self._encode(*self.prompt_ids)
        if self.cfg:                                                     # rows ordered [uncond; cond]
            if self.null_features is None:
                null_emb, null_mask = self._encode(*self.null_ids)
            else:
                null_emb, null_mask = (t.expand(self.batch, *t.shape[1:]) for t in self.null_features)
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


def default_decode_tile(resolution: int, factor: int) -> int | None:
    """Latent tile side for 4K and above (1024 px tiles, as diffusers' 4K examples): one untiled 4K DC-AE decode
    takes more memory than an 80 GB GPU has beside the transformer; below 4K, None (untiled)."""
    return TILE_PX // factor if resolution >= TILED_FROM_PX else None


def default_decode_chunk(resolution: int) -> int:
    return max(1, DECODE_PIXELS // resolution**2)




def time_sana_e2e(spec: E2ESpec, *, matmul_peak_tflops: float | None = None) -> E2ETiming:
    """Time text encoding, `spec.steps` denoising forwards and decoding of `spec.batch` images.

    Latency is `total_s` at batch 1, throughput `img_per_s` at batch 16 (paper Table 7 caption).
    `matmul_peak_tflops` (measure_matmul_peak) turns the achieved TFLOP/s into a fraction of the GPU's peak. For
    Table 8's F8C4 rows give `vae="sdxl-vae"` and a config with in_channels=4, patch_size=2; a decoder's latent
    channels must be the transformer's in_channels.
    """
    work = SanaWorkload(spec)
    dev, config, steps = work.device, work.config, spec.steps
    try:
        reset_peak_memory(dev)
        times = median_phases(lambda clock: work(clock, steps), dev, spec.repeats,
                              warmup=lambda: work(Clock(dev), min(steps, WARMUP_STEPS)), budget_s=spec.budget_s)
        peak = peak_memory_gib(dev)
        case = work.described()
    finally:  # the next case of a suite must find the GPU empty, not this one's models and cached blocks
        work = None
        free_memory(dev)
    text_s, denoise_s, decode_s = times.phases
    # MACs do not depend on kernel fusion; they are counted on the meta device, where no kernel runs.
    macs = count_macs(config.replace(kernels="eager"), spec.resolution, text_tokens=CAPTION_TOKENS, batch=case["rows"])
    achieved = 2 * macs * steps / denoise_s / 1e12
    return E2ETiming(
        **case, steps=steps, text_s=text_s, denoise_s=denoise_s, decode_s=decode_s, total_s=times.total,
        step_s=denoise_s / steps, img_per_s=spec.batch / times.total, denoise_img_per_s=spec.batch / denoise_s,
        macs_per_forward=macs, achieved_tflops=achieved, matmul_peak_tflops=matmul_peak_tflops,
        mfu=achieved / matmul_peak_tflops if matmul_peak_tflops else None, peak_mem_gib=peak,
        repeats=times.repeats, device=device_name(dev))
