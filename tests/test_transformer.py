"""Parity of our Linear DiT with diffusers' SanaTransformer2DModel on shared random weights (fp32)."""
from __future__ import annotations

import pytest
import torch

from _tiny import diffusers_kwargs, randomize
from model.config import DIFFUSERS_NUMERICS, PRESETS, get_preset
from model.transformer import SanaBlock, build_transformer, count_parameters, sincos_pos_embed

diffusers = pytest.importorskip("diffusers")
from diffusers import SanaTransformer2DModel  # noqa: E402
from diffusers.models.transformers.sana_transformer import SanaTransformerBlock  # noqa: E402

TOLERANCE = 1e-5


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def block_from_diffusers(sd: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """diffusers block keys -> NVlabs block keys, written from the diffusers side
    (the inverse of docs/model.md §2.3)."""
    g = lambda k: sd[prefix + k]  # noqa: E731
    out = {
        "scale_shift_table": g("scale_shift_table"),
        "attn.qkv.weight": torch.cat([g("attn1.to_q.weight"), g("attn1.to_k.weight"), g("attn1.to_v.weight")]),
        "attn.proj.weight": g("attn1.to_out.0.weight"), "attn.proj.bias": g("attn1.to_out.0.bias"),
        "cross_attn.q_linear.weight": g("attn2.to_q.weight"), "cross_attn.q_linear.bias": g("attn2.to_q.bias"),
        "cross_attn.kv_linear.weight": torch.cat([g("attn2.to_k.weight"), g("attn2.to_v.weight")]),
        "cross_attn.kv_linear.bias": torch.cat([g("attn2.to_k.bias"), g("attn2.to_v.bias")]),
        "cross_attn.proj.weight": g("attn2.to_out.0.weight"), "cross_attn.proj.bias": g("attn2.to_out.0.bias"),
        "mlp.inverted_conv.conv.weight": g("ff.conv_inverted.weight"),
        "mlp.inverted_conv.conv.bias": g("ff.conv_inverted.bias"),
        "mlp.depth_conv.conv.weight": g("ff.conv_depth.weight"), "mlp.depth_conv.conv.bias": g("ff.conv_depth.bias"),
        "mlp.point_conv.conv.weight": g("ff.conv_point.weight"),
    }
    if prefix + "attn1.norm_q.weight" in sd:
        for ours, theirs in (("attn", "attn1"), ("cross_attn", "attn2")):
            out[f"{ours}.q_norm.weight"] = g(f"{theirs}.norm_q.weight")
            out[f"{ours}.k_norm.weight"] = g(f"{theirs}.norm_k.weight")
    return out


def model_from_diffusers(sd: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    out = {
        "x_embedder.proj.weight": sd["patch_embed.proj.weight"], "x_embedder.proj.bias": sd["patch_embed.proj.bias"],
        "attention_y_norm.weight": sd["caption_norm.weight"],
        "final_layer.linear.weight": sd["proj_out.weight"], "final_layer.linear.bias": sd["proj_out.bias"],
        "final_layer.scale_shift_table": sd["scale_shift_table"],
    }
    for ours, theirs in (("t_embedder.mlp.0", "time_embed.emb.timestep_embedder.linear_1"),
                         ("t_embedder.mlp.2", "time_embed.emb.timestep_embedder.linear_2"),
                         ("t_block.1", "time_embed.linear"),
                         ("y_embedder.y_proj.fc1", "caption_projection.linear_1"),
                         ("y_embedder.y_proj.fc2", "caption_projection.linear_2")):
        for p in ("weight", "bias"):
            out[f"{ours}.{p}"] = sd[f"{theirs}.{p}"]
    for i in range(depth):
        out.update({f"blocks.{i}.{k}": v for k, v in block_from_diffusers(sd, f"transformer_blocks.{i}.").items()})
    return out


def pair(preset: str, **overrides):
    cfg = get_preset(preset).replace(**DIFFUSERS_NUMERICS, **overrides)
    ref = SanaTransformer2DModel(**diffusers_kwargs(cfg)).eval()
    randomize(ref, 0)
    ours = build_transformer(cfg).eval()
    ours.load_state_dict(model_from_diffusers(ref.state_dict(), cfg.depth), strict=True)
    return ours, ref, cfg


def inputs(cfg, batch: int = 3, h: int = 8, w: int = 8, length: int = 12, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, h, w, generator=gen, device="cpu")
    y = torch.randn(batch, length, cfg.caption_channels, generator=gen, device="cpu")
    mask = torch.zeros(batch, length, dtype=torch.long)
    for b in range(batch):  # captions of different lengths
        mask[b, : max(1, length - 4 * b)] = 1
    return x, y, mask


@pytest.mark.parametrize("preset", ["tiny", "tiny-pe", "tiny-qknorm"])
@pytest.mark.parametrize("timestep", [[999.0, 500.0, 3.0], [981.875, 447.944, 8.929]])
def test_tiny_model_matches_diffusers(preset, timestep):
    ours, ref, cfg = pair(preset)
    x, y, mask = inputs(cfg)
    t = torch.tensor(timestep)
    with torch.no_grad():
        expected = ref(x, y, t, encoder_attention_mask=mask, return_dict=False)[0]
        got = ours(x, t, y, mask)
    assert got.shape == x.shape
    assert rel_err(got, expected) <= TOLERANCE


@pytest.mark.parametrize("preset", ["tiny", "tiny-pe", "tiny-qknorm"])
def test_fused_kernels_match_diffusers(preset, monkeypatch):
    """kernels="triton" (paper §2.2 fusion) on a non-square latent with masked captions computes diffusers'
    function; compiled on a GPU, in Triton's interpreter on the CPU (tests/conftest.py)."""
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    ours, ref, cfg = pair(preset, kernels="triton")
    x, y, mask = inputs(cfg, h=6, w=10)
    t = torch.tensor([999.0, 447.944, 8.929])
    with torch.no_grad():
        expected = ref(x, y, t, encoder_attention_mask=mask, return_dict=False)[0]
        got = ours.to(device)(*(z.to(device) for z in (x, t, y, mask))).cpu()
    assert rel_err(got, expected) <= TOLERANCE


def test_non_square_latent_and_resolution_change():
    ours, ref, cfg = pair("tiny")
    x, y, mask = inputs(cfg, h=6, w=10)
    t = torch.tensor([10.0, 400.0, 990.0])
    with torch.no_grad():
        expected = ref(x, y, t, encoder_attention_mask=mask, return_dict=False)[0]
        assert rel_err(ours(x, t, y, mask), expected) <= TOLERANCE


def test_pe_at_a_resolution_other_than_the_training_one():
    ours, ref, cfg = pair("tiny-pe")
    x, y, mask = inputs(cfg, h=16, w=16)  # twice the training latent: the PE is recomputed and rescaled
    t = torch.tensor([10.0, 400.0, 990.0])
    with torch.no_grad():
        expected = ref(x, y, t, encoder_attention_mask=mask, return_dict=False)[0]
        assert rel_err(ours(x, t, y, mask), expected) <= TOLERANCE


def test_pe_table_matches_diffusers():
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    ours = sincos_pos_embed(64, 12, 12, base_size=8, interpolation=2.0)[0]
    ref = get_2d_sincos_pos_embed(64, (12, 12), base_size=8, interpolation_scale=2.0, output_type="pt")
    assert torch.allclose(ours, ref.float(), atol=1e-6)


@pytest.mark.parametrize("preset", ["Sana_600M_1024px", "Sana_1600M_1024px", "SANA1.5_1.6B_1024px"])
def test_one_block_at_real_width_matches_diffusers(preset):
    cfg = get_preset(preset).replace(**DIFFUSERS_NUMERICS)
    d = cfg.hidden_size
    ref = SanaTransformerBlock(d, cfg.self_heads, cfg.linear_head_dim, num_cross_attention_heads=cfg.cross_heads,
                               cross_attention_head_dim=d // cfg.cross_heads, cross_attention_dim=d,
                               attention_bias=False, norm_elementwise_affine=False, norm_eps=1e-6,
                               mlp_ratio=cfg.mlp_ratio,
                               qk_norm="rms_norm_across_heads" if cfg.qk_norm else None).eval()
    randomize(ref, 2)
    ours = SanaBlock(cfg).eval()
    ours.load_state_dict(block_from_diffusers(ref.state_dict()), strict=True)
    gen = torch.Generator().manual_seed(3)
    h = w = 4
    x = torch.randn(2, h * w, d, generator=gen)
    y = torch.randn(2, 10, d, generator=gen)
    t0 = torch.randn(2, 6 * d, generator=gen) * 0.1
    mask = torch.tensor([[1] * 10, [1] * 3 + [0] * 7])
    bias = (1 - mask.float())[:, None, :] * -10000.0
    with torch.no_grad():
        expected = ref(x, None, y, bias, t0, h, w)
        got = ours(x, y, t0, ((1 - mask.float()) * -10000.0)[:, None, None, :], (h, w))
    assert rel_err(got, expected) <= TOLERANCE


def test_nvlabs_timestep_flooring_equals_diffusers_on_floored_input():
    ours, ref, cfg = pair("tiny")
    ours.config = cfg.replace(timestep_rounding="floor")
    x, y, mask = inputs(cfg)
    with torch.no_grad():
        got = ours(x, torch.tensor([981.875, 447.944, 8.929]), y, mask)
        expected = ref(x, y, torch.tensor([981.0, 447.0, 8.0]), encoder_attention_mask=mask, return_dict=False)[0]
    assert rel_err(got, expected) <= TOLERANCE


def test_exact_mask_ignores_padded_caption_tokens():
    cfg = get_preset("tiny").replace(cross_attn_mask="exact")
    model = build_transformer(cfg).eval()
    randomize(model, 4)
    x, y, _ = inputs(cfg, batch=1)
    mask = torch.tensor([[1] * 5 + [0] * 7])
    y_other_padding = y.clone()
    y_other_padding[:, 5:] = 123.0
    with torch.no_grad():
        a = model(x, torch.tensor([500.0]), y, mask)
        b = model(x, torch.tensor([500.0]), y_other_padding, mask)
        c = model(x, torch.tensor([500.0]), y[:, :5], mask[:, :5])
    assert torch.equal(a, b)
    assert rel_err(a, c) <= TOLERANCE


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_stays_close_to_fp32(dtype):
    cfg = get_preset("tiny")
    model = build_transformer(cfg).eval()
    x, y, mask = inputs(cfg)
    t = torch.tensor([999.0, 500.0, 3.0])
    with torch.no_grad():
        full = model(x, t, y, mask)
        half = model.to(dtype)(x, t, y, mask)
    assert half.dtype == dtype
    assert rel_err(half.float(), full) < 0.05


def test_parameter_counts_of_the_released_models():
    assert count_parameters("Sana_600M_1024px") == 591_747_872
    assert count_parameters("Sana_1600M_1024px") == 1_604_462_752
    assert count_parameters("SANA1.5_1.6B_1024px") == 1_604_641_952
    assert count_parameters("SANA1.5_4.8B_1024px") == 4_721_825_952


def test_parameter_counts_equal_diffusers_on_meta_device():
    for preset in ("Sana_600M_512px", "Sana_1600M_4Kpx_BF16", "SANA1.5_4.8B_1024px"):
        cfg = PRESETS[preset]
        with torch.device("meta"):
            ref = SanaTransformer2DModel(**diffusers_kwargs(cfg))
        assert count_parameters(preset) == sum(p.numel() for p in ref.parameters())


def test_bad_latent_shape_is_rejected():
    cfg = get_preset("tiny")
    model = build_transformer(cfg)
    x, y, mask = inputs(cfg)
    with pytest.raises(ValueError, match="in_channels"):
        model(x[:, :4], torch.tensor([1.0, 2.0, 3.0]), y, mask)
    with pytest.raises(ValueError, match="caption_mask"):
        model(x, torch.tensor([1.0, 2.0, 3.0]), y, mask[:, :3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="full-size parity runs on a CUDA GPU (make gpu-test)")
@pytest.mark.parametrize("kernels", ["eager", "triton"])
@pytest.mark.parametrize("preset", ["Sana_600M_1024px", "Sana_1600M_1024px", "SANA1.5_1.6B_1024px"])
def test_full_size_model_matches_diffusers_on_gpu(preset, kernels):
    cfg = get_preset(preset).replace(kernels=kernels, **DIFFUSERS_NUMERICS)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.device("cuda"):
        ref = SanaTransformer2DModel(**diffusers_kwargs(cfg)).eval()
        randomize(ref, 0)
        ours = build_transformer(cfg, device="cuda").eval()
    ours.load_state_dict(model_from_diffusers(ref.state_dict(), cfg.depth), strict=True)
    x, y, mask = (z.cuda() for z in inputs(cfg, batch=2, h=32, w=32, length=300))
    t = torch.tensor([999.0, 136.0], device="cuda")
    with torch.no_grad():
        expected = ref(x, y, t, encoder_attention_mask=mask, return_dict=False)[0]
        got = ours(x, t, y, mask)
    err = rel_err(got, expected)
    assert err <= TOLERANCE, f"relative error {err:.3g}"
