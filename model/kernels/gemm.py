"""The 8-bit GEMM of the quantised DiT with its epilogue fused (paper §4, Table 5; model/quantize.py).

y = act((a · bᵀ) ⊙ (sa · sbᵀ) + bias) for a (M, K), b (N, K) row-major, both int8 (int32 accumulation) or both
float8_e4m3fn (fp32 accumulation). The epilogue is the eager code's operations in its order, in fp32: the per-token
× per-channel rescale, the bias, then, with `silu`, the rounding to the output dtype that the eager
GEMM's output gets before its SiLU, and the SiLU. So the int32 sums never go to memory (cuBLAS's `_int_mm` writes
them), the bias is no pass of its own (cuBLAS's row-wise scaled FP8 GEMM adds none), and neither is Mix-FFN's SiLU
after its inverted 1×1 conv (docs/model.md §1.7). In fp16, cuBLAS beats our pointer-arithmetic GEMM by 1.3–1.5× on
Sana's shapes (H200), so the unquantised model keeps cuBLAS's GEMMs.

Two kernels, one epilogue. On Hopper the GEMM is persistent (one program per SM walks the output tiles in grouped
order) and loads its tiles, and stores its output, through TMA descriptors built on the host: 1.10–1.26× faster
than the pointer-arithmetic kernel on all 14 DiT shape × mode pairs at M = 32768 on an H200, with the same int32
sums (reports/2026-12-03-07a3872-h200/gemm_tma.jsonl). TMA wants 16-byte aligned bases and row strides; calls that
do not meet that (`uses_tma`), and other GPUs, run the pointer kernel. Triton's interpreter (the CPU tests) runs
both kernels with a small tile, each on the calls the GPU would give it.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

_CONFIGS = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_stages=s, num_warps=w)
            for bm, bn, bk, s, w in ((128, 256, 128, 3, 8), (128, 128, 128, 4, 8), (256, 128, 128, 3, 8),
                                     (64, 128, 128, 4, 4))]


def _set_block_shapes(nargs: dict) -> None:
    """Autotune pre-hook: the host descriptors copy the tiles of the config about to run."""
    bm, bn, bk = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["BLOCK_K"]
    nargs["a_desc"].block_shape = [bm, bk]
    nargs["b_desc"].block_shape = [bn, bk]
    nargs["c_desc"].block_shape = [bm, bn]


# The best on the H200 (the report's jsonl): STAGES pipelines the flattened tile loop, as measured; the 128² tile is
# for small M, where 128×256 tiles leave SMs idle.
_TMA_CONFIGS = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "STAGES": s,
                               "WARP_SPECIALIZE": ws}, num_warps=w, pre_hook=_set_block_shapes)
                for bm, bn, bk, w, s, ws in ((128, 256, 128, 8, 3, False), (256, 128, 128, 8, 3, False),
                                             (128, 256, 128, 8, 3, True), (128, 128, 128, 4, 4, False))]


@triton.jit
def _grouped_tile(tile, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(row block, column block) of output tile `tile`: a band of GROUP_M row blocks shares b's tiles in L2."""
    grid_m, grid_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = tile // (GROUP_M * grid_n)
    first_m = group * GROUP_M
    size_m = min(grid_m - first_m, GROUP_M)
    return first_m + (tile % (GROUP_M * grid_n)) % size_m, (tile % (GROUP_M * grid_n)) // size_m


@triton.jit
def _epilogue(acc, rm, rn, sa_ptr, sb_ptr, bias_ptr, M, N, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
              OUT_DTYPE: tl.constexpr):
    """The sums (rows rm, columns rn) rescaled, biased and, with SILU, rounded to OUT_DTYPE then activated."""
    y = acc.to(tl.float32) * tl.load(sa_ptr + rm, mask=rm < M, other=0.0)[:, None]
    y = y * tl.load(sb_ptr + rn, mask=rn < N, other=0.0)[None, :]
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    if SILU:
        y = y.to(OUT_DTYPE).to(tl.float32)
        y = tl.math.div_rn(y, 1.0 + tl.exp(-y))
    return y.to(OUT_DTYPE)


@triton.jit
def _scaled_gemm_kernel(a_ptr, b_ptr, c_ptr, sa_ptr, sb_ptr, bias_ptr, M, N, K, HAS_BIAS: tl.constexpr,
                        INT8: tl.constexpr, SILU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    pid_m, pid_n = _grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
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
    y = _epilogue(acc, rm, rn, sa_ptr, sb_ptr, bias_ptr, M, N, HAS_BIAS, SILU, c_ptr.dtype.element_ty)
    inside = (rm < M)[:, None] & (rn < N)[None, :]
    tl.store(c_ptr + rm.to(tl.int64)[:, None] * N + rn[None, :], y, mask=inside)


@triton.jit
def _tma_scaled_gemm_kernel(a_desc, b_desc, c_desc, sa_ptr, sb_ptr, bias_ptr, M, N, K, HAS_BIAS: tl.constexpr,
                            INT8: tl.constexpr, SILU: tl.constexpr, OUT_DTYPE: tl.constexpr, NUM_SMS: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                            GROUP_M: tl.constexpr, STAGES: tl.constexpr, WARP_SPECIALIZE: tl.constexpr):
    # OUT_DTYPE is c_desc's dtype, passed because the autotuner's key cannot read a descriptor's dtype. The grid is
    # min(NUM_SMS, tiles): with fewer tiles than SMs each program runs one tile, so the stride NUM_SMS stays right.
    # Tiles past the edges load zeros and store nothing outside the output, so the loop has no masks.
    tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    for tile in tl.range(tl.program_id(0), tiles, NUM_SMS, flatten=True, num_stages=STAGES,
                         warp_specialize=WARP_SPECIALIZE):
        pid_m, pid_n = _grouped_tile(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        off_m, off_n = pid_m * BLOCK_M, pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32 if INT8 else tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):
            a = a_desc.load([off_m, k * BLOCK_K])
            b = b_desc.load([off_n, k * BLOCK_K])
            acc = tl.dot(a, b.T, acc, out_dtype=tl.int32 if INT8 else tl.float32)
        rm = off_m + tl.arange(0, BLOCK_M)
        rn = off_n + tl.arange(0, BLOCK_N)
        c_desc.store([off_m, off_n], _epilogue(acc, rm, rn, sa_ptr, sb_ptr, bias_ptr, M, N, HAS_BIAS, SILU,
                                               OUT_DTYPE))


# Tuned on the GPU; the interpreter (CPU tests) cannot time configs, so it runs one small tile, and a persistent
# "SM" count below the tile count of the tests' shapes, so that its programs loop.
_tuned_scaled_gemm_kernel = triton.autotune(configs=_CONFIGS, key=["M", "N", "K", "SILU"])(_scaled_gemm_kernel)
_tuned_tma_scaled_gemm_kernel = triton.autotune(configs=_TMA_CONFIGS, key=["M", "N", "K", "SILU", "INT8",
                                                                          "OUT_DTYPE"])(_tma_scaled_gemm_kernel)
INTERPRETER_TILE = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=2)
INTERPRETER_SMS = 4


@functools.cache
def _gpu(device: torch.device) -> tuple[bool, int]:
    """(whether it is a Hopper, where the TMA configs were measured and fit in shared memory; its SM count)."""
    props = torch.cuda.get_device_properties(device)
    return props.major == 9, props.multi_processor_count


def uses_tma(qa: torch.Tensor, qb: torch.Tensor, out_dtype: torch.dtype) -> bool:
    """Whether scaled_gemm runs the TMA kernel on these (contiguous) operands."""
    if qa.is_cuda and not _gpu(qa.device)[0]:
        return False
    # TMA copies need 16-byte aligned base addresses and row strides (K bytes for the 8-bit operands, N·itemsize
    # for the output, whose fresh allocation is aligned), and non-empty dimensions; the pointer kernel takes the rest.
    (m, k), n = qa.shape, qb.shape[0]
    return (m * n * k > 0 and k % 16 == 0 and n * out_dtype.itemsize % 16 == 0
            and qa.data_ptr() % 16 == 0 and qb.data_ptr() % 16 == 0)


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
    scales = (sa.float().contiguous(), sb, sb if bias is None else bias.contiguous())
    flags = dict(HAS_BIAS=bias is not None, INT8=qa.dtype == torch.int8, SILU=silu)
    tiles = lambda meta: triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"])  # noqa: E731
    if uses_tma(qa, qb, out_dtype):
        descs = [TensorDescriptor.from_tensor(t, [1, 1]) for t in (qa, qb, out)]  # tiles set by _set_block_shapes
        flags.update(OUT_DTYPE=getattr(tl, str(out_dtype).removeprefix("torch.")),
                     NUM_SMS=_gpu(qa.device)[1] if qa.is_cuda else INTERPRETER_SMS)
        grid = lambda meta: (min(meta["NUM_SMS"], tiles(meta)),)  # noqa: E731
        if qa.is_cuda:
            _tuned_tma_scaled_gemm_kernel[grid](*descs, *scales, m, n, k, **flags)
        else:
            tile = dict(INTERPRETER_TILE, STAGES=1, WARP_SPECIALIZE=False)
            _set_block_shapes(dict(zip(("a_desc", "b_desc", "c_desc"), descs), **tile))
            _tma_scaled_gemm_kernel[grid](*descs, *scales, m, n, k, **flags, **tile)
    elif qa.is_cuda:
        _tuned_scaled_gemm_kernel[lambda meta: (tiles(meta),)](qa, qb, out, *scales, m, n, k, **flags)
    else:
        _scaled_gemm_kernel[lambda meta: (tiles(meta),)](qa, qb, out, *scales, m, n, k, **flags, **INTERPRETER_TILE)
    return out
