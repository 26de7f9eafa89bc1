"""W8A8 (paper §4, Table 5) and FP8 quantisation of the DiT (model/quantize.py) against a NumPy float64 closed form
of the scheme, the paper's choice of layers, and the tiny model's error against fp32. On a CUDA GPU the tensor-core
paths (`torch._int_mm`, `torch._scaled_mm`, our Triton kernels) are also checked against the emulation; the Triton
kernels also run in Triton's interpreter on the CPU (tests/conftest.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from model.config import get_preset
from model.kernels import gemm, row_quant
from model.quantize import (
    AMAX_FLOOR,
    QDTYPE,
    QuantizedLinear,
    QuantizedRows,
    quantize_rows,
    quantize_transformer,
    quantized_layer_names,
)
from model.transformer import build_transformer, modulated_input
from sana_eval.bench.e2e import E2ESpec, SanaWorkload
from sana_eval.bench.quantization import quantization_errors, relative_error
from test_bench_speed import TINY, TINY_E2E

CUDA = torch.cuda.is_available()
FP8_SUM_BOUND = 2e-3   # Hopper's FP8 MMA sums (cuBLAS's fast accumulation too): 4e-4 to 8e-4 measured on the H200
FP8_GPU = CUDA and torch.cuda.get_device_capability() >= (8, 9)   # FP8 tensor cores: the fused FP8 path's GPUs
HOPPER = CUDA and torch.cuda.get_device_capability()[0] == 9   # the TMA GEMM's GPUs (model/kernels/gemm.py)
QMAX = {"w8a8": 127, "fp8": 448}


def e4m3(v: np.ndarray) -> np.ndarray:
    """Round to nearest even onto float8_e4m3fn's grid: 3 mantissa bits, exponent bias 7, subnormals below 2^-6."""
    exponent = np.floor(np.log2(np.maximum(np.abs(v), 2.0**-6)))
    step = 2.0 ** (exponent - 3)
    return np.rint(v / step) * step


def reference_quantize(x: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The scheme's rows: float32 scale = max(|row|, 1e-12) · fl32(1/Q) and float32 x · fl32(1/scale), then the
    grid."""
    x = x.astype(np.float32)
    scale = np.maximum(np.abs(x).max(-1, keepdims=True), np.float32(1e-12)) * np.float32(1 / QMAX[mode])
    y = (x * (np.float32(1) / scale)).astype(np.float64)
    return (np.clip(np.rint(y), -127, 127) if mode == "w8a8" else e4m3(y)), scale.astype(np.float64)


def reference_linear(x: np.ndarray, w: np.ndarray, b: np.ndarray, mode: str) -> np.ndarray:
    qx, sx = reference_quantize(x, mode)
    qw, sw = reference_quantize(w, mode)
    if mode == "w8a8":  # the integer product, exact in int64
        acc = (qx.astype(np.int64) @ qw.astype(np.int64).T).astype(np.float64)
    else:
        acc = qx @ qw.T
    return acc * sx * sw.T + b


def random_rows(rows: int, cols: int, seed: int) -> torch.Tensor:
    """Rows of very different magnitudes, one all zero, so per-token scales matter."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=gen) * torch.logspace(-3, 2, rows)[:, None]
    x[1] = 0
    return x


@pytest.mark.parametrize("mode", ["w8a8", "fp8"])
def test_quantised_linear_equals_the_closed_form(mode):
    x, w = random_rows(37, 48, seed=1), random_rows(40, 48, seed=2)
    b = torch.randn(40, generator=torch.Generator().manual_seed(3))
    linear = nn.Linear(48, 40)
    with torch.no_grad():
        linear.weight.copy_(w)
        linear.bias.copy_(b)
    layer = QuantizedLinear.from_module(linear, mode)
    qx, sx = quantize_rows(x, mode)
    ref_qx, ref_sx = reference_quantize(x.numpy(), mode)
    np.testing.assert_array_equal(qx.double().numpy(), ref_qx)                  # the same grid points
    np.testing.assert_array_equal(sx.double().numpy(), ref_sx)
    np.testing.assert_array_equal(layer.weight_values.double().numpy(), reference_quantize(w.numpy(), mode)[0])
    out = layer(x.reshape(1, 37, 48)).reshape(37, 40).double().numpy()
    ref = reference_linear(x.numpy(), w.numpy(), b.numpy().astype(np.float64), mode)
    np.testing.assert_allclose(out, ref, rtol=2e-6, atol=2e-6 * np.abs(ref).max())
    assert not np.allclose(out, x.double().numpy() @ w.double().numpy().T + b.double().numpy(), rtol=1e-6)


@pytest.mark.parametrize("mode", ["w8a8", "fp8"])
def test_quantised_1x1_conv_takes_nchw_and_tokens_alike(mode):
    conv = nn.Conv2d(16, 24, 1)
    layer = QuantizedLinear.from_module(conv, mode)
    tokens = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(4))          # (B, N, C), N = 3 x 4
    nchw = tokens.unflatten(1, (3, 4)).permute(0, 3, 1, 2)                              # the eager Mix-FFN view
    torch.testing.assert_close(layer(nchw), layer(tokens).unflatten(1, (3, 4)).permute(0, 3, 1, 2), rtol=0, atol=0)
    ref = reference_linear(tokens.reshape(-1, 16).numpy(), conv.weight.detach().flatten(1).numpy(),
                           conv.bias.detach().double().numpy(), mode)
    np.testing.assert_allclose(layer(tokens).reshape(-1, 24).double().numpy(), ref, rtol=2e-6,
                               atol=2e-6 * np.abs(ref).max())


def expected_layers(depth: int, ffn: tuple[str, str]) -> list[str]:
    """Paper §4: each block's GEMMs but the cross-attention K/V projection; norms and linear attention have none."""
    per_block = ["attn.qkv", "attn.proj", "cross_attn.q_linear", "cross_attn.proj", *ffn]
    return [f"blocks.{i}.{name}" for i in range(depth) for name in per_block]


@pytest.mark.parametrize("overrides, ffn", [({}, ("mlp.inverted_conv.conv", "mlp.point_conv.conv")),
                                            ({"self_attention": "softmax", "ffn": "mlp"}, ("mlp.fc1", "mlp.fc2"))])
def test_layer_selection_follows_the_paper(overrides, ffn):
    model = build_transformer(get_preset("tiny").replace(**overrides))
    assert sorted(quantized_layer_names(model)) == sorted(expected_layers(2, ffn))
    before = {name: type(module) for name, module in model.named_modules()}
    quantize_transformer(model, "w8a8")
    swapped = {name for name, module in model.named_modules() if isinstance(module, QuantizedLinear)}
    assert swapped == set(expected_layers(2, ffn))
    for name, module in model.named_modules():  # everything else, kv_linear and the embedders too, is untouched
        if name not in swapped and name in before and not name.startswith(tuple(swapped)):
            assert type(module) is before[name], name
    assert isinstance(model.blocks[0].cross_attn.kv_linear, nn.Linear)


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown quantize mode 'int4'"):
        quantize_transformer(build_transformer("tiny"), "int4")


def test_tiny_model_error_against_fp32_is_small():
    rows = {row.quantize: row for row in quantization_errors("tiny", 256, 2, "fp32", ["none", "w8a8", "fp8"],
                                                             steps=5, device="cpu")}
    assert set(rows) == {"w8a8", "fp8"}
    for row, bound in ((rows["w8a8"], 0.02), (rows["fp8"], 0.06)):
        assert math.isfinite(row.velocity_rel_err) and 0 < row.velocity_rel_err < bound, row
        assert math.isfinite(row.latent_psnr_db) and row.latent_psnr_db > 30, row


def test_fused_w8a8_matches_eager():
    """The Triton quantisation and GEMM (Triton's interpreter on the CPU, compiled on a GPU) against the eager code;
    odd sizes exercise the tile masks. The 8-bit values and scales are bit-identical everywhere; so is the output in
    the interpreter, while compiled Triton contracts the epilogue's multiply-add into an FMA (one rounding fewer,
    seen on an H200), so on a GPU the output agrees to float32 rounding."""
    device = "cuda" if CUDA else "cpu"
    linear = nn.Linear(72, 40, device=device)
    x = random_rows(37, 72, seed=6).to(device)
    qx, sx = row_quant.quantize_rows(x, 127.0, AMAX_FLOOR, torch.int8)
    ref_qx, ref_sx = quantize_rows(x, "w8a8")
    assert torch.equal(qx, ref_qx) and torch.equal(sx, ref_sx)
    fused = QuantizedLinear.from_module(linear, "w8a8", kernels="triton")
    eager = QuantizedLinear.from_module(linear, "w8a8", kernels="eager")
    eager.emulate = True
    if CUDA:
        torch.testing.assert_close(fused(x), eager(x), rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(fused(x), eager(x))


@pytest.mark.parametrize("mode", ["w8a8", "fp8"])
@pytest.mark.parametrize("width", [72, 1152])
def test_norm_quantises_its_rows_like_the_stand_alone_kernel(mode, width):
    """The modulated LayerNorm that quantises its own output for an 8-bit GEMM (model/kernels/block_ops.py) gives
    the bits of the unfused path: the norm rounded to fp16, then the stand-alone row quantiser. FP8's Triton cast
    runs on a GPU only (the interpreter's float8 cast is not the GPU's)."""
    if mode == "fp8" and not FP8_GPU:
        pytest.skip("the fused FP8 quantisation runs on GPUs with FP8 tensor cores only")
    from model.kernels.block_ops import modulated_layer_norm

    device = "cuda" if CUDA else "cpu"
    gen = torch.Generator(device).manual_seed(width)
    x = (torch.randn(2, 37, width, device=device, generator=gen) * 3 + 1).half()
    shift, scale = (torch.randn(2, 2, width, device=device, generator=gen) * 0.5).half().chunk(2, dim=1)
    layer = QuantizedLinear.from_module(nn.Linear(width, 16, device=device), mode, kernels="triton")
    rows = modulated_input(x, shift, scale, layer)
    assert isinstance(rows, QuantizedRows) and rows.shape == x.shape and rows.dtype == torch.float16
    ref_q, ref_s = row_quant.quantize_rows(modulated_layer_norm(x, shift, scale, 1e-6).reshape(-1, width),
                                           layer.quantizes_in_producer(x)[0], AMAX_FLOOR, rows.values.dtype)
    assert torch.equal(rows.scales, ref_s)
    assert torch.equal(rows.values.view(torch.int8), ref_q.view(torch.int8))
    assert torch.equal(layer(rows), layer(modulated_layer_norm(x, shift, scale, 1e-6)))
    eager = QuantizedLinear.from_module(nn.Linear(width, 16, device=device), mode, kernels="eager")
    assert modulated_input(x, shift, scale, eager).shape == x.shape   # no producer quantisation: a tensor
    assert isinstance(modulated_input(x, shift, scale, eager), torch.Tensor)


def test_fused_quantised_model_agrees_with_the_emulation():
    """The tiny model quantised to W8A8 with every fused path (producer quantisation, the Triton GEMM with bias and
    SiLU epilogues, the activated dwconv; Triton's interpreter on the CPU) against the eager model emulated in
    float64, on the same weights. Under PAG: the third row runs identity attention in block 0 (QuantizedRows carry
    the batch size the attention splits at), the first two the ordinary blocks. A narrow FFN (one channel block of
    the depth-wise kernel) keeps the interpreter quick."""
    device, cfg = "cuda" if CUDA else "cpu", TINY.replace(mlp_ratio=0.5)
    gen = torch.Generator(device).manual_seed(3)
    x = torch.randn(3, TINY.in_channels, 6, 6, device=device, generator=gen)
    y = torch.randn(3, 12, TINY.caption_channels, device=device, generator=gen)
    mask = torch.ones(3, 12, device=device, dtype=torch.long)
    t = torch.tensor([999.0, 300.0, 300.0], device=device)
    options = dict(pag_layers=frozenset({0}), perturbed_rows=1)
    outs = {}
    for kernels in ("eager", "triton"):
        torch.manual_seed(0)
        model = quantize_transformer(build_transformer(cfg.replace(kernels=kernels), device=device).eval(), "w8a8")
        for layer in model.modules():
            if isinstance(layer, QuantizedLinear) and kernels == "eager":
                layer.emulate = True
        with torch.no_grad():
            outs[kernels] = model(x, t, y, mask, **options).double()
    # the same 8-bit values and int32 sums: only fp32 rounding differs (the quantisation error itself is 3e-3)
    assert ((outs["triton"] - outs["eager"]).norm() / outs["eager"].norm()).item() < 1e-5


@pytest.mark.parametrize("mode", ["w8a8", "fp8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gemm_epilogue_applies_bias_and_silu_like_the_eager_code(mode, dtype):
    """The Triton 8-bit GEMM's epilogue (model/kernels/gemm.py): rescale, bias, rounding to the output dtype, SiLU,
    against the eager layer's GEMM followed by F.silu on the same 8-bit operands; odd sizes exercise the masks."""
    if mode == "fp8" and not FP8_GPU:
        pytest.skip("the fused FP8 path runs on GPUs with FP8 tensor cores only")
    device = "cuda" if CUDA else "cpu"
    linear = nn.Linear(72, 40, device=device, dtype=dtype)
    x = random_rows(37, 72, seed=7).to(device, dtype)
    fused = QuantizedLinear.from_module(linear, mode, kernels="triton")
    eager = QuantizedLinear.from_module(linear, mode, kernels="eager")
    eager.emulate = True
    rtol = 1e-5 if dtype == torch.float32 else 2**-10
    if mode == "w8a8":  # exact int32 sums: only the epilogue's rounding may differ
        for activation in ("none", "silu"):
            out, expected = fused(x, activation), eager(x, activation)
            assert out.dtype == dtype
            torch.testing.assert_close(out, expected, rtol=rtol, atol=1e-6)
    else:  # Hopper's FP8 MMAs sum in reduced precision: the sums within their bound, the SiLU on the GEMM's own output
        out = fused(x, "none")
        assert out.dtype == dtype and relative_error(out, eager(x, "none")) < FP8_SUM_BOUND
        torch.testing.assert_close(fused(x, "silu"), torch.nn.functional.silu(out), rtol=rtol, atol=1e-6)
    for layer in (fused, eager):
        with pytest.raises(ValueError, match="activation='gelu'"):
            layer(x, "gelu")


def eager_scaled_gemm(qa, sa, qb, sb, bias, dtype, silu):
    """The 8-bit GEMM's closed form: exact integer sums (int64), then the eager epilogue in fp32."""
    acc = (qa.cpu().long() @ qb.cpu().long().T).float()   # |sum| <= K·127² < 2^24: exact in fp32
    y = acc * sa.cpu() * sb.cpu()
    if bias is not None:
        y = y + bias.cpu().float()
    if silu:
        y = y.to(dtype).float()
        y = y / (1 + torch.exp(-y))
    return y.to(dtype)


@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("m, k, n, offset, tma", [
    (70, 48, 40, 0, True),    # M, N, K not multiples of the tile; in the interpreter 6 tiles loop on 4 programs
    (37, 72, 40, 0, False),   # K bytes not a multiple of 16: the pointer kernel
    (37, 48, 42, 0, False),   # N·itemsize not a multiple of 16
    (37, 48, 40, 1, False),   # a's base address 1 byte off 16
])
def test_gemm_tma_and_pointer_kernels_give_the_eager_epilogue_of_exact_sums(m, k, n, offset, tma, dtype, with_bias,
                                                                            silu):
    """Both kernels of model/kernels/gemm.py, each on the int8 calls it takes, against exact int64 sums and the
    eager epilogue (rescale, bias, rounding to the output dtype, SiLU)."""
    device = "cuda" if CUDA else "cpu"
    gen = torch.Generator().manual_seed(m + k + n + offset)
    qa = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=gen)
    qb = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=gen)
    sa, sb = torch.rand(m, 1, generator=gen) / 127, torch.rand(n, generator=gen) / 127
    bias = torch.randn(n, generator=gen).to(dtype) if with_bias else None
    a = torch.empty(m * k + offset, dtype=torch.int8, device=device)[offset:].view(m, k)
    a.copy_(qa)
    qb, sa, sb, bias = (None if t is None else t.to(device) for t in (qb, sa, sb, bias))
    assert gemm.uses_tma(a, qb, dtype) == (tma and (HOPPER or not CUDA))
    out = gemm.scaled_gemm(a, sa, qb, sb, bias, dtype, silu)
    assert out.dtype == dtype and out.shape == (m, n)
    rtol = 1e-5 if dtype == torch.float32 else 2**-10   # SiLU's exp, and on a GPU the epilogue's FMA, may differ
    torch.testing.assert_close(out.cpu(), eager_scaled_gemm(qa, sa, qb, sb, bias, dtype, silu), rtol=rtol, atol=1e-6)


def test_e2e_workload_runs_the_quantised_dit():
    work = SanaWorkload(E2ESpec(TINY, 64, 1, "fp32", steps=1, repeats=1, quantize="fp8", **TINY_E2E))
    assert work.described()["quantize"] == "fp8"
    assert sorted(name for name, module in work.transformer.named_modules()
                  if isinstance(module, QuantizedLinear)) == sorted(quantized_layer_names(build_transformer(TINY)))


@pytest.mark.skipif(not CUDA, reason="the tensor-core paths need a CUDA GPU")
@pytest.mark.parametrize("mode", ["w8a8", "fp8"])
def test_gpu_fused_quantisation_matches_eager_bit_for_bit(mode):
    """Compiled, the row quantiser must not contract x·(1/s) with its rounding's add into an fma: on the H200 that
    flipped about one value in 10^4 (caught here, not in the interpreter, which does not contract)."""
    x = torch.randn(16384, 1152, device="cuda", dtype=torch.float16)
    x = x * torch.logspace(-2, 2, 16384, device="cuda", dtype=torch.float16)[:, None]
    qx, sx = row_quant.quantize_rows(x, QMAX[mode], AMAX_FLOOR, QDTYPE[mode])
    ref_qx, ref_sx = quantize_rows(x, mode)
    assert torch.equal(sx, ref_sx)
    assert torch.equal(qx.view(torch.int8), ref_qx.view(torch.int8))


@pytest.mark.skipif(not CUDA, reason="the tensor-core paths need a CUDA GPU")
@pytest.mark.parametrize("kernels", ["eager", "triton"])
@pytest.mark.parametrize("mode", ["w8a8", "fp8"])
@pytest.mark.parametrize("k, n", [(1152, 3456), (2880, 1152), (2240, 11200)])
def test_gpu_tensor_cores_match_the_emulation(mode, k, n, kernels):
    gen = torch.Generator("cuda").manual_seed(k + n)
    linear = nn.Linear(k, n, device="cuda", dtype=torch.float16)
    x = torch.randn(4096, k, device="cuda", dtype=torch.float16, generator=gen)
    layer = QuantizedLinear.from_module(linear, mode, kernels=kernels)
    fast = layer(x)
    layer.emulate = True
    emulated = layer(x)
    assert torch.isfinite(fast).all()
    if mode == "w8a8" and kernels == "eager":  # the same int32 sums, then the same fp32 epilogue
        assert torch.equal(fast, emulated)
    elif mode == "w8a8":  # the same int32 sums; compiled Triton fuses the epilogue's multiply-add (an FMA)
        torch.testing.assert_close(fast, emulated, rtol=2**-10, atol=2**-14)
    else:  # Hopper's FP8 MMAs sum in reduced precision; against the float layer that is lost in FP8's own error
        assert relative_error(fast, emulated) < FP8_SUM_BOUND
        exact = nn.functional.linear(x.double(), linear.weight.double(), linear.bias.double())
        eager = QuantizedLinear.from_module(linear, mode, kernels="eager")(x)
        assert relative_error(fast, exact) <= 1.01 * relative_error(eager, exact)


@pytest.mark.skipif(not CUDA, reason="the tensor-core paths need a CUDA GPU")
@pytest.mark.parametrize("mode", ["w8a8", "fp8"])
def test_gpu_quantised_model_fused_and_eager_agree(mode):
    """The fused Triton blocks (the Mix-FFN's token-layout 1×1 convs) and the eager ones, both quantised, in fp16."""
    gen = torch.Generator("cuda").manual_seed(5)
    cfg = get_preset("Sana_600M_1024px").replace(depth=2)
    x = torch.randn(4, 32, 32, 32, device="cuda", dtype=torch.float16, generator=gen)
    y = torch.randn(4, 300, cfg.caption_channels, device="cuda", dtype=torch.float16, generator=gen)
    mask, t = torch.ones(4, 300, device="cuda", dtype=torch.long), torch.full((4,), 500.0, device="cuda")
    outs = {}
    for kernels in ("eager", "triton"):
        torch.manual_seed(0)
        model = build_transformer(cfg.replace(kernels=kernels), device="cuda", dtype=torch.float16).eval()
        with torch.no_grad():
            outs[kernels] = quantize_transformer(model, mode)(x, t, y, mask).double()
    assert torch.isfinite(outs["triton"]).all()
    assert ((outs["triton"] - outs["eager"]).norm() / outs["eager"].norm()).item() < 2e-2


@pytest.mark.skipif(not HOPPER, reason="the TMA GEMM runs on Hopper GPUs")
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("mode", ["w8a8", "fp8"])
@pytest.mark.parametrize("k, n", [(1152, 3456), (2880, 1152)])
def test_gpu_tma_gemm_matches_the_pointer_kernel(mode, k, n, dtype):
    """The tuned TMA kernel against the tuned pointer kernel on Sana-0.6B's qkv and Mix-FFN point-conv shapes, M not
    a multiple of any tile; fp32 outputs leave the 128×256 configs short of shared memory, so the tuning skips them.
    A copy of the activations 1 byte off 16-byte alignment sends the same call to the pointer kernel."""
    gen = torch.Generator("cuda").manual_seed(k + n)
    x = torch.randn(4000, k, device="cuda", dtype=dtype, generator=gen)
    w = torch.randn(n, k, device="cuda", dtype=dtype, generator=gen) / k**0.5
    bias = torch.randn(n, device="cuda", dtype=dtype, generator=gen)
    (qa, sa), (qw, sw) = quantize_rows(x, mode), quantize_rows(w, mode)
    shifted = torch.empty(qa.numel() + 1, device="cuda", dtype=qa.dtype)[1:].view_as(qa)
    shifted.copy_(qa)
    assert gemm.uses_tma(qa, qw, dtype) and not gemm.uses_tma(shifted, qw, dtype)
    for silu in (False, True):
        tma = gemm.scaled_gemm(qa, sa, qw, sw[:, 0], bias, dtype, silu)
        pointer = gemm.scaled_gemm(shifted, sa, qw, sw[:, 0], bias, dtype, silu)
        assert torch.isfinite(tma).all()
        if mode == "w8a8":  # the same int32 sums; only the compiled epilogue's FMAs may differ
            torch.testing.assert_close(tma, pointer, rtol=2**-10, atol=2**-14)
        else:  # FP8 MMAs sum in reduced precision, in each kernel's own order
            assert relative_error(tma, pointer) < FP8_SUM_BOUND
