"""Executing recipes: a registry of runner kinds, and the verdict of each cell against the paper."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

from sana_eval.reproduce import architecture, images, speed
from sana_eval.reproduce.measurement import Measurement
from sana_eval.reproduce.needs import unmet
from sana_eval.tables.recipes import PAPER_SCORING_NEEDS
from sana_eval.tables.schema import Column, PaperValue, Recipe, Row, Setting, Table

Verdict = Literal["reproduced", "differs", "not run", "failed"]

# Recipe kind -> the function that measures a cell of that kind. PLANNED kinds (kind -> the module that will run
# them) are recipes as data only: reported "not run" with the reason. None at present.
RUNNERS: dict[str, Callable[[dict[str, Setting], Column], Measurement]] = {
    "architecture": architecture.run_architecture,
    "peer_params": architecture.run_peer_params,
    "macs": architecture.run_macs,
    "generate_score": images.run_generate_score,
    "reconstruction": images.run_reconstruction,
    "speed": speed.run_speed,
    "text_encoder": speed.run_text_encoder,
}
PLANNED: dict[str, str] = {}


@dataclass(frozen=True)
class CellResult:
    row: str                               # Row.id
    label: str
    group: str
    column: str
    unit: str
    paper: str                             # as printed
    reproduced: float | None
    detail: str
    verdict: Verdict
    reasons: tuple[str, ...]               # why not run (one per unmet need) / why it differs or failed
    command: str
    notes: tuple[str, ...]                 # Note.ref of every note touching this cell
    # Measurement.extras, or an unofficial scorer's numbers where the paper's is missing: report columns, never
    # compared
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def delta(self) -> float | None:
        paper = PaperValue(self.paper).value
        if paper is None or self.reproduced is None:
            return None
        return self.reproduced - paper

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def to_dict(self) -> dict:
        return {**asdict(self), "reasons": list(self.reasons), "notes": list(self.notes), "delta": self.delta}


def _not_run_reasons(row: Row, recipe: Recipe | None, paper_reported: bool) -> list[str]:
    if not paper_reported:
        return ["the paper reports no number for this cell"]
    if recipe is None:
        return [row.no_recipe or "no recipe"]
    reasons = unmet(recipe.needs)
    if recipe.kind not in RUNNERS:
        reasons.append(f"needs runner {recipe.kind!r} ({PLANNED[recipe.kind]}), not implemented yet")
    return reasons


def _unofficial(recipe: Recipe, column: Column) -> tuple[dict[str, float], tuple[str, ...]]:
    """A cell that lacks only its paper scorer (#13 item 2) is not compared, but its images scored with an
    unofficial scorer are extra columns: (those numbers, why there are none when that scorer cannot run either)."""
    if recipe.kind != "generate_score":
        return {}, ()
    paper_scorer = PAPER_SCORING_NEEDS.get(str(recipe.settings["benchmark"]), ())
    if not paper_scorer or unmet(tuple(need for need in recipe.needs if need not in paper_scorer)):
        return {}, ()
    _, stand_in = images.UNOFFICIAL_SCORING[str(recipe.settings["benchmark"])]
    missing = unmet(stand_in)
    if missing:
        return {}, tuple(f"no unofficial numbers either: {reason}" for reason in missing)
    try:
        return images.run_unofficial_scores(recipe.settings, column), ()
    except Exception as err:  # as a runner failure: one cell's, not the end of the report
        return {}, (f"unofficial numbers failed: {type(err).__name__}: {err}",)


def evaluate_cell(table: Table, row: Row, column: Column) -> CellResult:
    cell = row.cells[column.key]
    recipe = cell.recipe
    base = dict(row=row.id, label=row.label, group=row.group, column=column.key, unit=column.unit,
                paper=cell.paper.text, command=recipe.command if recipe else "",
                notes=tuple(n.ref for n in table.notes_for(row.id, column.key)))
    reasons = _not_run_reasons(row, recipe, cell.paper.value is not None)
    if reasons:
        extras, why = _unofficial(recipe, column) if recipe and cell.paper.value is not None else ({}, ())
        return CellResult(**base, reproduced=None, detail="", verdict="not run", reasons=(*reasons, *why),
                          extras=extras)
    try:
        measured = RUNNERS[recipe.kind](recipe.settings, column)
    except Exception as err:  # a runner failure is one cell's verdict, not the end of the report
        return CellResult(**base, reproduced=None, detail="", verdict="failed",
                          reasons=(f"{type(err).__name__}: {err}",))
    if column.tolerance.accepts(cell.paper, measured.value):
        return CellResult(**base, reproduced=measured.value, detail=measured.detail, verdict="reproduced",
                          reasons=(), extras=dict(measured.extras))
    return CellResult(**base, reproduced=measured.value, detail=measured.detail, verdict="differs",
                      reasons=(f"outside tolerance: {column.tolerance.describe()}",), extras=dict(measured.extras))


def evaluate_table(table: Table) -> list[CellResult]:
    for row in table.rows:
        for cell in row.cells.values():
            if cell.recipe and cell.recipe.kind not in RUNNERS and cell.recipe.kind not in PLANNED:
                raise ValueError(f"{table.id}: row {row.id!r} uses unknown recipe kind {cell.recipe.kind!r}")
    return [evaluate_cell(table, row, col) for row in table.rows for col in table.columns]
