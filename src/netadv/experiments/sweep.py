"""Run a config over arms (methods, or labelled method + overrides) x seeds, each arm under
identical conditions."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

from netadv.errors import ConfigError
from netadv.experiments import config as config_mod
from netadv.experiments.config import METHODS, RunConfig
from netadv.experiments.loop import TrainingDiverged, train
from netadv.experiments.run_folder import CHECKPOINT, SUMMARY_FILE


class Arm(NamedTuple):
    """One arm of a comparison: a label (the report's row), a method, config overrides, and
    the arm its report compares it with (``None``: the baseline)."""

    label: str
    method: str
    set: tuple[str, ...] = ()
    vs: str | None = None
    also_vs: tuple[str, ...] = ()  # more arms the study tests it against (not in the report)


def parse_list(text: str, kind=str) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"expected a comma-separated list, got {text!r}")
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise ConfigError(f"bad list {text!r}") from None


def _finished(folder: Path) -> bool:
    summary = folder / SUMMARY_FILE
    return summary.exists() and '"status": "ok"' in summary.read_text()


def arm_runs(cfg: RunConfig, arms: list[Arm], seeds: list[int]) -> list[tuple[RunConfig, Path]]:
    """The config and run folder of every (arm, seed), in sweep order (nothing is run)."""
    for arm in arms:
        if arm.method not in METHODS:
            raise ConfigError(f"unknown method {arm.method!r}; known: {', '.join(METHODS)}")
    runs = []
    for arm in arms:
        base = config_mod.with_overrides(cfg, arm.set) if arm.set else cfg
        for seed in seeds:
            run = dataclasses.replace(base, method=arm.method, seed=seed)
            if arm.label != arm.method:
                run = dataclasses.replace(run, label=arm.label)
            run = dataclasses.replace(run, name=f"{cfg.name}-{run.arm}-s{seed}").validate()
            runs.append((run, Path(run.output_dir) / run.name))
    return runs


def recorded(folder: Path) -> bool:
    """Whether the run in ``folder`` ended (finished, or stopped as diverged): what a report
    can count without training."""
    summary = folder / SUMMARY_FILE
    text = summary.read_text() if summary.exists() else ""
    return '"status": "ok"' in text or '"status": "diverged"' in text


def sweep_arms(
    cfg: RunConfig, arms: list[Arm], seeds: list[int], *, resume: bool = False, quiet: bool = False
) -> list[Path]:
    """Train every (arm, seed); returns the run folders. With ``resume`` a finished run is
    skipped and a killed one continues; a diverged run is recorded and the sweep goes on."""
    runs = arm_runs(cfg, arms, seeds)
    for run, folder in runs:
        if resume and _finished(folder):
            print(f"[{run.name}] already finished, skipped")
            continue
        try:
            train(run, resume=resume and (folder / CHECKPOINT).exists(), quiet=quiet)
        except TrainingDiverged as e:
            print(e)
    return [folder for _, folder in runs]


def sweep(
    cfg: RunConfig,
    methods: list[str],
    seeds: list[int],
    *,
    resume: bool = False,
    quiet: bool = False,
) -> list[Path]:
    """Every method x seed (see :func:`sweep_arms`)."""
    return sweep_arms(cfg, [Arm(m, m) for m in methods], seeds, resume=resume, quiet=quiet)
