"""``netadv list``: the activation registry as a table (a module name other than ``list``, so
the package's namespace does not shadow the builtin)."""

from __future__ import annotations

import argparse

from netadv.activations.catalog import format_interval, list_activations

HELP = "the activation registry as a table"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-gain", type=float, default=25.0)


def run(args: argparse.Namespace) -> int:
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
