"""The 8-bit GEMM at batch 1's M = 2,048 tokens (and batch 16's 32,768 for reference): the model's TMA path against
the pointer kernel it falls back to, both autotuned, on the DiT's shapes. §2 of bench.md: W8A8 at batch 1 got
0.4 ms per step slower with the TMA kernel, whose configs were tuned at M = 32,768 only.

    python reports/2026-12-03-07a3872-h200/gemm_small_m.py      # GPU (Hopper)
"""
import itertools
import json

import torch
import triton

from model.kernels import gemm
from model.quantize import quantize_rows

ms = lambda f: triton.testing.do_bench(f, warmup=25, rep=100)  # noqa: E731
SHAPES = {"0.6B qkv": (1152, 3456), "0.6B proj": (1152, 1152), "0.6B inverted": (1152, 5760),
          "0.6B point": (2880, 1152), "1.6B qkv": (2240, 6720), "1.6B inverted": (2240, 11200),
          "1.6B point": (5600, 2240)}
for m, (name, (k, n)), mode in itertools.product((2048, 32768), SHAPES.items(), ("w8a8", "fp8")):
    gen = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(m, k, device="cuda", dtype=torch.float16, generator=gen)
    w = torch.randn(n, k, device="cuda", dtype=torch.float16, generator=gen) / k ** 0.5
    bias = torch.randn(n, device="cuda", dtype=torch.float16, generator=gen)
    (qa, sa), (qw, sw) = quantize_rows(x, mode), quantize_rows(w, mode)
    sw = sw[:, 0].contiguous()
    assert gemm.uses_tma(qa, qw, torch.float16)
    tma = lambda: gemm.scaled_gemm(qa, sa, qw, sw, bias, torch.float16)  # noqa: E731
    out = torch.empty(m, n, device="cuda", dtype=torch.float16)
    flags = dict(HAS_BIAS=True, INT8=mode == "w8a8", SILU=False)
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    pointer = lambda: gemm._tuned_scaled_gemm_kernel[grid](qa, qw, out, sa.float(), sw, bias, m, n, k, **flags)  # noqa: E731
    pointer()
    err = ((tma().double() - out.double()).norm() / out.double().norm()).item()
    row = {"shape": name, "mode": mode, "M": m, "K": k, "N": n, "tma_ms": round(ms(tma), 4),
           "pointer_ms": round(ms(pointer), 4), "rel_diff": float(f"{err:.1e}")}
    row["tma_speedup"] = round(row["pointer_ms"] / row["tma_ms"], 3)
    print(json.dumps(row), flush=True)
