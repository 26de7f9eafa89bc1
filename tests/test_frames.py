"""Reports as pandas DataFrames: a results bundle, a comparison and a table report load with one call
(`sana_eval.results.to_frame`), and their numbers are the JSON's numbers; per-prompt deltas of a comparison."""
from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from metrics.base import Result
from sana_eval.compare.deltas import compare_results, per_prompt_deltas
from sana_eval.compare.report import compare_command
from sana_eval.reproduce.run import reproduce
from sana_eval.results import ResultsError, per_item_frame, read_results, to_frame, write_results

CLIP_PROTO = {"metric": "clip_score", "model": "ViT-L-14", "versions": {"torch": "2.4", "numpy": "2.0"}}
RECON_PROTO = {"metric": "recon", "resolution": 256}


def clip(values, protocol=CLIP_PROTO) -> Result:
    per_item = {f"p{i:03d}": {"clip_score": float(v)} for i, v in enumerate(values)}
    return Result("clip_score", protocol, {"clip_score": float(np.mean(values))}, per_item, {"device": "cpu"})


def recon(lpips, psnr) -> Result:
    per_item = {f"p{i:03d}": {"lpips": float(a), "psnr": float(b)} for i, (a, b) in enumerate(zip(lpips, psnr))}
    return Result("recon", RECON_PROTO, {"lpips": float(np.mean(lpips)), "psnr": float(np.mean(psnr))}, per_item)


def geneval(fractions: dict[str, list[float]]) -> Result:
    """GenEval's convention (sana_eval.compare.deltas): per-prompt fraction of 4 images, per-tag and overall."""
    per_item, aggregate, n = {}, {}, 0
    for tag, values in fractions.items():
        for v in values:
            per_item[f"{n:05d}"] = {f"geneval/{tag}": v, "n_images": 4}
            n += 1
        aggregate[f"geneval/{tag}"] = float(np.mean(values))
    aggregate["geneval"] = float(np.mean([aggregate[f"geneval/{t}"] for t in fractions]))
    return Result("geneval", {"metric": "geneval", "detector": "transformers"}, aggregate, per_item)


@pytest.fixture
def bundle(tmp_path):
    rng = np.random.default_rng(0)
    results = [clip(rng.normal(28, 2, 12)), recon(rng.uniform(0.1, 0.3, 12), rng.normal(30, 1, 12)),
               geneval({"counting": [0.25, 0.5, 1.0], "colors": [1.0, 0.75]}),
               Result("fid", {"metric": "fid", "size": 299}, {"fid": 6.13})]
    return write_results(results, tmp_path / "a.json"), results


def test_bundle_frame_has_one_row_per_aggregate_key_with_the_files_numbers(bundle):
    path, results = bundle
    frame = to_frame(path)
    assert len(frame) == sum(len(r.aggregate) for r in results) == 7
    assert set(frame["checkpoint"]) == {str(path)}
    stored = json.loads(path.read_text())["results"]
    for entry in stored:
        rows = frame[frame["metric"] == entry["metric"]].set_index("key")
        assert rows["value"].to_dict() == entry["aggregate"]          # bit-equal, not approx
        assert set(rows["n_items"]) == {len(entry["per_item"])}
    by_key = frame.set_index("key")
    assert by_key.loc["geneval/counting", "category"] == "counting" and by_key.loc["geneval", "category"] == "overall"
    assert by_key.loc["lpips", "higher_is_better"] == False and by_key.loc["psnr", "higher_is_better"] == True  # noqa: E712
    # The protocol, nested keys flattened; a metric without a key leaves it empty.
    assert by_key.loc["clip_score", "protocol.versions.torch"] == "2.4"
    assert by_key.loc["fid", "protocol.size"] == 299 and pd.isna(by_key.loc["fid", "protocol.model"])
    # The same frame from the bundle in memory, named as asked.
    again = to_frame(read_results(path), checkpoint=str(path))
    pd.testing.assert_frame_equal(frame[sorted(frame.columns)], again[sorted(again.columns)])


def test_per_item_frame_round_trips_to_the_bundles_per_item_values(bundle):
    path, results = bundle
    frame = per_item_frame(path, checkpoint="A")
    assert len(frame) == sum(len(v) for r in results for v in r.per_item.values())
    for r in results:
        part = frame[frame["metric"] == r.metric]
        back = {item: dict(zip(g["key"], g["value"])) for item, g in part.groupby("item")}
        assert back == {k: dict(v) for k, v in r.per_item.items()}
    # pandas does the aggregation: the per-prompt mean is the bundle's aggregate.
    means = frame[frame["metric"] != "geneval"].groupby(["metric", "key"])["value"].mean()
    for (metric, key), value in means.items():
        assert value == pytest.approx(next(r for r in results if r.metric == metric).aggregate[key], rel=1e-12)


def test_comparison_frame_equals_the_comparison_and_its_json(tmp_path, bundle):
    path_a, results = bundle
    rng = np.random.default_rng(1)
    b = [clip(rng.normal(28.5, 2, 12)), recon(rng.uniform(0.1, 0.3, 12), rng.normal(30, 1, 12)),
         geneval({"counting": [0.5, 0.5, 1.0], "colors": [1.0, 1.0]}), Result("fid", {"metric": "fid", "size": 299},
                                                                              {"fid": 5.0})]
    path_b = write_results(b, tmp_path / "b.json")
    assert compare_command(path_a, path_b, [], tmp_path / "cmp", n_boot=100, seed=3) == 0
    frame = to_frame(tmp_path / "cmp" / "compare.json")
    comparison = compare_results(read_results(path_a), read_results(path_b), n_boot=100, seed=3,
                                 names=(str(path_a), str(path_b)))
    assert frame["key"].tolist() == [r.key for r in comparison.rows]
    for row, r in zip(frame.itertuples(), comparison.rows):
        assert (row.a, row.b, row.delta) == (r.a, r.b, r.b - r.a)
        if r.ci is None:
            assert np.isnan(row.ci_low) and np.isnan(row.ci_high) and r.key == "fid"
        else:
            assert (row.ci_low, row.ci_high) == r.ci
        assert (row.verdict, row.higher_is_better, row.run_b) == (r.verdict, r.higher_is_better, str(path_b))
    assert set(frame["n_boot"]) == {100} and set(frame["seed"]) == {3}
    pd.testing.assert_frame_equal(frame, to_frame(comparison.to_dict()))


def test_per_prompt_deltas_are_b_minus_a_and_average_to_the_comparisons_delta():
    rng = np.random.default_rng(2)
    lp_a, lp_b = rng.uniform(0.1, 0.3, 20), rng.uniform(0.1, 0.3, 20)
    ps = rng.normal(30, 1, 20)
    a = {"clip_score": clip(rng.normal(28, 2, 20)), "recon": recon(lp_a, ps)}
    b = {"clip_score": clip(rng.normal(29, 2, 20)), "recon": recon(lp_b, ps + 1.0)}
    deltas = per_prompt_deltas(a, b)
    assert len(deltas) == 60 and set(deltas["key"]) == {"clip_score", "lpips", "psnr"}
    lpips = deltas[deltas["key"] == "lpips"].set_index("item")
    assert lpips.loc["p007", "delta"] == lp_b[7] - lp_a[7]
    assert lpips.loc["p007", "gain"] == lp_a[7] - lp_b[7]         # lower is better: a smaller LPIPS is a gain
    assert deltas[deltas["key"] == "psnr"]["gain"].tolist() == pytest.approx([1.0] * 20)
    comparison = compare_results(a, b, n_boot=20)
    for r in comparison.rows:
        assert deltas[deltas["key"] == r.key]["delta"].mean() == pytest.approx(r.delta, rel=1e-9)


def test_geneval_deltas_keep_the_tag_and_leave_out_the_image_count():
    a = {"geneval": geneval({"counting": [0.25, 0.5], "colors": [1.0]})}
    b = {"geneval": geneval({"counting": [0.75, 0.5], "colors": [0.5]})}
    deltas = per_prompt_deltas(a, b).set_index("item")
    assert deltas["key"].to_dict() == {"00000": "geneval/counting", "00001": "geneval/counting",
                                       "00002": "geneval/colors"}
    assert deltas["delta"].to_dict() == {"00000": 0.5, "00001": 0.0, "00002": -0.5}


def test_table_report_frame_is_the_json_and_agrees_with_the_csv(tmp_path):
    reproduce(["table6"], tmp_path, version="v1")
    frame = to_frame(tmp_path / "v1" / "table6.json")
    report = json.loads((tmp_path / "v1" / "table6.json").read_text())
    assert len(frame) == len(report["results"]) == 10
    assert set(frame["table"]) == {"table6"} and set(frame["version"]) == {"v1"}
    assert frame.drop(columns=["table", "version"]).to_dict("records") == report["results"]
    with open(tmp_path / "v1" / "table6.csv", newline="") as fh:
        lines = list(csv.DictReader(fh))
    assert [(x["row"], x["column"]) for x in lines] == list(zip(frame["row"], frame["column"]))
    assert [float(x["reproduced"]) for x in lines] == frame["reproduced"].tolist()
    # pandas answers the questions a reader asks of a report, e.g. the cells per verdict.
    assert frame.groupby("verdict").size().to_dict() == {k: v for k, v in report["summary"].items() if v}


def test_an_unreadable_file_is_one_line_naming_it(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ResultsError, match=r"x\.json: not a readable report"):
        to_frame(tmp_path / "x.json")
