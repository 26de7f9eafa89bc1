"""Fused element-wise parts of a Linear DiT block (paper §2.2 kernel fusion; docs/model.md §1.4).

Eager PyTorch makes each of LayerNorm, ×(1 + scale), + shift, gate × branch and the residual add its own pass
over the (B, N, D) activations, and the broadcast ones run PyTorch's slow strided kernel. Here AdaLN-single's
modulated norm is one pass and the gated residual another, computed in fp32 and rounded once. Ahead of an 8-bit
GEMM (paper §4) the norm also quantises its rows per token, so the GEMM input costs no pass of its own.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from model.kernels.row_quant import quantize_tile

ROWS = 4                    # tokens per program of the norm kernel
BLOCK = 1024                # elements per program of the residual kernel


@triton.jit
def _modulated_norm_kernel(x_ptr, shift_ptr, scale_ptr, out_ptr, q_ptr, s_ptr, rows, tokens, D, stride_mod, eps,
                           QUANTIZE: tl.constexpr, INV_QMAX: tl.constexpr, FLOOR: tl.constexpr, INT8: tl.constexpr,
                           ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    inside = (row < rows)[:, None] & (cols < D)[None, :]
    offsets = row[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / D
    centred = tl.where(inside, x - mean[:, None], 0.0)
    rstd = tl.rsqrt(tl.sum(centred * centred, axis=1) / D + eps)
    mod = (row // tokens)[:, None] * stride_mod + cols[None, :]
    shift = tl.load(shift_ptr + mod, mask=inside, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr + mod, mask=inside, other=0.0).to(tl.float32)
    out = (centred * rstd[:, None] * (1.0 + scale) + shift).to(out_ptr.dtype.element_ty)
    if QUANTIZE:  # the rows the unfused path would quantise: rounded to the activation dtype first
        q, s = quantize_tile(tl.where(inside, out.to(tl.float32), 0.0), INV_QMAX, FLOOR, INT8)
        tl.store(q_ptr + offsets, q, mask=inside)
        tl.store(s_ptr + row, s, mask=row < rows)
    else:
        tl.store(out_ptr + offsets, out, mask=inside)


@triton.jit
def _gated_residual_kernel(x_ptr, gate_ptr, y_ptr, out_ptr, total, per_row, D, stride_gate, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < total
    x = tl.load(x_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
    gate = tl.load(gate_ptr + (offsets // per_row) * stride_gate + offsets % D, mask=inside, other=0.0)
    tl.store(out_ptr + offsets, (x + gate.to(tl.float32) * y).to(out_ptr.dtype.element_ty), mask=inside)


def _modulation(t: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """A (B, 1, D) view of AdaLN-single's (B, 6, D) table: rows of any stride, channels contiguous."""
    B, _, D = x.shape
    if t.shape != (B, 1, D) or t.stride(-1) != 1:
        raise ValueError(f"{name} of shape {tuple(t.shape)} does not modulate x of shape {tuple(x.shape)}")
    return t


def modulated_layer_norm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float,
                         quantize: tuple[float, float, torch.dtype] | None = None):
    """LayerNorm(x) (no affine) · (1 + scale) + shift for x (B, N, D) contiguous, shift/scale (B, 1, D).

    `quantize` = (Q, amax floor, int8 or float8_e4m3fn): instead of the (B, N, D) result, its (B·N, D) 8-bit rows and
    (B·N, 1) fp32 scales, as model/kernels/row_quant.py quantises the result."""
    B, N, D = x.shape
    if not x.is_contiguous():
        raise ValueError("modulated_layer_norm needs contiguous (B, N, D) activations")
    shift, scale = _modulation(shift, x, "shift"), _modulation(scale, x, "scale")
    if shift.stride(0) != scale.stride(0):
        raise ValueError("shift and scale must be views of one modulation table")
    qmax, floor, qdtype = quantize or (1.0, 0.0, torch.int8)
    out = torch.empty_like(x) if quantize is None else x   # quantising, the kernel only reads out's dtype
    q = torch.empty((B * N, D), device=x.device, dtype=qdtype) if quantize else out
    s = torch.empty((B * N, 1), device=x.device, dtype=torch.float32) if quantize else out
    _modulated_norm_kernel[(triton.cdiv(B * N, ROWS),)](
        x, shift, scale, out, q, s, B * N, N, D, shift.stride(0), eps, QUANTIZE=quantize is not None,
        INV_QMAX=1.0 / qmax, FLOOR=floor, INT8=qdtype == torch.int8, ROWS=ROWS, BLOCK_D=triton.next_power_of_2(D))
    return (q, s) if quantize else out


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x + gate · y for x, y (B, N, D) and gate (B, 1, D); x's dtype."""
    B, N, D = x.shape
    if y.shape != x.shape:
        raise ValueError(f"branch of shape {tuple(y.shape)} does not match the residual {tuple(x.shape)}")
    x, y, gate = x.contiguous(), y.contiguous(), _modulation(gate, x, "gate")
    out = torch.empty_like(x)
    _gated_residual_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, gate, y, out, x.numel(), N * D, D, gate.stride(0),
                                                             BLOCK=BLOCK)
    return out
