"""The human and CI side of `sana-eval compare`: Markdown table, delta plot, JSON record, exit code."""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from metrics.base import sha256_file
from sana_eval.compare.deltas import COMPARE_SCHEMA, Check, Comparison, check_regressions, compare, parse_fail_rule
from sana_eval.io import save_figure, write_text
from sana_eval.provenance import collect


def _f(x: float | None) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.4f}"


def render_markdown(comparison: Comparison, checks: Sequence[Check] = ()) -> str:
    c = comparison
    pct = f"{100 * c.confidence:g}%"
    out = ["# Checkpoint comparison", "", f"- A: `{c.run_a}`", f"- B: `{c.run_b}`",
           f"- Δ = B − A with {pct} percentile bootstrap intervals ({c.n_boot} resamples, seed {c.seed}).", "",
           f"| Key | A | B | Δ | {pct} CI | Better | Verdict | Method |", "|---|---|---|---|---|---|---|---|"]
    for r in c.rows:
        ci = "—" if r.ci is None else f"[{_f(r.ci[0])}, {_f(r.ci[1])}]"
        sign = "+" if r.delta >= 0 else ""
        out.append(f"| {r.key} | {_f(r.a)} | {_f(r.b)} | {sign}{_f(r.delta)} | {ci} | "
                   f"{'higher' if r.higher_is_better else 'lower'} | {r.verdict} | {r.method} |")
    if checks:
        out += ["", "## Regression checks", "", *[f"- {ch.describe()}" for ch in checks]]
    if c.notes:
        out += ["", "## Notes", "", *[f"- {n}" for n in c.notes]]
    return "\n".join(out) + "\n"


def plot_deltas(comparison: Comparison, path: Path) -> Path:
    """One panel per metric: each key's B − A as a point with its interval as a bar."""
    from matplotlib.figure import Figure  # heavy, and only the plot needs it: loaded when a plot is made

    metrics = list(dict.fromkeys(r.metric for r in comparison.rows))
    heights = [max(1, sum(r.metric == m for r in comparison.rows)) for m in metrics]
    fig = Figure(figsize=(7, 1.2 + 0.45 * sum(heights) + 0.6 * len(metrics)), layout="constrained")
    axes = fig.subplots(max(1, len(metrics)), 1, squeeze=False, height_ratios=heights or None)[:, 0]
    colour = {"better": "tab:green", "worse": "tab:red"}
    for ax, metric in zip(axes, metrics):
        rows = [r for r in comparison.rows if r.metric == metric]
        for y, r in enumerate(rows):
            err = None if r.ci is None else [[max(0.0, r.delta - r.ci[0])], [max(0.0, r.ci[1] - r.delta)]]
            ax.errorbar([r.delta], [y], xerr=err, fmt="o" if err else "x", capsize=4,
                        color=colour.get(r.verdict, "tab:gray"))
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)), [r.key for r in rows])
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.invert_yaxis()
        ax.set_title(f"{metric}: B − A ({'higher' if rows[0].higher_is_better else 'lower'} is better)",
                     fontsize=10)
    if not metrics:
        axes[0].set_title("no metric compared")
    return save_figure(fig, path)


def write_comparison(comparison: Comparison, checks: Sequence[Check], out_dir: Path, *,
                     settings: Mapping[str, Any] | None = None) -> list[Path]:
    """`compare.json` (everything, with inputs' sha256 and provenance), `compare.md`, `compare.png`."""
    inputs = {side: {"path": p, "sha256": sha256_file(p) if Path(p).is_file() else None}
              for side, p in (("a", comparison.run_a), ("b", comparison.run_b))}
    payload = {"schema": COMPARE_SCHEMA, "inputs": inputs, "settings": dict(settings or {}),
               **comparison.to_dict(), "checks": [asdict(ch) for ch in checks],
               "provenance": collect(seeds={"bootstrap": comparison.seed}).to_dict()}
    text = json.dumps(payload, indent=1, allow_nan=False) + "\n"  # rendered first: a bad value writes nothing
    out_dir = Path(out_dir)
    return [write_text(out_dir / "compare.json", text),
            write_text(out_dir / "compare.md", render_markdown(comparison, checks)),
            plot_deltas(comparison, out_dir / "compare.png")]


def compare_command(run_a: Path, run_b: Path, fail_if_worse: list[str], out: Path | None, n_boot: int = 1000,
                    seed: int = 0, *, require_significant: bool = False, confidence: float = 0.95,
                    device: str | None = None) -> int:
    """`sana-eval compare`: print the table, write reports to `out`; 0 ok, 1 a --fail-if-worse rule tripped.

    Bad inputs raise CompareError / ProtocolMismatchError (ValueError): the CLI prints them and exits 2.
    """
    for rule in fail_if_worse:
        parse_fail_rule(rule)          # refuse a typo before minutes of bootstrapping
    comparison = compare(Path(run_a), Path(run_b), n_boot=n_boot, seed=seed, confidence=confidence,
                         device=device)
    checks = check_regressions(comparison, fail_if_worse, require_significant)
    print(render_markdown(comparison, checks))
    if out is not None:
        settings = {"fail_if_worse": list(fail_if_worse), "require_significant": require_significant,
                    "n_boot": n_boot, "seed": seed, "confidence": confidence}
        for path in write_comparison(comparison, checks, Path(out), settings=settings):
            print(f"wrote {path}")
    failed = [ch for ch in checks if ch.failed]
    for ch in failed:
        print(f"sana-eval compare: {ch.describe()}", file=sys.stderr)
    return 1 if failed else 0
