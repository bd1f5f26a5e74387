"""Run a config over methods x seeds, each arm under identical conditions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from netadv.errors import ConfigError
from netadv.experiments.config import METHODS, Config
from netadv.experiments.train import CHECKPOINT, TrainingDiverged, train


def parse_list(text: str, kind=str) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"expected a comma-separated list, got {text!r}")
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise ConfigError(f"bad list {text!r}") from None


def sweep(
    cfg: Config, methods: list[str], seeds: list[int], *, resume: bool = False, quiet: bool = False
) -> list[Path]:
    """Train every (method, seed); returns the run folders. A finished run is skipped (so a
    killed sweep continues where it stopped with ``--resume``); a diverged run is recorded
    and the sweep goes on."""
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"unknown method {m!r}; known: {', '.join(METHODS)}")
    runs = []
    for method in methods:
        for seed in seeds:
            run = dataclasses.replace(cfg, method=method, seed=seed)
            run = dataclasses.replace(run, name=f"{cfg.name}-{run.arm}-s{seed}").validate()
            folder = Path(run.output_dir) / run.name
            runs.append(folder)
            done = (folder / "summary.json").exists() and '"status": "ok"' in (
                folder / "summary.json"
            ).read_text()
            if done and resume:
                print(f"[{run.name}] already finished, skipped")
                continue
            try:
                train(run, resume=resume and (folder / CHECKPOINT).exists(), quiet=quiet)
            except TrainingDiverged as e:
                print(e)
    return runs
