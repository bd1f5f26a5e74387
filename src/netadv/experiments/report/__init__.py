"""Compare experiment runs: a table of arms with statistics, a ``report.md`` and plots.

Runs are grouped into arms by ``summary["arm"]``; every statistic of an arm is over its seeds
with status "ok", and diverged or unfinished runs are counted and listed instead. By concern:
:mod:`.runs` (reading run folders), :mod:`.stats` (the numbers), :mod:`.tables` (markdown),
:mod:`.figures` (plots) and :mod:`.report` (``report.md``).
"""

from netadv.experiments.report.report import compare, write_report
from netadv.experiments.report.runs import Run, find_run_dirs, load_run
from netadv.experiments.report.stats import describe, group_arms, report_table, welch_p
from netadv.experiments.report.tables import findings, format_table, markdown_table

__all__ = [
    "Run",
    "compare",
    "describe",
    "find_run_dirs",
    "findings",
    "format_table",
    "group_arms",
    "load_run",
    "markdown_table",
    "report_table",
    "welch_p",
    "write_report",
]
