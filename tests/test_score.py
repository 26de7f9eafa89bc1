"""`sana-eval score` on a small MJHQ-30K-shaped folder: real FID pipeline with random Inception weights."""
from __future__ import annotations

import functools
import json

import pytest
import torch

from _fid_weights import make_random_fid_weights, write_images
from metrics.fid import FIDConfig
from metrics.mjhq import MJHQ_CATEGORIES
from sana_eval.cli.main import main
from sana_eval.generation.prompt_files import DataUnavailableError
from sana_eval.generation.prompt_sets import get_benchmark
from sana_eval.results import read_results
from sana_eval.scoring import scorers


def fake_mjhq(root, per_category: int = 2):
    meta = {}
    for c, category in enumerate(MJHQ_CATEGORIES):
        names = [f"{category[:3]}{k}" for k in range(per_category)]
        write_images(root / "imgs" / category, per_category, (40, 32), seed=c, ext=".jpg", names=names)
        meta.update({n: {"category": category, "prompt": f"a {category} number {n}"} for n in names})
    (root / "meta_data.json").write_text(json.dumps(meta))
    return list(meta)


def test_score_mjhq_fid_writes_results(tmp_path, monkeypatch, capsys):
    hub = tmp_path / "hub"
    _, sha = make_random_fid_weights(hub)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr("sana_eval.scoring.scorers.FIDConfig",
                        functools.partial(FIDConfig, weights_sha256=sha, num_workers=0))
    ids = fake_mjhq(tmp_path / "mjhq")
    write_images(tmp_path / "gen", len(ids), (32, 32), seed=99, ext=".jpg", names=ids)
    out = tmp_path / "results.json"
    code = main(["score", "--benchmark", "mjhq30k", "--images", str(tmp_path / "gen"), "--mjhq",
                 str(tmp_path / "mjhq"), "--metrics", "fid", "--allow-few-images", "--fid-size", "64",
                 "--device", "cpu", "--out", str(out)])
    assert code == 0
    result = read_results(out)["fid"]
    assert result.protocol["img_size"] == 64
    assert result.aggregate["fid"] > 0 and "fid/animals" not in result.aggregate
    assert "fid" in capsys.readouterr().out


def test_score_errors_are_one_line(tmp_path, capsys):
    fake_mjhq(tmp_path / "mjhq", per_category=1)
    code = main(["score", "--benchmark", "mjhq30k", "--images", str(tmp_path / "missing"), "--mjhq",
                 str(tmp_path / "mjhq"), "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "missing" in err
    assert main(["score", "--benchmark", "mjhq30k", "--mjhq", str(tmp_path / "mjhq"),
                 "--out", str(tmp_path / "r.json")]) == 2
    assert "--images" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_folder_clip_score_takes_prompts_from_the_generate_manifest(tmp_path, monkeypatch):
    import open_clip
    from safetensors.torch import save_file

    from metrics.clip_score import CLIPScoreConfig
    from sana_eval.generation.runner import GenerationSpec, generate_benchmark
    from sana_eval.scoring.scorers import score_folder

    cfg = tmp_path / "tiny-clip-score.json"
    cfg.write_text(json.dumps({"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32,
                                                                "head_width": 16, "patch_size": 16},
                               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                                            "layers": 1}}))
    open_clip.add_model_config(cfg)
    save_file({k: v.contiguous() for k, v in open_clip.create_model("tiny-clip-score").state_dict().items()},
              str(tmp_path / "clip.safetensors"))
    monkeypatch.setattr("sana_eval.scoring.scorers.CLIPScoreConfig",
                        functools.partial(CLIPScoreConfig, model="tiny-clip-score", num_workers=0))
    (tmp_path / "prompts.txt").write_text("a red cube\na blue sphere\n")

    def make(prompts, seeds):
        return torch.stack([torch.full((16, 16, 3), 40 * s % 255, dtype=torch.uint8) for s in range(len(seeds))])

    generate_benchmark(f"prompts:{tmp_path / 'prompts.txt'}", tmp_path / "run", make,
                       GenerationSpec({"kind": "test"}, progress=False))
    [result] = score_folder(tmp_path / "run", metrics=["clip_score"], device="cpu",
                            clip_weights=str(tmp_path / "clip.safetensors"))
    assert len(result.per_item) == 2 and result.metric == "clip_score"
    (tmp_path / "p.json").write_text(json.dumps({"other": "x"}))
    with pytest.raises(ValueError, match="no prompt for image"):
        score_folder(tmp_path / "run", prompts=str(tmp_path / "p.json"), metrics=["clip_score"], device="cpu",
                     clip_weights=str(tmp_path / "clip.safetensors"))
    with pytest.raises(ValueError, match="needs --reference"):
        score_folder(tmp_path / "run", metrics=["fid"])


def test_unknown_cross_check_is_refused_before_any_work(tmp_path, capsys):
    code = main(["score", "--benchmark", "mjhq30k", "--images", str(tmp_path), "--mjhq", str(tmp_path),
                 "--cross-check", "clean-fid", "--cross-check", "bogus", "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and "bogus" in err and "clean-fid" in err and err.count("\n") == 1


def test_fid_results_carry_what_compare_needs_to_bootstrap_over_images(tmp_path, monkeypatch):
    import numpy as np

    from metrics.fid import FID, frechet_distance, load_stats
    from sana_eval.compare.deltas import _load_fid_side

    hub = tmp_path / "hub"
    _, sha = make_random_fid_weights(hub)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    fid = FID(FIDConfig(weights_sha256=sha, num_workers=0, device="cpu", img_size=32, allow_few_images=True,
                        cache_dir=str(tmp_path / "cache")))
    from metrics.images import folder_image_set

    write_images(tmp_path / "gen", 6, (32, 32), seed=1, ext=".png")
    write_images(tmp_path / "ref", 6, (32, 32), seed=2, ext=".png")
    with pytest.warns(UserWarning):
        result = fid.score(folder_image_set(tmp_path / "gen"), folder_image_set(tmp_path / "ref"),
                           by_category=False)
    feats = np.load(result.provenance["features"])
    stats = load_stats(result.provenance["reference_stats"], fid.stats_key(folder_image_set(tmp_path / "ref"), "all"))
    assert feats.shape == (6, 2048)
    mu, sigma = feats.mean(0), np.cov(feats, rowvar=False)
    assert frechet_distance(mu, sigma, stats.mu, stats.sigma) == pytest.approx(result.aggregate["fid"], rel=1e-6)
    _load_fid_side(result, "A")  # compare's own checks (sha256, recomputed value) accept it


# --- one dispatcher: options that a benchmark would ignore are refused, naming them -------------------------------

def test_an_option_the_benchmark_does_not_take_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["score", "--benchmark", "geneval", "--images", str(tmp_path), "--metrics", "fid", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "sana-eval score: error: --metrics does not apply to --benchmark geneval" in err
    code = main(["score", "--benchmark", "dpg", "--images", str(tmp_path), "--limit", "10", "--fid-size", "64",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--fid-size, --limit do not apply to --benchmark dpg" in err
    assert main(["score", "--benchmark", "recon", "--images", str(tmp_path), "--out", str(out)]) == 2
    assert "--images does not apply to --benchmark recon" in capsys.readouterr().err
    assert not out.exists()


def test_the_dispatcher_forwards_only_given_options_under_the_scorers_names(tmp_path, monkeypatch):
    from metrics.base import Result
    from sana_eval.scoring import scorers
    from sana_eval.scoring.dispatch import BENCHMARKS, score_benchmark

    calls = []

    def fake_mjhq(images, source, **kwargs):
        calls.append((images, source, kwargs))
        return [Result("fid", {}, {"fid": 1.0}, {})]

    monkeypatch.setattr(scorers, "score_mjhq", fake_mjhq)
    [result] = score_benchmark("mjhq30k", tmp_path, mjhq="ref", limit=4, metrics=["image_reward"], weights="ir.pt",
                               cross_check=["clean-fid"], fid_size=None, device=None)
    assert result.aggregate == {"fid": 1.0}
    [(images, source, kwargs)] = calls
    assert images == tmp_path and (source.folder, source.limit) == ("ref", 4)
    assert kwargs == {"metrics": ["image_reward"], "reward_weights": "ir.pt", "cross_checks": ["clean-fid"]}
    with pytest.raises(ValueError, match="--fid-size does not apply to --benchmark geneval"):
        score_benchmark("geneval", tmp_path, fid_size=64)
    with pytest.raises(ValueError, match="unknown scoring option"):
        score_benchmark("geneval", tmp_path, fid_sise=64)
    with pytest.raises(ValueError, match="unknown benchmark 'gen-eval'"):
        score_benchmark("gen-eval", tmp_path)
    assert set(BENCHMARKS) == {"mjhq30k", "folder", "recon", "geneval", "dpg", "imagereward"}


@pytest.mark.parametrize("benchmark, loader", [("geneval", "get_detector"), ("dpg", "get_vqa")])
def test_a_wrong_image_folder_fails_before_the_scoring_model_loads(tmp_path, monkeypatch, capsys, benchmark, loader):
    def loading(*args, **kwargs):
        raise AssertionError(f"{loader} ran before the folder was checked")

    monkeypatch.setattr(scorers, loader, loading)
    if benchmark == "geneval":  # the folder is judged against the official metadata, which must be at hand
        try:
            get_benchmark("geneval").load()
        except DataUnavailableError as err:
            pytest.skip(f"GenEval's metadata is needed (set SANA_EVAL_DATA or go online): {err}")
    (tmp_path / "imgs").mkdir()
    missing = tmp_path / ("imgs" if benchmark == "geneval" else "nowhere")
    assert main(["score", "--benchmark", benchmark, "--images", str(missing), "--out", str(tmp_path / "r.json"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "ran before" not in err and err.count("\n") == 1
