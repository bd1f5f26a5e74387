"""The task registry the loop, the reports and the study share."""

from __future__ import annotations

from netadv.experiments.config import TASK_NAMES
from netadv.experiments.tasks import TASKS, metrics_by_column, metrics_of


def test_every_config_task_has_a_task_and_consistent_metrics():
    assert tuple(TASKS) == TASK_NAMES
    for name, task in TASKS.items():
        m = task.metrics
        assert task.name == name and metrics_of(name) is m
        assert metrics_by_column(m.primary.column) is m
        # the summary's final primary metric is the last evaluated test metric
        assert m.final[m.primary.key] == (m.test_key, "last")
        assert m.primary.source == "summary"


def test_runs_of_unknown_tasks_read_as_classification():
    assert metrics_of("segmentation") is TASKS["classify"].metrics
    assert metrics_by_column(None) is TASKS["classify"].metrics
