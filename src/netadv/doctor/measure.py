"""One measured forward and backward pass at the model's current weights.

Per activation site (named as :func:`netadv.plan` names it, in forward order): the gain
``E|phi'(z)|`` on these inputs, the fraction of pre-activations that are saturated or dead, the
pre-activation range and percentiles, and the fraction outside the stable interval of the site's
adversarial where one exists. Per weight layer, in the order the forward pass calls them (input
side first): the norm of its weight's gradient. The pass runs on a deep copy in training mode, so
the user's model (weights, gradients, BatchNorm statistics) is untouched.

"Saturated or dead": ``|phi'(z)| < SATURATION * max|phi'|``, the largest slope of the site's own
module over [-50, 50] (sigmoid: 0.25, tanh: 1). For ReLU that is ``z <= 0`` (dead); for sigmoid
and tanh, the tails. ``stuck_units`` is the fraction of units (every position of a sample) that
are saturated or dead on every sample of the batch.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from netadv.activations.kernel import stable_interval
from netadv.defaults import MAX_GAIN
from netadv.diagnostics import activation_sites, weight_layers
from netadv.diagnostics import site_stats as diagnostic_stats
from netadv.doctor.inputs import checked_loss, default_loss, run_model, surrogate_target
from netadv.layers.hdfgd import HDFGD
from netadv.rewrite.site import Site

#: A pre-activation is saturated (or dead) where |phi'(z)| < SATURATION * max|phi'|.
SATURATION = 0.1
#: At most this many values of a site enter its percentiles (a strided sample beyond it).
SAMPLE = 1_000_000
QUANTILES = (0.01, 0.5, 0.99)


@dataclass
class Measurement:
    sites: list[dict[str, Any]]  # one row per site, forward order
    layers: list[dict[str, Any]]  # {"layer", "norm"}, input side first
    loss: str  # which loss the gradients are of
    loss_value: float

    @property
    def ratio(self) -> float | None:
        """Input-side over output-side gradient norm (None when either is missing or 0)."""
        norms = [r["norm"] for r in self.layers if r["norm"] is not None]
        if len(norms) < 2 or norms[-1] == 0 or not math.isfinite(norms[-1]):
            return None
        return norms[0] / norms[-1]

    @property
    def finite(self) -> bool:
        return all(r["norm"] is None or math.isfinite(r["norm"]) for r in self.layers)

    @property
    def gain_product(self) -> float | None:
        gains = [r["gain"] for r in self.sites if r.get("gain") is not None]
        return math.prod(gains) if gains else None


def measure(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None,
    loss_fn: Callable | None,
    loss_name: str,
    sites: list[Site] | None = None,
) -> Measurement:
    """Statistics of ``sites`` (a plan's; None: every activation module of a rewritten model)
    and gradient norms, from one pass on ``x`` with ``loss_fn(out, y)`` (a surrogate loss when
    ``y`` is None, see :func:`~netadv.doctor.inputs.surrogate_target`)."""
    work = copy.deepcopy(model).train()
    watch = _PlanSites(work, sites) if sites is not None else _ModuleSites(work)
    order = _LayerOrder(work)
    with torch.enable_grad(), watch, order:
        out = run_model(work, x)
    if y is None:
        loss_fn, y, loss_name = surrogate_target(out)
    with torch.enable_grad():
        loss = checked_loss(loss_fn or default_loss, out, y)
        work.zero_grad(set_to_none=True)
        loss.backward()
    layers = [{"layer": n, "type": m._get_name(), "norm": _grad_norm(m)} for n, m in order.layers]
    return Measurement(watch.rows(), layers, loss_name, loss.item())


def _grad_norm(m: nn.Module) -> float | None:
    w = m.producer.weight if isinstance(m, HDFGD) else m.weight
    return None if w.grad is None else w.grad.float().norm().item()


# ---- hooks --------------------------------------------------------------------------------------


class _Hooks:
    """Hooks attached for one pass; a site's statistics run its module again, so the hooks
    ignore calls made while one is busy."""

    def __init__(self):
        self.handles: list = []
        self.busy = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []


class _LayerOrder(_Hooks):
    """Weight layers (Linear, Conv, HD-FGD/SA blocks) in the order the forward pass calls them."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.layers: list[tuple[str, nn.Module]] = []
        blocks = [n for n, m in model.named_modules() if isinstance(m, HDFGD)]
        candidates = weight_layers(model) + [(n, model.get_submodule(n)) for n in blocks]
        for name, m in candidates:
            if any(name.startswith(b + ".") for b in blocks):
                continue  # a block's own producer: the block stands for it
            self.handles.append(m.register_forward_pre_hook(self._seen(name, m)))

    def _seen(self, name: str, m: nn.Module):
        def hook(module, args):
            if all(n != name for n, _ in self.layers):
                self.layers.append((name, m))

        return hook


class _PlanSites(_Hooks):
    """The module sites of a plan, each call measured as it happens; functional sites are
    listed without statistics."""

    def __init__(self, model: nn.Module, sites: list[Site]):
        super().__init__()
        self.sites, self.stats = sites, {}
        self.calls: dict[int, int] = {}
        for s in sites:
            if s.kind == "module" and s.call == 0:
                m = model.get_submodule(s.path)
                self.handles.append(m.register_forward_pre_hook(self._hook(s.path, m)))

    def _hook(self, path: str, m: nn.Module):
        def hook(module, args):
            if self.busy or not args or not isinstance(args[0], Tensor):
                return
            call = self.calls[id(m)] = self.calls.get(id(m), -1) + 1
            self.busy = True
            try:
                self.stats[(path, call)] = site_stats(module, args[0])
            finally:
                self.busy = False

        return hook

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for s in self.sites:
            row = {"index": s.index, "name": s.name, "activation": s.activation, "kind": s.kind}
            stats = self.stats.get((s.path, s.call)) if s.kind == "module" else None
            if stats is None:
                why = "functional call" if s.kind == "function" else "not called in training mode"
                row["note"] = f"{why}: no statistics"
            out.append({**row, **(stats or {})})
        return out


class _ModuleSites(_Hooks):
    """Every activation module of a (rewritten) model: the gain of each call, in call order."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.found: list[dict[str, Any]] = []
        for name, m in activation_sites(model):
            self.handles.append(m.register_forward_pre_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module, args):
            if self.busy:
                return
            self.busy = True
            try:
                gain = diagnostic_stats(module, args[0])["gain"]
            finally:
                self.busy = False
            row = {"index": len(self.found), "name": name, "activation": module._get_name()}
            self.found.append({**row, "gain": gain})

        return hook

    def rows(self) -> list[dict[str, Any]]:
        return self.found


# ---- one site's statistics ----------------------------------------------------------------------


def site_stats(module: nn.Module, x: Tensor) -> dict[str, Any]:
    """Gain, saturated/dead fractions, range and stable interval of one call on input ``x``."""
    z = x.detach()
    with torch.enable_grad():
        leaf = z.clone().requires_grad_(True)
        # a clone: an in-place activation (ReLU(inplace=True)) may not write to a leaf
        (slope,) = torch.autograd.grad(module(leaf.clone()).sum(), leaf)
    slope, z = slope.abs().float(), z.float()
    low = slope < SATURATION * _peak_slope(module, x, slope)
    stuck = low.flatten(1).all(dim=0).float().mean().item() if z.dim() >= 2 else None
    flat = z.flatten()
    sample = flat[:: max(1, math.ceil(flat.numel() / SAMPLE))]
    q = torch.quantile(sample, torch.tensor(QUANTILES, device=sample.device)).tolist()
    row = {
        "gain": slope.mean().item(),
        "saturated": low.float().mean().item(),
        "stuck_units": stuck,
        "min": flat.min().item(),
        **{f"p{round(100 * p):02d}": v for p, v in zip(QUANTILES, q)},
        "max": flat.max().item(),
    }
    return {**row, **_against_interval(module, flat)}


def _peak_slope(module: nn.Module, like: Tensor, observed: Tensor) -> float:
    """The module's largest slope over [-50, 50] (the observed one if it cannot run on a grid)."""
    grid = torch.linspace(-50, 50, 20001, device=like.device, dtype=like.dtype)
    try:
        with torch.enable_grad():
            leaf = grid.requires_grad_(True)
            (g,) = torch.autograd.grad(module(leaf.clone()).sum(), leaf)
        return g.abs().max().item()
    except (RuntimeError, ValueError, TypeError):
        return observed.max().item()


def _against_interval(module: nn.Module, z: Tensor) -> dict[str, Any]:
    """The stable interval of the module's adversarial and the fraction of ``z`` outside it
    (None for both where the activation has no adversarial)."""
    try:
        lo, hi = stable_interval(module, MAX_GAIN)
    except (ValueError, TypeError):  # NoAdversarialError and ConfigError are ValueErrors
        return {"interval": None, "outside": None}
    outside = ((z < lo) | (z > hi)).float().mean().item()
    return {"interval": [lo, hi], "outside": outside}
