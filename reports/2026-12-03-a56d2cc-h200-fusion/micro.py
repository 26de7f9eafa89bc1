"""Component timings of micro.jsonl, as run on the H200 (median ms of triton.testing.do_bench).

Run from the repository root with PYTHONPATH=$PWD at commit a56d2cc plus this session's uncommitted kernels. The
fp16 Triton GEMM it times (`gemm` on fp16 operands, keys triton_KxN / triton_silu_KxN) existed only in that working
tree: it lost to cuBLAS by 1.3-1.5x, so the committed model/kernels/gemm.py keeps only the 8-bit GEMM
(`scaled_gemm`); the other kernels (row_quant.quantize_rows, dwconv_glu(activated=...), the quantising
modulated_layer_norm) are as committed.
"""
import json, torch, triton, torch.nn.functional as F
from model.kernels.gemm import gemm
from model.kernels.mix_ffn import dwconv_glu
from model.kernels.row_quant import quantize_rows
from model.kernels.block_ops import modulated_layer_norm
ms = lambda f: triton.testing.do_bench(f, warmup=25, rep=100)
torch.manual_seed(0)
for name, d, f in (("0.6B", 1152, 2880), ("1.6B", 2240, 5600)):
  for M, hw in ((32768, (32, 32)), (2048, (32, 32))):
    B = M // 1024
    x = torch.randn(M, d, device="cuda", dtype=torch.float16)
    r = dict(model=name, M=M)
    for K, N in ((d, 3 * d), (d, d), (d, 2 * f), (f, d)):
        a = torch.randn(M, K, device="cuda", dtype=torch.float16); w = torch.randn(N, K, device="cuda", dtype=torch.float16) / K**.5
        b = torch.randn(N, device="cuda", dtype=torch.float16)
        r[f"cublas_{K}x{N}"] = ms(lambda: F.linear(a, w, b))
        r[f"triton_{K}x{N}"] = ms(lambda: gemm(a, w, b))
        if N == 2 * f:
            r[f"cublas_silu_{K}x{N}"] = ms(lambda: F.silu(F.linear(a, w, b)))
            r[f"triton_silu_{K}x{N}"] = ms(lambda: gemm(a, w, b, activation="silu"))
        r[f"quant_{K}"] = ms(lambda: quantize_rows(a, 127.0, 1e-12, torch.int8))
    h = torch.randn(B, 1024, 2 * f, device="cuda", dtype=torch.float16)
    wd = torch.randn(2 * f, 1, 3, 3, device="cuda", dtype=torch.float16); bd = torch.randn(2 * f, device="cuda", dtype=torch.float16)
    r["dwconv_silu"] = ms(lambda: dwconv_glu(h, wd, bd, hw))
    r["dwconv_activated"] = ms(lambda: dwconv_glu(h, wd, bd, hw, activated=True))
    xs = torch.randn(B, 1024, d, device="cuda", dtype=torch.float16); tab = torch.randn(B, 6, d, device="cuda", dtype=torch.float16)
    sh, sc = tab[:, :1], tab[:, 1:2]
    r["norm"] = ms(lambda: modulated_layer_norm(xs, sh, sc, 1e-6))
    r["norm_quant"] = ms(lambda: modulated_layer_norm(xs, sh, sc, 1e-6, (127.0, 1e-12, torch.int8)))
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
