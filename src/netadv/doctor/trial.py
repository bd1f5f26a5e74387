"""The doctor's trial: a short, bounded training run of the baseline and of each rewrite, from the
same weights, on the same batches in the same order, so their losses can be compared step by step.

Each arm trains for ``steps`` steps or ``time_limit`` seconds, whichever comes first, with AdamW
(weight decay 0) at ``lr``; SA arms add :func:`netadv.penalty` to the loss they optimise, and every
arm records the task loss alone. An arm whose loss becomes NaN/Inf stops there (diverged).

Verdict ("clearly better than the baseline"): over the steps both arms ran, the arm's final loss
(the mean over the last tenth of the steps) is at most ``1 - MARGIN`` times the baseline's, and
its loss is below the baseline's on at least ``MAJORITY`` of those last-tenth steps (the same
batches, so step by step is a paired comparison). A diverged baseline counts as infinitely high
from the step it diverged.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from netadv.doctor.inputs import Batches, checked_loss
from netadv.layers.hdfgd import HDFGD, penalty
from netadv.layers.widths import n_params

#: An arm must end at least this fraction below the baseline's final loss ...
MARGIN = 0.10
#: ... and be below it on at least this fraction of the last tenth's steps.
MAJORITY = 0.75
STEPS = 300
LR = 1e-3
TIME_LIMIT = 60.0  # seconds per arm


@dataclass
class Arm:
    """One arm's trial: its losses per step and what happened."""

    name: str
    params: int
    losses: list[float] = field(default_factory=list)
    diverged_at: int | None = None  # the step whose loss was NaN/Inf
    time_limited: bool = False
    seconds: float = 0.0
    input_grad_first: float | None = None  # input-side weight gradient norm, first step
    input_grad_last: float | None = None  # ... and last step

    @property
    def first(self) -> float | None:
        n = len(self.losses)
        return _mean(self.losses[: max(1, n // 10)]) if n else None

    @property
    def final(self) -> float | None:
        n = len(self.losses)
        return _mean(self.losses[n - max(1, n // 10) :]) if n else None

    def series(self, steps: int) -> list[float]:
        """The losses, with +inf from the step it diverged to ``steps``."""
        if self.diverged_at is None:
            return list(self.losses)
        return self.losses + [math.inf] * (steps - len(self.losses))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("losses")
        d.update(steps=len(self.losses), first_loss=self.first, final_loss=self.final)
        d["curve"] = _thin(self.losses)
        return d


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


def _thin(v: list[float], n: int = 50) -> list[float]:
    """At most ``n`` points of a curve (every k-th), for reports and JSON."""
    k = max(1, math.ceil(len(v) / n))
    return v[::k]


def train_arm(
    name: str,
    model: nn.Module,
    batches: Batches,
    loss_fn: Callable,
    *,
    steps: int = STEPS,
    lr: float = LR,
    time_limit: float = TIME_LIMIT,
    input_layer: str | None = None,
    quiet: bool = False,
    seed: int = 0,
) -> Arm:
    """Train ``model`` (changed in place) for ``steps`` steps or ``time_limit`` seconds."""
    torch.manual_seed(seed)  # dropout and the like draw the same in every arm
    arm = Arm(name, n_params(model))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    weight = _input_weight(model, input_layer)
    model.train()
    bar = tqdm(total=steps, desc=f"doctor trial: {name}", file=sys.stderr, disable=quiet)
    start = time.perf_counter()
    for step, (x, y) in enumerate(batches.take(steps)):
        loss = checked_loss(loss_fn, model(x.to(device)), y.to(device))
        if not torch.isfinite(loss):
            arm.diverged_at = step
            break
        optimizer.zero_grad(set_to_none=True)
        (loss + penalty(model)).backward()
        if weight is not None and weight.grad is not None:
            arm.input_grad_last = weight.grad.float().norm().item()
            if step == 0:
                arm.input_grad_first = arm.input_grad_last
        optimizer.step()
        arm.losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4g}", refresh=False)
        if time.perf_counter() - start > time_limit and step + 1 < steps:
            arm.time_limited = True
            break
    bar.close()
    arm.seconds = time.perf_counter() - start
    return arm


def _input_weight(model: nn.Module, name: str | None) -> torch.Tensor | None:
    """The weight of the input-side layer ``name`` (the wide producer where a block replaced it)."""
    if name is None:
        return None
    try:
        m = model.get_submodule(name)
    except AttributeError:
        return None
    m = m.producer if isinstance(m, HDFGD) else m
    return getattr(m, "weight", None)


def compare(base: Arm, arm: Arm, steps: int) -> dict[str, Any]:
    """How ``arm`` did against ``base`` over the steps both ran (see the module docstring)."""
    a, b = arm.series(steps), base.series(steps)
    n = min(len(a), len(b))
    if n == 0:
        return {
            "steps": 0,
            "better": False,
            "change": None,
            "lower_share": None,
            "final": None,
            "baseline_final": None,
        }
    tail = max(1, n // 10)
    fa, fb = _mean(a[n - tail : n]), _mean(b[n - tail : n])
    lower = sum(x < y for x, y in zip(a[n - tail : n], b[n - tail : n])) / tail
    finite = math.isfinite(fa)
    change = (fa - fb) / fb if finite and math.isfinite(fb) and fb != 0 else None
    better = finite and fa <= (1 - MARGIN) * fb and lower >= MAJORITY
    return {
        "steps": n,
        "better": better,
        "change": change,
        "lower_share": lower,
        "final": fa,
        "baseline_final": fb,
    }
