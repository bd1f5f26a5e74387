"""Closed forms of adversarial functions (METHOD.md section 1).

Each closed form is a pair of pure tensor functions: ``value(x)``, the adversarial ``A_f`` with
``A_f(0) = 0``, and ``inv_slope(x) = 1/f'(x)``. They are only called on inputs already clamped to
the stable interval, so they never see an argument where they overflow. Formulas go through
``exp`` rather than ``sinh``/``cosh``: on CPU the latter are not vectorised and were measured
about 70x slower.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ClosedForm:
    """``value`` is ``A_f`` with ``A_f(0) = 0``; ``inv_slope`` is ``1/f'``."""

    value: Callable[[Tensor], Tensor]
    inv_slope: Callable[[Tensor], Tensor]


def erfi(x: Tensor, n_terms: int = 40) -> Tensor:
    """Imaginary error function by its everywhere-positive Maclaurin series.

    torch has no erfi; every term has the sign of x, so the sum has no cancellation. ``n_terms``
    must cover the largest |x| it is called with (see :func:`erfi_terms`).
    """
    x2 = x * x
    term = x.clone()
    total = x.clone()
    for n in range(1, n_terms):
        term = term * x2 / n
        total = total + term / (2 * n + 1)
    return total * (2.0 / math.sqrt(math.pi))


def erfi_terms(x_max: float) -> int:
    """Series length for erfi to reach float64 precision on ``|x| <= x_max``."""
    return int(math.ceil(3.0 * x_max * x_max + 30))


def identity() -> ClosedForm:
    return ClosedForm(lambda x: x.clone(), torch.ones_like)


def sigmoid() -> ClosedForm:
    # 1/s'(x) = 2 + e^x + e^-x;  A(x) = 2x + 2 sinh(x)
    return ClosedForm(
        lambda x: 2 * x + torch.exp(x) - torch.exp(-x),
        lambda x: 2 + torch.exp(x) + torch.exp(-x),
    )


def tanh() -> ClosedForm:
    # 1/sech^2(x) = cosh^2(x);  A(x) = x/2 + sinh(2x)/4
    return ClosedForm(
        lambda x: x / 2 + (torch.exp(2 * x) - torch.exp(-2 * x)) / 8,
        lambda x: (torch.exp(2 * x) + 2 + torch.exp(-2 * x)) / 4,
    )


def softsign() -> ClosedForm:
    return ClosedForm(
        lambda x: x + x * x.abs() + x**3 / 3,
        lambda x: (1 + x.abs()) ** 2,
    )


def arctan() -> ClosedForm:
    return ClosedForm(lambda x: x + x**3 / 3, lambda x: 1 + x * x)


def erf(x_max: float) -> ClosedForm:
    n = erfi_terms(x_max)
    return ClosedForm(
        lambda x: (math.pi / 4) * erfi(x, n),
        lambda x: (math.sqrt(math.pi) / 2) * torch.exp(x * x),
    )


def normal_cdf(x_max: float) -> ClosedForm:
    n = erfi_terms(x_max / math.sqrt(2))
    return ClosedForm(
        lambda x: math.pi * erfi(x / math.sqrt(2), n),
        lambda x: math.sqrt(2 * math.pi) * torch.exp(x * x / 2),
    )


def softplus(beta: float = 1.0) -> ClosedForm:
    # f' = sigmoid(beta x);  1/f' = 1 + e^(-beta x);  A(x) = x + (1 - e^(-beta x)) / beta
    return ClosedForm(
        lambda x: x + (1 - torch.exp(-beta * x)) / beta,
        lambda x: 1 + torch.exp(-beta * x),
    )


def exp() -> ClosedForm:
    return ClosedForm(lambda x: 1 - torch.exp(-x), lambda x: torch.exp(-x))


def elu(alpha: float = 1.0, scale: float = 1.0) -> ClosedForm:
    # f' = scale (x > 0), scale * alpha * e^x (x <= 0). At the kink the inside (x >= 0) branch is
    # used, so a stable interval that ends at 0 continues with the slope it has inside.
    return ClosedForm(
        lambda x: torch.where(x >= 0, x, (1 - torch.exp(-x)) / alpha) / scale,
        lambda x: torch.where(x >= 0, torch.ones_like(x), torch.exp(-x) / alpha) / scale,
    )


def leaky_relu(negative_slope: float = 0.01) -> ClosedForm:
    return ClosedForm(
        lambda x: torch.where(x >= 0, x, x / negative_slope),
        lambda x: torch.where(x >= 0, torch.ones_like(x), torch.full_like(x, 1 / negative_slope)),
    )
