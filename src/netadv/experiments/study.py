"""The reproduction study: a list of experiments (a config, arms, seeds) run and reported.

``netadv study --spec configs/study.yaml`` runs every experiment's arms over its seeds (finished
runs are skipped, so it resumes), then writes one report per experiment (table + plots) under
the report folder and an index, ``STUDY.md``, with the exact command that reproduces each table,
the train time and the hardware. ``--smoke`` runs the same programme at toy size (the spec's
``smoke`` overrides, one seed): that is what CI exercises.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netadv.errors import ConfigError
from netadv.experiments import config as config_mod
from netadv.experiments.report import compare, format_table, load_run, report_table
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


@dataclass
class StudySpec:
    experiments: list[Experiment]
    runs_dir: str = "runs/study"
    report_dir: str = "docs/results"
    smoke: list[str] = field(default_factory=list)


def _arm(entry: Any) -> Arm:
    if isinstance(entry, str):
        return Arm(entry, entry, ())
    if not isinstance(entry, dict) or "method" not in entry:
        raise ConfigError(f"an arm is a method name or {{label, method, set}}, got {entry!r}")
    return Arm(entry.get("label") or entry["method"], entry["method"], tuple(entry.get("set", [])))


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
            )
            for e in data["experiments"]
        ]
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{path}: each experiment needs name, config and arms ({e})") from None
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: experiment names must be unique")
    return StudySpec(
        experiments,
        data.get("runs_dir", "runs/study"),
        data.get("report_dir", "docs/results"),
        list(data.get("smoke", [])),
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
        compare(runs, report_root / exp.name)
        loaded = [load_run(r) for r in runs]
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
                    format_table(report_table(loaded)),
                    "",
                ]
            )
        )
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
