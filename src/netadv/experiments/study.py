"""The reproduction study: a list of experiments (a config, arms, seeds) run and reported.

``netadv study --spec configs/study.yaml`` runs every experiment's arms over its seeds (finished
runs are skipped, so it resumes), then writes one report per experiment (table + plots) under
the report folder and an index, ``STUDY.md``, with the exact command that reproduces each table,
the train time and the hardware. ``--smoke`` runs the same programme at toy size (the spec's
``smoke`` overrides, one seed): that is what CI exercises.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from netadv.errors import ConfigError
from netadv.experiments import config as config_mod
from netadv.experiments.report import (
    Run,
    compare,
    format_table,
    load_run,
    markdown_table,
    report_table,
)
from netadv.experiments.sweep import Arm, sweep_arms


@dataclass
class Experiment:
    name: str
    config: str
    arms: list[Arm]
    seeds: list[int]
    set: list[str] = field(default_factory=list)
    description: str = ""
    smoke: list[str] = field(default_factory=list)  # extra overrides for --smoke
    target: float | None = None  # time-to-target threshold for the report (None: the config's)


@dataclass
class Summary:
    """A cross-experiment view: a table and a figure of the arms' results against a setting
    that varies between experiments (``x``, e.g. ``model_kwargs.depth``), one line per value of
    ``series`` (e.g. ``model_kwargs.activation``) and arm."""

    name: str
    experiments: list[str]
    x: str
    series: str
    description: str = ""


def references(exp: Experiment) -> dict[str, str]:
    """The arms compared with an arm other than the baseline: {arm: reference}."""
    return {a.label: a.vs for a in exp.arms if a.vs}


@dataclass
class StudySpec:
    experiments: list[Experiment]
    runs_dir: str = "runs/study"
    report_dir: str = "docs/results"
    smoke: list[str] = field(default_factory=list)
    summaries: list[Summary] = field(default_factory=list)


def _arm(entry: Any) -> Arm:
    if isinstance(entry, str):
        return Arm(entry, entry, ())
    if not isinstance(entry, dict) or "method" not in entry:
        raise ConfigError(f"an arm is a method name or {{label, method, set, vs}}, got {entry!r}")
    return Arm(
        entry.get("label") or entry["method"],
        entry["method"],
        tuple(entry.get("set", [])),
        entry.get("vs"),
    )


def load_spec(path: str | Path) -> StudySpec:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"study spec {path} not found")
    data = yaml.safe_load(path.read_text()) or {}
    try:
        experiments = [
            Experiment(
                name=e["name"],
                config=str(path.parent / e["config"]),  # relative to the spec file
                arms=[_arm(a) for a in e["arms"]],
                seeds=[int(s) for s in e.get("seeds", [0])],
                set=list(e.get("set", [])),
                description=e.get("description", ""),
                smoke=list(e.get("smoke", [])),
                target=None if e.get("target") is None else float(e["target"]),
            )
            for e in data["experiments"]
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{path}: each experiment needs name, config and arms ({e})") from None
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: experiment names must be unique")
    for exp in experiments:
        labels = [a.label for a in exp.arms]
        for arm in exp.arms:
            if arm.vs is not None and arm.vs not in labels:
                raise ConfigError(
                    f"{path}: {exp.name} arm {arm.label} is compared with {arm.vs!r}, which is "
                    f"not one of its arms ({', '.join(labels)})"
                )
    try:
        summaries = [
            Summary(
                name=s["name"],
                experiments=list(s["experiments"]),
                x=s["x"],
                series=s["series"],
                description=s.get("description", ""),
            )
            for s in data.get("summaries", [])
        ]
    except (KeyError, TypeError) as e:
        raise ConfigError(
            f"{path}: each summary needs name, experiments, x and series ({e})"
        ) from None
    for summary in summaries:
        unknown = [n for n in summary.experiments if n not in names]
        if unknown:
            raise ConfigError(f"{path}: summary {summary.name} names unknown experiments {unknown}")
    return StudySpec(
        experiments,
        data.get("runs_dir", "runs/study"),
        data.get("report_dir", "docs/results"),
        list(data.get("smoke", [])),
        summaries,
    )


def command_line(exp: Experiment, arm: Arm, seeds: list[int], extra: list[str]) -> str:
    """The ``netadv sweep`` line that reproduces one arm of an experiment."""
    parts = [
        "netadv",
        "sweep",
        "--config",
        exp.config,
        "--methods",
        arm.method,
        "--seeds",
        ",".join(map(str, seeds)),
    ]
    for s in [*exp.set, *arm.set, *extra]:
        parts += ["--set", s]
    if arm.label != arm.method:
        parts += ["--set", f"label={arm.label}"]
    return shlex.join(parts)


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
        primary = "bleu" if group[0].task == "translate" else "top1"
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
    metric = "BLEU" if rows and rows[0]["metric"] == "bleu" else "Top-1 (%)"
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


def plot_summary(rows: list[dict[str, Any]], summary: Summary, path: Path) -> bool:
    """Three panels against ``x``: the metric (mean, error bar = std), the input layer's
    gradient norm and the chain's gain product (dashed at init, solid after training)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    lines: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        lines.setdefault((r["series"], r["arm"]), []).append(r)
    if not lines:
        return False
    cmap = colormaps["tab10"]
    metric = "BLEU" if rows[0]["metric"] == "bleu" else "test Top-1 (%)"
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
        quality, error = ("bleu", "ppl") if group[0].task == "translate" else ("top1", "top5_err")
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


def run_study(
    spec_path: str | Path,
    *,
    smoke: bool = False,
    only: list[str] | None = None,
    runs_dir: str | None = None,
    report_dir: str | None = None,
    quiet: bool = True,
) -> Path:
    spec = load_spec(spec_path)
    runs_root = Path(runs_dir or spec.runs_dir)
    report_root = Path(report_dir or spec.report_dir)
    chosen = [e for e in spec.experiments if not only or e.name in only]
    if only and len(chosen) != len(only):
        known = ", ".join(e.name for e in spec.experiments)
        raise ConfigError(f"unknown experiment in {only}; known: {known}")
    sections = []
    loaded_by_name: dict[str, list[Run]] = {}
    refs = {e.name: references(e) for e in chosen}
    for exp in chosen:
        seeds = exp.seeds[:1] if smoke else exp.seeds
        toy = [*spec.smoke, *exp.smoke] if smoke else []
        extra = [
            *toy,
            f"output_dir={runs_root / exp.name}",
            f"name={exp.name}",
        ]
        cfg = config_mod.load(exp.config, [*exp.set, *extra])
        print(f"== {exp.name}: {', '.join(a.label for a in exp.arms)} x seeds {seeds}")
        start = time.perf_counter()
        runs = sweep_arms(cfg, exp.arms, seeds, resume=True, quiet=quiet)
        wall = time.perf_counter() - start
        compare(runs, report_root / exp.name, references=refs[exp.name], target=exp.target)
        loaded = [load_run(r) for r in runs]
        loaded_by_name[exp.name] = loaded
        train_s = sum(r.metrics[-1].get("elapsed", 0.0) for r in loaded if r.metrics)
        hardware = sorted({r.summary.get("hardware") or "?" for r in loaded})
        commands = "\n".join(command_line(exp, a, seeds, extra) for a in exp.arms)
        sections.append(
            "\n".join(
                [
                    f"## {exp.name}",
                    "",
                    exp.description.strip(),
                    "",
                    f"Report with plots: [{exp.name}/report.md]({exp.name}/report.md). "
                    f"Train time {train_s / 60:.1f} min over {len(runs)} runs (this invocation "
                    f"{wall / 60:.1f} min wall); hardware: {'; '.join(hardware)}.",
                    "",
                    "```bash",
                    commands,
                    "```",
                    "",
                    format_table(
                        report_table(loaded, references=refs[exp.name], target=exp.target)
                    ),
                    "",
                ]
            )
        )
    overview = []
    for summary in spec.summaries:
        if not all(name in loaded_by_name for name in summary.experiments):
            continue  # a subset (--only) that leaves out part of this summary
        rows = summary_rows(summary, loaded_by_name, refs)
        figure = report_root / f"{summary.name}.png"
        figure.parent.mkdir(parents=True, exist_ok=True)
        drawn = plot_summary(rows, summary, figure)
        overview += [f"## {summary.name}", "", summary.description.strip(), ""]
        if drawn:
            overview += [f"![{summary.name}]({figure.name})", ""]
        overview += [format_summary(rows, summary), ""]
    claims = claim_rows(loaded_by_name, refs)
    if claims:
        overview += [
            "## Every GA / HD-FGD / SA arm against its reference",
            "",
            "In the units of the paper's claims: relative change of the mean Top-1 (BLEU for "
            "translation) and of the mean Top-5 error (test perplexity), with Welch p; relative "
            "change of the mean train seconds per epoch; and the seed-to-seed std of the final "
            "test loss beside the reference's (lower: steadier across seeds).",
            "",
            format_claims(claims),
            "",
        ]
    sections = overview + sections
    index = report_root / "STUDY.md"
    index.parent.mkdir(parents=True, exist_ok=True)
    header = [
        "# Study results" + (" (smoke: toy sizes, one seed; not evidence)" if smoke else ""),
        "",
        f"Generated by `netadv study --spec {spec_path}{' --smoke' if smoke else ''}`; "
        "every table below is regenerated by that command (finished runs are reused).",
        "",
    ]
    index.write_text("\n".join(header + sections))
    (report_root / "study.json").write_text(
        json.dumps(
            {"spec": str(spec_path), "smoke": smoke, "experiments": [e.name for e in chosen]},
            indent=2,
        )
    )
    return index
