"""The peer models of paper Tables 7 and 14 as data: published diffusers configs of each denoiser, its text
encoders and its VAE, the step count and guidance each is run with, and a `tiny` shrink for CPU tests.

Speed does not depend on weight values, so the peers are built from these configs with random weights (diffusers
and transformers classes: the peer implementation itself is what is timed). Sources, transcribed as facts from
each repo's `*/config.json` on the Hugging Face hub and the diffusers pipeline defaults (diffusers 0.42):
- FLUX.1-dev / FLUX.1-schnell: black-forest-labs/FLUX.1-{dev,schnell} transformer (19 double + 38 single blocks,
  24 x 128 heads, joint dim 4096, pooled 768, guidance_embeds True / False), CLIP-L + T5-XXL, 16-channel f8 VAE.
- SD3-medium: stabilityai/stable-diffusion-3-medium-diffusers (24 layers, 24 x 64, caption projection 1536),
  CLIP-L + CLIP-G + T5-XXL (256 tokens, the pipeline default), 16-channel f8 VAE.
- PixArt-Σ: PixArt-alpha/PixArt-Sigma-XL-2-1024-MS; PixArt-α: PixArt-alpha/PixArt-XL-2-1024-MS (28 layers,
  16 x 72, T5-XXL 300 / 120 tokens, SDXL / SD VAE).
- Hunyuan-DiT: Tencent-Hunyuan/HunyuanDiT-v1.2-Diffusers (40 layers, 1408 wide, bilingual CLIP (BERT) 77 tokens
  + mT5-XL 256 tokens, SDXL VAE).
- SDXL: stabilityai/stable-diffusion-xl-base-1.0 UNet; Playground v2.5: playgroundai/playground-v2.5-1024px-aesthetic
  (the same UNet config), CLIP-L + CLIP-G 77 tokens, SDXL VAE.
- Lumina-Next: Alpha-VLLM/Lumina-Next-SFT-diffusers (24 layers, 2304 wide, 32 heads / 8 KV heads), Gemma-2B 256
  tokens, SDXL VAE.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from sana_eval.bench.text_encoders import TEXT_ENCODERS, TextEncoderSpec, building

Family = Literal["flux", "sd3", "pixart", "hunyuan", "unet", "lumina"]
Setting = int | float | bool | str | tuple | None


@dataclass(frozen=True)
class PeerText:
    """A peer's text encoder: a T5/Gemma spec (bench_text), or a CLIP / BERT config as keyword arguments."""

    family: Literal["t5", "gemma", "clip", "bert"]
    spec: TextEncoderSpec | None = None
    config: tuple[tuple[str, Setting], ...] = ()

    @property
    def vocab(self) -> int:
        return self.spec.vocab if self.spec else dict(self.config)["vocab_size"]

    def build(self) -> torch.nn.Module:
        # heavy: transformers loads only when a peer's text encoder is built
        from transformers import BertConfig, BertModel, CLIPTextConfig, CLIPTextModelWithProjection

        if self.spec:
            return self.spec.model_class()(self.spec.config())
        if self.family == "clip":
            return CLIPTextModelWithProjection(CLIPTextConfig(**dict(self.config)))
        return BertModel(BertConfig(**dict(self.config)), add_pooling_layer=False)


def _clip(hidden: int, ffn: int, layers: int, heads: int, projection: int, act: str) -> PeerText:
    return PeerText("clip", config=(("vocab_size", 49408), ("hidden_size", hidden), ("intermediate_size", ffn),
                                    ("num_hidden_layers", layers), ("num_attention_heads", heads),
                                    ("projection_dim", projection), ("max_position_embeddings", 77),
                                    ("hidden_act", act)))


# openai/clip-vit-large-patch14, laion/CLIP-ViT-bigG-14 (SDXL text_encoder_2), Hunyuan's bilingual CLIP text
# tower (a BERT-large, text_encoder/config.json), mT5-XL encoder (text_encoder_2), google/t5-v1_1-xxl, gemma-2b.
TEXTS: dict[str, PeerText] = {
    "clip-l": _clip(768, 3072, 12, 12, 768, "quick_gelu"),
    "clip-g": _clip(1280, 5120, 32, 20, 1280, "gelu"),
    "bert-hunyuan": PeerText("bert", config=(("vocab_size", 47020), ("hidden_size", 1024),
                                             ("intermediate_size", 4096), ("num_hidden_layers", 24),
                                             ("num_attention_heads", 16), ("max_position_embeddings", 512))),
    "mt5-xl": PeerText("t5", TextEncoderSpec("t5", 2048, 5120, 24, 32, 32, 64, 250112, "google/mt5-xl")),
    "t5-xxl": PeerText("t5", TEXT_ENCODERS["t5-xxl"]),
    "gemma-2b": PeerText("gemma", TEXT_ENCODERS["gemma-2b"]),
}
TINY_TEXTS: dict[str, PeerText] = {
    "clip-l": _clip(16, 32, 1, 2, 16, "quick_gelu"),
    "clip-g": _clip(16, 32, 1, 2, 16, "gelu"),
    "bert-hunyuan": PeerText("bert", config=(("vocab_size", 100), ("hidden_size", 16), ("intermediate_size", 32),
                                             ("num_hidden_layers", 1), ("num_attention_heads", 2))),
    "mt5-xl": PeerText("t5", TextEncoderSpec("t5", 32, 64, 1, 2, 2, 16, 100, "tiny")),
    "t5-xxl": PeerText("t5", TextEncoderSpec("t5", 32, 64, 1, 2, 2, 16, 100, "tiny")),
    "gemma-2b": PeerText("gemma", TextEncoderSpec("gemma", 32, 64, 1, 2, 1, 16, 100, "tiny")),
}


@dataclass(frozen=True)
class VaeSpec:
    """AutoencoderKL (f8: four blocks, three downsamplings); only the decoder runs."""

    latent_channels: int
    scaling_factor: float
    shift_factor: float | None
    quant_conv: bool
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32

    def build(self) -> torch.nn.Module:
        from diffusers import AutoencoderKL  # heavy, optional: only a built peer needs diffusers

        n = len(self.block_out_channels)
        return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=self.latent_channels,
                             down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                             block_out_channels=self.block_out_channels, layers_per_block=self.layers_per_block,
                             norm_num_groups=self.norm_num_groups, scaling_factor=self.scaling_factor,
                             shift_factor=self.shift_factor, use_quant_conv=self.quant_conv,
                             use_post_quant_conv=self.quant_conv)

    def tiny(self) -> VaeSpec:
        return replace(self, block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4)


VAE_FACTOR = 8
VAES = {"flux": VaeSpec(16, 0.3611, 0.1159, False), "sd3": VaeSpec(16, 1.5305, 0.0609, False),
        "sdxl": VaeSpec(4, 0.13025, None, True), "sd": VaeSpec(4, 0.18215, None, True)}


@dataclass(frozen=True)
class PeerSpec:
    name: str
    repo: str                                   # where the denoiser config is transcribed from
    family: Family
    denoiser: tuple[tuple[str, Setting], ...]   # diffusers constructor arguments
    texts: tuple[tuple[str, int], ...]          # (TEXTS key, tokens per prompt)
    vae: VaeSpec
    steps: int                                  # default sampling steps (see STEP_CHOICES)
    cfg: bool                                   # classifier-free guidance: the denoiser sees 2·batch rows
    guidance_embed: bool = False                # FLUX-dev: distilled guidance as an input, no CFG batch
    paper_params_b: float | None = None         # Table 7 "Params (B)"
    tiny: bool = False

    @property
    def latent_channels(self) -> int:
        return self.vae.latent_channels

    def text_encoder(self, key: str) -> PeerText:
        return (TINY_TEXTS if self.tiny else TEXTS)[key]

    def denoiser_kwargs(self, resolution: int) -> dict[str, Setting]:
        kwargs = dict(self.denoiser)
        if self.family == "pixart":  # the 512 / 1024 releases differ only in these two fields
            kwargs.update(sample_size=resolution // VAE_FACTOR, interpolation_scale=max(resolution // 512, 1))
        return kwargs

    def build_denoiser(self, resolution: int) -> torch.nn.Module:
        import diffusers  # heavy, optional: only a built peer needs diffusers

        cls = getattr(diffusers, DENOISERS[self.family])
        return cls(**self.denoiser_kwargs(resolution))


DENOISERS: dict[Family, str] = {"flux": "FluxTransformer2DModel", "sd3": "SD3Transformer2DModel",
                                "pixart": "PixArtTransformer2DModel", "hunyuan": "HunyuanDiT2DModel",
                                "unet": "UNet2DConditionModel", "lumina": "LuminaNextDiT2DModel"}

_FLUX = (("patch_size", 1), ("in_channels", 64), ("num_layers", 19), ("num_single_layers", 38),
         ("attention_head_dim", 128), ("num_attention_heads", 24), ("joint_attention_dim", 4096),
         ("pooled_projection_dim", 768), ("axes_dims_rope", (16, 56, 56)))
_PIXART = (("num_attention_heads", 16), ("attention_head_dim", 72), ("in_channels", 4), ("out_channels", 8),
           ("num_layers", 28), ("cross_attention_dim", 1152), ("caption_channels", 4096), ("patch_size", 2),
           ("norm_type", "ada_norm_single"), ("norm_elementwise_affine", False), ("norm_eps", 1e-6),
           ("attention_bias", True), ("activation_fn", "gelu-approximate"), ("num_embeds_ada_norm", 1000))
_SDXL_UNET = (("sample_size", 128), ("in_channels", 4), ("out_channels", 4),
              ("down_block_types", ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")),
              ("up_block_types", ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")),
              ("block_out_channels", (320, 640, 1280)), ("layers_per_block", 2), ("attention_head_dim", (5, 10, 20)),
              ("transformer_layers_per_block", (1, 2, 10)), ("cross_attention_dim", 2048),
              ("use_linear_projection", True), ("addition_embed_type", "text_time"), ("addition_time_embed_dim", 256),
              ("projection_class_embeddings_input_dim", 2816))
_T5_300, _CLIPS = (("t5-xxl", 300),), (("clip-l", 77), ("clip-g", 77))

# Steps: each model's own default (diffusers pipeline default or model card), since Table 7's "20 steps" cannot
# hold for the peers (docs/tables.md §2). FLUX-dev: 50, not diffusers' 28, because Table 7's 23.0 s vs FLUX-schnell's
# 2.1 s at 4 steps on the same network implies ~50 steps (both ~0.45 s per step on an A100).
STEP_CHOICES = {
    "flux-dev": "50: model card example; Table 7's 23.0 s / FLUX-schnell's 2.1 s at 4 steps implies ~50",
    "flux-schnell": "4: model card (timestep-distilled)",
    "sd3-medium": "28: StableDiffusion3Pipeline default and model card",
    "pixart-sigma": "20: PixArtSigmaPipeline default", "pixart-alpha": "20: PixArtAlphaPipeline default",
    "hunyuan-dit": "50: HunyuanDiTPipeline default", "sdxl": "50: StableDiffusionXLPipeline default",
    "playground-v2.5": "50: model card example", "lumina-next": "30: LuminaText2ImgPipeline default",
}

PEERS: dict[str, PeerSpec] = {s.name: s for s in (
    PeerSpec("flux-dev", "black-forest-labs/FLUX.1-dev", "flux", (*_FLUX, ("guidance_embeds", True)),
             (("clip-l", 77), ("t5-xxl", 512)), VAES["flux"], 50, cfg=False, guidance_embed=True,
             paper_params_b=12.0),
    # Schnell's model card runs T5 at 256 tokens (max_sequence_length=256).
    PeerSpec("flux-schnell", "black-forest-labs/FLUX.1-schnell", "flux", (*_FLUX, ("guidance_embeds", False)),
             (("clip-l", 77), ("t5-xxl", 256)), VAES["flux"], 4, cfg=False, paper_params_b=12.0),
    PeerSpec("sd3-medium", "stabilityai/stable-diffusion-3-medium-diffusers", "sd3",
             (("sample_size", 128), ("patch_size", 2), ("in_channels", 16), ("out_channels", 16), ("num_layers", 24),
              ("attention_head_dim", 64), ("num_attention_heads", 24), ("joint_attention_dim", 4096),
              ("caption_projection_dim", 1536), ("pooled_projection_dim", 2048), ("pos_embed_max_size", 192)),
             (*_CLIPS, ("t5-xxl", 256)), VAES["sd3"], 28, cfg=True, paper_params_b=2.0),
    PeerSpec("pixart-sigma", "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", "pixart",
             (*_PIXART, ("use_additional_conditions", False)), _T5_300, VAES["sdxl"], 20, cfg=True,
             paper_params_b=0.6),
    PeerSpec("pixart-alpha", "PixArt-alpha/PixArt-XL-2-1024-MS", "pixart", _PIXART, (("t5-xxl", 120),), VAES["sd"],
             20, cfg=True, paper_params_b=0.6),
    PeerSpec("hunyuan-dit", "Tencent-Hunyuan/HunyuanDiT-v1.2-Diffusers", "hunyuan",
             (("num_attention_heads", 16), ("attention_head_dim", 88), ("in_channels", 4), ("patch_size", 2),
              ("activation_fn", "gelu-approximate"), ("sample_size", 128), ("hidden_size", 1408), ("num_layers", 40),
              ("mlp_ratio", 4.3637), ("learn_sigma", True), ("cross_attention_dim", 1024), ("norm_type", "layer_norm"),
              ("cross_attention_dim_t5", 2048), ("pooled_projection_dim", 1024), ("text_len", 77),
              ("text_len_t5", 256), ("use_style_cond_and_image_meta_size", False)),
             (("bert-hunyuan", 77), ("mt5-xl", 256)), VAES["sdxl"], 50, cfg=True, paper_params_b=1.5),
    PeerSpec("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "unet", _SDXL_UNET, _CLIPS, VAES["sdxl"], 50,
             cfg=True, paper_params_b=2.6),
    PeerSpec("playground-v2.5", "playgroundai/playground-v2.5-1024px-aesthetic", "unet", _SDXL_UNET, _CLIPS,
             VAES["sdxl"], 50, cfg=True, paper_params_b=2.6),
    PeerSpec("lumina-next", "Alpha-VLLM/Lumina-Next-SFT-diffusers", "lumina",
             (("sample_size", 128), ("patch_size", 2), ("in_channels", 4), ("hidden_size", 2304), ("num_layers", 24),
              ("num_attention_heads", 32), ("num_kv_heads", 8), ("multiple_of", 256), ("norm_eps", 1e-5),
              ("learn_sigma", True), ("qk_norm", True), ("cross_attention_dim", 2048), ("scaling_factor", 1.0)),
             (("gemma-2b", 256),), VAES["sdxl"], 30, cfg=True, paper_params_b=2.0),
)}

# Paper row labels (Tables 7 and 14) and Hugging Face repo ids -> PEERS keys.
ALIASES = {"flux-dev": "flux-dev", "flux-schnell": "flux-schnell", "sd3": "sd3-medium", "sd3-medium": "sd3-medium",
           "pixart-σ": "pixart-sigma", "pixart-α": "pixart-alpha", "hunyuandit": "hunyuan-dit",
           "hunyuan-dit": "hunyuan-dit", "sdxl": "sdxl", "playgroundv2.5": "playground-v2.5",
           "lumina-next": "lumina-next", "pixart-alpha/pixart-sigma-xl-2-512-ms": "pixart-sigma",
           **{s.repo.lower(): s.name for s in PEERS.values()}}

_TINY_DENOISERS: dict[Family, dict[str, Setting]] = {
    "flux": dict(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                 joint_attention_dim=32, pooled_projection_dim=16, axes_dims_rope=(4, 6, 6)),
    "sd3": dict(sample_size=8, num_layers=1, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=16),
    "pixart": dict(num_attention_heads=2, attention_head_dim=8, num_layers=1, cross_attention_dim=16,
                   caption_channels=32),
    "hunyuan": dict(num_attention_heads=2, attention_head_dim=16, hidden_size=32, num_layers=2, mlp_ratio=2.0,
                    sample_size=8, cross_attention_dim=16, cross_attention_dim_t5=32, pooled_projection_dim=16),
    "unet": dict(sample_size=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(16, 32), layers_per_block=1,
                 attention_head_dim=(2, 4), transformer_layers_per_block=(1, 1), cross_attention_dim=32,
                 norm_num_groups=8, addition_time_embed_dim=8, projection_class_embeddings_input_dim=64),
    "lumina": dict(sample_size=8, hidden_size=32, num_layers=1, num_attention_heads=4, num_kv_heads=2, multiple_of=16,
                   cross_attention_dim=32),
}


def peer_name(name: str) -> str:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in PEERS:
        raise ValueError(f"unknown peer model {name!r}; known: {', '.join(PEERS)}")
    return key


def get_peer(name: str | PeerSpec, tiny: bool = False) -> PeerSpec:
    """A published peer config, or (`tiny`) the same family shrunk to a few thousand parameters for CPU tests."""
    spec = name if isinstance(name, PeerSpec) else PEERS[peer_name(name)]
    if not tiny or spec.tiny:
        return spec
    return replace(spec, denoiser=tuple({**dict(spec.denoiser), **_TINY_DENOISERS[spec.family]}.items()),
                   vae=spec.vae.tiny(), tiny=True)


def count_peer_parameters(name: str | PeerSpec, resolution: int = 1024) -> int:
    """Denoiser parameters of the published config (Table 7 "Params"), counted on the meta device."""
    with building(torch.device("meta"), torch.float32):
        model = get_peer(name).build_denoiser(resolution)
    return sum(p.numel() for p in model.parameters())
