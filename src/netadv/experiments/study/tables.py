"""The study's cross-experiment tables: a summary's rows against a varying setting
(:func:`summary_rows`) and every GA/HD-FGD/SA arm against its reference in the units of the
paper's claims (:func:`claim_rows`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from netadv.experiments.report import significance as sig
from netadv.experiments.report.runs import Run
from netadv.experiments.report.stats import report_table, secondary_metric
from netadv.experiments.report.tables import ALPHA, markdown_table
from netadv.experiments.study.spec import Summary
from netadv.experiments.tasks import metrics_by_column, metrics_of


def _setting(run: Run, dotted: str) -> Any:
    """A config value by dotted key (``model_kwargs.depth``)."""
    head, *rest = dotted.split(".")
    value: Any = run.setting(head)
    for key in rest:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def _input_grad_norm(row: dict[str, Any]) -> float | None:
    """The weight-gradient norm of the layer nearest the input in a diagnostics row."""
    norms = list((row.get("grad_norms") or {}).values())
    return float(norms[0]) if norms and norms[0] is not None else None


def _chain_gain(row: dict[str, Any]) -> float | None:
    """The running gain product after the last site: the whole chain's gain."""
    sites = row.get("sites") or []
    value = sites[-1].get("gain_product") if sites else None
    return float(value) if value is not None else None


def summary_rows(
    summary: Summary, runs: dict[str, list[Run]], refs: dict[str, dict[str, str]] | None = None
) -> list[dict[str, Any]]:
    """One row per (series, x, arm) over the summary's experiments: the primary metric (mean,
    std, Welch p vs the experiment's baseline), the input layer's gradient norm and the chain's
    gain product at the first (initialisation) and last (after training) diagnostics step."""
    rows = []
    refs = refs or {}
    for name in summary.experiments:
        group = runs.get(name) or []
        if not group:
            continue
        table = {row["arm"]: row for row in report_table(group, references=refs.get(name))}
        primary = group[0].measures.primary.column
        for arm, row in table.items():
            done = [r for r in group if r.arm == arm and r.status == "ok"]
            if not done:
                continue
            first = [r.diagnostics[0] for r in done if r.diagnostics]
            last = [r.diagnostics[-1] for r in done if r.diagnostics]
            rows.append(
                {
                    "experiment": name,
                    "series": str(_setting(done[0], summary.series)),
                    "x": _setting(done[0], summary.x),
                    "arm": arm,
                    "n": row["n"],
                    "metric": primary,
                    "mean": row[f"{primary}_mean"],
                    "std": row[f"{primary}_std"],
                    "p": row[f"{primary}_p"],
                    "grad_init": _mean([_input_grad_norm(d) for d in first]),
                    "grad_end": _mean([_input_grad_norm(d) for d in last]),
                    "gain_init": _mean([_chain_gain(d) for d in first]),
                    "gain_end": _mean([_chain_gain(d) for d in last]),
                }
            )
    return sorted(rows, key=lambda r: (r["series"], r["x"], r["arm"] != "baseline", r["arm"]))


def _sci(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2e}"


def format_summary(rows: list[dict[str, Any]], summary: Summary) -> str:
    metric = metrics_by_column(rows[0]["metric"] if rows else None).primary.label
    head = [
        summary.series.split(".")[-1],
        summary.x.split(".")[-1],
        "arm",
        "n",
        metric,
        "p vs baseline",
        "input-layer grad norm, init",
        "after training",
        "chain gain product, init",
        "after training",
    ]
    body = []
    for r in rows:
        value = "n/a" if r["mean"] is None else f"{r['mean']:.2f}"
        if r["std"] is not None:
            value += f" ± {r['std']:.2f}"
        p = "(ref)" if r["arm"] == "baseline" else "n/a" if r["p"] is None else f"{r['p']:.3g}"
        cells = [r["series"], str(r["x"]), r["arm"], str(r["n"]), value, p]
        cells += [_sci(r[k]) for k in ("grad_init", "grad_end", "gain_init", "gain_end")]
        body.append(cells)
    return markdown_table(head, body)


def claim_rows(
    runs: dict[str, list[Run]],
    refs: dict[str, dict[str, str]],
    extra: dict[str, list[tuple[str, str]]] | None = None,
) -> list[dict[str, Any]]:
    """Every arm of the study against its reference (and the extra references the spec names),
    as one family of tests: the relative change of the primary metric (Top-1 or BLEU), the
    mean difference with its 95% CI, the declared test's p (paired t where seeds pair, else
    Welch), the difference 80% power detects, the second quality metric, steady-state seconds
    per epoch and the loss spread; then Holm's and Benjamini-Hochberg's adjustment over the
    whole family and whether the difference holds after Holm's."""
    out = []
    for name, group in runs.items():
        if not group:
            continue
        table = report_table(group, references=refs.get(name))
        out += [_claim(name, row, table) for row in table if row["reference"] is not None]
        for arm, other in (extra or {}).get(name, []):
            rows = report_table(group, references={**refs.get(name, {}), arm: other})
            out += [_claim(name, r, rows) for r in rows if r["arm"] == arm]
    p = [r["test_p"] for r in out]
    for row, holm, bh in zip(out, sig.holm(p), sig.benjamini_hochberg(p)):
        row.update(holm=holm, bh=bh, holds=holm is not None and holm < ALPHA)
    return out


def _claim(name: str, row: dict[str, Any], table: list[dict[str, Any]]) -> dict[str, Any]:
    ref = next(r for r in table if r["arm"] == row["reference"])
    q = metrics_of(row["task"]).primary.column
    second = secondary_metric(table, metrics_of(row["task"]).secondary).column
    return {
        "experiment": name,
        "arm": row["arm"],
        "reference": row["reference"],
        "n": (row["n"], ref["n"]),
        "quality_rel": row[f"{q}_rel_pct"],
        "diff": row[f"{q}_diff"],
        "diff_ci95": row[f"{q}_diff_ci95"],
        "test": row[f"{q}_test"],
        "test_p": row[f"{q}_test_p"],
        "signflip_p": row[f"{q}_signflip_p"],
        "detectable": row[f"{q}_detectable"],
        "error_rel": _rel(row[f"{second}_mean"], ref[f"{second}_mean"]),
        "error_p": row[f"{second}_p"],
        "time_rel": _rel(_steady(row), _steady(ref)),
        "time_p": row["s_steady_p"]
        if row.get("s_steady_mean") is not None
        else row["s_per_epoch_p"],
        "spread": (row.get("spread_mean"), ref.get("spread_mean")),
        "spread_p": row.get("spread_p"),
    }


def _steady(row: dict[str, Any]) -> float | None:
    """Steady-state seconds per epoch (all epochs' mean where runs had one)."""
    s = row.get("s_steady_mean")
    return s if s is not None else row["s_per_epoch_mean"]


def _rel(value: float | None, ref: float | None) -> float | None:
    if value is None or ref is None or not ref:
        return None
    return 100.0 * (value - ref) / ref


def _pct(value: float | None, p: float | None = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:+.2f}%"
    return text if p is None else f"{text} (p={p:.2g})"


def _g(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


def format_claims(rows: list[dict[str, Any]]) -> str:
    head = [
        "experiment", "arm (vs reference)", "n", "Δ Top-1 / BLEU", "Δ (95% CI)", "test, p",
        "sign-flip p", "Holm", "BH q", "holds", "80%-power Δ", "Δ test loss / Top-5 err / ppl",
        "Δ s/epoch", "loss spread (arm vs ref)",
    ]  # fmt: skip
    body = []
    for r in rows:
        spread = " vs ".join("n/a" if v is None else f"{v:.3f}" for v in r["spread"])
        ci = r["diff_ci95"]
        diff = "n/a" if r["diff"] is None else f"{r['diff']:+.2f}"
        if ci is not None:
            diff += f" [{ci[0]:+.2f}, {ci[1]:+.2f}]"
        body.append([
            r["experiment"],
            f"{r['arm']} (vs {r['reference']})",
            f"{r['n'][0]} vs {r['n'][1]}",
            _pct(r["quality_rel"]),
            diff,
            f"{r['test']} {_g(r['test_p'])}" if r["test"] else "n/a",
            _g(r["signflip_p"]),
            _g(r["holm"]),
            _g(r["bh"]),
            "**yes**" if r["holds"] else "no",
            "n/a" if r["detectable"] is None else f"{r['detectable']:.2f}",
            _pct(r["error_rel"], r["error_p"]),
            _pct(r["time_rel"], r["time_p"]),
            spread,
        ])  # fmt: skip
    return markdown_table(head, body)
