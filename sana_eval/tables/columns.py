"""Column kinds shared by several tables, each with the tolerance rule within which a cell counts as reproduced."""
from __future__ import annotations

from sana_eval.tables.schema import Column, Tolerance

EXACT = Tolerance("exact", why="an architecture hyper-parameter is either right or wrong")
ROUNDED = Tolerance("rounding", why="a parameter count is deterministic; the paper's printed precision is the "
                                    "only slack")
TIMING = Tolerance("rel", 0.15, why="run-to-run and software-stack spread on the paper's GPU (an A100 in FP16); "
                                   "on any other GPU the verdict compares hardware, not the reproduction")
FID = Tolerance("abs", 0.25, why="seed, JPEG and resize protocol noise of FID over 30K images")
CLIP = Tolerance("abs", 0.2, why="seed and preprocessing noise of the mean CLIP score")
GENEVAL = Tolerance("abs", 0.02, why="about one standard error over 2,212 images")
GENEVAL_TASK = Tolerance("abs", 0.03, why="one task holds 80–100 prompts x 4 images")
DPG = Tolerance("abs", 1.0, why="VQA scorer noise over 1,065 prompts")
DPG_CATEGORY = Tolerance("abs", 1.5, why="a category holds a fraction of the 1,065 prompts")
REWARD = Tolerance("abs", 0.05, why="ImageReward over 1,000 images")


def params(unit: str, name: str = "Params") -> Column:
    return Column("params", f"{name} ({unit})", unit, None, ROUNDED)


def throughput(name: str = "Throughput (samples/s)") -> Column:
    return Column("throughput", name, "/s", True, TIMING)


def latency(unit: str = "s", name: str = "Latency (s)") -> Column:
    return Column("latency", name, unit, False, TIMING)


def speedup() -> Column:
    return Column("speedup", "Speedup", "x", True, TIMING)


def fid() -> Column:
    return Column("fid", "FID", "", False, FID)


def clip() -> Column:
    return Column("clip", "CLIP", "", True, CLIP)


def geneval(key: str = "geneval", name: str = "GenEval") -> Column:
    return Column(key, name, "", True, GENEVAL if key in ("geneval", "overall") else GENEVAL_TASK)


def dpg(key: str = "dpg", name: str = "DPG") -> Column:
    return Column(key, name, "", True, DPG if key in ("dpg", "overall") else DPG_CATEGORY)


def image_reward(name: str = "ImageReward") -> Column:
    return Column("image_reward", name, "", True, REWARD)
