"""The 8-bit GEMM of the quantised DiT with its epilogue fused (paper §4, Table 5; model/quantize.py).

y = act((a · bᵀ) ⊙ (sa · sbᵀ) + bias) for a (M, K), b (N, K) row-major, both int8 (int32 accumulation) or both
float8_e4m3fn (fp32 accumulation). The epilogue is the eager code's operations in its order, in fp32: the per-token
× per-channel rescale, the bias, then, with `silu`, the rounding to the output dtype that the eager
GEMM's output gets before its SiLU, and the SiLU. So the int32 sums never go to memory (cuBLAS's `_int_mm` writes
them), the bias is no pass of its own (cuBLAS's row-wise scaled FP8 GEMM adds none), and neither is Mix-FFN's SiLU
after its inverted 1×1 conv (docs/model.md §1.7). In fp16, cuBLAS beats this kernel by 1.3–1.5× on Sana's shapes
(H200), so the unquantised model keeps cuBLAS's GEMMs.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_CONFIGS = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_stages=s, num_warps=w)
            for bm, bn, bk, s, w in ((128, 256, 128, 3, 8), (128, 128, 128, 4, 8), (256, 128, 128, 3, 8),
                                     (64, 128, 128, 4, 4))]


@triton.jit
def _scaled_gemm_kernel(a_ptr, b_ptr, c_ptr, sa_ptr, sb_ptr, bias_ptr, M, N, K, HAS_BIAS: tl.constexpr,
                        INT8: tl.constexpr, SILU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
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
    y = acc.to(tl.float32) * tl.load(sa_ptr + rm, mask=rm < M, other=0.0)[:, None]
    y = y * tl.load(sb_ptr + rn, mask=rn < N, other=0.0)[None, :]
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    if SILU:
        y = y.to(c_ptr.dtype.element_ty).to(tl.float32)
        y = tl.math.div_rn(y, 1.0 + tl.exp(-y))
    inside = (rm < M)[:, None] & (rn < N)[None, :]
    tl.store(c_ptr + rm.to(tl.int64)[:, None] * N + rn[None, :], y.to(c_ptr.dtype.element_ty), mask=inside)


# Tuned on the GPU; the interpreter (CPU tests) cannot time configs, so it runs one small tile.
_tuned_scaled_gemm_kernel = triton.autotune(configs=_CONFIGS, key=["M", "N", "K", "SILU"])(_scaled_gemm_kernel)
INTERPRETER_TILE = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=2)


def scaled_gemm(qa: torch.Tensor, sa: torch.Tensor, qb: torch.Tensor, sb: torch.Tensor, bias: torch.Tensor | None,
                out_dtype: torch.dtype, silu: bool = False) -> torch.Tensor:
    """(qa · qbᵀ) ⊙ (sa · sbᵀ) + bias in `out_dtype`, then its SiLU if `silu`: qa (M, K), sa (M, 1) fp32, qb (N, K),
    sb (N,) fp32, both int8 or both float8_e4m3fn."""
    if qa.dtype != qb.dtype or qa.dtype not in (torch.int8, torch.float8_e4m3fn) or qa.shape[1] != qb.shape[1]:
        raise ValueError(f"scaled_gemm: operands {qa.dtype} {tuple(qa.shape)} and {qb.dtype} {tuple(qb.shape)}; "
                         f"expected both int8 or both float8_e4m3fn with one K")
    qa, qb = qa.contiguous(), qb.contiguous()
    (m, k), n = qa.shape, qb.shape[0]
    out = torch.empty(m, n, device=qa.device, dtype=out_dtype)
    sb = sb.float().contiguous()
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    args = (qa, qb, out, sa.float().contiguous(), sb, sb if bias is None else bias.contiguous(), m, n, k)
    flags = dict(HAS_BIAS=bias is not None, INT8=qa.dtype == torch.int8, SILU=silu)
    if qa.is_cuda:
        _tuned_scaled_gemm_kernel[grid](*args, **flags)
    else:
        _scaled_gemm_kernel[grid](*args, **flags, **INTERPRETER_TILE)
    return out
