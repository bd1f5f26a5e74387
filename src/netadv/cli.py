"""The ``netadv`` command line: thin over the library."""

from __future__ import annotations

import argparse
import sys

from netadv.errors import ConfigError
from netadv.experiments.report import format_table, write_report


def _cmd_list(args) -> int:
    from netadv.activations.catalog import format_interval, list_activations

    rows = list_activations(max_gain=args.max_gain)
    header = ("name", "A_f", "stable interval", "HD-FGD decomposition")
    table = [
        (
            r["name"],
            "closed form" if r["closed_form"] else ("none" if r["no_adversarial"] else "generic"),
            format_interval(r["stable_interval"]),
            r["decomposition"] or "-",
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *table]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    print(f"\nstable interval: where the gain 1/|f'| <= max_gain={args.max_gain:g}")
    return 0


def _cmd_plot(args) -> int:
    from netadv.plots import plot_pair

    path = plot_pair(args.name, args.output, max_gain=args.max_gain, anchor=args.anchor)
    print(f"wrote {path}")
    return 0


def _cmd_demo(args) -> int:
    from netadv.demo import run

    run(data_dir=args.data_dir, output_dir=args.output_dir, quiet=args.quiet, overrides=args.set)
    return 0


def _cmd_train(args) -> int:
    from netadv.experiments import config as config_mod
    from netadv.experiments.loop import TrainingDiverged, train

    cfg = config_mod.load(args.config, args.set)
    try:
        train(cfg, resume=args.resume, quiet=args.quiet)
    except TrainingDiverged as e:
        print(e, file=sys.stderr)
        return 3
    return 0


def _cmd_sweep(args) -> int:
    from netadv.experiments import config as config_mod
    from netadv.experiments.sweep import parse_list, sweep

    cfg = config_mod.load(args.config, args.set)
    runs = sweep(
        cfg,
        parse_list(args.methods),
        parse_list(args.seeds, int),
        resume=args.resume,
        quiet=args.quiet,
    )
    print("runs:", " ".join(str(r) for r in runs))
    print(f"compare them with: netadv compare {' '.join(str(r) for r in runs)}")
    return 0


def _cmd_study(args) -> int:
    from netadv.experiments.study import run_study
    from netadv.experiments.sweep import parse_list

    index = run_study(
        args.spec,
        smoke=args.smoke,
        only=parse_list(args.only) if args.only else None,
        runs_dir=args.runs_dir,
        report_dir=args.report_dir,
    )
    print(f"wrote {index}")
    return 0


def _add_config_arguments(p) -> None:
    p.add_argument("--config", default=None, help="a YAML config (see configs/)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable; nested: rewrite.period=2)",
    )
    p.add_argument("--resume", action="store_true", help="continue a killed run")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netadv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="the activation registry as a table")
    p.add_argument("--max-gain", type=float, default=25.0)
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("plot", help="plot f, f', A_f, A_f' with the stable interval marked")
    p.add_argument("name", help="a registered activation name (see `netadv list`)")
    p.add_argument("-o", "--output", required=True, help="output PNG path")
    p.add_argument("--max-gain", type=float, default=25.0)
    p.add_argument("--anchor", default="f0", choices=["f0", "zero"])
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("demo", help="Fashion-MNIST: ViT GELU vs HD-FGD vs SA; sigmoid MLP vs GA")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output-dir", default=None, help="default: runs/demo")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of both demo configs",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("train", help="train one config (torchrun -m netadv train for DDP)")
    _add_config_arguments(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sweep", help="train a config over methods x seeds")
    _add_config_arguments(p)
    p.add_argument("--methods", default="baseline,ga,hdfgd,sa")
    p.add_argument("--seeds", default="0,1,2")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("study", help="run the reproduction study (configs/study.yaml)")
    p.add_argument("--spec", default="configs/study.yaml")
    p.add_argument("--smoke", action="store_true", help="toy sizes, one seed (CI)")
    p.add_argument("--only", default=None, help="comma-separated experiment names")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--report-dir", default=None)
    p.set_defaults(func=_cmd_study)

    from netadv.rewrite.cli import add_plan_arguments, run_plan

    p = sub.add_parser("plan", help="print the rewrite plan of a torchvision/timm/own model")
    add_plan_arguments(p)
    p.set_defaults(func=run_plan)

    from netadv.bench import add_bench_arguments, bench_main

    p = sub.add_parser("bench", help="speed/memory benchmarks against native PyTorch (P1-P6)")
    add_bench_arguments(p)
    p.set_defaults(func=bench_main)

    p = sub.add_parser("compare", help="report.md: arms compared over seeds, with plots")
    add_compare_arguments(p)
    p.set_defaults(func=compare_main)
    return parser


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
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


def compare_main(args: argparse.Namespace) -> int:
    """Write the report, print its path and the table; 0 on success."""
    references = {}
    for item in args.vs:
        arm, sep, ref = item.partition("=")
        if not sep or not arm or not ref:
            raise ValueError(f"--vs takes ARM=REF, got {item!r}")
        references[arm] = ref
    path, rows = write_report(
        args.run_dirs, args.output_dir, args.baseline, references, args.target
    )
    print(f"wrote {path}")
    print(format_table(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"netadv {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
