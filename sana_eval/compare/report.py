"""The human and CI side of `sana-eval compare`: Markdown table, delta plot, JSON record, HTML page, exit code."""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from metrics.base import sha256_file
from sana_eval.compare.deltas import (
    Check,
    CompareError,
    Comparison,
    check_regressions,
    compare_results,
    parse_fail_rule,
)
from sana_eval.compare.page import Checkpoint, find_images, write_page
from sana_eval.compare.plots import delta_figure
from sana_eval.io import save_figure, write_text
from sana_eval.provenance import collect
from sana_eval.results import COMPARE_SCHEMA, read_results


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
    """`compare.png`: `delta_figure`."""
    return save_figure(delta_figure(comparison), path)


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
                    device: str | None = None, others: Sequence[Path] = (), html: Path | None = None,
                    images: Sequence[str | None] = (), html_prompts: int = 300) -> int:
    """`sana-eval compare`: print the table, write reports to `out` and a page to `html`; 0 ok, 1 a
    --fail-if-worse rule tripped. `others` are more candidates, each compared with `run_a` like `run_b`;
    `images` names each run's image folder in order (None or missing: the one its results record).

    Bad inputs raise CompareError / ProtocolMismatchError (ValueError): the CLI prints them and exits 2.
    """
    runs = [Path(run_a), Path(run_b), *map(Path, others)]
    if out is not None and len(runs) > 2:
        raise CompareError(f"--out writes one A/B comparison; {len(runs)} runs given (use --html for more)")
    if len(images) > len(runs):
        raise CompareError(f"--images given {len(images)} times for {len(runs)} runs")
    for rule in fail_if_worse:
        parse_fail_rule(rule)          # refuse a typo before minutes of bootstrapping
    bundles = [read_results(p) for p in runs]
    comparisons = [compare_results(bundles[0], b, n_boot=n_boot, seed=seed, confidence=confidence, device=device,
                                   names=(str(runs[0]), str(p))) for p, b in zip(runs[1:], bundles[1:])]
    checks = [check_regressions(c, fail_if_worse, require_significant) for c in comparisons]
    for comparison, pair_checks in zip(comparisons, checks):
        print(render_markdown(comparison, pair_checks))
    if out is not None:
        settings = {"fail_if_worse": list(fail_if_worse), "require_significant": require_significant,
                    "n_boot": n_boot, "seed": seed, "confidence": confidence}
        for path in write_comparison(comparisons[0], checks[0], Path(out), settings=settings):
            print(f"wrote {path}")
    if html is not None:
        given = [*images, *[None] * (len(runs) - len(images))]
        checkpoints = [Checkpoint(str(p), b, Path(g) if g else find_images(b)) for p, b, g in zip(runs, bundles, given)]
        print(f"wrote {write_page(checkpoints, comparisons, Path(html), max_prompts=html_prompts)}")
    failed = [(c.run_b, ch) for c, pair_checks in zip(comparisons, checks) for ch in pair_checks if ch.failed]
    for run, ch in failed:
        print(f"sana-eval compare: {ch.describe()}" + (f" ({run})" if others else ""), file=sys.stderr)
    return 1 if failed else 0
