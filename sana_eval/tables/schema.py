"""The paper's tables as typed data: columns, rows with the printed numbers, a recipe per reproducible cell."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

Source = Literal["P", "P-img"]            # docs/tables.md §0: [P] HTML table, [P-img] third-party transcription
ToleranceKind = Literal["exact", "rounding", "abs", "rel"]
NeedKind = Literal["gpu", "weights", "dataset", "metric", "code"]
Setting = str | int | float | bool | None

NOT_REPORTED = "-"                         # the paper's dash: no number for this cell
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


class TableError(ValueError):
    """A table definition or report file that does not hold together; the message names table, row, column."""


@dataclass(frozen=True)
class Tolerance:
    """When a reproduced number counts as the paper's (one rule per column, stated in every report)."""

    kind: ToleranceKind
    value: float = 0.0                     # absolute, or relative as a fraction, for "abs" / "rel"
    why: str = ""

    def accepts(self, paper: PaperValue, ours: float) -> bool:
        expected = paper.value
        if expected is None:
            return False
        if self.kind == "exact":
            return ours == expected
        if self.kind == "rounding":        # printed precision is the tolerance: 591.7 -> "592" != "590"
            return math.isclose(round(ours, paper.decimals), expected, abs_tol=1e-12)
        # Never tighter than the printed precision: "0.2" stands for anything in [0.15, 0.25).
        printed = 0.5 * 10.0 ** -paper.decimals
        allowed = self.value if self.kind == "abs" else self.value * abs(expected)
        return abs(ours - expected) <= max(allowed, printed) + 1e-12

    def describe(self) -> str:
        rule = {"exact": "equal to the paper value",
                "rounding": "equal to the paper value after rounding to the paper's printed decimals",
                "abs": f"|ours − paper| ≤ {self.value:g} (or half the last printed digit, if larger)",
                "rel": f"|ours − paper| ≤ {self.value:.0%} of paper (or half the last printed digit, if larger)",
                }[self.kind]
        return f"{rule} ({self.why})" if self.why else rule


@dataclass(frozen=True)
class PaperValue:
    """One number exactly as the paper prints it; the float and its precision are derived from the text."""

    text: str

    def __post_init__(self) -> None:
        if self.text != NOT_REPORTED and not _NUMBER.match(self.text):
            raise TableError(f"paper value {self.text!r} is neither a plain number nor {NOT_REPORTED!r}")

    @property
    def value(self) -> float | None:
        return None if self.text == NOT_REPORTED else float(self.text)

    @property
    def decimals(self) -> int:
        return len(self.text.partition(".")[2])


@dataclass(frozen=True)
class Column:
    key: str
    name: str                              # the paper's header
    unit: str                              # "" for scores; "M"/"B" parameters, "s", "ms", "/s", "x"
    higher_is_better: bool | None          # None: a descriptor (width, params), not a quality axis
    tolerance: Tolerance


@dataclass(frozen=True)
class Need:
    """A precondition of a recipe; `sana_eval.reproduce.needs` checks it against this machine."""

    kind: NeedKind
    name: str                              # GPU model / HF repo id / dataset key / metric module / python module
    detail: str = ""                       # why it is needed, shown in the skip reason


@dataclass(frozen=True)
class Recipe:
    """How one cell is reproduced: a runner kind, the settings it is called with, and what it needs."""

    kind: str                              # key of sana_eval.reproduce.runners.RUNNERS or .PLANNED
    settings: dict[str, Setting]
    needs: tuple[Need, ...] = ()
    command: str = ""                      # the command line that runs it (or will, once its runner exists)


@dataclass(frozen=True)
class Cell:
    paper: PaperValue
    recipe: Recipe | None = None


@dataclass(frozen=True)
class Row:
    label: str
    group: str                             # e.g. "512 x 512"; "" when the table has no groups
    cells: dict[str, Cell]                 # keyed by Column.key, one per column
    no_recipe: str = ""                    # why cells without a recipe cannot be reproduced here

    @property
    def id(self) -> str:
        return f"{self.group} / {self.label}" if self.group else self.label


@dataclass(frozen=True)
class Note:
    """A known inconsistency or caveat (docs/tables.md §6/§7) and the cells it touches (none: the whole table)."""

    ref: str                               # e.g. "docs/tables.md §6.2"
    text: str
    cells: tuple[tuple[str, str], ...] = ()  # (row id, column key)


@dataclass(frozen=True)
class Table:
    id: str                                # "table7"
    number: int
    title: str
    caption: str
    source: Source
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    notes: tuple[Note, ...] = ()

    def __post_init__(self) -> None:
        keys = [c.key for c in self.columns]
        if len(set(keys)) != len(keys):
            raise TableError(f"{self.id}: duplicate column keys {keys}")
        ids = [r.id for r in self.rows]
        if len(set(ids)) != len(ids):
            raise TableError(f"{self.id}: duplicate row ids {sorted({i for i in ids if ids.count(i) > 1})}")
        for row in self.rows:
            if list(row.cells) != keys:
                raise TableError(f"{self.id}: row {row.id!r} has cells {list(row.cells)}, columns are {keys}")
        for note in self.notes:
            for row_id, key in note.cells:
                if row_id not in ids or key not in keys:
                    raise TableError(f"{self.id}: note {note.ref!r} points at unknown cell ({row_id!r}, {key!r})")

    @property
    def verified(self) -> bool:
        return self.source == "P"

    @property
    def needs(self) -> tuple[Need, ...]:
        """Every distinct need of the table's recipes, in first-seen order."""
        seen: dict[Need, None] = {}
        for row in self.rows:
            for cell in row.cells.values():
                for need in cell.recipe.needs if cell.recipe else ():
                    seen.setdefault(need)
        return tuple(seen)

    def column(self, key: str) -> Column:
        for col in self.columns:
            if col.key == key:
                return col
        raise TableError(f"{self.id}: no column {key!r}")

    def notes_for(self, row_id: str, key: str) -> tuple[Note, ...]:
        return tuple(n for n in self.notes if (row_id, key) in n.cells)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "number": self.number, "title": self.title, "caption": self.caption,
            "source": self.source,
            "columns": [{"key": c.key, "name": c.name, "unit": c.unit, "higher_is_better": c.higher_is_better,
                         "tolerance": vars(c.tolerance)} for c in self.columns],
            "rows": [{"label": r.label, "group": r.group, "no_recipe": r.no_recipe,
                      "cells": {k: {"paper": c.paper.text, "recipe": _recipe_dict(c.recipe)}
                                for k, c in r.cells.items()}} for r in self.rows],
            "notes": [{"ref": n.ref, "text": n.text, "cells": [list(c) for c in n.cells]} for n in self.notes],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Table:
        try:
            return cls(
                id=data["id"], number=data["number"], title=data["title"], caption=data["caption"],
                source=data["source"],
                columns=tuple(Column(c["key"], c["name"], c["unit"], c["higher_is_better"],
                                     Tolerance(**c["tolerance"])) for c in data["columns"]),
                rows=tuple(Row(r["label"], r["group"],
                               {k: Cell(PaperValue(c["paper"]), _recipe_from(c["recipe"]))
                                for k, c in r["cells"].items()}, r["no_recipe"]) for r in data["rows"]),
                notes=tuple(Note(n["ref"], n["text"], tuple(tuple(c) for c in n["cells"])) for n in data["notes"]),
            )
        except (KeyError, TypeError) as err:
            raise TableError(f"table {data.get('id', '?')!r}: malformed table data ({err!r})") from None


def _recipe_dict(recipe: Recipe | None) -> dict | None:
    if recipe is None:
        return None
    return {"kind": recipe.kind, "settings": dict(recipe.settings), "command": recipe.command,
            "needs": [vars(n) for n in recipe.needs]}


def _recipe_from(data: dict | None) -> Recipe | None:
    if data is None:
        return None
    return Recipe(data["kind"], dict(data["settings"]), tuple(Need(**n) for n in data["needs"]), data["command"])


@dataclass(frozen=True)
class RowSpec:
    """Authoring form of a row: the paper's numbers in column order, and the recipes of its cells."""

    label: str
    group: str
    values: tuple[str, ...]
    recipes: dict[str, Recipe] = field(default_factory=dict)
    no_recipe: str = ""


def build_table(*, id: str, number: int, title: str, caption: str, source: Source,
                columns: tuple[Column, ...], rows: list[RowSpec], notes: tuple[Note, ...] = ()) -> Table:
    """Zip each row's printed values with the columns; every paper number is typed once, in a RowSpec."""
    built = []
    keys = [c.key for c in columns]
    for spec in rows:
        if len(spec.values) != len(columns):
            raise TableError(f"{id}: row {spec.label!r} ({spec.group}) has {len(spec.values)} values "
                             f"for {len(columns)} columns")
        unknown = sorted(set(spec.recipes) - set(keys))
        if unknown:
            raise TableError(f"{id}: row {spec.label!r} has recipes for unknown columns {unknown}")
        cells = {k: Cell(PaperValue(v), spec.recipes.get(k)) for k, v in zip(keys, spec.values)}
        built.append(Row(spec.label, spec.group, cells, spec.no_recipe))
    return Table(id=id, number=number, title=title, caption=caption, source=source, columns=columns,
                 rows=tuple(built), notes=notes)
