"""Executing recipes: a registry of runner kinds, and the verdict of each cell against the paper."""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from .needs import unmet
from .schema import Column, PaperValue, Recipe, Row, Setting, Table

if TYPE_CHECKING:
    from model.config import TransformerConfig

Verdict = Literal["reproduced", "differs", "not run", "failed"]
UNIT_SCALE = {"": 1.0, "M": 1e6, "B": 1e9, "T": 1e12}


@dataclass(frozen=True)
class Measurement:
    value: float                           # in the column's unit
    detail: str = ""                       # the unrounded quantity, for the report


# Kinds that exist in the repo today. PLANNED kinds (kind -> the module that will run them) are recipes as data
# only: reported "not run" with the reason. None at present.
RUNNERS: dict[str, Callable[[dict[str, Setting], Column], Measurement]] = {}
PLANNED: dict[str, str] = {}


def register_runner(kind: str):
    def add(fn):
        if kind in RUNNERS:
            raise ValueError(f"runner kind {kind!r} registered twice")
        RUNNERS[kind] = fn
        return fn
    return add


@functools.lru_cache(maxsize=None)
def _parameter_count(preset: str) -> int:
    from model.transformer import count_parameters

    return count_parameters(preset)


# Paper Table 6: width, depth, Mix-FFN hidden size, linear-attention heads (hidden / 32), parameters.
@register_runner("architecture")
def run_architecture(settings: dict[str, Setting], column: Column) -> Measurement:
    from model.config import get_preset

    preset, quantity = str(settings["preset"]), settings["quantity"]
    if quantity == "params":
        count = _parameter_count(preset)
        return Measurement(count / UNIT_SCALE[column.unit], f"{count:,} parameters ({preset})")
    config = get_preset(preset)
    fields = {"width": config.hidden_size, "depth": config.depth, "ffn": config.ffn_hidden,
              "heads": config.self_heads}
    if quantity not in fields:
        raise ValueError(f"architecture recipe: unknown quantity {quantity!r}; known: params, {', '.join(fields)}")
    return Measurement(float(fields[quantity]), f"{preset}")


@functools.lru_cache(maxsize=None)
def _peer_parameter_count(peer: str) -> int:
    from sana_eval.peer_models import count_peer_parameters

    return count_peer_parameters(peer)


# The "Params (B)" of the peer rows (Tables 7, 10, 11): the denoiser of each published config.
@register_runner("peer_params")
def run_peer_params(settings: dict[str, Setting], column: Column) -> Measurement:
    peer = str(settings["peer"])
    count = _peer_parameter_count(peer)
    return Measurement(count / UNIT_SCALE[column.unit], f"{count:,} denoiser parameters ({peer}, published config)")


# Block-design settings of a "macs" recipe, applied over its preset (model/config.py, model/ablation_blocks.py).
BLOCK_DESIGN = ("self_attention", "ffn", "mlp_ratio", "in_channels", "patch_size")


@functools.lru_cache(maxsize=None)
def _macs_by_part(config: TransformerConfig, resolution: int, text_tokens: int,
                  batch: int) -> tuple[tuple[str, int], ...]:
    from model.macs import macs_by_part

    return tuple(macs_by_part(config, resolution, text_tokens=text_tokens, batch=batch).items())


# Paper Table 8: multiply-accumulates of one forward pass of a block-design variant, counted on the meta device.
@register_runner("macs")
def run_macs(settings: dict[str, Setting], column: Column) -> Measurement:
    from model.config import get_preset

    config = get_preset(str(settings["preset"])).replace(**{k: settings[k] for k in BLOCK_DESIGN})
    parts = dict(_macs_by_part(config, int(settings["resolution"]), int(settings["text_tokens"]),
                               int(settings["batch"])))
    total = sum(parts.values())
    tera = {k: v / 1e12 for k, v in parts.items()}
    detail = (f"{total:,} MACs: self-attention {tera['self_attention']:.3f} + core {tera['self_attention_core']:.3f}"
              f", cross-attention {tera['cross_attention']:.3f} + core {tera['cross_attention_core']:.3f}, "
              f"FFN {tera['ffn']:.3f}, rest {tera['rest']:.3f} T; "
              f"2 x (all - cross-attention core) = {2 * (total - parts['cross_attention_core']) / 1e12:.3f} T")
    return Measurement(total / UNIT_SCALE[column.unit], detail)


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


def evaluate_cell(table: Table, row: Row, column: Column) -> CellResult:
    cell = row.cells[column.key]
    recipe = cell.recipe
    base = dict(row=row.id, label=row.label, group=row.group, column=column.key, unit=column.unit,
                paper=cell.paper.text, command=recipe.command if recipe else "",
                notes=tuple(n.ref for n in table.notes_for(row.id, column.key)))
    reasons = _not_run_reasons(row, recipe, cell.paper.value is not None)
    if reasons:
        return CellResult(**base, reproduced=None, detail="", verdict="not run", reasons=tuple(reasons))
    try:
        measured = RUNNERS[recipe.kind](recipe.settings, column)
    except Exception as err:  # a runner failure is one cell's verdict, not the end of the report
        return CellResult(**base, reproduced=None, detail="", verdict="failed",
                          reasons=(f"{type(err).__name__}: {err}",))
    if column.tolerance.accepts(cell.paper, measured.value):
        return CellResult(**base, reproduced=measured.value, detail=measured.detail, verdict="reproduced",
                          reasons=())
    return CellResult(**base, reproduced=measured.value, detail=measured.detail, verdict="differs",
                      reasons=(f"outside tolerance: {column.tolerance.describe()}",))


def evaluate_table(table: Table) -> list[CellResult]:
    for row in table.rows:
        for cell in row.cells.values():
            if cell.recipe and cell.recipe.kind not in RUNNERS and cell.recipe.kind not in PLANNED:
                raise ValueError(f"{table.id}: row {row.id!r} uses unknown recipe kind {cell.recipe.kind!r}")
    return [evaluate_cell(table, row, col) for row in table.rows for col in table.columns]
