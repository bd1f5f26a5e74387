"""Adversarial pairs A_f (METHOD.md sections 1-2): closed forms, stable interval, dtypes, errors."""

from __future__ import annotations

import math
import weakref

import numpy as np
import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad
from torch import nn

import netadv
from conftest import CASE_IDS, CASES, inside_points, outside_points
from netadv.activations.registry import resolve

pytestmark = pytest.mark.usefixtures("one_thread")

cases = pytest.mark.parametrize("case", CASES, ids=CASE_IDS)


def _module(case, **kw):
    return netadv.adversarial(case.arg, **kw)


def _t(xs) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def _integral(case, x: float) -> float:
    """int_0^x dt / f'(t) by adaptive quadrature, with the kinks as break points."""
    inv = lambda t: 1.0 / float(case.fprime(np.float64(t)))
    pts = [k for k in case.kinks if min(0, x) < k < max(0, x)] or None
    value, _ = quad(inv, 0.0, x, points=pts, epsabs=1e-13, epsrel=1e-12, limit=200)
    return value


def _inward(case, edge: float) -> float:
    """f' just inside the stable interval at ``edge`` (the slope the continuation uses)."""
    return float(case.fprime(np.float64(edge + (1e-12 if edge <= 0 else -1e-12))))


# --- the stable interval --------------------------------------------------------------------


@cases
def test_stable_interval_matches_hand_solution(case):
    lo, hi = netadv.stable_interval(case.arg)
    exp_lo, exp_hi = case.interval
    for got, want in ((lo, exp_lo), (hi, exp_hi)):
        if math.isinf(want):
            assert got == want
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
    m = _module(case)
    assert (m.lo, m.hi) == (lo, hi)


@cases
def test_gain_is_max_gain_at_finite_edges_and_below_inside(case):
    m = _module(case)
    for edge in (m.lo, m.hi):
        if math.isfinite(edge) and edge != 0:
            assert 1 / _inward(case, edge) == pytest.approx(25.0, rel=1e-8)
    xs = np.array(inside_points(m.lo, m.hi, case.kinks))
    assert (1 / np.abs(case.fprime(xs)) <= 25.0).all()


def test_max_gain_widens_the_interval():
    narrow = netadv.stable_interval("sigmoid", 25.0)
    wide = netadv.stable_interval("sigmoid", 100.0)
    assert wide[0] < narrow[0] < 0 < narrow[1] < wide[1]
    assert wide[1] == pytest.approx(math.acosh(49.0), rel=1e-9)  # 2 + 2 cosh c = 100


# --- gradcheck ------------------------------------------------------------------------------


@cases
@pytest.mark.parametrize("anchor", ["f0", "zero"])
def test_gradcheck_inside_and_outside_interval(case, anchor):
    m = _module(case, anchor=anchor)
    pts = inside_points(m.lo, m.hi, case.kinks) + outside_points(m.lo, m.hi, case.kinks)
    assert len(pts) >= 6
    x = _t(pts).requires_grad_(True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


# --- A_f' * f' == 1 -------------------------------------------------------------------------


@cases
def test_inverse_slope_times_slope_is_one_inside(case):
    m = _module(case)
    lo = m.lo if math.isfinite(m.lo) else -8.0
    hi = m.hi if math.isfinite(m.hi) else 8.0
    x = torch.linspace(lo, hi, 400, dtype=torch.float64)[1:-1]  # no point is exactly 0
    x = x[(x - 0).abs() > 1e-9]
    spec = resolve(case.arg)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(m(xr).sum(), xr)
    ones = torch.ones_like(x)
    torch.testing.assert_close(m.inv_slope(x) * spec.deriv(x), ones, rtol=1e-10, atol=0)
    torch.testing.assert_close(grad * spec.deriv(x), ones, rtol=1e-10, atol=0)
    # and against the hand-written f' of METHOD.md's table
    torch.testing.assert_close(grad * _t(case.fprime(x.numpy())), ones, rtol=1e-10, atol=0)


@cases
def test_registry_derivative_matches_autograd_of_reference(case):
    spec = resolve(case.arg)
    x = torch.linspace(-6, 6, 300, dtype=torch.float64)  # even count: 0 is not a grid point
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(case.f(xr).sum(), xr)
    torch.testing.assert_close(spec.deriv(x), ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(spec.fn(x), case.f(x), rtol=1e-12, atol=1e-12)


# --- closed forms against quadrature --------------------------------------------------------


@cases
def test_closed_form_equals_quadrature_of_inverse_slope(case):
    m = _module(case, anchor="zero")
    assert m.closed_form
    pts = inside_points(m.lo, m.hi, case.kinks)
    want = _t([_integral(case, p) for p in pts])
    with torch.no_grad():
        got = m(_t(pts))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


@cases
def test_outside_interval_is_the_c1_linear_continuation(case):
    m = _module(case, anchor="zero")
    for edge, sign in ((m.lo, -1.0), (m.hi, 1.0)):
        if math.isinf(edge):
            continue
        pts = [edge + sign * d for d in (0.05, 0.7, 4.0, 300.0)]
        want = _t([_integral(case, edge) + (p - edge) / _inward(case, edge) for p in pts])
        with torch.no_grad():
            got = m(_t(pts))
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


SPEC_TABLE = {  # METHOD.md section 1, A(0) = 0
    "sigmoid": lambda x: 2 * x + 2 * np.sinh(x),
    "tanh": lambda x: x / 2 + np.sinh(2 * x) / 4,
    "softsign": lambda x: x + x * np.abs(x) + x**3 / 3,
    "arctan": lambda x: x + x**3 / 3,
    "softplus": lambda x: x - np.exp(-x) + 1,
    "elu": lambda x: np.where(x > 0, x, 1 - np.exp(-x)),
    "leaky_relu": lambda x: np.where(x > 0, x, x / 0.01),
    "identity": lambda x: x,
}


@pytest.mark.parametrize("name", sorted(SPEC_TABLE))
def test_closed_form_matches_method_table(name):
    m = netadv.adversarial(name, anchor="zero", max_gain=1e3)
    lo = max(m.lo, -5.0) * 0.99
    hi = min(m.hi, 5.0) * 0.99
    x = np.linspace(lo, hi, 101)
    with torch.no_grad():
        got = m(_t(x)).numpy()
    np.testing.assert_allclose(got, SPEC_TABLE[name](x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,scale", [("erf", math.pi / 4), ("normal_cdf", math.pi)])
def test_erfi_closed_forms(name, scale):
    # A_erf = (pi/4) erfi(x), A_Phi = pi erfi(x/sqrt 2), against scipy.special.erfi
    from scipy.special import erfi

    m = netadv.adversarial(name, anchor="zero")
    x = np.linspace(m.lo, m.hi, 51)
    arg = x if name == "erf" else x / math.sqrt(2)
    with torch.no_grad():
        got = m(_t(x)).numpy()
    np.testing.assert_allclose(got, scale * erfi(arg), rtol=1e-12, atol=1e-14)


# --- anchors --------------------------------------------------------------------------------


@cases
def test_default_anchor_is_f_of_zero(case):
    m, m0 = _module(case), _module(case, anchor="zero")
    f0 = float(case.f(torch.zeros(1, dtype=torch.float64)))
    with torch.no_grad():
        assert float(m(torch.zeros(1, dtype=torch.float64))) == pytest.approx(f0, abs=1e-15)
        assert float(m0(torch.zeros(1, dtype=torch.float64))) == 0.0
        x = torch.linspace(-9, 9, 50, dtype=torch.float64)
        torch.testing.assert_close(m(x) - m0(x), torch.full_like(x, f0), rtol=0, atol=1e-12)


def test_nonzero_f0_anchors():
    values = {"sigmoid": 0.5, "normal_cdf": 0.5, "softplus": math.log(2), "exp": 1.0}
    for name, f0 in values.items():
        with torch.no_grad():
            got = netadv.adversarial(name)(torch.zeros(1, dtype=torch.float64))
        assert float(got) == pytest.approx(f0, abs=1e-15), name


# --- the tanh / sigmoid identity ------------------------------------------------------------


def test_tanh_is_scaled_sigmoid_everywhere_with_matched_gains():
    # tanh'(x) = 4 sigmoid'(2x): tanh's gain at x is a quarter of sigmoid's at 2x, so with
    # max_gain 25 for tanh and 100 for sigmoid the intervals correspond (c_s = 2 c_t) and the
    # identity holds inside and on the linear continuation alike.
    a_tanh = netadv.adversarial("tanh", anchor="zero", max_gain=25)
    a_sig = netadv.adversarial("sigmoid", anchor="zero", max_gain=100)
    assert a_sig.hi == pytest.approx(2 * a_tanh.hi, rel=1e-9)
    x = torch.linspace(-7, 7, 701, dtype=torch.float64, requires_grad=True)
    lhs, rhs = a_tanh(x), a_sig(2 * x) / 8
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-12)
    (g_l,) = torch.autograd.grad(lhs.sum(), x)
    (g_r,) = torch.autograd.grad(rhs.sum(), x)
    torch.testing.assert_close(g_l, g_r, rtol=1e-10, atol=1e-12)


def test_tanh_is_scaled_sigmoid_inside_both_default_intervals():
    a_tanh = netadv.adversarial("tanh", anchor="zero")
    a_sig = netadv.adversarial("sigmoid", anchor="zero")
    c = min(a_tanh.hi, a_sig.hi / 2)
    assert c == pytest.approx(a_sig.hi / 2)  # sigmoid's interval at gain 25 is the narrower
    x = torch.linspace(-c, c, 301, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(a_tanh(x), a_sig(2 * x) / 8, rtol=1e-10, atol=1e-12)


# --- dtypes, saturation, memory -------------------------------------------------------------

FUZZ_MODULES = {c.id: netadv.adversarial(c.arg) for c in CASES}
FUZZ_MODULES["generic(sigmoid)"] = netadv.adversarial(lambda x: 1 / (1 + torch.exp(-x)))
FUZZ_MODULES["generic(tanh o softplus)"] = netadv.adversarial(
    lambda x: torch.tanh(torch.nn.functional.softplus(x))
)
FUZZ_MODULES["sympy(atan)"] = netadv.adversarial(sympy.atan(sympy.Symbol("x")))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(
        st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False), min_size=1, max_size=12
    ),
)
def test_fuzz_outputs_and_gradients_finite(dtype, values):
    x = torch.tensor(values, dtype=dtype).requires_grad_(True)
    for name, m in FUZZ_MODULES.items():
        y = m(x)
        assert y.dtype == dtype and y.shape == x.shape
        assert torch.isfinite(y).all(), (name, values, y)
        (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
        assert g.dtype == dtype
        assert torch.isfinite(g).all(), (name, values, g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_extremes_saturate_to_finite(dtype):
    big = torch.finfo(dtype).max
    x = torch.tensor([-big, -1e4, 1e4, big], dtype=dtype, requires_grad=True)
    for name, m in FUZZ_MODULES.items():
        y = m(x)
        (g,) = torch.autograd.grad(y.sum(), x)
        assert torch.isfinite(y).all() and torch.isfinite(g).all(), name
        assert y.dtype == g.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_agrees_with_float32(dtype):
    x = torch.linspace(-6, 6, 97)
    for name in ("sigmoid", "tanh", "erf", "softplus"):
        m = netadv.adversarial(name)
        with torch.no_grad():
            want = m(x.to(dtype).float())
            got = m(x.to(dtype)).float()
        torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)


class _Saved:
    """What the pack hook hands autograd: alive exactly as long as a graph holds it."""

    def __init__(self, t: torch.Tensor):
        self.t = t
        self.nbytes = t.numel() * t.element_size()


def _saved_bytes(m, x) -> tuple[int, int, torch.Tensor]:
    """(bytes packed during forward, bytes the output's graph still holds after it, output)."""
    packed: list[weakref.ref] = []
    total = 0

    def pack(t):
        nonlocal total
        saved = _Saved(t)
        total += saved.nbytes
        packed.append(weakref.ref(saved))
        return saved

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda s: s.t):
        y = m(x)
    held = sum(r().nbytes for r in packed if r() is not None)
    return total, held, y


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("f", ["sigmoid", "normal_cdf", "elu", "identity"])
def test_saved_for_backward_is_only_the_input(dtype, f):
    m = netadv.adversarial(f)
    x = torch.randn(64, 33).to(dtype).requires_grad_(True)
    total, held, y = _saved_bytes(m, x)
    assert total == held == x.numel() * x.element_size()
    y.sum().backward()  # and backward works from what was saved
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_generic_construction_retains_only_the_input(dtype):
    # the generic path may take f' by autograd during forward (a graph freed at once); what
    # the output's graph keeps for backward is still only the input
    m = netadv.adversarial(lambda x: torch.atan(x) * 1.0)
    assert not m.closed_form
    x = torch.randn(64, 33).to(dtype).requires_grad_(True)
    _, held, y = _saved_bytes(m, x)
    assert held == x.numel() * x.element_size()
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_saved_bytes_probe_sees_extra_saves():
    # the probe is not vacuous: torch.sigmoid saves its output, a product saves both factors
    x = torch.randn(100, requires_grad=True)
    _, held, _ = _saved_bytes(lambda t: torch.sigmoid(t) * t, x)
    assert held > x.numel() * x.element_size()


# --- errors ---------------------------------------------------------------------------------


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown activation 'nope'") as e:
        netadv.adversarial("nope")
    for name in ("sigmoid", "tanh", "leaky_relu", "gelu", "normal_cdf"):
        assert name in str(e.value)


def test_relu_points_to_leaky_relu_surrogate():
    with pytest.raises(netadv.NoAdversarialError) as e:
        netadv.adversarial("relu")
    assert isinstance(e.value, ValueError)
    msg = str(e.value)
    assert "x <= 0" in msg
    assert "surrogate" in msg and "netadv.adversarial('leaky_relu(0.1)')" in msg
    with pytest.raises(netadv.NoAdversarialError):
        netadv.adversarial(nn.ReLU())


@pytest.mark.parametrize("name,zero", [("gelu", "-0.7518"), ("silu", "-1.278"), ("mish", "-1.192")])
def test_complex_activations_name_the_zero_and_point_to_sa(name, zero):
    with pytest.raises(netadv.NoAdversarialError) as e:
        netadv.adversarial(name)
    msg = str(e.value)
    assert f"x ~ {zero}" in msg
    assert "HD-FGD/SA" in msg
    assert "sign change" in msg


def test_no_adversarial_for_callables_and_modules_too():
    with pytest.raises(netadv.NoAdversarialError, match=r"-1\.278"):
        netadv.adversarial(lambda x: x * torch.sigmoid(x))
    with pytest.raises(netadv.NoAdversarialError, match=r"-0\.7518"):
        netadv.adversarial(nn.GELU())
    with pytest.raises(netadv.NoAdversarialError):
        netadv.stable_interval("mish")


@pytest.mark.parametrize("anchor", ["one", "", None, "F0"])
def test_bad_anchor(anchor):
    with pytest.raises(netadv.ConfigError, match="anchor must be one of"):
        netadv.adversarial("sigmoid", anchor=anchor)


@pytest.mark.parametrize("max_gain", [0, -1.0, math.inf, math.nan])
def test_bad_max_gain(max_gain):
    with pytest.raises(netadv.ConfigError, match="max_gain must be a positive finite number"):
        netadv.adversarial("sigmoid", max_gain=max_gain)


def test_max_gain_below_gain_at_zero():
    # sigmoid's gain at 0 is 1/s'(0) = 4
    with pytest.raises(netadv.ConfigError, match="raise max_gain"):
        netadv.adversarial("sigmoid", max_gain=3.0)
    assert netadv.adversarial("sigmoid", max_gain=4.5).hi > 0


def test_bad_activation_type():
    with pytest.raises(TypeError, match="cannot make an activation"):
        netadv.adversarial(3.0)


# --- modules and the catalogue --------------------------------------------------------------


def test_module_forms_resolve_to_registry_with_parameters():
    assert netadv.adversarial(nn.ELU(alpha=0.5)).spec.params == (("alpha", 0.5),)
    assert netadv.adversarial(nn.LeakyReLU(0.1)).spec.params == (("negative_slope", 0.1),)
    assert netadv.adversarial(nn.Softplus(beta=2)).spec.params == (("beta", 2.0),)
    assert netadv.adversarial(nn.Tanh).spec.name == "tanh"  # a class is instantiated
    assert netadv.adversarial(torch.sigmoid).spec.name == "sigmoid"
    assert netadv.adversarial("atan").spec.name == "arctan"  # aliases
    assert netadv.adversarial("phi").spec.name == "normal_cdf"


def test_list_activations_rows():
    rows = {r["name"]: r for r in netadv.list_activations()}
    builtin = {c.arg for c in CASES if isinstance(c.arg, str)}
    builtin |= {"relu", "gelu", "gelu_tanh", "silu", "mish"}
    assert builtin <= set(rows)
    for row in rows.values():
        assert set(row) == {
            "name",
            "closed_form",
            "stable_interval",
            "no_adversarial",
            "decomposition",
        }
    for c in CASES:
        if isinstance(c.arg, str):
            row = rows[c.arg]
            assert row["closed_form"] is True and row["no_adversarial"] is None
            assert row["stable_interval"] == pytest.approx(c.interval, rel=1e-9, abs=1e-9)
    for name, zero in (("gelu", "-0.7518"), ("silu", "-1.278"), ("mish", "-1.192")):
        assert rows[name]["stable_interval"] is None and rows[name]["closed_form"] is False
        assert zero in rows[name]["no_adversarial"]
    assert "x <= 0" in rows["relu"]["no_adversarial"] and rows["relu"]["decomposition"] is None
    assert rows["gelu"]["decomposition"] == "x_1*Phi(x_2) (k=2)"
    assert rows["silu"]["decomposition"] == "x_1*sigmoid(x_2) (k=2)"
    assert rows["tanh"]["decomposition"].endswith("(k=4)")
    assert rows["gelu_tanh"]["decomposition"].endswith("(k=3)")
    assert rows["sigmoid"]["decomposition"] is None
    wide = {r["name"]: r for r in netadv.list_activations(max_gain=100.0)}
    assert wide["sigmoid"]["stable_interval"][1] == pytest.approx(math.acosh(49.0))


def test_register_activation_with_closed_form_uses_it(restore_registry):
    calls = []

    def a_atan(x):  # any anchor: the library re-anchors it
        calls.append(1)
        return x + x**3 / 3 + 7.0

    netadv.register_activation("my_atan", torch.atan, adversarial=a_atan)
    m = netadv.adversarial("my_atan", anchor="zero")
    assert m.closed_form and (m.lo, m.hi) == pytest.approx((-math.sqrt(24), math.sqrt(24)))
    calls.clear()
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    with torch.no_grad():
        got = m(x)
    assert calls, "the registered closed form was not called"
    torch.testing.assert_close(got, x + x**3 / 3, rtol=1e-12, atol=1e-12)
    assert "my_atan" in {r["name"] for r in netadv.list_activations()}
    x = torch.tensor([0.3, 1.5, 6.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_register_activation_without_closed_form_builds_generic(restore_registry):
    netadv.register_activation("my_sig", lambda x: 1 / (1 + torch.exp(-x)))
    m = netadv.adversarial("my_sig", anchor="zero")
    assert not m.closed_form
    ref = netadv.adversarial("sigmoid", anchor="zero")
    x = torch.linspace(-6, 6, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x), rtol=1e-8, atol=1e-10)
