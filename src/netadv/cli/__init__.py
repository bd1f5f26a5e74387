"""The ``netadv`` command line: thin over the library."""

from __future__ import annotations

import argparse
import sys

from netadv.cli import bench, compare, demo, doctor, listing, plan, plot, study, sweep, train
from netadv.errors import ConfigError

# subcommand -> its module: HELP, add_arguments(parser) and run(args) -> exit status
COMMANDS = {
    "list": listing,
    "plot": plot,
    "demo": demo,
    "train": train,
    "sweep": sweep,
    "study": study,
    "plan": plan,
    "bench": bench,
    "compare": compare,
    "doctor": doctor,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netadv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.HELP)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"netadv {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
