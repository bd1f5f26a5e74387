"""HD-FGD decompositions (METHOD.md section 4): lifted functions, automatic lifting, SA forms."""

from __future__ import annotations

import copy
import math

import pytest
import sympy
import torch
import torch.nn.functional as F
from torch import nn

import netadv
from netadv.layers.adversarial import Adversarial
from netadv.layers.hdfgd import sa_terms
from netadv.symbolic import sigmoid as sym_sigmoid

pytestmark = pytest.mark.usefixtures("one_thread")

REFERENCE = {
    "gelu": F.gelu,
    "silu": F.silu,
    "mish": F.mish,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "tanh": torch.tanh,
}
BUILTIN = {  # name -> (k, terms)
    "gelu": (2, ("x_1", "Phi(x_2)")),
    "silu": (2, ("x_1", "sigmoid(x_2)")),
    "mish": (2, ("x_1", "tanh(softplus(x_2))")),
    "gelu_tanh": (3, ("x_1", "x_2", "0.044715*x_3**3")),
    "tanh": (4, ("exp(x_1)", "-exp(-x_2)", "exp(x_3)", "exp(-x_4)")),
}
X = sympy.Symbol("x")


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_k_and_terms(name):
    d = netadv.decompose(name)
    k, terms = BUILTIN[name]
    assert d.name == name
    assert d.k == k
    assert [str(s) for s in d.symbols] == [f"x_{i}" for i in range(1, k + 1)]
    assert d.terms == terms


@pytest.mark.parametrize("name", sorted(BUILTIN))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_lifted_on_the_diagonal_is_the_activation(name, dtype):
    d = netadv.decompose(name)
    x = torch.linspace(-8, 8, 1601, dtype=dtype)
    got = d(*[x] * d.k)
    assert got.dtype == dtype
    torch.testing.assert_close(got, REFERENCE[name](x), rtol=1e-6, atol=1e-6)


def test_lifted_arguments_are_separate():
    a = torch.linspace(-3, 3, 7, dtype=torch.float64)
    b = torch.linspace(2, -2, 7, dtype=torch.float64)
    phi = lambda t: 0.5 * (1 + torch.erf(t / math.sqrt(2)))
    torch.testing.assert_close(netadv.decompose("gelu")(a, b), a * phi(b))
    torch.testing.assert_close(netadv.decompose("silu")(a, b), a * torch.sigmoid(b))
    torch.testing.assert_close(netadv.decompose("mish")(a, b), a * torch.tanh(F.softplus(b)))
    c, e = a.flip(0), b * 0.5
    want = (torch.exp(a) - torch.exp(-b)) / (torch.exp(c) + torch.exp(-e))
    torch.testing.assert_close(netadv.decompose("tanh")(a, b, c, e), want)
    with pytest.raises(ValueError, match="takes 2 inputs, got 1"):
        netadv.decompose("gelu")(a)


@pytest.mark.parametrize(
    "module,name",
    [
        (nn.GELU(), "gelu"),
        (nn.GELU(approximate="tanh"), "gelu_tanh"),
        (nn.SiLU(), "silu"),
        (nn.Mish(), "mish"),
        (nn.Tanh(), "tanh"),
        (F.gelu, "gelu"),
        ("swish", "silu"),
        ("GELU", "gelu"),
    ],
    ids=str,
)
def test_modules_callables_and_aliases_find_their_decomposition(module, name):
    assert netadv.decompose(module).name == name


@pytest.mark.parametrize(
    "expr,k,ref",
    [
        (X * sympy.exp(-(X**2)), 2, lambda x: x * torch.exp(-x * x)),
        ("x*sigmoid(x)", 2, F.silu),
        (X * sympy.tanh(X) + sympy.sin(X), 3, lambda x: x * torch.tanh(x) + torch.sin(x)),
        (X / (1 + sympy.exp(-X)), 2, F.silu),
        (sympy.atan(X), 1, torch.atan),
    ],
    ids=str,
)
def test_automatic_decomposition_of_one_symbol_expression(expr, k, ref):
    d = netadv.decompose(expr)
    assert d.k == k
    x = torch.linspace(-5, 5, 501, dtype=torch.float64)
    torch.testing.assert_close(d(*[x] * k), ref(x), rtol=1e-12, atol=1e-12)


def test_automatic_decomposition_numbers_occurrences():
    d = netadv.decompose(X * sympy.exp(-(X**2)))
    assert d.terms == ("x_1", "exp(-x_2**2)")
    a = torch.tensor([1.0, 2.0], dtype=torch.float64)
    b = torch.tensor([0.5, -1.0], dtype=torch.float64)
    torch.testing.assert_close(d(a, b), a * torch.exp(-b * b))


def test_decomposition_passthrough():
    d = netadv.decompose("gelu")
    assert netadv.decompose(d) is d


@pytest.mark.parametrize("name", ["relu", "sigmoid", "leaky_relu"])
def test_activation_without_decomposition(name):
    with pytest.raises(ValueError, match="has no HD-FGD decomposition; registered: gelu") as e:
        netadv.decompose(name)
    for known in BUILTIN:
        assert known in str(e.value)


def test_unknown_name_for_decompose():
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        netadv.decompose("nope")


SA_FORMS = {
    "gelu": ("x_1*A_Phi(x_2)", {"A_Phi": "normal_cdf"}),
    "silu": ("x_1*A_sigmoid(x_2)", {"A_sigmoid": "sigmoid"}),
    "mish": ("x_1*A_tanh_softplus(x_2)", {"A_tanh_softplus": "tanh_softplus"}),
    "tanh": ("(A_exp(x_1) - A_exp(-x_2))/(A_exp(x_3) + A_exp(-x_4))", {"A_exp": "exp"}),
}


@pytest.mark.parametrize("name", sorted(SA_FORMS))
def test_split_adversarial_forms(name):
    expr, modules = sa_terms(netadv.decompose(name))
    want_expr, want_modules = SA_FORMS[name]
    assert str(expr) == want_expr
    assert {n: m.spec.name for n, m in modules.items()} == want_modules
    assert all(isinstance(m, Adversarial) for m in modules.values())


def test_split_adversarial_gelu_tanh_replaces_the_tanh():
    expr, modules = sa_terms(netadv.decompose("gelu_tanh"), anchor="zero", max_gain=50)
    assert "A_tanh(" in str(expr) and "tanh(" not in str(expr).replace("A_tanh(", "")
    (m,) = modules.values()
    assert m.anchor == "zero" and m.max_gain == 50.0


def test_split_adversarial_needs_an_adversarial_term():
    with pytest.raises(netadv.ConfigError, match="has an adversarial function"):
        netadv.decompose(X * sympy.sin(X)).split_adversarial()


def test_split_adversarial_refuses_a_quotient_with_no_value_at_the_origin():
    # A_exp(0) = 0 with anchor "zero": tanh's SA denominator A_exp(x_3) + A_exp(-x_4) is 0 there
    with pytest.raises(netadv.ConfigError, match="has no value at the origin.*use anchor='f0'"):
        netadv.decompose("tanh").split_adversarial(anchor="zero")
    netadv.decompose("tanh").split_adversarial(anchor="f0")


# --- overflow-safe lifted forms (netadv.symbolic.stable_form) --------------------------------

BIG = [89.0, -89.0, 1000.0, -1000.0, 12.0, -12.0, 0.5, 0.0]


@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str
)
def test_tanh_lifted_is_exact_at_large_inputs(dtype):
    """(e^x1 - e^-x2)/(e^x3 + e^-x4) was NaN from inf/inf at |x| >= 89 (>= 12 in float16)."""
    d = netadv.decompose("tanh")
    x = torch.tensor(BIG, dtype=dtype)
    torch.testing.assert_close(d(x, x, x, x), torch.tanh(x))
    # off the diagonal too: exact where representable, e^(x_1 - x_3) / 2 here
    x1 = torch.tensor([5.0, 30.0, 40.0], dtype=torch.float64)
    zero = torch.zeros_like(x1)
    torch.testing.assert_close(d(x1, zero, zero, zero), (torch.exp(x1) - 1) / 2)


@pytest.mark.parametrize("path", ["fused", "closure"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_tanh_block_is_the_original_at_large_preactivations(path, dtype):
    lin = nn.Linear(4, len(BIG)).to(dtype)
    with torch.no_grad():  # pre-activations +-89, +-1000, ... whatever the input
        lin.weight.mul_(1e-3)
        lin.bias.copy_(torch.tensor(BIG))
    block = netadv.hdfgd(lin, "tanh")
    if path == "closure":
        block.form = copy.copy(block.form)
        block.form.kernel = None
    x = torch.randn(3, 4, dtype=dtype, requires_grad=True)
    y = block(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    want = torch.tanh(lin(x))
    (g_want,) = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(y, want)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g, g_want, rtol=1e-2, atol=1e-2)


def test_register_activation_with_lifted_decomposition(restore_registry):
    x1, x2 = sympy.symbols("x_1 x_2")
    netadv.register_activation(
        "swish15",
        lambda x: x * torch.sigmoid(1.5 * x),
        decomposition=x1 * sym_sigmoid(sympy.Float(1.5) * x2),
    )
    d = netadv.decompose("swish15")
    assert d.name == "swish15" and d.k == 2
    x = torch.linspace(-6, 6, 101, dtype=torch.float64)
    torch.testing.assert_close(d(x, x), x * torch.sigmoid(1.5 * x))
    rows = {r["name"]: r for r in netadv.list_activations()}
    assert rows["swish15"]["decomposition"] == "x_1*sigmoid(1.5*x_2) (k=2)"
    # and the block built from the name uses it
    lin = nn.Linear(3, 4)
    block = netadv.hdfgd(lin, "swish15")
    xin = torch.randn(5, 3)
    z = lin(xin)
    torch.testing.assert_close(block(xin), z * torch.sigmoid(1.5 * z), rtol=0, atol=1e-6)


def test_register_activation_with_one_symbol_decomposition(restore_registry):
    netadv.register_activation("xatan", X * sympy.atan(X), decomposition=X * sympy.atan(X))
    d = netadv.decompose("xatan")
    assert d.k == 2 and d.terms == ("x_1", "atan(x_2)")
    expr, modules = sa_terms(d)
    assert str(expr) == "x_1*A_atan(x_2)" and modules["A_atan"].spec.name == "arctan"
