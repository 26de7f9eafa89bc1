"""Peer models of Tables 7 and 14: published configs against the paper's parameter counts (meta device), every
peer's timing path end to end on the CPU with a tiny config, the suite's files, and the table wiring."""
from __future__ import annotations

import json

import pytest
import torch

from sana_eval.bench.clock import Clock
from sana_eval.bench.peer_models import PEERS, count_peer_parameters, get_peer, peer_name
from sana_eval.bench.peer_workload import PeerWorkload, _pack, _unpack
from sana_eval.bench.peers import PeerE2ESpec, paper_peer, run_peer_suite, speedups, time_peer
from sana_eval.reproduce import speed as SR
from sana_eval.reproduce.runners import evaluate_table
from sana_eval.tables import get_table
from sana_eval.tables.schema import Column, Tolerance

# Paper Table 7 "Params (B)". Lumina-Next's published diffusers config (Lumina-Next-SFT, "2B") has 1.75 B
# parameters in its DiT; the paper prints the nominal 2.0.
PAPER_PARAMS_B = {"flux-dev": 12.0, "flux-schnell": 12.0, "sd3-medium": 2.0, "pixart-sigma": 0.6,
                  "pixart-alpha": 0.6, "hunyuan-dit": 1.5, "sdxl": 2.6, "playground-v2.5": 2.6}


def test_published_configs_match_the_paper_parameter_counts():
    counts = {name: count_peer_parameters(name) / 1e9 for name in PEERS}
    for name, paper in PAPER_PARAMS_B.items():
        assert counts[name] == pytest.approx(paper, rel=0.03), name
    assert counts["sdxl"] * 1e9 == 2_567_463_684        # the SDXL UNet's well-known exact size
    assert 1.7 < counts["lumina-next"] < 1.8             # nominal "2B" (see above)


def test_flux_packing_matches_diffusers():
    from diffusers import FluxPipeline

    x = torch.randn(2, 16, 8, 8)
    packed = _pack(x)
    assert torch.equal(packed, FluxPipeline._pack_latents(x, 2, 16, 8, 8))
    assert torch.equal(_unpack(packed, 8), x)


@pytest.mark.parametrize("name", list(PEERS))
def test_tiny_peer_runs_all_three_phases(name):
    spec = get_peer(name, tiny=True)
    work = PeerWorkload(spec, 64, 2, dtype="fp32", vae_dtype="fp32", device=torch.device("cpu"))
    clock = Clock(torch.device("cpu"))
    images = work(clock, 2, decode_chunk=1)
    assert images.shape == (2, 3, 64, 64) and torch.isfinite(images).all()
    assert len(clock.intervals()) == 3
    assert work.rows == (4 if spec.cfg else 2) and spec.cfg == (spec.family != "flux")


def test_pixart_alpha_at_1024_uses_its_size_conditions():
    work = PeerWorkload(get_peer("pixart-alpha", tiny=True), 1024, 1, dtype="fp32", vae_dtype="fp32",
                        device=torch.device("cpu"))
    assert work.denoiser.use_additional_conditions
    assert work._static()["added_cond_kwargs"]["resolution"].shape == (2, 2)


def test_timing_scales_the_timed_forwards_to_the_step_count():
    t = time_peer(PeerE2ESpec("flux-schnell", 64, 1, "fp32", steps=4, timed_steps=1, device="cpu", repeats=1,
                              tiny=True))
    assert (t.steps, t.timed_steps, t.rows, t.cfg) == (4, 1, 1, False)
    assert t.step_s == pytest.approx(t.denoise_s / 4)
    assert t.total_s > t.denoise_s > 0 and t.text_s > 0 and t.decode_s > 0
    assert t.img_per_s == pytest.approx(1 / t.total_s) and t.text_encoders == "clip-l:77 + t5-xxl:256"
    assert time_peer(PeerE2ESpec("sdxl", 64, 1, "fp32", steps=1, device="cpu", repeats=1, tiny=True)).steps == 1


def test_peer_suite_writes_records_with_provenance_and_speedups(tmp_path):
    md = run_peer_suite(tmp_path, ("flux-dev", "pixart-sigma"), resolutions=(64,), dtype="fp32", device="cpu",
                        steps=1, repeats=1, tiny=True)
    records = [json.loads(line) for line in (tmp_path / "peers.jsonl").read_text().splitlines()]
    assert [r["model"] for r in records] == ["flux-dev", "pixart-sigma"]
    assert all("git_commit" in r["machine"] and r["steps_choice"] for r in records)
    ratio = speedups(records)
    assert ratio[0] == 1.0 and ratio[1] == pytest.approx(records[1]["img_per_s"] / records[0]["img_per_s"])
    assert "| flux-dev | 64 | 1 |" in md.read_text()


def test_paper_values_come_from_table14_then_table7():
    assert paper_peer("flux-dev", 1024) == {"table": "table14", "speedup": "1.0", "throughput": "0.04",
                                            "latency": "23"}
    assert paper_peer("sdxl", 1024) == {"table": "table7", "speedup": "3.5", "throughput": "0.15", "latency": "6.5"}
    assert paper_peer("pixart-alpha", 512)["latency"] == "1.2"


def test_unknown_peer_is_a_clear_error():
    assert peer_name("PixArt-Σ") == "pixart-sigma" and peer_name("black-forest-labs/FLUX.1-dev") == "flux-dev"
    with pytest.raises(ValueError, match="unknown peer model 'dalle3'"):
        get_peer("dalle3")


def test_speed_runner_times_peers_and_speedups(monkeypatch):
    fast = time_peer(PeerE2ESpec("flux-schnell", 64, 1, "fp32", steps=1, device="cpu", repeats=1, tiny=True))
    slow = time_peer(PeerE2ESpec("flux-dev", 64, 1, "fp32", steps=3, device="cpu", repeats=1, tiny=True))
    monkeypatch.setattr(SR, "_peer", lambda name, *args: {"flux-schnell": fast}.get(name, slow))
    col = Column("speedup", "Speedup", "x", True, Tolerance("rel", 0.15))
    settings = {"peer": "flux-schnell", "resolution": 64, "batch": 1, "steps": None, "timed_steps": 3,
                "dtype": "float16", "gpu": "A100", "measure": "speedup", "baseline": "black-forest-labs/FLUX.1-dev"}
    measured = SR.run_speed(settings, col)
    assert measured.value == pytest.approx(fast.img_per_s / slow.img_per_s)
    assert "flux-schnell (black-forest-labs/FLUX.1-schnell, diffusers)" in measured.detail
    assert SR.run_speed({**settings, "measure": "latency"}, Column("latency", "L", "s", False,
                                                                   Tolerance("rel", 0.15))).value == fast.total_s


def test_tables_time_peer_speed_cells_and_leave_quality_to_the_peers():
    t7 = {(r.row, r.column): r for r in evaluate_table(get_table("table7"))}
    t14 = {(r.row, r.column): r for r in evaluate_table(get_table("table14"))}
    for results, row in ((t7, "1024 x 1024 / SDXL"), (t14, "1024 x 1024 / HunyuanDiT"), (t7, "512 x 512 / PixArt-α")):
        for key in ("throughput", "latency", "speedup"):
            assert "bench suite peers" in results[row, key].command, (row, key)
    assert t7["1024 x 1024 / SDXL", "fid"].reasons == ("competitor model; this harness reproduces Sana only",)
    assert "2K/4K" in t14["4096 x 4096 / FLUX-dev", "latency"].reason
    if not torch.cuda.is_available():
        assert "needs a CUDA GPU" in t7["1024 x 1024 / FLUX-dev", "latency"].reasons[0]
