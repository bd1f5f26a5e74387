"""The comparison's plots: training curves per arm, and gradient norm and gain product by
depth (matplotlib Figure objects, no pyplot global state)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from netadv.experiments.report.runs import Run, is_number


def plot_curves(arms: dict[str, list[Run]], path: Path) -> bool:
    """Test quality, train loss and test loss per epoch, one line per arm (mean over finished
    seeds, band = min to max); False (nothing written) when no finished run has metrics."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    finished = {a: [r for r in g if r.status == "ok" and r.metrics] for a, g in arms.items()}
    finished = {a: g for a, g in finished.items() if g}
    if not finished:
        return False
    measures = next(iter(arms.values()))[0].measures
    quality = (measures.test_key, measures.primary.scale, f"test {measures.primary.label}")
    panels = [quality, ("train_loss", 1.0, "train loss"), ("test_loss", 1.0, "test loss")]
    colors = _colors(list(arms))
    fig = Figure(figsize=(15, 4.2))
    for ax, (key, scale, title) in zip(fig.subplots(1, 3), panels):
        for arm, runs in finished.items():
            matrix = _epoch_matrix(runs, key, scale)
            if not np.isfinite(matrix).any():
                continue
            x, mean, lo, hi = _band(matrix)
            ax.plot(x, mean, color=colors[arm], marker=".", label=f"{arm} (n={len(runs)})")
            ax.fill_between(x, lo, hi, color=colors[arm], alpha=0.2)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("mean over finished seeds, band = min to max", fontsize=10)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.12, top=0.86, wspace=0.2)
    fig.savefig(path, dpi=100)
    return True


def plot_by_depth(
    arms: dict[str, list[Run]],
    path: Path,
    extract: Callable[[dict[str, Any]], list[float]],
    ylabel: str,
) -> bool:
    """One line per arm and moment: the mean over finished seeds of ``extract(row)`` for the
    first diagnostics row (at initialisation, dashed) and the last (after training, solid)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    colors = _colors(list(arms))
    lines = {}
    for arm, group in arms.items():
        done = [r for r in group if r.status == "ok" and r.diagnostics]
        for moment, index in (("init", 0), ("end", -1)):
            vectors = [v for v in (extract(r.diagnostics[index]) for r in done) if v]
            if vectors:
                lines[arm, moment] = (_depth_matrix(vectors), len(vectors))
    lines = {k: v for k, v in lines.items() if np.isfinite(v[0]).any()}
    if not lines:
        return False
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for (arm, moment), (matrix, n) in lines.items():
        x, mean, lo, hi = _band(matrix)
        style = "--" if moment == "init" else "-"
        label = f"{arm}, {'at init' if moment == 'init' else 'after training'} (n={n})"
        ax.plot(x, mean, style, color=colors[arm], marker=".", label=label)
        ax.fill_between(x, lo, hi, color=colors[arm], alpha=0.1 if moment == "init" else 0.2)
    ax.set_yscale("log")
    ax.set_xlabel("depth (1 = nearest the input)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(
        f"{ylabel}: first (dashed) and last (solid) diagnostics step; mean over seeds, "
        "band = min to max",
        fontsize=9,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.92)
    fig.savefig(path, dpi=100)
    return True


def grad_norms(row: dict[str, Any]) -> list[float]:
    """Per-layer weight-gradient norms of a diagnostics row, input side first."""
    return [_finite(v) for v in (row.get("grad_norms") or {}).values()]


def gain_products(row: dict[str, Any]) -> list[float]:
    """The running gain product after each activation site of a diagnostics row."""
    return [_finite(s.get("gain_product")) for s in (row.get("sites") or [])]


def _colors(arms: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {arm: cmap(i % 10) for i, arm in enumerate(arms)}


def _finite(value: Any) -> float:
    return float(value) if is_number(value) else math.nan


def _band(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise mean, min and max over rows, ignoring NaN; x positions 1..width of columns
    with at least one finite value."""
    keep = np.isfinite(matrix).any(axis=0)
    m = matrix[:, keep]
    x = np.arange(1, matrix.shape[1] + 1)[keep]
    return x, np.nanmean(m, axis=0), np.nanmin(m, axis=0), np.nanmax(m, axis=0)


def _epoch_matrix(runs: list[Run], key: str, scale: float = 1.0) -> np.ndarray:
    epochs = max((int(row["epoch"]) for r in runs for row in r.metrics), default=0)
    matrix = np.full((len(runs), epochs), math.nan)
    for i, run in enumerate(runs):
        for row in run.metrics:
            matrix[i, int(row["epoch"]) - 1] = scale * _finite(row.get(key))
    return matrix


def _depth_matrix(vectors: list[list[float]]) -> np.ndarray:
    width = max(len(v) for v in vectors)
    matrix = np.full((len(vectors), width), math.nan)
    for i, v in enumerate(vectors):
        matrix[i, : len(v)] = v
    matrix[~(matrix > 0)] = math.nan  # log scale: only positive values
    return matrix
