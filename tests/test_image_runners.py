"""The generate/score and reconstruction runners: which checkpoint, which settings, stored results reused."""
from __future__ import annotations

import pytest

from metrics.base import Result
from sana_eval.paths import RUNS_ENV
from sana_eval.reproduce import images as IR
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

    def fake_geneval(images, data=None, limit=None):
        scored.append(images)
        return Result("geneval", {"backend": "test"}, {"geneval": 0.66, "geneval/counting": 0.62}, {})

    monkeypatch.setattr("sana_eval.scoring.scorers.score_geneval", fake_geneval)
    recipe, column = _cell("table10", "1024 x 1024 / Sana-1.6B", "counting")
    first = IR.run_generate_score(recipe.settings, column)
    again = IR.run_generate_score(recipe.settings, column)
    assert first.value == again.value == 0.62
    assert "weights sha256" in first.detail  # the run's hashes reach the report (here: no manifest, so "?")
    assert len(requests) == 2 and len(scored) == 1          # generation resumes (a no-op); scores are reused
    request = requests[0]
    assert request.benchmark == "geneval" and request.resolution == 1024 and request.seed == 0
    assert request.weights.endswith("Sana_1600M_1024px.pth")
    assert request.sampling.steps == 20 and request.sampling.cfg_scale == 4.5 and request.sampling.pag_scale == 1.0
    assert (tmp_path / "runs" / "Sana_1600M_1024px-geneval-1024.geneval.json").is_file()


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
    import json

    import numpy as np

    from sana_eval.generation.prompt_sets import get_benchmark
    from sana_eval.generation.runner import GenerationSpec, run_generation

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
                        lambda images, data=None, limit=None: Result("geneval", {},
                                                                     {"geneval": 0.5, "geneval/colors": 0.5}, {}))
    recipe, column = _cell("table10", "1024 x 1024 / Sana-1.6B", "colors")
    assert IR.run_generate_score(recipe.settings, column).value == 0.5
    page = IR.run_folder(recipe.settings) / "gallery.html"
    assert page.parent.name == "Sana_1600M_1024px-geneval-1024"
    assert "colors (1)" in page.read_text() and "a photo of a red car" in page.read_text()
    assert (page.parent / "gallery" / "00000__samples__00003.jpg").is_file()
