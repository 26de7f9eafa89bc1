"""Prompts -> images: Gemma-2 conditioning, guided flow sampling of the Linear DiT, DC-AE decoding.

The dtype policy is the reference's (docs/model.md §6): the DiT in its checkpoint's precision (fp16 or bf16) with
fp32 linear attention, Gemma-2 in bf16, latents and sampler state in fp32, DC-AE in fp32 for metric runs.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from model.checkpoints import load_transformer
from model.cuda_graph import CudaGraphs, GraphedModule, use_graphs
from model.dc_ae import DCAE
from model.dc_ae_keys import load_dc_ae
from model.quantize import quantize_transformer
from model.samplers import classifier_free_guidance, flow_dpm_solver, flow_euler, perturbed_attention_guidance
from model.text_encoder import TextEncoder, TextEncoderConfig
from model.transformer import SanaTransformer

SAMPLERS = {"flow_dpm_solver": flow_dpm_solver, "flow_euler": flow_euler}
DEFAULT_STEPS = {"flow_dpm_solver": 20, "flow_euler": 28}  # NVlabs `sample_steps_dict`


@dataclass(frozen=True)
class SamplingConfig:
    """How one image is sampled; defaults are Sana's metric scripts (docs/model.md §5.3, docs/generation.md §1)."""

    sampler: Literal["flow_dpm_solver", "flow_euler"] = "flow_dpm_solver"
    steps: int | None = None               # None: 20 for Flow-DPM-Solver, 28 for Flow-Euler
    cfg_scale: float = 4.5
    shift: float | None = None             # None: the checkpoint's flow_shift
    pag_scale: float = 1.0                 # PAG runs only above 1, as in NVlabs
    pag_layers: tuple[int, ...] = (8,)
    x0_formula: Literal["diffusers", "nvlabs"] = "diffusers"
    use_chi: bool = True                   # Sana's DPG-Bench and ImageReward scripts encode without CHI
    decode_tile: int | None = None         # latent tile side for tiled DC-AE decoding (2K/4K)

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; expected one of {', '.join(SAMPLERS)}")

    @property
    def num_steps(self) -> int:
        return self.steps if self.steps is not None else DEFAULT_STEPS[self.sampler]


def initial_noise(seeds: Sequence[int], channels: int, height: int, width: int) -> torch.Tensor:
    """(B, C, h, w) fp32 noise; sample k depends only on seeds[k], never on the batch it runs in."""
    return torch.stack([torch.randn(channels, height, width, generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds])


@dataclass
class SanaPipeline:
    transformer: SanaTransformer
    vae: DCAE
    text_encoder: TextEncoder
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cuda_graphs: CudaGraphs = "auto"  # replay denoiser steps and Gemma-2 from CUDA graphs (bit-identical)
    _graphed: GraphedModule | None = field(default=None, init=False, repr=False)

    def _denoiser(self, latent: torch.Tensor):
        """The transformer, or its graph-replaying wrapper, which is kept across calls with its recorded graphs."""
        if not use_graphs(self.cuda_graphs, self.transformer, latent):
            return self.transformer
        if self._graphed is None or self._graphed.model is not self.transformer:
            self._graphed = GraphedModule(self.transformer)
        return self._graphed

    def _forget_moved_weights(self) -> None:
        if self._graphed is not None:
            self._graphed.forget_if_weights_moved()

    @property
    def default_resolution(self) -> int:
        return self.transformer.config.sample_size * self.vae.config.spatial_compression

    def _velocity(self, text, config: SamplingConfig, batch: int):
        """The guided velocity: CFG (docs/model.md §5) and optionally PAG (§5.3), composed around the DiT."""
        kwargs = {}
        if config.pag_scale > 1.0:  # [uncond; cond; cond], identity attention in the PAG layers for the last third
            emb, mask = torch.cat([text.emb, text.cond]), torch.cat([text.mask, text.cond_mask])
            kwargs = dict(pag_layers=frozenset(config.pag_layers), perturbed_rows=batch)
            guide = lambda f: perturbed_attention_guidance(f, config.cfg_scale, config.pag_scale)  # noqa: E731
        elif config.cfg_scale != 1.0:
            emb, mask = text.emb, text.mask
            guide = lambda f: classifier_free_guidance(f, config.cfg_scale)  # noqa: E731
        else:  # no guidance: the prompt branch alone
            emb, mask = text.cond, text.cond_mask
            guide = lambda f: f  # noqa: E731
        dtype = self.transformer.dtype
        emb, mask = emb.to(self.device, dtype), mask.to(self.device)

        def batched(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x = x.to(dtype)
            return self._denoiser(x)(x, t, emb, mask, **kwargs).float()

        return guide(batched)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], *, seeds: Sequence[int] | None = None,
                 noise: torch.Tensor | None = None, config: SamplingConfig = SamplingConfig(),
                 height: int | None = None, width: int | None = None, progress: bool = False) -> torch.Tensor:
        """Images (B, 3, H, W) in fp32, nominally in [-1, 1]; give either per-sample `seeds` or the `noise`."""
        factor = self.vae.config.spatial_compression
        height, width = height or self.default_resolution, width or self.default_resolution
        if height % factor or width % factor:
            raise ValueError(f"height and width must be multiples of {factor}; got {height}x{width}")
        if (seeds is None) == (noise is None):
            raise ValueError("give exactly one of seeds or noise")
        if noise is None:
            noise = initial_noise(seeds, self.transformer.config.in_channels, height // factor, width // factor)
        if len(noise) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(noise)} noise samples")
        text = self.text_encoder.encode_cfg(list(prompts), use_chi=config.use_chi, cuda_graphs=self.cuda_graphs)
        self._forget_moved_weights()  # recorded graphs read the weights where they were
        velocity = self._velocity(text, config, len(prompts))
        shift = config.shift if config.shift is not None else self.transformer.config.flow_shift
        sampler = SAMPLERS[config.sampler]
        kwargs = dict(x0_formula=config.x0_formula) if config.sampler == "flow_dpm_solver" else {}
        latents = sampler(velocity, noise.to(self.device, torch.float32), config.num_steps, shift,
                          progress=progress, **kwargs)
        vae_dtype = next(self.vae.parameters()).dtype
        return self.vae.decode(latents.to(vae_dtype), tile_size=config.decode_tile).float()


_TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def load_pipeline(weights: str, *, vae: str | None = None, text_encoder: TextEncoderConfig | None = None,
                  device: str | torch.device | None = None, transformer_dtype: torch.dtype | None = None,
                  vae_dtype: torch.dtype = torch.float32, kernels: str = "auto", cuda_graphs: CudaGraphs = "auto",
                  quantize: str = "none", **overrides: object) -> SanaPipeline:
    """A pipeline with the reference dtype policy: the DiT in its checkpoint's precision (`config.dtype`, fp16 or
    bf16), Gemma-2 as configured (bf16), DC-AE in fp32 as the metric scripts decode (docs/generation.md §1.1,
    docs/model.md §6).

    `weights`: a transformer checkpoint (any format `load_transformer` reads) or a preset name (random weights).
    A diffusers pipeline root (model_index.json) also supplies the default `vae` and text encoder; elsewhere they
    default to dc-ae-f32c32-sana-1.0 and Gemma-2-2B-IT from the Hugging Face cache.
    `overrides`: transformer options a checkpoint cannot carry, e.g. numerics or the 2K/4K PE settings.
    `kernels`: the eager PyTorch paths of the DiT and the DC-AE, or their fused Triton kernels ("auto": fused on
    CUDA; "eager" rounds after every element-wise op, as NVlabs' code does). `cuda_graphs`: SanaPipeline's.
    `quantize`: "w8a8" (paper §4, Table 5) or "fp8" runs the DiT blocks' GEMMs quantised (model/quantize.py).
    """
    root = Path(weights)
    if (root / "model_index.json").is_file():
        vae = vae or str(root / "vae")
        text_encoder = text_encoder or TextEncoderConfig(model=str(root))

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    transformer = load_transformer(weights, device=device, kernels=kernels, **overrides)
    transformer = transformer.to(transformer_dtype or _TORCH_DTYPES[transformer.config.dtype]).eval()
    transformer = quantize_transformer(transformer, quantize)  # after the cast: the scales stay fp32
    return SanaPipeline(transformer=transformer, vae=load_dc_ae(vae or "dc-ae-f32c32-sana-1.0", dtype=vae_dtype,
                                                                device=device, kernels=kernels),
                        text_encoder=TextEncoder(text_encoder or TextEncoderConfig(), device=device,
                                                 cuda_graphs=cuda_graphs),
                        device=device, cuda_graphs=cuda_graphs)
