"""The next device run's script (not run this session: the device budget was spent): the committed 8-bit GEMM
(`scaled_gemm`) against cuBLAS (`_int_mm` bare, `_scaled_mm` without bias) and fp16 `F.linear`, and the kernels above."""
import json, torch, triton, torch.nn.functional as F
from model.kernels.gemm import scaled_gemm
from model.kernels.mix_ffn import dwconv_glu
from model.kernels.row_quant import quantize_rows
from model.kernels.block_ops import modulated_layer_norm
from model.quantize import quantize_rows as eager_quantize
ms = lambda f: triton.testing.do_bench(f, warmup=25, rep=100)
torch.manual_seed(0)
for name, d, f in (("0.6B", 1152, 2880), ("1.6B", 2240, 5600)):
  for M in (32768, 2048):
    B = M // 1024
    r = dict(model=name, M=M)
    for K, N in ((d, 3 * d), (d, d), (d, 2 * f), (f, d)):
        a = torch.randn(M, K, device="cuda", dtype=torch.float16); w = torch.randn(N, K, device="cuda", dtype=torch.float16) / K**.5
        b = torch.randn(N, device="cuda", dtype=torch.float16)
        r[f"fp16_cublas_{K}x{N}"] = ms(lambda: F.linear(a, w, b))
        for mode, dt in (("w8a8", torch.int8), ("fp8", torch.float8_e4m3fn)):
            qa, sa = eager_quantize(a, mode); qw, sw = eager_quantize(w, mode)
            r[f"{mode}_triton_{K}x{N}"] = ms(lambda: scaled_gemm(qa, sa, qw, sw[:, 0], b, torch.float16))
            if mode == "fp8":
                r[f"fp8_cublas_nobias_{K}x{N}"] = ms(lambda: torch._scaled_mm(qa, qw.t(), scale_a=sa, scale_b=sw.t(), out_dtype=torch.float16))
            else:
                r[f"w8a8_cublas_intmm_bare_{K}x{N}"] = ms(lambda: torch._int_mm(qa, qw.t()))
        r[f"quant_{K}"] = ms(lambda: quantize_rows(a, 127.0, 1e-12, torch.int8))
    h = torch.randn(B, 1024, 2 * f, device="cuda", dtype=torch.float16)
    wd = torch.randn(2 * f, 1, 3, 3, device="cuda", dtype=torch.float16); bd = torch.randn(2 * f, device="cuda", dtype=torch.float16)
    r["dwconv_silu"] = ms(lambda: dwconv_glu(h, wd, bd, (32, 32)))
    r["dwconv_activated"] = ms(lambda: dwconv_glu(h, wd, bd, (32, 32), activated=True))
    xs = torch.randn(B, 1024, d, device="cuda", dtype=torch.float16); tab = torch.randn(B, 6, d, device="cuda", dtype=torch.float16)
    sh, sc = tab[:, :1], tab[:, 1:2]
    r["norm"] = ms(lambda: modulated_layer_norm(xs, sh, sc, 1e-6))
    r["norm_quant"] = ms(lambda: modulated_layer_norm(xs, sh, sc, 1e-6, (127.0, 1e-12, torch.int8)))
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
