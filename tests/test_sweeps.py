"""Inference sweeps: the registry's points, and a 2-point sweep through the real tiny chain (pipeline -> MJHQ
layout -> CLIP score), written, plotted, and resumed without recomputing anything."""
from __future__ import annotations

import dataclasses
import functools
import json
import math

import pytest
import torch
from PIL import Image

from model.pipeline import SamplingConfig
from model.text_encoder import CHI_VARIANTS
from sana_eval.generation import prompt_sets as B
from sana_eval.generation.layouts import encode_image, quantize_uint8
from sana_eval.generation.manifest import read_run
from sana_eval.generation.runner import sample_seed
from sana_eval.reproduce import sweeps as S
from sana_eval.smoke import chain as smoke
from sana_eval.smoke import tiny as tiny

RES = 32


def test_fig8_sweep_is_both_samplers_at_every_step_count():
    sweep = S.get_sweep("fig8-steps")
    points = sweep.points()
    assert [(p.knobs.sampler, p.knobs.steps) for p in points] == [
        (sampler, steps) for sampler in ("flow_dpm_solver", "flow_euler") for steps in (5, 8, 10, 14, 20, 28, 50)]
    assert sweep.benchmark == "mjhq30k" and sweep.metrics == ("fid", "clip_score")
    assert len({p.id for p in points}) == 14
    # Everything not swept stays at the metric scripts' defaults (docs/tables.md §4): CFG 4.5, PAG off,
    # checkpoint shift.
    sampling = points[-1].knobs.sampling()
    assert sampling == SamplingConfig(sampler="flow_euler", steps=50, cfg_scale=4.5, shift=None, pag_scale=1.0)


def test_cfg_chi_and_shift_sweeps_vary_one_knob():
    assert [p.knobs.cfg for p in S.get_sweep("cfg").points()] == [1.5, 3.0, 4.5, 6.0, 7.5]
    assert [p.knobs.sampling().shift for p in S.get_sweep("shift").points()] == [1.0, 3.0, 4.0, 6.0]
    chi = S.get_sweep("chi")
    assert [p.knobs.chi for p in chi.points()] == ["on", "off"] and chi.benchmark == "geneval"
    assert "Table 2" in chi.note and "inference" in chi.note
    request = S._request(chi.points()[1], chi, S.SweepSettings("w"), None, S.SweepExecution(limit=5))
    assert request.chi == "off" and request.limit == 5 and request.benchmark == "geneval"


def test_bad_definitions_and_names_are_refused():
    with pytest.raises(S.SweepError, match="unknown sweep 'fig9'"):
        S.get_sweep("fig9")
    with pytest.raises(S.SweepError, match="not scorable"):
        S.Sweep("x", "x", "x", "geneval", ("fid",), "cfg", (1.0,))
    with pytest.raises(S.SweepError, match="axes must be"):
        S.Sweep("x", "x", "x", "mjhq30k", ("fid",), "temperature", (1.0,))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Tiny MJHQ prompts + reference images in the official layout, and the tiny random models."""
    root = tmp_path_factory.mktemp("sweep")
    smoke.write_prompt_subsets(root / "data", None)
    smoke.write_reference_images(root / "data" / "mjhq30k")
    corpus = [v["prompt"] for v in smoke.MJHQ_META.values()]
    gemma = tiny.write_tiny_gemma(root / "gemma", [*CHI_VARIANTS["nvlabs"], *corpus])
    pipe = tiny.tiny_pipeline(gemma, RES)
    clip = tiny.tiny_clip(root / "clip")
    return root, pipe, clip


@pytest.fixture
def tiny_chain(chain, monkeypatch, tmp_path):
    """Points the real loaders at the tiny models; counts pipeline loads and scorer calls."""
    from metrics.clip_score import CLIPScoreConfig

    root, pipe, clip = chain
    calls = {"load": 0, "score": 0}

    def load_pipeline(*args, **kwargs):
        calls["load"] += 1
        return pipe

    import sana_eval.scoring.scorers as score
    real_score = score.score_mjhq

    def counted_score(*args, **kwargs):
        calls["score"] += 1
        return real_score(*args, **kwargs)

    monkeypatch.setattr("sana_eval.generation.sana.load_pipeline", load_pipeline)
    monkeypatch.setattr(score, "score_mjhq", counted_score)
    monkeypatch.setattr("sana_eval.scoring.scorers.CLIPScoreConfig", functools.partial(
        CLIPScoreConfig, model=clip.name, pretrained=None, precision="fp32", num_workers=0, device="cpu"))
    # The official MJHQ file has 30000 prompts; the tiny one in its schema has 3.
    monkeypatch.setitem(B.BENCHMARKS, "mjhq30k", dataclasses.replace(B.BENCHMARKS["mjhq30k"], n_items=None))
    # CLIP score only: FID's 2048x2048 matrix square root costs ~20 s a point on CPU (test_score.py covers FID).
    sweep = S.Sweep("tiny-steps", "steps on the tiny chain", "test", "mjhq30k", ("clip_score",), "steps", (1, 2))
    monkeypatch.setitem(S.SWEEPS, sweep.name, sweep)
    mjhq = str(root / "data" / "mjhq30k")
    settings = S.SweepSettings("tiny", resolution=RES, data=mjhq, mjhq=mjhq)
    execution = S.SweepExecution(limit=3, batch_size=4, scorer={"mjhq": {"clip_weights": str(clip.weights)}})

    def run(**changed):
        return S.run_sweep(sweep.name, dataclasses.replace(settings, **changed), tmp_path / "out", execution)

    return run, calls, pipe, tmp_path / "out"


def test_a_sweep_runs_writes_its_files_and_a_rerun_recomputes_nothing_else_is_refused(tiny_chain):
    run, calls, pipe, out = tiny_chain
    assert run() == out / "sweep.md"
    assert calls == {"load": 2, "score": 2}
    data = json.loads((out / "sweep.json").read_text())
    assert data["schema"] == S.SCHEMA and data["limit"] == 3 and data["provenance"]["packages"]["torch"]
    assert [(p["x"], p["reused"]) for p in data["points"]] == [(1, False), (2, False)]
    assert all(math.isfinite(v) for p in data["points"] for v in p["values"].values())

    # Each point's images are what the pipeline makes with that point's steps for the item's seed (MJHQ layout).
    meta = list(smoke.MJHQ_META.items())
    for point, steps in zip(data["points"], (1, 2)):
        identity, records = read_run(out / point["images"])
        assert identity["run_config"]["sampling"]["steps"] == steps and len(records) == 3
        item, entry = meta[0]
        with torch.no_grad():
            pixels = pipe([entry["prompt"]], seeds=[sample_seed(0, item, 0)], config=SamplingConfig(steps=steps),
                          height=RES, width=RES)
        assert (out / point["images"] / f"{item}.jpg").read_bytes() == encode_image(
            quantize_uint8(pixels)[0].numpy(), "jpeg")
    assert data["points"][0]["values"] != data["points"][1]["values"]

    md = (out / "sweep.md").read_text()
    assert "![steps on the tiny chain](sweep.png)" in md and "## CLIP score (higher is better)" in md
    rows = [line for line in md.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert rows == [f"| {x} | {p['values']['clip_score']:.4g} |" for x, p in zip((1, 2), data["points"])]
    with Image.open(out / "sweep.png") as img:
        assert img.format == "PNG" and img.width > 500

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix in (".jpg", ".json") and
              p.name != "sweep.json"}
    run()
    assert calls == {"load": 2, "score": 2}                       # nothing regenerated, nothing rescored
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    again = json.loads((out / "sweep.json").read_text())
    assert [p["values"] for p in again["points"]] == [p["values"] for p in data["points"]]
    assert all(p["reused"] for p in again["points"])
    with pytest.raises(S.SweepError, match="other settings"):
        run(seed=1)                                               # stored scores belong to seed 0


def test_a_stored_sweep_replots_from_its_json_with_categorical_values(tmp_path):
    chi = S.get_sweep("chi")
    payload = {"schema": S.SCHEMA, "sweep": chi.to_dict(), "settings": dataclasses.asdict(S.SweepSettings("w")),
               "limit": 10, "provenance": {"git_commit": None, "git_dirty": True, "utc_time": "2026-01-01T00:00:00Z"},
               "points": [{"series": "", "x": "on", "values": {"geneval": 0.62}},
                          {"series": "", "x": "off", "values": {"geneval": 0.58}}]}
    S.write_sweep_json(payload, tmp_path / "sweep.json")
    md = S.render_sweep(tmp_path / "sweep.json").read_text()
    assert "| chi | GenEval overall |" in md and "| on | 0.62 |" in md and "| off | 0.58 |" in md
    assert "first 10 prompts · 2 of 2 points" in md and "Table 2 ablates CHI in training" in md
    assert (tmp_path / "sweep.png").is_file()
    (tmp_path / "bad.json").write_text('{"schema": "other"}')
    with pytest.raises(S.SweepError, match="bad.json: schema 'other'"):
        S.render_sweep(tmp_path / "bad.json")


def test_sweep_tables_print_four_significant_digits_and_each_metric_direction():
    cfg = S.get_sweep("cfg")
    payload = {"schema": S.SCHEMA, "sweep": cfg.to_dict(), "settings": dataclasses.asdict(S.SweepSettings("w")),
               "limit": None, "provenance": {"git_commit": "0123456789ab", "git_dirty": False,
                                             "utc_time": "2026-01-01T00:00:00Z"},
               "points": [{"series": "", "x": 1.5, "values": {"fid": 12.3456789, "clip_score": 0.000123456}},
                          {"series": "", "x": 3.0, "values": {"fid": 7.0, "clip_score": 26.78912}}]}
    md = S.render_markdown(payload, None).splitlines()
    assert "## FID (lower is better)" in md and "## CLIP score (higher is better)" in md
    assert md[md.index("## FID (lower is better)") + 4:][:3] == ["| 1.5 | 12.35 |", "| 3.0 | 7 |", "| 4.5 | · |"]
    clip = md.index("## CLIP score (higher is better)")
    assert md[clip + 4:clip + 6] == ["| 1.5 | 0.0001235 |", "| 3.0 | 26.79 |"]
