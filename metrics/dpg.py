"""DPG-Bench (docs/protocols.md §4): ELLA's `compute_dpg_bench.py` rules over any VQA backend, in two named modes.

`official` reproduces ELLA's scorer with its known bugs (§4.3): the first CSV data row is skipped (an item whose
questions depend on it raises KeyError and is dropped), category scores come from the last tile's scores before
dependency zeroing, and failed images leave the denominator. `fixed` (default) keeps every row, takes category
scores over all tiles after dependency zeroing, and scores missing/unreadable images 0, listing them.
Both: a question scores 1 iff the answer is exactly 'yes'; in CSV row order a question is zeroed if any parent
(0 = none) currently scores 0; tile = mean over the item's questions; item = mean over tiles; overall x 100.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from metrics.base import (
    ONE_PROCESS,
    MetricError,
    Result,
    WorkShare,
    atomic_path,
    image_key,
    package_versions,
    write_json_atomic,
)
from metrics.images import IMAGE_EXTENSIONS
from metrics.results_cache import ResultsCache
from metrics.vqa.base import VQA

Mode = Literal["official", "fixed"]
Grid = Literal["exact", "sana-padded"]
CSV_COLUMNS = ("item_id", "text", "keywords", "proposition_id", "dependency", "category_broad",
               "category_detailed", "tuple", "question_natural_language")
ELLA_REPO, ELLA_COMMIT, CSV_PATH = ("TencentQQGYLab/ELLA", "3c228f1dc6c4d3cad0a47493816151a419f14db3",
                                    "dpg_bench/dpg_bench.csv")
ELLA_BLOB = "98457fc9901943f51ff9a30367250fc292533bed"
KNOWN_BLOBS = {ELLA_BLOB: f"{ELLA_REPO}@{ELLA_COMMIT[:7]}",
               "434a263f4bc7c41d97dcfdd88f2d0abee1a34f93":
                   "NVlabs/Sana tools/metrics/dpg_bench copy (content diff unknown)"}
SANA_GRID_PADDING = 2  # torchvision make_grid default border left in SANA's grids (§4.4)
# The metric is a function, not a `Metric` class, so its name and direction (`Metric.higher_is_better`) live here.
NAME, HIGHER_IS_BETTER = "dpg", True


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# ----------------------------------------------------------------------------------------------
# The question file.

@dataclass(frozen=True)
class Question:
    qid: int
    parents: tuple[int, ...]   # 0 = no parent
    category: str              # L2, `tuple.split('(')[0].strip()`, e.g. "entity - whole"
    text: str
    line: int                  # CSV line number (header = 1)


@dataclass(frozen=True)
class QuestionFile:
    path: str
    blob_sha1: str
    items: dict[str, tuple[Question, ...]]   # item id -> questions in CSV row order
    first_row: tuple[str, int]               # (item id, qid) of the first data row (ELLA skips it)

    @property
    def dangling(self) -> list[str]:
        """`item:qid->parent` for parents the item lacks (fixed mode ignores them; official raises KeyError)."""
        return [f"{item}:{q.qid}->{p}" for item, qs in self.items.items() for q in qs
                for p in q.parents if p != 0 and p not in {x.qid for x in qs}]


def find_csv(path: str | os.PathLike | None = None) -> Path:
    """An explicit file, else $SANA_EVAL_DATA/dpg_bench/, else the cache, else a download of the pinned blob."""
    if path is not None:
        if not Path(path).is_file():
            raise MetricError(f"DPG-Bench question file {path} not found")
        return Path(path)
    if os.environ.get("SANA_EVAL_DATA"):
        cand = Path(os.environ["SANA_EVAL_DATA"]) / "dpg_bench" / "dpg_bench.csv"
        if cand.is_file():
            return cand
    cache = Path(os.environ.get("SANA_EVAL_CACHE") or Path.home() / ".cache" / "sana-eval")
    target = cache / "dpg_bench" / ELLA_COMMIT / "dpg_bench.csv"
    if target.is_file():
        return target
    url = f"https://raw.githubusercontent.com/{ELLA_REPO}/{ELLA_COMMIT}/{CSV_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            data = resp.read()
    except (urllib.error.URLError, OSError) as err:
        raise MetricError(f"dpg_bench.csv not on disk and not downloadable from {url} "
                          f"({getattr(err, 'reason', err)}); pass --dpg-csv FILE (git blob {ELLA_BLOB})") from None
    if git_blob_sha1(data) != ELLA_BLOB:
        raise MetricError(f"{url}: git blob sha1 {git_blob_sha1(data)}, expected {ELLA_BLOB}")
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


def load_questions(path: str | os.PathLike, *, verify: bool = True) -> QuestionFile:
    """Parse dpg_bench.csv; with `verify`, its git blob sha1 must be a known official one."""
    path = Path(path)
    data = path.read_bytes()
    blob = git_blob_sha1(data)
    if verify and blob not in KNOWN_BLOBS:
        raise MetricError(f"{path}: git blob sha1 {blob} is not the official dpg_bench.csv ({ELLA_BLOB})")
    reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise MetricError(f"{path}: missing column {missing[0]!r} (expected {', '.join(CSV_COLUMNS)})")
    items: dict[str, list[Question]] = {}
    last, first = None, None
    for n, row in enumerate(reader, start=2):
        try:
            q = Question(int(row["proposition_id"]), tuple(int(d) for d in row["dependency"].split(",")),
                         row["tuple"].split("(")[0].strip(), row["question_natural_language"], n)
        except (ValueError, AttributeError):
            raise MetricError(f"{path} line {n}: bad proposition_id/dependency "
                              f"({row['proposition_id']!r}, {row['dependency']!r})") from None
        item = row["item_id"]
        if item != last and item in items:
            raise MetricError(f"{path} line {n}: rows of item {item!r} are not contiguous")
        if any(p.qid == q.qid for p in items.get(item, [])):
            raise MetricError(f"{path} line {n}: item {item!r} has proposition {q.qid} twice")
        items.setdefault(item, []).append(q)
        first = first or (item, q.qid)
        last = item
    if first is None:
        raise MetricError(f"{path}: no questions")
    return QuestionFile(str(path), blob, {k: tuple(v) for k, v in items.items()}, first)


def questions_for(qfile: QuestionFile, mode: Mode) -> dict[str, tuple[Question, ...]]:
    """The questions each mode scores: `official` drops the first data row (ELLA's `if i == 0: continue`)."""
    if mode == "fixed":
        return dict(qfile.items)
    item, qid = qfile.first_row
    out = dict(qfile.items)
    out[item] = tuple(q for q in out[item] if q.qid != qid)
    if not out[item]:
        del out[item]
    return out


# ----------------------------------------------------------------------------------------------
# Rules (§4.2).

def apply_dependencies(raw: dict[int, float], questions: Sequence[Question], *, strict: bool) -> dict[int, float]:
    """Zero a question if any parent (ignoring 0) scores 0 *now*, visiting questions in CSV row order.

    strict: a parent the item does not have raises KeyError (ELLA); otherwise it is ignored.
    """
    scores = dict(raw)
    for q in questions:
        for parent in q.parents:
            if parent == 0 or (not strict and parent not in scores):
                continue
            if scores[parent] == 0:
                scores[q.qid] = 0.0
                break
    return scores


@dataclass(frozen=True)
class ItemScore:
    score: float
    tile_scores: tuple[float, ...]
    category_scores: tuple[tuple[str, float], ...]   # (L2 category, question score) pairs feeding the L2/L1 means


def score_item(answers: Sequence[dict[int, str]], questions: Sequence[Question], mode: Mode) -> ItemScore:
    """One item from its per-tile answers; `official` may raise KeyError, which drops the item (§4.3.1)."""
    tiles, cats = [], []
    for k, tile in enumerate(answers):
        raw = {q.qid: float(tile[q.qid] == "yes") for q in questions}
        scores = apply_dependencies(raw, questions, strict=mode == "official")
        tiles.append(sum(scores.values()) / len(scores))
        if mode == "fixed":
            cats += [(q.category, scores[q.qid]) for q in questions]
        elif k == len(answers) - 1:
            cats = [(q.category, raw[q.qid]) for q in questions]  # last tile, before dependencies (§4.3.2)
    return ItemScore(sum(tiles) / len(tiles), tuple(tiles), tuple(cats))


def category_means(items: Sequence[ItemScore]) -> tuple[dict[str, float], dict[str, float]]:
    """(L1, L2) category means x 100 over all (question, tile) scores; L1 = the part before '-'."""
    l2: dict[str, list[float]] = defaultdict(list)
    for it in items:
        for cat, s in it.category_scores:
            l2[cat].append(s)
    l1: dict[str, list[float]] = defaultdict(list)
    for cat, v in l2.items():
        l1[cat.split("-")[0].strip()].extend(v)
    return ({k: float(np.mean(v)) * 100 for k, v in l1.items()},
            {k: float(np.mean(v)) * 100 for k, v in sorted(l2.items())})


# ----------------------------------------------------------------------------------------------
# Grid images (§4.1, §4.4).

def crop_boxes(resolution: int, pic_num: int = 4) -> list[tuple[int, int, int, int]]:
    r = resolution
    return [(0, 0, r, r), (r, 0, 2 * r, r), (0, r, r, 2 * r), (r, r, 2 * r, 2 * r)][:pic_num]


def grid_resolution(size: tuple[int, int], grid: Grid, resolution: int | None, where: str) -> int:
    """The tile size R, checked: an `exact` grid is 2R x 2R; a `sana-padded` one (2R + 6) x (2R + 6)."""
    pad = 3 * SANA_GRID_PADDING if grid == "sana-padded" else 0
    w, h = size
    r = resolution if resolution is not None else (w - pad) // 2
    if (w, h) != (2 * r + pad, 2 * r + pad):
        variant = "SANA's padded 2x2 grid" if pad else "an unpadded 2x2 grid"
        raise MetricError(f"{where}: {w}x{h} is not {variant} of {r}-px tiles ({2 * r + pad}x{2 * r + pad})"
                          + ("" if pad else "; for SANA's make_grid output declare grid='sana-padded'"))
    return r


def read_tiles(path: Path, grid: Grid, resolution: int | None, pic_num: int) -> list[Image.Image]:
    """The scored tiles; `sana-padded` grids are cropped at the same boxes, as SANA's run did (offset by the border)."""
    with Image.open(path) as im:
        image = im.convert("RGB")
    r = grid_resolution(image.size, grid, resolution, str(path))
    return [image.crop(b) for b in crop_boxes(r, pic_num)]


# ----------------------------------------------------------------------------------------------
# Entry point.

def score(images: str | os.PathLike, vqa: VQA, *, mode: Mode = "fixed", resolution: int | None = None,
          csv_path: str | os.PathLike | None = None, pic_num: int = 4, grid: Grid = "exact",
          out_file: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
          verify_csv: bool = True, items: Sequence[str] | None = None, share: WorkShare = ONE_PROCESS) -> Result:
    """Score a folder of `<item_id>.<ext>` 2x2 grids. Answers are cached per (image, tile, question) for the VQA
    protocol, so both modes share one cache and a rerun skips done images. Writes a per-item JSON report
    (default `<images>_dpg_<mode>.json`)."""
    if mode not in ("official", "fixed") or grid not in ("exact", "sana-padded") or not 1 <= pic_num <= 4:
        raise MetricError(f"DPG-Bench: bad mode/grid/pic_num {mode!r}/{grid!r}/{pic_num}")
    root = Path(images)
    if not root.is_dir():
        raise MetricError(f"DPG-Bench image folder {root} does not exist")
    qfile = load_questions(find_csv(csv_path), verify=verify_csv)
    all_q, scored_q = qfile.items, questions_for(qfile, mode)
    answer_proto = {"metric": "dpg_answers", "vqa": vqa.protocol, "csv_blob_sha1": qfile.blob_sha1,
                    "resolution": resolution, "pic_num": pic_num, "grid": grid}
    proto = {**answer_proto, "metric": "dpg", "mode": mode,
             "rules": f"{ELLA_REPO}@{ELLA_COMMIT[:7]} dpg_bench/compute_dpg_bench.py"
                      + (" incl. its bugs (docs/protocols.md §4.3)" if mode == "official" else ", bugs fixed"),
             # a question file of one's own (verify_csv=False) is named so; the official one adds no key
             **({} if qfile.blob_sha1 in KNOWN_BLOBS else {"csv": "not the official dpg_bench.csv"})}
    cache = ResultsCache(Path(cache_dir), "dpg_answers", answer_proto) if cache_dir is not None else None
    share.require_cache(cache, "DPG-Bench")
    files = _files_to_score(root, all_q, mode)
    if items is not None:  # a subset of the prompts (the harness's --subset): only those are scored
        unknown = sorted(set(items) - set(all_q))
        if unknown:
            raise MetricError(f"DPG-Bench: subset item {unknown[0]!r} is not in the question file {qfile.path}")
        chosen = set(items)
        files = [(item, path) for item, path in files if item in chosen]
    if share.split:  # this process's answers into the shared cache; the loop below then reads every item's
        for n, (item, path) in enumerate(tqdm(files, desc="DPG-Bench VQA", unit="grid", dynamic_ncols=True)):
            if share.owns(n) and item in scored_q and path is not None:
                with contextlib.suppress(OSError):  # recorded as a failure by the loop below, in every process
                    _answers(path, all_q[item], vqa, cache, grid, resolution, pic_num)
        cache.flush()
        share.wait("DPG-Bench VQA")
        cache.reload()
    scores: dict[str, ItemScore] = {}
    failures: dict[str, str] = {}
    for item, path in tqdm(files, desc=f"DPG-Bench ({mode})", unit="grid", dynamic_ncols=True):
        if item not in scored_q or path is None:
            failures[item] = "missing image" if path is None else "no questions for this file name"
            continue
        try:
            answers = _answers(path, all_q[item], vqa, cache, grid, resolution, pic_num)
        except OSError as err:
            failures[item] = f"unreadable image: {err}"
            continue
        try:
            scores[item] = score_item(answers, scored_q[item], mode)
        except KeyError as err:  # official only: a parent the item lacks (the skipped first row)
            failures[item] = f"KeyError {err} (dependency on a question the official scorer skipped)"
    if cache is not None:
        cache.flush()
    if mode == "fixed":  # failures are scored 0 on every question of every tile
        for item in failures:
            qs = scored_q.get(item, ())
            scores[item] = ItemScore(0.0, (0.0,) * pic_num, tuple((q.category, 0.0) for q in qs) * pic_num)
    if not scores:
        raise MetricError(f"DPG-Bench: no image in {root} could be scored ({len(failures)} failures)")
    l1, l2 = category_means(list(scores.values()))
    overall = float(np.mean([s.score for s in scores.values()])) * 100
    aggregate = {"dpg": overall, **{f"dpg/{k}": v for k, v in l1.items()}, **{f"dpg/l2/{k}": v for k, v in l2.items()}}
    per_item = {k: {"dpg": v.score * 100, **{f"tile{i}": t * 100 for i, t in enumerate(v.tile_scores)}}
                for k, v in sorted(scores.items())}
    out = Path(out_file) if out_file is not None else root.parent / f"{root.name}_dpg_{mode}.json"
    provenance = {"images": str(root.resolve()), "results_file": str(out), "csv": qfile.path,
                  "csv_source": KNOWN_BLOBS.get(qfile.blob_sha1, "unpinned"),
                  "n_items_csv": len(all_q), "subset": None if items is None else len(files),
                  "dangling_dependencies": qfile.dangling,
                  "n_scored": len(scores) - (len(failures) if mode == "fixed" else 0),
                  "failures": failures, "failures_counted_as_zero": mode == "fixed",
                  "versions": package_versions("torch", "transformers", "pillow", "numpy")}
    result = Result(NAME, proto, aggregate, per_item, provenance)
    if share.rank == 0:
        write_json_atomic(out, result.to_json())
    return result


def _files_to_score(root: Path, questions: dict[str, Any], mode: Mode) -> list[tuple[str, Path | None]]:
    """official: every file in the folder, item = name up to the first '.'; fixed: one image per CSV item."""
    by_item: dict[str, list[Path]] = defaultdict(list)
    for p in sorted(root.iterdir()):
        if p.is_file() and (mode == "official" or p.suffix.lower() in IMAGE_EXTENSIONS):
            by_item[p.name.split(".")[0]].append(p)
    dup = next((v for v in by_item.values() if len(v) > 1), None)
    if dup:
        raise MetricError(f"{root}: several files for item {dup[0].name.split('.')[0]!r}: "
                          f"{', '.join(p.name for p in dup)}")
    if mode == "official":
        return [(item, v[0]) for item, v in by_item.items()]
    return [(item, by_item[item][0] if item in by_item else None) for item in questions]


def _answers(path: Path, questions: Sequence[Question], vqa: VQA, cache: ResultsCache | None, grid: Grid,
             resolution: int | None, pic_num: int) -> list[dict[int, str]]:
    key = image_key(path)
    hit = cache.get(key) if cache is not None else None
    if hit is not None:
        return [{int(k): v for k, v in tile.items()} for tile in hit]
    tiles = read_tiles(path, grid, resolution, pic_num)
    answers = [{q.qid: vqa.answer(tile, q.text) for q in questions} for tile in tiles]
    if cache is not None:
        cache.put(key, [{str(k): v for k, v in a.items()} for a in answers])
    return answers
