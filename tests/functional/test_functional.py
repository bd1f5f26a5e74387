"""netadv.functional: the adversarial of a tensor and the lifted HD-FGD/SA function."""

from __future__ import annotations

import weakref

import pytest
import sympy
import torch
import torch.nn.functional as F
from torch import nn

import netadv
import netadv.functional as nf
from netadv.activations import kernel as kernel_mod
from netadv.activations.kernel import build_kernel

pytestmark = pytest.mark.usefixtures("one_thread")

X = sympy.Symbol("x")
ACTIVATIONS = {
    "sigmoid": "sigmoid",
    "softplus(beta=2)": nn.Softplus(beta=2),
    "leaky_relu(0.1)": "leaky_relu(0.1)",
    "generic": lambda x: torch.tanh(F.softplus(x)),
    "sympy": sympy.atan(X) + X / 4,
}
DECOMPOSITIONS = {"gelu": 2, "silu": 2, "mish": 2, "gelu_tanh": 3, "tanh": 4}


def _grads(fn, x):
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    (g,) = torch.autograd.grad((y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum(), x)
    return y.detach(), g


# --- adversarial ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("anchor", ["f0", "zero"])
def test_adversarial_equals_the_module(name, anchor):
    f = ACTIVATIONS[name]
    module = netadv.adversarial(f, anchor=anchor, max_gain=40)
    x = 6 * torch.randn(200, dtype=torch.float64)
    y_m, g_m = _grads(module, x)
    y_f, g_f = _grads(lambda t: nf.adversarial(t, f, anchor=anchor, max_gain=40), x)
    torch.testing.assert_close(y_f, y_m, rtol=0, atol=0)
    torch.testing.assert_close(g_f, g_m, rtol=0, atol=0)


def test_adversarial_default_is_sigmoid_and_matches_the_closed_form():
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    want = 2 * x + 2 * torch.sinh(x) + 0.5  # METHOD.md: A_sigmoid, anchored at f(0) = 1/2
    torch.testing.assert_close(nf.adversarial(x), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nf.adversarial(x, anchor="zero"), want - 0.5, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["sigmoid", "generic", "leaky_relu(0.1)"])
def test_adversarial_gradcheck_float64(name):
    f = ACTIVATIONS[name]
    lo, hi = netadv.stable_interval(f)
    pts = [-2.0, -0.3, 0.4, 1.7]
    pts += [v + d for v in (lo, hi) if abs(v) < 1e3 and v != 0 for d in (-0.5, 0.5)]
    x = torch.tensor(pts, dtype=torch.float64, requires_grad=True)
    fn = lambda t: nf.adversarial(t, f)
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-6)
    if name == "sigmoid":  # a closed form's backward is differentiable too
        assert torch.autograd.gradgradcheck(fn, (x,))


def test_adversarial_takes_a_prebuilt_kernel():
    kernel = build_kernel("tanh", anchor="zero", max_gain=30)
    x = torch.randn(50)
    torch.testing.assert_close(
        nf.adversarial(x, kernel), nf.adversarial(x, "tanh", anchor="zero", max_gain=30)
    )


def test_repeated_calls_reuse_the_kernel(monkeypatch):
    """Neither the module nor the function rebuilds a kernel it has built: the knot table of a
    generic activation is made once, however often it is asked for."""
    made = []
    table = kernel_mod.KnotTable

    def counting(*args, **kwargs):
        made.append(1)
        return table(*args, **kwargs)

    monkeypatch.setattr(kernel_mod, "KnotTable", counting)

    def f(x):  # a fresh callable: nothing cached for it yet
        return torch.atan(x) + x / 4

    x = torch.randn(30)
    y = nf.adversarial(x, f)
    for _ in range(3):
        torch.testing.assert_close(nf.adversarial(x, f), y, rtol=0, atol=0)
    assert netadv.adversarial(f).kernel is build_kernel(f)
    assert len(made) == 1
    assert build_kernel("sigmoid") is build_kernel(nn.Sigmoid())
    assert build_kernel("sigmoid") is not build_kernel("sigmoid", anchor="zero")


def test_adversarial_saves_only_its_input():
    saved = []
    x = torch.randn(40, 3, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = nf.adversarial(x, "normal_cdf")
    assert len(saved) == 1 and saved[0].data_ptr() == x.data_ptr()
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_adversarial_half_precision_keeps_the_dtype(dtype):
    x = torch.linspace(-1e4, 1e4, 101).to(dtype).requires_grad_(True)
    y = nf.adversarial(x, "tanh")
    (g,) = torch.autograd.grad(y.sum(), x)
    assert y.dtype == g.dtype == dtype
    assert torch.isfinite(y).all() and torch.isfinite(g).all()


def test_adversarial_errors_are_the_modules():
    with pytest.raises(netadv.NoAdversarialError, match="HD-FGD/SA"):
        nf.adversarial(torch.randn(3), "gelu")
    with pytest.raises(netadv.ConfigError, match="anchor must be one of"):
        nf.adversarial(torch.randn(3), "sigmoid", anchor="one")


# --- lifted ---------------------------------------------------------------------------------


@pytest.mark.parametrize("act", sorted(DECOMPOSITIONS))
@pytest.mark.parametrize("sa", [False, True], ids=["hdfgd", "sa"])
def test_lifted_equals_the_block(act, sa):
    block = netadv.hdfgd(nn.Linear(4, 5), act, adversarial=sa, init="fresh")
    z = 2 * torch.randn(3, 2, 5 * DECOMPOSITIONS[act])
    want = block.activate(z)
    out = nf.lifted(z, act, adversarial=sa)
    if sa:
        y, p = out
        torch.testing.assert_close(p, block.last_penalty)
    else:
        y = out
    assert y.shape == (3, 2, 5)
    torch.testing.assert_close(y, want)


def test_lifted_hdfgd_is_the_activation_on_the_diagonal():
    z = torch.randn(7, 6)
    wide = z.repeat_interleave(2, dim=-1)  # unit-major: both terms of unit j equal z[..., j]
    torch.testing.assert_close(nf.lifted(wide, "gelu"), F.gelu(z), rtol=1e-5, atol=1e-6)
    conv = z.view(7, 6, 1, 1).repeat_interleave(3, dim=1)
    got = nf.lifted(conv, "gelu_tanh", dim=1)
    want = F.gelu(z, approximate="tanh").view(7, 6, 1, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_lifted_sa_is_the_split_adversarial_by_hand():
    z = 2 * torch.randn(4, 10, dtype=torch.float64)
    y, p = nf.lifted(z, "silu", adversarial=True, anchor="zero", max_gain=40)
    x1, x2 = z[:, 0::2], z[:, 1::2]
    a = netadv.adversarial("sigmoid", anchor="zero", max_gain=40)(x2)
    torch.testing.assert_close(y, x1 * a)
    torch.testing.assert_close(p, a.pow(2).mean())


@pytest.mark.parametrize("act", ["gelu", "tanh"])
@pytest.mark.parametrize("sa", [False, True], ids=["hdfgd", "sa"])
def test_lifted_gradcheck_float64(act, sa):
    k = DECOMPOSITIONS[act]
    z = (2 * torch.randn(3, 2 * k, dtype=torch.float64)).requires_grad_(True)

    fn = lambda t: nf.lifted(t, act, adversarial=sa)  # (F, penalty) for SA: both checked
    assert torch.autograd.gradcheck(fn, (z,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_lifted_closure_path_agrees_with_the_generated_kernel():
    form = nf.lifted_form("mish", adversarial=True)
    assert form.kernel is not None
    closure = nf.LiftedForm(form.expr, form.symbols, form.terms)
    closure.kernel = None
    z = (2 * torch.randn(5, 8)).requires_grad_(True)
    results = []
    for f in (form, closure):
        y, p = nf.lifted(z, f)
        (g,) = torch.autograd.grad(y.sin().sum() + 10 * p, z)
        results.append((y, p, g))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_lifted_forms_are_cached_and_shared_with_blocks():
    form = nf.lifted_form("gelu", adversarial=True)
    assert nf.lifted_form(nn.GELU(), adversarial=True) is form
    assert nf.lifted_form("gelu") is not form
    block = netadv.hdfgd(nn.Linear(2, 3), "gelu", adversarial=True)
    assert block.form.kernel is form.kernel


def test_lifted_saves_only_the_wide_preactivation():
    z = torch.randn(6, 12, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(weakref.ref(t)) or t, lambda t: t
    ):
        y, p = nf.lifted(z, "gelu_tanh", adversarial=True)
    assert len(saved) == 1 and saved[0]().data_ptr() == z.data_ptr()
    (y.sum() + p).backward()
    assert torch.isfinite(z.grad).all()


def test_lifted_half_precision_keeps_the_dtype():
    z = 3 * torch.randn(4, 12)
    y = nf.lifted(z.to(torch.bfloat16), "silu")
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), nf.lifted(z, "silu"), rtol=2e-2, atol=2e-2)


def test_lifted_width_must_be_a_multiple_of_k():
    with pytest.raises(ValueError, match="not k=3 each"):
        nf.lifted(torch.randn(2, 7), "gelu_tanh")


def test_functional_is_public():
    assert "functional" in netadv.__all__ and netadv.functional is nf
    assert {"adversarial", "lifted"} <= set(nf.__all__)
