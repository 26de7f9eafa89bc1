"""The DiT's cross-attention (image tokens to 300 caption tokens with a key-padding mask; model/transformer.py) under
each of torch's SDPA backends, and under varlen flash attention where this torch has it: time per call at batch 16
with CFG and the relative error against a float64 reference. Lever 3 of the previous report's §6: measured only.

    python reports/2026-12-03-07a3872-h200/xattn.py        # GPU
"""
import json

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

ms = lambda f: triton.testing.do_bench(f, warmup=10, rep=50)  # noqa: E731
for name, heads, head_dim in (("0.6B", 16, 72), ("1.6B", 20, 112)):
    B, N, L = 32, 1024, 300
    gen = torch.Generator("cuda").manual_seed(0)
    q = torch.randn(B, heads, N, head_dim, device="cuda", dtype=torch.float16, generator=gen)
    k = torch.randn(B, heads, L, head_dim, device="cuda", dtype=torch.float16, generator=gen)
    v = torch.randn(B, heads, L, head_dim, device="cuda", dtype=torch.float16, generator=gen)
    lengths = torch.randint(8, L + 1, (B,), device="cuda", generator=gen)
    keep = torch.arange(L, device="cuda")[None, :] < lengths[:, None]            # right padding, as the caption's
    bool_mask = keep[:, None, None, :]
    bias = ((~keep).half() * -60000.0)[:, None, None, :]
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=bool_mask)
    row = {"model": name, "B": B, "heads": heads, "head_dim": head_dim, "N": N, "L": L,
           "mean_valid_keys": round(lengths.float().mean().item(), 1)}

    def record(key, fn):
        try:
            out = fn()
            err = ((out.double() - ref).norm() / ref.norm()).item()
            row[key] = {"ms": round(ms(fn), 4), "rel_err": float(f"{err:.2e}")}
        except Exception as err:  # noqa: BLE001 (a backend that refuses these inputs: record and go on)
            row[key] = repr(err)[:120]

    record("default_bool", lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bool_mask))
    record("default_bias", lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias))
    for backend in (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH):
        def run(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=bool_mask)
        record(f"{backend.name.lower()}_bool", run)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):   # the floor without a mask: all 300 keys
        record("flash_no_mask_(not_equal)", lambda: F.scaled_dot_product_attention(q, k, v))
    try:
        from torch.nn.attention.varlen import varlen_attn   # torch >= 2.10
        q_packed = q.transpose(1, 2).reshape(B * N, heads, head_dim)
        cu_q = torch.arange(0, B + 1, device="cuda", dtype=torch.int32) * N
        cu_k = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).to(torch.int32)
        k_packed = k.transpose(1, 2)[keep]        # (sum of lengths, heads, head_dim)
        v_packed = v.transpose(1, 2)[keep]
        max_k = int(lengths.max())

        def varlen():
            out = varlen_attn(q_packed, k_packed, v_packed, cu_q, cu_k, N, max_k)
            return out.reshape(B, N, heads, head_dim).transpose(1, 2)
        record("varlen_flash", varlen)
        record("varlen_flash_with_packing", lambda: varlen_attn(q_packed, k.transpose(1, 2)[keep],
                                                                v.transpose(1, 2)[keep], cu_q, cu_k, N, max_k)
               .reshape(B, N, heads, head_dim).transpose(1, 2))
        # No packing and no host sync (graph-capturable): each row's keys in place, only the first `lengths` used.
        cu_rows = torch.arange(0, B + 1, device="cuda", dtype=torch.int32) * L
        k_rows = k.transpose(1, 2).reshape(B * L, heads, head_dim)
        v_rows = v.transpose(1, 2).reshape(B * L, heads, head_dim)
        used = lengths.to(torch.int32)
        record("varlen_flash_seqused_k", lambda: varlen_attn(q_packed, k_rows, v_rows, cu_q, cu_rows, N, L,
                                                             seqused_k=used)
               .reshape(B, N, heads, head_dim).transpose(1, 2))
    except Exception as err:  # noqa: BLE001
        row["varlen_flash"] = repr(err)[:120]
    print(json.dumps(row), flush=True)
