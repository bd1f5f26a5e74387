"""The fused lifted function of an HD-FGD/SA block: ``F(x_1..x_k)`` and its hand-derived backward.

The block's producer writes all k pre-activations into one wide tensor (unit-major: term i of
unit j at channel ``j*k + i``), viewed here as ``z[A, k, B]``. From the block's sympy expression
this module generates two straight-line tensor functions once per expression:

- forward: ``y = F(z[:, 0], ..., z[:, k-1])`` and, for SA, the penalty ``mean(sum_t A_t^2)``
  (the sum over the SA terms of ``mean(A_t(x)^2)``, as the closure path records it);
- backward: ``dL/dz[:, i] = g * dF/dx_i + (g_p / n) * dQ/dx_i``, from sympy's partial
  derivatives with common subexpressions eliminated, where ``A_t' = 1/t'`` (exact, clamped to
  the stable interval as in :class:`~netadv.Adversarial`).

A custom autograd.Function runs them and saves only ``z``, so the block keeps no intermediate
for backward beyond the wide pre-activation; both functions run eagerly or compiled (see
:mod:`netadv.fused`). The element-wise functions are the fast column of
:data:`netadv.symbolic.FUNCTION_TABLE`. Each generated kernel is checked against the closure
path at build time; an expression the generator cannot handle (or that fails the check) keeps
the closure path.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import sympy
import torch
import torch.nn.functional as F
from sympy.core.function import AppliedUndef
from torch import Tensor, nn

from netadv import symbolic
from netadv.fused import Pointwise
from netadv.layers.adversarial import _SHARED_KERNELS, _saturate, compute_dtype

log = logging.getLogger("netadv")


class _Unsupported(ValueError):
    pass


def _printer(names: dict[sympy.Basic, str], adversarial: dict[str, int]):
    """Print a sympy expression as one Python expression over torch tensors."""

    def p(e: sympy.Basic) -> str:
        if e in names:
            return names[e]
        if e.is_number:
            if not e.is_real:
                raise _Unsupported(f"complex constant {e}")
            return repr(float(e))
        if isinstance(e, sympy.Add):
            return "(" + " + ".join(p(a) for a in e.args) + ")"
        if isinstance(e, sympy.Mul):
            coeff, factors = e.as_coeff_mul()
            parts = [p(f) for f in factors]
            body = " * ".join(parts) if parts else "1.0"
            if coeff == 1:
                return f"({body})"
            if coeff == -1:
                return f"(-{body})"
            return f"({p(coeff)} * {body})"
        if isinstance(e, sympy.Pow):
            base = p(e.base)
            if not e.exp.is_number:
                return f"torch.pow({base}, {p(e.exp)})"
            q = float(e.exp)
            if q == 0.5:
                return f"torch.sqrt({base})"
            if q < 0:
                r = _recip_of(base)
                return r if q == -1 else f"({r} ** {_num(-q)})"
            return f"({base} ** {_num(q)})"
        if isinstance(e, sympy.Function | AppliedUndef):
            if len(e.args) != 1:
                raise _Unsupported(f"{e}: only one-argument functions")
            name = type(e).__name__
            arg = p(e.args[0])
            if name in adversarial:
                return f"_A{adversarial[name]}({arg}, t{adversarial[name]})"
            if name.startswith("d") and name[1:] in adversarial:
                return f"_dA{adversarial[name[1:]]}({arg})"
            if name in symbolic.FAST_FUNCTIONS:
                return f"_f_{name}({arg})"
            raise _Unsupported(f"no torch function for {name}")
        raise _Unsupported(f"cannot generate code for {e} ({type(e).__name__})")

    return p


def _recip_of(base: str) -> str:
    return f"_recip({base})"


def _num(q: float) -> str:
    return str(int(q)) if float(q).is_integer() else repr(q)


def _statements(exprs: Sequence[sympy.Expr], names: dict, adversarial: dict) -> tuple[list, list]:
    """Common subexpressions as assignments, then the reduced expressions."""
    replacements, reduced = sympy.cse(list(exprs), symbols=sympy.numbered_symbols("_c"))
    names = dict(names)
    lines = []
    for sym, value in replacements:
        lines.append(f"    {sym} = {_printer(names, adversarial)(value)}")
        names[sym] = str(sym)
    printer = _printer(names, adversarial)
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
    k = len(symbols)
    names = {s: f"x{i}" for i, s in enumerate(symbols)}
    tables = "".join(f", t{j}" for j in range(len(adversarial)))
    head = [
        "    cdt = _compute_dtype(z.dtype)",
        *(f"    x{i} = z[:, {i}].to(cdt)" for i in range(k)),
    ]
    src = [f"def forward(z{tables}):", *head]
    penalty = sum((c**2 for c in calls), sympy.Integer(0))
    lines, (y, q) = _statements([expr, penalty], names, index)
    src += lines
    if calls:
        src += [f"    return _out({y}, z.dtype), ({q}).mean()", ""]
    else:
        src += [f"    return _out({y}, z.dtype)", ""]

    grads = [sympy.diff(expr, s) for s in symbols]
    for with_penalty in (False, True) if calls else (False,):
        name = "backward_penalty" if with_penalty else "backward"
        extra = [sympy.diff(penalty, s) for s in symbols] if with_penalty else []
        lines, out = _statements(grads + extra, names, index)
        gp = ", gp" if with_penalty else ""
        src += [f"def {name}(z, g{gp}{tables}):", *head, "    g = g.to(cdt)"]
        if with_penalty:
            src.append("    gp = gp.to(cdt) / (z.shape[0] * z.shape[2])")
        src += lines
        terms = [
            f"g * {out[i]}" + (f" + gp * {out[k + i]}" if with_penalty and extra[i] != 0 else "")
            for i in range(k)
        ]
        src += [f"    return _out(torch.stack([{', '.join(terms)}], dim=1), z.dtype)", ""]
    return "\n".join(src)


def _out(y: Tensor, dtype: torch.dtype) -> Tensor:
    """The compute-dtype result in the input's dtype, saturated for half types."""
    if y.dtype == dtype:
        return y
    return _saturate(y, dtype)


def _full(y, like: Tensor) -> Tensor:
    return y if isinstance(y, Tensor) and y.shape == like.shape else torch.zeros_like(like) + y


class LiftedKernel:
    """The generated forward/backward of one lifted expression (with its SA terms bound)."""

    def __init__(self, expr: sympy.Expr, symbols: tuple, adversarial: dict[str, nn.Module]):
        names = tuple(sorted(adversarial))
        source = _program(expr, tuple(symbols), names)
        namespace = {
            "torch": torch,
            "F": F,
            "_compute_dtype": compute_dtype,
            "_out": _out,
            "_recip": symbolic.safe_reciprocal,
            **{f"_f_{n}": fn for n, fn in symbolic.FAST_FUNCTIONS.items()},
        }
        self.compilable = True
        for j, n in enumerate(names):
            kernel = adversarial[n]._kernel
            namespace[f"_A{j}"] = kernel.forward.fn
            namespace[f"_dA{j}"] = kernel.slope
            self.compilable &= kernel.forward.compilable
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


class LiftedFunction(torch.autograd.Function):
    """``F`` of the wide pre-activation ``z[A, k, B]`` (and the SA penalty); saves only z."""

    @staticmethod
    def forward(ctx, z: Tensor, kernel: LiftedKernel, backend: str | None, *tables):
        ctx.save_for_backward(z)
        ctx.kernel, ctx.backend, ctx.tables = kernel, backend, tables
        ctx.set_materialize_grads(False)
        return kernel.forward(z, *tables, backend=backend)

    @staticmethod
    def backward(ctx, g: Tensor | None, gp: Tensor | None = None):
        (z,) = ctx.saved_tensors
        kernel, backend, tables = ctx.kernel, ctx.backend, ctx.tables
        none = (None,) * (2 + len(tables))
        if g is None and gp is None:
            return (None, *none)
        if g is None:
            g = z.new_zeros(z.shape[0], z.shape[2])
        eager = torch.is_grad_enabled()  # double backward: differentiable eager ops
        if gp is None or not kernel.penalised:
            fn = kernel.backward
            args = (z, g, *tables)
        else:
            fn = kernel.backward_penalty
            args = (z, g, gp, *tables)
        gz = fn.fn(*args) if eager else fn(*args, backend=backend)
        return (gz, *none)


def build(expr: sympy.Expr, symbols: tuple, adversarial: dict[str, nn.Module] | None):
    """The :class:`LiftedKernel` of ``expr``, or None where only the closure path works.
    Kernels whose SA terms are shared built-ins are shared too (one compile per model)."""
    adversarial = adversarial or {}
    shared = all(m._kernel in _SHARED_KERNELS.values() for m in adversarial.values())
    key = (expr, tuple(symbols), tuple((n, id(m._kernel)) for n, m in sorted(adversarial.items())))
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


_LIFTED: dict[tuple, LiftedKernel] = {}


def _agrees(kernel: LiftedKernel, expr, symbols, adversarial) -> bool:
    """The generated forward, penalty and gradients against the closure path and autograd,
    in float64 at random points (inside and outside the SA terms' stable intervals)."""
    k = len(symbols)
    gen = torch.Generator().manual_seed(0)
    z = (1.5 * torch.randn(24, k, 1, generator=gen, dtype=torch.float64)).requires_grad_(True)
    tables = [
        (m._table.double() if m._table is not None else None)
        for _, m in sorted(adversarial.items())
    ]
    records: list[Tensor] = []

    def recorded(m):
        def call(t):
            out = m(t)
            records.append(out.pow(2).mean())
            return out

        return call

    closure = symbolic.to_torch(expr, symbols)
    with torch.enable_grad():
        zs = [z[:, i] for i in range(k)]
        y_ref = _full(closure(zs, {n: recorded(m) for n, m in adversarial.items()}), zs[0])
        p_ref = torch.stack(records).sum() if records else None
        g = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64)
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
