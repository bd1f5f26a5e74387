"""Gradient diagnostics (METHOD.md section 7), opt-in and off the hot path when off.

Every ``every`` training steps, for that step and the next:
- per-layer gradient norms (weights of Linear/Conv layers, in model order);
- per activation site, in execution order: the gain ``E|phi'(z)|`` (for HD-FGD/SA blocks the
  slope along the diagonal, ``E|sum_i dF/dx_i|``) and its running product over depth;
- the pre-activation mean and variance, and their drift between the two consecutive steps
  (the internal covariate shift proxy);
- for adversarial sites, the fraction of pre-activations outside the stable interval.
Hooks are attached only for those two steps, so a run with diagnostics off pays nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from netadv.activations.registry import module_activation_name
from netadv.layers.adversarial import Adversarial
from netadv.layers.hdfgd import HDFGD


def activation_sites(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that are activation sites: HD-FGD/SA blocks, adversarial activations and known
    activation modules (not those inside an HD-FGD/SA block)."""
    sites, inside = [], set()
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if isinstance(m, HDFGD):
            inside.add(name)
            sites.append((name, m))
        elif isinstance(m, Adversarial) or module_activation_name(m) is not None:
            if not isinstance(m, nn.Identity):
                sites.append((name, m))
    return sites


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)
    ]


def site_stats(module: nn.Module, x: Tensor) -> dict:
    """Gain, pre-activation moments and fraction outside the stable interval for one call."""
    outside: list[float] = []
    with torch.enable_grad():
        if isinstance(module, HDFGD):
            with torch.no_grad():
                zs = [z.detach().float().requires_grad_(True) for z in module.preactivations(x)]

            def watch(m):
                def call(t):
                    outside.append(((t < m.lo) | (t > m.hi)).float().mean().item())
                    return m(t)

                return call

            funcs = (
                {n: watch(m) for n, m in module.adversarial.items()}
                if module.adversarial is not None
                else None
            )
            y = module.activation(tuple(zs), funcs)
            grads = torch.autograd.grad(y.sum(), zs)
            slope = sum(grads)
            z = torch.cat([t.detach().flatten() for t in zs])
        else:
            z = x.detach().float().requires_grad_(True)
            # a clone: an in-place activation (ReLU(inplace=True)) may not write to a leaf
            (slope,) = torch.autograd.grad(module(z.clone()).sum(), z)
            if isinstance(module, Adversarial):
                outside.append(((z < module.lo) | (z > module.hi)).float().mean().item())
            z = z.detach()
    return {
        "gain": slope.abs().mean().item(),
        "mean": z.mean().item(),
        "var": z.var().item(),
        "outside": sum(outside) / len(outside) if outside else None,
    }


class Diagnostics:
    """Collects the diagnostics every ``every`` steps and appends rows to a JSONL file."""

    def __init__(self, model: nn.Module, path: Path, every: int = 50):
        self.model, self.path, self.every = model, Path(path), max(2, every)
        self.layers = weight_layers(model)
        self.sites = activation_sites(model)
        self._handles: list = []
        self._calls: list[tuple[str, Tensor]] = []
        self._first: dict | None = None

    def _active(self, step: int) -> bool:
        return step % self.every in (0, 1)

    def before_step(self, step: int) -> None:
        if not self._active(step):
            return
        self._calls = []
        counts: dict[str, int] = {}

        def hook(name):
            def pre(module, args):
                counts[name] = counts.get(name, 0) + 1
                label = name if counts[name] == 1 else f"{name}#{counts[name]}"
                self._calls.append((label, module, args[0].detach().clone()))

            return pre

        self._handles = [m.register_forward_pre_hook(hook(n)) for n, m in self.sites]

    def after_backward(self, step: int, epoch: int) -> dict | None:
        """Collect this step's part; returns the row when it completes one (and wrote it)."""
        if not self._active(step):
            return None
        for h in self._handles:
            h.remove()
        self._handles = []
        sites, product = [], 1.0
        for label, module, x in self._calls:
            stats = site_stats(module, x)
            product *= stats["gain"]
            sites.append({"site": label, **stats, "gain_product": product})
        self._calls = []
        if step % self.every == 0:
            grads = {
                n: m.weight.grad.norm().item() for n, m in self.layers if m.weight.grad is not None
            }
            self._first = {"epoch": epoch, "step": step, "grad_norms": grads, "sites": sites}
            return None
        if self._first is None:
            return None
        row = self._first
        after = {s["site"]: s for s in sites}
        for s in row["sites"]:
            nxt = after.get(s["site"])
            s["mean_drift"] = abs(nxt["mean"] - s["mean"]) if nxt else None
            s["var_drift"] = abs(nxt["var"] - s["var"]) if nxt else None
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        self._first = None
        return row
