"""What netadv refuses, and the advice it gives: callables that are not element-wise (probed
with a permuted and a shortened input), and activations with no adversarial."""

from __future__ import annotations

import re

import pytest
import sympy
import torch
from torch import nn

import netadv
from netadv.activations import registry

pytestmark = pytest.mark.usefixtures("one_thread")

NOT_ELEMENTWISE = {
    "cumsum": (lambda x: torch.cumsum(x, 0), "permuting its input does not permute its output"),
    "flip": (lambda x: x.flip(0), "permuting its input does not permute its output"),
    "softmax": (lambda x: torch.softmax(x, 0), "each output depends on other elements"),
    "nn.Softmax": (nn.Softmax(dim=0), "each output depends on other elements"),
    "centering": (lambda x: x - x.mean(), "each output depends on other elements"),
    "sum": (lambda x: x.sum(), r"maps a tensor of shape \(8,\) to one of shape \(\)"),
    "constant tensor": (lambda x: torch.ones(()), r"to one of shape \(\)"),
    "constant number": (lambda x: 3.0, "returns float, not a tensor"),
    "torch.cumsum": (torch.cumsum, r"calling it on a float64 tensor .* failed \(TypeError"),
}


@pytest.mark.parametrize("fn,why", NOT_ELEMENTWISE.values(), ids=list(NOT_ELEMENTWISE))
@pytest.mark.parametrize(
    "api",
    [
        lambda f: netadv.adversarial(f),
        lambda f: netadv.hdfgd(nn.Linear(3, 4), f, adversarial=True),
        lambda f: netadv.stable_interval(f),
        lambda f: netadv.register_activation("mine", f),
    ],
    ids=["adversarial", "hdfgd", "stable_interval", "register_activation"],
)
def test_not_elementwise_is_refused_with_one_line(fn, why, api, restore_registry):
    with pytest.raises(ValueError, match="is not an element-wise activation: .*" + why) as e:
        api(fn)
    msg = str(e.value)
    assert "\n" not in msg and "netadv takes functions applied to each element" in msg


def test_registered_derivative_and_adversarial_are_probed_too(restore_registry):
    with pytest.raises(ValueError, match="mine's derivative is not an element-wise activation"):
        netadv.register_activation("mine", torch.atan, derivative=lambda x: torch.cumsum(x, 0))
    with pytest.raises(ValueError, match="mine's adversarial is not an element-wise activation"):
        netadv.register_activation("mine", torch.atan, adversarial=lambda x: x.sum())


def test_constant_elementwise_function_has_zero_derivative_everywhere():
    with pytest.raises(netadv.NoAdversarialError, match="f'\\(x\\) = 0 at every x") as e:
        netadv.adversarial(torch.zeros_like)
    assert "must depend on its input" in str(e.value)
    assert "does not require grad" not in str(e.value)


ELEMENTWISE = [
    lambda x: torch.atan(2 * x),
    lambda x: x * torch.sigmoid(x),
    lambda x: torch.where(x > 0, x, 0.1 * x),
    nn.Hardtanh(),
    nn.CELU(),
    torch.special.erf,
]


@pytest.mark.parametrize("fn", ELEMENTWISE, ids=lambda f: getattr(f, "__name__", str(f)))
def test_elementwise_callables_pass_the_probe(fn):
    registry.check_elementwise(fn, "f")


@pytest.mark.parametrize("name", registry.names())
def test_no_builtin_is_refused_by_the_probe(name):
    registry.check_elementwise(registry.by_name(name).fn, name)


def test_sympy_activations_are_not_probed_but_compiled():
    assert netadv.adversarial(sympy.atan(2 * sympy.Symbol("x"))).closed_form is not None


# --- advice that works ----------------------------------------------------------------------


def _advised(msg: str) -> str:
    """The argument of the ``netadv.adversarial(...)`` an error message advises."""
    (arg,) = re.findall(r"netadv\.adversarial\((.+?\))\)|netadv\.adversarial\(('[^']+')\)", msg)
    return next(a for a in arg if a)


@pytest.mark.parametrize(
    "activation,surrogate",
    [
        ("leaky_relu(-0.1)", "'leaky_relu(0.1)'"),
        (nn.LeakyReLU(-0.3), "'leaky_relu(0.3)'"),
        ("leaky_relu(0)", "'leaky_relu(0.1)'"),
        ("relu", "'leaky_relu(0.1)'"),
    ],
)
def test_negative_or_zero_slope_gets_a_surrogate_that_works(activation, surrogate):
    with pytest.raises(netadv.NoAdversarialError) as e:
        netadv.adversarial(activation)
    msg = str(e.value)
    assert _advised(msg) == surrogate
    assert "HD-FGD" not in msg  # leaky_relu and relu have no decomposition: no advice to use it
    m = netadv.adversarial(eval(surrogate))  # following the advice works
    assert torch.isfinite(m(torch.linspace(-5, 5, 11))).all()


def test_leaky_relu_with_a_negative_slope_says_where_the_slope_jumps():
    with pytest.raises(netadv.NoAdversarialError, match=r"f' changes sign at x ~ 0 \(jumps from"):
        netadv.adversarial("leaky_relu(-0.1)")


def test_hdfgd_advice_only_where_there_is_a_decomposition():
    with pytest.raises(netadv.NoAdversarialError, match="netadv.hdfgd\\(layer, 'gelu'") as e:
        netadv.adversarial("gelu")
    netadv.hdfgd(nn.Linear(2, 3), "gelu", adversarial=True)  # the advice works
    with pytest.raises(netadv.NoAdversarialError, match="need Hardtanh's decomposition") as e:
        netadv.adversarial(nn.Hardtanh())
    assert "netadv.hdfgd(layer, 'Hardtanh'" not in str(e.value)


def test_a_registered_call_with_parameters_is_decomposed_by_name():
    with pytest.raises(ValueError, match=r"leaky_relu\(negative_slope=-0.1\) has no HD-FGD"):
        netadv.decompose("leaky_relu(-0.1)")
