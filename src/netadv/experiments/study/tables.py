"""The study's cross-experiment tables: a summary's rows against a varying setting
(:func:`summary_rows`) and every GA/HD-FGD/SA arm against its reference in the units of the
paper's claims (:func:`claim_rows`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from netadv.experiments.report.runs import Run
from netadv.experiments.report.stats import report_table
from netadv.experiments.report.tables import markdown_table
from netadv.experiments.study.spec import Summary
from netadv.experiments.tasks import metrics_by_column


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


def _final_loss_std(runs: list[Run]) -> float | None:
    losses = [r.metrics[-1].get("test_loss") for r in runs if r.status == "ok" and r.metrics]
    losses = [float(v) for v in losses if v is not None and math.isfinite(v)]
    return float(np.std(losses, ddof=1)) if len(losses) >= 2 else None


def _rel(value: float | None, ref: float | None) -> float | None:
    if value is None or ref is None or not ref:
        return None
    return 100.0 * (value - ref) / ref


def claim_rows(runs: dict[str, list[Run]], refs: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """Each GA/HD-FGD/SA arm against its reference, in the units of the paper's claims:
    relative change of Top-1 (or BLEU), of Top-5 error (or perplexity), of seconds per epoch,
    and the seed-to-seed std of the final test loss beside the reference's (lower = steadier)."""
    out = []
    for name, group in runs.items():
        if not group:
            continue
        table = {row["arm"]: row for row in report_table(group, references=refs.get(name))}
        measures = group[0].measures
        quality, error = measures.primary.column, measures.secondary.column
        for arm, row in table.items():
            mine = [r for r in group if r.arm == arm]
            if row["reference"] is None or mine[0].setting("method") == "baseline":
                continue
            ref = table[row["reference"]]
            theirs = [r for r in group if r.arm == row["reference"]]
            loss_std, ref_loss_std = _final_loss_std(mine), _final_loss_std(theirs)
            out.append(
                {
                    "experiment": name,
                    "arm": arm,
                    "reference": row["reference"],
                    "n": (row["n"], ref["n"]),
                    "quality": quality,
                    "quality_rel": row[f"{quality}_rel_pct"],
                    "quality_p": row[f"{quality}_p"],
                    "error": error,
                    "error_rel": _rel(row[f"{error}_mean"], ref[f"{error}_mean"]),
                    "error_p": row[f"{error}_p"],
                    "time_rel": _rel(row["s_per_epoch_mean"], ref["s_per_epoch_mean"]),
                    "time_p": row["s_per_epoch_p"],
                    "loss_std": (loss_std, ref_loss_std),
                }
            )
    return out


def _pct(value: float | None, p: float | None = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:+.2f}%"
    return text if p is None else f"{text} (p={p:.2g})"


def format_claims(rows: list[dict[str, Any]]) -> str:
    head = [
        "experiment",
        "arm (vs reference)",
        "n",
        "Δ Top-1 / BLEU",
        "Δ Top-5 err / ppl",
        "Δ s/epoch",
        "final test loss std (arm vs ref)",
    ]
    body = []
    for r in rows:
        stds = " vs ".join("n/a" if v is None else f"{v:.4f}" for v in r["loss_std"])
        cells = [
            r["experiment"],
            f"{r['arm']} (vs {r['reference']})",
            f"{r['n'][0]} vs {r['n'][1]}",
            _pct(r["quality_rel"], r["quality_p"]),
            _pct(r["error_rel"], r["error_p"]),
            _pct(r["time_rel"], r["time_p"]),
            stds,
        ]
        body.append(cells)
    return markdown_table(head, body)
