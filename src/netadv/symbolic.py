"""Sympy <-> torch: activation functions as expressions, compiled to tensor code.

One compiler serves the whole package: user activations given as sympy expressions, their
derivatives, and the lifted HD-FGD / SA functions. Compiled code refers to extra functions (the
adversarial modules of an SA block) by name and receives them at call time, so a compiled
expression holds no reference to any module and survives ``copy.deepcopy``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import sympy
import torch
import torch.nn.functional as F
from torch import Tensor

#: Denominators closer to zero than this are held at it (sign kept): a lifted quotient such as
#: the SA form of tanh's 4-term decomposition can cross zero, and must not return inf.
SAFE_DENOMINATOR = 1e-6


class sigmoid(sympy.Function):  # noqa: N801 - sympy function names are lower case
    """Logistic sigmoid, a sympy function that differentiates and prints as itself."""

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sympy.exp(-x))


class Phi(sympy.Function):  # noqa: N801
    """Standard normal CDF."""

    def fdiff(self, argindex=1):
        x = self.args[0]
        return sympy.exp(-(x**2) / 2) / sympy.sqrt(2 * sympy.pi)

    def _eval_rewrite_as_erf(self, x, **kwargs):
        return (1 + sympy.erf(x / sympy.sqrt(2))) / 2


class softplus(sympy.Function):  # noqa: N801
    """log(1 + e^x)."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return sympy.log(1 + sympy.exp(x))


def _phi(x: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(x * (1 / math.sqrt(2))))


TORCH_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "exp": torch.exp,
    "log": torch.log,
    "sin": torch.sin,
    "cos": torch.cos,
    "tanh": torch.tanh,
    "sinh": torch.sinh,
    "cosh": torch.cosh,
    "atan": torch.atan,
    "erf": torch.erf,
    "erfc": torch.erfc,
    "Abs": torch.abs,
    "sign": torch.sign,
    "sigmoid": torch.sigmoid,
    "Phi": _phi,
    "softplus": F.softplus,
}

#: Names a user may write in a sympy string expression besides sympy's own.
SYMPY_NAMESPACE = {"sigmoid": sigmoid, "Phi": Phi, "softplus": softplus}


def _safe_reciprocal(b: Tensor) -> Tensor:
    return 1 / torch.where(b >= 0, b.clamp(min=SAFE_DENOMINATOR), b.clamp(max=-SAFE_DENOMINATOR))


Evaluator = Callable[[Sequence[Tensor], Mapping[str, Callable]], Tensor]


def to_torch(expr: sympy.Expr, symbols: Sequence[sympy.Symbol]) -> Evaluator:
    """Compile ``expr`` into ``evaluate(xs, funcs)``: ``xs[i]`` binds ``symbols[i]``, and
    ``funcs`` supplies any function name not in :data:`TORCH_FUNCTIONS`."""
    index = {s: i for i, s in enumerate(symbols)}

    def build(e: sympy.Basic) -> Evaluator:
        if e in index:
            i = index[e]
            return lambda xs, fs: xs[i]
        if e.is_number:
            v = float(e)
            return lambda xs, fs: v
        if isinstance(e, sympy.Add | sympy.Mul):
            parts = [build(a) for a in e.args]
            add = isinstance(e, sympy.Add)

            def combine(xs, fs):
                out = parts[0](xs, fs)
                for p in parts[1:]:
                    out = out + p(xs, fs) if add else out * p(xs, fs)
                return out

            return combine
        if isinstance(e, sympy.Pow):
            base = build(e.base)
            if not e.exp.is_number:
                ex = build(e.exp)
                return lambda xs, fs: torch.pow(base(xs, fs), ex(xs, fs))
            p = float(e.exp)
            if p == 0.5:
                return lambda xs, fs: torch.sqrt(base(xs, fs))
            if p < 0:
                q = -p
                if q == 1:
                    return lambda xs, fs: _safe_reciprocal(base(xs, fs))
                return lambda xs, fs: _safe_reciprocal(base(xs, fs)) ** q
            q = int(p) if p.is_integer() else p
            return lambda xs, fs: base(xs, fs) ** q
        if isinstance(e, sympy.Function) or isinstance(e, sympy.core.function.AppliedUndef):
            if len(e.args) != 1:
                raise ValueError(f"cannot compile {e}: only one-argument functions are supported")
            name = type(e).__name__
            arg = build(e.args[0])
            if name in TORCH_FUNCTIONS:
                fn = TORCH_FUNCTIONS[name]
                return lambda xs, fs: fn(arg(xs, fs))
            return lambda xs, fs: fs[name](arg(xs, fs))
        raise ValueError(
            f"cannot compile {e} ({type(e).__name__}) to torch: supported are + * ** and "
            f"{', '.join(sorted(TORCH_FUNCTIONS))}"
        )

    root = build(sympy.sympify(expr))

    def evaluate(xs: Sequence[Tensor], funcs: Mapping[str, Callable] | None = None) -> Tensor:
        out = root(xs, funcs or {})
        return out if isinstance(out, Tensor) else torch.full_like(xs[0], out)

    return evaluate


def unary(expr: sympy.Expr, symbol: sympy.Symbol) -> Callable[[Tensor], Tensor]:
    """Compile a one-symbol expression into an element-wise tensor function."""
    evaluate = to_torch(expr, [symbol])
    fn = lambda x: evaluate([x])
    fn.__name__ = str(expr)
    return fn


def parse(text: str) -> sympy.Expr:
    """Parse a user's expression string (``"x*sigmoid(x)"``) with netadv's extra functions."""
    return sympy.sympify(text, locals=dict(SYMPY_NAMESPACE))


def only_symbol(expr: sympy.Expr) -> sympy.Symbol:
    free = sorted(expr.free_symbols, key=str)
    if len(free) != 1:
        raise ValueError(
            f"expected an expression in exactly one symbol, got {expr} with symbols "
            f"{[str(s) for s in free] or 'none'}"
        )
    return free[0]
