"""``netadv plot NAME -o OUT.png``: an activation pair and its stable interval."""

from __future__ import annotations

import argparse

from netadv.plots import plot_pair

HELP = "plot f, f', A_f, A_f' with the stable interval marked"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="a registered activation name (see `netadv list`)")
    parser.add_argument("-o", "--output", required=True, help="output PNG path")
    parser.add_argument("--max-gain", type=float, default=25.0)
    parser.add_argument("--anchor", default="f0", choices=["f0", "zero"])


def run(args: argparse.Namespace) -> int:
    path = plot_pair(args.name, args.output, max_gain=args.max_gain, anchor=args.anchor)
    print(f"wrote {path}")
    return 0
