"""Closed forms of adversarial functions (METHOD.md section 1).

Each closed form is a pair of pure tensor functions: ``value(x)``, the adversarial ``A_f`` with
``A_f(0) = 0``, and ``inv_slope(x) = 1/f'(x)``. They are only called on inputs already clamped to
the stable interval, so they never see an argument where they overflow. Formulas were chosen by
measurement (docs/PERFORMANCE.md): on CPU, ``sinh``/``cosh`` are not vectorised (about 70x slower
than ``exp``) and ``exp`` itself runs about 3x slower than ``exp2``, so every exponential here is
``exp2(x * log2(e))``; ``erfi`` is a Horner polynomial only as long as the dtype needs.

Besides the built-in forms: :func:`given`, a user's closed form, and :func:`by_sympy`, the
closed form sympy integrates for an activation given as an expression (when it finds one).
"""

from __future__ import annotations

import functools
import math
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

import sympy
import torch
from torch import Tensor

from netadv import symbolic
from netadv.symbolic import fast_exp


@dataclass(frozen=True)
class ClosedForm:
    """``value`` is ``A_f`` with ``A_f(0) = 0``; ``inv_slope`` is ``1/f'``."""

    value: Callable[[Tensor], Tensor]
    inv_slope: Callable[[Tensor], Tensor]
    #: What the two functions compute, for built-in forms (equal keys: the same math, so
    #: layers may share one compiled kernel); None for a user's closed form.
    key: tuple | None = None


def erfi(x: Tensor, n_terms: int = 40) -> Tensor:
    """Imaginary error function by its everywhere-positive Maclaurin series, in Horner form.

    torch has no erfi; every term has the sign of x, so the sum has no cancellation. ``n_terms``
    must cover the largest |x| it is called with at x's precision (see :func:`erfi_terms`).
    """
    x2 = x * x
    total = x2 * _ERFI_COEF[n_terms - 1] + _ERFI_COEF[n_terms - 2]
    for n in range(n_terms - 3, -1, -1):
        total = total * x2 + _ERFI_COEF[n]
    return total * x


#: erfi(x) = x * sum_n c_n x^(2n) with c_n = 2 / (sqrt(pi) n! (2n + 1)).
_ERFI_COEF = [2.0 / math.sqrt(math.pi) / (math.factorial(n) * (2 * n + 1)) for n in range(160)]


def erfi_terms(x_max: float, eps: float = 2.0**-53) -> int:
    """Series length for erfi to reach relative precision ``eps`` on ``|x| <= x_max``: the
    first omitted term, times a geometric bound on the rest, is below ``eps`` times the first."""
    u2, term, n = x_max * x_max, 1.0, 0
    while True:
        n += 1
        term *= u2 / n
        if n + 1 > u2 and term / (2 * n + 1) / (1 - u2 / (n + 1)) <= eps:
            return max(n, 2)


def _erfi_by_dtype(x_max: float) -> Callable[[Tensor], Tensor]:
    """erfi with as many terms as x's dtype resolves (float64 needs about 1.6x float32's)."""
    n64, n32 = erfi_terms(x_max), erfi_terms(x_max, 2.0**-25)
    return lambda x: erfi(x, n64 if x.dtype == torch.float64 else n32)


def identity() -> ClosedForm:
    return ClosedForm(lambda x: x.clone(), torch.ones_like, key=("identity",))


def sigmoid() -> ClosedForm:
    # 1/s'(x) = 2 + e^x + e^-x;  A(x) = 2x + 2 sinh(x)
    def value(x):
        e = fast_exp(x)
        return torch.add(e - torch.reciprocal(e), x, alpha=2)

    def inv_slope(x):
        e = fast_exp(x)
        return (e + torch.reciprocal(e)) + 2

    return ClosedForm(value, inv_slope, key=("sigmoid",))


def tanh() -> ClosedForm:
    # 1/sech^2(x) = cosh^2(x);  A(x) = x/2 + sinh(2x)/4
    def value(x):
        e = fast_exp(2 * x)
        return torch.add(x * 0.5, e - torch.reciprocal(e), alpha=1 / 8)

    def inv_slope(x):
        e = fast_exp(2 * x)
        return (e + torch.reciprocal(e) + 2) * 0.25

    return ClosedForm(value, inv_slope, key=("tanh",))


def softsign() -> ClosedForm:
    return ClosedForm(
        lambda x: x * (1 + x.abs() + x * x / 3),
        lambda x: (1 + x.abs()) ** 2,
        key=("softsign",),
    )


def arctan() -> ClosedForm:
    return ClosedForm(lambda x: x * (1 + x * x / 3), lambda x: 1 + x * x, key=("arctan",))


def erf(x_max: float) -> ClosedForm:
    erfi_ = _erfi_by_dtype(x_max)
    return ClosedForm(
        lambda x: (math.pi / 4) * erfi_(x),
        lambda x: (math.sqrt(math.pi) / 2) * fast_exp(x * x),
        key=("erf", x_max),
    )


def normal_cdf(x_max: float) -> ClosedForm:
    erfi_ = _erfi_by_dtype(x_max / math.sqrt(2))
    return ClosedForm(
        lambda x: math.pi * erfi_(x * (1 / math.sqrt(2))),
        lambda x: math.sqrt(2 * math.pi) * fast_exp(x * x / 2),
        key=("normal_cdf", x_max),
    )


def softplus(beta: float = 1.0) -> ClosedForm:
    # f' = sigmoid(beta x);  1/f' = 1 + e^(-beta x);  A(x) = x + (1 - e^(-beta x)) / beta
    return ClosedForm(
        lambda x: x + (1 - fast_exp(-beta * x)) / beta,
        lambda x: 1 + fast_exp(-beta * x),
        key=("softplus", beta),
    )


def exp() -> ClosedForm:
    return ClosedForm(lambda x: 1 - fast_exp(-x), lambda x: fast_exp(-x), key=("exp",))


# Piecewise forms select with a 0/1 mask rather than torch.where, measured 10x slower on CPU.
# At the kink the inside (x >= 0) branch is used, so a stable interval that ends at 0 continues
# with the slope it has inside.


def elu(alpha: float = 1.0, scale: float = 1.0) -> ClosedForm:
    # f' = scale (x > 0), scale * alpha * e^x (x <= 0)
    def value(x):
        return (x.clamp(min=0) + (1 - fast_exp(-x.clamp(max=0))) / alpha) / scale

    def inv_slope(x):
        m = (x >= 0).to(x.dtype)
        return (m + (1 - m) * (fast_exp(-x.clamp(max=0)) / alpha)) / scale

    return ClosedForm(value, inv_slope, key=("elu", alpha, scale))


def leaky_relu(negative_slope: float = 0.01) -> ClosedForm:
    a = negative_slope
    return ClosedForm(
        lambda x: x.clamp(min=0) + x.clamp(max=0) / a,
        lambda x: (1 - 1 / a) * (x >= 0).to(x.dtype) + 1 / a,
        key=("leaky_relu", a),
    )


# ---- closed forms that are not built in -----------------------------------------------------


def _shifted(value: Callable[[Tensor], Tensor], a0: float, x: Tensor) -> Tensor:
    return value(x) - a0


def _reciprocal(derivative: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    return 1 / derivative(x)


def given(value: Callable[[Tensor], Tensor], derivative: Callable, a0: float) -> ClosedForm:
    """A user's closed form ``value`` of A_f (any anchor; ``a0 = value(0)``), re-anchored to
    A(0) = 0, with the slopes ``1/derivative``."""
    return ClosedForm(
        functools.partial(_shifted, value, a0), functools.partial(_reciprocal, derivative)
    )


def by_sympy(expr: sympy.Expr | None, timeout_s: float = 3.0) -> ClosedForm | None:
    """``sympy.integrate(1/f')`` for an activation given as a one-symbol expression, or None
    when there is none that torch can evaluate. Main thread only: it needs a SIGALRM timeout,
    since integrate can run for minutes."""
    if expr is None or threading.current_thread() is not threading.main_thread():
        return None
    x = symbolic.only_symbol(expr)

    def _timeout(*_):
        raise TimeoutError

    old = signal.signal(signal.SIGALRM, _timeout)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        inv = sympy.simplify(1 / sympy.diff(expr, x))
        a = sympy.integrate(inv, x)
    except Exception:  # TimeoutError, or sympy failing on an exotic expression
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    # a function the compiler does not know (erfi, Ei...) would only fail when called
    unknown = {type(f).__name__ for f in a.atoms(sympy.Function)} - set(symbolic.TORCH_FUNCTIONS)
    if a.has(sympy.Integral) or unknown:
        return None
    try:
        value = symbolic.unary(a - a.subs(x, 0), x)
        inv_slope = symbolic.unary(inv, x)
    except ValueError:  # uses a function the torch compiler does not know
        return None
    return ClosedForm(value, inv_slope)
