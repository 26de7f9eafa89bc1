"""Mix-FFN's middle in one Triton kernel (paper §2.2 kernel fusion, GLUMBConv; docs/model.md §1.7).

Eager: SiLU over the 2f inverted-conv channels, a cuDNN depth-wise 3×3 conv with bias, SiLU of the gate half and
the product: four passes over (B, N, 2f)-sized tensors plus layout conversions. Here one kernel reads the inverted
projection from memory once (each element three times from cache, once per horizontal tap), applies SiLU as it
loads (SiLU(0) = 0, so the conv's zero padding is unchanged), convolves both halves in fp32 and writes
value · SiLU(gate) once, token-major (B, N, f), ready for the point-wise projection. When the inverted conv's GEMM
has applied the SiLU in its epilogue (model/kernels/gemm.py), `activated=True` skips it here: the kernel then
computes no SiLU per input at all, where it otherwise computes three (one per horizontal tap).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

NUM_WARPS = 4
# Base tiling, which also sizes the grid for the choice below: 32 columns x 32 channels x 16 rows per program
# (a program also loads the row above and the row below its rows).
BLOCK_W, BLOCK_C, ROWS = 32, 32, 16
# Grids of at least this many base programs (batch 16 at 1024 px: 5,760; 4K at batch 1 too; batch 1 at 1024 px:
# 360) take the large tilings below.
LARGE_GRID = 2048


@dataclass(frozen=True)
class Tiling:
    block_w: int   # image columns per program
    block_c: int   # output channels per program
    rows: int      # image rows per program
    stages: int    # software-pipelining depth of the walk down the rows


# Fastest of 88 settings on one H200, each giving the same bits (reports/2026-12-03-07a3872-h200/
# sweep_dwconv.jsonl; 0.6B / 1.6B at batch 16 and 4K, 0.6B at batch 1), keyed by (large grid, activated input):
TILINGS = {
    (True, True): Tiling(32, 64, 32, 1),    # 0.420 -> 0.405 ms (0.6B), 0.821 -> 0.797 (1.6B)
    (True, False): Tiling(16, 16, 32, 1),   # 0.759 -> 0.683 ms, 1.452 -> 1.303: three SiLUs per input, small tiles
    (False, True): Tiling(32, 64, 8, 1),    # 0.046 -> 0.042 ms at batch 1
    (False, False): Tiling(32, 32, 16, 3),  # 0.062 -> 0.060 ms
}


@triton.jit
def _silu(x):
    # The approximate division (2 ulp of fp32) is plenty before an fp16/bf16 output and much cheaper.
    return tl.fdiv(x, 1.0 + tl.exp(-x), ieee_rounding=False)


@triton.jit
def _row_taps(src, row, H, W, F, cols, c, c_in, w_ptr, base: tl.constexpr, ACTIVATED: tl.constexpr):
    """SiLU of image row `row` (zero outside the image) at columns cols-1, cols, cols+1, convolved with the
    three horizontal taps of each kernel row i: h_i = Σ_j w[c, i, j] · SiLU(x[row, cols + j - 1]), i = 0, 1, 2."""
    h0 = tl.zeros((cols.shape[0], c.shape[0]), dtype=tl.float32)
    h1 = tl.zeros_like(h0)
    h2 = tl.zeros_like(h0)
    channel = (base + c) * 9
    for j in tl.static_range(3):
        cc = cols + j - 1
        ok = ((cc >= 0) & (cc < W) & (row >= 0) & (row < H))[:, None] & c_in[None, :]
        x = tl.load(src + (row * W + cc)[:, None] * (2 * F) + (base + c)[None, :], mask=ok,
                    other=0.0).to(tl.float32)
        if not ACTIVATED:
            x = _silu(x)
        h0 += x * tl.load(w_ptr + channel + j, mask=c_in, other=0.0).to(tl.float32)[None, :]
        h1 += x * tl.load(w_ptr + channel + 3 + j, mask=c_in, other=0.0).to(tl.float32)[None, :]
        h2 += x * tl.load(w_ptr + channel + 6 + j, mask=c_in, other=0.0).to(tl.float32)[None, :]
    return h0, h1, h2


@triton.jit
def _dwconv_glu_kernel(x_ptr, w_ptr, b_ptr, out_ptr, H, W, F, row_blocks, BLOCK_W: tl.constexpr,
                       BLOCK_C: tl.constexpr, ROWS: tl.constexpr, ACTIVATED: tl.constexpr, STAGES: tl.constexpr):
    # The program walks down its rows keeping the partial sums of the rows above, so each input is loaded and
    # passed through SiLU three times (once per horizontal tap) instead of nine:
    # out(r) = h_0(r - 1) + h_1(r) + h_2(r + 1), h_i as in _row_taps.
    cols = tl.program_id(0) * BLOCK_W + tl.arange(0, BLOCK_W)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    batch = (tl.program_id(2) // row_blocks).to(tl.int64)
    first = (tl.program_id(2) % row_blocks) * ROWS
    last = tl.minimum(first + ROWS, H)
    c_in = c < F
    src = x_ptr + batch * H * W * 2 * F
    dst = out_ptr + batch * H * W * F
    bias_v = tl.load(b_ptr + c, mask=c_in, other=0.0).to(tl.float32)[None, :]
    bias_g = tl.load(b_ptr + F + c, mask=c_in, other=0.0).to(tl.float32)[None, :]
    pend_v = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)     # h_0(R - 2) + h_1(R - 1): out(R - 1) less h_2(R)
    pend_g = tl.zeros_like(pend_v)
    above_v = tl.zeros_like(pend_v)                             # h_0(R - 1)
    above_g = tl.zeros_like(pend_v)
    for row in tl.range(first - 1, last + 1, num_stages=STAGES):
        v0, v1, v2 = _row_taps(src, row, H, W, F, cols, c, c_in, w_ptr, 0, ACTIVATED)
        g0, g1, g2 = _row_taps(src, row, H, W, F, cols, c, c_in, w_ptr, F, ACTIVATED)
        value = pend_v + v2 + bias_v
        gate = pend_g + g2 + bias_g
        ok = ((cols < W) & (row - 1 >= first))[:, None] & c_in[None, :]
        tl.store(dst + ((row - 1) * W + cols)[:, None] * F + c[None, :],
                 (value * _silu(gate)).to(out_ptr.dtype.element_ty), mask=ok)
        pend_v, pend_g = above_v + v1, above_g + g1
        above_v, above_g = v0, g0


def dwconv_glu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, hw: tuple[int, int],
               activated: bool = False) -> torch.Tensor:
    """value · SiLU(gate) of DWConv3×3(SiLU(x)) + bias, x (B, N, 2f) token-major, weight (2f, 1, 3, 3), bias (2f,);
    the first f channels are the value, the last f the gate (GLUMBConv's chunk order). Returns (B, N, f).
    `activated`: x is SiLU(x) already."""
    B, N, C = x.shape
    H, W = hw
    if N != H * W or C % 2 or weight.shape != (C, 1, 3, 3) or bias.shape != (C,):
        raise ValueError(f"dwconv_glu: x {tuple(x.shape)}, weight {tuple(weight.shape)}, bias {tuple(bias.shape)} "
                         f"do not fit a {H}x{W} grid of {C} channels")
    F = C // 2
    x, weight, bias = x.contiguous(), weight.contiguous(), bias.contiguous()
    out = torch.empty((B, N, F), device=x.device, dtype=x.dtype)
    tile = tiling(B, H, W, F, activated)
    row_blocks = triton.cdiv(H, tile.rows)
    grid = (triton.cdiv(W, tile.block_w), triton.cdiv(F, tile.block_c), B * row_blocks)
    _dwconv_glu_kernel[grid](x, weight, bias, out, H, W, F, row_blocks, BLOCK_W=tile.block_w, BLOCK_C=tile.block_c,
                             ROWS=tile.rows, ACTIVATED=activated, STAGES=tile.stages, num_warps=NUM_WARPS)
    return out


def tiling(batch: int, height: int, width: int, channels: int, activated: bool) -> Tiling:
    """The tiling of a (batch, height x width, 2 x channels) input: by the size of its grid at the base tiling."""
    programs = triton.cdiv(width, BLOCK_W) * triton.cdiv(channels, BLOCK_C) * batch * triton.cdiv(height, ROWS)
    return TILINGS[programs >= LARGE_GRID, activated]
