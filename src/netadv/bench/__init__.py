"""Speed and memory benchmarks: every netadv layer side by side with native PyTorch.

Suites (``netadv bench --suite P1,P2,P3,P4,P6 [--quick]``; docs/PERFORMANCE.md has the numbers):

- P1: forward+backward time of each adversarial activation, and of the generic (knot table)
  construction, against native ``F.gelu`` and ``F.silu``, per dtype and backend.
- P2: bytes saved for backward per adversarial / HD-FGD / SA site, over the input's bytes.
- P3: HD-FGD and SA GELU blocks against a hand-written GEGLU of the same shape.
- P4: a training step and inference latency (batch 1 and 256) of GA-, HD-FGD- and
  SA-rewritten ViT and ResNet against their baselines, with FLOPs and parameters.
- P6: plan + rewrite time for Swin-T and a 48-layer ViT.

By concern: :mod:`.timing` (tables, the clock, :func:`measure`), :mod:`.kernels` (P1-P3),
:mod:`.models` (P4, P6); the command line is :mod:`netadv.cli.bench`.

Timing: every case of a table runs once per round, in an order rotated each round, after warm-up
rounds; a case's ratio is the median over rounds of its time divided by the reference's time in
the same round, so load from other processes, which drifts over seconds, cancels out of ratios.
Tables show the median time, its min-max over rounds, and that ratio.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from netadv.bench.kernels import (
    P1_ADVERSARIAL,
    generic_sigmoid,
    saved_bytes,
    suite_p1,
    suite_p2,
    suite_p3,
)
from netadv.bench.models import suite_p4, suite_p6
from netadv.bench.timing import (
    CLOCKS,
    BenchConfig,
    Table,
    Timing,
    machine,
    measure,
    set_clock,
)

SUITES = ("P1", "P2", "P3", "P4", "P6")
SUITE_FUNCS = {"P1": suite_p1, "P2": suite_p2, "P3": suite_p3, "P4": suite_p4, "P6": suite_p6}

__all__ = [
    "CLOCKS",
    "P1_ADVERSARIAL",
    "SUITES",
    "BenchConfig",
    "Table",
    "Timing",
    "generic_sigmoid",
    "machine",
    "measure",
    "run",
    "saved_bytes",
    "set_clock",
]


def run(suites: list[str], cfg: BenchConfig, echo: Callable[[str], None] = print) -> list[Table]:
    """Run the named suites, echoing each table as it is done; returns the tables."""
    tables = []
    for s in suites:
        t0 = time.perf_counter()
        for table in SUITE_FUNCS[s](cfg):
            echo(table.format() + "\n")
            tables.append(table)
        echo(f"[{s} took {time.perf_counter() - t0:.1f} s]\n")
    return tables
