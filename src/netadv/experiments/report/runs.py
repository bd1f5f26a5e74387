"""Run folders as the reports read them: :class:`Run`, :func:`load_run`, :func:`find_run_dirs`.

A run folder, as the training loop writes it, holds ``config.yaml`` (the config mapping),
``metrics.jsonl`` (one JSON object per evaluated epoch), ``summary.json`` (final numbers, the
``arm`` label and a ``status`` of "ok", "diverged" or "running") and, optionally,
``diagnostics.jsonl`` (per-layer gradient norms and per-site gains). A run whose summary
says "running" but whose process is gone (nothing holds its ``train.lock``) is read as
"died". A missing or unreadable file is a one-line error naming it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netadv.experiments.run_folder import (
    CONFIG_FILE,
    DIAGNOSTICS_FILE,
    METRICS_FILE,
    STEPS_FILE,
    SUMMARY_FILE,
    is_training,
)
from netadv.experiments.task import Metric, TaskMetrics
from netadv.experiments.tasks import metrics_of

RUN_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE)
STATUSES = ("ok", "diverged", "running")  # as summary.json records them
UNFINISHED = ("diverged", "died", "running")  # a run's status when it is not "ok"
FIX = "rerun it or leave that run out of the comparison"


@dataclass
class Run:
    """One training run as read from its folder."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    died: bool = False  # "running" in its summary, but no process holds its lock
    steps: list[dict[str, Any]] = field(default_factory=list)  # steps.jsonl: per-step losses

    @property
    def arm(self) -> str:
        return str(self.summary["arm"])

    @property
    def status(self) -> str:
        """ "ok", "diverged", "running", or "died" (see :attr:`died`)."""
        return "died" if self.died else str(self.summary["status"])

    @property
    def seed(self) -> Any:
        return self.setting("seed")

    @property
    def task(self) -> str:
        return str(self.setting("task") or "classify")

    @property
    def measures(self) -> TaskMetrics:
        """What the run's task measures (names and labels)."""
        return metrics_of(self.task)

    def setting(self, key: str) -> Any:
        """A config value, falling back to the summary's copy of it."""
        value = self.config.get(key)
        return self.summary.get(key) if value is None else value


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def last_metric(run: Run, key: str) -> float | None:
    """``key`` of the last metrics row that has it as a finite number."""
    for row in reversed(run.metrics):
        if is_number(row.get(key)):
            return float(row[key])
    return None


def metric_value(run: Run, metric: Metric) -> float | None:
    """The run's value of a report metric, in table units; None where it has none."""
    if metric.source == "summary":
        raw = run.summary.get(metric.key)
    else:
        raw = last_metric(run, metric.key)
    if not is_number(raw):
        return None
    return metric.scale * (1.0 - raw if metric.complement else raw)


# ---------------------------------------------------------------------------------------------
# Loading


def load_run(path: str | Path) -> Run:
    """Read one run folder. Raises FileNotFoundError or ValueError, each a one-line message
    naming the file at fault, when a required file is missing or unreadable."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run folder")
    config = _read_config(path / CONFIG_FILE)
    summary = _read_json(path / SUMMARY_FILE)
    metrics = _read_jsonl(path / METRICS_FILE)
    diagnostics = _read_jsonl(path / DIAGNOSTICS_FILE) if (path / DIAGNOSTICS_FILE).exists() else []
    steps = _read_jsonl(path / STEPS_FILE) if (path / STEPS_FILE).exists() else []
    run = Run(path, config, metrics, summary, diagnostics, steps=steps)
    _check_summary(path / SUMMARY_FILE, summary, run.measures)
    run.died = summary["status"] == "running" and is_training(path) is False
    return run


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """The run folders named by ``paths``: each is a run folder itself (it holds one of
    config.yaml, metrics.jsonl, summary.json) or a folder searched for run folders below it."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: no such folder; pass run folders or folders of runs")
        if any((p / name).exists() for name in RUN_FILES):
            found.append(p)
            continue
        below = sorted({f.parent for name in RUN_FILES for f in p.rglob(name)})
        if not below:
            raise FileNotFoundError(f"{p}: holds no run folders (none has {SUMMARY_FILE})")
        found.extend(below)
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(f"{path}: missing, so the run never finished writing it; {FIX}")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise _missing(path)
    try:
        data = json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path}: not valid JSON ({e}); {FIX}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}; {FIX}")
    return data


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise _missing(path)
    try:
        lines = path.read_text().splitlines()
    except ValueError as e:
        raise ValueError(f"{path}: not a text file ({e}); {FIX}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}, line {number}: not valid JSON ({e}); {FIX}") from None
        if not isinstance(row, dict) or "epoch" not in row:
            raise ValueError(f"{path}, line {number}: expected an object with an 'epoch'; {FIX}")
        rows.append(row)
    return rows


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise _missing(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: not valid YAML ({first}); {FIX}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(data).__name__}; {FIX}")
    return data


def _check_summary(path: Path, summary: dict[str, Any], measures: TaskMetrics) -> None:
    if not isinstance(summary.get("arm"), str) or not summary["arm"]:
        raise ValueError(f"{path}: no 'arm' label to group the run by; {FIX}")
    if summary.get("status") not in STATUSES:
        raise ValueError(
            f"{path}: status {summary.get('status')!r} is not one of {', '.join(STATUSES)}; {FIX}"
        )
    if summary["status"] != "ok":
        return
    for key in (measures.primary.key, "seconds_per_epoch"):
        if not is_number(summary.get(key)):
            raise ValueError(
                f"{path}: status is 'ok' but {key!r} is missing or not a finite number; {FIX}"
            )
