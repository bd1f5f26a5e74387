"""The comparison as numbers: runs grouped into arms, each arm's statistics over its finished
seeds and its tests against a reference arm (:func:`report_table`)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import stats

from netadv.experiments.report.runs import UNFINISHED, Run, is_number, metric_value
from netadv.experiments.task import Metric, TaskMetrics

SECONDS_PER_EPOCH = Metric("s_per_epoch", "s/epoch", "summary", "seconds_per_epoch")


def group_arms(runs: list[Run], baseline: str) -> dict[str, list[Run]]:
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


def describe(values: list[float]) -> dict[str, Any]:
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

    Keys: ``arm, task, n`` (finished seeds), ``seeds, diverged, died, running``; for each quality
    metric ``M`` (``top1`` and ``top5_err`` in %, or ``bleu`` and ``ppl`` for translation) and
    for ``s_per_epoch``: ``M_mean, M_std, M_ci95`` ((lo, hi)) and ``M_p`` (Welch vs baseline);
    ``top1_rel_pct`` / ``bleu_rel_pct`` (change of the mean vs baseline, in %);
    ``time_to_target_mean, target_reached, target_runs, target``; ``params, flops``.
    Undefined numbers are None.
    """
    arms = group_arms(runs, baseline)
    references = dict(references or {})
    for arm, ref in references.items():
        if arm in arms and ref not in arms:
            raise ValueError(f"arm {arm!r} is to be compared with {ref!r}, which has no runs")
    rows = []
    for arm, group in arms.items():
        reference = None if arm == baseline else references.get(arm, baseline)
        rows.append(_arm_row(arm, group, reference, arms[reference or baseline], target))
    return rows


def _arm_row(
    arm: str, group: list[Run], reference: str | None, base: list[Run], target: float | None
) -> dict[str, Any]:
    """One arm's row of :func:`report_table`, tested against the runs ``base``."""
    ok, base_ok = _finished(group), _finished(base)
    measures = group[0].measures
    row: dict[str, Any] = {
        "arm": arm,
        "reference": reference,
        "task": group[0].task,
        "n": len(ok),
        "seeds": [r.seed for r in ok],
        **{status: sum(r.status == status for r in group) for status in UNFINISHED},
    }
    for metric in (measures.primary, measures.secondary, SECONDS_PER_EPOCH):
        values = _values(ok, metric)
        for stat, value in describe(values).items():
            row[f"{metric.column}_{stat}"] = value
        p = None if reference is None else welch_p(values, _values(base_ok, metric))
        row[f"{metric.column}_p"] = p
    primary = measures.primary.column
    base_mean = describe(_values(base_ok, measures.primary))["mean"]
    mean = row[f"{primary}_mean"]
    row[f"{primary}_rel_pct"] = (
        None
        if reference is None or mean is None or not base_mean
        else 100.0 * (mean - base_mean) / base_mean
    )
    row.update(_time_to_target(group, ok, measures, target))
    row["params"] = _common([r.summary.get("params") for r in group])
    row["flops"] = _common([r.summary.get("flops") for r in group])
    return row


def _finished(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r.status == "ok"]


def _values(runs: list[Run], metric: Metric) -> list[float]:
    return [v for v in (metric_value(r, metric) for r in runs) if v is not None]


def _time_to_target(
    group: list[Run], ok: list[Run], measures: TaskMetrics, target: float | None
) -> dict[str, Any]:
    """Mean time to target over the finished runs that reached it; with ``target`` given,
    read off the per-epoch metrics rather than the summaries."""
    times = [
        r.summary.get("time_to_target_s") if target is None else _time_to(r, measures, target)
        for r in ok
    ]
    reached = [float(t) for t in times if is_number(t)]
    return {
        "time_to_target_mean": float(np.mean(reached)) if reached else None,
        "target_reached": len(reached),
        "target_runs": len(ok),
        "target": (
            _common([r.setting(measures.target_key) for r in group]) if target is None else target
        ),
    }


def _time_to(run: Run, measures: TaskMetrics, target: float) -> float | None:
    """Train seconds (``elapsed``) at the first evaluated epoch whose quality reaches ``target``
    (in the metrics rows' units: Top-1 as a fraction, or BLEU)."""
    key = measures.test_key
    for row in run.metrics:
        if is_number(row.get(key)) and measures.reaches(row[key], target):
            if is_number(row.get("elapsed")):
                return float(row["elapsed"])
    return None


def _common(values: list[Any]) -> Any:
    """The one value shared by all runs, a sorted list if they differ, None if none is known."""
    known = sorted({v for v in values if v is not None})
    return None if not known else known[0] if len(known) == 1 else known
