"""Denoiser steps replayed from CUDA graphs (model/cuda_graph.py): the policy everywhere, bit-identity on a GPU."""
from __future__ import annotations

import pytest
import torch

from model.config import get_preset
from model.cuda_graph import AUTO_MAX_TOKENS, GraphedModule, use_graphs
from model.text_encoder import select_tokens
from model.transformer import build_transformer
from sana_eval.bench.e2e import CAPTION_TOKENS, E2ESpec, SanaWorkload
from sana_eval.bench.text_encoders import TextEncoderSpec

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (make gpu-test)")
TINY_GEMMA2 = TextEncoderSpec("gemma2", 48, 96, 2, 2, 1, 16, 1000, "test/tiny-gemma-2")  # 48: the tiny DiT's captions


def test_policy_on_the_cpu():
    model = build_transformer(get_preset("Sana_600M_1024px"), device="meta")
    latent = torch.zeros(2, 32, 32, 32)
    assert not use_graphs("auto", model, latent) and not use_graphs("off", model, latent)
    with pytest.raises(RuntimeError, match="cuda_graphs='on' needs CUDA tensors"):
        use_graphs("on", model, latent)
    with pytest.raises(ValueError, match="expected 'auto', 'on' or 'off'"):
        use_graphs("always", model, latent)


@gpu
def test_auto_records_small_forwards_only():
    model = build_transformer(get_preset("Sana_600M_1024px"), device="meta")
    side = 32  # 1024 px: 1024 tokens per row
    assert use_graphs("auto", model, torch.zeros(2, 32, side, side, device="cuda"))           # batch 1 with CFG
    assert not use_graphs("auto", model, torch.zeros(32, 32, side, side, device="cuda"))      # batch 16 with CFG
    assert 2 * side * side <= AUTO_MAX_TOKENS < 32 * side * side
    exact = build_transformer(get_preset("Sana_600M_1024px").replace(cross_attn_mask="exact"), device="meta")
    assert not use_graphs("auto", exact, torch.zeros(2, 32, side, side, device="cuda"))
    with pytest.raises(RuntimeError, match="cross_attn_mask other than 'exact'"):
        use_graphs("on", exact, torch.zeros(2, 32, side, side, device="cuda"))


def _inputs(cfg, rows, side, dtype, seed):
    gen = torch.Generator("cuda").manual_seed(seed)
    x = torch.randn(rows, cfg.in_channels, side, side, device="cuda", dtype=dtype, generator=gen)
    y = torch.randn(rows, cfg.model_max_length, cfg.caption_channels, device="cuda", dtype=dtype, generator=gen)
    mask = torch.ones(rows, cfg.model_max_length, device="cuda", dtype=torch.long)
    mask[0, 100:] = 0
    t = torch.rand(rows, device="cuda", generator=gen) * 1000
    return x, t, y, mask


@gpu
@pytest.mark.parametrize("kernels", ["triton", "eager"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_replays_are_bit_identical_to_eager_calls_on_gpu(kernels, dtype):
    cfg = get_preset("Sana_600M_512px").replace(kernels=kernels)
    torch.manual_seed(0)
    model = build_transformer(cfg, device="cuda", dtype=dtype).eval()
    graphed = GraphedModule(model, max_graphs=1)
    with torch.no_grad():
        for seed, (rows, side) in enumerate([(2, 16), (2, 16), (4, 16), (2, 16)]):  # new inputs, then new shapes
            args = _inputs(cfg, rows, side, dtype, seed)
            want = model(*args)
            got = graphed(*args)
            assert torch.equal(got, want), (seed, (got - want).abs().max().item())
            assert len(graphed._recorded) == 1  # max_graphs=1: the older shape's graph was dropped
        first = graphed(*_inputs(cfg, 2, 16, dtype, 0))
        graphed(*_inputs(cfg, 2, 16, dtype, 1))
        assert torch.equal(first, model(*_inputs(cfg, 2, 16, dtype, 0)))  # outputs are copies, not the buffer


@gpu
def test_pipeline_images_do_not_depend_on_graphs(tmp_path):
    from model.pipeline import SamplingConfig
    from sana_eval.smoke.tiny import tiny_pipeline, write_tiny_gemma
    prompts = ["a red cube", "two cats"]
    pipe = tiny_pipeline(write_tiny_gemma(tmp_path / "gemma", prompts), resolution=64)
    pipe.transformer.cuda()
    pipe.vae.cuda()
    pipe.text_encoder.decoder.cuda()  # "on" replays Gemma-2 too
    pipe.device = torch.device("cuda")
    images = {}
    for mode in ("off", "on", "off again"):
        pipe.cuda_graphs = mode.split()[0]
        for sampler in ("flow_dpm_solver", "flow_euler"):  # DPM-Solver keeps earlier velocities
            images[mode, sampler] = pipe(prompts, seeds=[0, 1], config=SamplingConfig(sampler=sampler, steps=6))
    assert pipe._graphed is not None and len(pipe._graphed._recorded) == 1
    assert len(pipe.text_encoder.decoder_forward.graphed._recorded) == 1  # the prompt rows; "" is encoded once
    pipe.cuda_graphs = "on"
    old = [t.data for t in pipe.transformer.parameters()]
    pipe.transformer.double().float()  # the same values in new tensors ...
    for t in old:
        t.zero_()                      # ... and zeros where the recorded graph would read them
    again = pipe(prompts, seeds=[0, 1], config=SamplingConfig(sampler="flow_euler", steps=6))
    assert torch.equal(again, images["off", "flow_euler"])
    for sampler in ("flow_dpm_solver", "flow_euler"):
        # an eager rerun tells a nondeterministic pipeline (seen once on a fresh machine) from a graph effect
        rerun_equal = torch.equal(images["off again", sampler], images["off", sampler])
        assert torch.equal(images["on", sampler], images["off", sampler]), (sampler, rerun_equal)


def test_moved_weights_are_noticed():
    """Checked on the CPU without recording: moving a tensor of the model drops the recorded graphs."""
    model = build_transformer(get_preset("tiny"))
    graphed = GraphedModule(model)
    graphed._recorded["sentinel"] = None
    graphed.forget_if_weights_moved()
    assert "sentinel" in graphed._recorded  # nothing moved
    model.to(torch.float64)
    graphed.forget_if_weights_moved()
    assert not graphed._recorded


def _tiny_workload(device: str, batch: int = 1) -> SanaWorkload:
    dit = get_preset("tiny").replace(in_channels=4)  # dc-ae-tiny's latents
    return SanaWorkload(E2ESpec(dit, 32, batch, "fp32", vae="dc-ae-tiny", text_encoder=TINY_GEMMA2, chi_tokens=4,
                                device=device))


def _bench_text_matches_transformers(work: SanaWorkload) -> None:
    ids, mask = work.prompt_ids
    mask = mask.clone()
    mask[0, 100:] = 0  # a padded row
    with torch.no_grad():
        want = work.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        got = work._encode(ids, mask)[0]
    assert torch.equal(got, select_tokens(want, CAPTION_TOKENS))


def test_e2e_bench_runs_gemma2_as_the_text_encoder_does():
    work = _tiny_workload("cpu")
    assert work.text_forward is not None and not work.text_graphs
    assert not work.described()["text_cuda_graphs"]
    _bench_text_matches_transformers(work)


@gpu
def test_e2e_bench_replays_gemma2_where_launch_bound_on_gpu():
    work = _tiny_workload("cuda")
    assert work.text_graphs and work.described()["text_cuda_graphs"]
    _bench_text_matches_transformers(work)
    assert len(work.text_forward.graphed._recorded) == 1
    assert not _tiny_workload("cuda", batch=8).text_graphs  # 8 rows x 302 tokens: past AUTO_GRAPH_TOKENS
