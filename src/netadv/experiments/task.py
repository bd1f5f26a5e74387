"""What the training loop needs from a kind of experiment (a task), and what the reports read.

A :class:`Task` is a small object of plain functions (load the data, build the model, an
epoch's batches, the loss of a batch, evaluate, ...) and its :class:`TaskMetrics`: the names
and labels of what it measures, which the loop's summary and the reports read instead of
knowing each task. The tasks themselves are in :mod:`netadv.experiments.tasks`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from netadv.experiments.config import RunConfig
from netadv.experiments.distributed import Placement
from netadv.experiments.run_folder import RunFolder


@dataclass(frozen=True)
class Metric:
    """A quality column of the report tables, read off a run in table units: ``scale`` times
    the run's value (``1 - value`` with ``complement``), found under ``key`` in summary.json
    (``source="summary"``) or in the last metrics row that has it (``source="metrics"``)."""

    column: str  # the key prefix of its report_table entries, e.g. "top1"
    label: str  # the table header, e.g. "Top-1 (%)"
    source: str
    key: str
    scale: float = 1.0
    complement: bool = False


@dataclass(frozen=True)
class TaskMetrics:
    """What a task measures, by name and label."""

    primary: Metric  # the quality metric arms are compared on (from summary.json)
    secondary: Metric  # the second quality column (lower is better)
    test_key: str  # the primary metric in metrics.jsonl rows, in its own units
    target_key: str  # the config key of the time-to-target threshold (in test_key units)
    target_name: str  # what the target is of, in the report's words
    unit: str  # of the primary metric in the report's findings
    measured: str  # the report's sentence on what the two quality columns are
    axis_label: str  # the primary metric on the study's cross-experiment figures
    # summary.json's final metrics: key -> (metrics row key, "last" evaluated or "best")
    final: dict[str, tuple[str, str]] = field(default_factory=dict)
    compared_settings: tuple[str, ...] = ()  # warned about when arms differ (besides the data)
    higher_is_better: bool = True  # of the primary metric

    def reaches(self, value: float, target: float) -> bool:
        """Whether a primary metric value reaches the target."""
        return value >= target if self.higher_is_better else value <= target

    def finals(self, evaluated: list[dict[str, Any]]) -> dict[str, Any]:
        """summary.json's final metrics from the evaluated epochs' metrics rows."""
        best = max if self.higher_is_better else min
        last = evaluated[-1] if evaluated else {}
        return {
            key: best((r[row_key] for r in evaluated), default=None)
            if how == "best"
            else last.get(row_key)
            for key, (row_key, how) in self.final.items()
        }


Counts = dict[str, float]


@dataclass
class Task:
    """A kind of experiment, as the loop (:func:`netadv.experiments.loop.fit_task`) trains
    it. The data is whatever ``load_data`` returns; the other functions take it back."""

    name: str
    metrics: TaskMetrics
    # config values summary.json records first (with their names), in order
    settings: Callable[[RunConfig], dict[str, Any]]
    # the data, on every rank (the run folder for what a resume reuses)
    load_data: Callable[[RunConfig, RunFolder, Placement], Any]
    # the model, and example inputs for the rewriter and the FLOP count
    build_model: Callable[[RunConfig, Any], tuple[nn.Module, tuple[Tensor, ...]]]
    # training examples in an epoch, over all ranks
    train_size: Callable[[Any], int]
    # this rank's batches of an epoch (data, config, placement, epoch, per-rank batch size)
    batches: Callable[[Any, RunConfig, Placement, int, int], Iterable[Any]]
    # names of the counts ``loss`` returns, summed over an epoch
    counts: tuple[str, ...]
    # mean loss of a batch (on the device), what it is a mean over, and the batch's counts
    loss: Callable[[nn.Module, Any, RunConfig, torch.device], tuple[Tensor, float, Counts]]
    # the metrics row's train_* entries from an epoch's sums (the loss sum as "loss")
    train_row: Callable[[Counts], dict[str, Any]]
    # the metrics row's test entries, and the files of them to write: {file name: text}
    evaluate: Callable[[nn.Module, Any, RunConfig, Placement], tuple[dict, dict[str, str]]]
    # what the task writes in the run folder at the start (rank 0)
    save_files: Callable[[Any, RunFolder], None]
    # the data in the startup line, and what one example is (for FLOPs per example)
    describe: Callable[[RunConfig, Any], str]
    example_name: str
    # an epoch's row in the progress line, without the epoch and its seconds
    epoch_line: Callable[[dict[str, Any]], str]
