"""The comparison as text: the markdown table of :func:`format_table` and the plain findings
of :func:`findings`."""

from __future__ import annotations

from typing import Any

from netadv.experiments.report.runs import UNFINISHED
from netadv.experiments.report.stats import secondary_metric
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
    q1, n1 = measures.primary.column, measures.primary.label
    second = secondary_metric(rows, measures.secondary)
    header = [
        "arm", "n", n1, "95% CI", f"Δ {n1.split()[0]} vs base", "Δ (95% CI)",
        "p Welch", "p paired t / sign-flip", "Holm", second.label, "p",
        "s/epoch (first epoch)", "p", "loss spread", "time to target (s)", "params", "FLOPs",
        "excluded",
    ]  # fmt: skip
    cells = [_cells(r, rows[0], q1, second.column) for r in rows]
    if any(r.get(f"{q1}_converted_mean") is not None for r in rows):  # fine-tuning runs
        header.insert(4, "at conversion")
        for row, line in zip(rows, cells):
            line.insert(4, _num(row.get(f"{q1}_converted_mean")))
    return markdown_table(header, cells)


def _cells(row: dict[str, Any], base: dict[str, Any], q1: str, q2: str) -> list[str]:
    """One arm's cells of :func:`format_table` (the baseline's tests read "(ref)")."""
    ref = row is base
    test = lambda text: "(ref)" if ref else text
    rel = row[f"{q1}_rel_pct"]
    return [
        _arm_cell(row, base["arm"]),
        str(row["n"]),
        _mean_std(row, q1),
        _ci(row[f"{q1}_ci95"]),
        test("n/a" if rel is None else f"{rel:+.2f}%"),
        test(_diff(row.get(f"{q1}_diff"), row.get(f"{q1}_diff_ci95"))),
        test(_p(row[f"{q1}_p"])),
        test(f"{_p(row.get(f'{q1}_paired_p'))} / {_p(row.get(f'{q1}_signflip_p'))}"),
        test(_p(row.get(f"{q1}_holm"))),
        _mean_std(row, q2),
        test(_p(row[f"{q2}_p"])),
        _seconds(row),
        test(_p(row.get("s_steady_p"))),
        _spread(row),
        _time_to_target(row),
        _count(row["params"]),
        _count(row["flops"]),
        excluded(row),
    ]


def _diff(diff: float | None, ci: tuple[float, float] | None) -> str:
    if diff is None:
        return "n/a"
    return f"{diff:+.2f}" + ("" if ci is None else f" [{ci[0]:+.2f}, {ci[1]:+.2f}]")


def _seconds(row: dict[str, Any]) -> str:
    """Steady-state seconds per epoch (after the first), with the first epoch's apart; the
    summary's mean over all epochs when the runs had one epoch each."""
    if row.get("s_steady_mean") is None:
        return _mean_std(row, "s_per_epoch")
    text = _mean_std(row, "s_steady")
    first = row.get("s_first_mean")
    return text if first is None else f"{text} ({first:.2f})"


def _spread(row: dict[str, Any]) -> str:
    """The training loss's spread around its running mean (steps.jsonl), mean over seeds."""
    if row.get("spread_mean") is None:
        return "n/a"
    text = f"{row['spread_mean']:.3f}"
    if row.get("spread_ci95") is not None:
        lo, hi = row["spread_ci95"]
        text += f" [{lo:.3f}, {hi:.3f}]"
    return text if row.get("spikes_mean") in (None, 0) else f"{text}, {row['spikes_mean']:.1f}‰"


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
    mean, base_mean = row[f"{key}_mean"], base[f"{key}_mean"]
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
    text += _significance(row, key, arm, name, label)
    s, s_base = row["s_per_epoch_mean"], base["s_per_epoch_mean"]
    if s is not None and s_base:
        text += (
            f" Time per epoch {s:.2f} s vs {s_base:.2f} s ({s / s_base:.2f}x, "
            f"Welch p = {_p(row['s_per_epoch_p'])})."
        )
    if any(row[s] for s in UNFINISHED):
        text += f" Of its {total} runs, not in these numbers: {excluded(row)}."
    return text


def _significance(row: dict[str, Any], key: str, arm: str, name: str, label: str) -> str:
    """The finding's sentence on significance: the comparison's declared test (paired t on the
    seeds both arms ran, else Welch), the other tests beside it, and Holm's correction over the
    report's comparisons."""
    p, test, holm = row.get(f"{key}_test_p"), row.get(f"{key}_test"), row.get(f"{key}_holm")
    if p is None:
        return (
            " No p-value (a side has fewer than 2 finished seeds, or neither varies), so "
            "whether the difference is more than seed noise cannot be judged."
        )
    beside = f"Welch p = {_p(row[f'{key}_p'])}"
    if test == "paired t":
        n = row[f"{key}_pairs"]
        tests = f"paired t over {n} seeds p = {_p(p)}, sign-flip p = "
        tests += f"{_p(row[f'{key}_signflip_p'])}, {beside}"
    else:
        tests = beside
    if p < ALPHA:
        text = f" The difference is significant at p<{ALPHA:g} ({tests})"
        if holm is not None and holm >= ALPHA:
            return (
                text
                + f", but not after Holm's correction over this report's arms (p = {_p(holm)})."
            )
        return text + (f"; it holds after Holm's correction (p = {_p(holm)})." if holm else ".")
    return (
        f" The difference is not significant at p<{ALPHA:g} ({tests}): these seeds do not "
        f"show that {arm} differs from {name} on {label}."
    )


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
