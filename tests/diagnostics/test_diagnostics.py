"""Gradient diagnostics: which modules are sites, the per-site statistics against formulas written
here, and the rows the collector writes over two consecutive steps."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netadv
from netadv.diagnostics import Diagnostics, activation_sites, site_stats, weight_layers


def mlp(act: type[nn.Module] = nn.Sigmoid, depth: int = 3, width: int = 16) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(8, width), act()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), act()]
    return nn.Sequential(*layers, nn.Linear(width, 3))


def test_sites_are_activations_in_model_order_and_blocks_count_once():
    torch.manual_seed(0)
    model = netadv.rewrite(mlp(nn.Tanh), "ga", example_inputs=(torch.randn(2, 8),))
    names = [m._get_name() for _, m in activation_sites(model)]
    assert names == ["Tanh", "AdversarialTanh", "Tanh"]

    ffn = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8), nn.Identity())
    block = netadv.rewrite(ffn, "sa", start="A", example_inputs=(torch.randn(2, 8),))
    sites = activation_sites(block)
    # the block is one site; the adversarial terms inside it are not sites of their own
    assert [m._get_name() for _, m in sites] == ["SA"]
    assert [n for n, _ in weight_layers(mlp(depth=2))] == ["0", "2", "4"]


def test_gain_and_moments_of_a_plain_activation():
    x = torch.linspace(-4, 4, 101).reshape(1, -1)
    s = torch.sigmoid(x.double())
    stats = site_stats(nn.Sigmoid(), x)
    assert stats["gain"] == pytest.approx((s * (1 - s)).mean().item(), rel=1e-5)
    assert stats["mean"] == pytest.approx(0.0, abs=1e-6)
    assert stats["var"] == pytest.approx(x.var().item(), rel=1e-6)
    assert stats["outside"] is None


def test_adversarial_site_reports_the_fraction_outside_its_interval():
    a = netadv.adversarial("tanh")
    c = math.acosh(25**0.5)  # cosh^2(c) = 25: the edge of tanh's stable interval
    x = torch.tensor([[-3.0, -2.0, 0.0, 1.0, 2.0, 2.5, 4.0, 10.0]])
    stats = site_stats(a, x)
    assert stats["outside"] == pytest.approx((x.abs() > c).float().mean().item())
    # inside the interval the gain is exactly 1/f', outside the slope at the edge
    inv = torch.cosh(x.clamp(-c, c).double()) ** 2
    assert stats["gain"] == pytest.approx(inv.mean().item(), rel=1e-5)


def test_block_gain_is_the_slope_along_the_diagonal():
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(6, 12), nn.Linear(12, 6)
    block = netadv.hdfgd(fc1, "gelu", consumer=fc2)  # copy init: F(z, z) = gelu(z)
    x = torch.randn(5, 6)
    z = fc1(x).detach().requires_grad_(True)
    (slope,) = torch.autograd.grad(F.gelu(z).sum(), z)
    stats = site_stats(block, x)
    assert stats["gain"] == pytest.approx(slope.abs().mean().item(), rel=1e-5)
    assert stats["outside"] is None

    sa = netadv.hdfgd(fc1, "gelu", consumer=fc2, adversarial=True)
    stats = site_stats(sa, 100 * x)  # far out: some pre-activations leave A_Phi's interval
    assert 0 < stats["outside"] <= 1


def test_inplace_activation_does_not_break_the_statistics():
    x = torch.randn(4, 10)
    stats = site_stats(nn.ReLU(inplace=True), x)
    assert stats["gain"] == pytest.approx((x > 0).float().mean().item())


def _two_steps(model: nn.Module, diag: Diagnostics, steps: range, epoch: int = 1) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    for step in steps:
        diag.before_step(step)
        loss = model(torch.randn(16, 8, generator=gen)).square().mean()
        opt.zero_grad()
        loss.backward()
        diag.after_backward(step, epoch)
        opt.step()


def test_collector_writes_one_row_per_pair_of_steps(tmp_path):
    torch.manual_seed(0)
    model = mlp(nn.Sigmoid, depth=3)
    path = tmp_path / "diagnostics.jsonl"
    diag = Diagnostics(model, path, every=4)
    _two_steps(model, diag, range(0, 6))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in rows] == [(1, 0), (1, 4)]
    row = rows[0]
    assert list(row["grad_norms"]) == ["0", "2", "4", "6"]
    assert all(v > 0 for v in row["grad_norms"].values())
    sites = row["sites"]
    assert [s["site"] for s in sites] == ["1", "3", "5"]
    product = 1.0
    for s in sites:
        product *= s["gain"]
        assert s["gain_product"] == pytest.approx(product)
        assert 0 < s["gain"] <= 0.25  # sigmoid's slope is at most 1/4
        assert s["mean_drift"] >= 0 and s["var_drift"] >= 0
    # hooks exist only during the two recorded steps
    assert not any(m._forward_pre_hooks for _, m in activation_sites(model))


def test_collector_names_repeated_calls_of_one_module(tmp_path):
    act = nn.Tanh()
    model = nn.Sequential(nn.Linear(8, 8), act, nn.Linear(8, 8), act, nn.Linear(8, 3))
    path = tmp_path / "d.jsonl"
    _two_steps(model, Diagnostics(model, path, every=2), range(0, 2))
    (row,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert [s["site"] for s in row["sites"]] == ["1", "1#2"]
