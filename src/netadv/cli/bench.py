"""``netadv bench``: the speed and memory suites of :mod:`netadv.bench`, printed (and
optionally written as JSON)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import torch

from netadv import bench
from netadv.bench import CLOCKS, SUITES, BenchConfig, machine, set_clock

HELP = "speed/memory benchmarks against native PyTorch (P1-P6)"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--suite", default=",".join(SUITES), help=f"comma-separated, of {','.join(SUITES)}"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, eager only (< 60 s)")
    parser.add_argument(
        "--backend",
        default=None,
        help="comma-separated backends to time (eager,compile); default: eager and compile "
        "(compile only where a compiler is present); --quick: eager",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per table")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=sorted(CLOCKS),
        help="wall time, or this process's CPU time (steadier on a shared machine)",
    )
    parser.add_argument("--json", default=None, help="also write the tables to this JSON file")
    return parser


def run(args: argparse.Namespace) -> int:
    suites = [s.strip().upper() for s in args.suite.split(",") if s.strip()]
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITES)}")
    if args.backend:
        backends = tuple(b.strip() for b in args.backend.split(","))
        for b in backends:
            if b not in ("eager", "compile"):
                raise ValueError(f"--backend takes eager and/or compile, got {b!r}")
    else:
        backends = ("eager",) if args.quick else ("eager", "compile")
    if args.threads:
        torch.set_num_threads(args.threads)
    set_clock(args.clock)
    cfg = BenchConfig(args.quick, args.device, backends, args.repeats)
    print(f"machine: {machine()}\n")
    tables = bench.run(suites, cfg)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "tables": [asdict(t) for t in tables]}, f, indent=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``netadv bench`` on its own (benchmarks/bench.py)."""
    parser = add_arguments(argparse.ArgumentParser(prog="netadv bench"))
    return run(parser.parse_args(argv))
