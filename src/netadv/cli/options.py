"""Arguments several subcommands share."""

from __future__ import annotations

import argparse


def add_set_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE``, repeatable: a config override."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)
