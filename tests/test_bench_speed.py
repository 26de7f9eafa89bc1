"""The speed suite on the CPU: published text-encoder sizes against the paper's Table 13, the timing machinery
against known sleeps, the end-to-end workload's shapes against the protocol (CFG rows, CHI length, 20 steps),
and the bench CLI (the runners, cells and suites: test_speed_reports.py)."""
from __future__ import annotations

import json
import math
import time

import pytest
import torch

from model.config import get_preset
from model.dc_ae import DCAEConfig
from sana_eval.bench.clock import Clock, measure_matmul_peak, median_phases
from sana_eval.bench.e2e import CAPTION_TOKENS, DEFAULT_VAE, SDXL_VAE, E2ESpec, SanaWorkload, resolve_vae, time_sana_e2e
from sana_eval.bench.peer_models import VAES
from sana_eval.bench.text_encoders import (
    TEXT_ENCODERS,
    TextEncoderSpec,
    build_text_encoder,
    count_text_encoder_parameters,
    text_encoder_name,
    time_text_encoder,
)

CPU = torch.device("cpu")
_R, _E = "ResBlock", "EfficientViTBlock"
# An F32C32 DC-AE (six stages, 32 latent channels) a few hundred parameters wide: the real decode path, 64 px.
TINY_VAE = DCAEConfig(widths=(4, 4, 8, 8, 16, 32), encoder_depths=(1,) * 6, decoder_depths=(1,) * 6,
                      block_types=(_R,) * 3 + (_E,) * 3, qkv_multiscales=((), (), (), (5,), (5,), (5,)),
                      latent_channels=32, attention_head_dim=4)
TINY_GEMMA2 = TextEncoderSpec("gemma2", 48, 96, 2, 2, 1, 16, 1000, "test/tiny-gemma-2")   # 48 = tiny caption width
TINY = get_preset("tiny")
TINY_E2E = dict(vae=TINY_VAE, text_encoder=TINY_GEMMA2, chi_tokens=4, device="cpu")
# Table 8's F8C4P2 FullAttn & FFN blocks on the tiny model, decoded by an SDXL-VAE-shaped AutoencoderKL (f8, 4 ch).
TINY_F8 = TINY.replace(self_attention="softmax", ffn="mlp", mlp_ratio=4.0, in_channels=4, patch_size=2)
TINY_SDXL_VAE = VAES["sdxl"].tiny()
SDXL_SCALING = 0.13025              # stabilityai/sdxl-vae config.json scaling_factor


@pytest.fixture(autouse=True)
def one_thread():
    """The test machine's cores are shared: intra-op threads make tiny ops 50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- text encoders: published architectures against the paper's parameter counts ------------------------------

# Paper Table 13 "Params (M)" as printed.
PAPER_TABLE13 = {"t5-xxl": 4762, "t5-xl": 1224, "t5-large": 341, "t5-base": 110, "t5-small": 35,
                 "gemma-2b": 2506, "gemma-2-2b": 2614}


def test_text_encoder_sizes_match_table13_to_the_printed_digit():
    assert set(PAPER_TABLE13) == set(TEXT_ENCODERS)
    for name, paper in PAPER_TABLE13.items():
        count = count_text_encoder_parameters(name)
        assert round(count / 1e6) == paper, name
        assert abs(count / 1e6 - paper) <= 0.01 * paper, name


def test_t5_xxl_is_counted_as_its_encoder_alone():
    """Hand count: shared embedding V·d + 24 × (q,k,v,o 4·d·h·d_kv + gated FFN 3·d·d_ff + 2 norms) + final norm +
    one relative-position table (32 buckets × 64 heads). The decoder would add ~6.4 B; Table 13's 4762 M has none."""
    d, d_ff, heads, d_kv, layers, vocab = 4096, 10240, 64, 64, 24, 32128
    expected = vocab * d + layers * (4 * d * heads * d_kv + 3 * d * d_ff + 2 * d) + d + 32 * heads
    assert expected == 4_762_310_656
    assert count_text_encoder_parameters("google/t5-v1_1-xxl") == expected


def test_encoder_names_and_aliases():
    assert text_encoder_name("Efficient-Large-Model/gemma-2-2b-it") == "gemma-2-2b"
    assert text_encoder_name("google/gemma-2b-it") == "gemma-2b"
    assert text_encoder_name("T5-XXL") == "t5-xxl"
    with pytest.raises(ValueError, match=r"unknown text encoder 't5-xxxl'; did you mean t5-xxl"):
        text_encoder_name("t5-xxxl")


def test_encoders_are_built_in_the_target_dtype_and_the_default_dtype_is_restored():
    before = torch.get_default_dtype()
    for spec in (TINY_GEMMA2, TextEncoderSpec("t5", 32, 64, 2, 2, 2, 16, 100, "test/t5"),
                 TextEncoderSpec("gemma", 32, 64, 2, 2, 1, 16, 100, "test/gemma")):
        model = build_text_encoder(spec, "cpu", "bf16")
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}, spec.family
    assert torch.get_default_dtype() == before
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        build_text_encoder(TINY_GEMMA2, "cpu", "fp8")
    assert torch.get_default_dtype() == before


def test_time_text_encoder_runs_t5_and_gemma_families_on_cpu():
    for spec in (TINY_GEMMA2, TextEncoderSpec("t5", 32, 64, 2, 2, 2, 16, 100, "test/t5"),
                 TextEncoderSpec("gemma", 32, 64, 2, 2, 1, 16, 100, "test/gemma")):
        t = time_text_encoder(spec, batch=2, seq=12, dtype="fp32", repeats=2, device="cpu")
        assert t.latency_s > 0 and t.repeats == 2 and t.device == "cpu" and t.peak_mem_gib is None
        assert t.params == count_text_encoder_parameters(spec)


# --- timing machinery ------------------------------------------------------------------------------------------

def test_median_phases_measures_known_sleeps_and_respects_the_budget():
    calls = []

    def run(clock: Clock) -> None:
        calls.append(1)
        clock.mark()
        time.sleep(0.02)
        clock.mark()
        time.sleep(0.04)
        clock.mark()

    times = median_phases(run, CPU, repeats=3)
    assert len(calls) == 4                                    # one warm-up, three timed
    assert times.phases[0] == pytest.approx(0.02, abs=0.015)
    assert times.phases[1] == pytest.approx(0.04, abs=0.015)
    assert times.total == pytest.approx(0.06, abs=0.02) and times.repeats == 3
    assert median_phases(run, CPU, repeats=5, budget_s=0.0).repeats == 1
    with pytest.raises(ValueError, match="at least two marks"):
        Clock(CPU).intervals()


def test_matmul_peak_agrees_with_a_hand_timed_product():
    n = 128
    peak = measure_matmul_peak("fp32", n=n, repeats=5, device="cpu")
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    start = time.perf_counter()
    for _ in range(20):
        torch.matmul(a, b)
    hand = 2 * n**3 * 20 / (time.perf_counter() - start) / 1e12
    assert math.isfinite(peak) and 0.2 < peak / hand < 5


# --- the end-to-end workload follows the protocol --------------------------------------------------------------

def _record_shapes(module: torch.nn.Module, into: list) -> None:
    def hook(m, args, kwargs, out) -> None:
        into.append(tuple((kwargs["input_ids"] if "input_ids" in kwargs else args[0]).shape))

    module.register_forward_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("cfg, null_prompt", [(True, "cached"), (True, "per-call"), (False, "cached")])
def test_one_run_encodes_denoises_and_decodes_the_protocols_shapes(cfg, null_prompt):
    batch, steps, chi = 3, 4, 6
    work = SanaWorkload(E2ESpec(TINY, 64, batch, dtype="fp32", text_dtype="fp32", vae_dtype="fp32", cfg=cfg,
                                vae=TINY_VAE, text_encoder=TINY_GEMMA2, chi_tokens=chi, decode_tile=None,
                                decode_chunk=2, null_prompt=null_prompt, device=CPU))
    text, dit, decoder, captions, caption_values = [], [], [], [], []
    _record_shapes(work.text_encoder, text)
    _record_shapes(work.vae.decoder, decoder)

    def transformer_inputs(module, args, out) -> None:
        dit.append(tuple(args[0].shape))
        captions.append(tuple(args[2].shape))
        caption_values.append(args[2].clone())

    work.transformer.register_forward_hook(transformer_inputs)
    clock = Clock(CPU)
    images = work(clock, steps)
    # Prompt rows carry CHI + prompt (n_chi + 298 tokens); with CFG the "" rows are 300 tokens without CHI, encoded
    # in every run ("per-call", diffusers) or once when the workload was built ("cached", our pipeline and NVlabs).
    per_call = cfg and null_prompt == "per-call"
    assert text == [(batch, chi + 298)] + ([(batch, CAPTION_TOKENS)] if per_call else [])
    assert work.described()["null_prompt"] == null_prompt
    rows = 2 * batch if cfg else batch
    assert dit == [(rows, 32, 2, 2)] * steps                   # one forward per step, on the CFG batch
    assert captions == [(rows, CAPTION_TOKENS, 48)] * steps    # the 300-token cut
    assert decoder == [(2, 32, 2, 2), (1, 32, 2, 2)]           # decode_chunk images per call
    assert images.shape == (batch, 3, 64, 64)
    assert len(clock.intervals()) == 3
    if cfg and null_prompt == "cached":  # one "" row, computed before the runs, is every uncond row of each run
        null = work.null_features[0]
        assert null.shape == (1, CAPTION_TOKENS, 48)
        assert all(torch.equal(c[:batch], null.expand(batch, -1, -1)) for c in caption_values)


def test_a_wrong_null_prompt_mode_is_refused():
    with pytest.raises(ValueError, match="null_prompt 'once'; expected one of cached, per-call"):
        SanaWorkload(E2ESpec(TINY, 64, 1, dtype="fp32", text_dtype="fp32", vae_dtype="fp32", vae=TINY_VAE,
                             text_encoder=TINY_GEMMA2, null_prompt="once", device=CPU))


def test_time_sana_e2e_on_cpu():
    t = time_sana_e2e(E2ESpec(TINY, 64, 2, "fp32", steps=2, repeats=2, **TINY_E2E), matmul_peak_tflops=1.0)
    assert (t.rows, t.steps, t.text_tokens, t.repeats, t.device) == (4, 2, 302, 2, "cpu")
    # With two repeats the median is the mean, so the total is exactly the sum of the phases.
    assert t.total_s == pytest.approx(t.text_s + t.denoise_s + t.decode_s, rel=1e-9)
    assert t.img_per_s == pytest.approx(2 / t.total_s) and t.step_s == pytest.approx(t.denoise_s / 2)
    assert t.mfu == pytest.approx(t.achieved_tflops) and t.peak_mem_gib is None
    single = time_sana_e2e(E2ESpec(TINY, 64, 2, "bf16", steps=2, cfg=False, repeats=1, **TINY_E2E))
    assert t.macs_per_forward == 2 * single.macs_per_forward     # CFG doubles the rows, MACs are per row
    assert single.rows == 2 and single.dtype == single.text_dtype == single.vae_dtype == "bf16"
    with pytest.raises(ValueError, match="not a multiple of the DC-AE's 32"):
        time_sana_e2e(E2ESpec(TINY, 48, 1, "fp32", steps=1, repeats=1, **TINY_E2E))


# --- Table 8's F8C4P2 rows: the f8 latent, patch 2, the SDXL-VAE-shaped decoder --------------------------------

def test_f8c4p2_run_denoises_the_f8_latent_and_decodes_with_the_sdxl_vae():
    batch, steps = 3, 2
    work = SanaWorkload(E2ESpec(TINY_F8, 64, batch, dtype="fp32", text_dtype="fp32", vae_dtype="fp32", cfg=True,
                                vae=TINY_SDXL_VAE, text_encoder=TINY_GEMMA2, chi_tokens=4, decode_tile=None,
                                decode_chunk=2, device=CPU))
    from diffusers import AutoencoderKL

    assert isinstance(work.vae, AutoencoderKL) and not hasattr(work.vae, "encoder")   # the decoder only
    dit, decoded, seen = [], [], []
    work.transformer.register_forward_hook(lambda m, args, out: dit.append(tuple(args[0].shape)))
    work.vae.post_quant_conv.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    original = work._decode
    work._decode = lambda latents: decoded.append(latents.clone()) or original(latents)
    images = work(Clock(CPU), steps)
    assert dit == [(2 * batch, 4, 8, 8)] * steps               # 64 px // 8: the f8 latent, CFG rows
    assert images.shape == (batch, 3, 64, 64)
    # diffusers' SDXL pipeline divides by the VAE's scaling factor before AutoencoderKL.decode.
    for latents, z in zip(decoded, seen):
        torch.testing.assert_close(z, latents / SDXL_SCALING)
    with torch.no_grad():
        reference = work.vae.decode(decoded[0] / SDXL_SCALING).sample
    torch.testing.assert_close(images[:2], reference)


def test_time_sana_e2e_times_an_f8c4p2_design_on_cpu():
    t = time_sana_e2e(E2ESpec(TINY_F8, 64, 2, "fp32", steps=2, repeats=1, vae=TINY_SDXL_VAE, kernels="eager",
                              text_encoder=TINY_GEMMA2, chi_tokens=4, device="cpu"))
    assert (t.vae, t.kernels, t.rows) == ("custom AutoencoderKL", "eager", 4)
    assert t.blocks == "F8C4P2, softmax attention, mlp FFN x4.0" and t.preset == "custom"
    assert t.total_s > 0 and t.decode_s > 0
    # Tiled decoding runs the AutoencoderKL tile by tile: 8 x 8 latents in tiles of 4.
    tiled = time_sana_e2e(E2ESpec(TINY_F8, 64, 1, "fp32", steps=1, repeats=1, vae=TINY_SDXL_VAE, decode_tile=4,
                                  text_encoder=TINY_GEMMA2, chi_tokens=4, device="cpu"))
    assert tiled.decode_tile == 4 and tiled.decode_s > 0
    base = time_sana_e2e(E2ESpec(TINY, 64, 1, "fp32", steps=1, repeats=1, **TINY_E2E))
    assert (base.vae, base.blocks, base.preset) == ("custom DC-AE", "F32C32P1, linear attention, mix FFN x2.5", "tiny")


def test_autoencoders_must_fit_the_transformer():
    f8 = dict(TINY_E2E, vae=TINY_SDXL_VAE)
    with pytest.raises(ValueError, match="transformer in_channels 32 .* AutoencoderKL latents 4"):
        time_sana_e2e(E2ESpec(TINY, 64, 1, "fp32", steps=1, repeats=1, **f8))
    with pytest.raises(ValueError, match="latent side 9 .* not a multiple of the transformer's patch_size 2"):
        time_sana_e2e(E2ESpec(TINY_F8, 72, 1, "fp32", steps=1, repeats=1, **f8))
    with pytest.raises(ValueError, match="resolution 60 is not a multiple of the AutoencoderKL's 8"):
        time_sana_e2e(E2ESpec(TINY_F8, 60, 1, "fp32", steps=1, repeats=1, **f8))
    with pytest.raises(ValueError, match="unknown autoencoder 'sdxl'; known: .*sdxl-vae"):
        resolve_vae("sdxl")
    # The names the CLI and Table 8 use: the SDXL VAE is f8 with 4 latent channels, the DC-AE f32 with 32.
    name, sdxl = resolve_vae(SDXL_VAE)
    assert name == "sdxl-vae" and sdxl.latent_channels == 4 and sdxl.scaling_factor == SDXL_SCALING
    assert sdxl.block_out_channels == (128, 256, 512, 512)     # stabilityai/sdxl-vae config.json: f8
    assert resolve_vae(DEFAULT_VAE)[1].latent_channels == 32


def test_bench_cli_sets_block_design_vae_and_kernels(monkeypatch, capsys):
    from sana_eval.bench import clock as bench_clock
    from sana_eval.bench import e2e as bench_e2e
    from sana_eval.cli.main import main

    timing = time_sana_e2e(E2ESpec(TINY_F8, 64, 1, "fp32", steps=1, repeats=1, vae=TINY_SDXL_VAE,
                                   text_encoder=TINY_GEMMA2, chi_tokens=4, device="cpu"))
    calls = []
    monkeypatch.setattr(bench_clock, "measure_matmul_peak", lambda dtype: 1.0)
    monkeypatch.setattr(bench_e2e, "time_sana_e2e", lambda spec, **kw: calls.append(spec) or timing)
    argv = ["bench", "e2e", "--preset", "Sana_600M_1024px", "--batch", "1", "--dtype", "fp16",
            "--set", "self_attention=softmax", "--set", "ffn=mlp", "--set", "mlp_ratio=4.0", "--set", "in_channels=4",
            "--set", "patch_size=2", "--vae", "sdxl-vae", "--kernels", "eager", "triton"]
    assert main(argv) == 0
    expected = get_preset("Sana_600M_1024px").replace(self_attention="softmax", ffn="mlp", mlp_ratio=4.0,
                                                      in_channels=4, patch_size=2)
    assert [(spec.preset, spec.batch, spec.vae, spec.kernels) for spec in calls] == [
        (expected, 1, "sdxl-vae", "eager"), (expected, 1, "sdxl-vae", "triton")]
    assert '"blocks": "F8C4P2, softmax attention, mlp FFN x4.0"' in capsys.readouterr().out
    calls.clear()
    assert main(argv[:6]) == 0                                   # no --set / --vae: the preset by name
    assert [(spec.preset, spec.vae != DEFAULT_VAE) for spec in calls] == [("Sana_600M_1024px", False)]
    for bad, message in ((["--set", "ffn"], "expected FIELD=VALUE"), (["--set", "patch_size=two"], "expects int"),
                         (["--set", "use_pe=maybe"], "takes true or false"), (["--set", "ffn=glu"], "ffn 'glu'")):
        assert main(argv[:6] + bad) == 2, bad
        assert message in capsys.readouterr().err, bad


def test_bench_e2e_times_the_baseline_peer_in_the_same_run(monkeypatch, capsys):
    """`bench e2e --baseline`, as the Table 7/14 speedup cells print it: the peer timed once per batch as the
    reproduction times it (a few forwards scaled to its steps), then each case's throughput over the peer's."""
    from sana_eval.bench import clock as bench_clock
    from sana_eval.bench import e2e as bench_e2e
    from sana_eval.bench.peers import PeerE2ESpec, time_peer
    from sana_eval.cli import bench as bench_cli
    from sana_eval.cli.main import main
    from sana_eval.tables.recipes import PEER_TIMED_STEPS

    ours = time_sana_e2e(E2ESpec(TINY, 64, 1, "fp32", steps=1, repeats=1, **TINY_E2E))
    peer = time_peer(PeerE2ESpec("flux-schnell", 64, 1, "fp32", steps=4, timed_steps=1, device="cpu", repeats=1,
                                 tiny=True))
    peers = []
    monkeypatch.setattr(bench_clock, "measure_matmul_peak", lambda dtype: 1.0)
    monkeypatch.setattr(bench_e2e, "time_sana_e2e", lambda spec, **kw: ours)
    monkeypatch.setattr(bench_cli, "time_peer", lambda case: peers.append(case) or peer)
    argv = ["bench", "e2e", "--preset", "Sana_600M_1024px", "--batch", "1", "--dtype", "fp16", "--quantize", "none",
            "w8a8", "--baseline", "black-forest-labs/FLUX.1-schnell"]
    assert main(argv) == 0
    assert [(p.peer, p.batch, p.dtype, p.timed_steps) for p in peers] == [
        ("black-forest-labs/FLUX.1-schnell", 1, "fp16", PEER_TIMED_STEPS)]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["name"] == peer.name and len(lines) == 5
    assert [line["quantize"] for line in lines[2::2]] == ["none", "w8a8"]
    assert lines[2]["speedup"] == pytest.approx(ours.img_per_s / peer.img_per_s)
    assert main([*argv[:-1], "flux-max"]) == 2
    assert "--baseline: unknown peer model 'flux-max'" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where CUDA is absent")
def test_timing_on_a_missing_gpu_is_a_one_line_error():
    with pytest.raises(ValueError, match="speed timing needs a CUDA GPU and none is available"):
        time_text_encoder(TINY_GEMMA2, batch=1, seq=4)


def test_e2e_decodes_4k_in_tiles_and_runs_the_fused_kernels():
    """Fused kernels in Triton's interpreter on the CPU (tests/conftest.py): the run and its MAC count (on the
    meta device, where no kernel can run) both work, and MACs do not change with fusion."""
    from sana_eval.bench.e2e import default_decode_tile

    assert default_decode_tile(4096, 32) == 32 and default_decode_tile(4096, 8) == 128
    assert default_decode_tile(2048, 32) is None
    fused = time_sana_e2e(E2ESpec(TINY, 64, 1, "fp32", steps=1, repeats=1, kernels="triton", **TINY_E2E))
    eager = time_sana_e2e(E2ESpec(TINY, 64, 1, "fp32", steps=1, repeats=1, kernels="eager", **TINY_E2E))
    assert (fused.kernels, eager.kernels) == ("triton", "eager")
    assert fused.macs_per_forward == eager.macs_per_forward and fused.decode_tile is None
