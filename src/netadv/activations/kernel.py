"""The adversarial ``A_f`` of one activation as pure math: its construction and its kernels.

:func:`build_kernel` does everything an adversarial needs before its first call: the check that
``f'`` never vanishes and the stable interval (cached per activation and gain), the closed form
(built in, registered, or integrated by sympy and checked against quadrature) or else the knot
table of the generic construction, and the fused pointwise forward and backward. It returns an
:class:`AdversarialKernel`, which :func:`netadv.functional.adversarial` runs and which
:class:`netadv.Adversarial` holds.

Forward on the stable interval ``[lo, hi]`` is ``A_f``; outside it, the C1 linear continuation
``A_f(xc) + (x - xc) / f'(xc)`` with ``xc = clamp(x, lo, hi)``. Backward is the exact
``1/f'(xc)``. Each is one pure pointwise function run eagerly or compiled into a single kernel
(see :mod:`netadv.fused`); kernels computing the same built-in closed form are shared, so a
model compiles each distinct one once. Half precision inputs are computed in float32; values
and gradients saturate to the input dtype's finite range, so every finite input gives finite
outputs.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from netadv.activations import closed_forms as cf
from netadv.activations.generic import KnotTable
from netadv.activations.interval import check_derivative, stable_interval_of
from netadv.activations.registry import ActivationSpec, resolve
from netadv.defaults import ANCHOR, ANCHORS, MAX_GAIN
from netadv.errors import ConfigError
from netadv.fused import Pointwise


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype netadv computes in for inputs of ``dtype``: float32 for half types."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def saturate(y: Tensor, dtype: torch.dtype) -> Tensor:
    """``y`` held to ``dtype``'s finite range: the linear continuation of a large finite input
    can overflow float32 as well as half types."""
    big = torch.finfo(dtype).max
    y = y.clamp(-big, big)
    return y if y.dtype == dtype else y.to(dtype)


def _full(x: Tensor) -> Tensor:
    """x in its compute dtype (no op, not even a dispatch, when it already is)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class AdversarialKernel:
    """The math of one adversarial: ``value`` (A with A(0)=0) and ``inv_slope`` (1/f') on
    ``[lo, hi]``, the constant slopes A continues with beyond each edge, and the offset
    ``A(0)``.

    Attributes:
        forward, backward: the fused pointwise kernels ``forward(x, table)`` and
            ``backward(x, grad)`` (:class:`~netadv.fused.Pointwise`).
        slope: ``A'(x)`` for x in a compute dtype: exact inside, the edge's outside.
        interval: the stable interval ``(lo, hi)`` (a side may be infinite); ``lo``, ``hi``
            are where the math is clamped (a knot table ends at +-1e4 on an unbounded side).
        knots: the knot table's coefficients (float64, CPU), None for a closed form.
        closed_form: whether ``value`` is a closed form (else the knot table).
        shared: whether this kernel is the one every layer computing its closed form uses.
    """

    def __init__(
        self,
        value,
        inv_slope,
        table: KnotTable | None,
        lo: float,
        hi: float,
        offset: float = 0.0,
        *,
        interval: tuple[float, float] | None = None,
        name: str = "adversarial",
        compilable: bool = True,
        shared: bool = False,
    ):
        self.value, self.inv_slope, self.table = value, inv_slope, table
        self.knots = table.table if table is not None else None
        self.lo, self.hi, self.offset = lo, hi, offset
        self.interval = interval if interval is not None else (lo, hi)
        self.closed_form = table is None
        self.shared = shared
        edge = lambda v: float(inv_slope(torch.tensor([v], dtype=torch.float64))[0])
        self.slope_lo = edge(lo) if math.isfinite(lo) else 0.0
        self.slope_hi = edge(hi) if math.isfinite(hi) else 0.0
        if math.isclose(self.slope_lo, self.slope_hi, rel_tol=1e-12):  # symmetric f'
            self.slope_lo = self.slope_hi
        self.slope = self._slope_fn()
        self.forward = Pointwise(self._forward_fn(), f"{name}_fwd", compilable=compilable)
        self.backward = Pointwise(self._backward_fn(), f"{name}_bwd", compilable=compilable)
        self._tables: dict[tuple, Tensor] = {}

    def __deepcopy__(self, memo):  # immutable math, shared like a function
        return self

    @property
    def compilable(self) -> bool:
        return self.forward.compilable

    def table_for(self, x: Tensor) -> Tensor | None:
        """The knot table (None for a closed form) on x's device in x's compute dtype."""
        table = self.knots
        if table is None:
            return None
        dtype = compute_dtype(x.dtype)
        if table.device == x.device and table.dtype == dtype:
            return table
        if torch.compiler.is_compiling():
            return table.to(device=x.device, dtype=dtype)
        key = (x.device, dtype)
        if key not in self._tables:
            self._tables[key] = table.to(device=x.device, dtype=dtype)
        return self._tables[key]

    def _forward_fn(self):
        value, with_table = self.value, self.table is not None
        lo = self.lo if math.isfinite(self.lo) else None
        hi = self.hi if math.isfinite(self.hi) else None
        slope_lo, slope_hi, offset = self.slope_lo, self.slope_hi, self.offset

        def forward(x: Tensor, table: Tensor | None) -> Tensor:
            """A_f(x) + offset with the C1 linear continuation past the edges."""
            xf = _full(x)
            xc = xf if lo is None and hi is None else xf.clamp(lo, hi)
            y = value(xc, table) if with_table else value(xc)
            if lo is not None or hi is not None:
                d = xf - xc  # < 0 below lo, > 0 above hi, 0 inside
                if hi is None or lo is None or slope_lo == slope_hi:
                    y = torch.add(y, d, alpha=slope_hi if lo is None else slope_lo)
                else:  # two slopes, split by sign (torch.where is measured 10x slower on CPU)
                    y = torch.add(y, d.clamp(max=0), alpha=slope_lo)
                    y = torch.add(y, d.clamp(min=0), alpha=slope_hi)
            if offset != 0.0:
                y = y + offset
            return saturate(y, x.dtype)

        return forward

    def _slope_fn(self):
        inv_slope = self.inv_slope
        lo = self.lo if math.isfinite(self.lo) else None
        hi = self.hi if math.isfinite(self.hi) else None

        def slope(x: Tensor) -> Tensor:
            """A'(x) = 1/f'(clamp(x)) (x in a compute dtype): exact inside, the edge's outside."""
            return inv_slope(x if lo is None and hi is None else x.clamp(lo, hi))

        return slope

    def _backward_fn(self):
        slope = self.slope

        def backward(x: Tensor, grad: Tensor) -> Tensor:
            return saturate(_full(grad) * slope(_full(x)), x.dtype)

        return backward


# ---- the stable interval --------------------------------------------------------------------


def _check(spec: ActivationSpec) -> None:
    """NoAdversarialError where f' vanishes or changes sign, with advice that works for f."""
    lifted = spec.title if spec.decomposition else str(spec.expr) if spec.expr is not None else None
    check_derivative(spec.title, spec.deriv, surrogate=spec.surrogate, lifted=lifted)


@functools.lru_cache(maxsize=256)
def _cached_interval(spec: ActivationSpec, max_gain: float) -> tuple[float, float]:
    _check(spec)
    return stable_interval_of(spec.title, spec.deriv, max_gain)


def _interval(spec: ActivationSpec, max_gain: float) -> tuple[float, float]:
    try:
        return _cached_interval(spec, float(max_gain))
    except TypeError:  # an unhashable user callable
        _check(spec)
        return stable_interval_of(spec.title, spec.deriv, max_gain)


def stable_interval(f: Any, max_gain: float = MAX_GAIN) -> tuple[float, float]:
    """The interval ``(lo, hi)`` where the adversarial's gain ``1/|f'(x)|`` is at most
    ``max_gain``; a side that is unbounded is ``-inf``/``inf``. Raises
    :class:`~netadv.NoAdversarialError` if ``f`` has no adversarial."""
    return _interval(resolve(f), max_gain)


# ---- construction ---------------------------------------------------------------------------

#: Kernels of built-in closed forms, by (what they compute, lo, hi, offset): shared by every
#: layer computing the same math, so that a model compiles each distinct one once.
_SHARED_KERNELS: dict[tuple, AdversarialKernel] = {}


def check_anchor(anchor: str) -> None:
    if anchor not in ANCHORS:
        raise ConfigError(f"anchor must be one of {ANCHORS}, got {anchor!r}")


def build_kernel(f: Any, *, anchor: str = ANCHOR, max_gain: float = MAX_GAIN) -> AdversarialKernel:
    """The :class:`AdversarialKernel` of ``f`` (anything :class:`netadv.Adversarial` accepts).

    Kernels are cached per (activation, anchor, max_gain), so building the same adversarial
    again costs a lookup. Raises :class:`~netadv.NoAdversarialError` if ``f'`` vanishes or
    changes sign, :class:`~netadv.ConfigError` for a bad anchor or max_gain.
    """
    check_anchor(anchor)
    spec = resolve(f)
    try:
        key = (spec, anchor, float(max_gain))
        hash(key)
    except (TypeError, ValueError):  # an unhashable user callable, or max_gain not a number
        return _build(spec, anchor, max_gain)
    return _cached_build(*key)


@functools.lru_cache(maxsize=256)
def _cached_build(spec: ActivationSpec, anchor: str, max_gain: float) -> AdversarialKernel:
    return _build(spec, anchor, max_gain)


def _build(spec: ActivationSpec, anchor: str, max_gain: float) -> AdversarialKernel:
    lo, hi = _interval(spec, max_gain)
    offset = spec.f0() if anchor == "f0" else 0.0
    closed, inv_slope, table = _closed_form_or_table(spec, lo, hi)
    # a knot table covers [-SCAN_EXTENT, SCAN_EXTENT] on an unbounded side; past that,
    # the same linear continuation as at a stable edge
    klo, khi = (table.lo, table.hi) if table is not None else (lo, hi)
    key = (closed.key, klo, khi, offset) if closed is not None and closed.key else None
    if key is not None and key in _SHARED_KERNELS:
        return _SHARED_KERNELS[key]
    name = re.sub(r"\W", "_", spec.name)[:40] or "adversarial"
    kernel = AdversarialKernel(
        closed.value if closed else table,
        inv_slope,
        table,
        klo,
        khi,
        offset,
        interval=(lo, hi),
        name=f"adversarial_{name}",
        # f' by autograd (a user callable with no derivative) cannot run in a compiled kernel
        compilable=spec.derivative is not None or (closed is not None and bool(closed.key)),
        shared=key is not None,
    )
    if key is not None:
        _SHARED_KERNELS[key] = kernel
    return kernel


def _reciprocal_slope(spec: ActivationSpec, x: Tensor) -> Tensor:
    return 1 / spec.deriv(x)


def _closed_form_or_table(
    spec: ActivationSpec, lo: float, hi: float
) -> tuple[cf.ClosedForm | None, Callable[[Tensor], Tensor], KnotTable | None]:
    """(closed form or None, 1/f', knot table or None): exactly one of the two is not None. A
    form sympy integrated is used only where it agrees with the quadrature of 1/f'."""
    finite = [abs(v) for v in (lo, hi) if math.isfinite(v)]
    x_max = max(finite) if finite else 1.0
    closed = spec.closed_form(x_max) if spec.closed_form else cf.by_sympy(spec.expr)
    inv_slope = closed.inv_slope if closed else functools.partial(_reciprocal_slope, spec)
    if closed is not None and spec.expr is None:
        return closed, inv_slope, None
    table = KnotTable(inv_slope, lo, hi)
    if closed is None:
        return None, inv_slope, table
    xs = torch.linspace(table.lo, table.hi, 1001, dtype=torch.float64)
    if torch.allclose(closed.value(xs), table(xs, table.table), rtol=1e-6, atol=1e-9):
        return closed, inv_slope, None
    warnings.warn(
        f"sympy's integral for {spec.title} disagrees with quadrature; using the numeric "
        "construction",
        stacklevel=4,
    )
    return None, inv_slope, table
