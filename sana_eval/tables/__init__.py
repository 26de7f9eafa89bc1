"""Registry of the paper's Tables 1–14 as typed data (no runner code: `sana_eval.reproduce` fills the cells);
`get_table("table7")` looks one up."""
from __future__ import annotations

import difflib

from sana_eval.tables.architecture import TABLE5, TABLE6
from sana_eval.tables.block_design import TABLE8, TABLE12
from sana_eval.tables.comparison import TABLE7, TABLE10, TABLE11
from sana_eval.tables.schema import Cell, Column, Need, Note, PaperValue, Recipe, Row, Table, TableError, Tolerance
from sana_eval.tables.speed import TABLE14
from sana_eval.tables.text_encoders import TABLE9, TABLE13
from sana_eval.tables.training_ablations import TABLE1, TABLE2, TABLE3, TABLE4

TABLES: dict[str, Table] = {t.id: t for t in sorted(
    (TABLE1, TABLE2, TABLE3, TABLE4, TABLE5, TABLE6, TABLE7, TABLE8, TABLE9, TABLE10, TABLE11, TABLE12, TABLE13,
     TABLE14), key=lambda t: t.number)}


class UnknownTableError(TableError, KeyError):
    def __str__(self) -> str:               # KeyError would print the message in quotes
        return str(self.args[0])


def get_table(table_id: str) -> Table:
    """Look up by id ("table7"); "7" and "Table 7" work too. Unknown ids raise with a "did you mean"."""
    key = table_id.strip().lower().replace(" ", "")
    key = f"table{key}" if key.isdigit() else key
    if key in TABLES:
        return TABLES[key]
    close = difflib.get_close_matches(key, TABLES, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(TABLES)}"
    raise UnknownTableError(f"unknown table {table_id!r}{hint}")


__all__ = ["TABLES", "get_table", "UnknownTableError", "Table", "Row", "Cell", "Column", "Need", "Note",
           "PaperValue", "Recipe", "TableError", "Tolerance"]
