"""Checkpoint formats, key maps and architecture inference (docs/model.md §2), against diffusers'
SanaTransformer2DModel (save_pretrained / from_pretrained / from_single_file) as the independent side."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import SanaTransformer2DModel  # noqa: E402
from diffusers.models.embeddings import get_2d_sincos_pos_embed  # noqa: E402

from model.checkpoint_files import read_checkpoint  # noqa: E402
from model.checkpoints import convert, describe, infer_config, load_transformer  # noqa: E402
from model.config import DIFFUSERS_NUMERICS, PRESETS  # noqa: E402
from model.transformer import build_transformer  # noqa: E402
from model.transformer_keys import diffusers_to_nvlabs, nvlabs_to_diffusers  # noqa: E402
from model.weights_io import CheckpointError  # noqa: E402

# diffusers constructor values for the tiny presets (depth 2, D 64 = 2×32, cross 2×32, Gemma stand-in 48).
TINY_HF = dict(in_channels=32, out_channels=32, num_attention_heads=2, attention_head_dim=32, num_layers=2,
               num_cross_attention_heads=2, cross_attention_head_dim=32, cross_attention_dim=64,
               caption_channels=48, sample_size=8)
TINY_EXTRA = {"tiny": {}, "tiny-pe": {"interpolation_scale": 2.0},
              "tiny-qknorm": {"qk_norm": "rms_norm_across_heads"}}

# docs/model.md §1.1/§1.2/§2.2: conversion-script constructor values and storage dtype of each released model.
_06B = dict(num_attention_heads=36, num_layers=28, num_cross_attention_heads=16, cross_attention_head_dim=72,
            cross_attention_dim=1152)
_16B = dict(num_attention_heads=70, num_layers=20, num_cross_attention_heads=20, cross_attention_head_dim=112,
            cross_attention_dim=2240)
QK = dict(qk_norm="rms_norm_across_heads")
RELEASED = {
    "Sana_600M_512px": (dict(_06B, sample_size=16), torch.float16),
    "Sana_600M_1024px": (dict(_06B, sample_size=32), torch.float16),
    "Sana_1600M_512px": (dict(_16B, sample_size=16), torch.float16),
    "Sana_1600M_1024px": (dict(_16B, sample_size=32), torch.float16),
    "Sana_1600M_1024px_BF16": (dict(_16B, sample_size=32), torch.bfloat16),
    "Sana_1600M_2Kpx_BF16": (dict(_16B, sample_size=64, interpolation_scale=1.0), torch.bfloat16),
    "Sana_1600M_4Kpx_BF16": (dict(_16B, sample_size=128, interpolation_scale=2.0), torch.bfloat16),
    "SANA1.5_1.6B_1024px": (dict(_16B, sample_size=32, **QK), torch.bfloat16),
    "SANA1.5_4.8B_1024px": (dict(_16B, num_layers=60, sample_size=32, **QK), torch.bfloat16),
}


class NotATensor:
    """A custom class: `torch.load(weights_only=True)` must refuse to unpickle it."""


def random_hf(preset: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> SanaTransformer2DModel:
    torch.manual_seed(seed)
    model = SanaTransformer2DModel(**TINY_HF, **TINY_EXTRA[preset])
    with torch.no_grad():  # perturb every tensor, so that any swapped pair of same-shape tensors shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.to(dtype).eval()


def random_ours(preset: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_transformer(preset)
    return {k: v + torch.randn_like(v) * 0.05 for k, v in model.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def save_nvlabs(path, weights: dict, *, caption: int = 48, side: int = 8, hidden: int = 64, wrap: str = "state_dict"):
    """An NVlabs-style .pth: module weights plus the y_embedding and (zero) pos_embed buffers (§2.1)."""
    full = {**weights, "y_embedder.y_embedding": torch.randn(300, caption),
            "pos_embed": torch.zeros(1, side * side, hidden)}
    if wrap == "prefix":
        torch.save({"state_dict": {f"model.diffusion_model.{k}": v for k, v in full.items()}}, path)
    elif wrap == "bare":
        torch.save(full, path)
    else:
        torch.save({"state_dict": full, "epoch": 3}, path)
    return full


# ---------------------------------------------------------------------------------------------------------
# Key maps (docs/model.md §2.3).

def test_fused_projections_split_in_spec_order():
    ours = random_ours("tiny-qknorm")
    hf = nvlabs_to_diffusers(ours)
    d = 64
    qkv, kv = ours["blocks.1.attn.qkv.weight"], ours["blocks.1.cross_attn.kv_linear.bias"]
    assert torch.equal(hf["transformer_blocks.1.attn1.to_q.weight"], qkv[:d])
    assert torch.equal(hf["transformer_blocks.1.attn1.to_k.weight"], qkv[d:2 * d])
    assert torch.equal(hf["transformer_blocks.1.attn1.to_v.weight"], qkv[2 * d:])
    assert torch.equal(hf["transformer_blocks.1.attn2.to_k.bias"], kv[:d])
    assert torch.equal(hf["transformer_blocks.1.attn2.to_v.bias"], kv[d:])
    # q/k norm weights enter q·k symmetrically, so no forward test can tell a swap: check the names (§2.3).
    for nv, diff in [("attn.q_norm", "attn1.norm_q"), ("attn.k_norm", "attn1.norm_k"),
                     ("cross_attn.q_norm", "attn2.norm_q"), ("cross_attn.k_norm", "attn2.norm_k")]:
        assert torch.equal(hf[f"transformer_blocks.0.{diff}.weight"], ours[f"blocks.0.{nv}.weight"])
    assert torch.equal(hf["scale_shift_table"], ours["final_layer.scale_shift_table"])
    assert sorted(hf) == sorted(random_hf("tiny-qknorm").state_dict())  # exactly diffusers' key set
    assert_same(diffusers_to_nvlabs(hf), ours)


def test_key_map_errors_name_the_keys():
    hf = random_hf("tiny").state_dict()
    with pytest.raises(CheckpointError, match=r"1 key\(s\) with no NVlabs equivalent \(transformer_blocks.0.bogus"):
        diffusers_to_nvlabs({**hf, "transformer_blocks.0.bogus.weight": torch.zeros(1)}, "x")
    del hf["transformer_blocks.1.attn1.to_v.weight"]
    with pytest.raises(CheckpointError, match=r"transformer_blocks.1.attn1.to_v.weight\) needed to rebuild"):
        diffusers_to_nvlabs(hf, "x")


# ---------------------------------------------------------------------------------------------------------
# diffusers folders → our model.

@pytest.mark.parametrize("preset, dtype, save_kwargs", [
    ("tiny", torch.float32, {}),
    ("tiny-qknorm", torch.float16, {"variant": "fp16"}),
    ("tiny-pe", torch.float32, {"max_shard_size": "60KB"}),
    ("tiny-qknorm", torch.bfloat16, {"variant": "bf16", "max_shard_size": "60KB"}),
])
def test_diffusers_folder_loads_bit_identically(tmp_path, preset, dtype, save_kwargs):
    hf = random_hf(preset, dtype)
    hf.save_pretrained(tmp_path / "pipe" / "transformer", **save_kwargs)
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    for folder in (tmp_path / "pipe" / "transformer", tmp_path / "pipe"):  # the transformer folder or the root
        assert read_checkpoint(folder).format == "diffusers-dir"
        model = load_transformer(folder)
        assert model.dtype == dtype
        assert model.config == PRESETS[preset]
        assert_same(nvlabs_to_diffusers(model.state_dict()), hf.state_dict())
    assert load_transformer(tmp_path / "pipe", dtype=torch.float32).dtype == torch.float32


def test_single_safetensors_in_either_layout(tmp_path):
    from safetensors.torch import save_file

    hf = random_hf("tiny").state_dict()
    save_file(hf, str(tmp_path / "hf.safetensors"))
    assert read_checkpoint(tmp_path / "hf.safetensors").format == "diffusers-safetensors"
    model = load_transformer(tmp_path / "hf.safetensors")
    assert model.config == PRESETS["tiny"]
    assert_same(nvlabs_to_diffusers(model.state_dict()), hf)
    convert(tmp_path / "hf.safetensors", tmp_path / "nv.safetensors", "safetensors")
    assert read_checkpoint(tmp_path / "nv.safetensors").format == "nvlabs-safetensors"
    assert_same(nvlabs_to_diffusers(load_transformer(tmp_path / "nv.safetensors").state_dict()), hf)


# ---------------------------------------------------------------------------------------------------------
# NVlabs .pth → diffusers (and back).

@pytest.mark.parametrize("wrap", ["state_dict", "prefix", "bare"])
def test_nvlabs_pth_to_diffusers_matches_diffusers_own_converter(tmp_path, wrap):
    ours = random_ours("tiny")
    full = save_nvlabs(tmp_path / "sana.pth", ours, wrap=wrap)
    assert read_checkpoint(tmp_path / "sana.pth").format == "nvlabs-pth"
    convert(tmp_path / "sana.pth", tmp_path / "hf", "diffusers", max_shard_size="50KB")
    assert (tmp_path / "hf" / "diffusion_pytorch_model.safetensors.index.json").exists()
    mine = SanaTransformer2DModel.from_pretrained(tmp_path / "hf")
    # diffusers' own NVlabs converter (from_single_file) is the independent key map; it skips q/k norms,
    # hence the 1.0 "tiny" preset here.
    torch.save({"state_dict": full}, tmp_path / "plain.pth")
    theirs = SanaTransformer2DModel.from_single_file(str(tmp_path / "plain.pth"), config=str(tmp_path / "hf"),
                                                     local_files_only=True)
    assert_same(mine.state_dict(), theirs.state_dict())
    assert_same(diffusers_to_nvlabs(mine.state_dict()), ours)
    # Back to NVlabs: every tensor, y_embedding and pos_embed included, is bit-identical to the original.
    convert(tmp_path / "sana.pth", tmp_path / "copy.pth", "nvlabs")
    assert_same(torch.load(tmp_path / "copy.pth", weights_only=True)["state_dict"], full)
    convert(tmp_path / "sana.pth", tmp_path / "copy.safetensors", "safetensors")
    from safetensors.torch import load_file
    assert_same(load_file(tmp_path / "copy.safetensors"), full)


@pytest.mark.parametrize("preset", ["tiny-qknorm", "tiny-pe"])
def test_round_trip_output_matches_diffusers(tmp_path, preset):
    hf = random_hf(preset, seed=1)
    hf.save_pretrained(tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "sana.pth", "nvlabs")
    info = describe(tmp_path / "sana.pth")
    assert (info["format"], info["preset"], info["check"]) == ("nvlabs-pth", preset, "ok")
    convert(tmp_path / "sana.pth", tmp_path / "back", "diffusers", max_shard_size="40KB")
    again = SanaTransformer2DModel.from_pretrained(tmp_path / "back").eval()
    assert_same(again.state_dict(), hf.state_dict())
    assert json.loads((tmp_path / "back" / "config.json").read_text())["interpolation_scale"] == \
        hf.config.interpolation_scale

    ours = load_transformer(tmp_path / "sana.pth", **DIFFUSERS_NUMERICS)
    assert ours.config == PRESETS[preset].replace(**DIFFUSERS_NUMERICS)
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(2, 32, 8, 12, generator=g)  # not the 8×8 training grid: PE is rescaled at 2K/4K
    caption = torch.randn(2, 7, 48, generator=g)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    t = torch.tensor([999.0, 321.5])
    with torch.no_grad():
        expected = again(latent, caption, t, encoder_attention_mask=mask, return_dict=False)[0]
        got = ours(latent, t, caption, mask)
    assert ((got - expected).norm() / expected.norm()).item() < 1e-5


def test_pos_embed_written_for_a_diffusers_source_is_the_sincos_table(tmp_path):
    random_hf("tiny-pe").save_pretrained(tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "sana.pth", "nvlabs")
    sd = torch.load(tmp_path / "sana.pth", weights_only=True)["state_dict"]
    table = get_2d_sincos_pos_embed(64, 8, base_size=8, interpolation_scale=2.0, output_type="pt")
    torch.testing.assert_close(sd["pos_embed"][0], table.float(), rtol=0, atol=1e-6)
    assert sd["y_embedder.y_embedding"].shape == (300, 48)


# ---------------------------------------------------------------------------------------------------------
# Architecture inference.

@pytest.mark.parametrize("name", list(RELEASED))
def test_inference_recovers_every_released_preset(name):
    kwargs, dtype = RELEASED[name]
    with torch.device("meta"):
        hf = SanaTransformer2DModel(**kwargs).to(dtype)
    hf_sd = diffusers_to_nvlabs(hf.state_dict())
    assert infer_config(hf_sd, diffusers_config=dict(hf.config)) == (PRESETS[name], name)
    # NVlabs layout: the weights plus the two buffers, whose shapes carry model_max_length and sample_size.
    nv = {k: v for k, v in build_transformer(PRESETS[name], device="meta", dtype=dtype).state_dict().items()}
    side, hidden = kwargs["sample_size"], hf.config.num_attention_heads * 32
    extras = {"y_embedder.y_embedding": torch.empty(300, 2304, device="meta", dtype=dtype),
              "pos_embed": torch.empty(1, side * side, hidden, device="meta", dtype=dtype)}
    assert sorted(nv) == sorted(hf_sd)
    assert infer_config(nv, extras=extras) == (PRESETS[name], name)


def test_inference_reads_use_pe_and_interpolation_from_pos_embed():
    nv = random_ours("tiny")
    zeros = {"pos_embed": torch.zeros(1, 64, 64)}
    table = {"pos_embed": get_2d_sincos_pos_embed(64, 8, base_size=8, interpolation_scale=2.0, output_type="pt")
             .float()[None].to(torch.bfloat16)}
    assert infer_config(nv, extras=zeros) == (PRESETS["tiny"], "tiny")
    assert infer_config(nv, extras=table) == (PRESETS["tiny-pe"], "tiny-pe")


def test_unknown_architecture_needs_cross_heads(tmp_path):
    from model.config import TransformerConfig

    cfg = TransformerConfig(depth=3, hidden_size=96, cross_heads=3, caption_channels=40, dtype="float32")
    torch.save({"state_dict": build_transformer(cfg).state_dict()}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"odd.pth: no preset has depth 3, hidden 96.*pass cross_heads="):
        load_transformer(tmp_path / "odd.pth")
    assert load_transformer(tmp_path / "odd.pth", cross_heads=3).config == cfg
    assert describe(tmp_path / "odd.pth", cross_heads=3)["preset"] is None


def test_preset_and_overrides(tmp_path):
    save_nvlabs(tmp_path / "sana.pth", random_ours("tiny"))
    assert load_transformer(tmp_path / "sana.pth", preset="tiny-pe").config == PRESETS["tiny-pe"]
    assert load_transformer(tmp_path / "sana.pth", sample_size=16, flow_shift=6.0).config == \
        PRESETS["tiny"].replace(sample_size=16, flow_shift=6.0)
    with pytest.raises(CheckpointError, match=r"preset Sana_600M_512px does not fit \(depth: checkpoint 2, preset 28"):
        load_transformer(tmp_path / "sana.pth", preset="Sana_600M_512px")
    with pytest.raises(ValueError, match="unknown transformer option"):
        load_transformer(tmp_path / "sana.pth", depht=3)


def test_bare_preset_name_gives_random_weights():
    model = load_transformer("tiny-qknorm")
    assert model.config == PRESETS["tiny-qknorm"] and "blocks.1.attn.q_norm.weight" in model.state_dict()
    with pytest.raises(CheckpointError, match="no-such-thing: no such file or directory, and not a preset"):
        load_transformer("no-such-thing")


# ---------------------------------------------------------------------------------------------------------
# Bad checkpoints: one CheckpointError, one line, naming the file.

def _bad(tmp_path, name: str) -> str:
    with pytest.raises(CheckpointError) as err:
        load_transformer(tmp_path / name)
    text = str(err.value)
    assert "\n" not in text and name in text
    return text


def test_strict_loading_reports_missing_unexpected_misshaped(tmp_path):
    ours = random_ours("tiny")
    missing = dict(ours)
    del missing["blocks.1.mlp.depth_conv.conv.bias"]
    save_nvlabs(tmp_path / "missing.pth", missing)
    assert "missing keys 1 (blocks.1.mlp.depth_conv.conv.bias)" in _bad(tmp_path, "missing.pth")
    save_nvlabs(tmp_path / "unexpected.pth", {**ours, "blocks.0.extra.weight": torch.zeros(2)})
    assert "unexpected keys 1 (blocks.0.extra.weight)" in _bad(tmp_path, "unexpected.pth")
    save_nvlabs(tmp_path / "misshaped.pth", {**ours, "blocks.0.attn.proj.bias": torch.zeros(63)})
    assert "misshaped keys 1 (blocks.0.attn.proj.bias (63,)≠(64,))" in _bad(tmp_path, "misshaped.pth")
    save_nvlabs(tmp_path / "pe.pth", ours, side=8, hidden=32)
    assert "pos_embed has shape (1, 64, 32)" in _bad(tmp_path, "pe.pth")
    torch.save({"state_dict": {**ours, "pos_embed": -torch.ones(1, 64, 64)}}, tmp_path / "pe2.pth")
    assert "pos_embed is neither zeros nor a 2-D sin-cos table" in _bad(tmp_path, "pe2.pth")


def test_unreadable_files(tmp_path):
    save_nvlabs(tmp_path / "good.pth", random_ours("tiny"))
    random_hf("tiny").save_pretrained(tmp_path / "hf")
    pth = (tmp_path / "good.pth").read_bytes()
    st = (tmp_path / "hf" / "diffusion_pytorch_model.safetensors").read_bytes()
    (tmp_path / "cut.pth").write_bytes(pth[: len(pth) // 2])
    assert "not a readable torch checkpoint" in _bad(tmp_path, "cut.pth")
    (tmp_path / "cut.safetensors").write_bytes(st[: len(st) // 2])
    assert "not a readable safetensors file" in _bad(tmp_path, "cut.safetensors")
    for name in ("junk.pth", "junk.safetensors"):
        (tmp_path / name).write_bytes(bytes(range(256)) * 8)
        assert "not a readable" in _bad(tmp_path, name)
    torch.save({"state_dict": {"x": torch.zeros(1)}, "extra": NotATensor()}, tmp_path / "code.pth")
    assert "not a readable torch checkpoint" in _bad(tmp_path, "code.pth")
    torch.save({"state_dict": {"x": torch.zeros(1), "step": 4}}, tmp_path / "mixed.pth")
    assert "1 entries are not tensors (step)" in _bad(tmp_path, "mixed.pth")
    (tmp_path / "weights.txt").write_text("hello")
    assert "unknown checkpoint type '.txt'" in _bad(tmp_path, "weights.txt")
    (tmp_path / "empty").mkdir()
    assert "no Sana transformer weights" in _bad(tmp_path, "empty")


def test_bad_diffusers_folders(tmp_path):
    hf = random_hf("tiny")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="60KB")
    next((tmp_path / "sharded").glob("*-00002-of-*.safetensors")).unlink()
    assert "which does not exist" in _bad(tmp_path, "sharded")
    hf.to(torch.float16).save_pretrained(tmp_path / "two", variant="fp16")
    hf.to(torch.bfloat16).save_pretrained(tmp_path / "two", variant="bf16")
    assert "several weight variants (bf16, fp16)" in _bad(tmp_path, "two")
    assert load_transformer(tmp_path / "two", variant="bf16").dtype == torch.bfloat16
    hf.save_pretrained(tmp_path / "noconfig")
    (tmp_path / "noconfig" / "config.json").unlink()
    assert "without config.json" in _bad(tmp_path, "noconfig")


# ---------------------------------------------------------------------------------------------------------
# convert / describe.

def test_convert_is_atomic_and_refuses_to_clobber(tmp_path):
    save_nvlabs(tmp_path / "sana.pth", random_ours("tiny"))
    convert(tmp_path / "sana.pth", tmp_path / "out", "diffusers")
    with pytest.raises(FileExistsError):
        convert(tmp_path / "sana.pth", tmp_path / "out", "diffusers")
    convert(tmp_path / "sana.pth", tmp_path / "out", "diffusers", max_shard_size="50KB", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "sana.pth"]  # no temporary left behind
    assert read_checkpoint(tmp_path / "out").files[1].name == "diffusion_pytorch_model.safetensors.index.json"
    with pytest.raises(ValueError, match="must end in .safetensors"):
        convert(tmp_path / "sana.pth", tmp_path / "x.pth", "safetensors")
    hf_dir = tmp_path / "qk"
    random_hf("tiny-qknorm").save_pretrained(hf_dir)
    shutil.rmtree(tmp_path / "out")
    convert(hf_dir, tmp_path / "out.safetensors", "safetensors", layout="diffusers")
    assert read_checkpoint(tmp_path / "out.safetensors").format == "diffusers-safetensors"


def test_describe(tmp_path):
    hf = random_hf("tiny-qknorm", torch.float16)
    hf.save_pretrained(tmp_path / "hf", variant="fp16")
    info = describe(tmp_path / "hf")
    json.dumps(info)
    weights = tmp_path / "hf" / "diffusion_pytorch_model.fp16.safetensors"
    assert info["format"] == "diffusers-dir" and info["preset"] == "tiny-qknorm" and info["check"] == "ok"
    assert info["storage_dtype"] == "float16"
    assert info["parameters"] == sum(p.numel() for p in hf.parameters())
    assert info["num_tensors"] == len(hf.state_dict())
    assert {f["name"]: f["sha256"] for f in info["files"]}[weights.name] == \
        hashlib.sha256(weights.read_bytes()).hexdigest()


def test_variant_index_in_either_naming(tmp_path):
    hf = random_hf("tiny", torch.float16)
    hf.save_pretrained(tmp_path / "hf", variant="fp16", max_shard_size="60KB")
    index = tmp_path / "hf" / "diffusion_pytorch_model.safetensors.index.fp16.json"  # diffusers' own naming
    assert_same(nvlabs_to_diffusers(load_transformer(tmp_path / "hf").state_dict()), hf.state_dict())
    index.rename(tmp_path / "hf" / "diffusion_pytorch_model.fp16.safetensors.index.json")
    assert_same(nvlabs_to_diffusers(load_transformer(tmp_path / "hf", variant="fp16").state_dict()), hf.state_dict())
