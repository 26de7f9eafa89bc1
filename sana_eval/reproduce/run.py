"""Reproduce paper tables: run every cell whose needs this machine meets, report the rest with the reason."""
from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path

from tqdm.auto import tqdm

from model.config import get_preset
from sana_eval.paths import DATA_ENV, WEIGHTS_ENV, data_dir
from sana_eval.provenance import Provenance, collect, default_version
from sana_eval.reproduce.report import TableReport, read_report, write_index, write_report
from sana_eval.reproduce.runners import RUNNERS, evaluate_table
from sana_eval.tables import TABLES, Table, get_table

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _check_version(version: str) -> str:
    if not _VERSION.match(version):
        raise ValueError(f"report version {version!r} must be letters, digits, '.', '_' or '-' (a folder name)")
    return version


def _resolved_config(table: Table) -> dict:
    """What the table's recipes resolve to on this machine: presets in full, runners, data and weight roots."""
    recipes = [c.recipe for r in table.rows for c in r.cells.values() if c.recipe]
    presets = sorted({str(r.settings["preset"]) for r in recipes if "preset" in r.settings})
    home = str(Path.home())
    return {
        "table": table.id,
        "presets": {name: dataclasses.asdict(get_preset(name)) for name in presets},
        "runners": sorted(RUNNERS),
        "data_dir": str(data_dir()).replace(home, "~"),   # no user names in reports
        "data_dir_from_env": bool(os.environ.get(DATA_ENV)),
        "weights_env_set": bool(os.environ.get(WEIGHTS_ENV)),
    }


def _seeds(table: Table) -> dict[str, int]:
    """The generation seeds the table's recipes use (images are seeded per index from these)."""
    seeds = sorted({int(c.recipe.settings["seed"]) for r in table.rows for c in r.cells.values()
                    if c.recipe and c.recipe.settings.get("seed") is not None})
    return {f"generation[{i}]": seed for i, seed in enumerate(seeds)}


def _run(tables: list[Table], out_dir: Path, version: str | None, base: Provenance) -> list[Path]:
    version = _check_version(version or default_version(base))
    written = []
    start = time.perf_counter()
    with tqdm(tables, desc="reproduce", unit="table", dynamic_ncols=True) as bar:
        for table in bar:
            bar.set_postfix_str(table.id)
            began = time.perf_counter()
            provenance = dataclasses.replace(base, config=_resolved_config(table), seeds=_seeds(table))
            report = TableReport(version, table, provenance, tuple(evaluate_table(table)))
            written += write_report(report, Path(out_dir) / version)
            counts = ", ".join(f"{n} {verdict}" for verdict, n in report.summary.items() if n)
            bar.write(f"{table.id}: {counts or 'no cells'} ({time.perf_counter() - began:.1f} s)")
    written.append(write_index(Path(out_dir)))
    print(f"reproduce: {len(tables)} table(s) in {time.perf_counter() - start:.1f} s into {Path(out_dir) / version}")
    return written


def reproduce(table_ids: list[str], out_dir: Path, version: str | None = None) -> list[Path]:
    """Write `out_dir/<version>/tableN.{md,json,csv}` for each table and regenerate `out_dir/README.md`.

    "all" stands for Tables 1–14. Unknown table ids fail before anything runs.
    `version` defaults to `<UTC date>-<short git sha>[-dirty]` (installed without a checkout:
    `<UTC date>-v<package version>[-<build sha>]`); the git state is read once, before any report is written.
    Returns the written paths, the index last.
    """
    ids = [t for given in table_ids for t in (TABLES if given.strip().lower() == "all" else (given,))]
    tables = list({table.id: table for table in map(get_table, ids)}.values())   # each table once, in order
    if not tables:
        raise ValueError("no tables to reproduce")
    return _run(tables, out_dir, version, collect())


def rerun(report_json: Path, out_dir: Path, version: str | None = None) -> list[Path]:
    """Rerun a report from its JSON: the table, paper values and recipes stored there, not today's registry."""
    table = read_report(Path(report_json)).table
    return _run([table], out_dir, version, collect())
