"""The study's cross-experiment figure (matplotlib Figure objects, no pyplot state)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from netadv.experiments.study.spec import Summary
from netadv.experiments.tasks import metrics_by_column

MAX_LINES = 10


def plot_summary(rows: list[dict[str, Any]], summary: Summary, path: Path) -> bool:
    """Three panels against ``x``: the metric (mean, error bar = std), the input layer's
    gradient norm and the chain's gain product (dashed at init, solid after training)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    lines: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        lines.setdefault((r["series"], r["arm"]), []).append(r)
    if not lines or len(lines) > MAX_LINES:  # more lines than a figure can show: the table has them
        return False
    cmap = colormaps["tab10"]
    metric = metrics_by_column(rows[0]["metric"]).axis_label
    fig = Figure(figsize=(16, 4.5))
    axes = fig.subplots(1, 3)
    for i, ((series, arm), points) in enumerate(sorted(lines.items())):
        color, label = cmap(i % 10), f"{series} {arm}"
        xs = [p["x"] for p in points]
        axes[0].errorbar(
            xs,
            [p["mean"] for p in points],
            yerr=[p["std"] or 0.0 for p in points],
            color=color,
            marker="o",
            capsize=3,
            label=label,
        )
        for ax, key in ((axes[1], "grad"), (axes[2], "gain")):
            for moment, style in (("init", "--"), ("end", "-")):
                ys = [p[f"{key}_{moment}"] for p in points]
                ys = [y if y is not None and y > 0 else math.nan for y in ys]
                ax.plot(
                    xs,
                    ys,
                    style,
                    color=color,
                    marker=".",
                    label=f"{label}, {'init' if moment == 'init' else 'trained'}",
                )
    titles = (metric, "input-layer weight-gradient norm", "gain product of the whole chain")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(summary.x.split(".")[-1])
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    fig.suptitle(
        "mean over seeds; dashed = first diagnostics step (init), solid = last", fontsize=10
    )
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.12, top=0.88, wspace=0.2)
    fig.savefig(path, dpi=100)
    return True
