"""``netadv compare RUN_DIR... [-o OUT_DIR] [--baseline ARM] [--vs ARM=REF]``: report.md
comparing the arms of the runs, with plots."""

from __future__ import annotations

import argparse

from netadv.experiments.report import format_table, write_report

HELP = "report.md: arms compared over seeds, with plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``netadv compare``."""
    parser.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="run folders, or folders to search for run folders",
    )
    parser.add_argument(
        "-o",
        "--output-dir",
        default=None,
        metavar="OUT_DIR",
        help="where to write report.md and plots (default: the runs' parent)",
    )
    parser.add_argument(
        "--baseline",
        default="baseline",
        metavar="ARM",
        help="the arm every other arm is tested against (default: baseline)",
    )
    parser.add_argument(
        "--vs",
        action="append",
        default=[],
        metavar="ARM=REF",
        help="test ARM against REF instead of the baseline (repeatable), e.g. "
        "ga-sigmoid=baseline-sigmoid",
    )
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        metavar="VALUE",
        help="the target for time to target (Top-1 as a fraction, or BLEU), read off the "
        "runs' per-epoch metrics instead of their config's target",
    )
    parser.add_argument(
        "--allow-mixed",
        action="store_true",
        help="pool runs into an arm even when their dataset, model, model_kwargs, epochs or "
        "data limits differ (the report says so)",
    )


def run(args: argparse.Namespace) -> int:
    """Write the report, print its path and the table; 0 on success."""
    references = {}
    for item in args.vs:
        arm, sep, ref = item.partition("=")
        if not sep or not arm or not ref:
            raise ValueError(f"--vs takes ARM=REF, got {item!r}")
        references[arm] = ref
    path, rows = write_report(
        args.run_dirs, args.output_dir, args.baseline, references, args.target, args.allow_mixed
    )
    print(f"wrote {path}")
    print(format_table(rows))
    return 0
