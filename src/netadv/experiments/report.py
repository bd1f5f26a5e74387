"""Compare experiment runs: a table of arms with statistics, a ``report.md`` and plots.

A run folder, as the training loop writes it, holds ``config.yaml`` (the config mapping),
``metrics.jsonl`` (one JSON object per evaluated epoch), ``summary.json`` (final numbers, the
``arm`` label and a ``status`` of "ok", "diverged" or "running") and, optionally,
``diagnostics.jsonl`` (per-layer gradient norms and per-site gains). Runs are grouped into arms
by ``summary["arm"]``; every statistic of an arm is over its seeds with status "ok", and
diverged or unfinished runs are counted and listed instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
DIAGNOSTICS_FILE = "diagnostics.jsonl"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE)
STATUSES = ("ok", "diverged", "running")
ALPHA = 0.05  # significance level the findings are stated at
FIX = "rerun it or leave that run out of the comparison"


@dataclass
class Run:
    """One training run as read from its folder."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    diagnostics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def arm(self) -> str:
        return str(self.summary["arm"])

    @property
    def status(self) -> str:
        return str(self.summary["status"])

    @property
    def seed(self) -> Any:
        return self.setting("seed")

    @property
    def task(self) -> str:
        return str(self.setting("task") or "classify")

    def setting(self, key: str) -> Any:
        """A config value, falling back to the summary's copy of it."""
        value = self.config.get(key)
        return self.summary.get(key) if value is None else value


# ---------------------------------------------------------------------------------------------
# Loading


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing, so the run never finished writing it; {FIX}")
    try:
        data = json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path}: not valid JSON ({e}); {FIX}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}; {FIX}")
    return data


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing, so the run never finished writing it; {FIX}")
    try:
        lines = path.read_text().splitlines()
    except ValueError as e:
        raise ValueError(f"{path}: not a text file ({e}); {FIX}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}, line {number}: not valid JSON ({e}); {FIX}") from None
        if not isinstance(row, dict) or "epoch" not in row:
            raise ValueError(f"{path}, line {number}: expected an object with an 'epoch'; {FIX}")
        rows.append(row)
    return rows


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing, so the run never finished writing it; {FIX}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: not valid YAML ({first}); {FIX}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(data).__name__}; {FIX}")
    return data


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_summary(path: Path, summary: dict[str, Any], task: str) -> None:
    if not isinstance(summary.get("arm"), str) or not summary["arm"]:
        raise ValueError(f"{path}: no 'arm' label to group the run by; {FIX}")
    if summary.get("status") not in STATUSES:
        raise ValueError(
            f"{path}: status {summary.get('status')!r} is not one of {', '.join(STATUSES)}; {FIX}"
        )
    if summary["status"] != "ok":
        return
    needed = ("final_bleu" if task == "translate" else "final_top1", "seconds_per_epoch")
    for key in needed:
        if not _is_number(summary.get(key)):
            raise ValueError(
                f"{path}: status is 'ok' but {key!r} is missing or not a finite number; {FIX}"
            )


def load_run(path: str | Path) -> Run:
    """Read one run folder. Raises FileNotFoundError or ValueError, each a one-line message
    naming the file at fault, when a required file is missing or unreadable."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run folder")
    config = _read_config(path / CONFIG_FILE)
    summary = _read_json(path / SUMMARY_FILE)
    metrics = _read_jsonl(path / METRICS_FILE)
    diagnostics = _read_jsonl(path / DIAGNOSTICS_FILE) if (path / DIAGNOSTICS_FILE).exists() else []
    run = Run(path, config, metrics, summary, diagnostics)
    _check_summary(path / SUMMARY_FILE, summary, run.task)
    return run


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """The run folders named by ``paths``: each is a run folder itself (it holds one of
    config.yaml, metrics.jsonl, summary.json) or a folder searched for run folders below it."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: no such folder; pass run folders or folders of runs")
        if any((p / name).exists() for name in RUN_FILES):
            found.append(p)
            continue
        below = sorted({f.parent for name in RUN_FILES for f in p.rglob(name)})
        if not below:
            raise FileNotFoundError(f"{p}: holds no run folders (none has {SUMMARY_FILE})")
        found.extend(below)
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


# ---------------------------------------------------------------------------------------------
# Statistics


def _group(runs: list[Run], baseline: str) -> dict[str, list[Run]]:
    """Runs by arm, the baseline arm first, then arms in order of first appearance."""
    arms: dict[str, list[Run]] = {}
    for run in runs:
        arms.setdefault(run.arm, []).append(run)
    if baseline not in arms:
        raise ValueError(
            f"baseline arm {baseline!r} is not among the arms ({', '.join(arms) or 'none'}); "
            "name one with --baseline ARM"
        )
    tasks = sorted({r.task for r in runs})
    if len(tasks) > 1:
        raise ValueError(f"runs mix tasks ({', '.join(tasks)}); compare one task at a time")
    ordered = {baseline: arms.pop(baseline), **arms}
    return {a: sorted(g, key=lambda r: (r.seed is None, str(r.seed))) for a, g in ordered.items()}


def _describe(values: list[float]) -> dict[str, Any]:
    """Mean, sample std (ddof=1) and the 95% Student-t CI of the mean; None where undefined."""
    n = len(values)
    if n == 0:
        return {"mean": None, "std": None, "ci95": None}
    mean = float(np.mean(values))
    if n < 2:
        return {"mean": mean, "std": None, "ci95": None}
    std = float(np.std(values, ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci95": (mean - half, mean + half)}


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Welch t-test p-value; None with fewer than 2 values on a side or no spread."""
    if len(a) < 2 or len(b) < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return None
    with warnings.catch_warnings():  # scipy warns when one side is constant; p is still exact
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def _last_metric(run: Run, key: str) -> float | None:
    for row in reversed(run.metrics):
        if _is_number(row.get(key)):
            return float(row[key])
    return None


def _target_key(task: str) -> str:
    """The config key of a task's target for "time to target"."""
    return "target_bleu" if task == "translate" else "target_accuracy"


def _time_to(run: Run, target: float) -> float | None:
    """Train seconds (``elapsed``) at the first evaluated epoch whose quality reaches ``target``
    (Top-1 as a fraction, or BLEU)."""
    key = "test_bleu" if run.task == "translate" else "test_top1"
    for row in run.metrics:
        if _is_number(row.get(key)) and row[key] >= target and _is_number(row.get("elapsed")):
            return float(row["elapsed"])
    return None


def _metric_getters(task: str) -> dict[str, Any]:
    """The two quality columns of a task: value of a run (in table units) or None."""
    if task == "translate":
        return {
            "bleu": lambda r: float(r.summary["final_bleu"]),
            "ppl": lambda r: _last_metric(r, "test_ppl"),
        }

    def top5_err(r: Run) -> float | None:
        top5 = r.summary.get("final_top5")
        return 100.0 * (1.0 - top5) if _is_number(top5) else None

    return {"top1": lambda r: 100.0 * float(r.summary["final_top1"]), "top5_err": top5_err}


def _values(runs: list[Run], get) -> list[float]:
    return [v for v in (get(r) for r in runs) if v is not None]


def _common(values: list[Any]) -> Any:
    """The one value shared by all runs, a sorted list if they differ, None if none is known."""
    known = sorted({v for v in values if v is not None})
    return None if not known else known[0] if len(known) == 1 else known


def report_table(
    runs: list[Run],
    baseline: str = "baseline",
    references: dict[str, str] | None = None,
    target: float | None = None,
) -> list[dict[str, Any]]:
    """The comparison as data: one dict per arm, the baseline first. Each arm is tested against
    the baseline, or against ``references[arm]`` (e.g. GA with sigmoid against the baseline
    with sigmoid), recorded as ``reference``. ``target`` replaces the runs' own target (their
    config's ``target_accuracy`` / ``target_bleu``): time to target is then read off each
    run's per-epoch metrics (train seconds until the first evaluation at or above it).

    Keys: ``arm, task, n`` (finished seeds), ``seeds, diverged, running``; for each quality
    metric ``M`` (``top1`` and ``top5_err`` in %, or ``bleu`` and ``ppl`` for translation) and
    for ``s_per_epoch``: ``M_mean, M_std, M_ci95`` ((lo, hi)) and ``M_p`` (Welch vs baseline);
    ``top1_rel_pct`` / ``bleu_rel_pct`` (change of the mean vs baseline, in %);
    ``time_to_target_mean, target_reached, target_runs, target``; ``params, flops``.
    Undefined numbers are None.
    """
    arms = _group(runs, baseline)
    task = runs[0].task
    getters = _metric_getters(task)
    getters["s_per_epoch"] = lambda r: float(r.summary["seconds_per_epoch"])
    primary = next(iter(getters))
    references = dict(references or {})
    for arm, ref in references.items():
        if arm in arms and ref not in arms:
            raise ValueError(f"arm {arm!r} is to be compared with {ref!r}, which has no runs")

    def values_of(arm: str) -> dict[str, list[float]]:
        ok = [r for r in arms[arm] if r.status == "ok"]
        return {key: _values(ok, get) for key, get in getters.items()}

    rows = []
    for arm, group in arms.items():
        ok = [r for r in group if r.status == "ok"]
        reference = None if arm == baseline else references.get(arm, baseline)
        base_values = values_of(reference or baseline)
        row: dict[str, Any] = {
            "arm": arm,
            "reference": reference,
            "task": task,
            "n": len(ok),
            "seeds": [r.seed for r in ok],
            "diverged": sum(r.status == "diverged" for r in group),
            "running": sum(r.status == "running" for r in group),
        }
        for key, get in getters.items():
            values = _values(ok, get)
            for stat, value in _describe(values).items():
                row[f"{key}_{stat}"] = value
            row[f"{key}_p"] = None if reference is None else welch_p(values, base_values[key])
        base_mean = _describe(base_values[primary])["mean"]
        mean = row[f"{primary}_mean"]
        row[f"{primary}_rel_pct"] = (
            None
            if reference is None or mean is None or not base_mean
            else 100.0 * (mean - base_mean) / base_mean
        )
        times = [
            r.summary.get("time_to_target_s") if target is None else _time_to(r, target) for r in ok
        ]
        reached = [float(t) for t in times if _is_number(t)]
        row["time_to_target_mean"] = float(np.mean(reached)) if reached else None
        row["target_reached"] = len(reached)
        row["target_runs"] = len(ok)
        row["target"] = (
            _common([r.setting(_target_key(task)) for r in group]) if target is None else target
        )
        row["params"] = _common([r.summary.get("params") for r in group])
        row["flops"] = _common([r.summary.get("flops") for r in group])
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Formatting


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _mean_std(row: dict[str, Any], key: str) -> str:
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    if mean is None:
        return "n/a"
    return _num(mean) if std is None else f"{mean:.2f} ± {std:.2f}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _count(value: Any) -> str:
    """11689512 -> '11.69M'; a list of differing values -> 'a / b'."""
    if value is None:
        return "n/a"
    if isinstance(value, list):
        return " / ".join(_count(v) for v in value)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(value)


def _time_to_target(row: dict[str, Any]) -> str:
    if row["target"] is None:
        return "no target"
    k, n = row["target_reached"], row["target_runs"]
    if k == 0:
        return f"not reached (0/{n})"
    return f"{row['time_to_target_mean']:.1f} ({k}/{n} reached)"


def _excluded(row: dict[str, Any]) -> str:
    parts = [f"{row[s]} {s}" for s in ("diverged", "running") if row[s]]
    return ", ".join(parts) or "-"


def _arm_cell(row: dict[str, Any], baseline: str) -> str:
    """The arm's name, and its reference where that is not the table's baseline."""
    ref = row.get("reference")
    text = row["arm"] if ref in (None, baseline) else f"{row['arm']} (vs {ref})"
    return text.replace("|", "\\|")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table from a header and rows of cell texts."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The table from :func:`report_table` as markdown. The first row is the baseline."""
    if not rows:
        return "(no runs)"
    translate = rows[0]["task"] == "translate"
    q1, q2 = ("bleu", "ppl") if translate else ("top1", "top5_err")
    n1, n2 = ("BLEU", "test ppl") if translate else ("Top-1 (%)", "Top-5 err (%)")
    header = [
        "arm",
        "n",
        n1,
        "95% CI",
        "p",
        f"Δ {n1.split()[0]} vs base",
        n2,
        "p",
        "s/epoch",
        "p",
        "time to target (s)",
        "params",
        "FLOPs",
        "excluded",
    ]
    body = []
    for i, row in enumerate(rows):
        ref = i == 0
        cells = [
            _arm_cell(row, rows[0]["arm"]),
            str(row["n"]),
            _mean_std(row, q1),
            _ci(row[f"{q1}_ci95"]),
            "(ref)" if ref else _p(row[f"{q1}_p"]),
            "(ref)"
            if ref
            else ("n/a" if row[f"{q1}_rel_pct"] is None else f"{row[f'{q1}_rel_pct']:+.2f}%"),
            _mean_std(row, q2),
            "(ref)" if ref else _p(row[f"{q2}_p"]),
            _mean_std(row, "s_per_epoch"),
            "(ref)" if ref else _p(row["s_per_epoch_p"]),
            _time_to_target(row),
            _count(row["params"]),
            _count(row["flops"]),
            _excluded(row),
        ]
        body.append(cells)
    return markdown_table(header, body)


def _findings(rows: list[dict[str, Any]]) -> list[str]:
    """Plain statements of what the numbers show, one bullet per non-baseline arm."""
    base = rows[0]
    translate = base["task"] == "translate"
    key, label, unit = ("bleu", "BLEU", "") if translate else ("top1", "Top-1", "%")
    name = base["arm"]
    if base["n"] == 0:
        return [f"- The baseline arm **{name}** has no finished runs, so no arm can be compared."]
    out = []
    by_arm = {row["arm"]: row for row in rows}
    baseline = base
    for row in rows[1:]:
        base = by_arm.get(row.get("reference") or "", baseline)
        name = base["arm"]
        arm, total = row["arm"], row["n"] + row["diverged"] + row["running"]
        if row["n"] == 0:
            out.append(
                f"- **{arm}**: none of its {total} runs finished ({_excluded(row)}), so nothing "
                "can be said about its accuracy."
            )
            continue
        mean, base_mean, p = row[f"{key}_mean"], base[f"{key}_mean"], row[f"{key}_p"]
        verdict = "the same as"
        if mean != base_mean:
            verdict = "better than" if mean > base_mean else "worse than"
        rel = row[f"{key}_rel_pct"]
        rel_text = "" if rel is None else f", {rel:+.2f}% relative"
        text = (
            f"- **{arm}**: mean {label} {mean:.2f}{unit} vs {base_mean:.2f}{unit} for {name}"
            f"{rel_text}: "
            f"{verdict} the baseline on these seeds (n = {row['n']} vs {base['n']})."
        )
        if p is None:
            text += (
                " No p-value (a side has fewer than 2 finished seeds, or neither varies), so "
                "whether the difference is more than seed noise cannot be judged."
            )
        elif p < ALPHA:
            text += f" The difference is significant at p<{ALPHA:g} (Welch p = {_p(p)})."
        else:
            text += (
                f" The difference is not significant at p<{ALPHA:g} (Welch p = {_p(p)}): these "
                f"seeds do not show that {arm} differs from {name} on {label}."
            )
        s, s_base = row["s_per_epoch_mean"], base["s_per_epoch_mean"]
        if s is not None and s_base:
            text += (
                f" Time per epoch {s:.2f} s vs {s_base:.2f} s ({s / s_base:.2f}x, "
                f"Welch p = {_p(row['s_per_epoch_p'])})."
            )
        if row["diverged"] or row["running"]:
            text += f" Of its {total} runs, not in these numbers: {_excluded(row)}."
        out.append(text)
    if baseline["diverged"] or baseline["running"]:
        out.append(
            f"- The baseline itself had {_excluded(baseline)} runs, left out of its numbers."
        )
    return out


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib Figure objects, no pyplot global state)


def _colors(arms: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {arm: cmap(i % 10) for i, arm in enumerate(arms)}


def _finite(value: Any) -> float:
    return float(value) if _is_number(value) else math.nan


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


def _plot_curves(arms: dict[str, list[Run]], task: str, path: Path) -> bool:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    finished = {a: [r for r in g if r.status == "ok" and r.metrics] for a, g in arms.items()}
    finished = {a: g for a, g in finished.items() if g}
    if not finished:
        return False
    quality = (
        ("test_bleu", 1.0, "test BLEU")
        if task == "translate"
        else ("test_top1", 100.0, "test Top-1 (%)")
    )
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


def _plot_by_depth(arms: dict[str, list[Run]], path: Path, extract, ylabel: str) -> bool:
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


def _grad_norms(row: dict[str, Any]) -> list[float]:
    return [_finite(v) for v in (row.get("grad_norms") or {}).values()]


def _gain_products(row: dict[str, Any]) -> list[float]:
    return [_finite(s.get("gain_product")) for s in (row.get("sites") or [])]


# ---------------------------------------------------------------------------------------------
# The report


def _label(value: Any) -> str:
    if isinstance(value, dict):  # e.g. model: {name: resnet18, ...}
        value = value.get("name", value)
    return "?" if value is None else str(value)


def _mismatches(arms: dict[str, list[Run]]) -> list[str]:
    """Settings that differ between (or within) arms, as 'key (arm: values; ...)'."""
    checks = {
        "dataset": lambda r: r.setting("dataset"),
        "lang_pair": lambda r: r.setting("lang_pair") if r.task == "translate" else None,
        "model": lambda r: r.setting("model"),
        "epochs": lambda r: r.setting("epochs"),
        "epochs completed by finished runs": lambda r: (
            r.summary.get("epochs_completed") if r.status == "ok" else None
        ),
    }
    out = []
    for key, get in checks.items():
        per_arm = {
            a: sorted({_label(get(r)) for r in g if get(r) is not None}) for a, g in arms.items()
        }
        per_arm = {a: v for a, v in per_arm.items() if v}
        differ = len({tuple(v) for v in per_arm.values()}) > 1
        if differ or any(len(v) > 1 for v in per_arm.values()):
            detail = "; ".join(f"{a}: {', '.join(v)}" for a, v in per_arm.items())
            out.append(f"{key} ({detail})")
    return out


def _values_of(runs: list[Run], key: str) -> str:
    return ", ".join(sorted({_label(r.setting(key)) for r in runs})) or "?"


def _header(arms: dict[str, list[Run]], task: str) -> list[str]:
    runs = [r for g in arms.values() for r in g]
    translate = task == "translate"
    seeds = "; ".join(
        f"{a} {len(g)} ({', '.join(_label(r.seed) for r in g)})" for a, g in arms.items()
    )
    lines = [
        f"# Comparison of {len(arms)} arms over {len(runs)} runs",
        "",
        f"- Task: {task}; dataset: {_values_of(runs, 'dataset')}; "
        f"model: {_values_of(runs, 'model')}; epochs: {_values_of(runs, 'epochs')}.",
        f"- Runs per arm (seeds): {seeds}.",
        "- Measured: "
        + (
            "test BLEU after the last epoch (higher is better) and test perplexity at the last "
            "evaluated epoch (lower is better)"
            if translate
            else "test Top-1 accuracy after the last epoch (higher is better) and Top-5 error "
            "(100 - Top-5 accuracy, lower is better)"
        )
        + "; mean train seconds per epoch; train seconds until the target "
        + ("BLEU" if translate else "accuracy")
        + f" ({_values_of(runs, _target_key(task))}) was first reached.",
    ]
    hardware = sorted(
        {_label(r.setting(k)) for r in runs for k in ("hardware",) if r.setting(k) is not None}
    )
    lines.append(
        f"- Hardware: {', '.join(hardware)}."
        if hardware
        else "- Hardware: not recorded in the run folders; compare s/epoch only within one machine."
    )
    mismatches = _mismatches(arms)
    if mismatches:
        lines += [
            "",
            "> **Warning: not a like-for-like comparison.** Arms differ in "
            + "; and in ".join(mismatches)
            + ".",
        ]
    lines += [
        "",
        "| arm | method | activation | model | dataset | epochs |",
        "|---|---|---|---|---|---|",
    ]
    for arm, group in arms.items():
        cells = [
            _values_of(group, k) for k in ("method", "activation", "model", "dataset", "epochs")
        ]
        if all(r.setting("activation") is None for r in group):
            cells[1] = "native"
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def _runs_section(arms: dict[str, list[Run]], task: str, out_dir: Path) -> list[str]:
    key, name = ("final_bleu", "BLEU") if task == "translate" else ("final_top1", "Top-1 (%)")
    scale = 1.0 if task == "translate" else 100.0
    lines = [
        "| arm | seed | status | " + name + " | epochs completed | s/epoch | folder |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, group in arms.items():
        for r in group:
            value = r.summary.get(key)
            shown = f"{scale * value:.2f}" if _is_number(value) else "n/a"
            spe = r.summary.get("seconds_per_epoch")
            spe = f"{spe:.2f}" if _is_number(spe) else "n/a"
            epochs = r.summary.get("epochs_completed", r.metrics[-1]["epoch"] if r.metrics else 0)
            folder = os.path.relpath(r.path.resolve(), out_dir.resolve())
            lines.append(
                f"| {arm} | {_label(r.seed)} | {r.status} | {shown} | {epochs} | {spe} | {folder} |"
            )
    return lines


def _default_output_dir(run_dirs: list[Path]) -> Path:
    """The common parent folder of the runs, or the working folder if they share only '/'."""
    try:
        common = Path(os.path.commonpath([str(d.resolve().parent) for d in run_dirs]))
    except ValueError:  # e.g. different drives
        return Path.cwd()
    return common if common.parent != common else Path.cwd()


def _compare(
    run_dirs: list[str | Path],
    output_dir: str | Path | None,
    baseline: str,
    references: dict[str, str] | None = None,
    target: float | None = None,
):
    dirs = find_run_dirs(run_dirs)
    runs = [load_run(d) for d in dirs]
    rows = report_table(runs, baseline=baseline, references=references, target=target)
    arms = _group(runs, baseline)
    task = rows[0]["task"]
    out = Path(output_dir) if output_dir is not None else _default_output_dir(dirs)
    out.mkdir(parents=True, exist_ok=True)

    lines = _header(arms, task)
    lines += ["", "## Results", "", format_table(rows), ""]
    lines.append(
        "Mean ± std (ddof=1) over finished seeds (`n`); 95% CI of the mean, Student t with n-1 "
        f"dof; p: two-sided Welch t-test against **{baseline}** (or the arm named as "
        "`(vs ARM)`); Δ: change of the mean relative to that reference's; time to target: "
        "mean over the seeds that reached it. Diverged "
        "(NaN/Inf loss) and still-running runs are not in the statistics, only in `excluded`."
    )
    lines += ["", "## What this shows", "", *_findings(rows), ""]
    lines.append(
        "p-values are per comparison, not corrected for the number of arms and metrics; with a "
        "few seeds, a non-significant difference is weak evidence either way."
    )
    unfinished = [r for g in arms.values() for r in g if r.status != "ok"]
    if unfinished:
        lines += ["", "### Diverged and unfinished runs", ""]
        for r in unfinished:
            epochs = r.summary.get("epochs_completed", r.metrics[-1]["epoch"] if r.metrics else 0)
            folder = os.path.relpath(r.path.resolve(), out.resolve())
            lines.append(
                f"- {r.arm}, seed {_label(r.seed)}: {r.status} after {epochs} epoch(s) (`{folder}`)"
            )

    plots = [
        (
            "Training curves",
            "curves.png",
            lambda p: _plot_curves(arms, task, p),
            "no finished run has metrics",
        ),
        (
            "Gradient norm by depth",
            "grad_norms.png",
            lambda p: _plot_by_depth(arms, p, _grad_norms, "gradient norm"),
            f"no finished run has {DIAGNOSTICS_FILE} with grad_norms",
        ),
        (
            "Gain product by depth",
            "gain_product.png",
            lambda p: _plot_by_depth(arms, p, _gain_products, "running gain product"),
            f"no finished run has {DIAGNOSTICS_FILE} with sites",
        ),
    ]
    for title, name, draw, why in plots:
        lines += ["", f"## {title}", ""]
        if draw(out / name):
            lines.append(f"![{title}]({name})")
        else:
            lines.append(f"_Not plotted: {why}._")
    lines += ["", "## Runs", "", *_runs_section(arms, task, out), ""]

    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path, rows


def compare(
    run_dirs: list[str | Path],
    output_dir: str | Path | None = None,
    baseline: str = "baseline",
    references: dict[str, str] | None = None,
    target: float | None = None,
) -> Path:
    """Write ``report.md`` and its plots (``curves.png``, ``grad_norms.png``,
    ``gain_product.png``) comparing the arms of ``run_dirs`` against ``baseline`` (or an arm
    against ``references[arm]``); return the report's path. ``output_dir`` defaults to the
    runs' common parent folder; ``target`` overrides the runs' target (see
    :func:`report_table`)."""
    return _compare(run_dirs, output_dir, baseline, references, target)[0]


# ---------------------------------------------------------------------------------------------
# Command line: netadv compare RUN_DIR... [-o OUT_DIR] [--baseline ARM]


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``netadv compare``."""
    parser.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="run folders, or folders to search for run folders",
    )
    parser.add_argument(
        "-o",
        "--output-dir",
        default=None,
        metavar="OUT_DIR",
        help="where to write report.md and plots (default: the runs' parent)",
    )
    parser.add_argument(
        "--baseline",
        default="baseline",
        metavar="ARM",
        help="the arm every other arm is tested against (default: baseline)",
    )
    parser.add_argument(
        "--vs",
        action="append",
        default=[],
        metavar="ARM=REF",
        help="test ARM against REF instead of the baseline (repeatable), e.g. "
        "ga-sigmoid=baseline-sigmoid",
    )
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        metavar="VALUE",
        help="the target for time to target (Top-1 as a fraction, or BLEU), read off the "
        "runs' per-epoch metrics instead of their config's target",
    )


def compare_main(args: argparse.Namespace) -> int:
    """Write the report, print its path and the table; 0 on success."""
    references = {}
    for item in args.vs:
        arm, sep, ref = item.partition("=")
        if not sep or not arm or not ref:
            raise ValueError(f"--vs takes ARM=REF, got {item!r}")
        references[arm] = ref
    path, rows = _compare(args.run_dirs, args.output_dir, args.baseline, references, args.target)
    print(f"wrote {path}")
    print(format_table(rows))
    return 0
