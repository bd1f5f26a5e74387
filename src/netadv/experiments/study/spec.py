"""The study's programme, as ``configs/study.yaml`` writes it: experiments (a config, arms,
seeds) and cross-experiment summaries (:func:`load_spec`)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netadv.errors import ConfigError
from netadv.experiments.sweep import Arm


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


@dataclass
class StudySpec:
    experiments: list[Experiment]
    runs_dir: str = "runs/study"
    report_dir: str = "docs/results"
    smoke: list[str] = field(default_factory=list)
    summaries: list[Summary] = field(default_factory=list)


def references(exp: Experiment) -> dict[str, str]:
    """The arms compared with an arm other than the baseline: {arm: reference}."""
    return {a.label: a.vs for a in exp.arms if a.vs}


def extra_comparisons(exp: Experiment) -> list[tuple[str, str]]:
    """(arm, reference) pairs the study also tests, beyond each arm's report reference (an SA
    arm against the capacity-matched baseline, say)."""
    return [(a.label, other) for a in exp.arms for other in a.also_vs]


def load_spec(path: str | Path) -> StudySpec:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"study spec {path} not found")
    data = yaml.safe_load(path.read_text()) or {}
    experiments = _experiments(path, data)
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: experiment names must be unique")
    for exp in experiments:
        labels = [a.label for a in exp.arms]
        for arm in exp.arms:
            for other in (arm.vs, *arm.also_vs):
                if other is not None and other not in labels:
                    raise ConfigError(
                        f"{path}: {exp.name} arm {arm.label} is compared with {other!r}, which "
                        f"is not one of its arms ({', '.join(labels)})"
                    )
    summaries = _summaries(path, data)
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


def _experiments(path: Path, data: dict[str, Any]) -> list[Experiment]:
    try:
        return [
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


def _arm(entry: Any) -> Arm:
    if isinstance(entry, str):
        return Arm(entry, entry, ())
    if not isinstance(entry, dict) or "method" not in entry:
        raise ConfigError(
            f"an arm is a method name or {{label, method, set, vs, also_vs}}, got {entry!r}"
        )
    also = entry.get("also_vs") or []
    return Arm(
        entry.get("label") or entry["method"],
        entry["method"],
        tuple(entry.get("set", [])),
        entry.get("vs"),
        tuple([also] if isinstance(also, str) else also),
    )


def _summaries(path: Path, data: dict[str, Any]) -> list[Summary]:
    try:
        return [
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
