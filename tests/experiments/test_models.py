"""The gradient study's MLP with the rival cures, and DyT in the transformers."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate, optimize, stats
from torch import nn

import netadv
from netadv.experiments.mlp import MLP, Block, critical_gain
from netadv.experiments.models import DyT, build_model


def _gauss(fn, q: float) -> float:
    """E[fn(sqrt(q) z)] by adaptive quadrature (independent of the library's grid)."""
    f = lambda z: fn(math.sqrt(q) * z) * stats.norm.pdf(z)
    return integrate.quad(f, -12, 12, limit=400, points=[0.0])[0]


@pytest.mark.parametrize(
    "name, expected",
    [("tanh", 1.0), ("arctan", 1.0), ("softsign", 1.0), ("erf", math.sqrt(math.pi) / 2)],
)
def test_critical_gain_of_odd_activations_is_one_over_the_slope_at_zero(name, expected):
    assert critical_gain(name) == pytest.approx(expected, rel=1e-5)


def test_critical_gain_of_sigmoid_puts_chi_at_one():
    s = critical_gain("sigmoid")
    sig = lambda x: float(stats.logistic.cdf(x))
    # the fixed point of q = s^2 E[sigmoid^2], then chi = s^2 E[sigmoid'^2] must be 1
    q = optimize.brentq(lambda q: s * s * _gauss(lambda x: sig(x) ** 2, q) - q, 1e-6, 1e6)
    chi = s * s * _gauss(lambda x: (sig(x) * (1 - sig(x))) ** 2, q)
    assert chi == pytest.approx(1.0, rel=1e-4)


def test_critical_gain_refuses_an_unbounded_activation():
    with pytest.raises(ValueError, match="grows without bound.*init=orthogonal"):
        critical_gain("softplus")


def test_cures_build_what_they_say():
    torch.manual_seed(0)
    plain = MLP(16, 3, depth=3, width=8, activation="tanh")
    assert [type(m).__name__ for m in plain] == ["Flatten"] + ["Linear", "Tanh"] * 3 + ["Linear"]
    normed = MLP(16, 3, depth=3, width=8, activation="tanh", norm="batch")
    assert all(isinstance(b.norm, nn.BatchNorm1d) for b in normed if isinstance(b, Block))
    res = MLP(16, 3, depth=3, width=8, activation="tanh", residual="plain")
    block, h = res[2], torch.randn(4, 8)
    assert torch.allclose(block(h), h + torch.tanh(block.linear(h)))
    assert res[1].residual is None  # the first block changes the width
    rezero = MLP(16, 3, depth=3, width=8, activation="tanh", residual="rezero")
    assert torch.equal(rezero[2](h), h)  # the branch starts switched off
    ortho = MLP(16, 3, depth=3, width=8, activation="tanh", init="orthogonal")
    w = ortho[3].weight  # 8 x 8 hidden layer: orthogonal times tanh's gain 5/3
    assert torch.allclose(w @ w.T, (5 / 3) ** 2 * torch.eye(8), atol=1e-5)
    crit = MLP(16, 3, depth=3, width=8, activation="sigmoid", init="critical")
    w = crit[3].weight
    assert torch.allclose(w @ w.T, critical_gain("sigmoid") ** 2 * torch.eye(8), atol=1e-3)
    assert all(m.bias.abs().max() == 0 for m in crit if isinstance(m, nn.Linear))
    with pytest.raises(ValueError, match="unknown MLP residual 'skip'"):
        MLP(16, 3, residual="skip")


@pytest.mark.parametrize("cure", [{"norm": "layer"}, {"residual": "rezero"}, {"init": "critical"}])
def test_ga_alternates_over_every_cure(cure):
    model = MLP(16, 3, depth=4, width=8, activation="sigmoid", **cure)
    plan = netadv.plan(model, "ga", example_inputs=(torch.randn(2, 16),))
    assert [s.becomes for s in plan] == ["f", "A_f", "f", "A_f"]
    out = netadv.rewrite(model, plan)(torch.randn(2, 16))
    assert torch.isfinite(out).all()


def test_dks_transforms_the_activation_for_the_depth():
    pytest.importorskip("dks")
    torch.manual_seed(0)
    model = MLP(16, 3, depth=6, width=32, activation="tanh", transform="dks")
    x = torch.randn(64, 16)
    assert torch.isfinite(model(x)).all()
    act = model[3]  # Flatten, MeanSquareNorm, Linear, act, ...
    z = torch.linspace(-2, 2, 9)
    assert not torch.allclose(act(z), torch.tanh(z))  # a transformed tanh, not tanh itself
    with pytest.raises(ValueError, match="brings its own initialisation"):
        MLP(16, 3, transform="dks", init="xavier")


def test_dyt_replaces_every_layernorm_and_is_no_site():
    torch.manual_seed(0)
    dyt = DyT(6)
    x = torch.randn(3, 6)
    assert torch.allclose(dyt(x), torch.tanh(0.5 * x))
    kwargs = dict(patch_size=7, embed_dim=16, depth=2, num_heads=2)
    vit = build_model("vit", in_chans=1, num_classes=10, image_size=28, **kwargs)
    dyt_vit = build_model(
        "vit", in_chans=1, num_classes=10, image_size=28, norm_layer="dyt", **kwargs
    )
    n_ln = sum(isinstance(m, nn.LayerNorm) for m in vit.modules())
    assert n_ln > 0 and not any(isinstance(m, nn.LayerNorm) for m in dyt_vit.modules())
    assert sum(isinstance(m, DyT) for m in dyt_vit.modules()) == n_ln
    example = (torch.randn(2, 1, 28, 28),)
    plan = netadv.plan(dyt_vit, "sa", example_inputs=example)
    assert len(plan) == 2 and all(s.activation == "gelu" for s in plan)  # DyT's tanh is no site
    assert torch.isfinite(netadv.rewrite(dyt_vit, plan)(*example)).all()
