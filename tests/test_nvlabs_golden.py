"""model/ (its NVlabs defaults, docs/model.md §1.11) against NVlabs/Sana's own code: tests/data/nvlabs_golden.npz
holds seeded weights of a tiny SanaMS in the NVlabs key layout, fixed inputs, and what the reference computed from
them at its pinned commit (scripts/make_nvlabs_golden.py): the SanaMS forward in float32, float16 and bfloat16
(CPU), module outputs of the float16 run, and its Flow-DPM-Solver and Flow-Euler with CFG, on an affine model
function and end to end on the tiny model. The weights are read back through our NVlabs .pth loader."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoints import load_transformer
from model.config import DIFFUSERS_NUMERICS
from model.samplers import classifier_free_guidance, flow_dpm_solver, flow_euler, perturbed_attention_guidance
from model.transformer import SanaTransformer

DATA = Path(__file__).parent / "data"
META = json.loads((DATA / "nvlabs_golden.json").read_text())
with np.load(DATA / "nvlabs_golden.npz") as _npz:
    GOLDEN = {k: torch.from_numpy(_npz[k]) for k in _npz.files}
COMMIT = "168cf92dabd72d82507e577f848e19a531d465e0"


def _group(prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in GOLDEN.items() if k.startswith(prefix + "/")}


WEIGHTS = {k: v.float() for k, v in _group("weights").items()}   # float16-exact values, stored as float16
STRESS = _group("stress")
INPUTS = _group("input")
NORM_KEYS = (".q_norm.", ".k_norm.")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """The golden weights as NVlabs .pth files (tensors under "state_dict"), one per model of the golden runs."""
    root = tmp_path_factory.mktemp("nvlabs")
    sana10 = {k: v for k, v in WEIGHTS.items() if not any(n in k for n in NORM_KEYS)}
    files = {"sana10": sana10, "sana15": WEIGHTS, "stress": WEIGHTS | STRESS}
    for name, state in files.items():
        torch.save({"state_dict": state}, root / f"{name}.pth")
    return {name: root / f"{name}.pth" for name in files}


def _model(checkpoints, variant: str, **overrides) -> SanaTransformer:
    spec = META["variants"][variant]
    name = "stress" if spec["stress"] else ("sana15" if spec["sana15"] else "sana10")
    model = load_transformer(checkpoints[name], dtype=getattr(torch, spec["dtype"]), **overrides)
    assert (model.config.cross_heads, model.config.qk_norm) == (META["model"]["cross_heads"], spec["sana15"])
    return model


def _forward(model: SanaTransformer) -> torch.Tensor:
    with torch.no_grad():   # NVlabs takes the caption as (B, 1, L, C), ours as (B, L, C)
        return model(INPUTS["x"], INPUTS["t"], INPUTS["y"][:, 0], INPUTS["mask"])


def _max_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return (ours.double() - ref.double()).abs().max().item()


def _fp32_tol(ref: torch.Tensor) -> float:
    # Bitwise on the machine that made the data (same ops, same order, float32 on CPU); 1e-6 of the largest output
    # (~8 float32 ulps there) leaves room for another CPU's GEMM blocking and nothing else.
    return 1e-6 * ref.abs().max().item()


def _fp16_tol(ref: torch.Tensor) -> float:
    # Two half-precision ulps at the largest output. What differs is memory layout, not arithmetic: NVlabs keeps the
    # tokens channel-major after its patch embedding (a transposed view) and feeds its attention output projection a
    # permuted view; torch runs a Linear on such an input as GEMM + separate bias add (two roundings in half precision)
    # instead of one fused GEMM. Ours are contiguous. The module tests below show each op within that.
    return 2 * float(np.spacing(np.float16(ref.abs().max().item())))


def test_golden_data_is_nvlabs_at_the_pinned_commit():
    assert META["reference"] == f"NVlabs/Sana@{COMMIT}"
    assert set(META["variants"]) == {"sana10_fp32", "sana10_fp16", "sana15_fp32", "sana15_fp16", "sana15_bf16",
                                     "stress_fp32"}
    assert "diffusion.model.builder" in META["stubs"] and "einops" in META["stubs"]
    assert sum(p.stat().st_size for p in DATA.glob("nvlabs_golden.*")) < 1 << 20


@pytest.mark.parametrize("variant", ["sana10_fp32", "sana15_fp32", "stress_fp32"])
def test_float32_forward_matches_sanams(checkpoints, variant):
    ref = GOLDEN[f"forward/{variant}"]
    assert _max_err(_forward(_model(checkpoints, variant)), ref) <= _fp32_tol(ref)


@pytest.mark.parametrize("option", ["linear_attn_eps", "fp16_clamp", "cross_qk_norm_eps"])
def test_stress_weights_make_each_nvlabs_numerics_choice_decisive(checkpoints, option):
    """The stress case fails with the diffusers value of each option, so the match above proves our default."""
    ref = GOLDEN["forward/stress_fp32"]
    other = _forward(_model(checkpoints, "stress_fp32", **{option: DIFFUSERS_NUMERICS[option]}))
    assert _max_err(other, ref) > 1000 * _fp32_tol(ref)


@pytest.mark.parametrize("variant", ["sana10_fp16", "sana15_fp16"])
def test_float16_forward_matches_sanams(checkpoints, variant):
    ref = GOLDEN[f"forward/{variant}"]
    out = _forward(_model(checkpoints, variant))
    assert out.dtype == torch.float16
    assert _max_err(out, ref) <= _fp16_tol(ref)


def test_bfloat16_forward_matches_sanams_with_its_timestep_cast(checkpoints):
    """At the pinned commit SanaMS casts the truncated timestep to the model dtype, which bfloat16 rounds (999 ->
    1000): our `floor_model_dtype`. The default `floor` follows the later code (docs/model.md §1.11 item 2), so it
    differs here, by far more than the float16-style layout tolerance."""
    ref = GOLDEN["forward/sana15_bf16"]
    tol = 2 * 2.0 ** (np.floor(np.log2(ref.abs().max().item())) - 7)   # two bfloat16 ulps at the largest output
    out = _forward(_model(checkpoints, "sana15_bf16", timestep_rounding="floor_model_dtype"))
    assert out.dtype == torch.bfloat16 and _max_err(out, ref) <= tol
    assert _max_err(_forward(_model(checkpoints, "sana15_bf16")), ref) > 5 * tol


def _module_records(variant: str) -> dict[str, tuple[list[torch.Tensor], torch.Tensor]]:
    """name -> (the positional tensor inputs, the output) of the modules the reference's float16 run recorded."""
    records = _group(f"modules/{variant}")
    names = sorted({k.rsplit("/", 1)[0] for k in records})
    return {name: ([records[k] for k in sorted(records) if k.startswith(f"{name}/in")], records[f"{name}/out"])
            for name in names}


def test_float16_rmsnorms_are_bitwise_nvlabs(checkpoints):
    """Caption norm, self- and cross-attention q/k norms fed the reference's own float16 inputs: NVlabs applies the
    weight to the float32 result and casts once; the diffusers order (cast, then multiply) differs somewhere."""
    records = {k: v for k, v in _module_records("sana15_fp16").items() if k.endswith("norm")}
    assert len(records) == 5
    ours = dict(_model(checkpoints, "sana15_fp16").named_modules())
    theirs = dict(_model(checkpoints, "sana15_fp16", rmsnorm_cast="diffusers").named_modules())
    differs = []
    with torch.no_grad():
        for name, ([x], ref) in records.items():
            assert torch.equal(ours[name](x), ref), name
            differs.append(not torch.equal(theirs[name](x), ref))
    assert any(differs)


def test_float16_cross_attention_and_mix_ffn_are_bitwise(checkpoints):
    """Fed the reference's float16 inputs, in its layout (image tokens channel-major, see _fp16_tol; its caption is
    (B, 1, L, D), its mask the 0/1 rows SanaMS turns into the -10000 bias of docs/model.md §1.6), the other two
    branches of a block are bitwise; the cross-attention is not with either diffusers choice for its q/k norms."""
    records = _module_records("sana15_fp16")
    (x, y, mask), ref = records["blocks.0.cross_attn"]
    x = x.transpose(1, 2).contiguous().transpose(1, 2)
    bias = ((1 - mask.to(x.dtype)) * -10000.0)[:, None, None, :]
    [h], ref_mlp = records["blocks.0.mlp"]
    ours = dict(_model(checkpoints, "sana15_fp16").named_modules())
    with torch.no_grad():
        assert torch.equal(ours["blocks.0.cross_attn"](x, y[:, 0], bias), ref)
        assert torch.equal(ours["blocks.0.mlp"](h, tuple(META["model"]["latent_hw"])), ref_mlp)
        for option in ("rmsnorm_cast", "cross_qk_norm_eps"):
            other = _model(checkpoints, "sana15_fp16", **{option: DIFFUSERS_NUMERICS[option]}).blocks[0].cross_attn
            assert not torch.equal(other(x, y[:, 0], bias), ref), option


def test_float16_linear_attention_within_one_ulp(checkpoints):
    """The attention itself (float32 inside) is bitwise; its float16 output projection sees another input layout
    (see _fp16_tol): one ulp at the largest output, an absolute bound, as a GEMM's rounding error is."""
    [x], ref = _module_records("sana15_fp16")["blocks.0.attn"]
    with torch.no_grad():
        out = dict(_model(checkpoints, "sana15_fp16").named_modules())["blocks.0.attn"](x)
    assert _max_err(out, ref) <= float(np.spacing(np.float16(ref.abs().max().item())))


# ---------------------------------------------------------------------------------------------------------------
# Samplers with CFG as NVlabs runs them: batch [null; prompt], the prompts' mask for both halves (§4.5), scale 4.5.

def _affine_velocity(s: dict[str, torch.Tensor]):
    """The golden model function v = A x + floor(t)/1000 b + P mean_masked(caption), guided."""
    emb, mask = torch.cat([s["null"], s["cond"]])[:, 0], torch.cat([s["mask"], s["mask"]]).to(s["A"].dtype)

    def batched(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        pooled = (emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        t = t.long().to(x.dtype)[:, None, None, None] / 1000      # truncated, as SanaMS does inside
        return (torch.einsum("dc,bchw->bdhw", s["A"], x) + t * s["b"][None, :, None, None]
                + (pooled @ s["P"].T)[:, :, None, None])

    return classifier_free_guidance(batched, META["samplers"]["cfg_scale"])


@pytest.mark.parametrize("x0_formula", ["nvlabs", "diffusers"])
def test_flow_dpm_solver_float64_is_nvlabs_dpms(x0_formula):
    """Both run entirely in float64 here: the same algorithm, to rounding."""
    s = {k: v.double() if v.is_floating_point() else v for k, v in _group("sampler").items()}
    out = flow_dpm_solver(_affine_velocity(s), s["noise"], 20, META["samplers"]["flow_shift"], x0_formula=x0_formula)
    ref = s["dpm_20_f64"]
    assert _max_err(out, ref) <= 1e-12 * ref.abs().max().item()


@pytest.mark.parametrize("x0_formula", ["nvlabs", "diffusers"])
def test_flow_dpm_solver_float32_matches_nvlabs_dpms(x0_formula):
    """NVlabs builds its grid and coefficients in float32, ours in float64; the tolerance is three times how far
    NVlabs' own float32 result lies from its float64 one."""
    s = _group("sampler")
    out = flow_dpm_solver(_affine_velocity(s), s["noise"], 20, META["samplers"]["flow_shift"], x0_formula=x0_formula)
    ref = s["dpm_20"]
    assert _max_err(out, ref) <= 3 * _max_err(ref, s["dpm_20_f64"])


def test_flow_euler_matches_nvlabs_flow_euler():
    """FlowEuler steps with float32 sigma differences, we with float64 ones rounded once: 1e-6 of the largest
    value covers 28 steps of 1-ulp step-size differences."""
    s = _group("sampler")
    ref = s["euler_28"]
    out = flow_euler(_affine_velocity(s), s["noise"], 28, 3.0)   # NVlabs' FlowEuler always runs shift 3
    assert _max_err(out, ref) <= 1e-6 * ref.abs().max().item()


def _e2e_velocity(model: SanaTransformer, null_mask: torch.Tensor | None = None):
    null = GOLDEN["e2e/null"][:, 0].expand(2, -1, -1)
    emb = torch.cat([null, INPUTS["y"][:, 0]])
    mask = torch.cat([INPUTS["mask"] if null_mask is None else null_mask, INPUTS["mask"]])
    return classifier_free_guidance(lambda x, t: model(x, t, emb, mask), META["samplers"]["cfg_scale"])


@pytest.mark.parametrize("x0_formula", ["nvlabs", "diffusers"])
def test_end_to_end_flow_dpm_solver_matches_nvlabs(checkpoints, x0_formula):
    """Tiny model + sampler, 5 steps. The random tiny model amplifies float32 rounding: NVlabs' own result moves by
    `scale` when only its time grid is float64, so rounding-level differences are held to four times that."""
    ref, scale = GOLDEN["e2e/dpm_5"], _max_err(GOLDEN["e2e/dpm_5"], GOLDEN["e2e/dpm_5_grid64"])
    model = _model(checkpoints, "sana10_fp32")
    with torch.no_grad():
        out = flow_dpm_solver(_e2e_velocity(model), INPUTS["x"], 5, 3.0, x0_formula=x0_formula)
        own_mask = torch.zeros_like(INPUTS["mask"])
        own_mask[:, 0] = 1                     # diffusers' null branch: its own (BOS-only) mask
        other = flow_dpm_solver(_e2e_velocity(model, own_mask), INPUTS["x"], 5, 3.0, x0_formula=x0_formula)
    assert _max_err(out, ref) <= 4 * scale
    assert _max_err(other, ref) > 100 * scale


def test_end_to_end_flow_dpm_solver_with_pag_matches_nvlabs(checkpoints):
    """PAG as NVlabs' model_wrapper runs it: [null; prompt; prompt], identity self-attention for the last third in
    the PAG layers (docs/model.md §5.3); the tolerance as above. The same run with PAG on another block is far off."""
    ref, scale = GOLDEN["e2e/dpm_5_pag"], _max_err(GOLDEN["e2e/dpm_5_pag"], GOLDEN["e2e/dpm_5_pag_grid64"])
    s, model = META["samplers"], _model(checkpoints, "sana10_fp32")
    null = GOLDEN["e2e/null"][:, 0].expand(2, -1, -1)
    emb = torch.cat([null, INPUTS["y"][:, 0], INPUTS["y"][:, 0]])
    mask = torch.cat([INPUTS["mask"]] * 3)

    def run(layers: frozenset[int]) -> torch.Tensor:
        def batched(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return model(x, t, emb, mask, pag_layers=layers, perturbed_rows=len(null))
        guided = perturbed_attention_guidance(batched, s["cfg_scale"], s["pag_scale"])
        return flow_dpm_solver(guided, INPUTS["x"], 5, 3.0, x0_formula="nvlabs")

    with torch.no_grad():
        assert _max_err(run(frozenset(s["pag_layers"])), ref) <= 4 * scale
        assert _max_err(run(frozenset({0})), ref) > 100 * scale


def test_end_to_end_flow_euler_matches_nvlabs(checkpoints):
    """Fractional timesteps reach the model here, so this also checks the truncation inside it (§1.11 item 2)."""
    ref = GOLDEN["e2e/euler_5"]
    tol = 1e-5 * ref.abs().max().item()        # as the affine Euler case, with the model's rounding amplification
    with torch.no_grad():
        out = flow_euler(_e2e_velocity(_model(checkpoints, "sana10_fp32")), INPUTS["x"], 5, 3.0)
        unrounded = flow_euler(_e2e_velocity(_model(checkpoints, "sana10_fp32", timestep_rounding="none")),
                               INPUTS["x"], 5, 3.0)
    assert _max_err(out, ref) <= tol
    assert _max_err(unrounded, ref) > 100 * tol
