"""`sana-eval bench suite evaluate` on tiny models (CPU): the whole suite runs through the real runner and every
scorer's path, writes its files, and its row time is the arithmetic of its own rate records, recomputed here."""
from __future__ import annotations

import json

import pytest
import torch

from sana_eval.bench.evaluate_cost import TINY_MODELS, steady_rate
from sana_eval.bench.evaluate_row import DPG_QUESTIONS_ESTIMATE, dpg_questions, row_time
from sana_eval.cli.main import main
from sana_eval.generation.prompt_sets import BENCHMARKS

# The toy Swin's last stage is smaller than its window; the warning concerns detections, not timing.
pytestmark = pytest.mark.filterwarnings("ignore:Mask2Former input")
# Table 7/11's row as the paper's benchmarks define it: prompts x images per prompt.
ROW_IMAGES = {"mjhq30k": 30_000, "geneval": 553 * 4, "dpg": 1065 * 4, "imagereward": 100 * 10}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # toy models are overhead-bound: more threads only fight the other tests for the CPUs
    try:
        code = main(["bench", "suite", "evaluate", "--tiny", "--steps", "1", "--batch", "4", "--batches", "2",
                     "--repeats", "1", "--scorer-images", "6", "--dpg-questions-per-prompt", "7.5", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return out, [json.loads(line) for line in (out / "evaluate.jsonl").read_text().splitlines()]


def test_the_suite_writes_its_report_plot_and_provenance(suite):
    out, records = suite
    for name in ("evaluate.jsonl", "evaluate.md", "evaluate.png", "provenance.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "evaluate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "provenance.json").read_text())["config"]["dpg_questions_per_prompt"] == 7.5
    md = (out / "evaluate.md").read_text()
    assert "## Row time on one GPU: tiny" in md and "| **total** |" in md
    assert all("machine" in r and "gpu" in r["machine"] for r in records)


def test_every_benchmark_is_generated_and_every_scorer_timed(suite):
    _, records = suite
    gen = {r["benchmark"]: r for r in records if r["case"] == "generation"}
    assert set(gen) == set(ROW_IMAGES)
    assert all("error" not in r for r in gen.values()), [r.get("error") for r in gen.values()]
    assert {r["benchmark"]: (r["layout"], r["image_format"]) for r in gen.values()} == {
        "mjhq30k": ("mjhq", "jpeg"), "geneval": ("geneval", "png"), "dpg": ("dpg", "png"),
        "imagereward": ("imagereward", "jpeg")}
    # Sana's scripts put the CHI before MJHQ and GenEval prompts only: longer Gemma rows there.
    assert gen["mjhq30k"]["use_chi"] and not gen["dpg"]["use_chi"]
    assert gen["mjhq30k"]["text_tokens"] > gen["dpg"]["text_tokens"] == 300
    assert all(r["img_per_s"] > 0 and r["timed_images"] >= 4 for r in gen.values())
    scorers = {r["scorer"]: r for r in records if r["case"] == "scorer"}
    assert set(scorers) == {"fid", "clip_score", "geneval_detector", "dpg_vqa", "image_reward"}
    assert all("per_s" in r for r in scorers.values()), [r.get("error") or r.get("skipped") for r in scorers.values()]
    assert scorers["dpg_vqa"]["unit"] == "question" and scorers["dpg_vqa"]["units"] == 1 * 4 * 1  # grid x tiles x q
    assert scorers["fid"]["units"] == scorers["clip_score"]["units"] == scorers["image_reward"]["units"] == 6
    e2e = {r["use_chi"]: r for r in records if r["case"] == "e2e"}
    assert set(e2e) == {True, False} and all("img_per_s" in r for r in e2e.values())
    # the bench it is set against runs at the runner's text length
    assert e2e[True]["text_tokens"] == gen["mjhq30k"]["text_tokens"]
    assert e2e[False]["text_tokens"] == gen["imagereward"]["text_tokens"]


def test_row_time_is_the_sum_of_the_measured_rates(suite):
    _, records = suite
    (row,) = [r for r in records if r["case"] == "row"]
    gen = {r["benchmark"]: r["img_per_s"] for r in records if r["case"] == "generation"}
    rate = {r["scorer"]: r["per_s"] for r in records if r["case"] == "scorer"}
    scoring = {"fid": ROW_IMAGES["mjhq30k"] / rate["fid"],
               "clip_score": (ROW_IMAGES["mjhq30k"] + ROW_IMAGES["geneval"]) / rate["clip_score"],
               "geneval_detector": ROW_IMAGES["geneval"] / rate["geneval_detector"],
               "dpg_vqa": ROW_IMAGES["dpg"] * 7.5 / rate["dpg_vqa"],
               "image_reward": ROW_IMAGES["imagereward"] / rate["image_reward"]}
    generation = sum(n / gen[b] for b, n in ROW_IMAGES.items())
    total = generation + sum(scoring.values())
    assert row["model"] == TINY_MODELS[0].name and row["missing"] == []
    assert row["total_s"] == pytest.approx(total, rel=1e-12)
    assert row["parts_s"]["generation"] == pytest.approx(generation, rel=1e-12)
    for key, seconds in scoring.items():
        assert row["shares"][key] == pytest.approx(seconds / total, rel=1e-12)
    assert sum(row["shares"].values()) == pytest.approx(1.0)
    assert row["benchmarks"]["dpg"]["scoring"]["dpg_vqa"]["units"] == pytest.approx(1065 * 4 * 7.5)


def test_row_counts_come_from_the_benchmark_registry():
    assert {n: BENCHMARKS[n].n_items * BENCHMARKS[n].n_images for n in ROW_IMAGES} == ROW_IMAGES


def test_a_missing_rate_is_named_and_left_out():
    gen = {"mjhq30k": 2.0, "geneval": 2.0, "dpg": 1.0, "imagereward": 4.0}
    rates = {"fid": 100.0, "geneval_detector": 10.0, "dpg_vqa": 50.0, "image_reward": 20.0}
    row = row_time("m", gen, rates, 2.0)
    assert row["missing"] == ["clip_score (mjhq30k)", "clip_score (geneval)"]
    expected = (30_000 / 2 + 2212 / 2 + 4260 / 1 + 1000 / 4) + 30_000 / 100 + 2212 / 10 + 4260 * 2 / 50 + 1000 / 20
    assert row["total_s"] == pytest.approx(expected)
    assert "clip_score" not in row["parts_s"]


def test_steady_rate_skips_the_warm_up_and_a_short_last_batch():
    returns = [(10.0, 4), (12.0, 4), (13.0, 4), (13.2, 2)]
    assert steady_rate(returns, 4) == (8, pytest.approx(8 / 3.0))
    with pytest.raises(ValueError, match="at least 2 batches"):
        steady_rate([(1.0, 4)], 4)


def test_dpg_question_count_given_counted_or_estimated(tmp_path, monkeypatch):
    monkeypatch.delenv("SANA_EVAL_DATA", raising=False)
    assert dpg_questions(None, 9.0) == (9.0, "given (--dpg-questions-per-prompt)")
    assert dpg_questions()[0] == DPG_QUESTIONS_ESTIMATE and "estimate" in dpg_questions()[1]
    csv = tmp_path / "dpg_bench" / "dpg_bench.csv"
    csv.parent.mkdir()
    header = ("item_id,text,keywords,proposition_id,dependency,category_broad,category_detailed,tuple,"
              "question_natural_language\n")
    rows = "".join(f"{item},p,k,{q},0,entity,whole,entity - whole (x),is there x?\n"
                   for item, n in (("a", 3), ("b", 5)) for q in range(1, n + 1))
    csv.write_text(header + rows)
    monkeypatch.setenv("SANA_EVAL_DATA", str(tmp_path))
    count, source = dpg_questions()
    assert count == 4.0 and str(csv) in source and "not an official blob" in source
    with pytest.raises(ValueError, match="must be positive"):
        dpg_questions(None, 0.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_full_size_refuses_the_cpu(tmp_path, capsys):
    assert main(["bench", "suite", "evaluate", "--out", str(tmp_path / "x")]) != 0
    assert "CUDA" in capsys.readouterr().err
    assert not (tmp_path / "x" / "evaluate.jsonl").exists()
