"""Generic construction of A_f from any callable or sympy expression (METHOD.md section 3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
import torch
import torch.nn.functional as F
from scipy.integrate import quad

import netadv
from conftest import CASE_IDS, CASES
from netadv.symbolic import sigmoid

pytestmark = pytest.mark.usefixtures("one_thread")

# Plain lambdas computing each closed-form activation: not in the registry's table of torch
# callables, so netadv.adversarial(lambda) takes the generic (knot table) path.
LAMBDAS = {
    "identity": lambda x: x * 1.0,
    "sigmoid": lambda x: 1 / (1 + torch.exp(-x)),
    "tanh": lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
    "softsign": lambda x: x / (1 + x.abs()),
    "arctan": lambda x: torch.atan(x) * 1.0,
    "erf": lambda x: torch.erf(x) * 1.0,
    "normal_cdf": lambda x: 0.5 * (1 + torch.erf(x / math.sqrt(2))),
    "softplus": lambda x: torch.logaddexp(x, torch.zeros_like(x)),
    "elu": lambda x: torch.where(x >= 0, x, torch.expm1(x.clamp(max=0))),
    "selu": lambda x: F.selu(x) * 1.0,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "exp": lambda x: torch.exp(x) * 1.0,
    "ELU(0.5)": lambda x: torch.where(x >= 0, x, 0.5 * torch.expm1(x.clamp(max=0))),
    "LeakyReLU(0.1)": lambda x: torch.where(x >= 0, x, 0.1 * x),
    "Softplus(beta=2)": lambda x: torch.logaddexp(2 * x, torch.zeros_like(x)) / 2,
}
# leaky_relu(0.01) has gain 1/0.01 = 100 for x < 0; torch's autograd takes that (left) slope at
# the kink x = 0, so its generic construction needs max_gain >= 100 (see test below).
MAX_GAIN = {"leaky_relu": 200.0}


def _assert_rel(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-6):
    """Relative error below ``rel``; near a zero of A the error is measured against 1e-6."""
    err = (got - want).abs() / want.abs().clamp(min=1e-6)
    assert err.max().item() < rel, f"max relative error {err.max().item():.3g}"


def _grid(lo: float, hi: float) -> torch.Tensor:
    a = 2 * lo - 1 if math.isfinite(lo) else -30.0
    b = 2 * hi + 1 if math.isfinite(hi) else 30.0
    x = torch.linspace(a, b, 4000, dtype=torch.float64)  # 4000 points: 0 is not among them
    return torch.cat([x, torch.tensor([-1e3, -7.5, 7.5, 1e3], dtype=torch.float64)])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("anchor", ["f0", "zero"])
def test_generic_matches_closed_form(case, anchor):
    gain = MAX_GAIN.get(case.id, 25.0)
    generic = netadv.adversarial(LAMBDAS[case.id], anchor=anchor, max_gain=gain)
    closed = netadv.adversarial(case.arg, anchor=anchor, max_gain=gain)
    assert closed.closed_form and not generic.closed_form
    assert generic.lo == pytest.approx(closed.lo, abs=1e-9)
    assert generic.hi == pytest.approx(closed.hi, abs=1e-9)
    x = _grid(closed.lo, closed.hi)
    x = x[(x - 0).abs() > 1e-12]
    xg = x.clone().requires_grad_(True)
    xc = x.clone().requires_grad_(True)
    yg, yc = generic(xg), closed(xc)
    _assert_rel(yg.detach(), yc.detach())
    (gg,) = torch.autograd.grad(yg.sum(), xg)
    (gc,) = torch.autograd.grad(yc.sum(), xc)
    _assert_rel(gg, gc)


def test_generic_leaky_relu_at_default_gain_is_a_clear_error():
    # the kink's slope from autograd is the left one, 0.01: gain 100 at 0 > max_gain 25
    with pytest.raises(netadv.ConfigError, match="raise max_gain"):
        netadv.adversarial(LAMBDAS["leaky_relu"])


def test_generic_slope_zero_at_a_kink_is_reported():
    # with "x > 0", autograd gives this ELU slope 0 at exactly x = 0 (both branches masked):
    # A' = 1/f' would be infinite there, and the error must say where
    elu = lambda x: torch.where(x > 0, x, torch.expm1(x.clamp(max=0)))
    with pytest.raises(netadv.NoAdversarialError, match="x = 0"):
        netadv.adversarial(elu)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_generic_in_low_precision_tracks_float64(dtype):
    m = netadv.adversarial(LAMBDAS["sigmoid"])
    x = torch.linspace(-8, 8, 333)
    with torch.no_grad():
        want = m(x.to(dtype).double())
        got = m(x.to(dtype))
    assert got.dtype == dtype
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_generic_gradcheck_inside_and_outside():
    m = netadv.adversarial(lambda x: torch.tanh(F.softplus(x)))  # mish's term: no closed form
    assert not m.closed_form
    assert math.isfinite(m.lo) and math.isfinite(m.hi)
    pts = [m.lo - 2, m.lo - 0.1, m.lo * 0.5, 0.3, m.hi * 0.5, m.hi + 0.1, m.hi + 2]
    x = torch.tensor(pts, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_generic_without_closed_form_against_quadrature():
    f = lambda x: torch.tanh(F.softplus(x))

    def fprime(t: float) -> float:
        sp = math.log1p(math.exp(t))
        return (1 - math.tanh(sp) ** 2) / (1 + math.exp(-t))

    m = netadv.adversarial(f, anchor="zero")
    pts = np.linspace(m.lo, m.hi, 23)[1:-1]
    want = [quad(lambda t: 1 / fprime(t), 0, p, epsabs=1e-13, epsrel=1e-13)[0] for p in pts]
    with torch.no_grad():
        got = m(torch.tensor(pts, dtype=torch.float64))
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-9, atol=0)
    # default anchor: A(0) = f(0) = tanh(log 2) = 0.6
    a0 = netadv.adversarial(f)(torch.zeros(1, dtype=torch.float64))
    assert float(a0) == pytest.approx(0.6, abs=1e-12)


def test_unknown_elementwise_module_is_generic():
    class Scaled(torch.nn.Module):
        def forward(self, x):
            return 2 * torch.atan(x)

    m = netadv.adversarial(Scaled(), anchor="zero")
    assert not m.closed_form
    ref = netadv.adversarial("arctan", anchor="zero", max_gain=50.0)  # A_{2f} = A_f / 2
    x = torch.linspace(-3, 3, 40, dtype=torch.float64)
    with torch.no_grad():
        _assert_rel(m(x), ref(x) / 2)


# --- sympy inputs -----------------------------------------------------------------------------

X = sympy.Symbol("x")


@pytest.mark.parametrize(
    "expr,name",
    [
        (1 / (1 + sympy.exp(-X)), "sigmoid"),
        (sympy.atan(X), "arctan"),
        (sympy.tanh(X), "tanh"),
        (X / (1 + sympy.Abs(X)), "softsign"),  # |x|: the symbol must be taken as real
        (sympy.erf(X), "erf"),  # sympy's integral has erfi, which torch lacks: numeric path
        (sympy.log(1 + sympy.exp(X)), "softplus"),
    ],
    ids=str,
)
def test_sympy_expression_matches_closed_form(expr, name):
    m = netadv.adversarial(expr)
    ref = netadv.adversarial(name)
    assert m.lo == pytest.approx(ref.lo, abs=1e-9)
    if name == "softplus":
        # exp(x)/(exp(x)+1) is NaN past x ~ 709.78 in float64: the interval ends where the
        # formula breaks down and A_f continues linearly (slope 1, as the true A_f has)
        assert m.hi == pytest.approx(709.78, abs=0.01)
        far = torch.tensor([800.0, 5e4], dtype=torch.float64)
        _assert_rel(m(far), ref(far))
    else:
        assert m.hi == pytest.approx(ref.hi, abs=1e-9)
    x = _grid(ref.lo, ref.hi)
    xm = x.clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    ym, yr = m(xm), ref(xr)
    _assert_rel(ym.detach(), yr.detach())
    (gm,) = torch.autograd.grad(ym.sum(), xm)
    (gr,) = torch.autograd.grad(yr.sum(), xr)
    _assert_rel(gm, gr)


def test_sympy_symbolic_integral_is_used_when_it_exists():
    assert netadv.adversarial(1 / (1 + sympy.exp(-X))).closed_form
    assert netadv.adversarial(sympy.atan(X)).closed_form


def test_sympy_cubic_polynomial():
    # f = x + x^3: f' = 1 + 3x^2 >= 1, so the interval is the whole line and
    # A(x) = atan(sqrt(3) x) / sqrt(3)
    m = netadv.adversarial(X + X**3)
    assert (m.lo, m.hi) == (-math.inf, math.inf)
    x = torch.linspace(-20, 20, 1001, dtype=torch.float64, requires_grad=True)
    y = m(x)
    want = torch.atan(math.sqrt(3) * x.detach()) / math.sqrt(3)
    _assert_rel(y.detach(), want)
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, 1 / (1 + 3 * x.detach() ** 2), rtol=1e-12, atol=0)


def test_sympy_with_real_symbol_and_custom_functions():
    xr = sympy.Symbol("x", real=True)
    m = netadv.adversarial(sigmoid(xr), anchor="zero")
    ref = netadv.adversarial("sigmoid", anchor="zero")
    x = torch.linspace(-5, 5, 64, dtype=torch.float64)
    with torch.no_grad():
        _assert_rel(m(x), ref(x))


def test_sympy_expression_without_adversarial_is_refused():
    with pytest.raises(netadv.NoAdversarialError, match=r"-1\.278"):
        netadv.adversarial(X / (1 + sympy.exp(-X)))
    with pytest.raises(ValueError, match="exactly one symbol"):
        netadv.adversarial(sympy.Symbol("y") * X)


def test_knot_table_continues_linearly_past_its_end():
    """On an unbounded side the table ends at +-1e4; past it, A_f is the linear continuation
    (exact for softplus to float64 precision), not an extrapolated cubic."""
    m = netadv.adversarial(lambda x: torch.nn.functional.softplus(x) + 0)
    ref = netadv.adversarial("softplus")
    x = torch.tensor([2e4, 1e6, 1e8], dtype=torch.float64)
    _assert_rel(m(x), ref(x))
