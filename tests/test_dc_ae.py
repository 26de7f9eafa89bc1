"""DC-AE (docs/model.md §3) against diffusers' AutoencoderDC on shared random weights, checkpoint layouts, tiling."""
from __future__ import annotations

import copy
import dataclasses
import json
import re

import pytest
import torch
import torch.nn.functional as F

from _tiny import diffusers_ae, randomise
from model.dc_ae import (
    DCAE,
    DCAE_PRESETS,
    Downsample,
    EfficientViTBlock,
    ResBlock,
    Upsample,
    get_dc_ae_preset,
)
from model.dc_ae_keys import efficientvit_to_diffusers, load_dc_ae
from model.tiled_decode import decode_tiled
from model.weights_io import CheckpointError, check_state_dict, load_strict, save_safetensors

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderDC  # noqa: E402
from diffusers.models.autoencoders import autoencoder_dc as hf_dc  # noqa: E402

TOLERANCE = 1e-5
TINY = DCAE_PRESETS["dc-ae-tiny"]
SANA = DCAE_PRESETS["dc-ae-f32c32-sana-1.0"]


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


@pytest.fixture(scope="module")
def tiny_pair() -> tuple[AutoencoderDC, DCAE]:
    ref = randomise(diffusers_ae(TINY))
    ours = DCAE(TINY).eval()
    load_strict(ours, ref.state_dict(), "diffusers tiny AutoencoderDC")
    return ref, ours


# ----------------------------------------------------------------------------------------------------------
# Architecture: parameter counts and the diffusers key layout of the real model (meta device).

def test_real_config_matches_diffusers_layout_and_param_counts():
    with torch.device("meta"):
        ours, ref = DCAE(SANA), diffusers_ae(SANA)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(ours.encoder), count(ours.decoder), count(ours)) == (153_027_104, 159_223_171, 312_250_275)
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert len(ours_shapes) == 375
    assert ours_shapes == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert get_dc_ae_preset("dc-ae-f32c32-sana-1.1") == SANA and SANA.scaling_factor == 0.41407
    with pytest.raises(KeyError, match="did you mean dc-ae-f32c32-sana-1.1"):
        get_dc_ae_preset("dc-ae-f32c32-sana-11")


def test_tiny_preset_exercises_the_head_layout():
    # The 3·d-channel heads must straddle the q|k|v thirds, or a wrong reshape would still pass parity.
    for width, kind in zip(TINY.widths, TINY.block_types):
        if kind == "EfficientViTBlock":
            assert width % (3 * TINY.attention_head_dim) != 0


# ----------------------------------------------------------------------------------------------------------
# Parity with diffusers on shared random weights (fp32).

@pytest.mark.parametrize("size", [32, 8])  # 8 px: the last stage is 2×2 = d tokens, the quadratic branch
def test_tiny_encode_decode_parity(tiny_pair, size):
    ref, ours = tiny_pair
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size)) * 2 - 1
    with torch.no_grad():
        z_ref = ref.encode(x).latent
        z_ours = ours.encode(x)
        assert rel_err(z_ours, z_ref * TINY.scaling_factor) <= TOLERANCE
        x_ref = ref.decode(z_ref).sample
        assert rel_err(ours.decode(z_ref * TINY.scaling_factor), x_ref) <= TOLERANCE
    assert x_ref.std() > 0.1  # a degenerate (constant) output would make the comparison vacuous
    with pytest.raises(ValueError, match="multiples of 4"):
        ours.encode(x[..., :size - 2])


@pytest.fixture(scope="module")
def real_width_evit_pair() -> tuple[torch.nn.Module, EfficientViTBlock]:
    ref = randomise(hf_dc.EfficientViTBlock(1024, attention_head_dim=32, qkv_multiscales=(5,),
                                            norm_type="rms_norm"))
    with torch.device("meta"):
        ours = EfficientViTBlock(1024, (5,), SANA)
    load_strict(ours, ref.state_dict(), "diffusers EfficientViTBlock(1024)")
    return ref, ours.eval()


@pytest.mark.parametrize("tokens", [8, 4])  # 64 tokens: linear attention; 16 ≤ 32 tokens: quadratic
def test_real_width_evit_block_parity(real_width_evit_pair, tokens):
    ref, ours = real_width_evit_pair
    x = torch.randn(1, 1024, tokens, tokens, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert rel_err(ours(x), ref(x)) <= TOLERANCE


def test_real_width_resblock_and_resampling_parity():
    gen = torch.Generator().manual_seed(2)
    pairs = [
        (hf_dc.ResBlock(128, 128, "rms_norm", "silu"), ResBlock(128, SANA), (1, 128, 16, 16)),
        (hf_dc.DCDownBlock2d(512, 1024, downsample=False), Downsample(512, 1024), (1, 512, 8, 8)),
        (hf_dc.DCUpBlock2d(1024, 512, interpolate=True), Upsample(1024, 512), (1, 1024, 4, 4)),
    ]
    for ref, ours, shape in pairs:
        randomise(ref)
        load_strict(ours, ref.state_dict(), type(ref).__name__)
        x = torch.randn(shape, generator=gen)
        with torch.no_grad():
            assert rel_err(ours(x), ref(x)) <= TOLERANCE, type(ref).__name__


# ----------------------------------------------------------------------------------------------------------
# Checkpoint layouts. The efficientvit names are rebuilt here from the module tree of efficientvit's dc_ae.py
# (ResidualBlock -> "main.", OpSequential -> "op_list."), independently of the §3.5 renames in the loader.

def efficientvit_from_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    top = {"encoder.conv_in.": "encoder.project_in.conv.",
           "encoder.conv_out.": "encoder.project_out.main.op_list.0.conv.",
           "decoder.conv_in.": "decoder.project_in.main.conv.", "decoder.norm_out.": "decoder.project_out.op_list.0.",
           "decoder.conv_out.": "decoder.project_out.op_list.2.conv."}
    inner = {"conv1.": "main.conv1.conv.", "conv2.": "main.conv2.conv.", "norm.": "main.conv2.norm.",
             "attn.norm_out.": "context_module.main.proj.norm.",
             "conv_out.conv_inverted.": "local_module.main.inverted_conv.conv.",
             "conv_out.conv_depth.": "local_module.main.depth_conv.conv.",
             "conv_out.conv_point.": "local_module.main.point_conv.conv.",
             "conv_out.norm.": "local_module.main.point_conv.norm."}
    out = {}
    for key, t in sd.items():
        if m := re.fullmatch(r"(encoder|decoder)\.(?:down|up)_blocks\.(\d+)\.(\d+)\.(.+)", key):
            part, stage, idx, rest = m.groups()
            prefix = f"{part}.stages.{stage}.op_list.{idx}."
            if rest.startswith("conv."):  # the resampling conv: a ConvLayer, inside InterpolateConv when upsampling
                out[prefix + ("main.conv." if part == "decoder" else "main.") + rest] = t
            elif rest == "attn.to_q.weight":
                qkv = torch.cat([t, sd[key.replace("to_q", "to_k")], sd[key.replace("to_q", "to_v")]])
                out[prefix + "context_module.main.qkv.conv.weight"] = qkv[:, :, None, None]
            elif rest in ("attn.to_k.weight", "attn.to_v.weight"):
                continue
            elif rest == "attn.to_out.weight":
                out[prefix + "context_module.main.proj.conv.weight"] = t[:, :, None, None]
            elif ms := re.fullmatch(r"attn\.to_qkv_multiscale\.(\d+)\.proj_(in|out)\.weight", rest):
                out[prefix + f"context_module.main.aggreg.{ms[1]}.{0 if ms[2] == 'in' else 1}.weight"] = t
            else:
                (old,) = [o for o in inner if rest.startswith(o)]
                out[prefix + inner[old] + rest[len(old):]] = t
        else:
            (old,) = [o for o in top if key.startswith(o)]
            out[top[old] + key[len(old):]] = t
    return out


def test_efficientvit_renames_cover_the_real_layout():
    with torch.device("meta"):
        ref, ours = diffusers_ae(SANA), DCAE(SANA)
    ev = efficientvit_from_diffusers(ref.state_dict())
    assert "decoder.stages.1.op_list.0.main.conv.conv.bias" in ev  # diffusers' detection key for this format
    assert len(ev) == 375 - 2 * 3 * (3 + 3)  # three q/k/v tensors fuse into one in each of the 18 EViT blocks
    check_state_dict({k: v.shape for k, v in ours.state_dict().items()}, efficientvit_to_diffusers(ev), "real")


def test_efficientvit_file_round_trip(tiny_pair, tmp_path):
    ref, _ = tiny_pair
    save_safetensors(efficientvit_from_diffusers(ref.state_dict()), tmp_path / "model.safetensors")
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    for target in (tmp_path, tmp_path / "model.safetensors"):
        ae = load_dc_ae(target, config=TINY)
        assert all(torch.equal(v, ref.state_dict()[k]) for k, v in ae.state_dict().items())
        with torch.no_grad():
            assert rel_err(ae.encode(x), ref.encode(x).latent * TINY.scaling_factor) <= TOLERANCE


def test_diffusers_folders_variants_and_shards(tiny_pair, tmp_path):
    ref, ours = tiny_pair
    ref.save_pretrained(tmp_path / "pipe" / "vae")
    ref.save_pretrained(tmp_path / "shards", max_shard_size="20KB")
    copy.deepcopy(ref).to(torch.bfloat16).save_pretrained(tmp_path / "variant", variant="bf16")
    assert len(list((tmp_path / "shards").glob("*.safetensors"))) > 1
    for target in (tmp_path / "pipe", tmp_path / "pipe" / "vae", tmp_path / "shards"):
        ae = load_dc_ae(target)
        assert ae.config == TINY  # architecture and scaling factor read from config.json
        assert all(torch.equal(v, ours.state_dict()[k]) for k, v in ae.state_dict().items())
    with pytest.raises(CheckpointError, match=r"found diffusion_pytorch_model\.bf16\.safetensors; pass variant"):
        load_dc_ae(tmp_path / "variant")
    ae = load_dc_ae(tmp_path / "variant", variant="bf16", dtype=torch.bfloat16)
    assert {p.dtype for p in ae.parameters()} == {torch.bfloat16}


def test_strict_loading_lists_every_bad_key(tiny_pair, tmp_path):
    ref, _ = tiny_pair
    sd = dict(ref.state_dict())
    del sd["decoder.conv_out.bias"], sd["encoder.conv_in.weight"]
    sd["encoder.extra.weight"] = torch.zeros(1)
    sd["decoder.norm_out.bias"] = torch.zeros(7)
    save_safetensors(sd, tmp_path / "diffusion_pytorch_model.safetensors")
    ref.save_config(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, "future_option": 1}))
    with pytest.warns(UserWarning, match="future_option"), pytest.raises(CheckpointError) as err:
        load_dc_ae(tmp_path)
    message = str(err.value)
    for bad in ("decoder.conv_out.bias", "encoder.conv_in.weight", "encoder.extra.weight", "decoder.norm_out.bias"):
        assert bad in message
    (tmp_path / "config.json").write_text(json.dumps({**raw, "upsample_block_type": "pixel_shuffle"}))
    with pytest.raises(CheckpointError, match="upsample_block_type='pixel_shuffle' is not implemented"):
        load_dc_ae(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no DC-AE weights"):
        load_dc_ae(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="not a DC-AE preset"):
        load_dc_ae("dc-ae-f32c32-sana-2.0")


def test_preset_name_resolves_through_the_hub_cache(tiny_pair, tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="could not fetch mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers"):
        load_dc_ae("dc-ae-f32c32-sana-1.1")
    # What a completed download leaves in the cache (a tiny model under the real repo name).
    repo, commit = tmp_path / "models--mit-han-lab--dc-ae-f32c32-sana-1.1-diffusers", "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    tiny_pair[0].save_pretrained(repo / "snapshots" / commit)
    assert load_dc_ae("dc-ae-f32c32-sana-1.1").config == TINY


# ----------------------------------------------------------------------------------------------------------
# Tiled decoding.

@pytest.mark.parametrize("shape,tile,overlap", [((11, 7), 4, 1), ((11, 7), 4, 3), ((16, 16), 6, 2), ((5, 9), 8, 0)])
def test_tile_placement_and_blending_are_exact_for_a_pointwise_decoder(shape, tile, overlap):
    # Each output pixel of a nearest-neighbour upsampler depends on one latent pixel, so every tile is exact
    # and any error can only come from misplaced tiles or blend weights that do not sum to one.
    z = torch.randn(2, 3, *shape)
    upsample = lambda t: F.interpolate(t, scale_factor=4, mode="nearest")  # noqa: E731
    assert (decode_tiled(upsample, z, tile, overlap, factor=4) - upsample(z)).abs().max() <= 1e-6


def test_tiled_decode_of_the_tiny_model(tiny_pair):
    _, ours = tiny_pair
    z = torch.randn(1, TINY.latent_channels, 24, 24, generator=torch.Generator().manual_seed(3))
    f = TINY.spatial_compression
    with torch.no_grad():
        full = ours.decode(z)
        one_tile = decode_tiled(ours.decoder, z / TINY.scaling_factor, 24, 4, factor=f)
        tiled = ours.decode(z, tile_size=12, tile_overlap=4)  # 3×3 tiles
    assert torch.equal(one_tile, full)  # a tile covering the latent takes the tiled path with unit weights
    # Attention sees one tile at a time, so tiles differ from the whole; measured on these weights: mean |Δ|
    # ≈ 0.06·std, max |Δ| ≈ 0.55·std. The bound is well below what a misplaced tile gives (a 1-latent-pixel
    # shift: mean |Δ| ≈ 0.6·std), so blending and placement are what it checks.
    bound = 0.1 * full.std()
    assert (tiled - full).abs().mean() <= bound
    assert (full[..., f:] - full[..., :-f]).abs().mean() > 3 * bound


# ----------------------------------------------------------------------------------------------------------
# The fused path (kernels="triton"): channels-last activations and weights, Triton norms, shortcuts and GLUMBConv
# middle (docs/model.md §3.6). On the CPU the kernels run in Triton's interpreter (tests/conftest.py), which is slow:
# one image, small maps. On a GPU, TF32 is off: diffusers' Linear and our 1x1 conv would round differently.

@pytest.fixture
def fused_pair(tiny_pair, monkeypatch) -> tuple[AutoencoderDC, DCAE, DCAE, str]:
    pytest.importorskip("triton")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    ref, ours = tiny_pair
    device = "cuda" if torch.cuda.is_available() else "cpu"
    eager = DCAE(dataclasses.replace(TINY, kernels="eager")).eval()
    fused = DCAE(dataclasses.replace(TINY, kernels="triton")).eval()
    eager.load_state_dict(ours.state_dict())
    fused.load_state_dict(ours.state_dict())
    return copy.deepcopy(ref).to(device), eager.to(device), fused.to(device), device


@pytest.mark.parametrize("size", [16, 8])  # 8 px: the last stage is 2×2 = d tokens, the quadratic branch
def test_tiny_fused_channels_last_matches_diffusers_and_eager(fused_pair, size):
    ref, eager, fused, device = fused_pair
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size)).to(device) * 2 - 1
    with torch.no_grad():
        z_ref = ref.encode(x).latent
        z = fused.encode(x)
        assert z.is_contiguous() and rel_err(z, z_ref * TINY.scaling_factor) <= TOLERANCE
        image = fused.decode(z_ref * TINY.scaling_factor)
        assert image.is_contiguous() and rel_err(image, ref.decode(z_ref).sample) <= TOLERANCE
        assert rel_err(image, eager.decode(z_ref * TINY.scaling_factor)) <= TOLERANCE
    # The fused path ran channels-last: it converted the weights in place, once.
    assert fused.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert fused.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="DCAEConfig.kernels='fast'"):
        dataclasses.replace(TINY, kernels="fast")


def test_tiny_fused_tiled_decode_matches_eager(fused_pair):
    """Tiles are strided slices of the latent; the fused decoder takes them as they come (2 tiles of 2×2)."""
    _, eager, fused, device = fused_pair
    z = torch.randn(1, TINY.latent_channels, 3, 2, generator=torch.Generator().manual_seed(4)).to(device)
    with torch.no_grad():
        tiled = fused.decode(z, tile_size=2, tile_overlap=1)
        assert tiled.shape == (1, 3, 12, 8)
        assert rel_err(tiled, eager.decode(z, tile_size=2, tile_overlap=1)) <= TOLERANCE
