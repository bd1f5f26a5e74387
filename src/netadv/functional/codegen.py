"""The fused lifted function of an HD-FGD/SA block: ``F(x_1..x_k)`` and its hand-derived backward.

The block's producer writes all k pre-activations into one wide tensor (unit-major: term i of
unit j at channel ``j*k + i``), viewed here as ``z[A, k, B]``. From the block's sympy expression
(its :func:`~netadv.symbolic.stable_form`, as the closure path evaluates it) this module
generates two straight-line tensor functions once per expression:

- forward: ``y = F(z[:, 0], ..., z[:, k-1])`` and, for SA, the penalty ``mean(sum_t A_t^2)``
  (the sum over the SA terms of ``mean(A_t(x)^2)``, as the closure path records it; saturated,
  since a square overflows long before ``A_t``);
- backward: ``dL/dz[:, i] = g * dF/dx_i + (g_p / n) * dQ/dx_i``, from sympy's partial
  derivatives with common subexpressions eliminated, where ``A_t' = 1/t'`` (exact, clamped to
  the stable interval as in :class:`~netadv.Adversarial`).

:class:`~netadv.functional.autograd.LiftedFunction` runs them and saves only ``z``, so the block
keeps no intermediate for backward beyond the wide pre-activation; both functions run eagerly
or compiled (see :mod:`netadv.fused`). The element-wise functions are the fast column of
:data:`netadv.symbolic.FUNCTION_TABLE`. Each generated kernel is
checked against the closure path at build time; an expression the generator cannot handle (or
that fails the check) keeps the closure path.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import sympy
import torch
import torch.nn.functional as F
from sympy.core.function import AppliedUndef
from torch import Tensor

from netadv import symbolic
from netadv.activations.kernel import AdversarialKernel, compute_dtype, saturate
from netadv.functional.autograd import run_adversarial
from netadv.fused import Pointwise

log = logging.getLogger("netadv")


class _Unsupported(ValueError):
    pass


class _Printer:
    """Prints a sympy expression as one Python expression over torch tensors: ``names`` maps
    symbols (and common subexpressions) to variable names, ``adversarial`` the SA terms'
    function names to their index in the generated code's arguments."""

    def __init__(self, names: dict[sympy.Basic, str], adversarial: dict[str, int]):
        self.names, self.adversarial = names, adversarial

    def __call__(self, e: sympy.Basic) -> str:
        if e in self.names:
            return self.names[e]
        if e.is_number:
            if not e.is_real:
                raise _Unsupported(f"complex constant {e}")
            return repr(float(e))
        if isinstance(e, sympy.Add):
            return "(" + " + ".join(self(a) for a in e.args) + ")"
        if isinstance(e, sympy.Mul):
            return self._product(e)
        if isinstance(e, sympy.Pow):
            return self._power(e)
        if isinstance(e, sympy.Function | AppliedUndef):
            return self._function(e)
        raise _Unsupported(f"cannot generate code for {e} ({type(e).__name__})")

    def _product(self, e: sympy.Mul) -> str:
        coeff, factors = e.as_coeff_mul()
        body = " * ".join(self(f) for f in factors) if factors else "1.0"
        if coeff == 1:
            return f"({body})"
        if coeff == -1:
            return f"(-{body})"
        return f"({self(coeff)} * {body})"

    def _power(self, e: sympy.Pow) -> str:
        base = self(e.base)
        if not e.exp.is_number:
            return f"torch.pow({base}, {self(e.exp)})"
        q = float(e.exp)
        if q == 0.5:
            return f"torch.sqrt({base})"
        if q < 0:
            r = f"_recip({base})"
            return r if q == -1 else f"({r} ** {_num(-q)})"
        return f"({base} ** {_num(q)})"

    def _function(self, e: sympy.Basic) -> str:
        if type(e).__name__ in symbolic.VARIADIC:
            return f"_f_{type(e).__name__}({', '.join(self(a) for a in e.args)})"
        if len(e.args) != 1:
            raise _Unsupported(f"{e}: only one-argument functions")
        name, arg, adversarial = type(e).__name__, self(e.args[0]), self.adversarial
        if name in adversarial:
            return f"_A{adversarial[name]}({arg}, t{adversarial[name]})"
        if name.startswith("d") and name[1:] in adversarial:
            return f"_dA{adversarial[name[1:]]}({arg})"
        if name in symbolic.FAST_FUNCTIONS:
            return f"_f_{name}({arg})"
        raise _Unsupported(f"no torch function for {name}")


def _num(q: float) -> str:
    return str(int(q)) if float(q).is_integer() else repr(q)


def _statements(exprs: Sequence[sympy.Expr], names: dict, adversarial: dict) -> tuple[list, list]:
    """Common subexpressions as assignments, then the reduced expressions."""
    replacements, reduced = sympy.cse(list(exprs), symbols=sympy.numbered_symbols("_c"))
    names = dict(names)
    lines = []
    for sym, value in replacements:
        lines.append(f"    {sym} = {_Printer(names, adversarial)(value)}")
        names[sym] = str(sym)
    printer = _Printer(names, adversarial)
    return lines, [printer(r) for r in reduced]


def _adversarial_classes(names: Sequence[str]) -> dict[str, type]:
    """A sympy function per SA term whose derivative prints as that term's ``1/t'``."""
    out = {}
    for name in names:
        deriv = type("d" + name, (sympy.Function,), {})
        out[name] = type(name, (sympy.Function,), {"fdiff": _fdiff(deriv)})
    return out


def _fdiff(deriv):
    def fdiff(self, argindex=1):
        return deriv(self.args[0])

    return fdiff


@functools.lru_cache(maxsize=64)
def _program(expr: sympy.Expr, symbols: tuple, adversarial: tuple[str, ...]) -> str:
    """Python source of ``forward``, ``backward`` and ``backward_penalty`` for ``expr``."""
    classes = _adversarial_classes(adversarial)
    index = {n: j for j, n in enumerate(adversarial)}
    expr = expr.replace(
        lambda e: isinstance(e, AppliedUndef) and type(e).__name__ in classes,
        lambda e: classes[type(e).__name__](*e.args),
    )
    calls = [n for n in sympy.preorder_traversal(expr) if type(n).__name__ in classes and n.args]
    if any(not c.args[0].free_symbols for c in calls):
        raise _Unsupported("an SA term with a constant argument")
    names = {s: f"x{i}" for i, s in enumerate(symbols)}
    tables = "".join(f", t{j}" for j in range(len(adversarial)))
    head = [
        "    cdt = _compute_dtype(z.dtype)",
        *(f"    x{i} = z[:, {i}].to(cdt)" for i in range(len(symbols))),
    ]
    penalty = sum((c**2 for c in calls), sympy.Integer(0))
    lines, (y, q) = _statements([expr, penalty], names, index)
    src = [f"def forward(z{tables}):", *head, *lines]
    if calls:
        src += [f"    return _out({y}, z.dtype), _penalty({q})", ""]
    else:
        src += [f"    return _out({y}, z.dtype)", ""]
    src += _backward_source(expr, None, symbols, names, index, head, tables)
    if calls:
        src += _backward_source(expr, penalty, symbols, names, index, head, tables)
    return "\n".join(src)


def _backward_source(expr, penalty, symbols, names, index, head, tables) -> list[str]:
    """``backward(z, g)``, or with a penalty ``backward_penalty(z, g, gp)``: the input
    gradient ``g * dF/dx_i (+ gp/n * dQ/dx_i)`` stacked over the k terms."""
    k = len(symbols)
    grads = [sympy.diff(expr, s) for s in symbols]
    extra = [sympy.diff(penalty, s) for s in symbols] if penalty is not None else []
    lines, out = _statements(grads + extra, names, index)
    if penalty is None:
        src = [f"def backward(z, g{tables}):", *head, "    g = g.to(cdt)"]
    else:
        src = [f"def backward_penalty(z, g, gp{tables}):", *head, "    g = g.to(cdt)"]
        src.append("    gp = gp.to(cdt) / (z.shape[0] * z.shape[2])")
    terms = [
        f"g * {out[i]}" + (f" + gp * {out[k + i]}" if extra and extra[i] != 0 else "")
        for i in range(k)
    ]
    return [*src, *lines, f"    return _out(torch.stack([{', '.join(terms)}], dim=1), z.dtype)", ""]


def _out(y: Tensor, dtype: torch.dtype) -> Tensor:
    """The compute-dtype result in the input's dtype, saturated for half types."""
    if y.dtype == dtype:
        return y
    return saturate(y, dtype)


def _penalty(q: Tensor) -> Tensor:
    """The SA penalty ``mean(sum_t A_t^2)``, saturated: a square overflows long before A_t."""
    return saturate(q.mean(), q.dtype)


def _full(y, like: Tensor) -> Tensor:
    return y if isinstance(y, Tensor) and y.shape == like.shape else torch.zeros_like(like) + y


class LiftedKernel:
    """The generated forward/backward of one lifted expression, with its SA terms (adversarial
    kernels by the names the expression calls them) bound."""

    def __init__(self, expr: sympy.Expr, symbols: tuple, adversarial: dict[str, AdversarialKernel]):
        names = tuple(sorted(adversarial))
        source = _program(expr, tuple(symbols), names)
        namespace = {
            "torch": torch,
            "F": F,
            "_compute_dtype": compute_dtype,
            "_out": _out,
            "_penalty": _penalty,
            "_recip": symbolic.safe_reciprocal,
            **{f"_f_{n}": fn for n, fn in symbolic.FAST_FUNCTIONS.items()},
        }
        self.compilable = True
        for j, n in enumerate(names):
            kernel = adversarial[n]
            namespace[f"_A{j}"] = kernel.forward.fn
            namespace[f"_dA{j}"] = kernel.slope
            self.compilable &= kernel.compilable
        exec(compile(source, f"<netadv lifted {expr}>", "exec"), namespace)  # noqa: S102
        self.source = source
        self.k = len(symbols)
        self.penalised = "backward_penalty" in namespace
        label = "sa" if self.penalised else "hdfgd"
        self.forward = Pointwise(namespace["forward"], f"{label}_fwd", compilable=self.compilable)
        self.backward = Pointwise(namespace["backward"], f"{label}_bwd", compilable=self.compilable)
        self.backward_penalty = (
            Pointwise(namespace["backward_penalty"], f"{label}_bwd_p", compilable=self.compilable)
            if self.penalised
            else None
        )

    def __deepcopy__(self, memo):  # immutable math, shared like a function
        return self


def build(
    expr: sympy.Expr, symbols: tuple, adversarial: dict[str, AdversarialKernel] | None = None
) -> LiftedKernel | None:
    """The :class:`LiftedKernel` of ``expr``, or None where only the closure path works.
    Kernels whose SA terms are shared built-ins are shared too (one compile per model)."""
    adversarial = adversarial or {}
    shared = all(kernel.shared for kernel in adversarial.values())
    key = (expr, tuple(symbols), tuple(sorted(adversarial.items())))
    if shared and key in _LIFTED:
        return _LIFTED[key]
    try:
        kernel = LiftedKernel(expr, symbols, adversarial)
    except (_Unsupported, TypeError, ValueError, SyntaxError) as e:
        log.info("netadv: %s keeps the closure path (%s)", expr, e)
        return None
    if not _agrees(kernel, expr, symbols, adversarial):
        log.warning("netadv: generated kernel for %s disagrees with its closure; not used", expr)
        return None
    if shared:
        _LIFTED[key] = kernel
    return kernel


#: Generated kernels whose SA terms are all shared kernels, by expression and terms.
_LIFTED: dict[tuple, LiftedKernel] = {}


def _agrees(kernel: LiftedKernel, expr, symbols, adversarial: dict) -> bool:
    """The generated forward, penalty and gradients against the closure path and autograd,
    in float64 at random points (inside and outside the SA terms' stable intervals)."""
    k = len(symbols)
    gen = torch.Generator().manual_seed(0)
    z = (1.5 * torch.randn(24, k, 1, generator=gen, dtype=torch.float64)).requires_grad_(True)
    terms = [adversarial[n] for n in sorted(adversarial)]
    tables = [t.knots.double() if t.knots is not None else None for t in terms]
    y_ref, p_ref = _reference(expr, symbols, adversarial, z)
    g = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64)
    with torch.enable_grad():
        loss = (y_ref * g).sum() + (3.0 * p_ref if p_ref is not None else 0.0)
        (gz_ref,) = torch.autograd.grad(loss, z)
    with torch.no_grad():
        out = kernel.forward.fn(z.detach(), *tables)
        y = out[0] if kernel.penalised else out
        ok = torch.allclose(y, y_ref, rtol=1e-9, atol=1e-12)
        if kernel.penalised:
            ok &= bool(torch.allclose(out[1], p_ref, rtol=1e-9, atol=1e-12))
            gp = torch.tensor(3.0, dtype=torch.float64)
            gz = kernel.backward_penalty.fn(z.detach(), g, gp, *tables)
        else:
            gz = kernel.backward.fn(z.detach(), g, *tables)
        ok &= bool(torch.allclose(gz, gz_ref, rtol=1e-7, atol=1e-10))
    return bool(ok)


def _reference(expr, symbols, adversarial: dict, z: Tensor) -> tuple[Tensor, Tensor | None]:
    """F and the SA penalty of ``z[A, k, 1]`` by the closure path, differentiable in z."""
    records: list[Tensor] = []

    def recorded(kernel):
        def call(t):
            out = run_adversarial(t, kernel)
            records.append(out.pow(2).mean())
            return out

        return call

    closure = symbolic.to_torch(expr, symbols)
    with torch.enable_grad():
        zs = [z[:, i] for i in range(len(symbols))]
        y = _full(closure(zs, {n: recorded(t) for n, t in adversarial.items()}), zs[0])
    return y, (torch.stack(records).sum() if records else None)
