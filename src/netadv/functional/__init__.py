"""netadv's math as functions of tensors, as ``torch.nn.functional`` is to ``torch.nn``.

- :func:`adversarial`: the adversarial ``A_f`` of a tensor (what :class:`netadv.Adversarial`
  computes);
- :func:`lifted`: the lifted HD-FGD / SA function ``F`` of a wide pre-activation (what an
  :class:`netadv.HDFGD` block computes between its producer and consumer).

Both run one custom autograd.Function that saves only its input, with a hand-written backward,
eagerly or compiled as :func:`netadv.set_backend` says. What they are built from is cached
(:func:`netadv.activations.kernel.build_kernel`, :func:`lifted_form`), so calling them again
with the same activation costs a lookup; pass the prebuilt kernel or form to skip even that.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from netadv.activations.kernel import AdversarialKernel, build_kernel
from netadv.defaults import ANCHOR, MAX_GAIN
from netadv.functional.autograd import AdversarialFunction, LiftedFunction, run_adversarial
from netadv.functional.forms import LiftedForm, lifted_form, lifted_stacked

__all__ = [
    "AdversarialFunction",
    "AdversarialKernel",
    "LiftedForm",
    "LiftedFunction",
    "adversarial",
    "build_kernel",
    "lifted",
    "lifted_form",
    "lifted_stacked",
]


def adversarial(
    x: Tensor,
    f: Any = "sigmoid",
    *,
    anchor: str = ANCHOR,
    max_gain: float = MAX_GAIN,
    backend: str | None = None,
) -> Tensor:
    """``A_f(x)``, element-wise, with ``A_f' = 1/f'`` (METHOD.md sections 1-3).

    Args:
        x: a floating tensor of any shape; float16/bfloat16 are computed in float32 and the
            result (and gradient) saturated to x's dtype, so every finite input gives finite
            outputs.
        f: the activation (anything :class:`netadv.Adversarial` accepts), or an
            :class:`AdversarialKernel` from :func:`build_kernel` (then ``anchor`` and
            ``max_gain`` are the kernel's).
        anchor: ``"f0"`` gives ``A_f(0) = f(0)``, ``"zero"`` gives ``A_f(0) = 0``.
        max_gain: the largest gain ``1/|f'|``; outside that stable interval A_f continues
            linearly.
        backend: ``"auto"``, ``"eager"`` or ``"compile"``; None follows
            :func:`netadv.set_backend`.

    Returns:
        A tensor of x's shape and dtype.
    """
    kernel = (
        f if isinstance(f, AdversarialKernel) else build_kernel(f, anchor=anchor, max_gain=max_gain)
    )
    return run_adversarial(x, kernel, backend)


def lifted(
    z: Tensor,
    f: Any,
    *,
    adversarial: bool = False,
    anchor: str = ANCHOR,
    max_gain: float = MAX_GAIN,
    dim: int = -1,
    backend: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """The lifted function ``F(x_1..x_k)`` of a wide pre-activation (METHOD.md sections 4-5).

    Args:
        z: the producer's output for all k terms, ``width*k`` channels along ``dim`` with the
            k terms of unit j at ``j*k .. j*k+k-1`` (unit-major, as :func:`netadv.hdfgd` lays
            out its producer's rows): ``[..., width*k]`` for a Linear (dim -1),
            ``[N, width*k, ...]`` for a Conv (dim 1). Half types are computed in float32.
        f: anything :func:`netadv.decompose` accepts ("gelu", nn.SiLU(), a sympy
            expression...), or a prebuilt :class:`LiftedForm` (whose own options then apply).
        adversarial: the SA form (each term function replaced by its adversarial), whose
            adversarials use ``anchor`` and ``max_gain``.
        backend: ``"auto"``, ``"eager"`` or ``"compile"``; None follows the global one.

    Returns:
        ``F``, shaped like z with ``width`` channels along ``dim``, in z's dtype; for SA the
        tuple ``(F, penalty)`` with ``penalty = sum_t mean(A_t^2)`` over the SA terms (a
        differentiable float32/64 scalar; :func:`netadv.penalty` weights the blocks' ones).
    """
    if not isinstance(f, LiftedForm):
        f = lifted_form(f, adversarial=adversarial, anchor=anchor, max_gain=max_gain)
    shape = list(z.shape)
    dim %= len(shape)
    if shape[dim] % f.k:
        raise ValueError(f"lifted: z has {shape[dim]} channels along dim {dim}, not k={f.k} each")
    shape[dim] //= f.k
    out = lifted_stacked(z.reshape(math.prod(shape[: dim + 1]), f.k, -1), f, backend=backend)
    if f.penalised:
        return out[0].reshape(shape), out[1]
    return out.reshape(shape)
