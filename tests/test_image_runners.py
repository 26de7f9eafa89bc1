"""The generate/score and reconstruction runners: which checkpoint, which settings, stored results reused."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from metrics.base import Result
from sana_eval.generation.prompt_sets import get_benchmark
from sana_eval.generation.runner import GenerationSpec, run_generation
from sana_eval.paths import DATA_ENV, RUNS_ENV
from sana_eval.provenance import collect
from sana_eval.reproduce import images as IR
from sana_eval.reproduce import needs as N
from sana_eval.reproduce.report import TableReport, write_report
from sana_eval.reproduce.runners import evaluate_cell, evaluate_table
from sana_eval.tables import get_table
from sana_eval.tables import recipes as R


def test_checkpoint_in_finds_each_released_layout(tmp_path):
    (tmp_path / "nv" / "checkpoints").mkdir(parents=True)
    (tmp_path / "nv" / "checkpoints" / "Sana_1600M_1024px.pth").write_bytes(b"")
    (tmp_path / "hf" / "transformer").mkdir(parents=True)
    (tmp_path / "tx").mkdir()
    (tmp_path / "tx" / "config.json").write_text("{}")
    assert IR.checkpoint_in(tmp_path / "nv").name == "Sana_1600M_1024px.pth"
    assert IR.checkpoint_in(tmp_path / "hf").name == "transformer"
    assert IR.checkpoint_in(tmp_path / "tx") == tmp_path / "tx"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no single transformer checkpoint"):
        IR.checkpoint_in(tmp_path / "empty")


def _cell(table: str, row: str, column: str):
    t = get_table(table)
    r = next(r for r in t.rows if r.id == row)
    return r.cells[column].recipe, next(c for c in t.columns if c.key == column)


def test_generate_score_runs_once_and_reuses_the_stored_result(tmp_path, monkeypatch):
    repo = tmp_path / "weights" / "Sana_1600M_1024px"
    (repo / "checkpoints").mkdir(parents=True)
    (repo / "checkpoints" / "Sana_1600M_1024px.pth").write_bytes(b"")
    monkeypatch.setattr(IR, "local_weights", lambda repo_id: repo if repo_id.endswith("1024px") else tmp_path)
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "runs"))
    requests, scored = [], []
    monkeypatch.setattr("sana_eval.generation.sana.run", requests.append)

    def fake_geneval(images, data=None, limit=None, geneval_protocol=None, detector_weights=None):
        scored.append((images, geneval_protocol, detector_weights))
        counting = {"sana": 0.62, "official": 0.41}[geneval_protocol]
        return Result("geneval", {"backend": "test"}, {"geneval": 0.66, "geneval/counting": counting}, {})

    monkeypatch.setattr("sana_eval.scoring.scorers.score_geneval", fake_geneval)
    recipe, column = _cell("table10", "1024 x 1024 / Sana-1.6B", "counting")
    first = IR.run_generate_score(recipe.settings, column)
    again = IR.run_generate_score(recipe.settings, column)
    assert first.value == again.value == 0.62
    assert "weights sha256" in first.detail  # the run's hashes reach the report (here: no manifest, so "?")
    assert len(requests) == 2 and len(scored) == 2          # generation resumes (a no-op); scores are reused
    # the paper's cell is compared with SANA's counting rule on GenEval's detector; beside it the official rule on
    # the same detector, so the two differ only in counting (docs/protocols.md §3.7)
    assert [(p, w) for _, p, w in scored] == [("sana", str(tmp_path)), ("official", str(tmp_path))]
    assert "geneval/counting = 0.6200.sana" in first.detail and "0.41" not in first.detail
    assert first.extras == again.extras == {"geneval_protocol official": 0.41}   # a report column, never compared
    request = requests[0]
    assert request.benchmark == "geneval" and request.resolution == 1024 and request.seed == 0
    assert request.weights.endswith("Sana_1600M_1024px.pth")
    assert request.sampling.steps == 20 and request.sampling.cfg_scale == 4.5 and request.sampling.pag_scale == 1.0
    # one stored result per protocol and detector, so a number made with another detector is never reused
    stored = "Sana_1600M_1024px-geneval-1024.geneval.{}.mask2former-swin-s-coco.json"
    assert (tmp_path / "runs" / stored.format("sana")).is_file()
    assert (tmp_path / "runs" / stored.format("official")).is_file()


def test_dpg_cells_compare_elladpg_official_mode_and_show_fixed_as_an_extra_column(tmp_path, monkeypatch):
    monkeypatch.setattr(IR, "local_weights", lambda repo_id: tmp_path)
    monkeypatch.setattr(IR, "checkpoint_in", lambda repo: repo)
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "runs"))
    monkeypatch.setattr("sana_eval.generation.sana.run", lambda request: None)
    calls = []

    def fake_dpg(images, mode="fixed", cache_dir=None, **_):
        calls.append((mode, cache_dir))
        return Result("dpg", {"mode": mode}, {"dpg": 84.8, "dpg/entity": {"official": 91.5, "fixed": 90.2}[mode]}, {})

    monkeypatch.setattr("sana_eval.scoring.scorers.score_dpg", fake_dpg)
    recipe, column = _cell("table11", "1024 x 1024 / Sana-1.6B", "entity")
    assert "--dpg-mode official" in recipe.command
    measured = IR.run_generate_score(recipe.settings, column)
    assert measured.value == 91.5 and measured.extras == {"dpg_mode fixed": 90.2} and "90.2" not in measured.detail
    assert [mode for mode, _ in calls] == ["official", "fixed"] and len({cache for _, cache in calls}) == 1


def test_paper_cells_say_which_scorer_weights_they_need(tmp_path, monkeypatch):
    monkeypatch.setenv(N.WEIGHTS_ENV, str(tmp_path))
    recipe, _ = _cell("table10", "512 x 512 / Sana-0.6B", "overall")
    reasons = N.unmet(recipe.needs)
    assert any("geneval/mask2former-swin-s-coco (GenEval's detector: sana-eval convert-detector "
               "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco" in r for r in reasons)
    assert "--geneval-protocol sana --detector-weights $SANA_EVAL_WEIGHTS/geneval/mask2former-swin-s-coco" in (
        recipe.command)


def test_reconstruction_runner_scores_the_dc_ae_once(tmp_path, monkeypatch):
    monkeypatch.setattr(IR, "local_weights", lambda repo_id: tmp_path)
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "runs"))
    calls = []

    def fake_recon(ae, weights, source, resolution):
        calls.append((ae, resolution))
        return Result("recon", {"ae": ae}, {"rfid": 0.3, "psnr": 29.0, "ssim": 0.84, "lpips": 0.05}, {})

    monkeypatch.setattr("sana_eval.scoring.scorers.score_recon", fake_recon)
    for metric in ("rfid", "psnr"):
        recipe, column = _cell("table1", "F32C32 (Ours)", metric)
        assert IR.run_reconstruction(recipe.settings, column).value == {"rfid": 0.3, "psnr": 29.0}[metric]
    assert calls == [("dc-ae-f32c32", 1024)]


def test_generate_score_writes_the_sample_gallery_of_its_run(tmp_path, monkeypatch):
    monkeypatch.setattr(IR, "local_weights", lambda repo_id: tmp_path)
    monkeypatch.setattr(IR, "checkpoint_in", lambda repo: repo)
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "runs"))
    prompts = tmp_path / "evaluation_metadata.jsonl"
    prompts.write_text(json.dumps({"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}],
                                   "prompt": "a photo of a red car"}) + "\n")

    def generate(request):  # the resumable runner, with constant 8-px images in place of the pipeline
        run_generation(get_benchmark("geneval").load(prompts, verify=False), request.out,
                       lambda p, s: np.full((len(p), 8, 8, 3), 127, np.uint8), GenerationSpec({}, progress=False))

    monkeypatch.setattr("sana_eval.generation.sana.run", generate)
    monkeypatch.setattr("sana_eval.scoring.scorers.score_geneval",
                        lambda images, data=None, limit=None, **_: Result("geneval", {},
                                                                     {"geneval": 0.5, "geneval/colors": 0.5}, {}))
    recipe, column = _cell("table10", "1024 x 1024 / Sana-1.6B", "colors")
    assert IR.run_generate_score(recipe.settings, column).value == 0.5
    page = IR.run_folder(recipe.settings) / "gallery.html"
    assert page.parent.name == "Sana_1600M_1024px-geneval-1024"
    assert "colors (1)" in page.read_text() and "a photo of a red car" in page.read_text()
    assert (page.parent / "gallery" / "00000__samples__00003.jpg").is_file()


def test_512px_cells_generate_at_both_shifts_and_compare_the_paper_time_one(tmp_path, monkeypatch):
    monkeypatch.setattr(IR, "local_weights", lambda repo_id: tmp_path)
    monkeypatch.setattr(IR, "checkpoint_in", lambda repo: repo)
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "runs"))
    requests = []
    monkeypatch.setattr("sana_eval.generation.sana.run", requests.append)

    def fake_geneval(images, geneval_protocol=None, **_):
        overall = {"shift1.0": 0.64, "shift3.0": 0.67}[images.name.rsplit("-", 1)[1]]
        return Result("geneval", {}, {"geneval": overall - (geneval_protocol == "official") * 0.01}, {})

    monkeypatch.setattr("sana_eval.scoring.scorers.score_geneval", fake_geneval)
    recipe, column = _cell("table10", "512 x 512 / Sana-0.6B", "overall")
    measured = IR.run_generate_score(recipe.settings, column)
    assert [r.sampling.shift for r in requests] == [1.0, 3.0]
    assert [r.out.name for r in requests] == ["Sana_600M_512px-geneval-512-shift1.0",
                                              "Sana_600M_512px-geneval-512-shift3.0"]
    assert measured.value == 0.64
    # the official rule at the paper-time shift, and the paper's rule at the revised shift: two extra columns
    assert measured.extras == {"geneval_protocol official": pytest.approx(0.63), "shift 3.0": 0.67}


def test_table5_w8a8_cells_generate_quantised_images_in_their_own_folder(tmp_path, monkeypatch):
    """Table 5's W8A8 row (paper §4): the same MJHQ-30K recipe as the FP16 row, with the DiT quantised, into a
    folder of its own, so that a resume never mixes FP16 and W8A8 images."""
    monkeypatch.setattr(IR, "local_weights", lambda repo_id: tmp_path)
    monkeypatch.setattr(IR, "checkpoint_in", lambda repo: repo)
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "runs"))
    requests = []
    monkeypatch.setattr("sana_eval.generation.sana.run", requests.append)
    monkeypatch.setattr("sana_eval.scoring.scorers.score_mjhq",
                        lambda images, source, **_: [Result("mjhq30k", {}, {"image_reward": 0.9}, {})])
    fp16, column = _cell("table5", "Sana (FP16)", "image_reward")
    w8a8, _ = _cell("table5", "+ W8A8 Quantization", "image_reward")
    assert IR.run_generate_score(w8a8.settings, column).value == 0.9
    assert IR.run_generate_score(fp16.settings, column).value == 0.9
    assert [(r.quantize, r.out.name, r.limit) for r in requests] == [
        ("w8a8", "Sana_600M_1024px-mjhq30k-1024-first1000-w8a8", 1000),
        ("none", "Sana_600M_1024px-mjhq30k-1024-first1000", 1000)]
    assert "--quantize w8a8" in w8a8.command and "--quantize" not in fp16.command
    for recipe in (fp16, w8a8):   # the printed one-liner writes where the runner does
        assert f"--out runs/{IR.run_folder(recipe.settings).name} " in recipe.command


HF_DETECTOR = "facebook/mask2former-swin-small-coco-instance"    # transformers' own COCO Mask2Former
BLIP = "Salesforce/blip-vqa-base"


def _machine(tmp_path, monkeypatch, missing=(R.GENEVAL_DETECTOR,), gpu=True):
    """A machine with the recipes' weights and data except `missing`, without modelscope (DPG's mPLUG), and with a
    recording no-op in place of the pipeline; returns the generation requests."""
    def weights(repo_id):
        return None if repo_id in missing else tmp_path / "w" / repo_id

    monkeypatch.setattr(N, "local_weights", weights)
    monkeypatch.setattr(IR, "local_weights", weights)
    monkeypatch.setattr(IR, "checkpoint_in", lambda repo: repo)
    if gpu:
        monkeypatch.setitem(N.CHECKS, "gpu", lambda need: None)
    monkeypatch.setitem(N.CHECKS, "package", lambda need: f"no {need.name} ({need.detail})"
                        if need.name == R.DPG_VQA_PACKAGE else None)
    for relative, _ in N.DATASETS.values():
        (tmp_path / "data" / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / relative).touch()
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "runs"))
    requests = []
    monkeypatch.setattr("sana_eval.generation.sana.run", requests.append)
    return requests


def _fake_geneval(calls):
    def score(images, geneval_protocol=None, detector_weights=None, **_):
        calls.append((images.name, geneval_protocol, detector_weights))
        counting = {"sana": 0.5, "official": 0.4}[geneval_protocol] + 0.05 * images.name.endswith("-shift3.0")
        return Result("geneval", {}, {"geneval": 0.6, "geneval/counting": counting}, {})
    return score


def _evaluate(table: str, row: str, column: str):
    t = get_table(table)
    return evaluate_cell(t, next(r for r in t.rows if r.id == row), t.column(column))


def test_a_cell_missing_only_the_paper_detector_is_not_run_and_shows_the_unofficial_numbers(tmp_path, monkeypatch):
    requests = _machine(tmp_path, monkeypatch)
    calls = []
    monkeypatch.setattr("sana_eval.scoring.scorers.score_geneval", _fake_geneval(calls))
    cell = _evaluate("table10", "512 x 512 / Sana-0.6B", "counting")
    # not compared: no number, no delta, the paper detector's reason with the command that makes it
    assert cell.verdict == "not run" and cell.reproduced is None and cell.delta is None
    assert cell.reasons == (f"needs weights {R.GENEVAL_DETECTOR} (GenEval's detector: sana-eval convert-detector "
                            f"{R.GENEVAL_CHECKPOINT} $SANA_EVAL_WEIGHTS/{R.GENEVAL_DETECTOR}), not found under "
                            f"$SANA_EVAL_WEIGHTS or in the HF cache",)
    assert f"--detector-weights $SANA_EVAL_WEIGHTS/{R.GENEVAL_DETECTOR}" in cell.command
    # the images at both shifts, scored by transformers' COCO weights only: the paper's counting, the official one,
    # and the paper's counting at the revised shift
    assert [r.sampling.shift for r in requests] == [1.0, 3.0]
    stand_in = str(tmp_path / "w" / HF_DETECTOR)
    assert {weights for _, _, weights in calls} == {stand_in}
    assert cell.extras == {f"detector_weights {HF_DETECTOR}": 0.5,
                           f"detector_weights {HF_DETECTOR}, geneval_protocol official": 0.4,
                           f"detector_weights {HF_DETECTOR}, shift 3.0": 0.55}
    again = _evaluate("table10", "512 x 512 / Sana-0.6B", "counting")
    assert again.extras == cell.extras and len(calls) == 3                 # stored results reused

    # once the converted detector is there, the same cell is compared, and the stand-in is not asked again
    monkeypatch.setattr(N, "local_weights", lambda repo_id: tmp_path / "w" / repo_id)
    monkeypatch.setattr(IR, "local_weights", lambda repo_id: tmp_path / "w" / repo_id)
    compared = _evaluate("table10", "512 x 512 / Sana-0.6B", "counting")
    assert compared.reproduced == 0.5 and compared.verdict == "differs"    # paper 0.64
    assert compared.extras == {"geneval_protocol official": 0.4, "shift 3.0": 0.55}
    assert {weights for _, _, weights in calls[3:]} == {str(tmp_path / "w" / R.GENEVAL_DETECTOR)}


def test_dpg_without_modelscope_shows_both_modes_on_blip_and_compares_nothing(tmp_path, monkeypatch):
    _machine(tmp_path, monkeypatch)
    calls = []

    def fake_dpg(images, mode="fixed", vqa="mplug", vqa_weights=None, **_):
        calls.append((mode, vqa, vqa_weights))
        return Result("dpg", {}, {"dpg": 80.0, "dpg/entity": {"official": 88.5, "fixed": 87.25}[mode]}, {})

    monkeypatch.setattr("sana_eval.scoring.scorers.score_dpg", fake_dpg)
    cell = _evaluate("table11", "1024 x 1024 / Sana-1.6B", "entity")
    assert cell.verdict == "not run" and cell.reproduced is None
    assert len(cell.reasons) == 1 and "no modelscope (" in cell.reason and "make test-mplug" in cell.reason
    # both modes read mPLUG, so neither is the paper's scorer here: the stand-in is BLIP, in ELLA's mode and fixed
    assert calls == [("official", "blip", str(tmp_path / "w" / BLIP)), ("fixed", "blip", str(tmp_path / "w" / BLIP))]
    assert cell.extras == {f"vqa blip, vqa_weights {BLIP}": 88.5,
                           f"vqa blip, vqa_weights {BLIP}, dpg_mode fixed": 87.25}


def test_no_unofficial_numbers_without_the_images_or_the_stand_in_scorer(tmp_path, monkeypatch):
    requests = _machine(tmp_path, monkeypatch, gpu=False)
    calls = []
    monkeypatch.setattr("sana_eval.scoring.scorers.score_geneval", _fake_geneval(calls))
    monkeypatch.setattr(N.torch.cuda, "is_available", lambda: False)
    no_gpu = _evaluate("table10", "1024 x 1024 / Sana-1.6B", "counting")
    assert no_gpu.extras == {} and requests == [] and calls == []
    assert no_gpu.reasons[0].startswith("needs a CUDA GPU") and len(no_gpu.reasons) == 2

    _machine(tmp_path, monkeypatch, missing=(R.GENEVAL_DETECTOR, HF_DETECTOR))
    no_stand_in = _evaluate("table10", "1024 x 1024 / Sana-1.6B", "counting")
    assert no_stand_in.extras == {} and calls == [] and no_stand_in.verdict == "not run"
    assert no_stand_in.reasons[1] == (f"no unofficial numbers either: needs weights {HF_DETECTOR} (transformers' "
                                      f"Mask2Former COCO, an unofficial GenEval detector), not found under "
                                      f"$SANA_EVAL_WEIGHTS or in the HF cache")

    _machine(tmp_path, monkeypatch)
    monkeypatch.setattr("sana_eval.scoring.scorers.score_geneval", lambda images, **_: 1 / 0)
    broken = _evaluate("table10", "1024 x 1024 / Sana-1.6B", "counting")   # one cell's reason, not the report's end
    assert broken.extras == {} and broken.reasons[1] == "unofficial numbers failed: ZeroDivisionError: division by zero"
    assert set(IR.UNOFFICIAL_SCORING) == set(R.PAPER_SCORING_NEEDS)        # a stand-in for every paper scorer


def test_the_report_shows_unofficial_numbers_beside_a_cell_it_does_not_compare(tmp_path, monkeypatch):
    _machine(tmp_path, monkeypatch)
    monkeypatch.setattr("sana_eval.scoring.scorers.score_geneval", _fake_geneval([]))
    full = get_table("table10")                  # one row's counting cell, so only the image runner runs
    row = next(r for r in full.rows if r.id == "1024 x 1024 / Sana-1.6B")
    table = dataclasses.replace(full, rows=(dataclasses.replace(row, cells={"counting": row.cells["counting"]}),),
                                columns=(full.column("counting"),), notes=())
    results = tuple(evaluate_table(table))
    (tmp_path / "runs" / "Sana_1600M_1024px-geneval-1024").mkdir()          # the images' sample page
    (tmp_path / "runs" / "Sana_1600M_1024px-geneval-1024" / "gallery.html").write_text("<html></html>")
    paths = write_report(TableReport("v", table, collect(), results), tmp_path / "reports" / "v")
    assert [r.verdict for r in results] == ["not run"] and not any(p.suffix == ".png" for p in paths)  # no plot
    md = (tmp_path / "reports" / "v" / "table10.md").read_text()
    assert "| 1024 x 1024 / Sana-1.6B | 0.62 · | 0.500 | 0.400 |" in md
    assert f"Counting · detector_weights {HF_DETECTOR}, geneval_protocol official" in md
    assert "## Cells that ran" not in md and "sana-eval convert-detector" in md.split("## Why cells were not run")[1]
    assert "](../../runs/Sana_1600M_1024px-geneval-1024/gallery.html)" in md.split("## Sample galleries")[1]
