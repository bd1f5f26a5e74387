"""The small modules a rewrite puts into a model besides the adversarial and HD-FGD/SA blocks."""

from __future__ import annotations

import copy
from typing import Any

from torch import Tensor, nn

from netadv.activations.builtins import BUILTINS
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


def _activation_params(m: Activation) -> dict:
    """Its name for recognition, and its spec itself (which may be a callable the registry
    does not know by that name: a DKS-transformed activation, say)."""
    return {"_name": m.spec.name, "_spec": m.spec}


# so that plans, diagnostics and a second rewrite recognise it as the activation it computes
register_module_class(Activation, "identity", _activation_params)

#: Built-in activations that torch.nn has a class for, by name.
_NN_ROWS = {row.name: row for row in BUILTINS if row.nn_factory is not None}


def _nn_module(spec: ActivationSpec) -> nn.Module | None:
    """A fresh torch.nn module computing ``spec``, if torch.nn has a class for it."""
    row = _NN_ROWS.get(spec.name)
    if row is None:
        return None
    return row.nn_factory(**{**row.defaults(), **dict(spec.params)})


def activation_module(f: Any) -> nn.Module:
    """A fresh module computing activation ``f``: a copy of ``f`` if it is a module, the torch.nn
    class for a registered name that has one, else :class:`Activation`."""
    if isinstance(f, nn.Module):
        return copy.deepcopy(f)
    spec = resolve(f)
    return _nn_module(spec) or Activation(spec)
