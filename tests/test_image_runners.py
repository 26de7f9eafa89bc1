"""The generate/score and reconstruction runners: which checkpoint, which settings, stored results reused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from metrics.base import Result
from sana_eval.generation.prompt_sets import get_benchmark
from sana_eval.generation.runner import GenerationSpec, run_generation
from sana_eval.paths import RUNS_ENV
from sana_eval.reproduce import images as IR
from sana_eval.reproduce import needs as N
from sana_eval.tables import get_table


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
    assert (tmp_path / "runs" / "Sana_1600M_1024px-geneval-1024.geneval.sana.json").is_file()
    assert (tmp_path / "runs" / "Sana_1600M_1024px-geneval-1024.geneval.official.json").is_file()


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
