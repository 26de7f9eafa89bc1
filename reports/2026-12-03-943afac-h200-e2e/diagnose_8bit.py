"""Diagnose the 8-bit Triton path on the GPU: which part differs from the eager code."""
import torch, triton, traceback, torch.nn.functional as F
from model.kernels import gemm
from model.kernels.gemm import scaled_gemm, _scaled_gemm_kernel, _CONFIGS
from model.kernels.row_quant import quantize_rows as tq
from model.quantize import quantize_rows as eq, quantized_matmul
torch.manual_seed(0)
def rep(name, a, b):
    a, b = a.double(), b.double()
    d = (a - b).abs()
    print(f"{name}: max|d| {d.max().item():.3g} mism {(d>0).float().mean().item():.4f} rel_norm {(d.norm()/b.norm()).item():.3g}", flush=True)
for K, N in ((1152, 3456), (72, 40), (2880, 1152)):
  M = 4096
  print("== K N", K, N)
  x = torch.randn(M, K, device="cuda", dtype=torch.float16)
  try:
    for mode, dt in (("w8a8", torch.int8), ("fp8", torch.float8_e4m3fn)):
      q1, s1 = tq(x, 127.0 if mode == "w8a8" else 448.0, 1e-12, dt); q2, s2 = eq(x, mode)
      print(mode, "quant: values equal", torch.equal(q1.view(torch.int8), q2.view(torch.int8)), "scales equal", torch.equal(s1, s2),
            "n diff", (q1.view(torch.int8) != q2.view(torch.int8)).sum().item(), flush=True)
  except Exception: traceback.print_exc()
  try:  # integer exactness: small ints, unit scales, fp32 out
    a = torch.randint(-60, 61, (M, K), device="cuda", dtype=torch.int8); b = torch.randint(-60, 61, (N, K), device="cuda", dtype=torch.int8)
    one_a = torch.ones(M, 1, device="cuda"); one_b = torch.ones(N, device="cuda")
    ref = (a.double() @ b.double().t())
    rep("int8 tuned acc vs exact", scaled_gemm(a, one_a, b, one_b, None, torch.float32), ref)
    print("best config", gemm._tuned_scaled_gemm_kernel.best_config if hasattr(gemm._tuned_scaled_gemm_kernel, "best_config") else None)
    for cfg in _CONFIGS:
      out = torch.empty(M, N, device="cuda", dtype=torch.float32)
      grid = (triton.cdiv(M, cfg.kwargs["BLOCK_M"]) * triton.cdiv(N, cfg.kwargs["BLOCK_N"]),)
      _scaled_gemm_kernel[grid](a, b, out, one_a, one_b, one_b, M, N, K, HAS_BIAS=False, INT8=True, SILU=False,
                                num_stages=cfg.num_stages, num_warps=cfg.num_warps, **cfg.kwargs)
      rep(f"int8 cfg {cfg.kwargs} st{cfg.num_stages}", out, ref)
    if K >= 1152:
      rep("int_mm vs exact", torch._int_mm(a, b.t()), ref)
  except Exception: traceback.print_exc()
  try:  # full w8a8 layer pieces, same quantised inputs
    w = torch.randn(N, K, device="cuda", dtype=torch.float16) / K**.5; bias = torch.randn(N, device="cuda", dtype=torch.float16)
    qa, sa = eq(x, "w8a8"); qw, sw = eq(w, "w8a8")
    emu = quantized_matmul(qa, sa, qw, sw[:, 0], bias, torch.float16, "w8a8", emulate=True)
    rep("w8a8 gemm same operands, fp16", scaled_gemm(qa, sa, qw, sw[:, 0], bias, torch.float16), emu)
    emu32 = quantized_matmul(qa, sa, qw, sw[:, 0], bias, torch.float32, "w8a8", emulate=True)
    rep("w8a8 gemm same operands, fp32", scaled_gemm(qa, sa, qw, sw[:, 0], bias, torch.float32), emu32)
    rep("w8a8 silu fp32", scaled_gemm(qa, sa, qw, sw[:, 0], bias, torch.float32, silu=True), F.silu(emu32))
    qa, sa = eq(x, "fp8"); qw, sw = eq(w, "fp8")
    emu32 = quantized_matmul(qa, sa, qw, sw[:, 0], bias, torch.float32, "fp8", emulate=True)
    rep("fp8 triton fp32 vs emu", scaled_gemm(qa, sa, qw, sw[:, 0], bias, torch.float32), emu32)
    rep("fp8 cublas fp32 vs emu", quantized_matmul(qa, sa, qw, sw[:, 0], bias, torch.float32, "fp8") if K % 16 == 0 and N % 16 == 0 else emu32, emu32)
    rep("fp8 cublas fastacc fp32 vs emu", torch._scaled_mm(qa, qw.t(), scale_a=sa, scale_b=sw.t(), out_dtype=torch.float32, use_fast_accum=True) + bias.float() if K % 16 == 0 and N % 16 == 0 else emu32, emu32)
  except Exception: traceback.print_exc()
# candidate fix: the reciprocal multiply through fma(x, r, 0) so that it cannot contract with the rounding add
import triton.language as tl
from model.kernels.row_quant import RNE_MAGIC
@triton.jit
def _q_fma(x_ptr, q_ptr, K, BLOCK_K: tl.constexpr, USE_FMA: tl.constexpr):
    row = tl.program_id(0).to(tl.int64); cols = tl.arange(0, BLOCK_K); m = cols < K
    x = tl.load(x_ptr + row * K + cols, mask=m, other=0.0).to(tl.float32)
    s = tl.maximum(tl.max(tl.abs(x), axis=0), 1e-12) * (1.0 / 127.0)
    r = tl.math.div_rn(1.0, s)
    y = tl.fma(x, r, 0.0) if USE_FMA else x * r
    q = tl.minimum(tl.maximum((y + RNE_MAGIC) - RNE_MAGIC, -127.0), 127.0).to(tl.int8)
    tl.store(q_ptr + row * K + cols, q, mask=m)
for K in (1152, 2880):
    x = torch.randn(32768, K, device="cuda", dtype=torch.float16)
    q2, _ = eq(x, "w8a8")
    for use in (False, True):
        q = torch.empty_like(q2)
        _q_fma[(x.shape[0],)](x, q, K, BLOCK_K=triton.next_power_of_2(K), USE_FMA=use)
        print("quant K", K, "fma" if use else "plain", "n diff", (q != q2).sum().item(), "of", q.numel(), flush=True)
    q1, _ = tq(x, 127.0, 1e-12, torch.int8)
    print("quant K", K, "committed kernel n diff", (q1 != q2).sum().item(), flush=True)
