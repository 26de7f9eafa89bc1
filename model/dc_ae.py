"""DC-AE f32c32, the deep-compression autoencoder of SANA (docs/model.md §3): encoder and decoder; 2K/4K decodes
go tile by tile (model/tiled_decode.py).

Parameter names follow diffusers' AutoencoderDC (§3.4), so its safetensors load as they are; the original
efficientvit layout is mapped in `model.dc_ae_keys`.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from model.kernel_choice import use_triton
from model.tiled_decode import decode_tiled

# Triton ships with torch's CUDA builds; without it use_triton() is False and only the eager code runs.
try:
    from model.kernels.dc_ae_ops import add_channel_shortcut, bias_silu_, upsample_nearest_2x
    from model.kernels.mix_ffn import dwconv_glu
    from model.kernels.rms_norm_2d import layout, rms_norm_2d
except ImportError:
    add_channel_shortcut = bias_silu_ = upsample_nearest_2x = dwconv_glu = layout = rms_norm_2d = None

BlockType = Literal["ResBlock", "EfficientViTBlock"]
_RES, _EVIT = "ResBlock", "EfficientViTBlock"


@dataclass(frozen=True)
class DCAEConfig:
    """DC-AE hyper-parameters (docs/model.md §3.1); stage i of the encoder and of the decoder share width and type."""

    widths: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    encoder_depths: tuple[int, ...] = (2, 2, 2, 3, 3, 3)
    decoder_depths: tuple[int, ...] = (3, 3, 3, 3, 3, 3)
    block_types: tuple[BlockType, ...] = (_RES,) * 3 + (_EVIT,) * 3
    qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (), (5,), (5,), (5,))  # depthwise kernels per stage
    in_channels: int = 3
    latent_channels: int = 32
    attention_head_dim: int = 32         # heads = width // attention_head_dim
    glu_expand_ratio: int = 4            # GLUMBConv hidden = 4·C (value) + 4·C (gate)
    norm_eps: float = 1e-5
    attention_eps: float = 1e-15
    scaling_factor: float = 0.41407      # z = E(x)·s, so that latents have about unit variance; no shift
    # Not architecture: the eager PyTorch reference ("eager"), or channels-last activations with Triton kernels for
    # the element-wise passes and the GLUMBConv middle (docs/model.md §3.6); "auto": Triton on CUDA
    kernels: Literal["auto", "eager", "triton"] = "auto"

    def __post_init__(self) -> None:
        n = len(self.widths)
        if self.kernels not in ("auto", "eager", "triton"):
            raise ValueError(f"DCAEConfig.kernels={self.kernels!r}; expected 'auto', 'eager' or 'triton'")
        for name in ("encoder_depths", "decoder_depths", "block_types", "qkv_multiscales"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"DCAEConfig.{name} has {len(getattr(self, name))} stages, widths has {n}")
        if min(self.encoder_depths + self.decoder_depths) < 1:
            raise ValueError("DCAEConfig: every stage needs at least one block")
        for i, (width, kind, scales) in enumerate(zip(self.widths, self.block_types, self.qkv_multiscales)):
            if kind not in (_RES, _EVIT):
                raise ValueError(f"DCAEConfig: stage {i} block type {kind!r} is not {_RES} or {_EVIT}")
            if kind == _RES and scales:
                raise ValueError(f"DCAEConfig: stage {i} is a {_RES} stage but has qkv_multiscales {scales}")
            if kind == _EVIT and width % self.attention_head_dim:
                raise ValueError(f"DCAEConfig: stage {i} width {width} is not a multiple of the head dim "
                                 f"{self.attention_head_dim}")
        for i in range(n - 1):
            if (4 * self.widths[i]) % self.widths[i + 1]:
                raise ValueError(f"DCAEConfig: 4·{self.widths[i]} channels cannot be grouped into "
                                 f"{self.widths[i + 1]} for the pixel-(un)shuffle shortcut of stage {i}")
        if self.widths[-1] % self.latent_channels:
            raise ValueError(f"DCAEConfig: last width {self.widths[-1]} is not a multiple of latent_channels "
                             f"{self.latent_channels}")

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.widths) - 1)


_SANA_AE = DCAEConfig()
# Named after the efficientvit releases; 1.1 keeps the 1.0 architecture and retrains the decoder (§3.1).
DCAE_PRESETS: dict[str, DCAEConfig] = {
    "dc-ae-f32c32-sana-1.0": _SANA_AE,
    "dc-ae-f32c32-sana-1.1": _SANA_AE,
    # Tests: 16 > 3·4 so attention heads straddle the q|k|v split; two kernel sizes in the last stage; f4.
    "dc-ae-tiny": DCAEConfig(widths=(8, 16, 32), encoder_depths=(1, 1, 2), decoder_depths=(1, 2, 1),
                             block_types=(_RES, _EVIT, _EVIT), qkv_multiscales=((), (5,), (3, 5)),
                             latent_channels=4, attention_head_dim=4),
}


def get_dc_ae_preset(name: str) -> DCAEConfig:
    if name not in DCAE_PRESETS:
        close = difflib.get_close_matches(name, DCAE_PRESETS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(DCAE_PRESETS)}"
        raise KeyError(f"unknown DC-AE preset {name!r}{hint}")
    return DCAE_PRESETS[name]


# ----------------------------------------------------------------------------------------------------------
# RMSNorm over channels with weight and bias, in fp32 like efficientvit's Triton kernel (§3.2 "RMSNorm2d").

class RMSNorm2d(nn.Module):
    def __init__(self, channels: int, eps: float, kernels: str = "auto") -> None:
        super().__init__()
        self.eps, self.kernels = eps, kernels
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:  # (B, C, H, W)
        """norm(x), or residual + norm(x) with the norm rounded to x's dtype first."""
        if use_triton(self.kernels, x) and (fmt := layout(x)) is not None \
                and (residual is None or residual.is_contiguous(memory_format=fmt)):
            return rms_norm_2d(x, self.weight, self.bias, self.eps, residual)
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(dim=1, keepdim=True) + self.eps)
        y = (y * self.weight.float()[:, None, None] + self.bias.float()[:, None, None]).to(x.dtype)
        return y if residual is None else residual + y


# ----------------------------------------------------------------------------------------------------------
# The fused path runs channels-last (NHWC) activations and conv weights (docs/model.md §3.6): cuDNN then converts
# nothing around each conv, and the token-major (B, H·W, C) view that GEMMs and the Mix-FFN kernel take is free.

def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H·W, C); a view when x is channels-last."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


def _image(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H·W, C) contiguous -> the channels-last (B, C, H, W) view of it."""
    return tokens.unflatten(1, (h, w)).permute(0, 3, 1, 2)


def _channels_last_weights(module: nn.Module) -> None:
    """Convert the 4-D weights to channels-last in place, once (conv_in is the sentinel); later moves and dtype
    changes keep the layout."""
    if not module.conv_in.weight.is_contiguous(memory_format=torch.channels_last):
        with torch.inference_mode(False):  # converted inside inference mode, the weights would become inference tensors
            module.to(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------------------------------------
# ResBlock (§3.2): conv3x3 -> SiLU -> conv3x3 (no bias) -> RMSNorm2d, residual.

class ResBlock(nn.Module):
    def __init__(self, channels: int, cfg: DCAEConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = RMSNorm2d(channels, cfg.norm_eps, cfg.kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        if use_triton(self.norm.kernels, x):  # either layout; the bias add and SiLU in one pass
            h = bias_silu_(F.conv2d(x, self.conv1.weight, padding=1), self.conv1.bias)
            return self.norm(self.conv2(h), residual=x)
        return self.norm(self.conv2(F.silu(self.conv1(x))), residual=x)


# ----------------------------------------------------------------------------------------------------------
# Multi-scale ReLU linear attention, LiteMLA (§3.2 "EfficientViT block", steps 1-5).

class MultiscaleProjection(nn.Module):
    """Depthwise k×k then grouped 1×1 (one group per d channels) over the 3C qkv channels."""

    def __init__(self, channels: int, heads: int, kernel_size: int) -> None:
        super().__init__()
        self.proj_in = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels,
                                 bias=False)
        self.proj_out = nn.Conv2d(channels, channels, 1, groups=3 * heads, bias=False)

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:  # (B, 3C, H, W)
        return self.proj_out(self.proj_in(qkv))

    def grouped_tokens(self, qkv: torch.Tensor) -> torch.Tensor:  # (B, 3C, H, W) channels-last
        """forward as a (B, H·W, 3G, d) view, the grouped 1×1 conv as one batched GEMM over the groups: cuDNN runs
        a channels-last grouped conv group by group (hundreds of small launches per block)."""
        groups = self.proj_out.groups
        local = _tokens(self.proj_in(qkv)).flatten(0, 1).unflatten(-1, (groups, -1)).transpose(0, 1)  # (3G, M, d)
        weight = self.proj_out.weight.flatten(1).unflatten(0, (groups, -1))  # (3G, d out, d in)
        return torch.bmm(local, weight.transpose(1, 2)).transpose(0, 1).unflatten(0, (qkv.shape[0], -1))


class MultiscaleLinearAttention(nn.Module):
    def __init__(self, channels: int, kernel_sizes: tuple[int, ...], cfg: DCAEConfig) -> None:
        super().__init__()
        self.head_dim = cfg.attention_head_dim
        self.eps = cfg.attention_eps
        heads = channels // self.head_dim
        # Stored as three Linear layers (diffusers layout); applied as one 1×1 conv C -> 3C.
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_qkv_multiscale = nn.ModuleList(MultiscaleProjection(3 * channels, heads, k) for k in kernel_sizes)
        self.to_out = nn.Linear(channels * (1 + len(kernel_sizes)), channels, bias=False)
        self.norm_out = RMSNorm2d(channels, cfg.norm_eps, cfg.kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        if use_triton(self.norm_out.kernels, x):
            return self._forward_tokens(x.contiguous(memory_format=torch.channels_last))
        b, _, h, w = x.shape
        w_qkv = torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight])[:, :, None, None]
        qkv = F.conv2d(x, w_qkv)  # (B, 3C, H, W), laid out [all q | all k | all v]
        qkv = torch.cat([qkv, *(branch(qkv) for branch in self.to_qkv_multiscale)], dim=1)  # (B, 3C(1+S), H, W)
        # Heads are consecutive 3·d-channel slices of that concatenation, each read as [q | k | v]; they do not
        # line up with the to_q/to_k/to_v split, and the released weights depend on this (§3.2 step 3).
        heads = qkv.reshape(b, -1, 3 * self.head_dim, h * w)  # (B, G', 3d, N), G' = G(1+S)
        # Both forms compute the same map; as in efficientvit and diffusers the N×N one is used only for N ≤ d,
        # so the switch only changes rounding (the linear form runs fully in fp32, the other normalises in fp32).
        if h * w > self.head_dim:
            out = self._linear(heads.float()).to(x.dtype)  # (B, G', d, N)
        else:
            out = self._quadratic(heads)  # (B, G', d, N)
        out = out.reshape(b, -1, h, w)  # (B, C(1+S), H, W)
        out = F.conv2d(out, self.to_out.weight[:, :, None, None])  # (B, C, H, W)
        return self.norm_out(out, residual=x)

    def _forward_tokens(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) channels-last
        """The same steps channels-last: the heads are a strided view of the token-major concatenation, and one
        copy (with the cast back) returns their output to the token layout."""
        b, _, h, w = x.shape
        w_qkv = torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight])[:, :, None, None]
        qkv = F.conv2d(x, w_qkv)  # (B, 3C, H, W) channels-last
        parts = [_tokens(qkv).unflatten(-1, (-1, self.head_dim)),
                 *(branch.grouped_tokens(qkv) for branch in self.to_qkv_multiscale)]  # (B, N, 3G, d) each
        qkv = torch.cat(parts, dim=2).flatten(2)  # (B, N, 3C(1+S)), the channel concatenation of forward
        heads = qkv.unflatten(-1, (-1, 3 * self.head_dim)).permute(0, 2, 3, 1)  # (B, G', 3d, N), as in forward
        out = self._linear(heads.float()) if h * w > self.head_dim else self._quadratic(heads)  # (B, G', d, N)
        out = out.permute(0, 3, 1, 2).to(x.dtype, memory_format=torch.contiguous_format)  # (B, N, G', d)
        out = F.conv2d(_image(out.flatten(2), h, w), self.to_out.weight[:, :, None, None])  # (B, C, H, W)
        return self.norm_out(out, residual=x)

    def _linear(self, heads: torch.Tensor) -> torch.Tensor:
        q, k, v = heads.chunk(3, dim=2)  # (B, G', d, N) each
        q, k = q.relu(), k.relu()
        v = F.pad(v, (0, 0, 0, 1), value=1.0)  # a row of ones makes the last output row the normaliser
        out = (v @ k.transpose(-1, -2)) @ q  # (B, G', d+1, N)
        return out[:, :, :-1] / (out[:, :, -1:] + self.eps)

    def _quadratic(self, heads: torch.Tensor) -> torch.Tensor:
        q, k, v = heads.chunk(3, dim=2)  # (B, G', d, N) each
        scores = (k.relu().transpose(-1, -2) @ q.relu()).float()  # (B, G', N, N)
        scores = scores / (scores.sum(dim=2, keepdim=True) + self.eps)
        return v @ scores.to(v.dtype)


# ----------------------------------------------------------------------------------------------------------
# GLUMBConv, the local module of the EfficientViT block (§3.2): 1×1 expand, depthwise 3×3, GLU, 1×1 project.

class GLUMBConv(nn.Module):
    def __init__(self, channels: int, cfg: DCAEConfig) -> None:
        super().__init__()
        hidden = cfg.glu_expand_ratio * channels
        self.conv_inverted = nn.Conv2d(channels, 2 * hidden, 1)
        self.conv_depth = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.conv_point = nn.Conv2d(hidden, channels, 1, bias=False)
        self.norm = RMSNorm2d(channels, cfg.norm_eps, cfg.kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        if use_triton(self.norm.kernels, x):
            return self._forward_tokens(x.contiguous(memory_format=torch.channels_last))
        h = self.conv_depth(F.silu(self.conv_inverted(x)))  # (B, 2·hidden, H, W)
        value, gate = h.chunk(2, dim=1)
        return self.norm(self.conv_point(value * F.silu(gate)), residual=x)

    def _forward_tokens(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) channels-last
        """The inverted conv as a GEMM with its bias in the epilogue; SiLU, depth-wise conv and gating in one kernel
        (Sana's Mix-FFN middle, docs/model.md §1.7)."""
        _, _, h, w = x.shape
        hidden = F.linear(_tokens(x), self.conv_inverted.weight.flatten(1), self.conv_inverted.bias)  # (B, N, 2·hid)
        gated = dwconv_glu(hidden, self.conv_depth.weight, self.conv_depth.bias, (h, w))  # (B, N, hidden)
        return self.norm(self.conv_point(_image(gated, h, w)), residual=x)


class EfficientViTBlock(nn.Module):
    def __init__(self, channels: int, kernel_sizes: tuple[int, ...], cfg: DCAEConfig) -> None:
        super().__init__()
        self.attn = MultiscaleLinearAttention(channels, kernel_sizes, cfg)
        self.conv_out = GLUMBConv(channels, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return self.conv_out(self.attn(x))


# ----------------------------------------------------------------------------------------------------------
# Resampling with parameter-free shortcuts (§3.2 "Downsample", "Upsample").

class Downsample(nn.Module):
    """Stride-2 conv plus pixel-unshuffle whose 4·Cin channels are averaged in consecutive groups down to Cout."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.c_out = c_out
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W)
        shortcut = F.pixel_unshuffle(x, 2).unflatten(1, (self.c_out, -1)).mean(dim=2)  # (B, Cout, H/2, W/2)
        return self.conv(x) + shortcut


class Upsample(nn.Module):
    """Nearest ×2 then conv, plus channels repeated 4·Cout/Cin times and pixel-shuffled."""

    def __init__(self, c_in: int, c_out: int, kernels: str = "auto") -> None:
        super().__init__()
        self.repeats, self.kernels = 4 * c_out // c_in, kernels
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W)
        if use_triton(self.kernels, x):  # the conv's bias goes with the shortcut add
            return add_channel_shortcut(F.conv2d(upsample_nearest_2x(x), self.conv.weight, padding=1), x, 2,
                                        self.conv.bias)
        main = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, Cout, 2H, 2W)
        return main + F.pixel_shuffle(x.repeat_interleave(self.repeats, dim=1), 2)


def _block(cfg: DCAEConfig, stage: int) -> nn.Module:
    width = cfg.widths[stage]
    if cfg.block_types[stage] == _RES:
        return ResBlock(width, cfg)
    return EfficientViTBlock(width, cfg.qkv_multiscales[stage], cfg)


# ----------------------------------------------------------------------------------------------------------
# Encoder and decoder (§3.3).

class Encoder(nn.Module):
    def __init__(self, cfg: DCAEConfig) -> None:
        super().__init__()
        w, last = cfg.widths, len(cfg.widths) - 1
        self.conv_in = nn.Conv2d(cfg.in_channels, w[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            nn.Sequential(*(_block(cfg, s) for _ in range(cfg.encoder_depths[s])),
                          *([Downsample(w[s], w[s + 1])] if s < last else []))
            for s in range(len(w)))
        self.conv_out = nn.Conv2d(w[-1], cfg.latent_channels, 3, padding=1)
        self.latent_channels, self.kernels = cfg.latent_channels, cfg.kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W)
        fused = use_triton(self.kernels, x)
        if fused:  # channels-last throughout (the blocks' fused paths); the downsample shortcuts stay PyTorch ops
            _channels_last_weights(self)
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.conv_in(x)  # (B, w0, H, W)
        for stage in self.down_blocks:
            h = stage(h)  # (B, w_last, H/f, W/f) after the last
        shortcut = h.unflatten(1, (self.latent_channels, -1)).mean(dim=2)  # (B, latent, H/f, W/f)
        z = self.conv_out(h) + shortcut
        return z.contiguous() if fused else z


class Decoder(nn.Module):
    def __init__(self, cfg: DCAEConfig) -> None:
        super().__init__()
        w, last = cfg.widths, len(cfg.widths) - 1
        self.conv_in = nn.Conv2d(cfg.latent_channels, w[-1], 3, padding=1)
        # Indexed by stage like the encoder but run deepest first; each starts with its upsample.
        self.up_blocks = nn.ModuleList(
            nn.Sequential(*([Upsample(w[s + 1], w[s], cfg.kernels)] if s < last else []),
                          *(_block(cfg, s) for _ in range(cfg.decoder_depths[s])))
            for s in range(len(w)))
        self.norm_out = RMSNorm2d(w[0], cfg.norm_eps, cfg.kernels)
        self.conv_out = nn.Conv2d(w[0], cfg.in_channels, 3, padding=1)
        self.in_repeats, self.kernels = w[-1] // cfg.latent_channels, cfg.kernels

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, latent, h, w)
        if use_triton(self.kernels, z):
            return self._forward_channels_last(z)
        h = self.conv_in(z) + z.repeat_interleave(self.in_repeats, dim=1)  # (B, w_last, h, w)
        for stage in reversed(self.up_blocks):
            h = stage(h)  # (B, w0, h·f, w·f) after the last
        return self.conv_out(F.relu(self.norm_out(h)))  # (B, 3, h·f, w·f)

    def _forward_channels_last(self, z: torch.Tensor) -> torch.Tensor:
        """forward with NHWC activations and weights; conv_in's bias + shortcut and the final norm + ReLU are one
        pass each. Returns a contiguous (NCHW) image, as forward does."""
        _channels_last_weights(self)
        z = z.contiguous(memory_format=torch.channels_last)
        h = add_channel_shortcut(F.conv2d(z, self.conv_in.weight, padding=1), z, 1, self.conv_in.bias)
        for stage in reversed(self.up_blocks):
            h = stage(h)  # (B, w0, h·f, w·f) after the last
        h = rms_norm_2d(h, self.norm_out.weight, self.norm_out.bias, self.norm_out.eps, relu=True)
        return self.conv_out(h).contiguous()  # (B, 3, h·f, w·f): 3 channels, a cheap copy


# ----------------------------------------------------------------------------------------------------------
# The autoencoder: z = E(x)·s and x = D(z/s) (§3.1 "Usage"); deterministic, no posterior sampling.

class DCAE(nn.Module):
    def __init__(self, config: DCAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], (B, 3, H, W) with H, W multiples of 32 -> scaled latents (B, 32, H/32, W/32)."""
        f = self.config.spatial_compression
        if images.ndim != 4 or images.shape[1] != self.config.in_channels or images.shape[-1] % f \
                or images.shape[-2] % f:
            raise ValueError(f"DC-AE encode expects (B, {self.config.in_channels}, H, W) with H and W multiples "
                             f"of {f}; got {tuple(images.shape)}")
        return self.encoder(images) * self.config.scaling_factor

    def decode(self, latents: torch.Tensor, *, tile_size: int | None = None, tile_overlap: int = 4) -> torch.Tensor:
        """Scaled latents (B, 32, h, w) -> images (B, 3, 32h, 32w), nominally in [-1, 1].

        With `tile_size` (latent pixels) and a latent larger than it, decode overlapping tiles of that size
        that share at least `tile_overlap` latent pixels. SANA-4K's diffusers example uses 1024 px tiles with
        128 px overlap, i.e. tile_size=32, tile_overlap=4.
        """
        if latents.ndim != 4 or latents.shape[1] != self.config.latent_channels:
            raise ValueError(f"DC-AE decode expects (B, {self.config.latent_channels}, h, w); "
                             f"got {tuple(latents.shape)}")
        z = latents / self.config.scaling_factor
        if tile_size is None or max(z.shape[-2:]) <= tile_size:
            return self.decoder(z)
        return decode_tiled(self.decoder, z, tile_size, tile_overlap, self.config.spatial_compression)
