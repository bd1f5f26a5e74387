"""The comparison as numbers: runs grouped into arms, each arm's statistics over its finished
seeds and its tests against a reference arm (:func:`report_table`)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np
from scipy import stats

from netadv.experiments.report import significance as sig
from netadv.experiments.report.runs import UNFINISHED, Run, is_number, metric_value
from netadv.experiments.report.steadiness import log_losses, steadiness
from netadv.experiments.task import Metric, TaskMetrics

SECONDS_PER_EPOCH = Metric("s_per_epoch", "s/epoch", "summary", "seconds_per_epoch")
TEST_LOSS = Metric("test_loss", "test loss", "metrics", "test_loss")
#: Datasets of at most 10 classes, where Top-5 error means little (it is the error of a guess
#: among half the classes): their tables show the test loss instead.
FEW_CLASSES = ("fashion-mnist", "cifar10", "digits", "synthetic")


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
    # the report's comparisons as one family: Holm's correction of their declared tests
    q = runs[0].measures.primary.column
    for row, adjusted in zip(rows, sig.holm([r[f"{q}_test_p"] for r in rows])):
        row[f"{q}_holm"] = adjusted
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
        "dataset": _common([r.setting("dataset") for r in group]),
        "n": len(ok),
        "seeds": [r.seed for r in ok],
        **{status: sum(r.status == status for r in group) for status in UNFINISHED},
    }
    for metric in (measures.primary, measures.secondary, SECONDS_PER_EPOCH, TEST_LOSS):
        values = _values(ok, metric)
        for stat, value in describe(values).items():
            row[f"{metric.column}_{stat}"] = value
        p = None if reference is None else welch_p(values, _values(base_ok, metric))
        row[f"{metric.column}_p"] = p
    row.update(_paired(ok, base_ok, measures.primary, reference is None))
    row[f"{measures.primary.column}_converted_mean"] = _converted_mean(ok, measures)
    row.update(_timing(ok, base_ok, reference is None))
    row.update(_steadiness(ok, base_ok, reference is None))
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


def _converted_mean(ok: list[Run], measures: TaskMetrics) -> float | None:
    """The mean primary metric of fine-tuning runs right after the conversion, before any
    training (their epoch 0, recorded in summary.json); None for runs that did not convert."""
    at_conversion = dataclasses.replace(
        measures.primary, source="summary", key=f"converted_{measures.test_key}"
    )
    return describe(_values(ok, at_conversion))["mean"]


def _by_seed(runs: list[Run], get) -> dict[Any, float]:
    """A value of each run by its seed (runs without a value left out)."""
    out = {}
    for r in runs:
        value = get(r)
        if value is not None:
            out[r.seed] = value
    return out


def _paired(ok: list[Run], base: list[Run], metric: Metric, is_reference: bool) -> dict:
    """The primary metric against the reference on the seeds both arms ran (same seed: same
    initial weights and batch order): the difference with its 95% CI, the paired t-test and
    the exact sign-flip test, Hedges' g, and the difference 80% power would detect. The
    declared test of a comparison (``*_test_p``) is the paired t-test where at least 2 seeds
    pair, else Welch's."""
    q = metric.column
    keys = ("pairs", "diff", "diff_ci95", "paired_p", "signflip_p", "g", "g_ci95",
            "detectable", "test", "test_p")  # fmt: skip
    if is_reference:
        return {f"{q}_{k}": None for k in keys}
    get = lambda r: metric_value(r, metric)
    a, b = sig.paired(_by_seed(ok, get), _by_seed(base, get))
    mine, theirs = _values(ok, metric), _values(base, metric)
    is_paired = len(a) >= 2
    diff = sig.mean_difference(a, b, is_paired=True) if is_paired else (
        sig.mean_difference(mine, theirs, is_paired=False))  # fmt: skip
    g = sig.hedges_g(mine, theirs)
    sd = float(np.std(np.subtract(a, b), ddof=1)) if is_paired else None
    paired_p = sig.paired_t_p(a, b)
    return {
        f"{q}_pairs": len(a),
        f"{q}_diff": diff["diff"],
        f"{q}_diff_ci95": diff["ci95"],
        f"{q}_paired_p": paired_p,
        f"{q}_signflip_p": sig.sign_flip_p(a, b),
        f"{q}_g": g["g"],
        f"{q}_g_ci95": g["ci95"],
        f"{q}_detectable": sig.detectable_difference(sd, len(a)),
        f"{q}_test": "paired t" if is_paired else "Welch",
        f"{q}_test_p": paired_p if is_paired else welch_p(mine, theirs),
    }


def _epoch_seconds(run: Run) -> tuple[float | None, float | None, float | None]:
    """(first epoch's seconds, mean seconds of the later epochs, the highest load average seen
    at the end of an epoch) from the run's metrics rows."""
    rows = [r for r in run.metrics if r.get("epoch", 0) >= 1 and is_number(r.get("seconds"))]
    first = float(rows[0]["seconds"]) if rows else None
    later = [float(r["seconds"]) for r in rows[1:]]
    loads = [float(r["load"]) for r in run.metrics if is_number(r.get("load"))]
    return first, (float(np.mean(later)) if later else None), (max(loads) if loads else None)


def _timing(ok: list[Run], base: list[Run], is_reference: bool) -> dict:
    """Seconds per epoch in steady state (after the first epoch, which carries one-time costs
    such as compilation) and of the first epoch apart; the machine's peak load."""
    mine = [_epoch_seconds(r) for r in ok]
    steady = [s for _, s, _ in mine if s is not None]
    theirs = [s for _, s, _ in (_epoch_seconds(r) for r in base) if s is not None]
    out = {f"s_steady_{k}": v for k, v in describe(steady).items()}
    out["s_steady_p"] = None if is_reference else welch_p(steady, theirs)
    firsts = [f for f, _, _ in mine if f is not None]
    out["s_first_mean"] = float(np.mean(firsts)) if firsts else None
    loads = [load for _, _, load in mine if load is not None]
    out["load_max"] = max(loads) if loads else None
    return out


def _steadiness(ok: list[Run], base: list[Run], is_reference: bool) -> dict:
    """The steadiness of the training loss (:mod:`.steadiness`), per arm over its runs."""

    def measure(runs):
        return [steadiness(log_losses(r.steps)) for r in runs if r.steps]

    mine, theirs = measure(ok), measure(base)
    spread = [m["spread"] for m in mine if m["spread"] is not None]
    spikes = [m["spikes_per_1k"] for m in mine if m["spikes_per_1k"] is not None]
    out = {f"spread_{k}": v for k, v in describe(spread).items()}
    ref = [m["spread"] for m in theirs if m["spread"] is not None]
    out["spread_p"] = None if is_reference else welch_p(spread, ref)
    out["spikes_mean"] = float(np.mean(spikes)) if spikes else None
    return out


def secondary_metric(rows: list[dict[str, Any]], secondary: Metric) -> Metric:
    """The second quality metric a table shows: the task's, except the test loss instead of
    Top-5 error on datasets of at most 10 classes (where Top-5 means little)."""
    datasets = set()
    for r in rows:  # an arm of mixed datasets (--allow-mixed) holds a list of them
        d = r.get("dataset")
        datasets |= set(d) if isinstance(d, list) else {d}
    if rows and rows[0]["task"] == "classify" and datasets <= set(FEW_CLASSES):
        return TEST_LOSS
    return secondary


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
