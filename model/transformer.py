"""Sana's Linear DiT (paper §2.2, Fig. 5; docs/model.md §1): AdaLN-single blocks of linear self-attention,
cross-attention to the Gemma-2 caption, and Mix-FFN. Module names follow the NVlabs checkpoints, so their
state dicts load without renaming."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.ablation_blocks import MlpFFN, SoftmaxSelfAttention
from model.config import TransformerConfig, get_preset
from model.kernel_choice import use_triton
from model.linear_attention import FP16_MAX, linear_attention
from model.quantize import QuantizedLinear, QuantizedRows

# Triton ships with torch's CUDA builds; without it use_triton() is False and only the eager code runs.
try:
    from model.kernels.block_ops import gated_residual, modulated_layer_norm
    from model.kernels.mix_ffn import dwconv_glu
except ImportError:
    dwconv_glu = gated_residual = modulated_layer_norm = None

TIMESTEP_FREQUENCY_DIM = 256
MASK_BIAS = -10000.0
NORM_EPS = 1e-6                     # the blocks' and final layer's LayerNorm (docs/model.md §1.4)


class RMSNorm(nn.Module):
    """y = w ⊙ x / sqrt(mean(x²) + eps), statistics in fp32; `cast` picks where the weight is applied."""

    def __init__(self, dim: int, eps: float, cast: str = "nvlabs") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.cast = cast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        if self.cast == "nvlabs":
            return (normed * self.weight).to(x.dtype)
        # diffusers: cast to a half-precision weight's dtype before the multiply, keep the promoted dtype after.
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            normed = normed.to(self.weight.dtype)
        return normed * self.weight


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def timestep_frequencies(t: torch.Tensor, dim: int = TIMESTEP_FREQUENCY_DIM) -> torch.Tensor:
    """Sinusoidal timestep features, cosine half first (docs/model.md §1.3 step 4); computed in fp32."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_pos_embed(dim: int, height: int, width: int, base_size: int, interpolation: float,
                     device: torch.device | None = None) -> torch.Tensor:
    """2-D sin-cos table for the 2K/4K models (PixArt style, docs/model.md §1.9): (1, H·W, dim) in fp32.

    The first dim/2 channels encode the column, the last dim/2 the row; positions are scaled to the training
    grid (base_size) and divided by the PE interpolation factor.
    """
    rows = torch.arange(height, dtype=torch.float32, device=device) / (height / base_size) / interpolation
    cols = torch.arange(width, dtype=torch.float32, device=device) / (width / base_size) / interpolation
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64, device=device) / (dim / 4))

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = torch.outer(pos.double(), omega)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)

    grid_r, grid_c = torch.meshgrid(rows, cols, indexing="ij")
    table = torch.cat([encode(grid_c.reshape(-1)), encode(grid_r.reshape(-1))], dim=-1)
    return table.float()[None]


class TimestepEmbedder(nn.Module):
    """t → 256-d sinusoid → Linear → SiLU → Linear (docs/model.md §1.3 step 4)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIMESTEP_FREQUENCY_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.mlp(timestep_frequencies(t).to(dtype))


class CaptionProjection(nn.Module):
    """Gemma-2 features → D: Linear → GELU(tanh) → Linear (docs/model.md §1.3 step 6)."""

    def __init__(self, caption_channels: int, hidden: int) -> None:
        super().__init__()
        self.y_proj = nn.Module()
        self.y_proj.fc1 = nn.Linear(caption_channels, hidden)
        self.y_proj.fc2 = nn.Linear(hidden, hidden)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.y_proj.fc2(F.gelu(self.y_proj.fc1(y), approximate="tanh"))


class LinearSelfAttention(nn.Module):
    """LiteLA: ReLU linear attention over all image tokens, heads of 32 channels (docs/model.md §1.5)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.heads = cfg.self_heads
        self.eps = cfg.linear_attn_eps
        self.clamp_always = cfg.fp16_clamp == "always"
        self.kernels = cfg.kernels
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d)
        if cfg.qk_norm:  # SANA-1.5: across all heads, before the ReLU
            self.q_norm = RMSNorm(d, cfg.self_qk_norm_eps, cfg.rmsnorm_cast)
            self.k_norm = RMSNorm(d, cfg.self_qk_norm_eps, cfg.rmsnorm_cast)

    def forward(self, x: torch.Tensor, perturbed_rows: int = 0) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)                    # (B, N, D) each
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        keep = x.shape[0] - perturbed_rows
        out = linear_attention(q[:keep], k[:keep], v[:keep], self.heads, self.eps, x.dtype, self.kernels)
        if perturbed_rows:  # PAG's perturbed branch: identity attention, each token keeps its own value
            out = torch.cat([out, v[keep:]])
        out = self.proj(out)
        if self.clamp_always or x.dtype == torch.float16:
            out = out.clamp(-FP16_MAX, FP16_MAX)
        return out


class CrossAttention(nn.Module):
    """Softmax attention from image tokens to the caption tokens, with the caption padding mask (§1.6)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.heads = cfg.cross_heads
        self.q_linear = nn.Linear(d, d)
        self.kv_linear = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(d, d)
        if cfg.cross_norm:
            self.q_norm = RMSNorm(d, cfg.cross_qk_norm_eps, cfg.rmsnorm_cast)
            self.k_norm = RMSNorm(d, cfg.cross_qk_norm_eps, cfg.rmsnorm_cast)

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q = self.q_linear(x)
        k, v = self.kv_linear(y).chunk(2, dim=-1)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.reshape(B, N, self.heads, -1).transpose(1, 2)        # (B, h, N, hd)
        k, v = (z.reshape(B, y.shape[1], self.heads, -1).transpose(1, 2) for z in (k, v))  # (B, h, L, hd)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(B, N, D).to(q.dtype))


def pointwise(conv: nn.Module, x: torch.Tensor | QuantizedRows, activation: str = "none") -> torch.Tensor:
    """act(1×1 conv) of tokens (B, N, C) as a GEMM; a quantised replacement (model/quantize.py) takes tokens or the
    QuantizedRows of its producer, and applies the activation in its GEMM's epilogue."""
    if isinstance(conv, nn.Conv2d):
        y = F.linear(x, conv.weight.flatten(1), conv.bias)
        return F.silu(y) if activation == "silu" else y
    return conv(x, activation)


class MixFFN(nn.Module):
    """GLUMBConv: 1×1 conv + SiLU → 3×3 depth-wise conv → GLU gate → 1×1 conv
    (paper §2.2, docs/model.md §1.7)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d, f = cfg.hidden_size, cfg.ffn_hidden
        self.inverted_conv = nn.ModuleDict({"conv": nn.Conv2d(d, 2 * f, 1)})
        self.depth_conv = nn.ModuleDict({"conv": nn.Conv2d(2 * f, 2 * f, 3, padding=1, groups=2 * f)})
        self.point_conv = nn.ModuleDict({"conv": nn.Conv2d(f, d, 1, bias=False)})
        self.kernels = cfg.kernels

    def forward(self, x: torch.Tensor | QuantizedRows, hw: tuple[int, int]) -> torch.Tensor:  # (B, N, D)
        if isinstance(x, QuantizedRows) or use_triton(self.kernels, x):
            # The 1×1 convs are GEMMs on the token layout; the middle is one fused kernel. A quantised inverted conv
            # applies the SiLU in its GEMM's epilogue; cuBLAS's fp16 GEMM has no SiLU, so the middle kernel does.
            activated = isinstance(self.inverted_conv["conv"], QuantizedLinear)
            h = pointwise(self.inverted_conv["conv"], x, "silu" if activated else "none")
            h = dwconv_glu(h, self.depth_conv["conv"].weight, self.depth_conv["conv"].bias, hw, activated=activated)
            return pointwise(self.point_conv["conv"], h)                                        # (B, N, D)
        # A channels-last view, not an NCHW copy: the 1×1 convs then run as plain GEMMs on the token layout.
        x = x.unflatten(1, hw).permute(0, 3, 1, 2)                 # (B, D, H, W)
        x = self.depth_conv["conv"](F.silu(self.inverted_conv["conv"](x)))
        value, gate = x.chunk(2, dim=1)
        return self.point_conv["conv"](value * F.silu(gate)).flatten(2).transpose(1, 2)  # (B, N, D)


def modulated_input(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
                    consumer: nn.Module | None) -> torch.Tensor | QuantizedRows:
    """The fused modulated LayerNorm of a block branch's input; ahead of an 8-bit GEMM `consumer` (paper §4) the norm
    kernel quantises its rows too (docs/model.md §6.1)."""
    quantize = consumer.quantizes_in_producer(x) if isinstance(consumer, QuantizedLinear) else None
    out = modulated_layer_norm(x, shift, scale, NORM_EPS, quantize)
    return QuantizedRows(*out, x.shape, x.dtype) if quantize else out


class SanaBlock(nn.Module):
    """One Linear DiT block: modulated linear self-attention, ungated cross-attention, modulated Mix-FFN (§1.4);
    `self_attention`/`ffn` swap in the DiT/PixArt parts of the Table 8 ablation."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.kernels = cfg.kernels
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=NORM_EPS)
        self.attn = LinearSelfAttention(cfg) if cfg.self_attention == "linear" else SoftmaxSelfAttention(cfg)
        self.cross_attn = CrossAttention(cfg)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=NORM_EPS)
        self.mlp = MixFFN(cfg) if cfg.ffn == "mix" else MlpFFN(cfg)
        self.scale_shift_table = nn.Parameter(torch.randn(6, d) / d**0.5)

    def forward(self, x: torch.Tensor, y: torch.Tensor, t0: torch.Tensor, mask: torch.Tensor,
                hw: tuple[int, int], perturbed_rows: int = 0) -> torch.Tensor:
        B, N, D = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + t0.reshape(B, 6, D)).chunk(6, dim=1)  # (B, 1, D) each
        if use_triton(self.kernels, x):  # the same sums in two fused passes (model/kernels/block_ops.py)
            h = modulated_input(x, shift_msa, scale_msa, getattr(self.attn, "qkv", None))
            x = gated_residual(x, gate_msa, self.attn(h, perturbed_rows))
            x = x + self.cross_attn(x, y, mask)
            h = modulated_input(x, shift_mlp, scale_mlp, self.mlp.inverted_conv["conv"]
                                if isinstance(self.mlp, MixFFN) else None)
            return gated_residual(x, gate_mlp, self.mlp(h, hw))
        h = modulate(self.norm1(x), shift_msa, scale_msa).to(x.dtype)
        x = x + gate_msa * self.attn(h, perturbed_rows)
        x = x + self.cross_attn(x, y, mask)
        h = modulate(self.norm2(x), shift_mlp, scale_mlp).to(x.dtype)
        return x + gate_mlp * self.mlp(h, hw)


class FinalLayer(nn.Module):
    """LayerNorm modulated by t_emb (without SiLU/t_block), then Linear(D → p²·C) (§1.3 step 9)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.norm_final = nn.LayerNorm(d, elementwise_affine=False, eps=NORM_EPS)
        self.linear = nn.Linear(d, cfg.patch_size**2 * cfg.out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, d) / d**0.5)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None] + t_emb[:, None]).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale).to(x.dtype))


class SanaTransformer(nn.Module):
    """Linear DiT: velocity v(x_t, t, caption) for the DC-AE latent (docs/model.md §1.3)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = cfg = config
        d = cfg.hidden_size
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv2d(cfg.in_channels, d, cfg.patch_size, stride=cfg.patch_size)
        self.t_embedder = TimestepEmbedder(d)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))  # AdaLN-single: shared by all blocks
        self.y_embedder = CaptionProjection(cfg.caption_channels, d)
        self.attention_y_norm = RMSNorm(d, 1e-5, cfg.rmsnorm_cast)
        self.blocks = nn.ModuleList(SanaBlock(cfg) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(cfg)

    @property
    def dtype(self) -> torch.dtype:
        return self.x_embedder.proj.weight.dtype

    def _round_timestep(self, t: torch.Tensor) -> torch.Tensor:
        # NVlabs casts t with .long() inside the model (§1.11 item 2); the 168cf92 code casts back to model dtype.
        mode = self.config.timestep_rounding
        if mode == "none":
            return t.float()
        t = t.long()
        return t.to(self.dtype).float() if mode == "floor_model_dtype" else t.float()

    def _cross_attn_mask(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        mask = mask.bool()
        if self.config.cross_attn_mask == "exact":
            if not mask.any(dim=1).all():
                raise ValueError("caption_mask has a row with no valid token; exact masking needs at least one")
            return mask[:, None, None, :]                         # (B, 1, 1, L) boolean: masked keys removed
        return ((~mask).to(dtype) * MASK_BIAS)[:, None, None, :]   # (B, 1, 1, L) additive bias

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor, caption: torch.Tensor,
                caption_mask: torch.Tensor, *, pag_layers: frozenset[int] = frozenset(),
                perturbed_rows: int = 0) -> torch.Tensor:
        """`perturbed_rows` trailing batch rows run identity self-attention in the blocks `pag_layers`
        (perturbed-attention guidance, docs/model.md §5.3)."""
        cfg = self.config
        B, C, H, W = latent.shape
        p = cfg.patch_size
        if C != cfg.in_channels or H % p or W % p:
            raise ValueError(f"latent of shape {tuple(latent.shape)} does not fit in_channels={cfg.in_channels}, "
                             f"patch_size={p}")
        if caption.shape[:2] != caption_mask.shape or caption.shape[0] != B:
            raise ValueError(f"caption {tuple(caption.shape)} and caption_mask {tuple(caption_mask.shape)} "
                             f"do not match the batch of {B}")
        dtype = self.dtype
        h, w = H // p, W // p
        # Token-major and contiguous: residual adds keep their first operand's layout for the whole network.
        x = self.x_embedder.proj(latent.to(dtype)).flatten(2).transpose(1, 2).contiguous()  # (B, N, D)
        if cfg.use_pe:
            pe = sincos_pos_embed(cfg.hidden_size, h, w, cfg.sample_size // p, cfg.pe_interpolation, x.device)
            x = x + pe.to(dtype)
        timestep = timestep.expand(B) if timestep.ndim == 0 else timestep
        t_emb = self.t_embedder(self._round_timestep(timestep), dtype)          # (B, D)
        t0 = self.t_block(t_emb)                                                # (B, 6D)
        y = self.attention_y_norm(self.y_embedder(caption.to(dtype)))           # (B, L, D)
        mask = self._cross_attn_mask(caption_mask, dtype)
        for index, block in enumerate(self.blocks):
            x = block(x, y, t0, mask, (h, w), perturbed_rows if index in pag_layers else 0)
        x = self.final_layer(x, t_emb)                                          # (B, N, p·p·C)
        x = x.reshape(B, h, w, p, p, cfg.out_channels).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(B, cfg.out_channels, H, W)


def build_transformer(config: TransformerConfig | str, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> SanaTransformer:
    """A randomly initialised model (`device="meta"` allocates nothing)."""
    config = get_preset(config) if isinstance(config, str) else config
    with torch.device(device or "cpu"):
        model = SanaTransformer(config)
    return model.to(dtype) if dtype is not None else model


def count_parameters(config: TransformerConfig | str) -> int:
    """Number of parameters, counted on the meta device (paper Table 6 '#Param')."""
    return sum(p.numel() for p in build_transformer(config, device="meta").parameters())
