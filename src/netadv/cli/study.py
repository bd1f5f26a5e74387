"""``netadv study --spec configs/study.yaml [--smoke] [--only ...] [--report-only]``: the
reproduction study."""

from __future__ import annotations

import argparse

from netadv.experiments.study import run_study
from netadv.experiments.sweep import parse_list

HELP = "run the reproduction study (configs/study.yaml)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", default="configs/study.yaml")
    parser.add_argument("--smoke", action="store_true", help="toy sizes, one seed (CI)")
    parser.add_argument("--only", default=None, help="comma-separated experiment names")
    parser.add_argument("--runs-dir", default=None)
    parser.add_argument("--report-dir", default=None)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rebuild the reports from the runs there are (an experiment with "
        "runs missing is listed as pending)",
    )


def run(args: argparse.Namespace) -> int:
    index = run_study(
        args.spec,
        smoke=args.smoke,
        only=parse_list(args.only) if args.only else None,
        runs_dir=args.runs_dir,
        report_dir=args.report_dir,
        report_only=args.report_only,
    )
    print(f"wrote {index}")
    return 0
