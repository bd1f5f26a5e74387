"""Where an adversarial exists, and the stable interval it is used on (METHOD.md sections 1-2)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import brentq
from torch import Tensor

from netadv.errors import ConfigError, NoAdversarialError

#: f' is checked for zeros and sign changes on [-CHECK_EXTENT, CHECK_EXTENT] (beyond it common
#: activations' slopes underflow float64 without ever being zero).
CHECK_EXTENT = 20.0
#: The stable interval is searched out to +-SCAN_EXTENT; a side whose gain stays under max_gain
#: that far is reported as unbounded.
SCAN_EXTENT = 1e4

Derivative = Callable[[Tensor], Tensor]


def slope_by_autograd(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """f'(x) of an element-wise torch callable ``fn``, by autograd (zero where its output does
    not depend on x, as for ``torch.zeros_like``)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = fn(x)
        if not y.requires_grad:
            return torch.zeros_like(x)
        (g,) = torch.autograd.grad(y.sum(), x, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


def autograd_derivative(fn: Callable[[Tensor], Tensor]) -> Derivative:
    """f' of an element-wise torch callable, by autograd."""
    return functools.partial(slope_by_autograd, fn)


def _fmt(x: float) -> str:
    return f"{0.0 if abs(x) < 1e-9 else x:.4g}"


def _zero_sets(xs: np.ndarray, d: np.ndarray, deriv: Derivative) -> list[str]:
    """Describe where f' = 0 or changes sign on the grid ``xs`` (for the error message)."""
    found: list[str] = []
    zero = d == 0
    if zero.any():
        # contiguous runs of exact zeros
        edges = np.flatnonzero(np.diff(np.concatenate([[0], zero.astype(int), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            lo, hi = xs[a], xs[b - 1]
            if a == 0 and b == len(xs):
                found.append("every x")
            elif a == 0:
                found.append(f"x <= {_fmt(hi)}")
            elif b == len(xs):
                found.append(f"x >= {_fmt(lo)}")
            elif b - a == 1:
                found.append(f"x = {_fmt(lo)}")
            else:
                found.append(f"{_fmt(lo)} <= x <= {_fmt(hi)}")
    sign = np.sign(d)
    for i in np.flatnonzero(sign[:-1] * sign[1:] < 0):
        f = lambda t: float(deriv(torch.tensor([t], dtype=torch.float64))[0])
        root = brentq(f, xs[i], xs[i + 1], xtol=1e-12)  # also finds where f' jumps
        if min(abs(d[i]), abs(d[i + 1])) > 1e-3 * np.abs(d).max():  # a jump, not a zero
            found.append(f"x ~ {_fmt(root)} (jumps from {d[i]:.3g} to {d[i + 1]:.3g})")
        else:
            found.append(f"x ~ {_fmt(root)} (sign change)")
    return found


def _underflowed(d: np.ndarray) -> np.ndarray:
    """Mask the tails where f' has decayed to (numerical) zero, as tanh's does in float64 past
    |x| ~ 19: a run of zeros at an end of the grid whose neighbour is already tiny."""
    tiny = np.abs(d) < 1e-10 * np.abs(d).max()
    mask = np.zeros_like(tiny)
    for end in (slice(None), slice(None, None, -1)):
        run = np.cumprod(tiny[end]).astype(bool)
        if (d[end][run] != 0).any():  # decayed through tiny non-zero values: underflow
            mask[end] |= run
    return mask


def check_derivative(
    name: str, deriv: Derivative, *, surrogate: str | None = None, lifted: str | None = None
) -> None:
    """Raise :class:`NoAdversarialError` if f' vanishes or changes sign, with advice that works:
    ``surrogate`` is an activation to suggest instead (``netadv.adversarial``'s argument, as
    Python source), ``lifted`` what ``netadv.hdfgd`` accepts for f (None: f has no
    decomposition)."""
    xs = torch.linspace(-CHECK_EXTENT, CHECK_EXTENT, 40001, dtype=torch.float64)
    xs[len(xs) // 2] = 0.0  # exactly 0 (linspace gives -4e-16), where kinks usually sit
    d = deriv(xs).detach().numpy()
    if not np.isfinite(d).all():
        bad = xs.numpy()[~np.isfinite(d)]
        raise NoAdversarialError(
            f"{name}: f'(x) is not finite at x = {_fmt(bad[0])}; an adversarial needs a finite, "
            f"non-zero slope everywhere"
        )
    if (d == 0).all():
        raise NoAdversarialError(
            f"{name} has no adversarial function: f'(x) = 0 at every x, so A_f' = 1/f' does not "
            "exist anywhere; an activation must depend on its input (a constant does not)"
        )
    d = np.where(_underflowed(d), np.nan, d)  # saturated tails are not zeros
    keep = ~np.isnan(d)
    xs, d = xs[keep], d[keep]
    if (d == 0).any() or (d > 0).any() and (d < 0).any():
        sets = _zero_sets(xs.numpy(), d, deriv)[:4]
        what = "f' changes sign" if all("jumps" in z for z in sets) else "f'(x) = 0"
        half_line = (d[: len(d) // 2] == 0).all() or (d[len(d) // 2 + 1 :] == 0).all()
        raise NoAdversarialError(
            f"{name} has no adversarial function: {what} at {'; '.join(sets)}, so A_f' = 1/f' "
            f"does not exist there; {_advice(name, half_line, surrogate, lifted)}"
        )


def _advice(name: str, half_line: bool, surrogate: str | None, lifted: str | None) -> str:
    """What to use instead of an activation with no adversarial (see check_derivative)."""
    if surrogate is None and half_line:
        surrogate = "torch.nn.LeakyReLU(0.1)"
    if surrogate is not None:
        hdfgd = f", or HD-FGD/SA: netadv.hdfgd(layer, {lifted!r}, adversarial=True)" * bool(lifted)
        return (
            f"use an explicit surrogate such as netadv.adversarial({surrogate}) (a positive slope "
            f">= 1/max_gain keeps the gain bounded on both sides){hdfgd}"
        )
    if lifted is not None:
        return (
            f"use HD-FGD/SA instead: netadv.hdfgd(layer, {lifted!r}, adversarial=True) or "
            "netadv.rewrite(model, 'sa')"
        )
    return (
        f"HD-FGD/SA need {name}'s decomposition: pass f as a one-symbol sympy expression "
        "(e.g. netadv.hdfgd(layer, 'x*sigmoid(x)', adversarial=True)) or register one with "
        "netadv.register_activation(name, f, decomposition=...)"
    )


def stable_interval_of(name: str, deriv: Derivative, max_gain: float) -> tuple[float, float]:
    """The interval around 0 where the gain ``1/|f'(x)|`` is at most ``max_gain``."""
    if not (isinstance(max_gain, int | float) and max_gain > 0 and math.isfinite(max_gain)):
        raise ConfigError(f"max_gain must be a positive finite number, got {max_gain!r}")
    at0 = float(deriv(torch.zeros(1, dtype=torch.float64))[0])
    if at0 == 0 or 1 / abs(at0) > max_gain:
        raise ConfigError(
            f"{name}: the gain at 0 is 1/|f'(0)| = {1 / abs(at0) if at0 else math.inf:.4g}, "
            f"above max_gain={max_gain}; raise max_gain"
        )

    def excess(t: float) -> float:  # log-gain minus log(max_gain); +inf-safe
        d = abs(float(deriv(torch.tensor([t], dtype=torch.float64))[0]))
        if math.isinf(d):
            return -700.0
        return (-math.log(d) if d > 0 else 700.0) - math.log(max_gain)

    grid = np.concatenate(
        [np.linspace(0, CHECK_EXTENT, 8001)[1:], np.geomspace(CHECK_EXTENT, SCAN_EXTENT, 400)[1:]]
    )
    edges = []
    for side in (-1.0, 1.0):
        pts = torch.tensor(side * grid, dtype=torch.float64)
        d = deriv(pts).detach().abs().numpy()
        # a slope that is zero or NaN (a formula overflowing far out) counts as outside
        over = np.flatnonzero(np.isnan(d) | (d == 0) | (1 / np.maximum(d, 1e-300) > max_gain))
        if len(over) == 0:
            edges.append(side * math.inf)
            continue
        i = over[0]
        a = side * grid[i - 1] if i > 0 else 0.0
        edge = brentq(excess, a, side * grid[i], xtol=1e-13, rtol=1e-14)
        edges.append(0.0 if abs(edge) < 1e-9 else float(edge))
    return edges[0], edges[1]
