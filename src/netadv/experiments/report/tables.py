"""The comparison as text: the markdown table of :func:`format_table` and the plain findings
of :func:`findings`."""

from __future__ import annotations

from typing import Any

from netadv.experiments.report.runs import UNFINISHED
from netadv.experiments.tasks import metrics_of

ALPHA = 0.05  # significance level the findings are stated at


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table from a header and rows of cell texts."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The table from :func:`~netadv.experiments.report.stats.report_table` as markdown. The
    first row is the baseline."""
    if not rows:
        return "(no runs)"
    measures = metrics_of(rows[0]["task"])
    q1, q2 = measures.primary.column, measures.secondary.column
    n1, n2 = measures.primary.label, measures.secondary.label
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
            excluded(row),
        ]
        body.append(cells)
    return markdown_table(header, body)


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """Plain statements of what the numbers show, one bullet per non-baseline arm."""
    baseline = rows[0]
    if baseline["n"] == 0:
        return [
            f"- The baseline arm **{baseline['arm']}** has no finished runs, so no arm can be "
            "compared."
        ]
    by_arm = {row["arm"]: row for row in rows}
    out = [_finding(row, by_arm.get(row.get("reference") or "", baseline)) for row in rows[1:]]
    if any(baseline[s] for s in UNFINISHED):
        out.append(f"- The baseline itself had {excluded(baseline)} runs, left out of its numbers.")
    return out


def _finding(row: dict[str, Any], base: dict[str, Any]) -> str:
    """One arm against its reference ``base``: the primary metric, its significance, speed."""
    measures = metrics_of(row["task"])
    key, label, unit = measures.primary.column, measures.primary.label.split()[0], measures.unit
    name, arm = base["arm"], row["arm"]
    total = row["n"] + sum(row[s] for s in UNFINISHED)
    if row["n"] == 0:
        return (
            f"- **{arm}**: none of its {total} runs finished ({excluded(row)}), so nothing "
            "can be said about its accuracy."
        )
    mean, base_mean, p = row[f"{key}_mean"], base[f"{key}_mean"], row[f"{key}_p"]
    verdict = "the same as"
    if mean != base_mean:
        better = (mean > base_mean) == measures.higher_is_better
        verdict = "better than" if better else "worse than"
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
    if any(row[s] for s in UNFINISHED):
        text += f" Of its {total} runs, not in these numbers: {excluded(row)}."
    return text


def excluded(row: dict[str, Any]) -> str:
    """The arm's runs left out of its statistics: "1 diverged, 1 died, 2 running", or "-"."""
    parts = [f"{row[s]} {s}" for s in UNFINISHED if row[s]]
    return ", ".join(parts) or "-"


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


def _arm_cell(row: dict[str, Any], baseline: str) -> str:
    """The arm's name, and its reference where that is not the table's baseline."""
    ref = row.get("reference")
    text = row["arm"] if ref in (None, baseline) else f"{row['arm']} (vs {ref})"
    return text.replace("|", "\\|")
