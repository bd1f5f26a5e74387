"""Generic adversarial of any activation: a knot table of the integral of 1/f' (METHOD.md s. 3).

Knots are uniform in ``u = asinh(x)`` (dense near 0 where activations bend, sparse far out), with
0 itself a knot, so locating a point's interval is one ``floor`` with no search. Knot values are
the integral of ``1/f'`` from 0 by 8-point Gauss-Legendre per interval (float64); slopes are the
exact ``1/f'`` taken just inside each interval, so a kink at a knot (ELU, LeakyReLU at 0) is
represented exactly. Between knots, a cubic Hermite polynomial.

Evaluation is vectorised with no search and no sort: the interval index is one truncation of
``asinh(x)/du`` (asinh written through log and sqrt, about 10x faster than ``torch.asinh`` on
CPU; an index off by one at a knot only extrapolates the neighbouring cubic by a rounding
error), then one ``index_select`` per coefficient column (much faster than fancy indexing).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from netadv.activations.interval import SCAN_EXTENT

#: Intervals in the table; with asinh spacing this gives relative error ~1e-12 on the closed forms.
N_INTERVALS = 2048
_GAUSS_X, _GAUSS_W = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(8))


class KnotTable:
    """``A(x) = integral_0^x dt / f'(t)`` on ``[lo, hi]`` (clipped to +-SCAN_EXTENT)."""

    def __init__(self, inv_slope: Callable[[Tensor], Tensor], lo: float, hi: float):
        a = lo if math.isfinite(lo) else -SCAN_EXTENT
        b = hi if math.isfinite(hi) else SCAN_EXTENT
        ua, ub = math.asinh(a), math.asinh(b)
        du = (ub - ua) / N_INTERVALS
        k0, k1 = math.floor(ua / du), math.ceil(ub / du)
        knots = torch.sinh(torch.arange(k0, k1 + 1, dtype=torch.float64) * du)
        h = knots.diff()
        x0 = knots[:-1]
        nodes = x0[:, None] + (_GAUSS_X + 1)[None, :] / 2 * h[:, None]
        with torch.no_grad():
            seg = (inv_slope(nodes) * _GAUSS_W).sum(-1) * h / 2
            cum = torch.cat([torch.zeros(1, dtype=torch.float64), seg.cumsum(0)])
            v = cum - cum[-k0]  # knot -k0 is x = 0
            m0 = inv_slope(x0 + 1e-9 * h)
            m1 = inv_slope(knots[1:] - 1e-9 * h)
        v0, v1 = v[:-1], v[1:]
        c2 = 3 * (v1 - v0) - 2 * h * m0 - h * m1
        c3 = 2 * (v0 - v1) + h * m0 + h * m1
        #: One column per interval: start, 1/width, then the cubic's coefficients in
        #: t = (x - start) / width.
        self.table = torch.stack([x0, 1 / h, v0, h * m0, c2, c3]).contiguous()
        self.u0 = k0 * du
        self.du = du
        self.lo, self.hi = a, b

    def __call__(self, x: Tensor, table: Tensor) -> Tensor:
        """Evaluate at ``x`` (already clamped into the table), with ``table`` = ``self.table``
        in x's dtype and device."""
        a = x.abs()
        # asinh(x); sign() rather than copysign(), which has no ONNX export
        u = torch.sign(x) * torch.log(a + torch.sqrt(a * a + 1))
        idx = ((u - self.u0) * (1 / self.du)).to(torch.int32).clamp_(0, table.shape[1] - 1)
        idx = idx.reshape(-1)
        x0, inv_h, v0, m0, c2, c3 = (
            torch.index_select(c, 0, idx).view(x.shape) for c in table.unbind(0)
        )
        t = (x - x0) * inv_h
        return ((c3 * t + c2) * t + m0) * t + v0
