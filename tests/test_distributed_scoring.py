"""Scoring and `evaluate` across processes (torchrun, gloo on the CPU): the numbers of one process whatever the
process count; the `--subset` rule that keeps a benchmark's category mix.

The scoring networks are tiny random ones of the real architectures (tests/_tiny_scorers.py), so every line of the
scoring path runs; the images come from the tiny Sana of tests/test_distributed.py.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _tiny import diffusers_ae, randomize
from metrics.base import HOST, FeatureCache
from model.config import get_preset
from model.dc_ae import DCAE_PRESETS
from model.text_encoder import CHI_VARIANTS
from sana_eval.generation.prompt_sets import get_benchmark
from sana_eval.generation.subsets import subset_indices, subset_items
from sana_eval.results import read_results
from sana_eval.smoke.tiny import write_tiny_gemma
from test_distributed import worker_of_rank

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "dist_worker.py"
DATA = os.environ.get("SANA_EVAL_DATA")
# CPU results follow the intra-op thread count, and torchrun sets one thread per process: so does the baseline.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
SUBSET = 3
needs_data = pytest.mark.skipif(not DATA, reason="needs the official prompt files: set SANA_EVAL_DATA "
                                                 "(make test sets it to ../shared/data)")


def launch(nproc: int | None, scorers: Path, *args: str, returncode: int = 0) -> str:
    """`sana-eval ARGS` with tiny scorers, in one plain process or under torchrun with `nproc` processes."""
    launcher = [] if nproc is None else ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    done = subprocess.run([sys.executable, *launcher, str(WORKER), str(scorers), *args], capture_output=True,
                          text=True, cwd=REPO, timeout=600, env=ENV)
    assert done.returncode == returncode, done.stderr[-4000:]
    return done.stdout + done.stderr


def comparable(path: Path) -> dict[str, dict]:
    """metric -> its numbers (aggregate and per item), without provenance (paths, devices, times)."""
    return {name: {"aggregate": r.aggregate, "per_item": r.per_item, "protocol": r.protocol}
            for name, r in read_results(path).items()}


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(("manifest", ".sana-eval"))}


# ----------------------------------------------------------------------------------------------------------------
# --subset: which prompts

def test_subset_keeps_geneval_tag_mix_by_largest_remainder():
    # GenEval's 553 prompts by tag (its metadata file): single_object 80, two_object 99, counting 80, colors 94,
    # position 100, color_attr 100. 55 prompts: shares 7.96, 9.85, 7.96, 9.35, 9.95, 9.95 -> floors 7, 9, 7, 9, 9, 9
    # (50), the 5 left go to the largest fractions (all but colors).
    tags = ["single_object"] * 80 + ["two_object"] * 99 + ["counting"] * 80 + ["colors"] * 94 + \
        ["position"] * 100 + ["color_attr"] * 100
    kept = subset_indices(tags, 55)
    assert Counter(tags[i] for i in kept) == {"single_object": 8, "two_object": 10, "counting": 8, "colors": 9,
                                              "position": 10, "color_attr": 10}
    assert kept == sorted(set(kept))
    # evenly spaced within a tag: single_object's 8 of 80 are every 10th
    assert [i for i in kept if tags[i] == "single_object"] == [0, 10, 20, 30, 40, 50, 60, 70]


def test_subset_without_categories_is_evenly_spaced_and_never_more_than_the_set():
    assert subset_indices([None] * 10, 4) == [0, 2, 5, 7]
    assert subset_indices([None] * 3, 7) == [0, 1, 2]
    with pytest.raises(ValueError, match="subset size"):
        subset_indices([None] * 3, 0)


@needs_data
def test_subset_of_the_real_geneval_file_is_not_its_first_prompts():
    items = get_benchmark("geneval").load(DATA).items
    chosen = subset_items(items, 12)
    assert len({it.metadata["tag"] for it in chosen}) == 6
    assert [it.id for it in chosen] != [it.id for it in items[:12]]


# ----------------------------------------------------------------------------------------------------------------
# score across processes

@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    """A flat folder of generated-like images, real-like reference images and their prompts."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    prompts = {}
    for kind in ("images", "reference"):
        (root / kind).mkdir()
        for i in range(14):
            pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / kind / f"{i:03d}.png")
            prompts[f"{i:03d}"] = f"a photo of thing number {i}"
    (root / "prompts.json").write_text(json.dumps(prompts))
    return root


def score_folder(folder_run: Path, nproc: int | None, out: Path, scorers: Path) -> dict:
    launch(nproc, scorers, "score", "--benchmark", "folder", "--images", str(folder_run / "images"),
           "--reference", str(folder_run / "reference"), "--prompts", str(folder_run / "prompts.json"),
           "--allow-few-images", "--fid-size", "32", "--device", "cpu", "--out", str(out))
    return comparable(out)


def test_fid_and_clip_scores_split_over_3_processes_equal_one_process(folder_run, tmp_path):
    # Both runs at once: the single process uses one core (one thread, as torchrun's processes), the CPU has two.
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(score_folder, folder_run, nproc, tmp_path / name / "results.json",
                            tmp_path / f"scorers-{name}") for nproc, name in ((None, "one"), (3, "three"))]
        one, three = (run.result() for run in runs)
    assert set(one) == {"fid", "clip_score"}
    assert three["clip_score"] == one["clip_score"]                    # per image, exactly
    assert three["fid"]["aggregate"]["fid"] == pytest.approx(one["fid"]["aggregate"]["fid"], rel=1e-6)
    # every process computed a part: the shared cache holds chunks of 3 processes
    chunks = list((tmp_path / "three" / "results.cache" / "features").rglob("chunk-*.npz"))
    assert len({c.name.split("-")[2] for c in chunks}) == 3


# ----------------------------------------------------------------------------------------------------------------
# evaluate across processes

@pytest.fixture(scope="module")
def evaluate_assets(tmp_path_factory) -> Path:
    """A tiny Gemma-2 and DC-AE for the `tiny` preset, and a DPG question file for the subset's prompts."""
    if not DATA:
        pytest.skip("needs the official prompt files: set SANA_EVAL_DATA (make test sets it to ../shared/data)")
    root = tmp_path_factory.mktemp("evaluate-assets")
    chosen = {name: subset_items(get_benchmark(name).load(DATA).items, SUBSET)
              for name in ("geneval", "dpg", "imagereward")}
    dit = get_preset("tiny")
    corpus = [*CHI_VARIANTS["nvlabs"], *(it.prompt for items in chosen.values() for it in items)]
    write_tiny_gemma(root / "gemma", corpus, hidden_size=dit.caption_channels)
    ae = diffusers_ae(dataclasses.replace(DCAE_PRESETS["dc-ae-tiny"], latent_channels=dit.in_channels))
    randomize(ae, 1)
    ae.save_pretrained(root / "vae")
    with open(root / "dpg_bench.csv", "w", newline="", encoding="utf-8") as fh:   # ELLA's schema, 2 questions each
        writer = csv.writer(fh)
        writer.writerow(["item_id", "text", "keywords", "proposition_id", "dependency", "category_broad",
                         "category_detailed", "tuple", "question_natural_language"])
        for it in chosen["dpg"]:
            writer.writerow([it.id, it.prompt, "", 1, "0", "entity", "whole", "entity - whole (thing)",
                             "Is there a thing?"])
            writer.writerow([it.id, it.prompt, "", 2, "1", "attribute", "color", "attribute - color (thing, red)",
                             "Is the thing red?"])
    return root


def evaluate_command(assets: Path, out: Path) -> list[str]:
    return ["evaluate", "--weights", "tiny", "--vae", str(assets / "vae"), "--text-encoder", str(assets / "gemma"),
            "--out", str(out), "--benchmarks", "geneval,dpg,imagereward", "--subset", str(SUBSET), "--data", DATA,
            "--dpg-csv", str(assets / "dpg_bench.csv"), "--no-verify-csv", "--vqa", "blip", "--steps", "2",
            "--resolution", "32", "--batch-size", "4", "--device", "cpu"]


def evaluate(assets: Path, out: Path, nproc: int | None, scorers: Path) -> str:
    return launch(nproc, scorers, *evaluate_command(assets, out))


@pytest.fixture(scope="module")
def evaluated(evaluate_assets, tmp_path_factory) -> dict[int, Path]:
    """process count -> the folder of `evaluate` run with that many; the runs go at once (the CPU has two cores)."""
    outs = {n: tmp_path_factory.mktemp(f"evaluate-{n}") / "row" for n in (1, 2)}
    with ThreadPoolExecutor(2) as pool:
        logs = {n: pool.submit(evaluate, evaluate_assets, out, None if n == 1 else n, out.parent / "scorers")
                for n, out in outs.items()}
        for n, log in logs.items():
            assert f"by {n} process(es)" in log.result()
    return outs


@pytest.fixture(scope="module")
def evaluated_once(evaluated) -> Path:
    return evaluated[1]


def test_evaluate_writes_the_bundle_the_row_and_provenance(evaluated_once):
    results = comparable(evaluated_once / "results.json")
    assert set(results) == {"geneval", "dpg", "image_reward"}
    row = (evaluated_once / "row.md").read_text()
    assert "Subset of 3 prompts per benchmark" in row
    assert "| Model | FID ↓ | CLIP ↑ | GenEval ↑ | DPG ↑ |" in row
    geneval = results["geneval"]["aggregate"]["geneval"]
    assert f"| row | – | – | {geneval:.2f} |" in row                   # not run: a dash, never a number
    provenance = json.loads((evaluated_once / "provenance.json").read_text())
    assert provenance["config"]["subset"] == SUBSET and provenance["config"]["world_size"] == 1
    assert provenance["config"]["weights_sha256"].startswith("random (preset name")
    # the subset keeps GenEval's mix: 3 prompts of 3 different tags, 4 images each
    folders = sorted(p.name for p in (evaluated_once / "geneval").iterdir() if p.is_dir())
    tags = {json.loads((evaluated_once / "geneval" / f / "metadata.jsonl").read_text())["tag"] for f in folders}
    assert len(folders) == 3 and len(tags) == 3


def test_evaluate_on_2_processes_gives_the_files_and_numbers_of_one(evaluated, evaluated_once):
    out = evaluated[2]
    for benchmark in ("geneval", "dpg", "imagereward"):
        assert file_hashes(out / benchmark) == file_hashes(evaluated_once / benchmark), benchmark
    assert comparable(out / "results.json") == comparable(evaluated_once / "results.json")
    # The tiny scorers' GenEval and DPG scores are all 0: the rows of detections and the VQA answers behind them
    # agree too, and both processes made a part of each (the cache chunks name their process).
    assert geneval_rows(out) == geneval_rows(evaluated_once)
    assert vqa_answers(out) == vqa_answers(evaluated_once) and len(vqa_answers(out)) == SUBSET
    for cache in ("geneval-*", "dpg_answers-*", "features/image_reward-*"):
        writers = {chunk.name.split("-")[2] for chunk in (out / "cache").glob(f"{cache}/chunk-*")}
        assert len(writers) == 2, cache


def geneval_rows(out: Path) -> list[dict]:
    """GenEval's results rows, file names relative to the run."""
    rows = [json.loads(line) for line in (out / "geneval_geneval.jsonl").read_text().splitlines()]
    return [{**row, "filename": str(Path(row["filename"]).relative_to(out))} for row in rows]


def vqa_answers(out: Path) -> dict[str, list]:
    """Image file name -> its cached VQA answers (the cache key holds the path and mtime: keep the name)."""
    rows = [json.loads(line) for chunk in (out / "cache").glob("dpg_answers-*/chunk-*.jsonl")
            for line in chunk.read_text().splitlines()]
    return {Path(row["key"].split("|")[0]).name: row["value"] for row in rows}


def test_evaluate_killed_while_scoring_resumes_in_one_process_to_the_same_numbers(evaluate_assets, evaluated_once,
                                                                                  tmp_path):
    out = tmp_path / "row"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    args = evaluate_command(evaluate_assets, out)
    torchrun = subprocess.Popen([*launcher, str(WORKER), str(tmp_path / "scorers"), *args], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.monotonic() + 300
        while not (out / "cache").is_dir():          # the first scorer started: every image is made
            assert torchrun.poll() is None and time.monotonic() < deadline, "the run ended before scoring"
            time.sleep(0.01)
        os.kill(worker_of_rank(torchrun.pid, 1), signal.SIGKILL)
        assert torchrun.wait(timeout=120) != 0
    finally:
        if torchrun.poll() is None:
            torchrun.kill()
    assert not (out / "results.json").exists(), "the kill did not land while scoring"
    assert "by 1 process(es)" in launch(None, tmp_path / "scorers", *args)
    assert comparable(out / "results.json") == comparable(evaluated_once / "results.json")
    for benchmark in ("geneval", "dpg", "imagereward"):
        assert file_hashes(out / benchmark) == file_hashes(evaluated_once / benchmark), benchmark


def test_a_killed_writers_temporary_chunk_is_removed_and_a_live_ones_kept(tmp_path):
    cache = FeatureCache(tmp_path, "fid", {"protocol": 1})
    cache.put(["a"], np.ones((1, 2)))
    cache.flush()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = {who: cache.dir / f".chunk-000001-{pid}-{host}-0a1b2c3d.npz.x1y2.tmp"
            for who, pid, host in (("dead", dead.pid, HOST), ("alive", os.getpid(), HOST),
                                   ("other machine", dead.pid, "0123abcd"))}
    for path in left.values():
        path.write_bytes(b"half a chunk")
    reopened = FeatureCache(tmp_path, "fid", {"protocol": 1})
    assert sorted(who for who, path in left.items() if path.exists()) == ["alive", "other machine"]
    assert len(reopened) == 1 and reopened.get("a").tolist() == [1.0, 1.0]
    assert [c.name.split("-")[2:4] for c in cache.dir.glob("chunk-*.npz")] == [[str(os.getpid()), HOST]]
