"""DC-AE's RMSNorm2d with the residual add that follows it, in one pass (efficientvit runs RMSNorm2d as a Triton
kernel too, docs/model.md §3.2).

Eager PyTorch makes the fp32 copy, the square, the channel mean, rsqrt, the weight, the bias, the cast back and the
residual add separate passes over (B, C, H, W): in a decode at 1024 px they take more GPU time than the convolutions
(the decoder's first stages run 128 channels at full resolution). Here a program normalises a block of pixels over
all channels in fp32 and rounds like the eager code: the norm once to the activation dtype, then the residual sum.
The tensors may be NCHW or channels-last (NHWC, the fused decoder's layout: a pixel's channels are then contiguous,
and the norm is a LayerNorm-like pass over rows of C values); optionally a ReLU follows, as before the decoder's
output conv.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

ELEMENTS = 8192  # channels x pixels per program


@triton.jit
def _rms_norm_2d_kernel(x_ptr, residual_ptr, weight_ptr, bias_ptr, out_ptr, C, HW, eps,
                        HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    channels = tl.arange(0, BLOCK_C)
    inside = (channels < C)[:, None] & (pixels < HW)[None, :]
    image = tl.program_id(1).to(tl.int64) * C * HW
    if CHANNELS_LAST:
        offsets = image + pixels[None, :].to(tl.int64) * C + channels[:, None]
    else:
        offsets = image + channels[:, None].to(tl.int64) * HW + pixels[None, :]
    x = tl.load(x_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / C + eps)                        # (BLOCK_P,)
    weight = tl.load(weight_ptr + channels, mask=channels < C, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + channels, mask=channels < C, other=0.0).to(tl.float32)
    y = ((x * rstd[None, :]) * weight[:, None] + bias[:, None]).to(out_ptr.dtype.element_ty)
    if HAS_RESIDUAL:
        residual = tl.load(residual_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
        y = (residual + y.to(tl.float32)).to(out_ptr.dtype.element_ty)
    if RELU:
        y = tl.maximum(y, 0.0)  # of the rounded value, as F.relu after the norm
    tl.store(out_ptr + offsets, y, mask=inside)


def layout(x: torch.Tensor) -> torch.memory_format | None:
    """The dense layout of 4-D x the kernels read: NCHW (contiguous), channels-last, or None for neither."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return None


def rms_norm_2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                residual: torch.Tensor | None = None, *, relu: bool = False) -> torch.Tensor:
    """RMSNorm over the channels of x (B, C, H, W), NCHW or channels-last, · weight + bias, plus `residual` (same
    shape and layout) if given, then ReLU if asked. The output has x's layout."""
    B, C, H, W = x.shape
    fmt = layout(x)
    if fmt is None or (residual is not None and (residual.shape != x.shape
                                                 or not residual.is_contiguous(memory_format=fmt))):
        raise ValueError(f"rms_norm_2d needs contiguous (B, C, H, W) tensors (NCHW or channels-last) of one shape "
                         f"and layout; got {tuple(x.shape)}"
                         + ("" if residual is None else f" and residual {tuple(residual.shape)}"))
    if weight.shape != (C,) or bias.shape != (C,):
        raise ValueError(f"rms_norm_2d: weight {tuple(weight.shape)} / bias {tuple(bias.shape)} do not fit {C} "
                         "channels")
    out = torch.empty_like(x, memory_format=fmt)
    block_c = triton.next_power_of_2(C)
    block_p = max(1, ELEMENTS // block_c)
    _rms_norm_2d_kernel[(triton.cdiv(H * W, block_p), B)](
        x, x if residual is None else residual, weight, bias, out, C, H * W, eps, HAS_RESIDUAL=residual is not None,
        RELU=relu, CHANNELS_LAST=fmt == torch.channels_last, BLOCK_C=block_c, BLOCK_P=block_p, num_warps=8)
    return out
