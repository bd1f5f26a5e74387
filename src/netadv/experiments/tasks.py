"""Every task the training loop knows, by the name a config's ``task`` gives it."""

from __future__ import annotations

from netadv.experiments.classify import CLASSIFY
from netadv.experiments.config import RunConfig
from netadv.experiments.task import Task, TaskMetrics
from netadv.experiments.translate.task import TRANSLATE

TASKS: dict[str, Task] = {task.name: task for task in (CLASSIFY, TRANSLATE)}


def task_for(cfg: RunConfig) -> Task:
    return TASKS[cfg.task]


def metrics_by_column(column: str | None) -> TaskMetrics:
    """The metrics of the task whose primary metric a report column names (classification's
    when none does)."""
    by_column = {task.metrics.primary.column: task.metrics for task in TASKS.values()}
    return by_column.get(column, CLASSIFY.metrics)


def metrics_of(task: str) -> TaskMetrics:
    """The metrics of the task a run folder names (a folder from before tasks had names, or
    of an unknown one, reads as classification)."""
    return TASKS.get(task, CLASSIFY).metrics
