"""Results bundles: the JSON files `sana-eval score` writes and `sana-eval compare` reads.

Accepted forms: {"schema": "sana-eval/results/1", "results": [Result, ...]} (what `write_results` writes), a bare
list of Results, a single Result, or {name: Result}. One Result per metric name.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from metrics import dpg, geneval
from metrics.base import MetricError, Result
from metrics.clip_score import CLIPScore
from metrics.fid import FID
from metrics.image_reward import ImageRewardScore
from metrics.recon import Reconstruction
from sana_eval.io import write_text

RESULTS_SCHEMA = "sana-eval/results/1"
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
