"""The adversarial activation ``A_f`` as a function and a module (METHOD.md sections 1-3).

Forward on the stable interval ``[lo, hi]`` is ``A_f``; outside it, the C1 linear continuation
``A_f(xc) + (x - xc) / f'(xc)`` with ``xc = clamp(x, lo, hi)``. Backward is the exact
``1/f'(xc)``. Both come from one custom autograd.Function that saves only its input, and each
is one pure pointwise function run eagerly or compiled into a single kernel (see
:mod:`netadv.fused`); layers computing the same built-in closed form share one kernel. Half
precision inputs are computed in float32; values and gradients saturate to the input dtype's
finite range, so every finite input gives finite outputs.
"""

from __future__ import annotations

import functools
import math
import re
import signal
import threading
import warnings
from typing import Any

import sympy
import torch
from torch import Tensor, nn

from netadv import symbolic
from netadv.activations import closed_forms as cf
from netadv.activations.generic import KnotTable
from netadv.activations.interval import check_derivative, stable_interval_of
from netadv.activations.registry import ActivationSpec, resolve
from netadv.errors import ConfigError
from netadv.fused import Pointwise, describe

ANCHORS = ("f0", "zero")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _saturate(y: Tensor, dtype: torch.dtype) -> Tensor:
    """``y`` held to ``dtype``'s finite range: the linear continuation of a large finite input
    can overflow float32 as well as half types."""
    big = torch.finfo(dtype).max
    y = y.clamp(-big, big)
    return y if y.dtype == dtype else y.to(dtype)


def _full(x: Tensor) -> Tensor:
    """x in its compute dtype (no op, not even a dispatch, when it already is)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class _Kernel:
    """The math of one adversarial: ``value`` (A with A(0)=0) and ``inv_slope`` (1/f') on
    ``[lo, hi]``, the constant slopes ``A`` continues with beyond each edge, and the offset
    ``A(0)``; :attr:`forward` and :attr:`backward` are the fused pointwise kernels."""

    def __init__(
        self,
        value,
        inv_slope,
        table: KnotTable | None,
        lo: float,
        hi: float,
        offset: float = 0.0,
        *,
        name: str = "adversarial",
        compilable: bool = True,
    ):
        self.value, self.inv_slope, self.table = value, inv_slope, table
        self.lo, self.hi, self.offset = lo, hi, offset
        edge = lambda v: float(inv_slope(torch.tensor([v], dtype=torch.float64))[0])
        self.slope_lo = edge(lo) if math.isfinite(lo) else 0.0
        self.slope_hi = edge(hi) if math.isfinite(hi) else 0.0
        if math.isclose(self.slope_lo, self.slope_hi, rel_tol=1e-12):  # symmetric f'
            self.slope_lo = self.slope_hi
        self.slope = self._slope_fn()
        self.forward = Pointwise(self._forward_fn(), f"{name}_fwd", compilable=compilable)
        self.backward = Pointwise(self._backward_fn(), f"{name}_bwd", compilable=compilable)

    def __deepcopy__(self, memo):  # immutable math, shared like a function
        return self

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
            return _saturate(y, x.dtype)

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
            return _saturate(_full(grad) * slope(_full(x)), x.dtype)

        return backward


#: Kernels of built-in closed forms, shared by every layer computing the same math so that a
#: model compiles each distinct one once.
_SHARED_KERNELS: dict[tuple, _Kernel] = {}


class AdversarialFunction(torch.autograd.Function):
    """``A_f`` with the exact backward; saves only the input."""

    @staticmethod
    def forward(ctx, x: Tensor, kernel: _Kernel, table: Tensor | None, backend: str | None):
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


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^0-9a-zA-Z]+", name) if p)


@functools.lru_cache(maxsize=256)
def _cached_interval(spec: ActivationSpec, max_gain: float) -> tuple[float, float]:
    check_derivative(spec.title, spec.deriv)
    return stable_interval_of(spec.title, spec.deriv, max_gain)


def _interval(spec: ActivationSpec, max_gain: float) -> tuple[float, float]:
    try:
        return _cached_interval(spec, float(max_gain))
    except TypeError:  # an unhashable user callable
        check_derivative(spec.title, spec.deriv)
        return stable_interval_of(spec.title, spec.deriv, max_gain)


def stable_interval(f: Any, max_gain: float = 25.0) -> tuple[float, float]:
    """The interval ``(lo, hi)`` where the adversarial's gain ``1/|f'(x)|`` is at most
    ``max_gain``; a side that is unbounded is ``-inf``/``inf``. Raises
    :class:`~netadv.NoAdversarialError` if ``f`` has no adversarial."""
    return _interval(resolve(f), max_gain)


def _symbolic_closed_form(spec: ActivationSpec, timeout_s: float = 3.0) -> cf.ClosedForm | None:
    """Try sympy.integrate(1/f') for a sympy-given activation (main thread only: it needs a
    SIGALRM timeout, since integrate can run for minutes)."""
    if spec.expr is None or threading.current_thread() is not threading.main_thread():
        return None
    x = symbolic.only_symbol(spec.expr)

    def _timeout(*_):
        raise TimeoutError

    old = signal.signal(signal.SIGALRM, _timeout)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        inv = sympy.simplify(1 / sympy.diff(spec.expr, x))
        a = sympy.integrate(inv, x)
    except Exception:  # TimeoutError, or sympy failing on an exotic expression
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    # a function the compiler does not know (erfi, Ei...) would only fail when called
    unknown = {type(f).__name__ for f in a.atoms(sympy.Function)} - set(symbolic.TORCH_FUNCTIONS)
    if a.has(sympy.Integral) or unknown:
        return None
    try:
        value = symbolic.unary(a - a.subs(x, 0), x)
        inv_slope = symbolic.unary(inv, x)
    except ValueError:  # uses a function the torch compiler does not know
        return None
    return cf.ClosedForm(value, inv_slope)


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
        self, f: Any = "sigmoid", *, anchor: str = "f0", max_gain: float = 25.0, inplace=False
    ):
        super().__init__()
        if anchor not in ANCHORS:
            raise ConfigError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
        spec = resolve(f)
        self.spec = spec
        self.anchor = anchor
        self.max_gain = float(max_gain)
        self.lo, self.hi = _interval(spec, max_gain)
        self.offset = spec.f0() if anchor == "f0" else 0.0
        x_max = (
            max(abs(v) for v in (self.lo, self.hi) if math.isfinite(v))
            if (math.isfinite(self.lo) or math.isfinite(self.hi))
            else 1.0
        )
        closed = spec.closed_form(x_max) if spec.closed_form else _symbolic_closed_form(spec)
        table = None
        inv_slope = closed.inv_slope if closed else (lambda x: 1 / spec.deriv(x))
        if closed is None or spec.expr is not None:
            table = KnotTable(inv_slope, self.lo, self.hi)
        if closed is not None and table is not None:  # check a symbolic result against numbers
            xs = torch.linspace(table.lo, table.hi, 1001, dtype=torch.float64)
            if not torch.allclose(closed.value(xs), table(xs, table.table), rtol=1e-6, atol=1e-9):
                warnings.warn(
                    f"sympy's integral for {spec.title} disagrees with quadrature; using the "
                    "numeric construction",
                    stacklevel=2,
                )
                closed = None
        if closed is not None:
            table = None
        self.closed_form = closed is not None
        # a knot table covers [-SCAN_EXTENT, SCAN_EXTENT] on an unbounded side; past that,
        # the same linear continuation as at a stable edge
        lo, hi = (table.lo, table.hi) if table is not None else (self.lo, self.hi)
        name = re.sub(r"\W", "_", spec.name)[:40] or "adversarial"
        # f' by autograd (a user callable with no derivative) cannot run inside a compiled kernel
        compilable = spec.derivative is not None or (closed is not None and bool(closed.key))
        key = (closed.key, lo, hi, self.offset) if closed is not None and closed.key else None
        if key is not None and key in _SHARED_KERNELS:
            self._kernel = _SHARED_KERNELS[key]
        else:
            self._kernel = _Kernel(
                closed.value if closed else table,
                inv_slope,
                table,
                lo,
                hi,
                self.offset,
                name=f"adversarial_{name}",
                compilable=compilable,
            )
            if key is not None:
                _SHARED_KERNELS[key] = self._kernel
        self._table = table.table if table is not None else None
        #: "auto", "eager" or "compile" for this module; None follows netadv.set_backend.
        self.backend: str | None = None

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
            f"backend={describe(self.backend, self._kernel.forward)}"
        )

    def table_for(self, x: Tensor) -> Tensor | None:
        """The knot table (None for a closed form) on x's device in x's compute dtype."""
        table = self._table
        if table is None:
            return None
        dtype = compute_dtype(x.dtype)
        if table.device == x.device and table.dtype == dtype:
            return table
        if torch.compiler.is_compiling():
            return table.to(device=x.device, dtype=dtype)
        cache = self.__dict__.setdefault("_tables", {})
        key = (x.device, dtype)
        if key not in cache:
            cache[key] = table.to(device=x.device, dtype=dtype)
        return cache[key]

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return AdversarialFunction.apply(x, self._kernel, self.table_for(x), self.backend)
        return self._kernel.forward(x, self.table_for(x), backend=self.backend)  # inference

    def inv_slope(self, x: Tensor) -> Tensor:
        """``A_f'(x)`` as used in backward (for diagnostics and tests)."""
        xc = x.to(compute_dtype(x.dtype)).clamp(self._kernel.lo, self._kernel.hi)
        return self._kernel.inv_slope(xc)


def adversarial(f: Any, *, anchor: str = "f0", max_gain: float = 25.0) -> Adversarial:
    """Build the adversarial ``A_f`` of ``f`` as a module (see :class:`Adversarial`)."""
    return Adversarial(f, anchor=anchor, max_gain=max_gain)
