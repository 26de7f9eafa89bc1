"""Triton kernels of the quantised GEMMs (model/quantize.py; paper §4, Table 5).

`quantize_rows`: one pass per token row (read once, write the 8-bit row and its scale), where eager PyTorch makes
five (|x|, max, divide, round/clamp, cast). `scaled_mm`: the 8-bit GEMM with the rescale (per-token × per-channel
scales) and the bias in its epilogue, so the int32 accumulator never goes to memory, as cuBLAS's `_int_mm` makes it.
Both compute the eager code's operations in its order (IEEE division, the same fp32 epilogue), so that W8A8 results
are meant to be bit-identical to it (tests/test_quantize.py checks this on the GPU and in the interpreter).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# 1.5·2^23: (y + M) − M rounds an fp32 |y| < 2^22 to the nearest integer, ties to even (constexpr: a global in @jit)
RNE_MAGIC = tl.constexpr(12582912.0)


@triton.jit
def _quantize_rows_kernel(x_ptr, q_ptr, s_ptr, K, INV_QMAX: tl.constexpr, FLOOR: tl.constexpr,
                          INT8: tl.constexpr, BLOCK_K: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_K)
    inside = cols < K
    x = tl.load(x_ptr + row * K + cols, mask=inside, other=0.0).to(tl.float32)
    scale = tl.maximum(tl.max(tl.abs(x), axis=0), FLOOR) * INV_QMAX
    y = tl.math.div_rn(x, scale)    # IEEE division (Triton's `/` is approximate), as the eager code divides
    if INT8:
        q = tl.minimum(tl.maximum((y + RNE_MAGIC) - RNE_MAGIC, -127.0), 127.0).to(tl.int8)
    else:
        q = y.to(tl.float8e4nv)
    tl.store(q_ptr + row * K + cols, q, mask=inside)
    tl.store(s_ptr + row, scale)


def quantize_rows(x: torch.Tensor, qmax: float, floor: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, K) contiguous → (8-bit rows of `dtype`, (rows, 1) fp32 scales)."""
    x = x.contiguous()
    rows, k = x.shape
    q = torch.empty(rows, k, device=x.device, dtype=dtype)
    scale = torch.empty(rows, 1, device=x.device, dtype=torch.float32)
    block = triton.next_power_of_2(k)
    _quantize_rows_kernel[(rows,)](x, q, scale, k, INV_QMAX=1.0 / qmax, FLOOR=floor, INT8=dtype == torch.int8,
                                   BLOCK_K=block, num_warps=max(1, min(16, block // 256)))
    return q, scale


_CONFIGS = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_stages=s, num_warps=w)
            for bm, bn, bk, s, w in ((128, 256, 128, 3, 8), (128, 128, 128, 4, 8), (256, 128, 128, 3, 8),
                                     (64, 128, 128, 4, 4))]


@triton.jit
def _scaled_mm_kernel(a_ptr, b_ptr, c_ptr, sa_ptr, sb_ptr, bias_ptr, M, N, K, HAS_BIAS: tl.constexpr,
                      INT8: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      GROUP_M: tl.constexpr):
    # a (M, K) and b (N, K) row-major: c = (a · bᵀ) ⊙ (sa · sbᵀ) + bias
    pid = tl.program_id(0)
    grid_m, grid_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * grid_n)            # grouped order: a band of GROUP_M row blocks shares b in L2
    first_m = group * GROUP_M
    size_m = min(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * grid_n)) % size_m
    pid_n = (pid % (GROUP_M * grid_n)) // size_m
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + (rm % M).to(tl.int64)[:, None] * K + rk[None, :]
    b_ptrs = b_ptr + (rn % N).to(tl.int64)[None, :] * K + rk[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32 if INT8 else tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        a = tl.load(a_ptrs, mask=rk[None, :] < K - k * BLOCK_K, other=0.0)
        b = tl.load(b_ptrs, mask=rk[:, None] < K - k * BLOCK_K, other=0.0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32 if INT8 else tl.float32)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    sa = tl.load(sa_ptr + rm, mask=rm < M, other=0.0)
    sb = tl.load(sb_ptr + rn, mask=rn < N, other=0.0)
    y = acc.to(tl.float32) * sa[:, None]
    y = y * sb[None, :]
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    inside = (rm < M)[:, None] & (rn < N)[None, :]
    tl.store(c_ptr + rm.to(tl.int64)[:, None] * N + rn[None, :], y.to(c_ptr.dtype.element_ty), mask=inside)


# Tuned on the GPU; the interpreter (CPU tests) cannot time configs, so it runs one small tile.
_tuned_scaled_mm_kernel = triton.autotune(configs=_CONFIGS, key=["M", "N", "K"])(_scaled_mm_kernel)
INTERPRETER_TILE = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=2)


def scaled_mm(qa: torch.Tensor, sa: torch.Tensor, qb: torch.Tensor, sb: torch.Tensor, bias: torch.Tensor | None,
              out_dtype: torch.dtype) -> torch.Tensor:
    """(qa · qbᵀ) ⊙ (sa · sbᵀ) + bias in `out_dtype`: qa (M, K), sa (M, 1) fp32, qb (N, K), sb (N,) fp32, both
    int8 or both float8_e4m3fn; the epilogue rounds in fp32 in the eager code's order."""
    qa, qb = qa.contiguous(), qb.contiguous()
    (m, k), n = qa.shape, qb.shape[0]
    out = torch.empty(m, n, device=qa.device, dtype=out_dtype)
    sb = sb.float().contiguous()
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    args = (qa, qb, out, sa.float().contiguous(), sb, sb if bias is None else bias.contiguous(), m, n, k)
    flags = dict(HAS_BIAS=bias is not None, INT8=qa.dtype == torch.int8)
    if qa.is_cuda:
        _tuned_scaled_mm_kernel[grid](*args, **flags)
    else:
        _scaled_mm_kernel[grid](*args, **flags, **INTERPRETER_TILE)
    return out
