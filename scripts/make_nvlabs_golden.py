"""Golden Sana outputs from NVlabs/Sana's own code on tiny inputs, written to tests/data/nvlabs_golden.npz (+ .json);
tests/test_nvlabs_golden.py checks model/transformer.py and model/samplers.py (their NVlabs defaults) on them.

    python scripts/make_nvlabs_golden.py                      # clones NVlabs/Sana and checks out COMMIT
    python scripts/make_nvlabs_golden.py --checkout /tmp/sana # an existing checkout at COMMIT

What the reference computes here (docs/model.md §1.11, §5):
- SanaMS forward (diffusion/model/nets/sana_multi_scale.py and its blocks) of a tiny model (depth 2, width 64, two
  32-channel linear heads, two cross heads, 48 caption channels, 8 caption tokens, a 6x8 latent) built as the
  pipeline builds it (model_init_config keys; fp32_attention on, as the metric scripts set it for every config;
  then `.to(weight_dtype)`), on seeded weights: Sana-1.0 blocks and SANA-1.5 blocks (q/k RMSNorm), in float32,
  float16 and bfloat16 (all on CPU), and a float32 "stress" copy whose weights make the NVlabs numerics decisive
  (linear-attention eps, the always-on fp16 clamp, the cross-attention q/k-norm eps);
- Flow-DPM-Solver (diffusion/dpm_solver.py DPMS + diffusion/model/dpm_solver.py, as the pipeline calls it: flow
  model, multistep order 2, time_uniform_flow, CFG) and Flow-Euler (diffusion/flow_euler_sampler.py FlowEuler, on
  the installed diffusers' FlowMatchEulerDiscreteScheduler) on a fixed affine model function with fixed noise,
  and both again end to end on the tiny SanaMS (Flow-DPM-Solver also with PAG, as the demo app runs it).

Weights, inputs and outputs are stored; weights and inputs are rounded to float16-representable values, so one
float16 copy serves every run exactly (the stress tensors are stored in float32; bfloat16 runs round the same values
in both codes).

Imports the reference needs but never runs on this path are stubbed (STUBS, recorded in the JSON): package
`__init__`s that import every model and sampler variant, the mmcv registry and logging helpers, einops.
The reference's code is not committed.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from pinned_checkout import pin_error

COMMIT = "168cf92dabd72d82507e577f848e19a531d465e0"   # NVlabs/Sana, 2025-03-21 (docs/model.md's reference)
REPO_URL = "https://github.com/NVlabs/Sana"
SEED = 20250321
DEPTH, HIDDEN, CROSS_HEADS, CAPTION_CHANNELS, TOKENS, LATENT_HW = 2, 64, 2, 48, 8, (6, 8)
CFG_SCALE, FLOW_SHIFT = 4.5, 3.0
PAG_SCALE, PAG_LAYERS = 2.0, (1,)                      # the demo app's PAG scale, on the tiny model's last block
# Module-level records of the SANA-1.5 float16 run: the three kinds of RMSNorm and one block's three branches.
MODULES_VARIANT = "sana15_fp16"
MODULES = ("attention_y_norm", "blocks.0.attn.q_norm", "blocks.0.attn.k_norm", "blocks.0.cross_attn.q_norm",
           "blocks.0.cross_attn.k_norm", "blocks.0.attn", "blocks.0.cross_attn", "blocks.0.mlp")
# (module, why it is stubbed): never executed on the SanaMS forward / sampler path.
STUBS = {
    "diffusion": "package __init__ imports every sampler (IDDPM, SA-Solver, ...); only dpm_solver and "
                 "flow_euler_sampler are loaded, as submodules",
    "diffusion.model.nets": "package __init__ imports every network variant (U-shape, AdaLN, ControlNet)",
    "diffusion.model.builder": "MODELS (an mmcv Registry) is only a decorator here; the module also imports "
                               "DC-AE, VAEs and text encoders; the model is built by calling SanaMS directly",
    "diffusion.utils.dist_utils": "get_rank only decides whether the constructor prints its config line "
                                  "(the module imports mmcv)",
    "diffusion.utils.logger": "get_root_logger is only called when config.work_dir is set (config=None here)",
    "diffusion.model.nets.fastlinear.modules": "the Triton kernels of attn_type 'triton_linear' / ffn_type "
                                               "'triton_mbconvpreglu' (imported whenever triton is installed); "
                                               "the released configs and this run use 'linear' / 'glumbconv'",
    "einops": "rearrange is used by SizeEmbedder (micro-conditioning) only, not by SanaMS",
}


def _raising(name: str):
    def call(*args, **kwargs):
        raise RuntimeError(f"{name} is stubbed by make_nvlabs_golden.py but was called")
    return call


class _Registry:
    """mmcv.Registry's decorator role only."""

    def register_module(self, *args, **kwargs):
        return lambda obj: obj


def _stub_modules(checkout: Path) -> dict[str, types.ModuleType]:
    def package(name: str, path: Path) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        return module

    stubs = {"diffusion": package("diffusion", checkout / "diffusion"),
             "diffusion.model.nets": package("diffusion.model.nets", checkout / "diffusion" / "model" / "nets"),
             "diffusion.model.builder": types.ModuleType("diffusion.model.builder"),
             "diffusion.utils.dist_utils": types.ModuleType("diffusion.utils.dist_utils"),
             "diffusion.utils.logger": types.ModuleType("diffusion.utils.logger"),
             "diffusion.model.nets.fastlinear.modules": types.ModuleType("diffusion.model.nets.fastlinear.modules"),
             "einops": types.ModuleType("einops")}
    stubs["diffusion.model.builder"].MODELS = _Registry()
    stubs["diffusion.utils.dist_utils"].get_rank = lambda: 0
    stubs["diffusion.utils.logger"].get_root_logger = _raising("get_root_logger")
    stubs["einops"].rearrange = _raising("einops.rearrange")
    for name in ("TritonLiteMLA", "TritonMBConvPreGLU"):
        setattr(stubs["diffusion.model.nets.fastlinear.modules"], name, _raising(name))
    assert set(stubs) == set(STUBS)
    return stubs


def load_reference(checkout: Path) -> dict[str, types.ModuleType]:
    """The reference modules, imported from the checkout with STUBS in place."""
    os.environ["DPM_TQDM"] = "True"                  # its progress bars off
    sys.path.insert(0, str(checkout))
    sys.modules.update(_stub_modules(checkout))
    names = {"ms": "diffusion.model.nets.sana_multi_scale", "utils": "diffusion.model.utils",
             "dpms": "diffusion.dpm_solver", "euler": "diffusion.flow_euler_sampler",
             "import_utils": "diffusion.utils.import_utils"}
    modules = {key: importlib.import_module(name) for key, name in names.items()}
    for key, module in modules.items():
        if not Path(module.__file__).resolve().is_relative_to(checkout.resolve()):
            raise RuntimeError(f"{names[key]} was imported from {module.__file__}, not from {checkout}")
    if modules["import_utils"].is_xformers_available():
        raise RuntimeError("xformers is installed: SanaMS would take its exact-mask path; run without xformers")
    return modules


# ---------------------------------------------------------------------------------------------------------------
# The tiny model, its weights and inputs.

def model_kwargs(sana15: bool) -> dict:
    """What app/sana_pipeline.py's model_init_config passes, for a tiny Sana-1.0 / SANA-1.5 config."""
    return dict(input_size=LATENT_HW[1], pe_interpolation=1.0, config=None, model_max_length=TOKENS, qk_norm=sana15,
                micro_condition=False, caption_channels=CAPTION_CHANNELS, class_dropout_prob=0.1, y_norm=True,
                attn_type="linear", ffn_type="glumbconv", mlp_ratio=2.5, mlp_acts=["silu", "silu", None],
                in_channels=32, y_norm_scale_factor=0.01, use_pe=False, pos_embed_type="sincos", linear_head_dim=32,
                pred_sigma=False, learn_sigma=False, cross_norm=sana15, timestep_norm_scale_factor=1.0)


def build_reference(ref: dict, sana15: bool, weights: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.nn.Module:
    model = ref["ms"].SanaMS(depth=DEPTH, hidden_size=HIDDEN, patch_size=1, num_heads=CROSS_HEADS,
                             **model_kwargs(sana15))
    ref["utils"].set_fp32_attention(model)            # build_model(use_fp32_attention=True): every fp16 config
    state = model.state_dict()
    missing = sorted(set(state) - set(weights))
    if missing:
        raise RuntimeError(f"no golden weight for reference keys {missing}")
    model.load_state_dict({k: weights[k] for k in state}, strict=True)
    return model.eval().to(dtype)                     # from_pretrained: .eval().to(weight_dtype)


def _fp16_exact(t: torch.Tensor) -> torch.Tensor:
    return t.half().float()


def make_weights(ref: dict) -> dict[str, torch.Tensor]:
    """Seeded weights for every key of the SANA-1.5 tiny model (a superset of the Sana-1.0 one): weights
    ~ N(0, 1/fan_in), biases ~ N(0, 0.1²), AdaLN tables ~ N(0, 0.3²), norm weights ~ 1 + N(0, 0.1²), none zero."""
    shapes = {k: v.shape for k, v in ref["ms"].SanaMS(depth=DEPTH, hidden_size=HIDDEN, patch_size=1,
                                                     num_heads=CROSS_HEADS, **model_kwargs(True)).state_dict().items()}
    gen = torch.Generator().manual_seed(SEED)
    out = {}
    for key in sorted(shapes):
        z = torch.randn(shapes[key], generator=gen, dtype=torch.float32)
        if key == "pos_embed":
            z = torch.zeros(shapes[key])              # NVlabs stores zeros without PE
        elif "norm" in key:
            z = 1 + 0.1 * z
        elif "scale_shift_table" in key:
            z = 0.3 * z
        elif key.endswith("bias"):
            z = 0.1 * z
        elif z.ndim >= 2:
            z = z / float(np.prod(z.shape[1:])) ** 0.5
        out[key] = _fp16_exact(z)
    return out


def stress_overrides(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float32 tensors that make each NVlabs-vs-diffusers numerics choice change the output (docs/model.md §1.11):
    head 0's query projection of block 0 scaled by 1e-9, so its linear-attention normaliser is ~1e-8 (eps 1e-8
    vs 1e-15); block 1's self-attention output projection scaled by 1e6, beyond ±65504 (the clamp NVlabs applies
    to float32 too); block 0's cross-attention query scaled by 1e-3, so mean(q²) ~ 1e-6 (q/k-norm eps 1e-6 vs
    1e-5)."""
    qkv = weights["blocks.0.attn.qkv.weight"].clone()
    qkv[:32] *= 1e-9
    return {"blocks.0.attn.qkv.weight": qkv,
            "blocks.1.attn.proj.weight": weights["blocks.1.attn.proj.weight"] * 1e6,
            "blocks.0.cross_attn.q_linear.weight": weights["blocks.0.cross_attn.q_linear.weight"] * 1e-3,
            "blocks.0.cross_attn.q_linear.bias": weights["blocks.0.cross_attn.q_linear.bias"] * 1e-3}


def make_inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED + 1)
    x = _fp16_exact(torch.randn(2, 32, *LATENT_HW, generator=gen))
    y = _fp16_exact(torch.randn(2, 1, TOKENS, CAPTION_CHANNELS, generator=gen))
    mask = torch.tensor([[1] * 5 + [0] * 3, [1] * TOKENS], dtype=torch.int64)   # one padded caption
    t = torch.tensor([999.75, 412.25])                # fractional: the model truncates (§1.11 item 2)
    return {"x": x, "t": t, "y": y, "mask": mask}


def record_modules(model: torch.nn.Module, arrays: dict[str, np.ndarray], variant: str) -> list:
    """Forward hooks (they read, never change, the computation) that store the positional tensor inputs and the
    output of MODULES: in float16 the whole forward is compared to a tolerance (see the test), these exactly."""
    def hook(name):
        def store(module, args, out):
            for i, arg in enumerate(args):
                if torch.is_tensor(arg):
                    arrays[f"modules/{variant}/{name}/in{i}"] = arg.clone().numpy()
            arrays[f"modules/{variant}/{name}/out"] = out.clone().numpy()
        return store

    named = dict(model.named_modules())
    return [named[name].register_forward_hook(hook(name)) for name in MODULES]


# ---------------------------------------------------------------------------------------------------------------
# Samplers.

def make_sampler_inputs() -> dict[str, torch.Tensor]:
    """A fixed affine velocity v = A·x + floor(t)/1000·b + P·mean_masked(y), its conditions and the noise."""
    gen = torch.Generator().manual_seed(SEED + 2)
    c = 4
    return {"A": _fp16_exact(torch.eye(c) * -0.5 + 0.2 * torch.randn(c, c, generator=gen)),
            "b": _fp16_exact(torch.randn(c, generator=gen)),
            "P": _fp16_exact(0.5 * torch.randn(c, 6, generator=gen)),
            "cond": _fp16_exact(torch.randn(2, 1, 5, 6, generator=gen)),
            "null": _fp16_exact(torch.randn(1, 1, 5, 6, generator=gen)).repeat(2, 1, 1, 1),
            "mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
            "noise": _fp16_exact(torch.randn(2, c, 3, 5, generator=gen))}


def affine_velocity(s: dict[str, torch.Tensor]):
    """The model function in NVlabs' call convention model(x, t, y, mask=..., **kwargs). It truncates t as SanaMS
    does and repeats the prompts' mask over a [null; cond] batch as SanaMS does (docs/model.md §4.5)."""
    def model(x, timestep, y, mask=None, **kwargs):
        mask = mask.repeat(y.shape[0] // mask.shape[0], 1).to(x.dtype)
        pooled = (y[:, 0] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)          # (B, 6)
        t = timestep.long().to(x.dtype)[:, None, None, None] / 1000
        return (torch.einsum("dc,bchw->bdhw", s["A"], x) + t * s["b"][None, :, None, None]
                + (pooled @ s["P"].T)[:, :, None, None])
    return model


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def run_dpm(ref: dict, model, cond, null, mask, noise, steps: int, pag_scale: float = 1.0) -> torch.Tensor:
    """As app/sana_pipeline.py calls it; with pag_scale 1 (the metric scripts) guidance_type_select picks
    "classifier-free", above 1 "classifier-free_PAG" with the config's pag_applied_layers (here PAG_LAYERS)."""
    guidance = "classifier-free_PAG" if pag_scale > 1.0 else "classifier-free"
    solver = ref["dpms"].DPMS(model, condition=cond, uncondition=null, cfg_scale=CFG_SCALE, pag_scale=pag_scale,
                              pag_applied_layers=list(PAG_LAYERS), guidance_type=guidance, model_type="flow",
                              model_kwargs=dict(data_info=None, mask=mask), schedule="FLOW")
    return solver.sample(noise, steps=steps, order=2, skip_type="time_uniform_flow", method="multistep",
                         flow_shift=FLOW_SHIFT)


def run_euler(ref: dict, model, cond, null, mask, noise, steps: int) -> torch.Tensor:
    sampler = ref["euler"].FlowEuler(model, condition=cond, uncondition=null, cfg_scale=CFG_SCALE,
                                     model_kwargs=dict(data_info=None, mask=mask))
    return sampler.sample(noise, steps=steps)


# ---------------------------------------------------------------------------------------------------------------

def generate(ref: dict) -> tuple[dict[str, np.ndarray], dict]:
    weights = make_weights(ref)
    stress = stress_overrides(weights)
    inputs = make_inputs()
    arrays = {f"weights/{k}": v.half().numpy() for k, v in weights.items()}
    arrays |= {f"stress/{k}": v.numpy() for k, v in stress.items()}
    arrays |= {f"input/{k}": v.numpy() for k, v in inputs.items()}
    variants = {"sana10_fp32": (False, torch.float32, {}), "sana10_fp16": (False, torch.float16, {}),
                "sana15_fp32": (True, torch.float32, {}), "sana15_fp16": (True, torch.float16, {}),
                "sana15_bf16": (True, torch.bfloat16, {}), "stress_fp32": (True, torch.float32, stress)}
    with torch.no_grad():
        for name, (sana15, dtype, overrides) in variants.items():
            model = build_reference(ref, sana15, weights | overrides, dtype)
            records = record_modules(model, arrays, name) if name == MODULES_VARIANT else []
            out = model(inputs["x"], inputs["t"], inputs["y"], mask=inputs["mask"])
            for handle in records:
                handle.remove()
            if not torch.isfinite(out).all():
                raise RuntimeError(f"{name}: the reference output is not finite")
            arrays[f"forward/{name}"] = out.float().numpy()   # NumPy has no bfloat16; float32 holds it exactly

        s = make_sampler_inputs()
        arrays |= {f"sampler/{k}": v.numpy() for k, v in s.items()}
        model = affine_velocity(s)
        arrays["sampler/dpm_20"] = run_dpm(ref, model, s["cond"], s["null"], s["mask"], s["noise"], 20).numpy()
        # The same in float64 throughout (its grid is torch.linspace in the default dtype): the algorithm alone.
        s64 = {k: v.double() if v.is_floating_point() else v for k, v in s.items()}
        with default_dtype(torch.float64):
            arrays["sampler/dpm_20_f64"] = run_dpm(ref, affine_velocity(s64), s64["cond"], s64["null"], s64["mask"],
                                                   s64["noise"], 20).numpy()
        arrays["sampler/euler_28"] = run_euler(ref, model, s["cond"], s["null"], s["mask"], s["noise"], 28).numpy()

        # End to end: the tiny Sana-1.0 model in float32 on the forward inputs (latents as the noise, captions as
        # the prompts) against one seeded null caption, as the pipeline's null embedding.
        e2e = build_reference(ref, False, weights, torch.float32)
        gen = torch.Generator().manual_seed(SEED + 3)
        null = _fp16_exact(torch.randn(1, 1, TOKENS, CAPTION_CHANNELS, generator=gen))
        arrays["e2e/null"] = null.numpy()
        cond, mask, noise = inputs["y"], inputs["mask"], inputs["x"]
        arrays["e2e/dpm_5"] = run_dpm(ref, e2e, cond, null.repeat(2, 1, 1, 1), mask, noise, 5).numpy()
        arrays["e2e/euler_5"] = run_euler(ref, e2e, cond, null.repeat(2, 1, 1, 1), mask, noise, 5).numpy()
        arrays["e2e/dpm_5_pag"] = run_dpm(ref, e2e, cond, null.repeat(2, 1, 1, 1), mask, noise, 5,
                                          pag_scale=PAG_SCALE).numpy()
        # Its own float32 rounding scale: the same run with only its time grid (and the solver coefficients made
        # from it) in float64; the model, latents and model calls stay float32.
        with default_dtype(torch.float64):
            arrays["e2e/dpm_5_grid64"] = run_dpm(ref, e2e, cond, null.repeat(2, 1, 1, 1), mask, noise, 5).numpy()
            arrays["e2e/dpm_5_pag_grid64"] = run_dpm(ref, e2e, cond, null.repeat(2, 1, 1, 1), mask, noise, 5,
                                                     pag_scale=PAG_SCALE).numpy()

    versions = {p: importlib.metadata.version(p) for p in ("torch", "timm", "diffusers", "numpy")}
    meta = {"reference": f"NVlabs/Sana@{COMMIT}", "made_by": "scripts/make_nvlabs_golden.py", "seed": SEED,
            "model": {"depth": DEPTH, "hidden_size": HIDDEN, "cross_heads": CROSS_HEADS, "linear_head_dim": 32,
                      "caption_channels": CAPTION_CHANNELS, "model_max_length": TOKENS, "latent_hw": list(LATENT_HW),
                      "reference_kwargs": model_kwargs(False), "sana15_kwargs": {"qk_norm": True, "cross_norm": True},
                      "fp32_attention": True},
            "variants": {k: {"sana15": v[0], "dtype": str(v[1]).removeprefix("torch."), "stress": bool(v[2])}
                         for k, v in variants.items()},
            "samplers": {"cfg_scale": CFG_SCALE, "flow_shift": FLOW_SHIFT, "pag_scale": PAG_SCALE,
                         "pag_layers": list(PAG_LAYERS), "dpm": "DPMS(model_type='flow', "
                         "schedule='FLOW').sample(order=2, skip_type='time_uniform_flow', method='multistep')",
                         "euler": "FlowEuler (FlowMatchEulerDiscreteScheduler(shift=3.0) of the installed diffusers)"},
            "stubs": STUBS, "versions": versions, "device": "cpu"}
    return arrays, meta


def checkout_reference(dest: Path) -> Path:
    # blobs on demand: only the commit's files are fetched, not the repository's history of large assets
    subprocess.run(["git", "clone", "--quiet", "--filter=blob:none", "--no-checkout", REPO_URL, str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "--quiet", COMMIT], check=True)
    return dest


def write(out: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    meta_path = out.with_suffix(".json")
    tmp_meta = meta_path.with_suffix(".json.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=1) + "\n")
    tmp.replace(out)
    tmp_meta.replace(meta_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, help=f"an NVlabs/Sana checkout at {COMMIT[:12]} (default: clone)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data" /
                        "nvlabs_golden.npz")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        checkout = args.checkout or checkout_reference(Path(tmp) / "Sana")
        error = pin_error(checkout, COMMIT)
        if error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        arrays, meta = generate(load_reference(checkout))
    write(args.out, arrays, meta)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1024:.0f} KiB, {len(arrays)} arrays) and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
