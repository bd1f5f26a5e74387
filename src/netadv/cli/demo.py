"""``netadv demo``: the two small Fashion-MNIST comparisons of :mod:`netadv.demo`."""

from __future__ import annotations

import argparse

from netadv import demo
from netadv.cli.options import add_set_argument

HELP = "Fashion-MNIST: ViT GELU vs HD-FGD vs SA; sigmoid MLP vs GA"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output-dir", default=None, help="default: runs/demo")
    add_set_argument(parser, "override a key of both demo configs")
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    demo.run(
        data_dir=args.data_dir, output_dir=args.output_dir, quiet=args.quiet, overrides=args.set
    )
    return 0
