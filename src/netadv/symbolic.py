"""Sympy <-> torch: activation functions as expressions, compiled to tensor code.

One compiler serves the whole package: user activations given as sympy expressions, their
derivatives, and the lifted HD-FGD / SA functions. Compiled code refers to extra functions (the
adversarial terms of an SA block) by name and receives them at call time, so a compiled
expression holds no reference to any module and survives ``copy.deepcopy``.

:data:`FUNCTION_TABLE` is the one table from sympy function names to tensor functions; this
closure compiler and the code generator of :mod:`netadv.functional.codegen` both read it.
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
LOG2E = 1.0 / math.log(2.0)
_SQRT1_2 = 1 / math.sqrt(2)


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


# Element-wise functions chosen by measurement on CPU (docs/PERFORMANCE.md): torch.exp runs
# about 3x slower than exp2, sinh/cosh are not vectorised (~70x slower than exp), and tanh and
# softplus through sigmoid and exp2 run 2-3x faster than torch.tanh / F.softplus when compiled
# and no slower eagerly.
def fast_exp(x: Tensor) -> Tensor:
    """``e^x`` through the vectorised ``exp2``."""
    return torch.exp2(x * LOG2E)


def _tanh(x: Tensor) -> Tensor:
    return 2 * torch.sigmoid(2 * x) - 1


def _softplus(x: Tensor) -> Tensor:
    return x.clamp(min=0) - torch.log(torch.sigmoid(x.abs()))


def _phi(x: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(x * _SQRT1_2))


def _sinh(x: Tensor) -> Tensor:
    e = fast_exp(x)
    return (e - torch.reciprocal(e)) / 2


def _cosh(x: Tensor) -> Tensor:
    e = fast_exp(x)
    return (e + torch.reciprocal(e)) / 2


#: Every function netadv compiles, by sympy name: (eager, fast). The generated lifted kernels
#: (netadv.functional.codegen) use the fast column, measured faster; the closure path keeps the
#: eager, correctly rounded one because the fast softplus loses float32 precision for x << 0
#: (mish's decomposition off by 1.2e-6 at x = -8, past the 1e-6 tests/test_decompose.py holds).
FUNCTION_TABLE: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "exp": (torch.exp, fast_exp),
    "log": (torch.log, torch.log),
    "sin": (torch.sin, torch.sin),
    "cos": (torch.cos, torch.cos),
    "tanh": (torch.tanh, _tanh),
    "sinh": (torch.sinh, _sinh),
    "cosh": (torch.cosh, _cosh),
    "atan": (torch.atan, torch.atan),
    "erf": (torch.erf, torch.erf),
    "erfc": (torch.erfc, torch.erfc),
    "Abs": (torch.abs, torch.abs),
    "sign": (torch.sign, torch.sign),
    "sigmoid": (torch.sigmoid, torch.sigmoid),
    "Phi": (_phi, _phi),
    "softplus": (F.softplus, _softplus),
}
#: The closure path's functions (eager column of :data:`FUNCTION_TABLE`).
TORCH_FUNCTIONS = {name: eager for name, (eager, _) in FUNCTION_TABLE.items()}
#: The generated kernels' functions (fast column of :data:`FUNCTION_TABLE`).
FAST_FUNCTIONS = {name: fast for name, (_, fast) in FUNCTION_TABLE.items()}

#: Names a user may write in a sympy string expression besides sympy's own.
SYMPY_NAMESPACE = {"sigmoid": sigmoid, "Phi": Phi, "softplus": softplus}


def safe_reciprocal(b: Tensor) -> Tensor:
    """``1/b`` with ``b`` held at least :data:`SAFE_DENOMINATOR` from zero (sign kept)."""
    eps = SAFE_DENOMINATOR
    return torch.reciprocal(torch.where(b >= 0, b.clamp(min=eps), b.clamp(max=-eps)))


Evaluator = Callable[[Sequence[Tensor], Mapping[str, Callable]], Tensor]


def to_torch(expr: sympy.Expr, symbols: Sequence[sympy.Symbol]) -> Evaluator:
    """Compile ``expr`` into ``evaluate(xs, funcs)``: ``xs[i]`` binds ``symbols[i]``, and
    ``funcs`` supplies any function name not in :data:`TORCH_FUNCTIONS`."""
    index = {s: i for i, s in enumerate(symbols)}
    root = _compile(sympy.sympify(expr), index)

    def evaluate(xs: Sequence[Tensor], funcs: Mapping[str, Callable] | None = None) -> Tensor:
        out = root(xs, funcs or {})
        return out if isinstance(out, Tensor) else torch.full_like(xs[0], out)

    return evaluate


def _compile(e: sympy.Basic, index: dict) -> Evaluator:
    """One node of the expression tree as an evaluator of its sub-tree."""
    if e in index:
        i = index[e]
        return lambda xs, fs: xs[i]
    if e.is_number:
        v = float(e)
        return lambda xs, fs: v
    if isinstance(e, sympy.Add | sympy.Mul):
        return _compile_sum_or_product(e, index)
    if isinstance(e, sympy.Pow):
        return _compile_pow(e, index)
    if isinstance(e, sympy.Function) or isinstance(e, sympy.core.function.AppliedUndef):
        return _compile_function(e, index)
    raise ValueError(
        f"cannot compile {e} ({type(e).__name__}) to torch: supported are + * ** and "
        f"{', '.join(sorted(TORCH_FUNCTIONS))}"
    )


def _compile_sum_or_product(e: sympy.Basic, index: dict) -> Evaluator:
    parts = [_compile(a, index) for a in e.args]
    add = isinstance(e, sympy.Add)

    def combine(xs, fs):
        out = parts[0](xs, fs)
        for p in parts[1:]:
            out = out + p(xs, fs) if add else out * p(xs, fs)
        return out

    return combine


def _compile_pow(e: sympy.Pow, index: dict) -> Evaluator:
    base = _compile(e.base, index)
    if not e.exp.is_number:
        ex = _compile(e.exp, index)
        return lambda xs, fs: torch.pow(base(xs, fs), ex(xs, fs))
    p = float(e.exp)
    if p == 0.5:
        return lambda xs, fs: torch.sqrt(base(xs, fs))
    if p < 0:
        q = -p
        if q == 1:
            return lambda xs, fs: safe_reciprocal(base(xs, fs))
        return lambda xs, fs: safe_reciprocal(base(xs, fs)) ** q
    q = int(p) if p.is_integer() else p
    return lambda xs, fs: base(xs, fs) ** q


def _compile_function(e: sympy.Basic, index: dict) -> Evaluator:
    if len(e.args) != 1:
        raise ValueError(f"cannot compile {e}: only one-argument functions are supported")
    name = type(e).__name__
    arg = _compile(e.args[0], index)
    if name in TORCH_FUNCTIONS:
        fn = TORCH_FUNCTIONS[name]
        return lambda xs, fs: fn(arg(xs, fs))
    return lambda xs, fs: fs[name](arg(xs, fs))


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


# ---- lifted expressions (HD-FGD) -------------------------------------------------------------


def lifted_symbols(k: int) -> tuple[sympy.Symbol, ...]:
    """The variables ``x_1 .. x_k`` of a lifted function."""
    return tuple(sympy.Symbol(f"x_{i}", real=True) for i in range(1, k + 1))


def number_occurrences(expr: sympy.Expr) -> sympy.Expr:
    """Lift a one-symbol expression: its i-th occurrence of the symbol becomes ``x_i``."""
    x = only_symbol(expr)
    count = 0

    def walk(e):
        nonlocal count
        if e == x:
            count += 1
            return sympy.Symbol(f"x_{count}", real=True)
        if not e.args:
            return e
        return e.func(*[walk(a) for a in e.args])

    return walk(expr)


def lifted_expr(decomposition: sympy.Expr | str) -> sympy.Expr:
    """A decomposition as netadv stores it, an expression in the real symbols ``x_1 .. x_k``:
    one already written in ``x_i`` is kept, any other one-symbol expression (or string) is
    lifted by numbering the occurrences of its symbol."""
    expr = parse(decomposition) if isinstance(decomposition, str) else decomposition
    if not all(str(s).startswith("x_") for s in expr.free_symbols):
        expr = number_occurrences(expr)
    return expr.subs({s: sympy.Symbol(str(s), real=True) for s in expr.free_symbols})
