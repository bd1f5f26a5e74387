"""The fused path (netadv.fused, layers.lifted): backends, fallback, equivalence, compilation."""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import pytest
import sympy
import torch
import torch.nn.functional as F
from torch import nn

import netadv
from netadv import fused
from netadv.activations.registry import ActivationSpec, resolve
from netadv.experiments.models import resnet18, vit
from netadv.layers.adversarial import Adversarial

pytestmark = pytest.mark.usefixtures("one_thread")

ACTS = ["gelu", "silu", "mish", "gelu_tanh", "tanh", "quick_gelu"]


@pytest.fixture
def fresh_fused(monkeypatch):
    """Backend state restored after the test; compiled kernels traced by aot_eager (dynamo
    only, no C++ compile) unless the test says otherwise."""
    monkeypatch.setattr(fused, "COMPILE_BACKEND", "aot_eager")
    monkeypatch.setattr(fused, "_broken", {})
    monkeypatch.setattr(fused, "_warned", set())
    before = fused.get_backend()
    yield
    fused.set_backend(before)


def _reset(*kernels):
    """Forget compiled code and failures of shared kernels (other tests share them)."""
    for k in kernels:
        k._compiled, k.failed, k.last = None, None, None


def _pointwise_of(m):
    if isinstance(m, Adversarial):
        return [m.kernel.forward, m.kernel.backward]
    lk = m.form.kernel
    return [p for p in (lk.forward, lk.backward, lk.backward_penalty) if p is not None]


# --- the switch -----------------------------------------------------------------------------


def test_set_backend_validates_and_round_trips(fresh_fused):
    for name in fused.BACKENDS:
        netadv.set_backend(name)
        assert netadv.get_backend() == name
    with pytest.raises(netadv.ConfigError, match="backend must be one of"):
        netadv.set_backend("fast")
    netadv.set_backend("eager")
    with fused.use_backend("compile"):
        assert netadv.get_backend() == "compile"
    assert netadv.get_backend() == "eager"


def test_auto_keeps_small_tensors_eager(fresh_fused):
    netadv.set_backend("auto")
    m = netadv.adversarial("sigmoid")
    _reset(*_pointwise_of(m))
    x = torch.randn(fused.AUTO_MIN_NUMEL - 1, requires_grad=True)
    m(x).sum().backward()
    assert m.kernel.forward.last == "eager" and m.kernel.backward.last == "eager"
    assert "backend=auto(global)->eager" in repr(m)


def test_auto_compiles_large_tensors_where_a_compiler_exists(fresh_fused, monkeypatch):
    monkeypatch.setattr(fused, "AUTO_MIN_NUMEL", 64)
    netadv.set_backend("auto")
    m = netadv.adversarial("arctan")
    _reset(*_pointwise_of(m))
    x = torch.randn(64)
    monkeypatch.setattr(fused, "compiler_available", lambda device: False)
    m(x)
    assert m.kernel.forward.last == "eager"
    monkeypatch.setattr(fused, "compiler_available", lambda device: True)
    y = m(x)
    assert m.kernel.forward.last == "compile"
    with fused.use_backend("eager"):
        torch.testing.assert_close(y, m(x), rtol=0, atol=0)


def test_module_backend_overrides_the_global_one(fresh_fused):
    netadv.set_backend("compile")
    m = netadv.adversarial("softsign")
    _reset(*_pointwise_of(m))
    m.backend = "eager"
    m(torch.randn(10))
    assert m.kernel.forward.last == "eager"
    assert "backend=eager->eager" in repr(m)


def test_compile_without_a_compiler_warns_once_and_runs_eager(fresh_fused, monkeypatch):
    monkeypatch.setattr(fused, "compiler_available", lambda device: False)
    netadv.set_backend("compile")
    m = netadv.adversarial("exp")
    _reset(*_pointwise_of(m))
    x = torch.randn(10)
    with pytest.warns(RuntimeWarning, match="needs a C\\+\\+ compiler"):
        y = m(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m(x)  # once only
    assert m.kernel.forward.last == "eager"
    with fused.use_backend("eager"):
        torch.testing.assert_close(y, m(x))


def test_a_failing_compile_falls_back_to_eager_and_stays_there(fresh_fused, monkeypatch):
    calls = []

    def broken_compile(fn, **kwargs):
        def run(*args):
            calls.append(1)
            raise RuntimeError("CppCompileError: the compiler fell over")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    netadv.set_backend("compile")
    m = netadv.adversarial("tanh")
    _reset(*_pointwise_of(m))
    x = torch.randn(20, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="failed"):
        y = m(x)
    y.sum().backward()  # backward: the device is now marked broken, no second attempt
    assert len(calls) == 1
    assert m.kernel.forward.failed is not None and "cpu" in fused._broken
    assert "compile failed" in repr(m)
    ref = netadv.adversarial("tanh")
    with fused.use_backend("eager"):
        torch.testing.assert_close(y, ref(x))


def test_user_derivative_by_autograd_is_never_compiled(fresh_fused):
    m = netadv.adversarial(lambda x: torch.atan(x) * 1.0)  # no derivative: autograd inside
    assert not m.kernel.forward.compilable
    netadv.set_backend("compile")
    m(torch.randn(10))
    assert m.kernel.forward.last == "eager" and "not compilable" in repr(m)


# --- the compiled path traces every kernel as one graph, and agrees with eager ---------------


def _check_module(m, x, penalty=False):
    """Outputs and input gradients of ``m`` under compile (aot_eager) equal eager's."""
    results = []
    for backend in ("eager", "compile"):
        _reset(*_pointwise_of(m))
        xx = x.detach().clone().requires_grad_(True)
        with fused.use_backend(backend):
            y = m(xx)
            loss = (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum()
            if penalty:
                loss = loss + 10 * netadv.penalty(m)
            loss.backward()
        results.append((y.detach(), xx.grad))
        if backend == "compile":
            for p in _pointwise_of(m):
                assert p.failed is None, p.failed
            assert _pointwise_of(m)[0].last == "compile"
    (y0, g0), (y1, g1) = results
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-6)


def _generic_sigmoid():
    base = resolve("sigmoid")
    return Adversarial(ActivationSpec("sigmoid_generic", base.fn, base.derivative))


@pytest.mark.parametrize("name", ["sigmoid", "normal_cdf", "generic"])
def test_adversarial_compiles_and_matches_eager(fresh_fused, name):
    m = _generic_sigmoid() if name == "generic" else netadv.adversarial(name)
    _check_module(m, 4 * torch.randn(300))


@pytest.mark.parametrize("sa", [False, True], ids=["hdfgd", "sa"])
def test_lifted_gelu_compiles_and_matches_eager(fresh_fused, sa):
    block = netadv.hdfgd(nn.Linear(6, 8), "gelu", consumer=nn.Linear(8, 3), adversarial=sa)
    _check_module(block, 2 * torch.randn(5, 6), penalty=sa)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["tanh", "softsign", "arctan", "erf", "softplus", "elu", "leaky_relu(0.1)", "exp"]
)
def test_every_adversarial_compiles_and_matches_eager(fresh_fused, name):
    _check_module(netadv.adversarial(name), 4 * torch.randn(300))


@pytest.mark.slow
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("sa", [False, True], ids=["hdfgd", "sa"])
def test_every_lifted_block_compiles_and_matches_eager(fresh_fused, act, sa):
    conv = netadv.hdfgd(nn.Conv2d(2, 3, 3), act, norm=nn.BatchNorm2d(3), adversarial=sa).eval()
    _check_module(conv, 2 * torch.randn(2, 2, 5, 5), penalty=sa)


@pytest.mark.slow
def test_inductor_compiles_an_adversarial_for_real(fresh_fused, monkeypatch):
    """One real inductor compile (a C++ compiler is on PATH here); its cache lives in the
    repo's ignored .cache/ so a second run is quick."""
    if not fused.compiler_available("cpu"):
        pytest.fail("no C++ compiler: the fused CPU path cannot be tested")
    cache = Path(__file__).resolve().parents[1] / ".cache" / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    monkeypatch.setattr(fused, "COMPILE_BACKEND", "inductor")
    _check_module(netadv.adversarial("sigmoid"), 4 * torch.randn(1000))
    assert os.listdir(cache)


# --- the lifted kernel ----------------------------------------------------------------------


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("sa", [False, True], ids=["hdfgd", "sa"])
def test_fused_block_equals_the_closure_path(act, sa):
    block = netadv.hdfgd(nn.Linear(5, 7), act, consumer=nn.Linear(7, 2), adversarial=sa)
    assert block.form.kernel is not None
    closure = copy.deepcopy(block)
    closure.form.kernel = None
    assert "closure" in repr(closure) and "fused" in repr(block)
    x = (2 * torch.randn(4, 3, 5)).requires_grad_(True)
    outs = []
    for m in (block, closure):
        y = m(x)
        p = netadv.penalty(m)
        (g,) = torch.autograd.grad((y.sin().sum() + 100 * p), x)
        outs.append((y, p, g))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("with_norm", [False, True], ids=["", "layernorm"])
def test_term_major_linear_path_equals_unit_major(with_norm):
    norm = nn.LayerNorm(8) if with_norm else None
    block = netadv.hdfgd(nn.Linear(6, 8), "silu", norm=norm, adversarial=True, init="fresh")
    if with_norm:
        with torch.no_grad():
            block.norm.weight.normal_()
            block.norm.bias.normal_()
    assert block._blockable
    x = torch.randn(3, 2, 6)
    z = block.producer(x)
    if with_norm:
        z = block.norm(z)
    want = block.activate(z)  # the unit-major layout, as the parameters are stored
    p_want = block.last_penalty
    torch.testing.assert_close(block(x), want)
    torch.testing.assert_close(block.last_penalty, p_want)


def test_inference_reuses_the_reordered_weight_until_it_changes():
    block = netadv.hdfgd(nn.Linear(4, 5), "gelu", consumer=nn.Linear(5, 2)).eval()
    x = torch.randn(3, 4)
    with torch.no_grad():
        y0 = block(x)
        assert "_blocked_cache" in block.__dict__
        block.producer.weight.mul_(2)  # in place: the version counter moves
        y1 = block(x)
    with torch.enable_grad():
        torch.testing.assert_close(y1, block(x))
    assert not torch.allclose(y0, y1)


def test_saves_only_the_wide_preactivation():
    block = netadv.hdfgd(nn.Linear(4, 6), "gelu_tanh", adversarial=True)
    z = torch.randn(5, 18, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        block.activate(z)
    assert [t.shape for t in saved] == [torch.Size([5 * 6, 3, 1])]
    assert saved[0].data_ptr() == z.data_ptr()


def test_double_backward_through_fused_kernels():
    m = netadv.adversarial("sigmoid").double()
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(m, (x,))
    block = netadv.hdfgd(nn.Linear(2, 3), "silu", adversarial=True).double()
    z = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(block.activate, (z,))


def test_half_precision_lifted_kernel_computes_in_float32():
    block = netadv.hdfgd(nn.Linear(4, 6), "gelu", adversarial=True)
    z = 3 * torch.randn(8, 12)
    want = block.activate(z)
    got = block.activate(z.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)
    assert block.last_penalty.dtype == torch.float32


def test_shared_kernels_compile_once_per_model():
    a, b = netadv.adversarial("sigmoid"), netadv.adversarial("sigmoid")
    assert a.kernel is b.kernel
    assert netadv.adversarial("sigmoid", max_gain=30).kernel is not a.kernel
    s1 = netadv.hdfgd(nn.Linear(3, 4), "gelu", adversarial=True)
    s2 = netadv.hdfgd(nn.Linear(5, 6), "gelu", adversarial=True)
    assert s1.form.kernel is s2.form.kernel
    assert copy.deepcopy(s1).form.kernel is s1.form.kernel


def test_user_decomposition_gets_a_generated_kernel():
    x = sympy.Symbol("x")
    block = netadv.hdfgd(nn.Linear(3, 4), x * sympy.atan(x) + sympy.exp(-x * x))
    assert block.form.kernel is not None and block.form.kernel.k == 3
    lin = nn.Linear(3, 4)
    block = netadv.hdfgd(lin, x * sympy.atan(x))
    xin = torch.randn(5, 3)
    z = lin(xin)
    torch.testing.assert_close(block(xin), z * torch.atan(z))


# --- user torch.compile of a rewritten model: no graph breaks from netadv --------------------


@pytest.mark.parametrize(
    "build, method, kw",
    [
        (lambda: vit(3, 10, 16, embed_dim=16, depth=2, num_heads=2), "sa", {}),
        (lambda: vit(3, 10, 16, embed_dim=16, depth=2, num_heads=2), "ga", {"activation": "tanh"}),
        (lambda: resnet18(3, 10, width=4), "hdfgd", {"activation": "silu"}),
    ],
    ids=["vit-sa", "vit-ga", "resnet-hdfgd"],
)
def test_rewritten_model_compiles_as_one_graph(build, method, kw):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    model = netadv.rewrite(build(), method, example_inputs=(x,), **kw)
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    grads = []
    for m in (compiled, model):
        xx = x.clone().requires_grad_(True)
        y = m(xx)
        (F.log_softmax(y, -1).sum() + netadv.penalty(model)).backward()
        grads.append((y.detach(), xx.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-5)
    model.eval()  # inference takes other branches (no autograd node, cached weights)
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(x)
        assert explained.graph_break_count == 0, explained.break_reasons
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
