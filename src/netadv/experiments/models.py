"""Models for experiments."""

from __future__ import annotations

from typing import Any

from torch import nn

from netadv.activations.registry import resolve


def activation_module(activation: Any) -> nn.Module:
    """A fresh module computing ``activation`` (a registry name or a module/class)."""
    if isinstance(activation, nn.Module):
        return activation
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation()
    spec = resolve(activation)
    if spec.name in _MODULES and not spec.params:
        return _MODULES[spec.name]()
    return _Elementwise(spec.fn, spec.title)


_MODULES = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "softsign": nn.Softsign,
    "identity": nn.Identity,
}


class _Elementwise(nn.Module):
    def __init__(self, fn, name: str):
        super().__init__()
        self.fn, self.name = fn, name

    def extra_repr(self) -> str:
        return self.name

    def forward(self, x):
        return self.fn(x)


class MLP(nn.Sequential):
    """Flatten, then ``depth`` blocks of Linear + activation, then a Linear classifier."""

    def __init__(self, in_features: int, num_classes: int, *, depth: int = 12, width: int = 256,
                 activation: Any = "sigmoid"):
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers += [nn.Linear(in_features if i == 0 else width, width),
                       activation_module(activation)]
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
