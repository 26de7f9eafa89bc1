"""Per-token activation quantisation for the 8-bit GEMMs (model/quantize.py; paper §4, Table 5) in one pass.

Eager PyTorch makes five passes (|x|, max, reciprocal multiply, round/clamp, cast); here a program reads a few rows
once and writes their 8-bit values and scales. `quantize_tile` is the one implementation of the scheme in Triton: the
stand-alone kernel below and the producers that quantise their own output (the modulated LayerNorm,
model/kernels/block_ops.py) call it, so that every path gives the eager code's bits (tests/test_quantize.py).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# 1.5·2^23: (y + M) − M rounds an fp32 |y| < 2^22 to the nearest integer, ties to even (constexpr: a global in @jit)
RNE_MAGIC = tl.constexpr(12582912.0)
TILE = 8192                 # elements per program of the stand-alone kernel: rows = TILE // next_pow2(K)


@triton.jit
def quantize_tile(x, INV_QMAX: tl.constexpr, FLOOR: tl.constexpr, INT8: tl.constexpr):
    """fp32 rows (R, K), zero where masked → (8-bit rows, (R,) fp32 scales): s = max(|x|, floor)·fl(1/Q), and
    x · fl(1/s) rounded half-even and clamped to ±127 (INT8) or cast to float8_e4m3fn."""
    scale = tl.maximum(tl.max(tl.abs(x), axis=1), FLOOR) * INV_QMAX
    # IEEE reciprocal (Triton's `/` is approximate), as torch's. The product goes through fma(·, ·, 0), so that the
    # compiler cannot contract it with the rounding's add below (one rounding of x·r + M flipped ~1e-4 of the
    # values on the H200); the fma turns x = −0 into +0, so zeros keep x, as torch's product does (FP8's sign bit).
    y = tl.where(x == 0.0, x, tl.fma(x, tl.math.div_rn(1.0, scale)[:, None], 0.0))
    if INT8:
        q = tl.minimum(tl.maximum((y + RNE_MAGIC) - RNE_MAGIC, -127.0), 127.0).to(tl.int8)
    else:
        q = y.to(tl.float8e4nv)
    return q, scale


@triton.jit
def _quantize_rows_kernel(x_ptr, q_ptr, s_ptr, rows, K, INV_QMAX: tl.constexpr, FLOOR: tl.constexpr,
                          INT8: tl.constexpr, ROWS: tl.constexpr, BLOCK_K: tl.constexpr):
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_K)
    inside = (row < rows)[:, None] & (cols < K)[None, :]
    offsets = row[:, None] * K + cols[None, :]
    q, scale = quantize_tile(tl.load(x_ptr + offsets, mask=inside, other=0.0).to(tl.float32), INV_QMAX, FLOOR,
                             INT8)
    tl.store(q_ptr + offsets, q, mask=inside)
    tl.store(s_ptr + row, scale, mask=row < rows)


def kernel_options(k: int) -> dict:
    """Tile of a row-wise kernel over K channels: the row padded to a power of two, TILE elements per program."""
    block = triton.next_power_of_2(k)
    return dict(ROWS=max(1, TILE // block), BLOCK_K=block, num_warps=max(4, min(16, block // 256)))


def quantize_rows(x: torch.Tensor, qmax: float, floor: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, K) → (8-bit rows of `dtype`, (rows, 1) fp32 scales)."""
    x = x.contiguous()
    rows, k = x.shape
    q = torch.empty(rows, k, device=x.device, dtype=dtype)
    scale = torch.empty(rows, 1, device=x.device, dtype=torch.float32)
    options = kernel_options(k)
    _quantize_rows_kernel[(triton.cdiv(rows, options["ROWS"]),)](
        x, q, scale, rows, k, INV_QMAX=1.0 / qmax, FLOOR=floor, INT8=dtype == torch.int8, **options)
    return q, scale
