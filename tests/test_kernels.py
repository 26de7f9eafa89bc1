"""The fused Triton linear attention (model/kernels/) against a float64 closed form of paper Eq. 1.

Without a GPU the kernels run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1), which executes
the same kernel code with NumPy; on a CUDA GPU (make gpu-test) they are compiled. The interpreter's bf16 dot is
broken (it returns garbage for bf16 operands), so bf16 is checked on the GPU only.
"""
from __future__ import annotations

import pytest
import torch

from model.config import get_preset
from model.linear_attention import linear_attention, relu_linear_attention
from model.transformer import build_transformer

triton = pytest.importorskip("triton")
kernels = pytest.importorskip("model.kernels.linear_attention")

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def closed_form(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, eps: float) -> torch.Tensor:
    """Eq. 1 written quadratically: out_i = Σ_j v_j φ(k_j)·φ(q_i) / (Σ_j φ(k_j)·φ(q_i) + eps), float64."""
    B, N, D = q.shape
    split = lambda z: z.double().unflatten(-1, (heads, D // heads)).transpose(1, 2)  # noqa: E731 (B, h, N, d)
    sim = torch.relu(split(q)) @ torch.relu(split(k)).transpose(-1, -2)             # (B, h, N, N)
    out = (sim @ split(v)) / (sim.sum(-1, keepdim=True) + eps)
    return out.transpose(1, 2).reshape(B, N, D)


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.double() - ref).norm() / ref.norm()).item()


def qkv_views(batch: int, tokens: int, heads: int, head_dim: int, dtype: torch.dtype, device: str = "cpu",
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as the transformer passes them: strided views into one (B, N, 3D) qkv projection output."""
    gen = torch.Generator(device).manual_seed(seed)
    qkv = torch.randn(batch, tokens, 3 * heads * head_dim, generator=gen, device=device).to(dtype)
    return qkv.chunk(3, dim=-1)


# Token counts straddle the 64-token blocks and the split of the token loop; head widths 16 and 32 (Sana's).
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float16, 1e-3)])
@pytest.mark.parametrize("batch, tokens, heads, head_dim", [(2, 100, 2, 32), (1, 257, 3, 16), (3, 64, 1, 32)])
def test_kernels_match_closed_form(dtype, tol, batch, tokens, heads, head_dim):
    q, k, v = qkv_views(batch, tokens, heads, head_dim, dtype, DEVICE)
    out = kernels.fused_relu_linear_attention(q, k, v, heads, 1e-8, dtype)
    assert out.shape == q.shape and out.dtype == dtype and out.is_contiguous()
    assert rel_err(out, closed_form(q, k, v, heads, 1e-8)) < tol
    # The eager path rounds the same fp32 result to the same dtype: at most one ulp apart.
    eager = relu_linear_attention(q, k, v, heads, 1e-8, dtype)
    assert rel_err(out, eager.double()) < tol


def test_kernels_sum_every_token_slice(monkeypatch):
    """Few programs per (row, head) force many token slices, summed in the output kernel."""
    monkeypatch.setattr(kernels, "TARGET_PROGRAMS", 64)
    q, k, v = qkv_views(1, 1000, 2, 16, torch.float32, DEVICE, seed=3)
    out = kernels.fused_relu_linear_attention(q, k, v, 2, 1e-15, torch.float32)
    assert rel_err(out, closed_form(q, k, v, 2, 1e-15)) < 1e-6


def test_kernels_keep_eps_for_dead_queries():
    """A query with no positive channel has φ(q) = 0: numerator and normaliser vanish, the output is 0, not NaN."""
    q, k, v = qkv_views(1, 70, 1, 16, torch.float32, DEVICE, seed=1)
    q = q.clone()
    q[0, 5] = -1.0
    out = kernels.fused_relu_linear_attention(q, k, v, 1, 1e-8, torch.float32)
    assert torch.equal(out[0, 5].cpu(), torch.zeros(16)) and torch.isfinite(out).all()


def test_kernels_reject_what_they_cannot_run():
    q, k, v = qkv_views(1, 8, 1, 32, torch.float32, DEVICE)
    assert kernels.supported(q, 1) and not kernels.supported(q, 3)   # head width 32 vs 10.67
    with pytest.raises(ValueError, match="does not match q"):
        kernels.fused_relu_linear_attention(q, k[:, :4], v, 1, 1e-8, torch.float32)


def test_triton_on_cpu_tensors_is_an_error_outside_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v = qkv_views(1, 8, 1, 32, torch.float32)
    with pytest.raises(RuntimeError, match="needs CUDA"):
        linear_attention(q, k, v, 1, 1e-8, torch.float32, kernels="triton")


def test_auto_takes_the_eager_path_on_cpu():
    q, k, v = qkv_views(2, 30, 2, 16, torch.float32)
    torch.testing.assert_close(linear_attention(q, k, v, 2, 1e-8, torch.float32, "auto"),
                               relu_linear_attention(q, k, v, 2, 1e-8, torch.float32), rtol=0, atol=0)


def test_config_rejects_unknown_kernels():
    with pytest.raises(ValueError, match="kernels"):
        get_preset("tiny").replace(kernels="cuda")


@pytest.mark.skipif(not CUDA, reason="compiled Triton kernels need a CUDA GPU (make gpu-test)")
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float16, 1e-3), (torch.bfloat16, 8e-3)])
@pytest.mark.parametrize("batch, tokens", [(2, 1024), (1, 4096), (2, 16384), (3, 777)])
def test_gpu_kernels_match_closed_form(dtype, tol, batch, tokens):
    q, k, v = qkv_views(batch, tokens, 36, 32, dtype, "cuda", seed=tokens)
    out = linear_attention(q, k, v, 36, 1e-8, dtype, kernels="triton")
    torch.cuda.synchronize()
    ref = closed_form(q[:, :4096], k, v, 36, 1e-8) if tokens > 4096 else closed_form(q, k, v, 36, 1e-8)
    assert rel_err(out[:, :ref.shape[1]], ref) < tol


@pytest.mark.skipif(not CUDA, reason="compiled Triton kernels need a CUDA GPU (make gpu-test)")
@pytest.mark.parametrize("preset, dtype", [("Sana_600M_1024px", torch.float16),
                                           ("SANA1.5_1.6B_1024px", torch.bfloat16)])
def test_gpu_fused_transformer_is_as_accurate_as_eager(preset, dtype, monkeypatch):
    """Whole models in their inference dtype (q/k-norm for 1.5), against the eager model in fp32 on the same
    weights: the fused kernels round less often, so their error must not exceed the eager path's."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cfg = get_preset(preset)
    torch.manual_seed(0)
    ref = build_transformer(cfg.replace(kernels="eager"), device="cuda").eval()
    gen = torch.Generator("cuda").manual_seed(1)
    x = torch.randn(2, 32, 32, 32, device="cuda", generator=gen)
    y = torch.randn(2, 300, cfg.caption_channels, device="cuda", generator=gen)
    mask = torch.ones(2, 300, device="cuda", dtype=torch.long)
    mask[1, 120:] = 0
    t = torch.tensor([999.0, 500.0], device="cuda")
    errors = {}
    with torch.no_grad():
        expected = ref(x, t, y, mask).double()
        for kernels in ("eager", "triton"):
            model = build_transformer(cfg.replace(kernels=kernels), device="cuda", dtype=dtype).eval()
            model.load_state_dict(ref.state_dict())
            errors[kernels] = rel_err(model(x.to(dtype), t, y.to(dtype), mask), expected)
    assert errors["triton"] <= 1.1 * errors["eager"], errors


# --- the fused block parts (model/kernels/block_ops.py, model/kernels/mix_ffn.py) --------------------------------

def modulation(batch: int, width: int, device: str, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """shift, scale, gate as the block slices them: (B, 1, D) views of one (B, 6, D) table."""
    table = torch.randn(batch, 6, width, device=device, generator=gen) * 0.5
    shift, scale, gate, *_ = table.chunk(6, dim=1)
    return shift, scale, gate


@pytest.mark.parametrize("batch, tokens, width", [(2, 30, 72), (3, 7, 64), (1, 5, 2240)])
def test_modulated_layer_norm_matches_its_formula(batch, tokens, width):
    from model.kernels.block_ops import modulated_layer_norm

    gen = torch.Generator(DEVICE).manual_seed(0)
    x = torch.randn(batch, tokens, width, device=DEVICE, generator=gen) * 3 + 1
    shift, scale, _ = modulation(batch, width, DEVICE, gen)
    out = modulated_layer_norm(x, shift, scale, 1e-6)
    x64 = x.double()
    norm = (x64 - x64.mean(-1, keepdim=True)) / torch.sqrt(x64.var(-1, unbiased=False, keepdim=True) + 1e-6)
    assert rel_err(out, norm * (1 + scale.double()) + shift.double()) < 1e-6


@pytest.mark.parametrize("batch, tokens, width", [(2, 30, 72), (1, 1000, 40)])
def test_gated_residual_matches_its_formula(batch, tokens, width):
    from model.kernels.block_ops import gated_residual

    gen = torch.Generator(DEVICE).manual_seed(0)
    x, y = torch.randn(2, batch, tokens, width, device=DEVICE, generator=gen)
    _, _, gate = modulation(batch, width, DEVICE, gen)
    assert rel_err(gated_residual(x, gate, y), x.double() + gate.double() * y.double()) < 1e-7


def test_block_ops_reject_mismatched_shapes():
    from model.kernels.block_ops import gated_residual, modulated_layer_norm

    gen = torch.Generator(DEVICE).manual_seed(0)
    x = torch.randn(2, 4, 8, device=DEVICE, generator=gen)
    shift, scale, gate = modulation(2, 8, DEVICE, gen)
    with pytest.raises(ValueError, match="does not modulate"):
        modulated_layer_norm(x, shift[:1], scale[:1], 1e-6)
    with pytest.raises(ValueError, match="does not match the residual"):
        gated_residual(x, gate, x[:, :3])


@pytest.mark.parametrize("batch, h, w, channels", [(2, 5, 7, 2 * 80), (1, 9, 9, 2 * 64), (1, 1, 3, 2 * 8)])
def test_dwconv_glu_matches_torch_conv(batch, h, w, channels):
    """Against F.conv2d on the NCHW image in float64: borders, a grid smaller than a block, f off the block."""
    from model.kernels.mix_ffn import dwconv_glu

    gen = torch.Generator(DEVICE).manual_seed(0)
    x = torch.randn(batch, h * w, channels, device=DEVICE, generator=gen) * 2
    weight = torch.randn(channels, 1, 3, 3, device=DEVICE, generator=gen) * 0.3
    bias = torch.randn(channels, device=DEVICE, generator=gen)
    out = dwconv_glu(x, weight, bias, (h, w))
    image = torch.nn.functional.silu(x.double()).transpose(1, 2).reshape(batch, channels, h, w)
    conv = torch.nn.functional.conv2d(image, weight.double(), bias.double(), padding=1, groups=channels)
    value, gate = conv.chunk(2, dim=1)
    expected = (value * torch.nn.functional.silu(gate)).flatten(2).transpose(1, 2)   # (B, N, f)
    assert out.shape == expected.shape and rel_err(out, expected) < 1e-6


def test_dwconv_glu_takes_an_activated_input():
    """activated=True: the inverted conv's GEMM applied the SiLU (model/kernels/gemm.py); the kernel must not."""
    from model.kernels.mix_ffn import dwconv_glu

    gen = torch.Generator(DEVICE).manual_seed(1)
    x = torch.randn(2, 5 * 7, 2 * 40, device=DEVICE, generator=gen)
    weight = torch.randn(80, 1, 3, 3, device=DEVICE, generator=gen) * 0.3
    bias = torch.randn(80, device=DEVICE, generator=gen)
    activated = torch.nn.functional.silu(x)
    expected = dwconv_glu(x, weight, bias, (5, 7))
    assert rel_err(dwconv_glu(activated, weight, bias, (5, 7), activated=True), expected) < 1e-6


@pytest.mark.parametrize("activated", [False, True])
def test_dwconv_glu_tilings_give_the_same_bits(monkeypatch, activated):
    """Every tiling of the table (rows, columns and channels per program, pipelining) computes each output by the
    same sequence of operations, so the same bits; 7 columns, 5 rows and f = 80 are off every block."""
    from model.kernels import mix_ffn

    gen = torch.Generator(DEVICE).manual_seed(2)
    x = torch.randn(2, 5 * 7, 2 * 80, device=DEVICE, generator=gen)
    weight = torch.randn(160, 1, 3, 3, device=DEVICE, generator=gen) * 0.3
    bias = torch.randn(160, device=DEVICE, generator=gen)
    small = mix_ffn.dwconv_glu(x, weight, bias, (5, 7), activated=activated)
    assert mix_ffn.tiling(2, 5, 7, 80, activated) == mix_ffn.TILINGS[False, activated]
    monkeypatch.setattr(mix_ffn, "LARGE_GRID", 1)
    assert mix_ffn.tiling(2, 5, 7, 80, activated) == mix_ffn.TILINGS[True, activated]
    assert torch.equal(mix_ffn.dwconv_glu(x, weight, bias, (5, 7), activated=activated), small)
    tiny = mix_ffn.Tiling(block_w=4, block_c=16, rows=2, stages=1)    # several programs along every axis
    monkeypatch.setattr(mix_ffn, "tiling", lambda *shape: tiny)
    assert torch.equal(mix_ffn.dwconv_glu(x, weight, bias, (5, 7), activated=activated), small)


def test_dwconv_glu_rejects_a_wrong_grid():
    from model.kernels.mix_ffn import dwconv_glu

    with pytest.raises(ValueError, match="do not fit"):
        dwconv_glu(torch.zeros(1, 12, 8, device=DEVICE), torch.zeros(8, 1, 3, 3, device=DEVICE),
                   torch.zeros(8, device=DEVICE), (3, 5))


# --- DC-AE's RMSNorm2d + residual (model/kernels/rms_norm_2d.py), the decoder's passes (dc_ae_ops.py) ----------

@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("channels, h, w, residual, relu", [(12, 5, 7, False, True), (40, 9, 3, True, False),
                                                            (128, 3, 30, True, True)])
def test_rms_norm_2d_matches_its_formula(layout, channels, h, w, residual, relu):
    """NCHW and channels-last (the fused decoder's layout), against the formula in float64."""
    from model.kernels.rms_norm_2d import rms_norm_2d

    gen = torch.Generator(DEVICE).manual_seed(0)
    x = (torch.randn(2, channels, h, w, device=DEVICE, generator=gen) * 3).contiguous(memory_format=layout)
    weight, bias = torch.randn(2, channels, device=DEVICE, generator=gen)
    skip = torch.randn(2, channels, h, w, device=DEVICE, generator=gen).contiguous(memory_format=layout) \
        if residual else None
    out = rms_norm_2d(x, weight, bias, 1e-5, skip, relu=relu)
    assert out.is_contiguous(memory_format=layout)
    x64 = x.double()
    want = x64 * torch.rsqrt(x64.pow(2).mean(1, keepdim=True) + 1e-5) * weight.double()[:, None, None] \
        + bias.double()[:, None, None] + (skip.double() if residual else 0)
    assert rel_err(out, want.relu() if relu else want) < 1e-6


def test_rms_norm_2d_rejects_what_it_cannot_run():
    from model.kernels.rms_norm_2d import rms_norm_2d

    x = torch.zeros(1, 8, 4, 4, device=DEVICE)
    ones, zeros = torch.ones(8, device=DEVICE), torch.zeros(8, device=DEVICE)
    with pytest.raises(ValueError, match="contiguous"):
        rms_norm_2d(x.transpose(2, 3), ones, zeros, 1e-5)
    with pytest.raises(ValueError, match="one shape and layout"):
        rms_norm_2d(x, ones, zeros, 1e-5, x.contiguous(memory_format=torch.channels_last))
    with pytest.raises(ValueError, match="do not fit 8 channels"):
        rms_norm_2d(x, torch.ones(4, device=DEVICE), torch.zeros(4, device=DEVICE), 1e-5)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("c_in, c_out, scale, h, w", [(8, 4, 2, 3, 5), (70, 70, 2, 2, 3), (16, 4, 2, 4, 2),
                                                      (4, 68, 1, 5, 3)])
def test_channel_shortcut_matches_repeat_and_pixel_shuffle(layout, c_in, c_out, scale, h, w):
    """Upsample's shortcut (scale 2: repeats 2, 4 and 1, channels off the 64-channel block) and the decoder's input
    shortcut (scale 1), with the conv bias, added in place; against the PyTorch ops of the eager path in float64."""
    from model.kernels.dc_ae_ops import add_channel_shortcut

    gen = torch.Generator(DEVICE).manual_seed(c_out)
    x = torch.randn(2, c_in, h, w, device=DEVICE, generator=gen).contiguous(memory_format=layout)
    main = torch.randn(2, c_out, scale * h, scale * w, device=DEVICE, generator=gen).contiguous(memory_format=layout)
    bias = torch.randn(c_out, device=DEVICE, generator=gen)
    repeated = x.double().repeat_interleave(scale * scale * c_out // c_in, dim=1)
    expected = main.double() + bias.double()[:, None, None] \
        + (torch.nn.functional.pixel_shuffle(repeated, 2) if scale == 2 else repeated)
    out = add_channel_shortcut(main, x, scale, bias)
    assert out is main and rel_err(out, expected) < 1e-7


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("channels, h, w", [(8, 3, 5), (70, 2, 1)])
def test_upsample_and_bias_silu_match_torch(layout, channels, h, w):
    """Nearest ×2 is a copy, so exact; SiLU(x + bias) against float64."""
    from model.kernels.dc_ae_ops import bias_silu_, upsample_nearest_2x

    gen = torch.Generator(DEVICE).manual_seed(channels)
    x = torch.randn(2, channels, h, w, device=DEVICE, generator=gen).contiguous(memory_format=layout)
    up = upsample_nearest_2x(x)
    assert up.is_contiguous(memory_format=layout)
    assert torch.equal(up, torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))
    bias = torch.randn(channels, device=DEVICE, generator=gen)
    expected = torch.nn.functional.silu(x.double() + bias.double()[:, None, None])
    assert bias_silu_(x, bias) is x and rel_err(x, expected) < 1e-6


def test_dc_ae_ops_reject_what_they_cannot_run():
    from model.kernels.dc_ae_ops import add_channel_shortcut, bias_silu_

    bias = torch.zeros(8, device=DEVICE)
    with pytest.raises(ValueError, match="does not repeat into main"):
        add_channel_shortcut(torch.zeros(1, 6, 4, 4, device=DEVICE), torch.zeros(1, 5, 2, 2, device=DEVICE), 2, bias)
    with pytest.raises(ValueError, match="does not repeat into main"):
        add_channel_shortcut(torch.zeros(1, 8, 4, 4, device=DEVICE), torch.zeros(1, 4, 2, 2, device=DEVICE), 1, bias)
    with pytest.raises(ValueError, match="does not fit 8 channels"):
        add_channel_shortcut(torch.zeros(1, 8, 2, 2, device=DEVICE), torch.zeros(1, 4, 2, 2, device=DEVICE), 1,
                             torch.zeros(4, device=DEVICE))
    with pytest.raises(ValueError, match="NCHW or channels-last"):
        bias_silu_(torch.zeros(1, 8, 4, 4, device=DEVICE).transpose(2, 3), torch.zeros(8, device=DEVICE))


@pytest.mark.skipif(not CUDA, reason="compiled Triton kernels need a CUDA GPU (make gpu-test)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_fused_dc_ae_decode_is_as_accurate_as_eager(dtype, monkeypatch):
    """The full-size decoder at 512 px in its inference dtype, whole and in 3×3 tiles, against the eager decoder in
    fp32: the fused channels-last path (Triton norms, shortcuts and GLUMBConv middle) rounds less often, so its
    error must not exceed the eager path's."""
    import dataclasses

    from model.dc_ae import DCAE, get_dc_ae_preset
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    cfg = get_dc_ae_preset("dc-ae-f32c32-sana-1.0")
    torch.manual_seed(0)
    with torch.device("cuda"):
        ref = DCAE(dataclasses.replace(cfg, kernels="eager")).eval()
    for p in ref.parameters():
        p.data.normal_(0, 0.02)
    z = torch.randn(2, 32, 16, 16, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    errors = {}
    with torch.no_grad():
        expected = {tile: ref.decode(z, tile_size=tile, tile_overlap=2).double() for tile in (None, 8)}
        for kernels in ("eager", "triton"):
            with torch.device("cuda"):
                model = DCAE(dataclasses.replace(cfg, kernels=kernels)).eval()
            model.load_state_dict(ref.state_dict())
            model = model.to(dtype)
            for tile, want in expected.items():
                image = model.decode(z.to(dtype), tile_size=tile, tile_overlap=2)
                assert image.shape == want.shape and image.is_contiguous()
                errors[kernels, tile] = rel_err(image, want)
        # The fused path ran: it leaves the decoder's conv weights channels-last.
        assert model.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    for tile in (None, 8):
        assert errors["triton", tile] <= 1.1 * errors["eager", tile], errors
