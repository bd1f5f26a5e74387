"""``netadv train --config C.yaml [--set k=v] [--resume]``: one run (``torchrun -m netadv
train`` for DDP). Exit status 3 when the loss diverged."""

from __future__ import annotations

import argparse
import sys

from netadv.cli.options import add_set_argument
from netadv.experiments import config as config_mod
from netadv.experiments.loop import TrainingDiverged, train

HELP = "train one config (torchrun -m netadv train for DDP)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config, --set, --resume, --quiet (train and sweep)."""
    parser.add_argument("--config", default=None, help="a YAML config (see configs/)")
    add_set_argument(parser, "override a config key (repeatable; nested: rewrite.period=2)")
    parser.add_argument("--resume", action="store_true", help="continue a killed run")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config, args.set)
    try:
        train(cfg, resume=args.resume, quiet=args.quiet)
    except TrainingDiverged as e:
        print(e, file=sys.stderr)
        return 3
    return 0
