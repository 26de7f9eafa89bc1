"""Where speed numbers land, on the CPU: the reproduction's speed and text-encoder runners and the table cells
they fill (reasons of cells that cannot run here included), and the suites' records, tables and plots."""
from __future__ import annotations

import json

import pytest
import torch

from sana_eval.bench.e2e import E2ESpec, time_sana_e2e
from sana_eval.bench.suite import run_speed_suite, run_text_encoder_suite
from sana_eval.reproduce import speed as SR
from sana_eval.reproduce.runners import PLANNED, RUNNERS, evaluate_table
from sana_eval.tables import get_table
from sana_eval.tables.schema import Column, Tolerance
from test_bench_speed import TINY, TINY_E2E, TINY_GEMMA2, one_thread  # noqa: F401 (one_thread: an autouse fixture)

# --- runners and the cells they fill ---------------------------------------------------------------------------

def test_speed_and_text_encoder_runners_are_registered():
    assert {"speed", "text_encoder"} <= set(RUNNERS) and not {"speed", "text_encoder"} & set(PLANNED)


def test_text_encoder_parameter_cells_reproduce_without_weights_or_gpu():
    for table_id, rows in (("table13", 7), ("table9", 5)):
        results = [r for r in evaluate_table(get_table(table_id)) if r.column in ("params", "latency")]
        params = [r for r in results if r.column == "params"]
        assert len(params) == rows and all(r.verdict == "reproduced" for r in params), table_id
        for r in results:
            if r.column == "latency" and not torch.cuda.is_available():
                assert r.verdict == "not run" and r.reasons[0].startswith("needs a CUDA GPU (A100"), r


def test_speed_cells_of_sana_and_the_peers_need_only_a_gpu():
    for table_id in ("table7", "table14"):
        results = {(r.row, r.column): r for r in evaluate_table(get_table(table_id))}
        sana = [k for k in results if "/ Sana-" in k[0] and k[1] in ("throughput", "latency", "speedup")]
        assert sana
        for key in sana:
            r = results[key]
            assert not any("sana_eval.bench.peers" in reason for reason in r.reasons), key
            if not torch.cuda.is_available():
                assert r.verdict == "not run" and "needs a CUDA GPU" in r.reasons[0]
        flux = results["1024 x 1024 / FLUX-dev", "latency"]
        assert "bench suite peers" in flux.command
        if not torch.cuda.is_available():
            assert flux.verdict == "not run" and "needs a CUDA GPU" in flux.reasons[0]


def test_table5_w8a8_latency_times_the_quantised_dit(monkeypatch):
    """Table 5's W8A8 latency cell runs our W8A8 engine end to end (paper §4), the FP16 row the same workload."""
    timing = time_sana_e2e(E2ESpec(TINY, 64, 1, "fp32", steps=1, repeats=1, quantize="w8a8", **TINY_E2E))
    calls = []
    monkeypatch.setattr(SR.e2e, "time_sana_e2e", lambda spec, **kw: calls.append(spec) or timing)
    SR._e2e.cache_clear()
    table = get_table("table5")
    column = next(c for c in table.columns if c.key == "latency")
    try:
        for row, mode in (("+ W8A8 Quantization", "w8a8"), ("Sana (FP16)", "none")):
            recipe = next(r for r in table.rows if r.id == row).cells["latency"].recipe
            measured = SR.run_speed(recipe.settings, column)
            assert calls[-1].quantize == mode and calls[-1].batch == 1 and calls[-1].resolution == 1024
            assert measured.value == timing.total_s
        assert "DiT GEMMs w8a8" in measured.detail   # the tiny timing ran quantised
        assert "--quantize w8a8" in next(r for r in table.rows if r.id == "+ W8A8 Quantization").cells[
            "latency"].recipe.command
    finally:
        SR._e2e.cache_clear()


def test_speed_runner_reports_the_cell_and_the_gpu_caveat(monkeypatch):
    timing = time_sana_e2e(E2ESpec(TINY, 64, 1, "fp32", steps=2, repeats=1, **TINY_E2E))  # a real, tiny measurement
    monkeypatch.setattr(SR, "_e2e", lambda *args: timing)
    settings = {"preset": "Sana_600M_1024px", "resolution": 1024, "batch": 1, "steps": 20, "dtype": "float16",
                "gpu": "A100", "measure": "latency", "scope": "end_to_end", "quantize": None}
    seconds = Column("latency", "Latency (s)", "s", False, Tolerance("rel", 0.15))
    ms = Column("latency", "Latency (ms)", "ms", False, Tolerance("rel", 0.15))
    assert SR.run_speed(settings, seconds).value == timing.total_s
    assert SR.run_speed(settings, ms).value == pytest.approx(1000 * timing.total_s)
    assert SR.run_speed({**settings, "scope": "denoise"}, seconds).value == timing.denoise_s
    measured = SR.run_speed({**settings, "measure": "throughput"}, seconds)
    assert measured.value == timing.img_per_s
    assert "on cpu, not the paper's A100" in measured.detail and "cell = end to end" in measured.detail
    assert "CUDA graphs: denoiser off, text off" in measured.detail   # what ran, as the record says
    with pytest.raises(ValueError, match="unknown measure 'fps'"):
        SR.run_speed({**settings, "measure": "fps"}, seconds)
    assert SR.gpu_caveat("A100", "NVIDIA A100-SXM4-80GB") == "on NVIDIA A100-SXM4-80GB"


# --- suite output -------------------------------------------------------------------------------------------------

def test_speed_suite_writes_records_table_and_plot(tmp_path):
    presets = {("tiny", 64): TINY, ("tiny", 48): TINY}
    md = run_speed_suite(tmp_path, models=("tiny",), resolutions=(64, 48), batches=(1, 2), dtype="fp32", steps=2,
                         device="cpu", presets=presets, matmul_n=64, repeats=1, **{k: v for k, v in TINY_E2E.items()
                                                                                   if k != "device"})
    records = [json.loads(line) for line in (tmp_path / "speed.jsonl").read_text().splitlines()]
    assert [(r["resolution"], r["batch"]) for r in records] == [(64, 1), (64, 2), (48, 1), (48, 2)]
    assert all(r["machine"]["torch"] == torch.__version__ and r["machine"]["gpu"] == "cpu" for r in records)
    assert records[0]["total_s"] > 0 and "not a multiple" in records[2]["error"]
    text = md.read_text()
    assert "| tiny | tiny | eager | no | none | 64 | 2 |" in text and "not a multiple" in text
    assert (tmp_path / "speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no preset for tiny at 32 px"):
        run_speed_suite(tmp_path, models=("tiny",), resolutions=(32,), device="cpu", presets=presets, matmul_n=64)


def test_speed_suite_times_quantised_modes_and_the_peer_in_one_run(tmp_path):
    """Issue #16's grid in one command: each quantised row set against the unquantised one, and diffusers'
    denoiser of the same architecture timed beside ours."""
    md = run_speed_suite(tmp_path, models=("tiny",), resolutions=(64,), batches=(1,), dtype="fp32", steps=2,
                         device="cpu", presets={("tiny", 64): TINY}, matmul_n=64, repeats=1, quantize=("none", "w8a8"),
                         peer=True, **{k: v for k, v in TINY_E2E.items() if k != "device"})
    records = [json.loads(line) for line in (tmp_path / "speed.jsonl").read_text().splitlines()]
    assert [(r["case"], r.get("quantize")) for r in records] == [
        ("sana_e2e", "none"), ("sana_e2e", "w8a8"), ("peer_denoiser", "none")]
    assert records[2]["impl"] == "diffusers" and records[2]["denoise20_s"] > 0
    text = md.read_text()
    none, w8a8 = (f"{records[0]['step_s'] / r['step_s']:.2f}" for r in records[:2])
    assert "| eager | no | none | 64 | 1 |" in text and f"| {none} |" in text and f"| {w8a8} |" in text
    ratio = records[2]["denoise20_s"] / records[0]["denoise_s"]
    assert f"| tiny | 64 | 1 | {records[0]['denoise_s']:.3f} | {records[2]['denoise20_s']:.3f} | {ratio:.2f} |" in text
    with pytest.raises(ValueError, match="unknown quantize mode 'int4'"):
        run_speed_suite(tmp_path, models=("tiny",), resolutions=(64,), device="cpu", presets={("tiny", 64): TINY},
                        quantize=("int4",))


def test_text_encoder_suite_writes_records_and_table(tmp_path):
    md = run_text_encoder_suite(tmp_path, names=(TINY_GEMMA2,), batch=2, seq=12, dtype="fp32", device="cpu",
                                repeats=1)
    [record] = [json.loads(line) for line in (tmp_path / "text_encoders.jsonl").read_text().splitlines()]
    assert record["name"] == "test/tiny-gemma-2" and record["latency_s"] > 0 and record["machine"]["gpu"] == "cpu"
    assert "| test/tiny-gemma-2 |" in md.read_text()
