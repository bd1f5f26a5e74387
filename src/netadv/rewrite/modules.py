"""The small modules a rewrite puts into a model besides the adversarial and HD-FGD/SA blocks."""

from __future__ import annotations

import copy
from typing import Any

from torch import Tensor, nn

from netadv.activations.registry import ActivationSpec, register_module_class, resolve


class Folded(nn.Identity):
    """Stands where a layer was whose work now happens inside the HD-FGD/SA block at ``into``
    (the activation, or the normalisation between producer and activation)."""

    def __init__(self, into: str = ""):
        super().__init__()
        self.into = into

    def extra_repr(self) -> str:
        return f"into={self.into}"


class Activation(nn.Module):
    """An element-wise activation by registry name, for names torch.nn has no class for."""

    def __init__(self, f: Any = "sigmoid", *, inplace: bool = False):
        super().__init__()
        self.spec = resolve(f)

    def extra_repr(self) -> str:
        return self.spec.title

    def forward(self, x: Tensor) -> Tensor:
        return self.spec.fn(x)


# so that plans, diagnostics and a second rewrite recognise it as the activation it computes
register_module_class(
    Activation, "identity", lambda m: {"_name": m.spec.name, **dict(m.spec.params)}
)


def _nn_class(spec: ActivationSpec) -> nn.Module | None:
    p = dict(spec.params)
    factories = {
        "identity": lambda: nn.Identity(),
        "sigmoid": lambda: nn.Sigmoid(),
        "tanh": lambda: nn.Tanh(),
        "softsign": lambda: nn.Softsign(),
        "softplus": lambda: nn.Softplus(beta=p.get("beta", 1.0)),
        "elu": lambda: nn.ELU(alpha=p.get("alpha", 1.0)),
        "selu": lambda: nn.SELU(),
        "leaky_relu": lambda: nn.LeakyReLU(p.get("negative_slope", 0.01)),
        "relu": lambda: nn.ReLU(),
        "gelu": lambda: nn.GELU(),
        "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
        "silu": lambda: nn.SiLU(),
        "mish": lambda: nn.Mish(),
    }
    make = factories.get(spec.name)
    return make() if make is not None else None


def activation_module(f: Any) -> nn.Module:
    """A fresh module computing activation ``f``: a copy of ``f`` if it is a module, the torch.nn
    class for a registered name that has one, else :class:`Activation`."""
    if isinstance(f, nn.Module):
        return copy.deepcopy(f)
    spec = resolve(f)
    return _nn_class(spec) or Activation(spec)
