"""Compare two checkpoints' results (docs/architecture.md §1: results A and B -> deltas with CIs, an exit code for CI).

Results bundle (what `read_results` accepts; `write_results` writes the first form):
  {"schema": "sana-eval/results/1", "results": [<Result JSON>, ...]}, a bare list of Result JSON objects,
  one Result JSON object (it has a "metric" key), or {name: <Result JSON>, ...}. One Result per metric name.

Per-item convention (how `Result.per_item` must look for a confidence interval to exist):
  per_item[prompt_id] holds one *prompt's* values (all its images), in the aggregate's units.
  - mean metrics (clip_score, dpg, image_reward, recon's psnr/ssim/lpips): per_item[id][key] for every
    aggregate key that is a mean over prompts; aggregate[key] == unweighted mean of per_item[*][key]
    (DPG: the prompt's score x 100; ImageReward: the mean of its 10 rewards).
  - geneval (docs/protocols.md §3.5): per_item[id] == {"geneval/<tag>": fraction of the prompt's images judged
    correct, "n_images": k}; one tag key per prompt. aggregate["geneval/<tag>"] == image-weighted mean over that
    tag's prompts; aggregate["geneval"] == unweighted mean of the per-tag scores present.
  - fid: per_item is empty; provenance["features"] names an .npy file (N, D) of the generated images'
    Inception features, provenance["reference_stats"] an .npz with "mu" and "sigma" (metrics.fid.save_stats),
    both relative to the results file's folder or absolute; "features_sha256" and
    provenance["reference_stats_sha256"]["all"] are checked when present. Only aggregate["fid"] gets an interval.
  Every recomputed aggregate must equal the file's aggregate, or the comparison is refused.

Intervals: percentile bootstrap of B - A. Per-prompt metrics resample the shared prompt ids with replacement,
the same draw for both sides (paired); GenEval resamples within each tag, because a resample without one of
the six tags has no defined overall score and the tag sizes are fixed by the benchmark. FID resamples the
feature rows of each side independently against the fixed reference statistics.

`--fail-if-worse KEY:T` fails when the *point* delta shows B worse than A by more than T (in KEY's units);
with `--require-significant` it also needs the interval to exclude zero, so a CI run raises fewer false alarms.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from metrics.base import ProtocolMismatchError, Result, sha256_file
from sana_eval.compare.bootstrap import bootstrap, bootstrap_frechet, frechet_distance_eigh, percentile_interval
from sana_eval.results import ResultsError, higher_is_better, per_item_frame, read_results

GENEVAL_WEIGHT = "n_images"
# Recomputed aggregates must match the file's to this relative tolerance (FID: a different sqrtm route).
_REL_TOL, _FID_REL_TOL = 1e-9, 1e-3


class CompareError(ResultsError):
    """Inputs that cannot be compared; the message is one line naming the file, metric, key or item."""


def first_protocol_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """Dotted path of the first key (sorted order) whose value differs, or None when equal."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in a or key not in b:
                return where
            found = first_protocol_difference(a[key], b[key], where)
            if found:
                return found
        return None
    return None if a == b else (prefix or "<protocol>")


# ----------------------------------------------------------------------------------------------------------------
# One row per compared aggregate key.

@dataclass(frozen=True)
class Delta:
    metric: str
    key: str
    a: float
    b: float
    higher_is_better: bool
    ci: tuple[float, float] | None      # percentile interval of B - A; None: no resampling unit known
    method: str

    @property
    def delta(self) -> float:
        return self.b - self.a

    @property
    def regression(self) -> float:
        """How much worse B is than A, in the key's units (negative: B is better)."""
        return -self.delta if self.higher_is_better else self.delta

    @property
    def verdict(self) -> str:
        if self.ci is None:
            return "no CI"
        if self.ci[0] > 0 or self.ci[1] < 0:
            return "better" if (self.ci[0] > 0) == self.higher_is_better else "worse"
        return "no significant change"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ci": None if self.ci is None else list(self.ci),
                "a": _finite(self.a), "b": _finite(self.b), "delta": _finite(self.delta),
                "verdict": self.verdict}


@dataclass(frozen=True)
class Comparison:
    run_a: str
    run_b: str
    n_boot: int
    seed: int
    confidence: float
    rows: tuple[Delta, ...]
    notes: tuple[str, ...] = ()

    def row(self, key: str) -> Delta:
        for r in self.rows:
            if r.key == key:
                return r
        raise CompareError(f"no compared key {key!r}; compared: {', '.join(r.key for r in self.rows) or 'none'}")

    def to_dict(self) -> dict[str, Any]:
        return {"run_a": self.run_a, "run_b": self.run_b, "n_boot": self.n_boot, "seed": self.seed,
                "confidence": self.confidence, "rows": [r.to_dict() for r in self.rows], "notes": list(self.notes)}


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _direction(metric: str, key: str) -> bool:
    direction = higher_is_better(metric, key)
    if direction is None:
        raise CompareError(f"{metric}: aggregate key {key!r}: direction unknown (declare `higher_is_better` on the "
                           "metric; sana_eval.results.DIRECTIONS lists the known ones)")
    return direction


def _rng(seed: int, metric: str, side: int = 0) -> np.random.Generator:
    # Stable per metric (crc32, not the salted hash()), so adding a metric does not move another's interval.
    return np.random.default_rng([seed, zlib.crc32(metric.encode()), side])


def _check_point(metric: str, key: str, side: str, stored: float, recomputed: float, tol: float) -> None:
    if not abs(stored - recomputed) <= tol * max(1.0, abs(stored)):
        raise CompareError(f"{side} {metric}: aggregate {key!r} is {stored!r} but its per-item data give "
                           f"{recomputed!r}; the per-item convention (sana_eval.compare.deltas) is not met")


# ----------------------------------------------------------------------------------------------------------------
# Per-prompt metrics: paired bootstrap over the shared prompt ids.

def _number(result: Result, item: str, key: str) -> float:
    try:
        value = float(result.per_item[item][key])
    except (KeyError, TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise CompareError(f"{result.metric}: per_item[{item!r}][{key!r}] is missing or not a finite number")
    return value


def _shared_ids(ra: Result, rb: Result) -> list[str]:
    only = sorted(set(ra.per_item) ^ set(rb.per_item))
    if only:
        side = "A" if only[0] in ra.per_item else "B"
        raise CompareError(f"{ra.metric}: item {only[0]!r} is only in run {side} ({len(only)} items differ); "
                           "a paired comparison needs the same prompts")
    return sorted(ra.per_item)


def _geneval_tag(result: Result, item: str) -> str:
    tags = [k for k in result.per_item[item] if k.startswith("geneval/")]
    if len(tags) != 1:
        raise CompareError(f"geneval: per_item[{item!r}] needs exactly one 'geneval/<tag>' key, has {tags}")
    return tags[0]


def _item_plan(ra: Result, rb: Result, ids: list[str]):
    """(keys, block bounds, per-side aggregator idx -> (k, len(keys)), description) for the metric's rule."""
    if ra.metric == "geneval":
        tag_of = {}
        for i in ids:
            tag_of[i] = _geneval_tag(ra, i)
            if _geneval_tag(rb, i) != tag_of[i]:
                raise CompareError(f"geneval: item {i!r} is {tag_of[i]} in A but {_geneval_tag(rb, i)} in B")
        tags = sorted(set(tag_of.values()))
        ids = sorted(ids, key=lambda i: (tags.index(tag_of[i]), i))
        sizes = [sum(tag_of[i] == t for i in ids) for t in tags]
        starts = np.cumsum([0] + sizes)
        bounds = [(int(s), int(e)) for s, e in zip(starts[:-1], starts[1:])]

        def aggregator(r: Result):
            v = np.array([_number(r, i, tag_of[i]) for i in ids])
            w = np.array([_number(r, i, GENEVAL_WEIGHT) if GENEVAL_WEIGHT in r.per_item[i] else 1.0 for i in ids])
            if (w <= 0).any():
                raise CompareError(f"geneval: per_item[{ids[int(np.argmin(w))]!r}][{GENEVAL_WEIGHT!r}] must be > 0")

            def agg(idx: np.ndarray) -> np.ndarray:
                per_tag = np.stack([(w * v)[idx[:, s:e]].sum(1) / w[idx[:, s:e]].sum(1) for s, e in bounds], 1)
                return np.concatenate([per_tag.mean(1, keepdims=True), per_tag], 1)  # (k, 1 + tags)
            return agg
        return (["geneval", *tags], bounds, aggregator,
                f"paired bootstrap over {len(ids)} prompts, stratified by tag")

    keys = [k for k in ra.aggregate if k in rb.aggregate
            and all(k in ra.per_item[i] and k in rb.per_item[i] for i in ids)]

    def aggregator(r: Result):
        v = np.array([[_number(r, i, k) for k in keys] for i in ids]).reshape(len(ids), len(keys))
        return lambda idx: v[idx].mean(1)  # (k, keys)
    return keys, [(0, len(ids))], aggregator, f"paired bootstrap over {len(ids)} prompts"


def _per_item_rows(ra: Result, rb: Result, n_boot: int, seed: int, confidence: float) -> dict[str, Delta]:
    if not ra.per_item and not rb.per_item:
        return {}
    ids = _shared_ids(ra, rb)
    keys, bounds, aggregator, method = _item_plan(ra, rb, ids)
    if not keys:
        return {}
    agg_a, agg_b = aggregator(ra), aggregator(rb)
    every = np.arange(bounds[-1][1])[None]
    for side, r, agg in (("A", ra, agg_a), ("B", rb, agg_b)):
        for key, value in zip(keys, agg(every)[0]):
            if key not in r.aggregate:
                raise CompareError(f"{side} {r.metric}: per-item data define {key!r} but the aggregate lacks it")
            _check_point(r.metric, key, side, r.aggregate[key], float(value), _REL_TOL)
    reps = bootstrap(lambda idx: agg_b(idx) - agg_a(idx), bounds, n_boot, _rng(seed, ra.metric))
    return {key: Delta(ra.metric, key, ra.aggregate[key], rb.aggregate[key], _direction(ra.metric, key),
                       percentile_interval(reps[:, j], confidence), method) for j, key in enumerate(keys)}


# ----------------------------------------------------------------------------------------------------------------
# FID: bootstrap over images, each side on its own.

def _load_fid_side(r: Result, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    prov = r.provenance
    feats_path, stats_path = Path(prov["features"]), Path(prov["reference_stats"])
    for path, want in ((feats_path, prov.get("features_sha256")),
                       (stats_path, (prov.get("reference_stats_sha256") or {}).get("all"))):
        if not path.is_file():
            raise CompareError(f"{side} fid: {path} not found")
        if want and sha256_file(path) != want:
            raise CompareError(f"{side} fid: {path} has another sha256 than its result records")
    feats = np.load(feats_path, allow_pickle=False)
    with np.load(stats_path, allow_pickle=False) as z:
        if "mu" not in z or "sigma" not in z:
            raise CompareError(f"{side} fid: {stats_path} lacks 'mu' or 'sigma'")
        mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
    if feats.ndim != 2 or feats.shape[1] != mu.shape[0]:
        raise CompareError(f"{side} fid: features {feats_path} have shape {feats.shape}, expected (N, {mu.shape[0]})")
    return feats.astype(np.float64), mu, sigma


def _fid_row(ra: Result, rb: Result, n_boot: int, seed: int, confidence: float, device: str | None
             ) -> Delta | None:
    if any("features" not in r.provenance or "reference_stats" not in r.provenance for r in (ra, rb)):
        return None
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    ref = [(r.provenance.get("reference_stats_sha256") or {}).get("all") for r in (ra, rb)]
    if all(ref) and ref[0] != ref[1]:
        raise CompareError(f"fid: A and B were measured against different reference statistics "
                           f"({ref[0][:12]} vs {ref[1][:12]})")
    reps, sizes = [], []
    for side, r in enumerate((ra, rb)):
        feats, mu, sigma = _load_fid_side(r, "AB"[side])
        point = frechet_distance_eigh(feats.mean(0), np.cov(feats, rowvar=False), mu, sigma)
        _check_point("fid", "fid", "AB"[side], r.aggregate["fid"], point, _FID_REL_TOL)
        reps.append(bootstrap_frechet(feats, mu, sigma, n_boot, _rng(seed, "fid", side), device))
        sizes.append(len(feats))
    return Delta("fid", "fid", ra.aggregate["fid"], rb.aggregate["fid"], _direction("fid", "fid"),
                 percentile_interval(reps[1] - reps[0], confidence),
                 f"bootstrap over images ({sizes[0]} A, {sizes[1]} B), each side independently")


# ----------------------------------------------------------------------------------------------------------------

def compare_results(results_a: Mapping[str, Result], results_b: Mapping[str, Result], *, n_boot: int = 1000,
                    seed: int = 0, confidence: float = 0.95, device: str | None = None,
                    names: tuple[str, str] = ("A", "B")) -> Comparison:
    """Every aggregate key of every metric present on both sides: A, B, B - A and its interval.

    `device` runs the FID bootstrap (torch; default cuda when available). Each resample of each side costs an
    N x D x D covariance and a D x D eigenproblem: 6.5 s on 2 CPU threads at N = 3000, D = 2048, so use a GPU
    or a smaller n_boot for full-size FID.
    """
    notes, rows = [], []
    for metric in [m for m in results_b if m not in results_a]:
        notes.append(f"{metric}: only in B, not compared")
    for metric, ra in results_a.items():
        if metric not in results_b:
            notes.append(f"{metric}: only in A, not compared")
            continue
        rb = results_b[metric]
        diff = first_protocol_difference(dict(ra.protocol), dict(rb.protocol))
        if diff is not None:
            raise ProtocolMismatchError(f"{metric}: protocols differ at {diff!r}; numbers made differently "
                                        "are not compared")
        with_ci = _per_item_rows(ra, rb, n_boot, seed, confidence)
        if metric == "fid" and "fid" in ra.aggregate and "fid" in rb.aggregate:
            fid = _fid_row(ra, rb, n_boot, seed, confidence, device)
            if fid is not None:
                with_ci["fid"] = fid
        for key in ra.aggregate:
            if key not in rb.aggregate:
                notes.append(f"{metric}: aggregate {key!r} only in A")
            elif key in with_ci:
                rows.append(with_ci[key])
            else:
                reason = ("the results carry no features (provenance 'features')" if metric == "fid" and key == "fid"
                          else "not a per-prompt mean")
                rows.append(Delta(metric, key, ra.aggregate[key], rb.aggregate[key], _direction(metric, key), None,
                                  f"point only: {reason}"))
        notes += [f"{metric}: aggregate {k!r} only in B" for k in rb.aggregate if k not in ra.aggregate]
    return Comparison(names[0], names[1], n_boot, seed, confidence, tuple(rows), tuple(notes))


def compare(run_a: Path, run_b: Path, *, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
            device: str | None = None) -> Comparison:
    """Compare two results files (bundle forms in the module docstring)."""
    return compare_results(read_results(run_a), read_results(run_b), n_boot=n_boot, seed=seed,
                           confidence=confidence, device=device, names=(str(run_a), str(run_b)))


def per_prompt_deltas(results_a: Mapping[str, Result], results_b: Mapping[str, Result]) -> pd.DataFrame:
    """One row per (metric, item, aggregate key) present on both sides: a, b, delta = b - a, and gain (delta signed so
    that > 0 means B is better). Only keys that are aggregate keys of the metric (a GenEval prompt's tag, not its
    image count), so the rows are the per-prompt terms of the intervals above."""
    a = per_item_frame(results_a, "a")
    b = per_item_frame(results_b, "b")
    keys = {(m, k) for m in results_a.keys() & results_b.keys()
            for k in results_a[m].aggregate.keys() & results_b[m].aggregate.keys()}
    frame = a.merge(b, on=["metric", "item", "key"], suffixes=("_a", "_b"))
    frame = frame[[(m, k) in keys for m, k in zip(frame["metric"], frame["key"])]]
    frame = frame.rename(columns={"value_a": "a", "value_b": "b"}).drop(columns=["checkpoint_a", "checkpoint_b"])
    frame["delta"] = frame["b"] - frame["a"]
    sign = [1.0 if higher_is_better(m, k) is not False else -1.0 for m, k in zip(frame["metric"], frame["key"])]
    frame["gain"] = frame["delta"] * sign
    return frame.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# Regression gate for CI.

@dataclass(frozen=True)
class Check:
    key: str
    threshold: float
    regression: float
    significant: bool | None            # None when --require-significant was not asked
    failed: bool

    def describe(self) -> str:
        worse = (f"B is worse by {self.regression:.4g}" if self.regression > 0 else
                 f"B is better by {-self.regression:.4g}" if self.regression < 0 else
                 "no change" if self.regression == 0 else "the difference is NaN")
        sig = "" if self.significant is None else (", interval excludes 0" if self.significant
                                                   else ", interval includes 0")
        return f"{'FAIL' if self.failed else 'ok'} {self.key}: {worse}; threshold {self.threshold:g}{sig}"


def parse_fail_rule(text: str) -> tuple[str, float]:
    """'geneval:0.02' -> ('geneval', 0.02); the threshold is in the key's own units."""
    key, sep, value = text.rpartition(":")
    try:
        threshold = float(value)
    except ValueError:
        threshold = math.nan
    if not sep or not key or not math.isfinite(threshold) or threshold < 0:
        raise CompareError(f"--fail-if-worse {text!r}: expected KEY:THRESHOLD with THRESHOLD >= 0, "
                           "e.g. geneval:0.02")
    return key, threshold


def check_regressions(comparison: Comparison, rules: Sequence[str], require_significant: bool = False
                      ) -> list[Check]:
    checks = []
    for key, threshold in map(parse_fail_rule, rules):
        row = comparison.row(key)
        significant = None
        if require_significant:
            if row.ci is None:
                raise CompareError(f"--require-significant: {key!r} has no interval ({row.method})")
            significant = row.verdict == "worse"
        # Written so that a NaN regression counts as over: a metric that came out NaN must not pass a gate.
        over = not row.regression <= threshold
        checks.append(Check(key, threshold, row.regression, significant, over and significant is not False))
    return checks
