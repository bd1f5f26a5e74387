"""``netadv train --config C.yaml [--set k=v] [--threads N] [--resume]``: one run
(``torchrun -m netadv train`` for DDP, or FSDP2 with ``--set strategy=fsdp``). Exit status 3
when the loss diverged."""

from __future__ import annotations

import argparse
import sys

from netadv.cli.options import add_set_argument
from netadv.errors import ConfigError
from netadv.experiments import config as config_mod
from netadv.experiments.config import RunConfig
from netadv.experiments.loop import TrainingDiverged, train

HELP = "train one config (torchrun -m netadv train: DDP, or --set strategy=fsdp)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config, --set, --threads, --resume, --quiet (train and sweep)."""
    parser.add_argument("--config", default=None, help="a YAML config (see configs/)")
    add_set_argument(parser, "override a config key (repeatable; nested: rewrite.period=2)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch intra-op threads (--set threads=N); 1 on a shared or busy machine",
    )
    parser.add_argument("--resume", action="store_true", help="continue a killed run")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def load_config(args: argparse.Namespace) -> RunConfig:
    """The run's config from --config, --set and --threads; a run needs a config file."""
    if args.config is None:
        raise ConfigError(
            "no --config given: start from a shipped one, e.g. `netadv "
            f"{args.command} --config configs/smoke.yaml` (configs/ holds the others)"
        )
    threads = [] if args.threads is None else [f"threads={args.threads}"]
    return config_mod.load(args.config, [*args.set, *threads])


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    try:
        train(cfg, resume=args.resume, quiet=args.quiet)
    except TrainingDiverged as e:
        print(e, file=sys.stderr)
        return 3
    return 0
