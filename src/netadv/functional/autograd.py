"""The custom autograd Functions of netadv.

:class:`AdversarialFunction` runs an :class:`~netadv.activations.kernel.AdversarialKernel` and
:class:`LiftedFunction` a generated lifted kernel (:mod:`netadv.functional.codegen`); both take
their backward from the kernel's hand-written one, so a layer keeps for backward nothing but
the tensor it was called on. :class:`SaturatedGrad` (identity forward, saves nothing) holds the
gradients flowing back through it to a dtype's finite range.
"""

from __future__ import annotations

import torch
from torch import Tensor

from netadv.activations.kernel import AdversarialKernel


class AdversarialFunction(torch.autograd.Function):
    """``A_f`` with the exact backward; saves only the input."""

    @staticmethod
    def forward(ctx, x: Tensor, kernel: AdversarialKernel, table: Tensor | None, backend):
        ctx.save_for_backward(x)
        ctx.kernel, ctx.backend = kernel, backend
        return kernel.forward(x, table, backend=backend)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        kernel = ctx.kernel
        if torch.is_grad_enabled():  # double backward: differentiable eager ops
            return kernel.backward.fn(x, grad), None, None, None
        return kernel.backward(x, grad, backend=ctx.backend), None, None, None


def run_adversarial(x: Tensor, kernel: AdversarialKernel, backend: str | None = None) -> Tensor:
    """``A_f(x)`` by ``kernel``: through :class:`AdversarialFunction` when x needs a gradient,
    else the forward kernel alone (inference builds no autograd node)."""
    table = kernel.table_for(x)
    if torch.is_grad_enabled() and x.requires_grad:
        return AdversarialFunction.apply(x, kernel, table, backend)
    return kernel.forward(x, table, backend=backend)


class LiftedFunction(torch.autograd.Function):
    """``F`` of the stacked pre-activation ``z[A, k, B]`` (and the SA penalty); saves only z.
    ``kernel`` is a :class:`~netadv.functional.codegen.LiftedKernel`."""

    @staticmethod
    def forward(ctx, z: Tensor, kernel, backend: str | None, *tables):
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


class SaturatedGrad(torch.autograd.Function):
    """Identity on each tensor; backward clamps each gradient to ``[-limit, limit]`` (an inf
    becomes ``limit``; the exact gradient wherever it is within the limit). Saves nothing."""

    @staticmethod
    def forward(ctx, limit: float, *ts: Tensor):
        ctx.limit = limit
        return tuple(t.view_as(t) for t in ts)

    @staticmethod
    def backward(ctx, *grads: Tensor | None):
        return (None, *(None if g is None else g.clamp(-ctx.limit, ctx.limit) for g in grads))


def saturated_grads(dtype: torch.dtype, *ts: Tensor | None, limit: float | None = None):
    """``ts`` unchanged, their gradients saturated to ``dtype``'s finite range (or to ``limit``);
    None passes through."""
    limit = torch.finfo(dtype).max if limit is None else limit
    present = [t for t in ts if t is not None]
    it = iter(SaturatedGrad.apply(limit, *present) if present else ())
    return tuple(None if t is None else next(it) for t in ts)


def run_lifted(z3: Tensor, kernel, tables: list, backend: str | None = None):
    """The generated lifted ``kernel`` on ``z3[A, k, B]``: through :class:`LiftedFunction`
    when z3 needs a gradient, else the forward kernel alone."""
    if torch.is_grad_enabled() and z3.requires_grad:
        return LiftedFunction.apply(z3, kernel, backend, *tables)
    return kernel.forward(z3, *tables, backend=backend)
