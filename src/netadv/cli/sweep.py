"""``netadv sweep --config C.yaml --methods ... --seeds ...``: a config over methods x seeds."""

from __future__ import annotations

import argparse

from netadv.cli.train import add_config_arguments, load_config
from netadv.experiments.sweep import parse_list, sweep

HELP = "train a config over methods x seeds"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--methods", default="baseline,ga,hdfgd,sa")
    parser.add_argument("--seeds", default="0,1,2")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
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
