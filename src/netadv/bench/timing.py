"""Tables and timing for the benchmark suites: :class:`Table`, :func:`measure` (rotated rounds,
ratios per round against a reference), the clock, :class:`BenchConfig` and :func:`machine`."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from netadv import fused


@dataclass
class Table:
    """One printed table: a title, column names and rows of cells, and notes under it."""

    suite: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        cells = [[cell(c) for c in row] for row in self.rows]
        widths = [
            max(len(str(x)) for x in [name] + [r[i] for r in cells])
            for i, name in enumerate(self.columns)
        ]
        line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
        out = [f"{self.suite}: {self.title}", line(self.columns)]
        out.append(line(["-" * w for w in widths]))
        out += [line(r) for r in cells]
        out += [f"  {n}" for n in self.notes]
        return "\n".join(out)

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


def cell(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "-" if v is None else str(v)


# --- timing ---------------------------------------------------------------------------------


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float
    ratio: float  # median over rounds of time / reference time in the same round
    first_ms: float  # the first call (includes one-time work such as compiling)
    min_ratio: float = math.nan  # min time / the reference's min time


#: "wall" (time.perf_counter) or "cpu" (time.process_time: CPU seconds of this process, all
#: threads; on a machine shared with other jobs it leaves out time spent descheduled).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def set_clock(name: str) -> None:
    global _clock
    if name not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {name!r}")
    _clock = CLOCKS[name]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    cases: dict[str, Callable[[], Any]],
    reference: str,
    *,
    repeats: int,
    warmup: int = 2,
    device: torch.device | str = "cpu",
) -> dict[str, Timing]:
    """Time each case ``repeats`` times in rotated rounds; ratios are against ``reference``."""
    device = torch.device(device)
    names = list(cases)
    first: dict[str, float] = {}
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            _sync(device)
            t0 = _clock()
            cases[name]()
            _sync(device)
            dt = _clock() - t0
            first.setdefault(name, dt)
            if r >= warmup:
                times[name].append(dt)
    ref = times[reference]
    out = {}
    for name in names:
        ts = times[name]
        ratios = [t / max(q, 1e-12) for t, q in zip(ts, ref)]
        out[name] = Timing(
            1e3 * statistics.median(ts),
            1e3 * min(ts),
            1e3 * max(ts),
            statistics.median(ratios),
            1e3 * first[name],
            min(ts) / max(min(ref), 1e-12),
        )
    return out


def timing_cells(t: Timing) -> list[Any]:
    return [t.median_ms, f"{cell(t.min_ms)}-{cell(t.max_ms)}", t.ratio, t.min_ratio]


@dataclass
class BenchConfig:
    quick: bool = False
    device: str = "cpu"
    backends: tuple[str, ...] = ("eager", "compile")
    repeats: int | None = None

    @property
    def reps(self) -> int:
        return self.repeats or (5 if self.quick else 15)


def backends(cfg: BenchConfig) -> list[str]:
    """The backends to run: compile only where a compiler is present."""
    out = []
    for b in cfg.backends:
        if b == "compile" and not fused.compiler_available(torch.device(cfg.device).type):
            continue
        out.append(b)
    return out


def machine() -> str:
    """One line describing where the numbers come from."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    parts = [
        f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        f"{torch.get_num_threads()} threads",
        f"clock: {'cpu' if _clock is time.process_time else 'wall'}",
    ]
    if torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name())
    parts.append(f"C++ compiler: {'yes' if fused.compiler_available('cpu') else 'no'}")
    return "; ".join(parts)
