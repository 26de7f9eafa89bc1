"""Inference ablations as data: a sweep varies one sampling knob (and optionally a second, one line per value),
generates each point with `run_generate.run` and scores it; `run_sweep` writes sweep.json / .md / .png.

Resumable: each point's images resume like any generate run, and a point whose scores are stored (per metric and
subset size) is neither regenerated nor rescored, so a rerun only replots.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from metrics.base import Result
from model.pipeline import SamplingConfig
from sana_eval.generation import sana as run_generate
from sana_eval.generation.manifest import read_run
from sana_eval.generation.sana import GenerateRequest
from sana_eval.io import save_figure, write_text
from sana_eval.paths import data_dir
from sana_eval.provenance import code_version, collect
from sana_eval.reproduce.images import DATA_FOLDERS, stored_result
from sana_eval.results import higher_is_better
from sana_eval.scoring.dispatch import score_benchmark

SCHEMA = "sana-eval/sweep/1"
Knob = Literal["sampler", "steps", "cfg", "shift", "chi"]
# benchmark (CLI name) -> metrics a sweep may score on it; each metric declares its direction (results.DIRECTIONS).
METRICS = {"mjhq30k": ("fid", "clip_score"), "geneval": ("geneval",)}
METRIC_NAMES = {"fid": "FID", "clip_score": "CLIP score", "geneval": "GenEval overall"}


class SweepError(ValueError):
    """A bad sweep definition, an unknown sweep, or an output folder that holds a sweep with other settings."""


@dataclass(frozen=True)
class Knobs:
    """The sampling settings a sweep point varies; defaults are Sana's metric scripts (docs/tables.md
    §4): Flow-DPM-Solver, its default 20 steps, CFG 4.5, the checkpoint's flow shift, CHI as Sana's script."""

    sampler: str = "flow_dpm_solver"
    steps: int | None = None               # None: the sampler's default (20 DPM-Solver, 28 Euler)
    cfg: float = 4.5
    shift: float | None = None             # None: the checkpoint's flow_shift
    chi: str = "auto"                      # "auto" (as Sana's script for the benchmark), "on", "off"
    pag: float = 1.0                       # off, as in the metric runs

    def sampling(self):
        return SamplingConfig(sampler=self.sampler, steps=self.steps, cfg_scale=self.cfg, shift=self.shift,
                              pag_scale=self.pag)


@dataclass(frozen=True)
class Point:
    series: str                            # the line it belongs to ("" when the sweep has one line)
    axis: str                              # the knob along x
    x: Any                                 # its value here
    knobs: Knobs

    @property
    def id(self) -> str:                   # folder name of its images, e.g. "flow_euler-steps_28"
        return "-".join(filter(None, (self.series, f"{self.axis}_{self.x}")))


@dataclass(frozen=True)
class Sweep:
    name: str
    title: str
    ref: str                               # where in the paper (or why not in the paper)
    benchmark: str                         # CLI benchmark name: "mjhq30k" or "geneval"
    metrics: tuple[str, ...]
    axis: Knob                             # the knob along x
    values: tuple[Any, ...]
    series_axis: Knob | None = None        # a second knob: one line per value
    series: tuple[Any, ...] = ()
    base: Knobs = Knobs()
    note: str = ""

    def __post_init__(self) -> None:
        knobs = {f.name for f in dataclasses.fields(Knobs)}
        if self.axis not in knobs or (self.series_axis is not None and self.series_axis not in knobs):
            raise SweepError(f"sweep {self.name!r}: axes must be among {sorted(knobs)}")
        if self.benchmark not in METRICS or not set(self.metrics) <= set(METRICS[self.benchmark]):
            raise SweepError(f"sweep {self.name!r}: metrics {self.metrics} not scorable on {self.benchmark!r} "
                             f"(known: {METRICS})")
        if not self.values or (self.series_axis is None) != (not self.series):
            raise SweepError(f"sweep {self.name!r}: needs values, and series values iff a series axis")

    def points(self) -> tuple[Point, ...]:
        lines = self.series or (None,)
        out = []
        for line, x in itertools.product(lines, self.values):
            change = {self.axis: x, **({self.series_axis: line} if self.series_axis else {})}
            out.append(Point("" if line is None else str(line), self.axis, x, dataclasses.replace(self.base, **change)))
        return tuple(out)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "metrics": list(self.metrics), "values": list(self.values),
                "series": list(self.series)}


SWEEPS: dict[str, Sweep] = {s.name: s for s in (
    # Paper Fig. 8 (§3.2): Flow-DPM-Solver converges in 14-20 steps, Flow-Euler needs 28-50. No numbers are printed.
    Sweep("fig8-steps", "Flow-DPM-Solver vs. Flow-Euler by step count", "paper Fig. 8 (§3.2)", "mjhq30k",
          ("fid", "clip_score"), "steps", (5, 8, 10, 14, 20, 28, 50), "sampler", ("flow_dpm_solver", "flow_euler")),
    Sweep("cfg", "Classifier-free guidance scale", "no figure in the paper; 4.5 is the metric scripts' default",
          "mjhq30k", ("fid", "clip_score"), "cfg", (1.5, 3.0, 4.5, 6.0, 7.5)),
    Sweep("chi", "Complex Human Instruction at inference, on vs. off", "inference-time switch, not paper Table 2",
          "geneval", ("geneval",), "chi", ("on", "off"),
          note="Table 2 ablates CHI in training (models trained with and without it); this sweep only switches "
               "the CHI prefix of the prompt encoding at inference for one released checkpoint."),
    Sweep("shift", "Flow shift of the sampler's time grid", "paper Algorithm 1's s; the paper states no value",
          "mjhq30k", ("fid", "clip_score"), "shift", (1.0, 3.0, 4.0, 6.0)),
)}


def get_sweep(name: str) -> Sweep:
    if name not in SWEEPS:
        raise SweepError(f"unknown sweep {name!r}; known: {', '.join(SWEEPS)}")
    return SWEEPS[name]


# ---------------------------------------------------------------------------------------------------------------
# Running.

@dataclass(frozen=True)
class SweepSettings:
    """Everything besides the knobs that decides a point's images and scores; a folder holds one of these."""

    weights: str
    resolution: int | None = None
    seed: int = 0
    vae: str | None = None
    text_encoder: str | None = None
    conventions: str = "nvlabs"
    data: str | None = None                # the benchmark's prompts (default: $SANA_EVAL_DATA/<benchmark>)
    mjhq: str | None = None                # MJHQ-30K reference folder (default: $SANA_EVAL_DATA/mjhq30k)
    fid_size: int = 512
    allow_few_images: bool = False         # FID of a subset under 2048 images: biased, still comparable in a sweep


@dataclass(frozen=True)
class SweepExecution:
    """How a sweep runs, besides what decides its numbers: the prompt subset, batching, device, scorer options."""

    limit: int | None = None               # the first N prompts of the benchmark (None: all)
    batch_size: int = 1
    device: str | None = None
    # Extra options of the scorer calls (`score_benchmark`): {"mjhq": {...} for mjhq30k, "geneval": {...}}, e.g.
    # weights files, device, cache folder.
    scorer: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)


def _subset(limit: int | None) -> str:
    return "all" if limit is None else f"first{limit}"


def _request(point: Point, sweep: Sweep, settings: SweepSettings, folder: Path, execution: SweepExecution):
    return GenerateRequest(benchmark=sweep.benchmark, weights=settings.weights, out=folder, vae=settings.vae,
                           text_encoder=settings.text_encoder, conventions=settings.conventions,
                           sampling=point.knobs.sampling(), chi=point.knobs.chi, resolution=settings.resolution,
                           seed=settings.seed, limit=execution.limit, batch_size=execution.batch_size,
                           data=settings.data, device=execution.device)


def _score(metric: str, images: Path, settings: SweepSettings, execution: SweepExecution) -> Result:
    limit, scorer = execution.limit, execution.scorer
    if metric == "geneval":
        [result] = score_benchmark("geneval", images, data=settings.data, limit=limit, **scorer.get("geneval", {}))
    else:
        [result] = score_benchmark("mjhq30k", images, metrics=[metric], mjhq=settings.mjhq, limit=limit,
                                   fid_size=settings.fid_size, allow_few_images=settings.allow_few_images,
                                   **scorer.get("mjhq", {}))
    return result


def _run_point(point: Point, sweep: Sweep, settings: SweepSettings, out_dir: Path, execution: SweepExecution) -> dict:
    folder = out_dir / "points" / point.id
    files = {m: folder.parent / f"{point.id}.{m}.{_subset(execution.limit)}.json" for m in sweep.metrics}
    reused = all(f.is_file() for f in files.values())
    if not reused:                         # generation resumes: only missing images are made
        run_generate.run(_request(point, sweep, settings, folder, execution))
    results = {m: stored_result(f, lambda m=m: _score(m, folder, settings, execution)) for m, f in files.items()}
    identity, _ = read_run(folder) if folder.is_dir() else ({}, {})
    return {"id": point.id, "series": point.series, "x": point.x, "knobs": dataclasses.asdict(point.knobs),
            "images": str(folder.relative_to(out_dir)), "reused": reused,
            "weights_sha256": identity.get("run_config", {}).get("weights_sha256"),
            "values": {m: r.aggregate[m] for m, r in results.items()},
            "result_files": {m: str(f.relative_to(out_dir)) for m, f in files.items()}}


def _defaults(settings: SweepSettings, sweep: Sweep) -> SweepSettings:
    """Prompts and MJHQ reference images from $SANA_EVAL_DATA where not given, as the table runners find them."""
    def under_data(name: str) -> str | None:
        folder = data_dir() / name
        return str(folder) if folder.exists() else None

    return dataclasses.replace(settings, data=settings.data or under_data(DATA_FOLDERS[sweep.benchmark]),
                               mjhq=settings.mjhq or (under_data("mjhq30k") if sweep.benchmark == "mjhq30k" else None))


def _check_folder(out_dir: Path, sweep: Sweep, settings: SweepSettings) -> None:
    path = out_dir / "sweep.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    now = json.loads(json.dumps({"sweep": sweep.to_dict(), "settings": dataclasses.asdict(settings)}))
    if old.get("sweep") != now["sweep"] or old.get("settings") != now["settings"]:
        raise SweepError(f"{path}: this folder holds sweep {old.get('sweep', {}).get('name')!r} with other settings "
                         f"or another definition; use another --out folder")


def run_sweep(name: str, settings: SweepSettings, out_dir: str | Path,
              execution: SweepExecution = SweepExecution()) -> Path:
    """Run (or resume) every point of sweep `name` into `out_dir`; returns `out_dir/sweep.md`.

    sweep.json is rewritten after every point, so a killed run shows its progress.
    """
    sweep = get_sweep(name)
    out_dir = Path(out_dir)
    settings = _defaults(settings, sweep)
    _check_folder(out_dir, sweep, settings)
    scorer = {key: dict(value) for key, value in execution.scorer.items()}
    provenance = collect(seeds={"generation": settings.seed}, config={
        "sweep": name, "limit": execution.limit, **dataclasses.asdict(settings), "scorer": scorer})
    points: list[dict] = []
    for point in sweep.points():
        points.append(_run_point(point, sweep, settings, out_dir, execution))
        payload = {"schema": SCHEMA, "sweep": sweep.to_dict(), "settings": dataclasses.asdict(settings),
                   "limit": execution.limit, "provenance": provenance.to_dict(), "points": points}
        write_sweep_json(payload, out_dir / "sweep.json")
    return render_sweep(out_dir / "sweep.json")


def write_sweep_json(payload: dict, path: Path) -> Path:
    return write_text(path, json.dumps(payload, indent=1, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# Rendering: sweep.md and sweep.png from sweep.json alone, so a stored sweep can be replotted.

def _four_significant(value: float) -> str:
    # No paper value to match (unlike a table cell, report.py): four significant digits tell the points apart.
    return f"{value:.4g}"


def _table(sweep: dict, points: list[dict], metric: str) -> list[str]:
    """One metric as a grid: a row per swept value, a column per series."""
    lines = [str(s) for s in sweep["series"]] or [""]
    by_key = {(p["series"], json.dumps(p["x"])): p for p in points}
    head = [sweep["axis"], *(lines if sweep["series"] else [METRIC_NAMES[metric]])]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for x in sweep["values"]:
        cells = [by_key.get((line, json.dumps(x))) for line in lines]
        out.append(f"| {x} | " + " | ".join(_four_significant(c["values"][metric]) if c else "·" for c in cells) + " |")
    return out


def render_markdown(payload: dict, figure: str | None) -> str:
    sweep, settings, prov = payload["sweep"], payload["settings"], payload["provenance"]
    points = payload["points"]
    total = len(sweep["values"]) * max(1, len(sweep["series"]))
    subset = "all" if payload["limit"] is None else f"first {payload['limit']}"
    out = [f"# Sweep `{sweep['name']}`: {sweep['title']}", "",
           f"{sweep['ref']} · {sweep['benchmark']}, {subset} prompts · {len(points)} of {total} points · "
           f"{code_version(prov)} · {prov['utc_time']}", ""]
    if sweep["note"]:
        out += [f"> {sweep['note']}", ""]
    if figure:
        out += [f"![{sweep['title']}]({figure})", ""]
    for metric in sweep["metrics"]:
        better = "higher" if higher_is_better(metric, metric) else "lower"
        out += [f"## {METRIC_NAMES[metric]} ({better} is better)", "", *_table(sweep, points, metric), ""]
    fixed = {k: v for k, v in sweep["base"].items() if k not in (sweep["axis"], sweep["series_axis"])}
    out += ["## Settings", "",
            f"- swept: `{sweep['axis']}`"
            + (f", one line per `{sweep['series_axis']}`" if sweep["series_axis"] else ""),
            "- fixed: " + ", ".join(f"{k} {v}" for k, v in fixed.items()) + " (None: the default)",
            "- " + ", ".join(f"{k} {v}" for k, v in settings.items()),
            "- images under `points/<id>/`, each point's score beside it (`points/<id>.<metric>.<subset>.json`); "
            "everything, with provenance: `sweep.json`", ""]
    return "\n".join(out)


def plot(payload: dict, path: Path) -> Path | None:
    """Metric vs. swept value, a panel per metric, a line per series (Fig. 8's form); None if no point ran."""
    from matplotlib.figure import Figure  # heavy, and only the plot needs it: loaded when a plot is made

    sweep, points = payload["sweep"], payload["points"]
    if not points:
        return None
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in sweep["values"])
    position = {json.dumps(x): (x if numeric else i) for i, x in enumerate(sweep["values"])}
    fig = Figure(figsize=(4.2 * len(sweep["metrics"]), 3.4), layout="constrained")
    for k, metric in enumerate(sweep["metrics"]):
        ax = fig.add_subplot(1, len(sweep["metrics"]), k + 1)
        for line in [str(s) for s in sweep["series"]] or [""]:
            mine = [p for p in points if p["series"] == line]
            ax.plot([position[json.dumps(p["x"])] for p in mine], [p["values"][metric] for p in mine],
                    marker="o", label=line or None)
        if not numeric:
            ax.set_xticks(range(len(sweep["values"])), [str(x) for x in sweep["values"]])
        elif sweep["axis"] == "steps":       # 5..50 steps: a log axis keeps the small counts apart
            ax.set_xscale("log")
            ax.set_xticks(sweep["values"], [str(x) for x in sweep["values"]])
            ax.minorticks_off()
        ax.set_xlabel(sweep["axis"])
        ax.set_ylabel(f"{METRIC_NAMES[metric]} ({'higher' if higher_is_better(metric, metric) else 'lower'} "
                      "is better)")
        ax.grid(alpha=0.3)
        if sweep["series"]:
            ax.legend(fontsize="small")
    limit = "all" if payload["limit"] is None else f"first {payload['limit']}"
    fig.suptitle(f"{sweep['title']} ({sweep['benchmark']}, {limit} prompts)", fontsize="medium")
    return save_figure(fig, path)


def render_sweep(sweep_json: str | Path) -> Path:
    """Write sweep.png and sweep.md beside `sweep_json` from its contents; returns the Markdown path."""
    sweep_json = Path(sweep_json)
    try:
        payload = json.loads(sweep_json.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SweepError(f"{sweep_json}: not a readable sweep file ({err})") from None
    if payload.get("schema") != SCHEMA:
        raise SweepError(f"{sweep_json}: schema {payload.get('schema')!r}, expected {SCHEMA!r}")
    figure = plot(payload, sweep_json.with_name("sweep.png"))
    return write_text(sweep_json.with_name("sweep.md"), render_markdown(payload, figure.name if figure else None))
