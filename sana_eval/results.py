"""Results bundles: the JSON files `sana-eval score` writes and `sana-eval compare` reads; and every JSON report of
ours (bundle, comparison, table report) as a pandas DataFrame (`to_frame`, `per_item_frame`).

Accepted forms: {"schema": "sana-eval/results/1", "results": [Result, ...]} (what `write_results` writes), a bare
list of Results, a single Result, or {name: Result}. One Result per metric name.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from metrics import dpg, geneval
from metrics.base import MetricError, Result
from metrics.clip_score import CLIPScore
from metrics.fid import FID
from metrics.image_reward import ImageRewardScore
from metrics.recon import Reconstruction
from sana_eval.io import write_text

RESULTS_SCHEMA = "sana-eval/results/1"
# The other two reports `to_frame` reads; their writers (compare/deltas.py, reproduce/report.py) take them from here.
COMPARE_SCHEMA = "sana-eval/compare/1"
TABLE_REPORT_SCHEMA = "sana-eval/table-report/1"
OVERALL = "overall"                   # the category of an aggregate key without "/<category>" ("fid", "geneval")
# Result.metric -> its direction as the metric declares it (`Metric.higher_is_better`; GenEval and DPG are functions
# and declare it as module constants). Read from the metrics rather than stored in results files, so files written
# before the metrics declared it compare like new ones.
DIRECTIONS: dict[str, bool | Mapping[str, bool]] = {
    **{m.name: m.higher_is_better for m in (FID, CLIPScore, ImageRewardScore, Reconstruction)},
    geneval.NAME: geneval.HIGHER_IS_BETTER, dpg.NAME: dpg.HIGHER_IS_BETTER}


class ResultsError(MetricError):
    """A results file that cannot be read; the message is one line naming the file and entry."""


def read_results(path: str | Path) -> dict[str, Result]:
    """metric name -> Result from any bundle form (module docstring); FID file paths made absolute."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ResultsError(f"{path}: not a readable results file ({err})") from None
    if isinstance(data, dict) and "metric" in data:
        entries = [data]
    elif isinstance(data, dict) and "results" in data:
        if data.get("schema", RESULTS_SCHEMA) != RESULTS_SCHEMA:
            raise ResultsError(f"{path}: schema {data['schema']!r}, expected {RESULTS_SCHEMA!r}")
        entries = data["results"]
    elif isinstance(data, dict):
        entries = list(data.values())
    else:
        entries = data
    if not isinstance(entries, list) or not entries:
        raise ResultsError(f"{path}: expected a Result object, a list of them, or a results bundle")
    out: dict[str, Result] = {}
    for i, entry in enumerate(entries):
        try:
            result = Result.from_json(entry)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ResultsError(f"{path}: entry {i} is not a Result ({type(err).__name__}: {err})") from None
        if result.metric in out:
            raise ResultsError(f"{path}: metric {result.metric!r} appears twice")
        out[result.metric] = _absolute_paths(result, path.parent)
    return out


def write_results(results: Sequence[Result], path: str | Path) -> Path:
    """The canonical bundle, written atomically."""
    payload = {"schema": RESULTS_SCHEMA, "results": [r.to_json() for r in results]}
    return write_text(Path(path), json.dumps(payload, indent=1, allow_nan=False) + "\n")


def _absolute_paths(result: Result, base: Path) -> Result:
    prov = dict(result.provenance)
    for key in ("features", "reference_stats"):
        if isinstance(prov.get(key), str) and not Path(prov[key]).is_absolute():
            prov[key] = str(base / prov[key])
    return Result(result.metric, result.protocol, result.aggregate, result.per_item, prov)


def higher_is_better(metric: str, key: str) -> bool | None:
    """Whether a larger aggregate `key` of `metric` is better; a key follows its stem ("fid/animals" as "fid").

    None: the metric, or the key stem of a metric with several directions, declares none.
    """
    declared = DIRECTIONS.get(metric)
    if isinstance(declared, Mapping):
        declared = declared.get(key.split("/", 1)[0])
    return declared


# ----------------------------------------------------------------------------------------------------------------
# DataFrames: one row per metric / category / checkpoint; nested protocol keys become "protocol.<a>.<b>" columns.

Bundle = str | Path | Mapping[str, Result] | Sequence[Result]


def _category(key: str) -> str:
    return key.split("/", 1)[1] if "/" in key else OVERALL


def _bundle(source: Bundle, checkpoint: str | None) -> tuple[str, Mapping[str, Result]]:
    if isinstance(source, str | Path):
        return checkpoint or str(source), read_results(source)
    if isinstance(source, Mapping):
        return checkpoint or "results", source
    return checkpoint or "results", {r.metric: r for r in source}


def _results_frame(name: str, results: Mapping[str, Result]) -> pd.DataFrame:
    rows = [{"checkpoint": name, "metric": r.metric, "key": key, "category": _category(key), "value": value,
             "higher_is_better": higher_is_better(r.metric, key), "n_items": len(r.per_item),
             "protocol": dict(r.protocol)}
            for r in results.values() for key, value in r.aggregate.items()]
    return pd.json_normalize(rows, sep=".")


def _comparison_frame(payload: Mapping[str, Any]) -> pd.DataFrame:
    rows = [{"run_a": payload["run_a"], "run_b": payload["run_b"], "metric": r["metric"], "key": r["key"],
             "category": _category(r["key"]), "a": r["a"], "b": r["b"], "delta": r["delta"],
             "ci_low": None if r["ci"] is None else r["ci"][0], "ci_high": None if r["ci"] is None else r["ci"][1],
             "higher_is_better": r["higher_is_better"], "verdict": r["verdict"], "method": r["method"],
             "confidence": payload["confidence"], "n_boot": payload["n_boot"], "seed": payload["seed"]}
            for r in payload["rows"]]
    return pd.DataFrame(rows, columns=["run_a", "run_b", "metric", "key", "category", "a", "b", "delta", "ci_low",
                                       "ci_high", "higher_is_better", "verdict", "method", "confidence", "n_boot",
                                       "seed"]).astype({"a": float, "b": float, "delta": float, "ci_low": float,
                                                        "ci_high": float})


def _table_frame(payload: Mapping[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(payload["results"])
    frame.insert(0, "table", payload["table"]["id"])
    frame.insert(1, "version", payload["version"])
    return frame


def to_frame(source: Bundle | Mapping[str, Any], checkpoint: str | None = None) -> pd.DataFrame:
    """Any report of ours as one DataFrame.

    - a results bundle (a path, or `read_results`' mapping, or Results): one row per aggregate key: checkpoint,
      metric, key, category ("counting" of "geneval/counting"; "overall" for "geneval"), value, higher_is_better,
      n_items, and the protocol flattened into "protocol.<key>" columns. `checkpoint` names it (default: the path).
    - a comparison (`compare.json`, or `Comparison.to_dict()`): one row per compared key: run_a, run_b, metric,
      key, category, a, b, delta = b - a, ci_low, ci_high, higher_is_better, verdict, method, and the bootstrap's
      confidence, n_boot, seed.
    - a table report (`tableN.json`): one row per cell, the JSON's fields as columns, with table and version.
    """
    if isinstance(source, str | Path):
        try:
            payload = json.loads(Path(source).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ResultsError(f"{source}: not a readable report ({err})") from None
    else:
        payload = source
    schema = payload.get("schema") if isinstance(payload, Mapping) else None
    if schema == COMPARE_SCHEMA or (isinstance(payload, Mapping) and "rows" in payload and "run_a" in payload):
        return _comparison_frame(payload)
    if schema == TABLE_REPORT_SCHEMA:
        return _table_frame(payload)
    return _results_frame(*_bundle(source, checkpoint))


def per_item_frame(source: Bundle, checkpoint: str | None = None) -> pd.DataFrame:
    """A bundle's per-item numbers, long: checkpoint, metric, item, key, value (one row per number)."""
    name, results = _bundle(source, checkpoint)
    rows = [{"checkpoint": name, "metric": r.metric, "item": item, "key": key, "value": float(value)}
            for r in results.values() for item, values in r.per_item.items() for key, value in values.items()]
    return pd.DataFrame(rows, columns=["checkpoint", "metric", "item", "key", "value"])
