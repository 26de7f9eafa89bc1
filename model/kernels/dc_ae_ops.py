"""The DC-AE decoder's element-wise passes as single Triton passes (docs/model.md §3.6): the parameter-free channel
shortcuts of the decoder input and of each Upsample with the preceding conv's bias (§3.2), nearest ×2 upsampling, and
ResBlock's bias + SiLU.

In eager PyTorch on channels-last (NHWC) activations these are slow: the shortcut `F.pixel_shuffle(x.repeat_interleave
(r, dim=1), 2)` is strided views and copies added by a non-vectorised kernel (80 ms of a 563 ms batch-16 decode at
1024 px), cuDNN's bias is a separate broadcast add over the conv output, upsample_nearest2d's NHWC kernel took 55 ms,
and SiLU is one more pass. Here each is one pass in the tensors' own layout (strides are arguments; the unit channel
stride of NHWC is specialised, so channel loads are contiguous) that computes in fp32 and rounds once.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from model.kernels.rms_norm_2d import layout

BLOCK_P = 32   # pixels per program
BLOCK_C = 64   # channels per program


@triton.jit
def _shortcut_add_kernel(main_ptr, x_ptr, bias_ptr, C, H2, W2, repeats,
                         m_sb, m_sc, m_sh, m_sw, x_sb, x_sc, x_sh, x_sw,
                         SCALE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    batch = tl.program_id(2).to(tl.int64)
    y, xx = pixels // W2, pixels % W2
    inside = (pixels < H2 * W2)[:, None] & (c < C)[None, :]
    # Output pixel (SCALE·h + i, SCALE·w + j), channel c reads x[(SCALE²·c + SCALE·i + j) // repeats] at (h, w).
    source = (SCALE * SCALE * c[None, :] + (SCALE * (y % SCALE) + xx % SCALE)[:, None]) // repeats
    dst = main_ptr + batch * m_sb + (y.to(tl.int64) * m_sh + xx * m_sw)[:, None] + c[None, :].to(tl.int64) * m_sc
    src = x_ptr + batch * x_sb + ((y // SCALE).to(tl.int64) * x_sh + (xx // SCALE) * x_sw)[:, None] \
        + source.to(tl.int64) * x_sc
    total = tl.load(dst, mask=inside, other=0.0).to(tl.float32) + tl.load(src, mask=inside, other=0.0).to(tl.float32) \
        + tl.load(bias_ptr + c, mask=c < C, other=0.0).to(tl.float32)[None, :]
    tl.store(dst, total.to(main_ptr.dtype.element_ty), mask=inside)


def add_channel_shortcut(main: torch.Tensor, x: torch.Tensor, scale: int, bias: torch.Tensor) -> torch.Tensor:
    """main += bias + the shortcut of x, in place; returns main (the bias-free conv output it completes).
    main (B, C, s·H, s·W), x (B, Cx, H, W), s = `scale`: shortcut[b, c, s·h + i, s·w + j] = x[b, (s²·c + s·i + j) // r,
    h, w] with r = s²·C / Cx. Scale 2 is pixel_shuffle(x.repeat_interleave(r, dim=1), 2) (Upsample); scale 1 is
    x.repeat_interleave(C / Cx, dim=1) (the decoder's input)."""
    B, C, H2, W2 = main.shape
    if x.ndim != 4 or x.shape[0] != B or (x.shape[2] * scale, x.shape[3] * scale) != (H2, W2) \
            or (scale * scale * C) % x.shape[1] or x.dtype != main.dtype:
        raise ValueError(f"add_channel_shortcut: x {tuple(x.shape)} {x.dtype} does not repeat into main "
                         f"{tuple(main.shape)} {main.dtype} at scale {scale}")
    if bias.shape != (C,):
        raise ValueError(f"add_channel_shortcut: bias {tuple(bias.shape)} does not fit {C} channels")
    grid = (triton.cdiv(H2 * W2, BLOCK_P), triton.cdiv(C, BLOCK_C), B)
    _shortcut_add_kernel[grid](main, x, bias, C, H2, W2, scale * scale * C // x.shape[1], *main.stride(),
                               *x.stride(), SCALE=scale, BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C, num_warps=4)
    return main


@triton.jit
def _upsample_kernel(x_ptr, out_ptr, C, H, W, x_sb, x_sc, x_sh, x_sw, o_sb, o_sc, o_sh, o_sw,
                     BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # input pixels, each written to a 2×2 block
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    batch = tl.program_id(2).to(tl.int64)
    y, xx = (pixels // W).to(tl.int64), pixels % W
    inside = (pixels < H * W)[:, None] & (c < C)[None, :]
    value = tl.load(x_ptr + batch * x_sb + (y * x_sh + xx * x_sw)[:, None] + c[None, :].to(tl.int64) * x_sc,
                    mask=inside)
    base = out_ptr + batch * o_sb + (2 * y * o_sh + 2 * xx * o_sw)[:, None] + c[None, :].to(tl.int64) * o_sc
    tl.store(base, value, mask=inside)
    tl.store(base + o_sw, value, mask=inside)
    tl.store(base + o_sh, value, mask=inside)
    tl.store(base + o_sh + o_sw, value, mask=inside)


def upsample_nearest_2x(x: torch.Tensor) -> torch.Tensor:
    """F.interpolate(x, scale_factor=2, mode="nearest") of x (B, C, H, W), in x's layout (NCHW or channels-last)."""
    B, C, H, W = x.shape
    out = torch.empty((B, C, 2 * H, 2 * W), device=x.device, dtype=x.dtype,
                      memory_format=layout(x) or torch.contiguous_format)
    grid = (triton.cdiv(H * W, BLOCK_P), triton.cdiv(C, BLOCK_C), B)
    _upsample_kernel[grid](x, out, C, H, W, *x.stride(), *out.stride(), BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C,
                           num_warps=4)
    return out


@triton.jit
def _bias_silu_kernel(x_ptr, bias_ptr, C, HW, s_b, s_c, s_p, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    inside = (pixels < HW)[:, None] & (c < C)[None, :]
    ptrs = x_ptr + tl.program_id(2).to(tl.int64) * s_b + pixels[:, None].to(tl.int64) * s_p \
        + c[None, :].to(tl.int64) * s_c
    h = tl.load(ptrs, mask=inside).to(tl.float32) + tl.load(bias_ptr + c, mask=c < C).to(tl.float32)[None, :]
    tl.store(ptrs, (h / (1.0 + tl.exp(-h))).to(x_ptr.dtype.element_ty), mask=inside)


def bias_silu_(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x = SiLU(x + bias) over the channels of x (B, C, H, W), in place (NCHW or channels-last); returns x."""
    B, C, H, W = x.shape
    if layout(x) is None or bias.shape != (C,):
        raise ValueError(f"bias_silu_: x {tuple(x.shape)} must be NCHW or channels-last and bias {tuple(bias.shape)} "
                         f"fit its {C} channels")
    flat = x.flatten(2)  # (B, C, H·W): a view in either layout
    grid = (triton.cdiv(H * W, BLOCK_P), triton.cdiv(C, BLOCK_C), B)
    _bias_silu_kernel[grid](x, bias, C, H * W, *flat.stride(), BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C, num_warps=4)
    return x
