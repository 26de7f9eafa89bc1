"""GenEval (docs/protocols.md §3): the per-image correctness rules of djghosh13/geneval `evaluate_images.py`
(§3.3-3.4) and the summary of `summary_scores.py` (§3.5), over any Detector / ColorClassifier backend.

Rows are written in the official `results.jsonl` schema. Deviations from upstream, all on purpose: JPEGs and
missing folders/images are errors (upstream skips them silently, §3.1); a two-relation reason string lists
relations in a fixed order (upstream joins a Python set, whose order varies between runs).

Two protocols (docs/protocols.md §3.7): `official` applies each prompt's metadata as GenEval wrote it; `sana`
applies it as SANA's `scripts/inference_geneval.py` passed it on, through a `datasets` builder that keeps only
filename, prompt, tag and include, so counting prompts lose their `exclude` clause ("at least N", not "exactly N").
"""
from __future__ import annotations

import ast
import json
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from metrics.base import ONE_PROCESS, MetricError, Result, WorkShare, atomic_path, image_key, package_versions
from metrics.detectors.base import COLORS, OBJECT_NAMES, ColorClassifier, Detection, Detections, Detector
from metrics.results_cache import ResultsCache

TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
N_PROMPTS, N_IMAGES = 553, 4
# The metric is a function, not a `Metric` class, so its name and direction (`Metric.higher_is_better`) live here.
NAME, HIGHER_IS_BETTER = "geneval", True
RULES_SOURCE = ("djghosh13/geneval@af4902f24d3ca90ebbb446dd9891a59e0f82725f "
                "evaluation/{evaluate_images,summary_scores}.py")
PROTOCOLS = {
    "official": "each prompt's metadata as in GenEval's evaluation_metadata.jsonl (counting: exactly N)",
    "sana": "metadata as SANA's scripts/inference_geneval.py writes it: only filename, prompt, tag and include "
            "reach metadata.jsonl, so counting prompts lose `exclude` (at least N) (docs/protocols.md §3.7)",
}
# The keys of SANA's `datasets` builder schema (scripts/inference_geneval.py, GenEval._info); `filename` is the
# one it adds, every other key of the official metadata is dropped.
SANA_KEYS = ("filename", "prompt", "tag", "include")


@dataclass(frozen=True)
class GenEvalOptions:
    """evaluate_images.py `--options` defaults (docs/protocols.md §3.3)."""
    threshold: float = 0.3            # confidence cut for every tag but counting
    counting_threshold: float = 0.9   # for all classes of a `counting` image
    max_objects: int = 16             # per class, after sorting by score
    max_overlap: float = 1.0          # IoU filter; 1.0 disables it
    position_threshold: float = 0.1   # margin, as a fraction of the two boxes' summed size


# ----------------------------------------------------------------------------------------------
# Detection post-processing (§3.3).

def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    # Upstream's inclusive-pixel convention (+1); used only when max_overlap < 1.
    def area(x1, y1, x2, y2):
        return max(x2 - x1 + 1, 0) * max(y2 - y1 + 1, 0)
    inter = area(max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    union = area(*a[:4]) + area(*b[:4]) - inter
    return inter / union if union else 0


def select_detections(raw: Detections, tag: str, options: GenEvalOptions = GenEvalOptions()) -> Detections:
    """Per class: score > threshold, sorted by score (desc), first `max_objects`; empty classes dropped.

    Ties keep upstream's order: `np.argsort(...)[::-1]` on ≤16 entries is a stable sort, reversed. Sorting and the
    cut are in float32, as upstream compares mmdet's float32 boxes with the Python threshold (NumPy casts the
    scalar to float32): a score of exactly float32(0.3) is dropped there, so it is here (docs/protocols.md §3.3).
    """
    unknown = sorted(set(raw) - set(OBJECT_NAMES))
    if unknown:
        raise MetricError(f"detector returned unknown class {unknown[0]!r} (not in GenEval object_names.txt)")
    cut = np.float32(options.counting_threshold if tag == "counting" else options.threshold)
    out: Detections = {}
    for name in OBJECT_NAMES:
        dets = raw.get(name, [])
        scores = np.array([d.score for d in dets], dtype=np.float32)
        order = np.argsort(scores, kind="stable")[::-1]
        order = [i for i in order.tolist() if scores[i] > cut][:options.max_objects]
        kept = []
        while order:
            best = order.pop(0)
            kept.append(dets[best])
            if options.max_overlap < 1:
                order = [i for i in order if _iou(dets[best].box, dets[i].box) < options.max_overlap]
        if kept:
            out[name] = kept
    return out


# ----------------------------------------------------------------------------------------------
# Correctness of one image (§3.4).

def relative_position(a: Detection, b: Detection, margin: float = 0.1) -> tuple[str, ...]:
    """Relations of A to B from box centres, after shrinking the offset by margin x (size A + size B) per axis.

    Image y points down, so "above" is dy < -0.5. No relation when the shrunk offset vanishes (< 1e-3).
    """
    boxes = np.array([a.box, b.box], dtype=np.float64).reshape(2, 2, 2)  # (obj, corner, xy)
    center_a, center_b = boxes.mean(axis=1)
    dim_a, dim_b = np.abs(boxes[:, 1] - boxes[:, 0])
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - margin * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return ()
    dx, dy = revised / np.linalg.norm(offset)
    return tuple(rel for rel, hit in (("left of", dx < -0.5), ("right of", dx > 0.5),
                                      ("above", dy < -0.5), ("below", dy > 0.5)) if hit)


def evaluate(image: Image.Image, objects: Detections, metadata: Mapping[str, Any], colors: ColorClassifier,
             options: GenEvalOptions = GenEvalOptions()) -> tuple[bool, str]:
    """(correct, reason): include clauses ANDed on the top-`count` objects, exclude clauses ORed."""
    correct, reason, groups = True, [], []
    for req in metadata.get("include", []):
        name, count = req["class"], req["count"]
        matched = True
        found = objects.get(name, [])[:count]
        if len(found) < count:
            correct = matched = False
            reason.append(f"expected {name}>={count}, found {len(found)}")
        else:
            if "color" in req:
                got = colors.classify(image, found, name)
                if got.count(req["color"]) < count:
                    correct = matched = False
                    reason.append(f"expected {req['color']} {name}>={count}, found {got.count(req['color'])} "
                                  f"{req['color']}; and "
                                  + ", ".join(f"{got.count(c)} {c}" for c in COLORS if c in got))
            if "position" in req and matched:
                rel, target = req["position"]
                if groups[target] is None:
                    correct = matched = False
                    reason.append(f"no target for {name} to be {rel}")
                else:
                    for obj in found:
                        for other in groups[target]:
                            rels = relative_position(obj, other, options.position_threshold)
                            if rel not in rels:
                                correct = matched = False
                                reason.append(f"expected {name} {rel} target, found {' and '.join(rels)} target")
                                break
                        if not matched:
                            break
        groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        name = req["class"]
        if len(objects.get(name, [])) >= req["count"]:
            correct = False
            reason.append(f"expected {name}<{req['count']}, found {len(objects[name])}")
    return correct, "\n".join(reason)


def evaluate_image(path: Path, metadata: Mapping[str, Any], detector: Detector, colors: ColorClassifier,
                   options: GenEvalOptions = GenEvalOptions()) -> dict[str, Any]:
    """One `results.jsonl` row (official schema; `details` boxes are [x1, y1, x2, y2, score])."""
    try:
        with Image.open(path) as im:
            image = ImageOps.exif_transpose(im).convert("RGB")
    except OSError as err:  # PIL's "image file is truncated" names no file
        raise MetricError(f"cannot read image {path}: {err}") from None
    image.filename = str(path)
    objects = select_detections(detector.detect(image), metadata["tag"], options)
    ok, reason = evaluate(image, objects, metadata, colors, options)
    return {"filename": str(path), "tag": metadata["tag"], "prompt": metadata["prompt"], "correct": bool(ok),
            "reason": reason, "metadata": json.dumps(metadata),
            "details": json.dumps({k: [d.row() for d in v] for k, v in objects.items()})}


# ----------------------------------------------------------------------------------------------
# Summary (§3.5).

def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Task accuracy = mean over that tag's images; overall = unweighted mean over the tags present.

    A prompt (grouped by its metadata string, as upstream) is correct if any of its images is.
    """
    if not rows:
        raise MetricError("GenEval summary: no results")
    by_tag: dict[str, list[bool]] = {}
    by_prompt: dict[str, bool] = {}
    for r in rows:
        by_tag.setdefault(r["tag"], []).append(bool(r["correct"]))
        by_prompt[r["metadata"]] = by_prompt.get(r["metadata"], False) or bool(r["correct"])
    tasks = {tag: float(np.mean(v)) for tag, v in by_tag.items()}
    return {"overall": float(np.mean(list(tasks.values()))), "tasks": tasks,
            "correct_images": float(np.mean([bool(r["correct"]) for r in rows])),
            "correct_prompts": float(np.mean(list(by_prompt.values()))),
            "n_images": len(rows), "n_prompts": len(by_prompt),
            "counts": {tag: [int(sum(v)), len(v)] for tag, v in by_tag.items()},
            "missing_tasks": [t for t in TASKS if t not in tasks]}


# ----------------------------------------------------------------------------------------------
# Input contract (§3.1, §7.4): <NNNNN>/metadata.jsonl + <NNNNN>/samples/<dddd>.png.

@dataclass(frozen=True)
class PromptFolder:
    name: str
    metadata: dict[str, Any]
    images: tuple[Path, ...]
    sana_form: bool = False    # written by SANA's inference_geneval.py (see `is_sana_form`)


def sana_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """`metadata` as SANA's builder passes it on: the keys of its schema only (docs/protocols.md §3.7)."""
    return {k: metadata[k] for k in SANA_KEYS if k in metadata}


def is_sana_form(metadata: Mapping[str, Any]) -> bool:
    """Metadata that SANA's script wrote: its `filename` key, or a counting prompt without its `exclude` clause."""
    return "filename" in metadata or (metadata.get("tag") == "counting" and "exclude" not in metadata)


def _parse_include(value: Any, meta_file: Path) -> list:
    # SANA's builder stores `include` as str(list); a Python literal, not JSON (single quotes).
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise MetricError(f"{meta_file}: 'include' is a string but not a Python list literal") from None
    if not isinstance(value, list) or not all(isinstance(r, dict) and {"class", "count"} <= set(r) for r in value):
        raise MetricError(f"{meta_file}: 'include' must be a list of {{'class', 'count', ...}} objects")
    return value


def read_folder_layout(root: str | os.PathLike, *, n_prompts: int = N_PROMPTS, n_images: int = N_IMAGES,
                       limit: int | None = None, indices: Sequence[int] | None = None,
                       expected_metadata: Sequence[Mapping[str, Any]] | None = None) -> list[PromptFolder]:
    """The prompt folders to score (the first `limit`, or those of the prompts at `indices`), checked; any deviation
    is a one-line MetricError naming the folder/file."""
    root = Path(root)
    if not root.is_dir():
        raise MetricError(f"GenEval image folder {root} does not exist")
    if indices is None:
        indices = range(n_prompts if limit is None else min(limit, n_prompts))
    elif limit is not None:
        raise MetricError("GenEval: pass a limit or a subset of prompts, not both")
    present = {p.name for p in root.iterdir() if p.is_dir() and p.name.isdigit()}
    names = [f"{i:05d}" for i in indices]
    missing = [n for n in names if n not in present]
    if missing:
        raise MetricError(f"{root}: prompt folder {missing[0]} missing ({len(missing)} of the {len(names)} expected "
                          f"folders missing)")
    if len(names) == n_prompts:
        extra = sorted(present - set(names))
        if extra:
            raise MetricError(f"{root}: unexpected prompt folder {extra[0]} (GenEval has {n_prompts} prompts)")
    out = []
    for i, name in zip(indices, names):
        folder = root / name
        meta_file = folder / "metadata.jsonl"
        try:
            metadata = json.loads(meta_file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise MetricError(f"{meta_file}: unreadable GenEval metadata ({err})") from None
        if not isinstance(metadata, dict) or not {"tag", "include", "prompt"} <= set(metadata):
            raise MetricError(f"{meta_file}: expected one JSON object with 'tag', 'include' and 'prompt'")
        if metadata["tag"] not in TASKS:
            raise MetricError(f"{meta_file}: unknown tag {metadata['tag']!r}")
        sana_form = isinstance(metadata["include"], str) or is_sana_form(metadata)
        metadata = {**metadata, "include": _parse_include(metadata["include"], meta_file)}
        if expected_metadata is not None:
            # A SANA-written folder is checked against what SANA's builder keeps of the official line.
            ours, theirs = metadata, dict(expected_metadata[i])
            if sana_form:
                ours, theirs = ({k: m[k] for k in SANA_KEYS[1:] if k in m} for m in (ours, theirs))
            if ours != theirs:
                raise MetricError(f"{meta_file}: differs from line {i + 1} of the official evaluation_metadata.jsonl")
        out.append(PromptFolder(name, metadata, _sample_files(folder, n_images), sana_form))
    return out


def _sample_files(folder: Path, n_images: int) -> tuple[Path, ...]:
    samples = folder / "samples"
    if not samples.is_dir():
        raise MetricError(f"{folder}: no samples/ folder")
    pngs = []
    for p in sorted(samples.iterdir()):
        if p.suffix.lower() in (".jpg", ".jpeg"):
            raise MetricError(f"{p}: JPEG sample; GenEval scores PNG only (the official evaluator would skip it)")
        if p.is_file() and re.fullmatch(r"\d+\.png", p.name):
            pngs.append(p)
    if len(pngs) != n_images:
        raise MetricError(f"{samples}: {len(pngs)} <digits>.png images, expected {n_images}")
    return tuple(pngs)


# ----------------------------------------------------------------------------------------------
# Entry point.

def protocol(detector: Detector, colors: ColorClassifier, options: GenEvalOptions = GenEvalOptions(),
             geneval_protocol: str = "official") -> dict:
    return {"metric": "geneval", "rules": RULES_SOURCE, "geneval_protocol": geneval_protocol,
            "geneval_protocol_rule": PROTOCOLS[geneval_protocol], "options": asdict(options),
            "detector": detector.protocol, "color_classifier": colors.protocol,
            "summary": "overall = unweighted mean of the task accuracies (per image)"}


def resolve_protocol(requested: str, folders: Sequence[PromptFolder]) -> tuple[str, str | None]:
    """(protocol to score with, why it differs from the requested one or None). A folder written by SANA's
    script has lost its `exclude` clauses, so only the `sana` protocol can score it."""
    if requested not in PROTOCOLS:
        raise MetricError(f"unknown GenEval protocol {requested!r}; choose one of {', '.join(PROTOCOLS)}")
    sana_written = [f.name for f in folders if f.sana_form]
    if requested == "official" and sana_written:
        more = f" (and {len(sana_written) - 1} more)" if len(sana_written) > 1 else ""
        return "sana", (f"prompt folder {sana_written[0]}{more} holds metadata written by SANA's "
                        "inference_geneval.py (no 'exclude'); scored with the 'sana' protocol it implies")
    return requested, None


def score(images: str | os.PathLike, detector: Detector, colors: ColorClassifier, *,
          options: GenEvalOptions = GenEvalOptions(), out_file: str | os.PathLike | None = None,
          cache_dir: str | os.PathLike | None = None, limit: int | None = None,
          expected_metadata: Sequence[Mapping[str, Any]] | None = None, geneval_protocol: str = "official",
          indices: Sequence[int] | None = None, share: WorkShare = ONE_PROCESS) -> Result:
    """Score a GenEval image folder; writes `results.jsonl` rows (default `<images>_geneval.jsonl`, like SANA).

    `limit`: score only the first `limit` prompt folders; the result is flagged incomplete. `cache_dir`: rows
    are cached per image (key: path, size, mtime) and protocol, so an interrupted run resumes.
    `geneval_protocol`: `official` or `sana` (PROTOCOLS); folders written by SANA's script are scored with `sana`
    whatever is asked, with a warning, since their metadata no longer holds the official clauses.
    """
    root = Path(images)
    folders = read_folder_layout(root, limit=limit, indices=indices, expected_metadata=expected_metadata)
    used, why = resolve_protocol(geneval_protocol, folders)
    if why is not None:
        warnings.warn(f"GenEval: {root}: {why}", stacklevel=2)
    proto = {**protocol(detector, colors, options, used),
             "geneval_protocol_source": "requested" if why is None else f"implied by the folder: {why}"}
    cache = ResultsCache(Path(cache_dir), "geneval", proto) if cache_dir is not None else None
    share.require_cache(cache, "GenEval")
    work = [(f, p) for f in folders for p in f.images]
    keys = [image_key(path) for _, path in work]
    rows = [cache.get(key) if cache is not None else None for key in keys]
    mine = [i for i, row in enumerate(rows) if row is None and share.owns(i)]
    for i in tqdm(mine, desc="GenEval", unit="img", dynamic_ncols=True):
        folder, path = work[i]
        metadata = sana_metadata(folder.metadata) if used == "sana" else folder.metadata
        rows[i] = evaluate_image(path, metadata, detector, colors, options)
        if cache is not None:
            cache.put(keys[i], rows[i])
    if cache is not None:
        cache.flush()
    if share.split:
        rows = share.gather(cache, keys, "GenEval")
    summary = summarize(rows)
    out_file = Path(out_file) if out_file is not None else root.parent / f"{root.name}_geneval.jsonl"
    if share.rank == 0:
        write_results_jsonl(out_file, rows)
    complete = len(folders) >= N_PROMPTS
    if not complete:
        chosen = f"--limit {limit}" if limit is not None else "a subset"
        warnings.warn(f"GenEval: {chosen}: scored {len(folders)} of {N_PROMPTS} prompts; "
                      "not comparable with full-run numbers", stacklevel=2)
    aggregate = {"geneval": summary["overall"], **{f"geneval/{t}": v for t, v in summary["tasks"].items()},
                 "geneval/correct_images": summary["correct_images"],
                 "geneval/correct_prompts": summary["correct_prompts"]}
    # Per prompt folder: its tag's accuracy over its images, so a paired bootstrap over prompts can rebuild the
    # unweighted mean of task accuracies (sana_eval.compare.deltas).
    by_prompt: dict[str, list[dict]] = {}
    for r in rows:
        by_prompt.setdefault(Path(r["filename"]).parent.parent.name, []).append(r)
    per_item = {folder: {f"geneval/{group[0]['tag']}": sum(float(r["correct"]) for r in group) / len(group),
                         "n_images": len(group)}
                for folder, group in by_prompt.items()}
    provenance = {"images": str(root.resolve()), "results_file": str(out_file), "complete": complete,
                  "limit": limit, "subset": None if indices is None else len(folders),
                  "n_images": summary["n_images"], "n_prompts": summary["n_prompts"],
                  "counts": summary["counts"], "missing_tasks": summary["missing_tasks"],
                  "versions": package_versions("torch", "transformers", "open_clip_torch", "pillow", "numpy")}
    return Result(NAME, proto, aggregate, per_item, provenance)


def write_results_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(dict(r)) + "\n" for r in rows))


def read_results_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a results.jsonl (ours or upstream's); `summarize` them to re-make the summary."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise MetricError(f"{path} line {n}: bad JSON ({err.msg})") from None
    return rows
