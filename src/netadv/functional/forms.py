"""The lifted function of one HD-FGD/SA block, ready to run on the stacked pre-activations.

A :class:`LiftedForm` is ``F(x_1..x_k)`` of a decomposition (HD-FGD) or of its SA form: the
expression, the SA terms' adversarial kernels by the names the expression calls them, the
generated fused kernel (:mod:`netadv.functional.codegen`; None where only the sympy closure
works) and that closure. :func:`lifted_stacked` evaluates it on ``z[A, k, B]`` (term i of every
unit at ``z[:, i]``), the layout both the unit-major and the term-major producers reshape to.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sympy
import torch
from torch import Tensor

from netadv import symbolic
from netadv.activations.kernel import AdversarialKernel, build_kernel, compute_dtype, saturate
from netadv.decompose import decompose
from netadv.defaults import ANCHOR, MAX_GAIN
from netadv.functional import codegen
from netadv.functional.autograd import run_adversarial, run_lifted, saturated_grads


class LiftedForm:
    """``F(x_1..x_k)`` of one block: ``expr`` in ``symbols``, with the SA ``terms`` (adversarial
    kernels by name; empty for HD-FGD). ``kernel`` is the generated fused kernel, None where the
    sympy ``closure`` is the only path; ``penalised`` says whether F records SA's penalty. Both
    evaluate ``stable``, the overflow-safe form of ``expr`` (:func:`netadv.symbolic.stable_form`:
    exact wherever ``expr`` is finite, finite everywhere, SA denominators held off zero)."""

    def __init__(
        self,
        expr: sympy.Expr,
        symbols: Sequence[sympy.Symbol],
        terms: dict[str, AdversarialKernel] | None = None,
    ):
        self.expr = expr
        self.symbols = tuple(symbols)
        self.k = len(self.symbols)
        self.terms = dict(sorted((terms or {}).items()))
        self.penalised = bool(self.terms)
        origin = {n: t.offset for n, t in self.terms.items()}  # A_t(0): value(0) = 0 + offset
        self.stable = symbolic.stable_form(expr, origin)
        self.closure = symbolic.to_torch(self.stable, self.symbols)
        self.kernel = codegen.build(self.stable, self.symbols, self.terms)


def lifted_form(
    f: Any, *, adversarial: bool = False, anchor: str = ANCHOR, max_gain: float = MAX_GAIN
) -> LiftedForm:
    """The :class:`LiftedForm` of ``f`` (anything :func:`netadv.decompose` accepts), its SA
    form with ``adversarial=True``; cached, so the same block function is built once."""
    d = decompose(f)
    if not adversarial:
        return _cached_form(d, False, ANCHOR, MAX_GAIN)
    try:
        return _cached_form(d, True, anchor, float(max_gain))
    except (TypeError, ValueError):  # an unhashable decomposition, or max_gain not a number
        return _form(d, True, anchor, max_gain)


def _form(d, adversarial: bool, anchor: str, max_gain: float) -> LiftedForm:
    if not adversarial:
        return LiftedForm(d.expr, d.symbols)
    expr, specs = d.split_adversarial(anchor=anchor, max_gain=max_gain)
    terms = {n: build_kernel(s, anchor=anchor, max_gain=max_gain) for n, s in specs.items()}
    return LiftedForm(expr, d.symbols, terms)


_cached_form = functools.lru_cache(maxsize=128)(_form)


def lifted_stacked(z3: Tensor, form: LiftedForm, *, backend: str | None = None):
    """``F`` of ``z3[A, k, B]`` (term i of every unit at ``z3[:, i]``) -> ``[A, B]``; for SA,
    ``(F, penalty)`` with ``penalty = sum_t mean(A_t^2)`` over the SA terms."""
    if form.kernel is not None:
        tables = [t.table_for(z3) for t in form.terms.values()]
        return run_lifted(z3, form.kernel, tables, backend)
    dtype = z3.dtype
    if compute_dtype(dtype) != dtype:  # half types: computed in float32 as the kernel does
        (z3,) = saturated_grads(dtype, z3)  # the cast back of the gradient saturates
        z3 = z3.to(compute_dtype(dtype))
    zs = z3.unbind(1)
    if not form.penalised:
        return saturate(form.closure(zs), dtype)
    records: list[Tensor] = []
    funcs = {n: functools.partial(_recorded, t, records, backend) for n, t in form.terms.items()}
    y = form.closure(zs, funcs)
    total = torch.stack(records).sum()
    return saturate(y, dtype), saturate(total, total.dtype)  # a square overflows before A_t


def _recorded(kernel: AdversarialKernel, records: list, backend: str | None, t: Tensor) -> Tensor:
    """``A_t(t)``, with ``mean(A_t(t)^2)`` appended to ``records`` (the SA penalty's terms)."""
    out = run_adversarial(t, kernel, backend)
    records.append(out.float().pow(2).mean())
    return out
