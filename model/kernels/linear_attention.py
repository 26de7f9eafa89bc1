"""Fused ReLU linear attention in two Triton kernels (paper §2.2 kernel fusion, Eq. 1–2).

The eager path (model/linear_attention.py) makes head-major fp32 copies of q, k and v, pads v with ones, runs two
batched GEMMs and divides in a third pass. Here the kernels read q, k, v straight out of the qkv projection (any
row stride, channels contiguous) in the activation dtype and never write an fp32 copy:
1. `_kv_kernel`: per (row, head, slice of tokens) the d×d product φ(K)ᵀV and the column sums of φ(K) (the
   normaliser row the ones-column of V would give), accumulated in fp32. fp16/bf16 products are exact in fp32,
   so the tensor-core dot loses nothing against the eager fp32 GEMM; fp32 inputs use an IEEE dot.
2. `_out_kernel`: per block of query tokens, sums the token slices, then φ(Q)·[KV | Σφ(K)] in fp32 (IEEE dot)
   and the division by (normaliser + eps), written in the output dtype at the token-major (B, N, D) position.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_N = 64                 # tokens per step of the φ(K)ᵀV loop
BLOCK_M = 64                 # query tokens per program of the output kernel
TARGET_PROGRAMS = 528        # 4 waves of the H100's 132 SMs for the φ(K)ᵀV kernel


@triton.jit
def _kv_kernel(k_ptr, v_ptr, kv_ptr, ks_ptr, N, heads, tokens_per_split, stride_kb, stride_kn, stride_vb,
               stride_vn, HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr, IEEE: tl.constexpr):
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b = (bh // heads).to(tl.int64)  # batch offsets pass 2^31 elements at 4K x 16
    h = bh % heads
    cols = h * HEAD_DIM + tl.arange(0, HEAD_DIM)
    acc = tl.zeros((HEAD_DIM, HEAD_DIM), dtype=tl.float32)
    ksum = tl.zeros((HEAD_DIM,), dtype=tl.float32)
    start = split * tokens_per_split
    stop = tl.minimum(start + tokens_per_split, N)
    for n0 in range(start, stop, BLOCK):
        rows = n0 + tl.arange(0, BLOCK)
        inside = (rows < stop)[:, None]
        k = tl.load(k_ptr + b * stride_kb + rows[:, None] * stride_kn + cols[None, :], mask=inside, other=0.0)
        v = tl.load(v_ptr + b * stride_vb + rows[:, None] * stride_vn + cols[None, :], mask=inside, other=0.0)
        k = tl.maximum(k, 0.0).to(v.dtype)  # ReLU is exact in any dtype; the scalar 0.0 promotes
        if IEEE:
            acc += tl.dot(tl.trans(k), v, input_precision="ieee")
        else:
            acc += tl.dot(tl.trans(k), v)
        ksum += tl.sum(k.to(tl.float32), axis=0)
    base = split * tl.num_programs(0) + bh
    d = tl.arange(0, HEAD_DIM)
    tl.store(kv_ptr + base * HEAD_DIM * HEAD_DIM + d[:, None] * HEAD_DIM + d[None, :], acc)
    tl.store(ks_ptr + base * HEAD_DIM + d, ksum)


@triton.jit
def _out_kernel(q_ptr, kv_ptr, ks_ptr, out_ptr, N, heads, splits, eps, stride_qb, stride_qn, stride_ob, stride_on,
                HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr):
    bh = tl.program_id(0)
    b = (bh // heads).to(tl.int64)  # batch offsets pass 2^31 elements at 4K x 16
    h = bh % heads
    d = tl.arange(0, HEAD_DIM)
    kv = tl.zeros((HEAD_DIM, HEAD_DIM), dtype=tl.float32)
    ksum = tl.zeros((HEAD_DIM,), dtype=tl.float32)
    for s in range(splits):  # fixed order: the result does not depend on scheduling
        base = s * tl.num_programs(0) + bh
        kv += tl.load(kv_ptr + base * HEAD_DIM * HEAD_DIM + d[:, None] * HEAD_DIM + d[None, :])
        ksum += tl.load(ks_ptr + base * HEAD_DIM + d)
    rows = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = (rows < N)[:, None]
    cols = h * HEAD_DIM + d
    q = tl.load(q_ptr + b * stride_qb + rows[:, None] * stride_qn + cols[None, :], mask=inside, other=0.0)
    q = tl.maximum(q.to(tl.float32), 0.0)
    num = tl.dot(q, kv, input_precision="ieee")                           # (BLOCK, d)
    den = tl.sum(q * ksum[None, :], axis=1)                               # (BLOCK,)
    out = num / (den[:, None] + eps)
    tl.store(out_ptr + b * stride_ob + rows[:, None] * stride_on + cols[None, :],
             out.to(out_ptr.dtype.element_ty), mask=inside)


def supported(q: torch.Tensor, heads: int) -> bool:
    """Whether the kernels take these inputs: channels contiguous, a power-of-two head width of 16 to 128."""
    d = q.shape[-1] // heads
    return d in (16, 32, 64, 128) and q.stride(-1) == 1 and q.dim() == 3


def fused_relu_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, eps: float,
                                out_dtype: torch.dtype) -> torch.Tensor:
    """Same contract as model.linear_attention.relu_linear_attention: (B, N, D) views in, (B, N, D) out."""
    B, N, D = q.shape
    d = D // heads
    for name, z in (("k", k), ("v", v)):
        if z.shape != q.shape or z.stride(-1) != 1 or z.dtype != q.dtype:
            raise ValueError(f"fused linear attention: {name} {tuple(z.shape)} {z.dtype} does not match q "
                             f"{tuple(q.shape)} {q.dtype} with contiguous channels")
    # Split the token loop so that small batches still fill the GPU; the slices are summed in a fixed order.
    splits = max(1, min(triton.cdiv(N, BLOCK_N), TARGET_PROGRAMS // (B * heads)))
    tokens_per_split = triton.cdiv(triton.cdiv(N, splits), BLOCK_N) * BLOCK_N
    splits = triton.cdiv(N, tokens_per_split)
    kv = torch.empty((splits, B * heads, d, d), device=q.device, dtype=torch.float32)
    ks = torch.empty((splits, B * heads, d), device=q.device, dtype=torch.float32)
    _kv_kernel[(B * heads, splits)](k, v, kv, ks, N, heads, tokens_per_split, k.stride(0), k.stride(1),
                                    v.stride(0), v.stride(1), HEAD_DIM=d, BLOCK=BLOCK_N,
                                    IEEE=q.dtype == torch.float32)
    out = torch.empty((B, N, D), device=q.device, dtype=out_dtype)
    _out_kernel[(B * heads, triton.cdiv(N, BLOCK_M))](q, kv, ks, out, N, heads, splits, eps, q.stride(0),
                                                      q.stride(1), out.stride(0), out.stride(1), HEAD_DIM=d,
                                                      BLOCK=BLOCK_M)
    return out
