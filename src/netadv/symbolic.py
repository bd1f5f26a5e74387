"""Sympy <-> torch: activation functions as expressions, compiled to tensor code.

One compiler serves the whole package: user activations given as sympy expressions, their
derivatives, and the lifted HD-FGD / SA functions. Compiled code refers to extra functions (the
adversarial terms of an SA block) by name and receives them at call time, so a compiled
expression holds no reference to any module and survives ``copy.deepcopy``.

:data:`FUNCTION_TABLE` is the one table from sympy function names to tensor functions; this
closure compiler and the code generator of :mod:`netadv.functional.codegen` both read it. A
lifted expression is compiled in its :func:`stable_form` (overflow-safe, SA poles held), which
both read too, so the generated kernel and the closure compute the same math.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence

import sympy
import torch
import torch.nn.functional as F
from sympy.core.function import AppliedUndef
from torch import Tensor

#: Denominators closer to zero than this are held at it (sign kept): a lifted quotient whose
#: denominator can cross zero must not return inf. (SA denominators are held much further out,
#: see :data:`SA_HOLD`; quotients of exponentials never come near zero, see :func:`stable_form`.)
SAFE_DENOMINATOR = 1e-6
#: An SA quotient's denominator is held at no less than this fraction of its value at the origin
#: (sign kept), so its reciprocal at most doubles from its value there. Measured on a 6-layer
#: tanh MLP rewritten with SA (benchmarks/tanh_digits.py, seeds 0-4): held at 1e-6 (absolute) or
#: at 1/max_gain of the origin's value, the runs diverge (NaN at step 75 at lr 1e-3; loss 1e9 at
#: lr 3e-3); at 1/2 or 1, they reach 0.94-0.98 held-out accuracy at lr 1e-3 and 3e-3.
SA_HOLD = 0.5
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


# The functions of the stable forms (:func:`stable_form`): each differentiates to a named
# function, so the code generator's backward and autograd of the closure compute the same thing.
class shift(sympy.Function):  # noqa: N801
    """The largest of its arguments, with derivative zero: a quotient is invariant to the shift
    it makes, so its gradient is exact without differentiating through the max."""

    def fdiff(self, argindex=1):
        return sympy.S.Zero


class dexps(sympy.Function):  # noqa: N801
    """The derivative of :class:`exps`: ``e^u`` below the saturation point, 0 beyond."""


class exps(sympy.Function):  # noqa: N801
    """``e^u`` saturating at the compute dtype's largest finite value instead of overflowing."""

    def fdiff(self, argindex=1):
        return dexps(self.args[0])


class dheld_recip(sympy.Function):  # noqa: N801
    """The derivative of :class:`held_recip`: ``-1/v^2`` for ``v >= SA_HOLD``, 0 below."""


class held_recip(sympy.Function):  # noqa: N801
    """``1/max(v, SA_HOLD)``: the reciprocal of a denominator divided by its value at the
    origin, held where that ratio falls below :data:`SA_HOLD`."""

    def fdiff(self, argindex=1):
        return dheld_recip(self.args[0])


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


def _shift(*args: Tensor | float) -> Tensor:
    """The element-wise max of tensors and numbers, detached (:class:`shift`)."""
    tensors = [a for a in args if isinstance(a, Tensor)]
    numbers = [float(a) for a in args if not isinstance(a, Tensor)]
    out = tensors[0]
    for t in tensors[1:]:
        out = torch.maximum(out, t)
    if numbers:
        out = out.clamp(min=max(numbers))
    return out.detach()


def _log_max(u: Tensor) -> float:
    """Where :class:`exps` saturates: at the square root of the dtype's largest value (1.8e19 in
    float32), which leaves room for one more product (an upstream gradient, the next layer's
    weights) before float32 overflows. Measured on the 6-layer tanh MLP (lr 3e-3, 10 seeds):
    saturating at the largest value itself left 2 runs NaN from the next layer's overflow, the
    square root 1."""
    return math.log(torch.finfo(u.dtype).max) / 2


def _exps(u: Tensor, exp: Callable[[Tensor], Tensor] = torch.exp) -> Tensor:
    return exp(u.clamp(max=_log_max(u)))


def _dexps(u: Tensor, exp: Callable[[Tensor], Tensor] = torch.exp) -> Tensor:
    top = _log_max(u)
    return exp(u.clamp(max=top)) * (u <= top)


def _held_recip(v: Tensor) -> Tensor:
    return torch.reciprocal(v.clamp(min=SA_HOLD))


def _dheld_recip(v: Tensor) -> Tensor:
    return -(torch.reciprocal(v.clamp(min=SA_HOLD)) ** 2) * (v >= SA_HOLD)


def _fast(fn: Callable[..., Tensor]) -> Callable[[Tensor], Tensor]:
    """``fn`` with its exponential computed by :func:`fast_exp`."""
    out = lambda u: fn(u, fast_exp)
    out.__name__ = fn.__name__
    return out


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
    # the stable forms' functions (stable_form)
    "shift": (_shift, _shift),
    "exps": (_exps, _fast(_exps)),
    "dexps": (_dexps, _fast(_dexps)),
    "held_recip": (_held_recip, _held_recip),
    "dheld_recip": (_dheld_recip, _dheld_recip),
}
#: Functions of several arguments (every other one takes one).
VARIADIC = frozenset({"shift"})
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
    name = type(e).__name__
    if name in VARIADIC:
        args = [_compile(a, index) for a in e.args]
        fn = TORCH_FUNCTIONS[name]
        return lambda xs, fs: fn(*[a(xs, fs) for a in args])
    if len(e.args) != 1:
        raise ValueError(f"cannot compile {e}: only one-argument functions are supported")
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


# ---- stable forms: what netadv evaluates for a lifted expression -----------------------------


def stable_form(expr: sympy.Expr, origin: Mapping[str, float] | None = None) -> sympy.Expr:
    """The form netadv evaluates for the lifted ``expr``: equal to it wherever ``expr`` is
    finite in the compute dtype, and finite everywhere (METHOD.md section 2).

    - Every exponential saturates (:class:`exps`) instead of overflowing to inf, whose
      quotients and products with 0 are NaN.
    - A quotient whose denominator is a sum of exponentials with positive coefficients (tanh's
      ``(e^x_1 - e^-x_2)/(e^x_3 + e^-x_4)``, NaN from inf/inf at ``|x| >= 89`` in float32) is
      evaluated with numerator and denominator divided by ``e^m``, ``m`` the denominator's
      largest exponent (:class:`shift`, a constant to differentiation, since the quotient does
      not depend on it): exact, and the denominator stays in ``[c_max, sum c]``. On tanh's
      diagonal every shifted exponent is <= 0, so HD-FGD's copy init stays exact for every x.
      Off the diagonal the lifted tanh really is ``~e^(x_1 - x_3)``: values up to 1.8e19 are
      exact, larger ones saturate.
    - SA forms (``origin`` maps each adversarial term's name to its value at 0): a denominator
      containing adversarial terms can cross zero (tanh's ``A_exp(x_3) + A_exp(-x_4)`` does at
      ``|x| = 1.317`` on the diagonal, since ``A_exp`` is negative below ``-log 2``), and a
      pole trains no network: it is held at no less than :data:`SA_HOLD` of its value at the
      origin (:class:`held_recip`; zero gradient where held). Raises ValueError where that
      value is 0 (tanh's SA form with ``anchor="zero"``).
    """
    out = _shift_quotients(sympy.sympify(expr).replace(sympy.exp, exps))
    if origin:
        out = _map_bottom_up(out, functools.partial(_hold_denominator, origin=origin))
    return out


def _map_bottom_up(e: sympy.Basic, fn: Callable[[sympy.Basic], sympy.Basic]) -> sympy.Basic:
    if not e.args:
        return e
    return fn(e.func(*[_map_bottom_up(a, fn) for a in e.args]))


def _shift_quotients(e: sympy.Basic) -> sympy.Basic:
    """Every quotient of exponentials in ``e`` shifted (:func:`_shift_quotient`), innermost
    first; a reciprocal inside a product is shifted with the product, never on its own."""
    if not e.args:
        return e
    if isinstance(e, sympy.Mul):
        inner = lambda f: f.func(_shift_quotients(f.base), f.exp) if _reciprocal_factor(f) else f
        return _shift_quotient(sympy.Mul(*[inner(_shift_arg(f)) for f in e.args]))
    if _reciprocal_factor(e):
        return _shift_quotient(e.func(_shift_quotients(e.base), e.exp))
    return e.func(*[_shift_quotients(a) for a in e.args])


def _shift_arg(f: sympy.Basic) -> sympy.Basic:
    return f if _reciprocal_factor(f) else _shift_quotients(f)


def _reciprocal_factor(e: sympy.Basic) -> bool:
    return isinstance(e, sympy.Pow) and e.exp.is_number and bool(e.exp < 0)


def _exp_terms(e: sympy.Expr, *, positive: bool) -> list[tuple[sympy.Expr, sympy.Expr]] | None:
    """``e`` as ``sum c_i e^(a_i)`` -> ``[(c_i, a_i)]`` (a number is ``c e^0``), or None; with
    ``positive`` every ``c_i`` must be > 0."""
    out = []
    for term in sympy.Add.make_args(e):
        c, rest = term.as_coeff_Mul()
        if rest == 1:
            out.append((rest * c, sympy.S.Zero))
        elif isinstance(rest, exps):
            out.append((c, rest.args[0]))
        else:
            return None
        if positive and not c > 0:
            return None
    return out


def _shift_quotient(e: sympy.Basic) -> sympy.Basic:
    """``N / D`` with ``D`` a positive sum of exponentials: ``D`` and one factor of ``N`` that is
    a sum of exponentials (else ``N`` as a whole) divided by ``e^m``, ``m = shift(D's
    exponents)``; any other node unchanged."""
    if not (isinstance(e, sympy.Mul) or _reciprocal_factor(e)):
        return e
    factors = list(sympy.Mul.make_args(e))
    dens = [f for f in factors if _reciprocal_factor(f) and f.base.has(exps)]
    den_terms = _exp_terms(dens[0].base, positive=True) if len(dens) == 1 else None
    if den_terms is None or all(a.is_number for _, a in den_terms):
        return e
    n = -dens[0].exp
    factors.remove(dens[0])
    sums = [f for f in factors if f.has(exps) and _exp_terms(f, positive=False)]
    num_terms = [(1, sympy.S.Zero)]
    if sums:
        factors.remove(sums[0])
        num_terms = _exp_terms(sums[0], positive=False)
    m = shift(*[a for _, a in den_terms])
    # the denominator's terms are e^(<= 0): they cannot overflow, so a plain exp will do
    den = sympy.Add(*[c * sympy.exp(a - m) for c, a in den_terms]) ** -n
    num = sympy.Add(*[c * exps(a - n * m) for c, a in num_terms])
    return sympy.Mul(*factors, num, den)


def _hold_denominator(e: sympy.Basic, origin: Mapping[str, float]) -> sympy.Basic:
    """``D^-n`` with ``D`` containing an SA term as ``(held_recip(D / D(0)) / D(0))^n``."""
    if not _reciprocal_factor(e) or not any(
        type(f).__name__ in origin for f in e.base.atoms(AppliedUndef)
    ):
        return e
    at0 = e.base.subs({s: 0 for s in e.base.free_symbols}).replace(
        lambda f: isinstance(f, AppliedUndef) and type(f).__name__ in origin,
        lambda f: sympy.Float(origin[type(f).__name__]),
    )
    d0 = float(at0)
    if d0 == 0 or not math.isfinite(d0):
        raise ValueError(f"the denominator {e.base} is {d0:g} at the origin")
    return (held_recip(e.base / d0) / d0) ** -e.exp
