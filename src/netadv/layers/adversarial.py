"""The adversarial activation ``A_f`` as a module (METHOD.md sections 1-3).

A thin holder: the math is :func:`netadv.functional.adversarial` running the
:class:`~netadv.activations.kernel.AdversarialKernel` that
:func:`~netadv.activations.kernel.build_kernel` made; the module keeps the kernel and its
configuration, and shows both in ``print(model)``.
"""

from __future__ import annotations

import re
from typing import Any

from torch import Tensor, nn

from netadv import functional
from netadv.activations.kernel import build_kernel, check_anchor, compute_dtype
from netadv.activations.registry import resolve
from netadv.defaults import ANCHOR, MAX_GAIN
from netadv.fused import describe


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^0-9a-zA-Z]+", name) if p)


class Adversarial(nn.Module):
    """The adversarial ``A_f`` of an activation ``f`` (``A_f' = 1/f'``).

    Args:
        f: a registered name, a torch.nn activation (instance or class), an element-wise torch
            callable, or a one-symbol sympy expression.
        anchor: ``"f0"`` (default) gives ``A_f(0) = f(0)``; ``"zero"`` gives ``A_f(0) = 0``.
        max_gain: the largest gain ``1/|f'|`` used; beyond it A_f continues linearly.
        inplace: accepted and ignored, so the module drops into timm's ``act_layer=``.
    """

    def __init__(
        self, f: Any = "sigmoid", *, anchor: str = ANCHOR, max_gain: float = MAX_GAIN, inplace=False
    ):
        super().__init__()
        check_anchor(anchor)
        self.spec = resolve(f)
        self.anchor = anchor
        self.max_gain = float(max_gain)
        #: the math (shared with every layer computing the same closed form)
        self.kernel = build_kernel(self.spec, anchor=anchor, max_gain=max_gain)
        self.lo, self.hi = self.kernel.interval
        self.offset = self.kernel.offset
        self.closed_form = self.kernel.closed_form
        #: "auto", "eager" or "compile" for this module; None follows netadv.set_backend.
        self.backend: str | None = None

    def __getstate__(self) -> dict:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        return {k: v for k, v in state.items() if k != "kernel"}  # rebuilt on load

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.kernel = build_kernel(self.spec, anchor=self.anchor, max_gain=self.max_gain)

    def _get_name(self) -> str:
        name = self.spec.name
        return "Adversarial" + (_camel(name) if name.isidentifier() else "")

    def extra_repr(self) -> str:
        params = "".join(f"{k}={v}, " for k, v in self.spec.params)
        if not self.spec.name.isidentifier():
            params = f"f={self.spec.name}, " + params
        form = "closed form" if self.closed_form else "knot table"
        return (
            f"{params}max_gain={self.max_gain:g}, anchor={self.anchor}, "
            f"interval=[{self.lo:.4g}, {self.hi:.4g}], {form}, "
            f"backend={describe(self.backend, self.kernel.forward)}"
        )

    def table_for(self, x: Tensor) -> Tensor | None:
        """The knot table (None for a closed form) on x's device in x's compute dtype."""
        return self.kernel.table_for(x)

    def forward(self, x: Tensor) -> Tensor:
        return functional.adversarial(x, self.kernel, backend=self.backend)

    def inv_slope(self, x: Tensor) -> Tensor:
        """``A_f'(x)`` as used in backward (for diagnostics and tests)."""
        return self.kernel.slope(x.to(compute_dtype(x.dtype)))


def adversarial(f: Any, *, anchor: str = ANCHOR, max_gain: float = MAX_GAIN) -> Adversarial:
    """Build the adversarial ``A_f`` of ``f`` as a module (see :class:`Adversarial`)."""
    return Adversarial(f, anchor=anchor, max_gain=max_gain)
