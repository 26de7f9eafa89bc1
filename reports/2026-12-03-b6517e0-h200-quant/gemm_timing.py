"""Where a quantised GEMM's time goes, on Sana's shapes at batch 16 with CFG (M = 32,768 tokens at 1024 px):
fp16 F.linear; the bare GEMM on pre-quantised operands, cuBLAS's (`torch._int_mm`: int32 out, no rescale;
`torch._scaled_mm`: rescaled) and our Triton one (rescale + bias in the epilogue); the per-token activation
quantisation, eager and fused; and the whole QuantizedLinear of model/quantize.py with kernels eager and triton.
Median of triton's do_bench.

python reports/2026-12-03-b6517e0-h200-quant/gemm_timing.py > gemm.jsonl
"""
import json

import torch
import torch.nn.functional as F
from torch import nn
from triton.testing import do_bench

from model.kernels import quantized_gemm
from model.quantize import AMAX_FLOOR, QDTYPE, QMAX, QuantizedLinear, quantize_rows

M = 32768
SHAPES = {"Sana_600M": [(1152, 3456), (1152, 1152), (1152, 5760), (2880, 1152)],
          "Sana_1600M": [(2240, 6720), (2240, 2240), (2240, 11200), (5600, 2240)]}


def median_ms(fn) -> float:
    return do_bench(fn, return_mode="median")


def time_shape(model: str, k: int, n: int) -> dict:
    x = torch.randn(M, k, device="cuda", dtype=torch.float16)
    linear = nn.Linear(k, n, device="cuda", dtype=torch.float16)
    row = {"model": model, "M": M, "K": k, "N": n,
           "fp16_ms": median_ms(lambda: F.linear(x, linear.weight, linear.bias))}
    for mode in ("w8a8", "fp8"):
        layer = QuantizedLinear.from_module(linear, mode, kernels="eager")
        qx, sx = quantize_rows(x, mode)
        qw, sw = layer.weight_values, layer.weight_scale
        if mode == "w8a8":
            row["w8a8_cublas_gemm_ms"] = median_ms(lambda: torch._int_mm(qx, qw.t()))  # noqa: B023
        else:
            row["fp8_cublas_gemm_ms"] = median_ms(lambda: torch._scaled_mm(  # noqa: B023
                qx, qw.t(), scale_a=sx, scale_b=sw[None], out_dtype=torch.float16))  # noqa: B023
        row[f"{mode}_triton_gemm_ms"] = median_ms(  # the GEMM with its rescale + bias epilogue
            lambda: quantized_gemm.scaled_mm(qx, sx, qw, sw, linear.bias, torch.float16))  # noqa: B023
        row[f"{mode}_eager_quant_x_ms"] = median_ms(lambda: quantize_rows(x, mode))  # noqa: B023
        row[f"{mode}_triton_quant_x_ms"] = median_ms(lambda: quantized_gemm.quantize_rows(  # noqa: B023
            x, QMAX[mode], AMAX_FLOOR, QDTYPE[mode]))  # noqa: B023
        row[f"{mode}_eager_layer_ms"] = median_ms(lambda: layer(x))  # noqa: B023
        layer.kernels = "triton"
        row[f"{mode}_triton_layer_ms"] = median_ms(lambda: layer(x))  # noqa: B023
    flops = 2 * M * k * n
    for key in [key for key in row if key.endswith("ms") and "quant_x" not in key]:
        row[key.replace("_ms", "_tflops")] = flops / row[key] / 1e9
    return row


for model, shapes in SHAPES.items():
    for k, n in shapes:
        print(json.dumps(time_shape(model, k, n)), flush=True)
