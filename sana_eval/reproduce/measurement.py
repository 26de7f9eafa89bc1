"""What a runner returns for one table cell, and the unit scales of the tables' columns."""
from __future__ import annotations

from dataclasses import dataclass, field

UNIT_SCALE = {"": 1.0, "M": 1e6, "B": 1e9, "T": 1e12}
# Block-design settings of a "macs" or "speed" recipe, applied over its preset (model/config.py, paper Table 8).
BLOCK_DESIGN = ("self_attention", "ffn", "mlp_ratio", "in_channels", "patch_size")


@dataclass(frozen=True)
class Measurement:
    value: float                           # in the column's unit; the number compared with the paper
    detail: str = ""                       # the unrounded quantity, for the report
    # Named numbers in the column's unit shown as extra report columns, never compared (docs/protocols.md §9): the
    # official/fixed scorer protocol beside the paper's, the revised flow shift beside the paper-time one.
    extras: dict[str, float] = field(default_factory=dict)
