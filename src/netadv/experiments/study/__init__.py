"""The reproduction study: a list of experiments (a config, arms, seeds) run and reported.

``netadv study --spec configs/study.yaml`` runs every experiment's arms over its seeds (finished
runs are skipped, so it resumes), then writes one report per experiment (table + plots) under
the report folder and an index, ``STUDY.md``, with the exact command that reproduces each table,
the train time and the hardware. ``--smoke`` runs the same programme at toy size (the spec's
``smoke`` overrides, one seed): that is what CI exercises.

By concern: :mod:`.spec` (the programme), :mod:`.tables` and :mod:`.figures` (the
cross-experiment views) and :mod:`.runner` (running it and writing the index).
"""

from netadv.experiments.study.figures import plot_summary
from netadv.experiments.study.runner import run_study
from netadv.experiments.study.spec import (
    Experiment,
    StudySpec,
    Summary,
    command_line,
    load_spec,
    references,
)
from netadv.experiments.study.tables import claim_rows, format_claims, format_summary, summary_rows

__all__ = [
    "Experiment",
    "StudySpec",
    "Summary",
    "claim_rows",
    "command_line",
    "format_claims",
    "format_summary",
    "load_spec",
    "plot_summary",
    "references",
    "run_study",
    "summary_rows",
]
