"""Typed configurations of the Sana transformer, and presets named after the released checkpoints."""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Literal

TimestepRounding = Literal["floor", "floor_model_dtype", "none"]
MaskMode = Literal["bias", "exact"]
Fp16Clamp = Literal["always", "fp16_input"]
RMSNormCast = Literal["nvlabs", "diffusers"]
SelfAttention = Literal["linear", "softmax"]
FFN = Literal["mix", "mlp"]
Kernels = Literal["auto", "eager", "triton"]


@dataclass(frozen=True)
class TransformerConfig:
    """Linear DiT hyper-parameters (paper Table 6, docs/model.md §1.1–1.2) and numerics options (§1.11)."""

    depth: int
    hidden_size: int
    cross_heads: int                    # cross-attention heads; self-attention heads = hidden_size // linear_head_dim
    linear_head_dim: int = 32
    mlp_ratio: float = 2.5              # FFN hidden = int(mlp_ratio * hidden_size)
    in_channels: int = 32               # DC-AE f32c32 latent channels; output has the same count
    patch_size: int = 1
    caption_channels: int = 2304        # Gemma-2-2B hidden size
    model_max_length: int = 300
    sample_size: int = 32               # training latent side (image px // 32): the PE base size at 2K/4K
    use_pe: bool = False                # NoPE at 512/1024, 2-D sin-cos at 2K/4K
    pe_interpolation: float = 1.0
    qk_norm: bool = False               # SANA-1.5: RMSNorm on q/k of the linear self-attention
    cross_norm: bool = False            # SANA-1.5: RMSNorm on q/k of the cross-attention
    # Block-design ablations of paper Table 8 (model/ablation_blocks.py); the released models use the defaults.
    self_attention: SelfAttention = "linear"  # "softmax": DiT/PixArt full attention, heads of linear_head_dim
    ffn: FFN = "mix"                    # "mlp": DiT/PixArt Linear-GELU(tanh)-Linear, hidden int(mlp_ratio * D)
    # Paper §2.2 kernel fusion: "triton" runs the fused linear attention (model/kernels/), "eager" the PyTorch
    # reference path; "auto" takes Triton on CUDA when it is installed. The weights are the same either way.
    kernels: Kernels = "auto"
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"  # the checkpoint's inference precision
    flow_shift: float = 3.0             # the sampler shift of the checkpoint's NVlabs config
    # Numerics where NVlabs and diffusers differ (docs/model.md §1.11); NVlabs behaviour by default.
    linear_attn_eps: float = 1e-8       # diffusers: 1e-15
    timestep_rounding: TimestepRounding = "floor"  # "floor_model_dtype": NVlabs 168cf92; "none": diffusers
    cross_attn_mask: MaskMode = "bias"  # additive -10000 (NVlabs SDPA path, diffusers); "exact": xformers path
    fp16_clamp: Fp16Clamp = "always"    # clamp linear-attention output to ±65504; diffusers: fp16 inputs only
    rmsnorm_cast: RMSNormCast = "nvlabs"  # weight applied in fp32 then cast; diffusers casts first
    self_qk_norm_eps: float = 1e-5
    cross_qk_norm_eps: float = 1e-6     # diffusers: 1e-5

    def __post_init__(self) -> None:
        if self.hidden_size % self.linear_head_dim:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of linear_head_dim "
                             f"{self.linear_head_dim}")
        if self.hidden_size % self.cross_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of cross_heads {self.cross_heads}")
        for name, allowed in (("self_attention", SelfAttention), ("ffn", FFN), ("kernels", Kernels)):
            if getattr(self, name) not in allowed.__args__:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {', '.join(allowed.__args__)}")
        if self.qk_norm and self.self_attention != "linear":
            raise ValueError("qk_norm (SANA-1.5) is defined for the linear self-attention only")

    @property
    def self_heads(self) -> int:
        return self.hidden_size // self.linear_head_dim

    @property
    def ffn_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def out_channels(self) -> int:
        return self.in_channels

    def replace(self, **overrides: object) -> TransformerConfig:
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown transformer option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **overrides)


# Numerics that make our model compute what diffusers' SanaTransformer2DModel computes.
DIFFUSERS_NUMERICS = dict(linear_attn_eps=1e-15, timestep_rounding="none", cross_attn_mask="bias",
                          fp16_clamp="fp16_input", rmsnorm_cast="diffusers", cross_qk_norm_eps=1e-5)

_SANA_06B = TransformerConfig(depth=28, hidden_size=1152, cross_heads=16)
_SANA_16B = TransformerConfig(depth=20, hidden_size=2240, cross_heads=20)
_SANA15 = dict(qk_norm=True, cross_norm=True, dtype="bfloat16")

# Named after the released checkpoints (docs/model.md §1.2); paper Table 6 holds the 0.6B/1.6B architectures.
PRESETS: dict[str, TransformerConfig] = {
    # 512 px: flow_shift 3.0 follows the NVlabs configs as revised after the paper (600M: January 2025, 1600M: March
    # 2025); they shipped 1.0 first, the paper-time revision (docs/protocols.md §9).
    "Sana_600M_512px": _SANA_06B.replace(sample_size=16),
    "Sana_600M_1024px": _SANA_06B.replace(sample_size=32, flow_shift=4.0),
    "Sana_1600M_512px": _SANA_16B.replace(sample_size=16),
    "Sana_1600M_1024px": _SANA_16B.replace(sample_size=32),
    "Sana_1600M_1024px_BF16": _SANA_16B.replace(sample_size=32, dtype="bfloat16"),
    "Sana_1600M_2Kpx_BF16": _SANA_16B.replace(sample_size=64, dtype="bfloat16", use_pe=True),
    "Sana_1600M_4Kpx_BF16": _SANA_16B.replace(sample_size=128, dtype="bfloat16", use_pe=True,
                                              pe_interpolation=2.0, flow_shift=6.0),
    "SANA1.5_1.6B_1024px": _SANA_16B.replace(**_SANA15),
    "SANA1.5_4.8B_1024px": _SANA_16B.replace(depth=60, **_SANA15),
    # Tiny models for tests and the smoke run: every code path, a few thousand parameters.
    "tiny": TransformerConfig(depth=2, hidden_size=64, cross_heads=2, caption_channels=48, sample_size=8,
                              dtype="float32"),
    "tiny-pe": TransformerConfig(depth=2, hidden_size=64, cross_heads=2, caption_channels=48, sample_size=8,
                                 dtype="float32", use_pe=True, pe_interpolation=2.0),
    "tiny-qknorm": TransformerConfig(depth=2, hidden_size=64, cross_heads=2, caption_channels=48, sample_size=8,
                                     dtype="float32", qk_norm=True, cross_norm=True),
}
# The released .pth files of these repos carry a _MultiLing suffix; the architecture is the same.
ALIASES = {
    "Sana_600M_512px_MultiLing": "Sana_600M_512px",
    "Sana_600M_1024px_MultiLing": "Sana_600M_1024px",
    "Sana_1600M_512px_MultiLing": "Sana_1600M_512px",
    "Sana_1600M_1024px_MultiLing": "Sana_1600M_1024px",
}

def get_preset(name: str) -> TransformerConfig:
    key = ALIASES.get(name, name)
    if key not in PRESETS:
        close = difflib.get_close_matches(name, [*PRESETS, *ALIASES], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(PRESETS)}"
        raise KeyError(f"unknown preset {name!r}{hint}")
    return PRESETS[key]
