"""Candidate for lever 2 of bench.md §6: the 8-bit GEMM of model/kernels/gemm.py as a persistent kernel that loads
its tiles through TMA descriptors (Hopper's bulk tensor copies) instead of pointer arithmetic, with the same
epilogue (rescale, bias, optional SiLU after the rounding to the output dtype). Not in the model until it is
measured faster: this script checks it and times it against the committed kernel and cuBLAS.

    TRITON_INTERPRET=1 python reports/2026-12-03-943afac-h200-e2e/gemm_tma.py check   # CPU: int8 parity
    python reports/2026-12-03-943afac-h200-e2e/gemm_tma.py                            # GPU: parity + timings

TMA needs 16-byte aligned rows: K a multiple of 16 (int8/FP8 inputs) and N of 8 (fp16 output); every DiT shape
is. Out-of-bounds tiles are zero-filled on load and clipped on store, so no masks in the main loop.
"""
import itertools
import json
import sys

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from model.kernels.gemm import scaled_gemm
from model.quantize import quantize_rows


@triton.jit
def _tma_gemm_kernel(a_desc, b_desc, c_desc, sa_ptr, sb_ptr, bias_ptr, M, N, K, HAS_BIAS: tl.constexpr,
                     INT8: tl.constexpr, SILU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, NUM_SMS: tl.constexpr, STAGES: tl.constexpr,
                     WARP_SPECIALIZE: tl.constexpr):
    grid_m, grid_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    tiles = grid_m * grid_n
    for tile in tl.range(tl.program_id(0), tiles, NUM_SMS, flatten=True, num_stages=STAGES,
                         warp_specialize=WARP_SPECIALIZE):
        group = tile // (GROUP_M * grid_n)       # grouped order, as the committed kernel
        first_m = group * GROUP_M
        size_m = min(grid_m - first_m, GROUP_M)
        pid_m = first_m + (tile % (GROUP_M * grid_n)) % size_m
        pid_n = (tile % (GROUP_M * grid_n)) // size_m
        off_m, off_n = pid_m * BLOCK_M, pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32 if INT8 else tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):
            a = a_desc.load([off_m, k * BLOCK_K])
            b = b_desc.load([off_n, k * BLOCK_K])
            acc = tl.dot(a, b.T, acc, out_dtype=tl.int32 if INT8 else tl.float32)
        rm = off_m + tl.arange(0, BLOCK_M)
        rn = off_n + tl.arange(0, BLOCK_N)
        y = acc.to(tl.float32) * tl.load(sa_ptr + rm, mask=rm < M, other=0.0)[:, None]
        y = y * tl.load(sb_ptr + rn, mask=rn < N, other=0.0)[None, :]
        if HAS_BIAS:
            y = y + tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        if SILU:
            y = y.to(c_desc.dtype).to(tl.float32)
            y = tl.math.div_rn(y, 1.0 + tl.exp(-y))
        c_desc.store([off_m, off_n], y.to(c_desc.dtype))


def tma_scaled_gemm(qa, sa, qb, sb, bias, out_dtype, silu=False, block=(128, 256, 128), group_m=8, warps=8,
                    stages=3, num_sms=None, warp_specialize=False):
    (m, k), n = qa.shape, qb.shape[0]
    bm, bn, bk = block
    out = torch.empty(m, n, device=qa.device, dtype=out_dtype)
    sms = num_sms or (torch.cuda.get_device_properties(qa.device).multi_processor_count if qa.is_cuda else 4)
    tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    sb = sb.float().contiguous()
    _tma_gemm_kernel[(min(sms, tiles),)](
        TensorDescriptor.from_tensor(qa, [bm, bk]), TensorDescriptor.from_tensor(qb, [bn, bk]),
        TensorDescriptor.from_tensor(out, [bm, bn]), sa.float().contiguous(), sb, sb if bias is None else bias,
        m, n, k, HAS_BIAS=bias is not None, INT8=qa.dtype == torch.int8, SILU=silu, BLOCK_M=bm, BLOCK_N=bn,
        BLOCK_K=bk, GROUP_M=group_m, NUM_SMS=min(sms, tiles), STAGES=stages, WARP_SPECIALIZE=warp_specialize,
        num_warps=warps)
    return out


def operands(m, k, n, mode, device, dtype=torch.float16, seed=0):
    gen = torch.Generator(device).manual_seed(seed)
    x = torch.randn(m, k, device=device, dtype=dtype, generator=gen)
    w = torch.randn(n, k, device=device, dtype=dtype, generator=gen) / k ** 0.5
    bias = torch.randn(n, device=device, dtype=dtype, generator=gen)
    (qa, sa), (qw, sw) = quantize_rows(x, mode), quantize_rows(w, mode)
    return qa, sa, qw, sw[:, 0].contiguous(), bias


def check_on_cpu():
    """Triton's interpreter: int8 sums are exact, so the candidate must give the committed kernel's bits."""
    for (m, k, n), silu in itertools.product(((37, 64, 40), (70, 160, 24)), (False, True)):
        qa, sa, qw, sw, bias = operands(m, k, n, "w8a8", "cpu", torch.float32)
        ours = tma_scaled_gemm(qa, sa, qw, sw, bias, torch.float32, silu, block=(32, 32, 32), warps=4, stages=1)
        torch.testing.assert_close(ours, scaled_gemm(qa, sa, qw, sw, bias, torch.float32, silu), rtol=1e-6, atol=0)
    print("interpreter: the TMA kernel gives the committed kernel's int8 results")


def main_gpu():
    ms = lambda f: triton.testing.do_bench(f, warmup=25, rep=100)  # noqa: E731
    shapes = {"0.6B qkv": (1152, 3456), "0.6B proj": (1152, 1152), "0.6B inverted": (1152, 5760),
              "0.6B point": (2880, 1152), "1.6B qkv": (2240, 6720), "1.6B inverted": (2240, 11200),
              "1.6B point": (5600, 2240)}
    configs = [((128, 256, 128), 8, 3, False), ((128, 256, 128), 8, 4, False), ((128, 128, 128), 8, 4, False),
               ((256, 128, 128), 8, 3, False), ((128, 256, 64), 8, 4, False), ((128, 128, 128), 4, 4, False),
               ((128, 256, 128), 8, 3, True), ((128, 128, 128), 4, 4, True)]   # True: warp-specialised loop
    for (name, (k, n)), mode in itertools.product(shapes.items(), ("w8a8", "fp8")):
        m = 32768
        qa, sa, qw, sw, bias = operands(m, k, n, mode, "cuda")
        ref = scaled_gemm(qa, sa, qw, sw, bias, torch.float16)
        row = {"shape": name, "mode": mode, "M": m, "K": k, "N": n,
               "committed_ms": round(ms(lambda: scaled_gemm(qa, sa, qw, sw, bias, torch.float16)), 4)}
        for block, warps, stages, ws in configs:
            key = f"tma_{block[0]}x{block[1]}x{block[2]}_w{warps}_s{stages}" + ("_ws" if ws else "")
            try:
                out = tma_scaled_gemm(qa, sa, qw, sw, bias, torch.float16, block=block, warps=warps, stages=stages,
                                      warp_specialize=ws)
                err = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
                if err > (1e-3 if mode == "w8a8" else 2e-3):   # w8a8: the same int32 sums, FMA rounding only
                    raise AssertionError(f"relative difference {err:.2e} from the committed kernel")
                row[key] = round(ms(lambda: tma_scaled_gemm(qa, sa, qw, sw, bias, torch.float16, block=block,
                                                            warps=warps, stages=stages, warp_specialize=ws)), 4)
            except Exception as err:  # noqa: BLE001 (a config that does not compile or fit: record and go on)
                row[key] = repr(err)[:120]
        timed = {key: v for key, v in row.items() if key.startswith("tma_") and isinstance(v, float)}
        if timed:
            best = min(timed, key=timed.get)
            row["best"], row["speedup"] = best, round(row["committed_ms"] / timed[best], 3)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    check_on_cpu() if sys.argv[1:] == ["check"] else main_gpu()
