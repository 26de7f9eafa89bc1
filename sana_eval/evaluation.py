"""`sana-eval evaluate`: one checkpoint's whole quality row (paper Tables 7 and 11: FID and CLIP score on MJHQ-30K,
GenEval, DPG-Bench, ImageReward): every benchmark's images, then every score, on every process torchrun started.

Layout of `out` (docs/generation.md §7): `<benchmark>/` the images as `sana-eval generate` writes them, `cache/` the
scorers' per-image features and answers (how processes exchange their parts, and how a killed run resumes),
`results.json` the bundle `sana-eval compare` reads, `row.md` the row in the tables' format, `provenance.json`.
Rerunning the same command resumes: finished images are kept, cached features reused.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from metrics.base import Result, protocol_id
from sana_eval import folder_lock
from sana_eval.distributed import SINGLE_PROCESS, World
from sana_eval.generation import sana
from sana_eval.generation.prompt_sets import get_benchmark
from sana_eval.io import write_text
from sana_eval.provenance import collect
from sana_eval.results import write_results
from sana_eval.scoring.dispatch import check_options, score_benchmark

ROW_BENCHMARKS = ("mjhq30k", "geneval", "dpg", "imagereward")
# The scoring options `evaluate` passes on, per benchmark (sana_eval/scoring/dispatch.py names them).
SCORING_OPTIONS = {
    "mjhq30k": ("mjhq", "fid_size", "fid_weights", "clip_weights", "allow_few_images"),
    "geneval": ("detector", "detector_weights", "clip_weights", "geneval_protocol", "data"),
    "dpg": ("vqa", "vqa_weights", "dpg_mode", "dpg_csv", "no_verify_csv", "data"),
    "imagereward": ("data",),
}
SCORING_OPTION_NAMES = tuple(sorted({option for options in SCORING_OPTIONS.values() for option in options}))
# Row columns: (table, column as the paper prints it, metric, aggregate key, format).
COLUMNS = (
    ("Table 7", "FID ↓", "fid", "fid", "{:.2f}"),
    ("Table 7", "CLIP ↑", "clip_score", "clip_score", "{:.2f}"),
    ("Table 7", "GenEval ↑", "geneval", "geneval", "{:.2f}"),
    ("Table 7", "DPG ↑", "dpg", "dpg", "{:.1f}"),
    ("Table 11", "Global", "dpg", "dpg/global", "{:.1f}"),
    ("Table 11", "Entity", "dpg", "dpg/entity", "{:.1f}"),
    ("Table 11", "Attribute", "dpg", "dpg/attribute", "{:.1f}"),
    ("Table 11", "Relation", "dpg", "dpg/relation", "{:.1f}"),
    ("Table 11", "Other", "dpg", "dpg/other", "{:.1f}"),
    ("Table 11", "ImageReward ↑", "image_reward", "image_reward", "{:.2f}"),
)


@dataclasses.dataclass(frozen=True)
class EvaluateRequest:
    """One checkpoint's row: `generation` holds the model and sampling settings (its benchmark and out are set per
    benchmark), `scoring` the scorers' options by name (SCORING_OPTIONS; None: the scorer's default)."""

    generation: sana.GenerateRequest
    out: Path
    name: str = ""                                   # the row's label (default: the output folder's name)
    benchmarks: tuple[str, ...] = ROW_BENCHMARKS
    subset: int | None = None                        # prompts per benchmark, category mix kept
    scoring: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class EvaluateSummary:
    results: tuple[Result, ...]
    bundle: Path
    row: Path
    images: int
    generate_s: float
    score_s: float


def check_request(request: EvaluateRequest) -> None:
    """Refuse what would fail later, before any model loads or anything is written."""
    unknown = [b for b in request.benchmarks if b not in ROW_BENCHMARKS]
    if unknown or not request.benchmarks:
        raise ValueError(f"--benchmarks {','.join(request.benchmarks)}: expected some of {','.join(ROW_BENCHMARKS)}")
    if len(set(request.benchmarks)) != len(request.benchmarks):
        raise ValueError(f"--benchmarks {','.join(request.benchmarks)}: a benchmark is named twice")
    if request.subset is not None and request.subset < 1:
        raise ValueError(f"--subset {request.subset}: expected a positive number of prompts")
    extra = sorted(set(request.scoring) - set(SCORING_OPTION_NAMES))
    if extra:
        raise ValueError(f"unknown scoring option {extra[0]!r}; evaluate passes on {', '.join(SCORING_OPTION_NAMES)}")
    for benchmark in request.benchmarks:
        check_options(benchmark, request.out / benchmark, scoring_options(request, benchmark))
        get_benchmark(benchmark).load(_prompt_data(request, benchmark))


def scoring_options(request: EvaluateRequest, benchmark: str) -> dict[str, Any]:
    """The options `score_benchmark` gets for `benchmark`: those given, the subset and the shared cache."""
    options = {key: request.scoring[key] for key in SCORING_OPTIONS[benchmark]
               if request.scoring.get(key) is not None}
    if benchmark == "mjhq30k":
        options["metrics"] = ["fid", "clip_score"]       # Table 7's columns; Table 5's ImageReward is not a row cell
    if request.subset is not None:
        options["subset"] = request.subset
    options["cache_dir"] = str(request.out / "cache")
    return options


def evaluate(request: EvaluateRequest, world: World = SINGLE_PROCESS) -> EvaluateSummary:
    """Generate every benchmark of the row, then score each; every process of `world` calls this alike."""
    check_request(request)
    with folder_lock.writing(request.out, world):
        return evaluate_into_folder(request, world)


def evaluate_into_folder(request: EvaluateRequest, world: World) -> EvaluateSummary:
    """`evaluate`, once the output folder is held against other commands."""
    start = time.perf_counter()
    loaded = sana.load(request.generation, world)
    weights_sha256 = loaded.weights_sha256
    images = 0
    for benchmark in request.benchmarks:
        generation = dataclasses.replace(request.generation, benchmark=benchmark, out=request.out / benchmark,
                                         subset=request.subset, data=_prompt_data(request, benchmark))
        summary = sana.run(generation, world, loaded)
        images += summary.files
        if world.is_main:
            print(f"evaluate: {benchmark}: {summary.written} written, {summary.kept} kept of {summary.files} files "
                  f"({summary.seconds:.1f} s)", flush=True)
    del loaded
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()                      # the scorers' turn: the generator's memory is not needed
    generated = time.perf_counter()
    results: list[Result] = []
    for benchmark in request.benchmarks:
        scored = time.perf_counter()
        results += score_benchmark(benchmark, request.out / benchmark, world, **scoring_options(request, benchmark))
        if world.is_main:
            print(f"evaluate: {benchmark} scored ({time.perf_counter() - scored:.1f} s)", flush=True)
    done = time.perf_counter()
    bundle, row = request.out / "results.json", request.out / "row.md"
    if world.is_main:
        provenance = collect(seeds={"generation": request.generation.seed},
                             config={**_config(request, world, generated - start, done - generated, images),
                                     "weights_sha256": weights_sha256})
        write_results(results, bundle)
        write_text(request.out / "provenance.json", json.dumps(dataclasses.asdict(provenance), indent=1) + "\n")
        write_text(row, render_row(request.name or request.out.name, results, request, provenance))
    world.barrier("the end of evaluate")
    return EvaluateSummary(tuple(results), bundle, row, images, generated - start, done - generated)


def _prompt_data(request: EvaluateRequest, benchmark: str) -> str | None:
    """Where the prompts come from: MJHQ-30K's are the meta_data.json of the --mjhq copy (else the Hugging Face
    cache, as its scorer reads it), the others' --data (else $SANA_EVAL_DATA, the cache, a download)."""
    if benchmark == "mjhq30k":
        return request.scoring.get("mjhq")
    return request.generation.data or request.scoring.get("data")


def _config(request: EvaluateRequest, world: World, generate_s: float, score_s: float, images: int) -> dict:
    generation = {key: value for key, value in dataclasses.asdict(request.generation).items()
                  if key not in ("benchmark", "out")}      # set per benchmark
    return {"command": "evaluate", "benchmarks": list(request.benchmarks), "subset": request.subset,
            "generation": json.loads(json.dumps(generation, default=str)), "scoring": dict(request.scoring),
            "world_size": world.size, "images": images,
            "seconds": {"generate": round(generate_s, 1), "score": round(score_s, 1)}}


def row_values(results: Sequence[Result]) -> dict[str, float | None]:
    """Column -> value for the row's columns (None where that benchmark was not run)."""
    by_metric = {r.metric: r for r in results}
    values: dict[str, float | None] = {}
    for _, column, metric, key, _ in COLUMNS:
        value = by_metric[metric].aggregate.get(key) if metric in by_metric else None
        values[column] = None if value is None or math.isnan(value) else float(value)
    return values


def render_row(name: str, results: Sequence[Result], request: EvaluateRequest, provenance: Any) -> str:
    values = row_values(results)
    lines = [f"# {name}: quality row", ""]
    if request.subset is not None:
        lines += [f"**Subset of {request.subset} prompts per benchmark** (category mix kept): comparable with another "
                  f"run on the same subset, not with the paper's full-benchmark numbers.", ""]
    for table in dict.fromkeys(t for t, *_ in COLUMNS):
        columns = [(column, fmt) for t, column, _, _, fmt in COLUMNS if t == table]
        lines += [f"{table} columns:", "",
                  "| Model | " + " | ".join(c for c, _ in columns) + " |",
                  "|---|" + "---:|" * len(columns),
                  f"| {name} | " + " | ".join("–" if values[c] is None else fmt.format(values[c])
                                               for c, fmt in columns) + " |", ""]
    lines += ["Protocols (each result's full protocol is in results.json):", ""]
    for result in results:
        protocol = result.protocol
        detail = ", ".join(f"{k} {protocol[k]}" for k in ("img_size", "geneval_protocol", "mode", "aggregate")
                           if k in protocol)
        lines.append(f"- {result.metric}: {detail or 'default'} [{protocol_id(result.protocol)}]")
    sha = provenance.config.get("weights_sha256")
    digest = sha if isinstance(sha, str) else ", ".join(f"{k} {v[:12]}" for k, v in sorted((sha or {}).items()))
    lines += ["", f"Commit {provenance.git_commit or 'unknown'}{' (dirty)' if provenance.git_dirty else ''}; "
                  f"weights {request.generation.weights}; seed {request.generation.seed}; "
                  f"weights sha256 {digest}; GPUs {', '.join(provenance.gpus) or 'none'}; "
                  f"{provenance.config.get('world_size')} process(es); full config in provenance.json.", ""]
    return "\n".join(lines)
