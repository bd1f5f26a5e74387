"""The comparison report: ``report.md`` with the table, the findings and the plots of the
runs' arms (:func:`compare`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from netadv.experiments.report.figures import gain_products, grad_norms, plot_by_depth, plot_curves
from netadv.experiments.report.runs import DIAGNOSTICS_FILE, Run, find_run_dirs, is_number, load_run
from netadv.experiments.report.stats import group_arms, report_table
from netadv.experiments.report.tables import findings, format_table

# settings the runs of one arm must share to be pooled (besides the task's compared_settings)
POOLED = ("dataset", "model", "model_kwargs", "epochs", "limit_train", "limit_test")


def compare(
    run_dirs: list[str | Path],
    output_dir: str | Path | None = None,
    baseline: str = "baseline",
    references: dict[str, str] | None = None,
    target: float | None = None,
    allow_mixed: bool = False,
) -> Path:
    """Write ``report.md`` and its plots (``curves.png``, ``grad_norms.png``,
    ``gain_product.png``) comparing the arms of ``run_dirs`` against ``baseline`` (or an arm
    against ``references[arm]``); return the report's path. ``output_dir`` defaults to the
    runs' common parent folder; ``target`` overrides the runs' target (see
    :func:`~netadv.experiments.report.stats.report_table`). Runs pooled into one arm must
    agree on the data, model and epochs (:data:`POOLED`): a ValueError naming the arm and the
    keys, unless ``allow_mixed`` (the report then says the arm is mixed)."""
    return write_report(run_dirs, output_dir, baseline, references, target, allow_mixed)[0]


def write_report(
    run_dirs: list[str | Path],
    output_dir: str | Path | None,
    baseline: str,
    references: dict[str, str] | None = None,
    target: float | None = None,
    allow_mixed: bool = False,
) -> tuple[Path, list[dict[str, Any]]]:
    """:func:`compare`, also returning the table's rows."""
    dirs = find_run_dirs(run_dirs)
    runs = [load_run(d) for d in dirs]
    rows = report_table(runs, baseline=baseline, references=references, target=target)
    arms = group_arms(runs, baseline)
    mixed = mixed_arms(arms)
    if mixed and not allow_mixed:
        raise ValueError(
            f"{'; '.join(mixed)}: give such runs different labels (--set label=...), leave "
            "some out, or pass --allow-mixed to pool them anyway"
        )
    out = Path(output_dir) if output_dir is not None else _default_output_dir(dirs)
    out.mkdir(parents=True, exist_ok=True)

    lines = _header(arms, rows[0]["task"])
    if mixed:
        lines += ["", f"> **Mixed arms (--allow-mixed):** {'; '.join(mixed)}."]
    lines += ["", "## Results", "", format_table(rows), ""]
    lines.append(
        "Mean ± std (ddof=1) over finished seeds (`n`); 95% CI of the mean, Student t with n-1 "
        f"dof. Each arm is tested against **{baseline}** (or the arm named as `(vs ARM)`): Δ "
        "vs base, the change of the mean relative to the reference's; Δ (95% CI), the mean "
        "difference in table units, over the per-seed differences where the arms ran the same "
        "seeds (a seed fixes the initial weights and the batch order, so pairing removes that "
        "noise), else Welch's; p Welch, two-sided unpaired; p paired t / sign-flip, the paired "
        "t-test and the exact sign-flip permutation test on those seeds (with n seeds the "
        "smallest sign-flip p is 2/2^n: 0.0625 at n = 5); Holm, the declared test (paired t "
        "where seeds pair, else Welch) adjusted for the report's comparisons. The second "
        "quality column is the test loss where the dataset has at most 10 classes (Top-5 "
        "error means little there), else the task's own. s/epoch: mean over the epochs after "
        "the first (steady state), the first epoch's in parentheses; loss spread: the std of "
        "the log training loss around its running mean over the second half of training, "
        "with spikes per 1,000 steps (docs/RESULTS.md defines both). Time to target: mean "
        "over the seeds that reached it. Diverged "
        f"(NaN/Inf loss){_died_words(runs)} and still-running runs are not in the statistics, "
        "only in `excluded`."
    )
    busy = [r["arm"] for r in rows if (r.get("load_max") or 0) > (os.cpu_count() or 1) + 0.5]
    if busy:
        lines.append(
            f"\n> Timing caveat: the machine was busier than its {os.cpu_count()} cores during "
            f"runs of {', '.join(busy)} (load average up to "
            f"{max(r['load_max'] for r in rows if r.get('load_max')):.1f}), so their seconds "
            "per epoch are not comparable."
        )
    lines += ["", "## What this shows", "", *findings(rows), ""]
    lines.append(
        "A finding holds only if it survives Holm's correction; with a few seeds, a "
        "non-significant difference is weak evidence either way."
    )
    lines += _unfinished_section(arms, out)
    lines += _plots_section(arms, out)
    lines += ["", "## Runs", "", *_runs_section(arms, out), ""]

    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path, rows


def _label(value: Any) -> str:
    if isinstance(value, dict):  # e.g. model: {name: resnet18, ...}
        value = value.get("name", value)
    return "?" if value is None else str(value)


def _values_of(runs: list[Run], key: str) -> str:
    return ", ".join(sorted({_label(r.setting(key)) for r in runs})) or "?"


def _epochs(run: Run) -> Any:
    return run.summary.get("epochs_completed", run.metrics[-1]["epoch"] if run.metrics else 0)


def _folder(run: Run, out: Path) -> str:
    return os.path.relpath(run.path.resolve(), out.resolve())


def _header(arms: dict[str, list[Run]], task: str) -> list[str]:
    runs = [r for g in arms.values() for r in g]
    measures = runs[0].measures
    seeds = "; ".join(
        f"{a} {len(g)} ({', '.join(_label(r.seed) for r in g)})" for a, g in arms.items()
    )
    lines = [
        f"# Comparison of {len(arms)} arms over {len(runs)} runs",
        "",
        f"- Task: {task}; dataset: {_values_of(runs, 'dataset')}; "
        f"model: {_values_of(runs, 'model')}; epochs: {_values_of(runs, 'epochs')}.",
        f"- Runs per arm (seeds): {seeds}.",
        f"- Measured: {measures.measured}; mean train seconds per epoch; train seconds until "
        f"the target {measures.target_name} ({_values_of(runs, measures.target_key)}) was "
        "first reached.",
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


def mixed_arms(arms: dict[str, list[Run]]) -> list[str]:
    """The arms whose runs differ in a setting of :data:`POOLED` (or the task's
    ``compared_settings``), each as 'arm A pools runs that differ in key (v1 / v2), ...'."""
    out = []
    for arm, group in arms.items():
        keys = (*POOLED, *group[0].measures.compared_settings)
        differ = []
        for key in dict.fromkeys(keys):
            values = sorted({_shown(r.setting(key)) for r in group})
            if len(values) > 1:
                differ.append(f"{key} ({' / '.join(values)})")
        if differ:
            out.append(f"arm {arm} pools runs that differ in {', '.join(differ)}")
    return out


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _died_words(runs: list[Run]) -> str:
    return ", died (killed before the end)" if any(r.status == "died" for r in runs) else ""


def _mismatches(arms: dict[str, list[Run]]) -> list[str]:
    """Settings that differ between (or within) arms, as 'key (arm: values; ...)'."""
    measures = next(iter(arms.values()))[0].measures
    keys = ("dataset", *measures.compared_settings, "model", "epochs")
    checks = {key: (lambda r, key=key: r.setting(key)) for key in keys}
    checks["epochs completed by finished runs"] = lambda r: (
        r.summary.get("epochs_completed") if r.status == "ok" else None
    )
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


def _unfinished_section(arms: dict[str, list[Run]], out: Path) -> list[str]:
    unfinished = [r for g in arms.values() for r in g if r.status != "ok"]
    if not unfinished:
        return []
    lines = ["", "### Diverged and unfinished runs", ""]
    for r in unfinished:
        lines.append(
            f"- {r.arm}, seed {_label(r.seed)}: {r.status} after {_epochs(r)} epoch(s) "
            f"(`{_folder(r, out)}`)"
        )
    return lines


def _plots_section(arms: dict[str, list[Run]], out: Path) -> list[str]:
    plots = [
        (
            "Training curves",
            "curves.png",
            lambda p: plot_curves(arms, p),
            "no finished run has metrics",
        ),
        (
            "Gradient norm by depth",
            "grad_norms.png",
            lambda p: plot_by_depth(arms, p, grad_norms, "gradient norm"),
            f"no finished run has {DIAGNOSTICS_FILE} with grad_norms",
        ),
        (
            "Gain product by depth",
            "gain_product.png",
            lambda p: plot_by_depth(arms, p, gain_products, "running gain product"),
            f"no finished run has {DIAGNOSTICS_FILE} with sites",
        ),
    ]
    lines = []
    for title, name, draw, why in plots:
        lines += ["", f"## {title}", ""]
        if draw(out / name):
            lines.append(f"![{title}]({name})")
        else:
            lines.append(f"_Not plotted: {why}._")
    return lines


def _runs_section(arms: dict[str, list[Run]], out: Path) -> list[str]:
    primary = next(iter(arms.values()))[0].measures.primary
    lines = [
        "| arm | seed | status | " + primary.label + " | epochs completed | s/epoch | folder |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, group in arms.items():
        for r in group:
            value = r.summary.get(primary.key)
            shown = f"{primary.scale * value:.2f}" if is_number(value) else "n/a"
            spe = r.summary.get("seconds_per_epoch")
            spe = f"{spe:.2f}" if is_number(spe) else "n/a"
            lines.append(
                f"| {arm} | {_label(r.seed)} | {r.status} | {shown} | {_epochs(r)} | {spe} "
                f"| {_folder(r, out)} |"
            )
    return lines


def _default_output_dir(run_dirs: list[Path]) -> Path:
    """The common parent folder of the runs, or the working folder if they share only '/'."""
    try:
        common = Path(os.path.commonpath([str(d.resolve().parent) for d in run_dirs]))
    except ValueError:  # e.g. different drives
        return Path.cwd()
    return common if common.parent != common else Path.cwd()
