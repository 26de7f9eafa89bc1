"""The comparison's figures (matplotlib, no pyplot): B − A with intervals, and each checkpoint's value per key."""
from __future__ import annotations

import pandas as pd

from sana_eval.compare.deltas import Comparison


def delta_figure(comparison: Comparison, candidate: str = "B"):
    """One panel per metric: each key's B − A as a point with its interval as a bar; `candidate` names B."""
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
        ax.set_title(f"{metric}: {candidate} − A ({'higher' if rows[0].higher_is_better else 'lower'} is better)",
                     fontsize=10)
    if not metrics:
        axes[0].set_title("no metric compared")
    return fig


def values_figure(values: pd.DataFrame):
    """One panel per metric: each key's (category's) value for every checkpoint, as grouped horizontal bars.

    `values`: `sana_eval.results.to_frame` of the checkpoints' bundles, concatenated (checkpoint order kept).
    """
    from matplotlib.figure import Figure  # heavy, and only the plot needs it: loaded when a plot is made

    metrics = list(dict.fromkeys(values["metric"]))
    checkpoints = list(dict.fromkeys(values["checkpoint"]))
    tables = {m: values[values["metric"] == m].pivot_table(index="key", columns="checkpoint", values="value",
                                                            sort=False).reindex(columns=checkpoints)
              for m in metrics}
    heights = [max(1, len(t)) for t in tables.values()]
    fig = Figure(figsize=(7, 1.4 + 0.3 * len(checkpoints) * sum(heights) + 0.6 * len(metrics)), layout="constrained")
    axes = fig.subplots(max(1, len(metrics)), 1, squeeze=False, height_ratios=heights or None)[:, 0]
    bar = 0.8 / max(1, len(checkpoints))
    for ax, (metric, table) in zip(axes, tables.items()):
        for j, name in enumerate(checkpoints):
            ax.barh([y + j * bar for y in range(len(table))], table[name], height=bar, label=name)
        ax.set_yticks([y + bar * (len(checkpoints) - 1) / 2 for y in range(len(table))], list(table.index))
        ax.invert_yaxis()
        ax.set_title(metric, fontsize=10)
    axes[0].legend(fontsize=8, loc="lower right")
    return fig
