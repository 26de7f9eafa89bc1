"""`make smoke`: one run of the whole chain on tiny random models; every stage leaves its files and a finite number.

Expected file names are written out by hand from the scorers' layouts (docs/generation.md §4.1-4.4).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sana_eval.folder_lock import LOCK_NAME
from sana_eval.generation.prompt_sets import get_benchmark
from sana_eval.results import read_results
from sana_eval.smoke.chain import (
    DPG_PROMPTS,
    GENEVAL_LINES,
    IMAGEREWARD_ENTRIES,
    MJHQ_META,
    run_smoke,
    write_prompt_subsets,
)

GENEVAL_FILES = {f"{p:05d}/samples/{k:05d}.png" for p in range(3) for k in range(4)} | {
    f"{p:05d}/metadata.jsonl" for p in range(3)}
DPG_FILES = {"0.png", "1.png"}
IMAGEREWARD_FILES = {f"{i}_{k}.jpg" for i in ("005695-0057", "005784-0093") for k in range(10)}
MJHQ_FILES = {"smoke0000animals.jpg", "smoke0001food.jpg", "smoke0002vehicles.jpg"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SANA_EVAL_DATA", raising=False)  # the embedded prompts, so the expected names are known
        out = tmp_path_factory.mktemp("smoke")
        report = run_smoke(out)
    return out, report, json.loads((out / "smoke_report.json").read_text())


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_report_warns_in_its_first_line_and_carries_provenance(smoke):
    out, report, payload = smoke
    first = report.read_text().splitlines()[0]
    assert "tiny RANDOM models" in first and "NOT comparable to the paper" in first
    assert payload["warning"] in first
    prov = payload["provenance"]
    assert {"git_commit", "git_dirty", "utc_time", "packages", "platform", "seeds"} <= set(prov)
    assert prov["packages"]["torch"] and prov["seeds"] == {"smoke": 0}
    assert set(prov["weights_sha256"]) == {"gemma2", "fid_inception", "clip", "image_reward"}
    assert all(len(v) == 64 for v in prov["weights_sha256"].values())
    assert prov["config"]["resolution"] == 32 and prov["config"]["steps"] == 2
    # Every stage is listed in the Markdown table with its timing.
    text = report.read_text()
    for stage in payload["stages"]:
        assert f"| {stage['name']} | {stage['seconds']:.2f} |" in text


def test_every_stage_wrote_its_files_and_a_finite_number(smoke):
    out, _, payload = smoke
    names = [s["name"] for s in payload["stages"]]
    for expected in ("prompts", "tiny random models", "generate geneval", "generate dpg", "generate imagereward",
                     "generate mjhq30k", "score fid", "score clip_score", "score geneval", "score dpg",
                     "score image_reward", "report"):
        assert any(n.startswith(expected) for n in names), expected
    for stage in payload["stages"]:
        assert stage["seconds"] >= 0 and stage["numbers"], stage["name"]
        assert all(math.isfinite(v) for v in stage["numbers"].values()), stage["name"]
        if stage["name"] != "tiny random models":  # its weights live in a temp dir; their sha256s are in provenance
            assert stage["files"] and all((out / f).is_file() for f in stage["files"]), stage["name"]
    assert payload["total_seconds"] > 0


def test_generated_files_follow_each_scorer_layout(smoke):
    out, _, _ = smoke
    images = out / "images"
    assert _listing(images / "geneval") == GENEVAL_FILES | {"manifest.jsonl", LOCK_NAME}
    assert _listing(images / "dpg") == DPG_FILES | {"manifest.jsonl", LOCK_NAME}
    assert _listing(images / "imagereward") == IMAGEREWARD_FILES | {"manifest.jsonl", LOCK_NAME}
    assert _listing(images / "mjhq30k") == MJHQ_FILES | {"manifest.jsonl", LOCK_NAME}
    for p, line in enumerate(GENEVAL_LINES):  # the evaluator's metadata: the parsed line, json.dump'ed back
        assert json.loads((images / "geneval" / f"{p:05d}" / "metadata.jsonl").read_text()) == json.loads(line)
    assert Image.open(images / "geneval" / "00000" / "samples" / "00000.png").size == (32, 32)
    assert Image.open(images / "dpg" / "0.png").size == (64, 64)  # 2x2 grid of 32-px tiles, no padding
    assert Image.open(images / "imagereward" / "005695-0057_0.jpg").format == "JPEG"
    pixels = np.asarray(Image.open(images / "geneval" / "00000" / "samples" / "00000.png"))
    assert pixels.std() > 0  # the random pipeline made an image, not a flat fill


def test_results_bundle_has_every_metric(smoke):
    out, _, payload = smoke
    results = read_results(out / payload["results_file"])
    assert set(results) == {"fid", "clip_score", "geneval", "dpg", "image_reward"}
    for result in results.values():
        assert all(math.isfinite(v) for v in result.aggregate.values()), result.metric
    assert results["fid"].provenance["n_generated"] == results["fid"].provenance["n_reference"] == 3
    assert len(results["clip_score"].per_item) == 3
    rows = (out / "scores" / "geneval_results.jsonl").read_text().splitlines()
    assert len(rows) == 12 and results["geneval"].provenance["n_prompts"] == 3
    assert set(results["dpg"].per_item) == set(DPG_PROMPTS) and results["dpg"].protocol["mode"] == "fixed"
    # ImageReward benchmark number: mean over the 2 prompts of the mean of their 10 images.
    per_image = results["image_reward"].per_item
    means = [np.mean([per_image[f"{e['id']}_{k}"]["image_reward"] for k in range(10)]) for e in IMAGEREWARD_ENTRIES]
    assert results["image_reward"].aggregate["image_reward"] == pytest.approx(np.mean(means), abs=1e-9)
    # Every scorer ran a tiny model, not a scripted backend.
    assert results["geneval"].protocol["detector"]["backend"] == "transformers-mask2former"
    assert results["dpg"].protocol["vqa"]["backend"] == "transformers-blip-vqa"


# ---------------------------------------------------------------------------------------------- prompt sources

def _fake_data(root: Path) -> Path:
    """A $SANA_EVAL_DATA folder in the official schemas, longer than the smoke subsets."""
    lines = [json.dumps({"tag": "single_object", "include": [{"class": c, "count": 1}], "prompt": f"a photo of a {c}"})
             for c in ("cat", "dog", "cup", "car", "bus")]
    (root / "geneval").mkdir(parents=True)
    (root / "geneval" / "evaluation_metadata.jsonl").write_text("\n".join(lines) + "\n")
    prompts = root / "dpg_bench" / "prompts"
    prompts.mkdir(parents=True)
    for item in ("b", "a", "c"):
        (prompts / f"{item}.txt").write_text(f"prompt {item}")
    with open(root / "dpg_bench" / "dpg_bench.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item_id", "text", "keywords", "proposition_id", "dependency", "category_broad",
                    "category_detailed", "tuple", "question_natural_language"])
        for item in ("a", "b", "c"):
            w.writerow([item, f"prompt {item}", "k", 1, "0", "entity", "whole", f"entity - whole ({item})", f"{item}?"])
    (root / "imagereward").mkdir()
    (root / "imagereward" / "benchmark-prompts.json").write_text(
        json.dumps([{"id": f"ir{i}", "prompt": f"prompt {i}"} for i in range(4)]))
    (root / "mjhq30k").mkdir()
    (root / "mjhq30k" / "meta_data.json").write_text(json.dumps(
        {k: {"category": "art", "prompt": f"prompt {k}"} for k in ("z", "a", "m", "b")}))
    return root


def test_real_files_give_their_first_items_in_file_order(tmp_path):
    data = _fake_data(tmp_path / "data")
    sources = write_prompt_subsets(tmp_path / "subset", data)
    ids = {name: [it.id for it in get_benchmark(name).load(tmp_path / "subset", verify=False).items]
           for name in ("geneval", "dpg", "imagereward", "mjhq30k")}
    assert ids == {"geneval": ["00000", "00001", "00002"], "dpg": ["a", "b"], "imagereward": ["ir0", "ir1"],
                   "mjhq30k": ["z", "a", "m"]}
    geneval = get_benchmark("geneval").load(tmp_path / "subset", verify=False)
    assert [it.prompt for it in geneval.items] == ["a photo of a cat", "a photo of a dog", "a photo of a cup"]
    with open(tmp_path / "subset" / "dpg_bench" / "dpg_bench.csv", newline="") as fh:
        assert [r["item_id"] for r in csv.DictReader(fh)] == ["a", "b"]  # only the chosen items' questions
    assert all(str(data) in s for s in sources.values())


def test_without_real_files_the_embedded_copies_are_used(tmp_path):
    sources = write_prompt_subsets(tmp_path / "subset", None)
    mjhq = get_benchmark("mjhq30k").load(tmp_path / "subset", verify=False)
    assert [it.id for it in mjhq.items] == list(MJHQ_META) and all("embedded" in s for s in sources.values())


def test_embedded_items_are_the_first_official_ones():
    """Against the official files' first items, committed by scripts/extract_official_heads.py with their pins."""
    heads = json.loads((Path(__file__).parent / "data" / "official_prompt_heads.json").read_text())
    assert heads["geneval_lines"][:len(GENEVAL_LINES)] == list(GENEVAL_LINES)
    assert heads["imagereward_entries"][:len(IMAGEREWARD_ENTRIES)] == list(IMAGEREWARD_ENTRIES)
    assert {item: heads["dpg_prompts"][item] for item in DPG_PROMPTS} == DPG_PROMPTS
