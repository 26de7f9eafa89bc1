"""One generation of a peer model (sana_eval/bench/peer_models.py) as three phases: text encoding, denoising, decoding.

Each family is called the way its diffusers pipeline calls it (conditioning layout, CFG batch, learned-sigma
channels dropped); the scheduler update is a plain Euler step, since every scheduler step is elementwise work that
is negligible next to one denoiser forward.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from sana_eval.bench.clock import Clock, torch_dtype
from sana_eval.bench.peer_models import VAE_FACTOR, PeerSpec, PeerText
from sana_eval.bench.text_encoders import building, random_tokens

FLUX_GUIDANCE = 3.5                     # FluxPipeline default distilled guidance (dev)
CFG_SCALE = 4.5                         # any value: the CFG combination costs the same whatever the scale
_TIMESTEP_SCALE = {"flux": 1.0, "lumina": 1.0, "sd3": 1000.0, "pixart": 1000.0, "hunyuan": 1000.0, "unet": 1000.0}


@dataclass
class Encoded:
    hidden: torch.Tensor                # (B, T, D): last layer (T5, BERT) or penultimate (CLIP, Gemma) as pipelines use
    pooled: torch.Tensor | None         # (B, P): CLIP projected embedding
    mask: torch.Tensor                  # (B, T)


@functools.cache
def cached_text_encoder(text: PeerText, device: str, dtype: str) -> torch.nn.Module:
    """Text encoders are shared by several peers (T5-XXL is 4.8B): built once per process, on the device."""
    with building(torch.device(device), torch_dtype(dtype)):
        return text.build().eval()


def clear_text_encoders() -> None:
    cached_text_encoder.cache_clear()


def _encode(text: PeerText, model: torch.nn.Module, ids: torch.Tensor) -> Encoded:
    mask = torch.ones_like(ids)
    if text.family == "clip":
        out = model(input_ids=ids, output_hidden_states=True)
        return Encoded(out.hidden_states[-2], out.text_embeds, mask)
    if text.family == "gemma":
        return Encoded(model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2], None,
                       mask)
    return Encoded(model(input_ids=ids, attention_mask=mask).last_hidden_state, None, mask)


def _pack(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape                # FLUX patchifies 2x2 latent pixels into one 4·C token
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w // 4, c * 4)


def _unpack(x: torch.Tensor, side: int) -> torch.Tensor:
    b, _, c4 = x.shape
    return x.view(b, side // 2, side // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, side, side)


class PeerWorkload:
    """Random text encoders + denoiser + VAE of one peer on one device; `__call__` marks the three phases."""

    def __init__(self, spec: PeerSpec, resolution: int, batch: int, *, dtype: str, vae_dtype: str,
                 device: torch.device) -> None:
        if resolution % (2 * VAE_FACTOR):
            raise ValueError(f"resolution {resolution} is not a multiple of {2 * VAE_FACTOR} (f8 VAE, patch 2)")
        self.spec, self.resolution, self.batch, self.device = spec, resolution, batch, device
        self.dtype = torch_dtype(dtype)
        self.texts = [(spec.text_encoder(key), tokens) for key, tokens in spec.texts]
        self.encoders = [cached_text_encoder(text, str(device), dtype) for text, _ in self.texts]
        with building(device, self.dtype):
            self.denoiser = spec.build_denoiser(resolution).eval()
        with building(device, torch_dtype(vae_dtype)):
            self.vae = spec.vae.build().eval()
        self.prompt_ids = [random_tokens(t.vocab, batch, n, device, seed=i)[0] for i, (t, n) in enumerate(self.texts)]
        self.null_ids = [random_tokens(t.vocab, batch, n, device, seed=100 + i)[0]
                         for i, (t, n) in enumerate(self.texts)]
        gen = torch.Generator(device).manual_seed(0)
        self.side = resolution // VAE_FACTOR
        self.noise = torch.randn(batch, spec.latent_channels, self.side, self.side, device=device, generator=gen,
                                 dtype=self.dtype)
        self.rows = 2 * batch if spec.cfg else batch

    def _condition(self, ids: list[torch.Tensor]) -> list[Encoded]:
        return [_encode(text, model, i) for (text, _), model, i in zip(self.texts, self.encoders, ids)]

    def _inputs(self, enc: list[Encoded]) -> dict:
        """The denoiser's conditioning keyword arguments for one set of prompts, as the family's pipeline builds."""
        family, b, res = self.spec.family, enc[0].hidden.shape[0], self.resolution
        if family == "flux":
            clip, t5 = enc
            return {"encoder_hidden_states": t5.hidden, "pooled_projections": clip.pooled}
        if family == "sd3":
            clip_l, clip_g, t5 = enc
            clips = torch.cat([clip_l.hidden, clip_g.hidden], dim=-1)                       # (B, 77, 768+1280)
            clips = torch.nn.functional.pad(clips, (0, t5.hidden.shape[-1] - clips.shape[-1]))
            return {"encoder_hidden_states": torch.cat([clips, t5.hidden], dim=1),          # (B, 77+256, 4096)
                    "pooled_projections": torch.cat([clip_l.pooled, clip_g.pooled], dim=-1)}  # (B, 2048)
        if family == "pixart":
            (t5,) = enc
            return {"encoder_hidden_states": t5.hidden, "encoder_attention_mask": t5.mask}
        if family == "hunyuan":
            bert, mt5 = enc
            return {"encoder_hidden_states": bert.hidden, "text_embedding_mask": bert.mask,
                    "encoder_hidden_states_t5": mt5.hidden, "text_embedding_mask_t5": mt5.mask}
        if family == "unet":
            clip_l, clip_g = enc
            time_ids = torch.tensor([[res, res, 0, 0, res, res]], device=self.device, dtype=self.dtype).repeat(b, 1)
            return {"encoder_hidden_states": torch.cat([clip_l.hidden, clip_g.hidden], dim=-1),  # (B, 77, 2048)
                    "added_cond_kwargs": {"text_embeds": clip_g.pooled, "time_ids": time_ids}}
        (gemma,) = enc
        return {"encoder_hidden_states": gemma.hidden, "encoder_mask": gemma.mask}

    def _static(self) -> dict:
        """Inputs that depend on the image size only (positions, size conditions)."""
        family, rows, side = self.spec.family, self.rows, self.side
        config = self.denoiser.config
        if family == "flux":
            ids = torch.zeros(side // 2, side // 2, 3, device=self.device, dtype=self.dtype)
            ids[..., 1] += torch.arange(side // 2, device=self.device)[:, None]
            ids[..., 2] += torch.arange(side // 2, device=self.device)[None, :]
            tokens = dict(self.spec.texts)["t5-xxl"]
            static = {"img_ids": ids.reshape(-1, 3), "txt_ids": torch.zeros(tokens, 3, device=self.device,
                                                                           dtype=self.dtype)}
            if self.spec.guidance_embed:
                static["guidance"] = torch.full((rows,), FLUX_GUIDANCE, device=self.device, dtype=torch.float32)
            return static
        if family == "pixart":
            if not self.denoiser.use_additional_conditions:
                return {"added_cond_kwargs": {"resolution": None, "aspect_ratio": None}}
            size = torch.tensor([[self.resolution] * 2], device=self.device, dtype=self.dtype).repeat(rows, 1)
            return {"added_cond_kwargs": {"resolution": size, "aspect_ratio": size[:, :1] / size[:, 1:]}}
        if family == "hunyuan":
            from diffusers.models.embeddings import get_2d_rotary_pos_embed  # heavy, optional: peers only

            grid, base = side // config.patch_size, 512 // VAE_FACTOR // config.patch_size
            # HunyuanDiTPipeline's crop region of a square grid is the whole base grid
            rope = get_2d_rotary_pos_embed(config.hidden_size // config.num_attention_heads, ((0, 0), (base, base)),
                                           (grid, grid), device=self.device, output_type="pt")
            return {"image_rotary_emb": rope}
        if family == "lumina":
            from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina  # heavy, optional: peers only

            rope = get_2d_rotary_pos_embed_lumina(self.denoiser.head_dim, 384, 384).to(self.device)
            return {"image_rotary_emb": rope, "cross_attention_kwargs": {}}
        return {}

    def _forward(self, x: torch.Tensor, t: float, inputs: dict) -> torch.Tensor:
        rows = x.shape[0]
        timestep = torch.full((rows,), t * _TIMESTEP_SCALE[self.spec.family], device=self.device, dtype=self.dtype)
        out = self.denoiser(x, timestep=timestep, **inputs, return_dict=False)[0]
        return out if self.spec.family == "flux" else out[:, :self.spec.latent_channels]  # drop learned sigma

    @torch.no_grad()
    def __call__(self, clock: Clock, steps: int, decode_chunk: int) -> torch.Tensor:
        clock.mark()
        inputs = self._inputs(self._condition(self.prompt_ids))
        if self.spec.cfg:              # pipelines encode the negative prompt on every call; rows are [uncond; cond]
            null = self._inputs(self._condition(self.null_ids))
            inputs = _cat_inputs(null, inputs)
        inputs.update(self._static())
        clock.mark()
        x = _pack(self.noise) if self.spec.family == "flux" else self.noise
        for i in range(steps):
            t = 1.0 - i / steps
            rows = torch.cat([x, x]) if self.spec.cfg else x
            velocity = self._forward(rows, t, inputs)
            if self.spec.cfg:
                uncond, cond = velocity.chunk(2)
                velocity = uncond + CFG_SCALE * (cond - uncond)
            x = x - velocity / steps
        latents = _unpack(x, self.side) if self.spec.family == "flux" else x          # (B, C, h, w)
        clock.mark()
        vae = self.vae
        vae_dtype = next(vae.parameters()).dtype
        shift = vae.config.shift_factor or 0.0
        images = [vae.decode((chunk / vae.config.scaling_factor + shift).to(vae_dtype)).sample
                  for chunk in latents.split(decode_chunk)]
        clock.mark()
        return torch.cat(images)                                                       # (B, 3, H, W)


def _cat_inputs(a: dict, b: dict) -> dict:
    """Row-wise concatenation of two conditioning dicts (nested dicts of tensors)."""
    return {k: _cat_inputs(v, b[k]) if isinstance(v, dict) else torch.cat([v, b[k]]) for k, v in a.items()}
