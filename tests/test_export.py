"""`sana-eval export --to datasets`: a benchmark's prompts and results bundles' per-item numbers as a
datasets.DatasetDict on disk, read back with datasets.load_from_disk and compared with the sources."""
from __future__ import annotations

import json

import datasets
import numpy as np

from metrics.base import Result, protocol_id, sha256_file
from sana_eval.cli.main import main
from sana_eval.results import write_results

GENEVAL = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {"tag": "counting", "include": [{"class": "cow", "count": 2}], "prompt": "a photo of two cows"},
]
PROTO = {"metric": "clip_score", "model": "ViT-L-14"}


def bundle(path, shift: float):
    values = np.arange(5, dtype=float) + shift
    per_item = {f"{i:05d}": {"clip_score": float(v)} for i, v in enumerate(values)}
    return write_results([Result("clip_score", PROTO, {"clip_score": float(values.mean())}, per_item)], path)


def test_prompts_and_scores_round_trip_through_load_from_disk(tmp_path, capsys):
    src = tmp_path / "evaluation_metadata.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in GENEVAL) + "\n")
    a, b = bundle(tmp_path / "a.json", 0.0), bundle(tmp_path / "b.json", 0.5)
    out = tmp_path / "ds"
    assert main(["export", "--to", "datasets", str(out), "--benchmark", "geneval", "--data", str(src),
                 "--no-verify", "--results", str(a), str(b)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    loaded = datasets.load_from_disk(str(out))
    assert set(loaded) == {"prompts", "scores"}
    prompts = loaded["prompts"].to_pandas()
    assert prompts["id"].tolist() == ["00000", "00001"] and prompts["prompt"].tolist() == [g["prompt"] for g in GENEVAL]
    assert set(prompts["benchmark"]) == {"geneval"} and set(prompts["n_images"]) == {4}
    assert [json.loads(m)["tag"] for m in prompts["metadata"]] == ["single_object", "counting"]
    scores = loaded["scores"].to_pandas()
    assert len(scores) == 10 and set(scores["checkpoint"]) == {str(a), str(b)}
    for path, shift in ((a, 0.0), (b, 0.5)):
        mine = scores[scores["checkpoint"] == str(path)]
        assert mine["value"].tolist() == [i + shift for i in range(5)]
        assert mine["item"].tolist() == [f"{i:05d}" for i in range(5)]
    record = json.loads((out / "export.json").read_text())
    assert set(scores["protocol_id"]) == {protocol_id(PROTO)} and record["scores"]["protocols"] == {
        protocol_id(PROTO): PROTO}
    assert [r["sha256"] for r in record["scores"]["results"]] == [sha256_file(a), sha256_file(b)]
    assert record["prompts"]["sha256"] == sha256_file(src) and record["provenance"]["utc_time"]


def test_a_non_empty_folder_or_nothing_to_export_is_refused(tmp_path, capsys):
    a = bundle(tmp_path / "a.json", 0.0)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("mine")
    assert main(["export", "--to", "datasets", str(tmp_path / "ds"), "--results", str(a)]) == 2
    assert "ds: exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "ds").iterdir()] == ["keep.txt"]
    assert main(["export", "--to", "datasets", str(tmp_path / "new")]) == 2
    assert "nothing to export" in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []     # no temporary folder left
