"""End-to-end parity with diffusers' SanaPipeline built from the same tiny random components and noise."""
from __future__ import annotations

import pytest
import torch

from _tiny import diffusers_ae, diffusers_kwargs, randomise, randomize
from model.config import DIFFUSERS_NUMERICS, TransformerConfig
from model.dc_ae import DCAE, DCAE_PRESETS
from model.pipeline import SamplingConfig, SanaPipeline, initial_noise
from model.quantize import SCHEME_VERSION
from model.text_encoder import CHI_DIFFUSERS, CHI_NVLABS, TEXT_ENCODER_PRESETS, TextEncoder
from model.transformer import build_transformer
from model.transformer_keys import diffusers_to_nvlabs
from model.weights_io import load_strict
from sana_eval.smoke.tiny import GEMMA_HIDDEN, write_tiny_gemma

pytest.importorskip("diffusers")
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, SanaTransformer2DModel
from diffusers import SanaPipeline as DiffusersSanaPipeline

PROMPTS = ["A Red Cube on a Blue Sphere", "a cat sleeping on a warm windowsill"]
SIZE = 32  # px; the tiny DC-AE compresses by 4, so 8x8 latents


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    path = write_tiny_gemma(tmp_path_factory.mktemp("tiny-gemma2"),
                            [*CHI_NVLABS, *CHI_DIFFUSERS, *PROMPTS, *(p.lower() for p in PROMPTS)])
    text_config = TEXT_ENCODER_PRESETS["diffusers"].__class__(
        **{**TEXT_ENCODER_PRESETS["diffusers"].__dict__, "model": str(path), "dtype": "float32"})
    text_encoder = TextEncoder(text_config)

    ae_ref = randomise(diffusers_ae(DCAE_PRESETS["dc-ae-tiny"]), 1)
    ae = DCAE(DCAE_PRESETS["dc-ae-tiny"]).eval()
    load_strict(ae, ae_ref.state_dict(), "tiny AutoencoderDC")

    cfg = TransformerConfig(depth=2, hidden_size=64, cross_heads=2, caption_channels=GEMMA_HIDDEN, in_channels=4,
                            sample_size=SIZE // 4, dtype="float32", flow_shift=3.0).replace(**DIFFUSERS_NUMERICS)
    dit_ref = SanaTransformer2DModel(**diffusers_kwargs(cfg)).eval()
    randomize(dit_ref, 2)
    dit = build_transformer(cfg).eval()
    load_strict(dit, diffusers_to_nvlabs(dit_ref.state_dict()), "tiny SanaTransformer2DModel")
    ours = SanaPipeline(dit, ae, text_encoder)
    return ours, dict(tokenizer=text_encoder.tokenizer, text_encoder=text_encoder.decoder, vae=ae_ref,
                      transformer=dit_ref), path


def reference_images(components, scheduler, noise, steps, cfg_scale):
    pipe = DiffusersSanaPipeline(scheduler=scheduler, **components)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        out = pipe(prompt=PROMPTS, negative_prompt="", num_inference_steps=steps, guidance_scale=cfg_scale,
                   height=SIZE, width=SIZE, latents=noise.clone(), output_type="pt", use_resolution_binning=False,
                   clean_caption=False, return_dict=False)[0]
    return out  # (B, 3, H, W) in [0, 1]


def to_unit(images: torch.Tensor) -> torch.Tensor:
    return (images / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("steps", [2, 5])
def test_flow_dpm_solver_pipeline_matches_diffusers(parts, steps):
    ours, components, _ = parts
    noise = initial_noise([11, 12], 4, SIZE // 4, SIZE // 4)
    scheduler = DPMSolverMultistepScheduler(flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction")
    expected = reference_images(components, scheduler, noise, steps, 4.5)
    got = to_unit(ours(PROMPTS, noise=noise, config=SamplingConfig(steps=steps, cfg_scale=4.5)))
    assert got.shape == expected.shape == (2, 3, SIZE, SIZE)
    assert (got - expected).abs().max().item() < 1e-5


def test_flow_euler_pipeline_matches_diffusers(parts):
    ours, components, _ = parts
    noise = initial_noise([3, 4], 4, SIZE // 4, SIZE // 4)
    expected = reference_images(components, FlowMatchEulerDiscreteScheduler(shift=3.0), noise, 4, 6.0)
    got = to_unit(ours(PROMPTS, noise=noise, config=SamplingConfig(sampler="flow_euler", steps=4, cfg_scale=6.0)))
    assert (got - expected).abs().max().item() < 1e-5


def test_noise_of_a_sample_depends_only_on_its_seed(parts):
    ours, _, _ = parts
    config = SamplingConfig(steps=2)
    pair = ours(PROMPTS, seeds=[5, 6], config=config)
    alone = ours(PROMPTS[1:], seeds=[6], config=config)
    assert torch.allclose(pair[1:], alone, atol=1e-5)
    assert torch.equal(initial_noise([6], 4, 8, 8)[0], initial_noise([5, 6], 4, 8, 8)[1])


def test_pag_scale_at_most_one_is_plain_cfg_and_above_changes_the_image(parts):
    ours, _, _ = parts
    base = ours(PROMPTS, seeds=[1, 2], config=SamplingConfig(steps=2))
    same = ours(PROMPTS, seeds=[1, 2], config=SamplingConfig(steps=2, pag_scale=1.0, pag_layers=(0,)))
    pag = ours(PROMPTS, seeds=[1, 2], config=SamplingConfig(steps=2, pag_scale=2.0, pag_layers=(0,)))
    assert torch.equal(base, same)
    assert not torch.allclose(base, pag, atol=1e-4)


def test_pag_branch_is_identity_attention(parts):
    ours, _, _ = parts
    attn = ours.transformer.blocks[0].attn
    x = torch.randn(3, 16, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = attn(x, perturbed_rows=1)
        expected_ptb = attn.proj(torch.nn.functional.linear(x[2:], attn.qkv.weight[128:]))
        assert torch.allclose(out[2:], expected_ptb.clamp(-65504, 65504), atol=1e-6)
        assert torch.allclose(out[:2], attn(x[:2]), atol=1e-6)


def test_bad_requests_are_rejected(parts):
    ours, _, _ = parts
    with pytest.raises(ValueError, match="multiples of 4"):
        ours(PROMPTS, seeds=[1, 2], height=30)
    with pytest.raises(ValueError, match="exactly one of seeds or noise"):
        ours(PROMPTS)
    with pytest.raises(ValueError, match="2 prompts but 1 noise"):
        ours(PROMPTS, seeds=[1])
    with pytest.raises(ValueError, match="unknown sampler"):
        SamplingConfig(sampler="ddim")


def test_generate_command_writes_and_resumes(parts, tmp_path, capsys):
    from sana_eval.cli.main import main
    from sana_eval.generation.manifest import read_run

    _, components, gemma = parts
    components["transformer"].save_pretrained(tmp_path / "transformer")
    components["vae"].save_pretrained(tmp_path / "vae")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    argv = ["generate", "--benchmark", f"prompts:{tmp_path / 'prompts.txt'}",
            "--weights", str(tmp_path / "transformer"),
            "--vae", str(tmp_path / "vae"), "--text-encoder", str(gemma), "--conventions", "diffusers",
            "--out", str(tmp_path / "run"), "--resolution", str(SIZE), "--steps", "2", "--device", "cpu",
            "--batch-size", "2"]
    assert main(argv) == 0
    assert "2 written, 0 kept" in capsys.readouterr().out
    header, records = read_run(tmp_path / "run")
    assert len(records) == 2
    assert header["run_config"]["sampling"]["steps"] == 2 and header["run_config"]["weights_sha256"]
    assert main(argv) == 0
    assert "0 written, 2 kept" in capsys.readouterr().out
    assert main([*argv[:-4], "--steps", "3", "--batch-size", "2"]) == 2
    assert "steps" in capsys.readouterr().err
    assert header["run_config"]["kernels_run"] == {"transformer": "eager", "dc_ae": "eager"}  # CPU: auto is eager
    # the fused kernels round differently: a folder made eager does not take fused images (Triton's interpreter)
    assert main([*argv, "--kernels", "triton"]) == 2
    assert "kernels_run" in capsys.readouterr().err
    # nor quantised ones; a quantised folder names its mode and scheme, which a resume must match
    assert main([*argv, "--quantize", "w8a8"]) == 2
    assert "run_config.quantize: null then" in capsys.readouterr().err
    quantised = [*argv[:argv.index("--out")], "--out", str(tmp_path / "w8a8"), *argv[argv.index("--out") + 2:]]
    assert main([*quantised, "--quantize", "w8a8"]) == 0
    assert read_run(tmp_path / "w8a8")[0]["run_config"]["quantize"] == {"mode": "w8a8", "scheme": SCHEME_VERSION}


def test_a_saved_diffusers_pipeline_root_loads_whole(parts, tmp_path):
    from model.pipeline import load_pipeline

    ours, components, _ = parts
    scheduler = DPMSolverMultistepScheduler(flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction")
    DiffusersSanaPipeline(scheduler=scheduler, **components).save_pretrained(tmp_path / "root")
    text = TEXT_ENCODER_PRESETS["diffusers"]
    loaded = load_pipeline(str(tmp_path / "root"), device="cpu", transformer_dtype=torch.float32,
                           text_encoder=text.__class__(**{**text.__dict__, "model": str(tmp_path / "root"),
                                                          "dtype": "float32"}),
                           **DIFFUSERS_NUMERICS)
    config = SamplingConfig(steps=3)
    assert torch.allclose(loaded(PROMPTS, seeds=[7, 8], config=config), ours(PROMPTS, seeds=[7, 8], config=config),
                          atol=1e-6)
