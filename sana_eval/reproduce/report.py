"""Table reports: paper vs. reproduced per cell, as Markdown, JSON (complete, rerunnable) and CSV; and the index."""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sana_eval.generation.gallery import GALLERY
from sana_eval.io import save_figure, write_text
from sana_eval.provenance import Provenance
from sana_eval.reproduce.images import run_folder
from sana_eval.reproduce.runners import CellResult
from sana_eval.results import TABLE_REPORT_SCHEMA as SCHEMA
from sana_eval.results import to_frame
from sana_eval.tables.schema import PaperValue, Table, TableError

VERDICTS = ("reproduced", "differs", "failed", "not run")
CSV_FIELDS = ("table", "row", "group", "label", "column", "unit", "paper", "reproduced", "delta", "verdict",
              "reason", "command", "notes", "detail")   # then one "extras.<name>" column per extra number
MARK = {"reproduced": "✓", "differs": "✗", "failed": "⚠"}


@dataclass(frozen=True)
class TableReport:
    version: str
    table: Table
    provenance: Provenance
    results: tuple[CellResult, ...]

    @property
    def summary(self) -> dict[str, int]:
        counts = Counter(r.verdict for r in self.results)
        return {v: counts.get(v, 0) for v in VERDICTS}

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "version": self.version, "table": self.table.to_dict(),
                "provenance": self.provenance.to_dict(), "summary": self.summary,
                "results": [r.to_dict() for r in self.results]}

    @classmethod
    def from_dict(cls, data: dict, source: str = "report") -> TableReport:
        if data.get("schema") != SCHEMA:
            raise TableError(f"{source}: schema {data.get('schema')!r}, expected {SCHEMA!r}")
        fields = set(CellResult.__dataclass_fields__)
        results = tuple(CellResult(**{**{k: v for k, v in r.items() if k in fields},
                                      "reasons": tuple(r["reasons"]), "notes": tuple(r["notes"])})
                        for r in data["results"])
        return cls(data["version"], Table.from_dict(data["table"]), Provenance.from_dict(data["provenance"]),
                   results)


def read_report(path: Path) -> TableReport:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TableError(f"{path}: not a readable report ({err})") from None
    return TableReport.from_dict(data, source=str(path))


# ---------------------------------------------------------------------------------------------------------------
# Rendering.

def _beside_paper(value: float | None, paper: str) -> str:
    """A reproduced number set beside the paper's: one digit more than the paper prints; integers stay integers.

    Not the sweeps' `.4g` (sweeps.py): a table cell has a printed paper value to match, a sweep point has none.
    """
    if value is None:
        return ""
    if float(value).is_integer() and "." not in paper:
        return str(int(value))
    return f"{value:.{PaperValue(paper).decimals + 1}f}"


def _signed(value: float | None, paper: str) -> str:
    text = _beside_paper(value, paper)
    return f"+{text}" if value is not None and value >= 0 else text


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _not_run_sections(report: TableReport) -> list[str]:
    """Each unmet need once, with the cells it blocks; then each command that would run a blocked cell."""
    blocked: dict[str, list[str]] = {}
    commands: dict[str, None] = {}
    for r in report.results:
        if r.verdict != "not run":
            continue
        for reason in r.reasons:
            blocked.setdefault(reason, []).append(f"{r.row} · {r.column}")
        if r.command:
            commands.setdefault(r.command)
    if not blocked:
        return []
    out = ["", "## Why cells were not run", ""]
    for reason, cells in sorted(blocked.items(), key=lambda item: -len(item[1])):
        shown = ", ".join(cells[:6]) + (f", … ({len(cells)} cells)" if len(cells) > 6 else "")
        out.append(f"- {reason} — {shown}")
    if commands:
        out += ["", "Commands that run them once their needs are met:", "", "```", *commands, "```"]
    return out


def render_markdown(report: TableReport, figure: str | None = None,
                    galleries: tuple[tuple[str, str], ...] = ()) -> str:
    """`figure`: the plot's file name beside the report; `galleries`: (run, link) sample pages of the image runs."""
    table, prov = report.table, report.provenance
    note_no = {id(n): i for i, n in enumerate(table.notes, 1)}
    by_cell = {(r.row, r.column): r for r in report.results}

    def extras_of(key: str) -> list[str]:
        """The extra numbers' names of a column's cells, in first-seen order."""
        return list(dict.fromkeys(name for r in report.results if r.column == key for name in r.extras))

    def cell_text(r: CellResult) -> str:
        notes = "".join(f" [n{note_no[id(n)]}]" for n in table.notes_for(r.row, r.column))
        if r.verdict == "not run":
            return f"{r.paper} ·{notes}"
        if r.verdict == "failed":
            return f"{r.paper} → ⚠{notes}"
        return f"{r.paper} → {_beside_paper(r.reproduced, r.paper)} {MARK[r.verdict]}{notes}"

    s = report.summary
    out = [f"# Table {table.number}: {table.title}", "",
           f"Report `{report.version}` · SANA (arXiv 2410.10629) [{table.source}]"
           f"{'' if table.verified else ' — **transcribed from an image, unverified**'} · "
           f"{prov.code} · {prov.utc_time}", "",
           f"> {table.caption}", "",
           f"**{s['reproduced']} reproduced, {s['differs']} differ, {s['failed']} failed, {s['not run']} not run** "
           f"of {len(report.results)} cells. A cell reads `paper → ours` with ✓ within tolerance, ✗ outside, "
           f"⚠ failed; `paper ·` was not run (reasons below); [nK] points at a note."
           + (" A column `X · <setting> <value>` holds the same cell made with that setting changed (another "
              "scorer protocol, another flow shift, an unofficial scorer where the paper's is missing and the cell "
              "is not run): shown, never compared with the paper (docs/protocols.md §9)."
              if any(r.extras for r in report.results) else ""),
           "", "## Paper vs. reproduced", ""]
    header = [h for c in table.columns for h in [(c, None), *((c, name) for name in extras_of(c.key))]]
    out += ["| " + " | ".join(["Row"] + [_md(c.name if name is None else f"{c.name} · {name}")
                                         for c, name in header]) + " |",
            "|" + "---|" * (len(header) + 1)]
    for row in table.rows:
        cells = [by_cell[row.id, c.key] for c, _ in header]
        out.append("| " + " | ".join([_md(row.id)] + [_md(cell_text(r) if name is None
                                                          else _beside_paper(r.extras.get(name), r.paper))
                                                      for r, (_, name) in zip(cells, header)]) + " |")
    ran = [r for r in report.results if r.verdict != "not run"]
    if ran:
        out += ["", "## Cells that ran", ""]
        if figure:
            out += [f"![Table {table.number}: reproduced vs. paper, relative difference per cell]({figure})", ""]
        extras = list(dict.fromkeys(name for r in ran for name in r.extras))
        out += ["| " + " | ".join(["Row", "Column", "Paper", "Ours", "Δ", "Verdict", *map(_md, extras), "Detail"])
                + " |", "|" + "---|" * (len(extras) + 7)]
        out += [f"| {_md(r.row)} | {_md(table.column(r.column).name)} | {r.paper} | "
                f"{_beside_paper(r.reproduced, r.paper)} | {_signed(r.delta, r.paper)} | {r.verdict} | "
                + "".join(f"{_beside_paper(r.extras.get(name), r.paper)} | " for name in extras)
                + f"{_md('; '.join(filter(None, (r.detail, r.reason))))} |" for r in ran]
    if galleries:
        out += ["", "## Sample galleries", ""] + [f"- [{_md(run)}]({link})" for run, link in galleries]
    out += _not_run_sections(report)
    out += ["", "## Tolerances", ""]
    out += [f"- **{c.name}** — {c.tolerance.describe()}" for c in table.columns]
    out += ["", "## Protocols", "", "How each benchmark's official rule, SANA's toolkit and this harness differ, and "
            "the option for each alternative: `docs/protocols.md` §9 in the sana-eval repository."]
    if table.notes:
        out += ["", "## Notes", ""]
        for note in table.notes:
            where = ", ".join(f"{row} · {col}" for row, col in note.cells) or "whole table"
            out.append(f"- **n{note_no[id(note)]}** ({note.ref}; {where}): {note.text}")
    out += ["", "## Provenance", "",
            (f"- git: `{prov.git_commit or 'no commit'}`{' + uncommitted changes' if prov.git_dirty else ''}"
             if prov.git_checkout else f"- code: {prov.code}; full build commit `{prov.git_commit or '-'}`"),
            f"- time (UTC): {prov.utc_time}",
            f"- python {prov.python}; " + ", ".join(f"{k} {v}" for k, v in prov.packages.items() if v),
            f"- {prov.platform}; CPU {prov.cpu}; GPUs {', '.join(prov.gpus) or 'none'}"
            f"; driver {prov.gpu_driver or '-'}; CUDA {prov.cuda or '-'}",
            f"- seeds {prov.seeds or '-'}; weights {prov.weights_sha256 or '-'}",
            "- resolved config, recipes and every cell: the JSON beside this file (rerunnable).", ""]
    return "\n".join(out)


def render_csv(report: TableReport) -> str:
    """One line per cell: the report's DataFrame (`sana_eval.results.to_frame`) with the lists joined by "; " and
    each extra number in an "extras.<name>" column (empty where a cell has none)."""
    frame = to_frame(report.to_dict())
    frame["reason"] = frame["reasons"].str.join("; ")
    frame["notes"] = frame["notes"].str.join("; ")
    extras = pd.DataFrame(frame["extras"].tolist(), index=frame.index, dtype=float).add_prefix("extras.")
    return frame[list(CSV_FIELDS)].join(extras).to_csv(index=False, lineterminator="\n")


# ---------------------------------------------------------------------------------------------------------------
# Writing: every file goes to a temporary name and is renamed into place.

def plot_report(report: TableReport, path: Path) -> Path | None:
    """`tableN.png`: (ours − paper) / |paper| per cell with a number, the tolerance band shaded behind each bar;
    None when no cell has one. Relative differences put cells of every unit on one axis."""
    from matplotlib.figure import Figure  # heavy, and only the plot needs it: loaded when a plot is made

    table = report.table
    cells = [r for r in report.results if r.reproduced is not None and PaperValue(r.paper).value]
    if not cells:
        return None
    colour = {"reproduced": "tab:green", "differs": "tab:red"}
    fig = Figure(figsize=(8.0, 1.4 + 0.32 * len(cells)), layout="constrained")
    ax = fig.add_subplot()
    for y, r in enumerate(reversed(cells)):
        paper = PaperValue(r.paper)
        tol = table.column(r.column).tolerance
        printed = 0.5 * 10.0 ** -paper.decimals
        allowed = {"exact": 0.0, "rounding": printed, "abs": max(tol.value, printed),
                   "rel": max(tol.value * abs(paper.value), printed)}[tol.kind]
        band = 100 * allowed / abs(paper.value)
        ax.barh(y, 2 * band, left=-band, height=0.8, color="0.88")
        rel = 100 * (r.reproduced - paper.value) / abs(paper.value)
        ax.barh(y, rel, height=0.5, color=colour[r.verdict])
        ax.annotate(f"{r.paper} → {_beside_paper(r.reproduced, r.paper)}", (rel, y), xytext=(4 if rel >= 0 else -4, 0),
                    textcoords="offset points", va="center", ha="left" if rel >= 0 else "right", fontsize=7)
    ax.set_yticks(range(len(cells)), [f"{r.row} · {table.column(r.column).name}" for r in reversed(cells)],
                  fontsize=7)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.margins(x=0.25)
    ax.set_xlabel("(ours − paper) / |paper|, %   (grey: tolerance; green within, red outside)")
    skipped = sum(r.reproduced is not None for r in report.results) - len(cells)
    ax.set_title(f"Table {table.number}: {table.title}" + (f" ({skipped} cells with paper value 0 not shown)"
                                                           if skipped else ""), fontsize=9)
    return save_figure(fig, path)


def _galleries(report: TableReport, version_dir: Path) -> tuple[tuple[str, str], ...]:
    """Sample pages (`gallery.html`) of the image runs behind the cells that ran, linked relative to the report."""
    ran = {(r.row, r.column) for r in report.results if r.verdict != "not run" or r.extras}  # extras: images made
    pages: dict[Path, None] = {}
    for row in report.table.rows:
        for key, cell in row.cells.items():
            if (row.id, key) in ran and cell.recipe and cell.recipe.kind == "generate_score":
                page = run_folder(cell.recipe.settings) / GALLERY
                if page.is_file():
                    pages.setdefault(page)
    return tuple((page.parent.name, Path(os.path.relpath(page, version_dir)).as_posix()) for page in pages)


def write_report(report: TableReport, version_dir: Path) -> list[Path]:
    """`tableN.md`, `.json`, `.csv` and, when a cell has a number, `.png` in `version_dir`; the JSON is rendered
    first so a bad report leaves no partial set behind."""
    payload = json.dumps(report.to_dict(), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    stem = Path(version_dir) / report.table.id
    written = [write_text(stem.with_suffix(".json"), payload)]
    figure = plot_report(report, stem.with_suffix(".png"))
    if figure is None:                     # a plot from an earlier run of this version would contradict the report
        stem.with_suffix(".png").unlink(missing_ok=True)
    markdown = render_markdown(report, figure.name if figure else None, _galleries(report, Path(version_dir)))
    written += [write_text(stem.with_suffix(".md"), markdown), write_text(stem.with_suffix(".csv"),
                                                                          render_csv(report))]
    return written + ([figure] if figure else [])


def _index_rows(root: Path) -> Iterable[str]:
    for version_dir in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True):
        reports = []
        for path in sorted(version_dir.glob("table*.json"), key=lambda p: (len(p.stem), p.stem)):
            try:
                reports.append(read_report(path))
            except TableError:
                continue                   # not ours or unreadable: the index lists only valid reports
        if not reports:
            continue
        total = Counter()
        for rep in reports:
            total.update(rep.summary)
        prov = reports[0].provenance
        links = ", ".join(f"[{rep.table.number}]({version_dir.name}/{rep.table.id}.md)" for rep in reports)
        yield (f"| `{version_dir.name}` | {prov.utc_time} | {prov.code.removeprefix('commit ')}"
               f" | {links} | {total['reproduced']} | {total['differs']} | {total['failed']} | {total['not run']} |")


def write_index(root: Path) -> Path:
    """Regenerate `root/README.md` from every version folder's JSON reports, newest version first."""
    lines = ["# Reproduction reports", "",
             "One folder per version (`<UTC date>-<git sha>[-dirty]`, or `<UTC date>-v<version>[-<build sha>]` "
             "from an installed package without a git checkout, unless named); each table has `.md` (read this), "
             "`.json` (everything: paper values, recipes, provenance; rerunnable), `.csv` (one line per "
             "cell) and `.png` (reproduced vs. paper, when a cell ran). Regenerated on every "
             "`sana-eval reproduce`.", "",
             "| Version | Time (UTC) | Commit | Tables | Reproduced | Differ | Failed | Not run |",
             "|---|---|---|---|---|---|---|---|", *_index_rows(Path(root)), ""]
    benches = [f"- `{d.name}`: " + ", ".join(f"[{md.stem}]({d.name}/{md.name})" for md in sorted(d.glob("*.md")))
               for d in sorted(Path(root).iterdir(), key=lambda p: p.name, reverse=True)
               if d.is_dir() and not any(d.glob("table*.json")) and any(d.glob("*.md"))]
    if benches:  # `sana-eval bench` outputs kept beside the table reports (speed suites, kernel comparisons)
        lines += ["Benchmark runs (`sana-eval bench`, no table report):", "", *benches, ""]
    return write_text(Path(root) / "README.md", "\n".join(lines))
