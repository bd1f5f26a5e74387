"""The MLP of the gradient study, and the cures practitioners already use for its vanishing or
exploding gradient, so that GA can be compared with them (and combined with each).

``MLP(..., depth=12, activation="sigmoid")`` is Flatten, then ``depth`` blocks of Linear +
activation, then a Linear classifier. The cures, each a keyword:

- ``norm="layer"`` / ``"batch"``: LayerNorm / BatchNorm1d after each hidden Linear, before the
  activation;
- ``residual="plain"``: every block after the first adds its input back,
  ``h + act(norm(W h + b))``; ``residual="rezero"``: the same with the branch scaled by a learned
  scalar that starts at 0 (ReZero, Bachlechner et al. 2020);
- ``init``: ``"default"`` (PyTorch's Linear init), ``"xavier"`` (Glorot uniform with the
  activation's ``calculate_gain``), ``"orthogonal"`` (orthogonal with that gain), or
  ``"critical"`` (orthogonal with the gain that puts the network at the edge of chaos: the
  mean-field slope ``chi_1 = sigma_w^2 E[f'(z)^2]`` equals 1 at the fixed point of the
  pre-activation variance, biases 0; Poole et al. 2016, Schoenholz et al. 2017);
- ``transform="dks"``: Deep Kernel Shaping (Martens et al. 2021) through the ``dks`` package's
  PyTorch API: the activation is replaced by its DKS-transformed version for this depth, weights
  are DKS's scaled uniform orthogonal, biases 0, and each input is rescaled to mean square 1.

Every hidden activation stays a module of its own, so GA (``netadv.rewrite(model, "ga")``)
alternates ``f`` and ``A_f`` over any of these as it does over the plain MLP.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq
from torch import Tensor, nn

from netadv.activations.registry import resolve
from netadv.rewrite.modules import Activation, activation_module

INITS = ("default", "xavier", "orthogonal", "critical")
NORMS = (None, "layer", "batch")
RESIDUALS = (None, "plain", "rezero")
TRANSFORMS = (None, "dks")
#: A dense grid for the mean-field expectations over z ~ N(0, 1): Simpson-like accuracy for
#: integrands as narrow as 1/40 (Gauss-Hermite misses the narrow f'(sigma z)^2 at large sigma).
_Z = np.linspace(-10.0, 10.0, 8001)
_W = np.exp(-(_Z**2) / 2) / math.sqrt(2 * math.pi) * (_Z[1] - _Z[0])


class Block(nn.Module):
    """``h + scale * act(norm(linear(h)))`` (residual) or ``act(norm(linear(h)))``."""

    def __init__(self, linear: nn.Linear, norm: nn.Module | None, act: nn.Module, residual):
        super().__init__()
        self.linear, self.norm, self.act = linear, norm if norm is not None else nn.Identity(), act
        self.residual = residual
        if residual == "rezero":
            self.scale = nn.Parameter(torch.zeros(1))

    def extra_repr(self) -> str:
        return f"residual={self.residual}"

    def forward(self, h: Tensor) -> Tensor:
        y = self.act(self.norm(self.linear(h)))
        if self.residual is None:
            return y
        return h + (self.scale * y if self.residual == "rezero" else y)


class MeanSquareNorm(nn.Module):
    """Rescale each example to mean square 1 (the input preprocessing DKS assumes)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True).clamp(min=1e-12))


class MLP(nn.Sequential):
    """Flatten, ``depth`` hidden blocks, a Linear classifier (see the module docstring)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        depth: int = 12,
        width: int = 256,
        activation: Any = "sigmoid",
        init: str = "default",
        norm: str | None = None,
        residual: str | None = None,
        transform: str | None = None,
    ):
        _check(init, norm, residual, transform)
        if transform == "dks":
            activation = dks_activation(activation, depth)
        layers: list[nn.Module] = [nn.Flatten()]
        if transform == "dks":
            layers.append(MeanSquareNorm())
        if norm is None and residual is None:  # the plain MLP: Linear, act, Linear, act, ...
            for i in range(depth):
                layers += [nn.Linear(in_features if i == 0 else width, width)]
                layers += [activation_module(activation)]
        else:
            for i in range(depth):
                linear = nn.Linear(in_features if i == 0 else width, width)
                act = activation_module(activation)
                # the first block changes the width, so it cannot add its input back
                layers.append(Block(linear, _norm(norm, width), act, residual if i else None))
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
        _initialise(self, "dks" if transform == "dks" else init, activation)


def _check(init: str, norm, residual, transform) -> None:
    for key, value, allowed in (
        ("init", init, INITS),
        ("norm", norm, NORMS),
        ("residual", residual, RESIDUALS),
        ("transform", transform, TRANSFORMS),
    ):
        if value not in allowed:
            known = ", ".join(str(a) for a in allowed if a is not None)
            raise ValueError(f"unknown MLP {key} {value!r}; use {known}")
    if transform == "dks" and init != "default":
        raise ValueError("transform=dks brings its own initialisation: leave init at default")


def _norm(kind: str | None, width: int) -> nn.Module | None:
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "batch":
        return nn.BatchNorm1d(width)
    return None


def _initialise(model: nn.Module, init: str, activation: Any) -> None:
    """Weights and biases of every Linear by ``init`` ("default" leaves PyTorch's)."""
    if init == "default":
        return
    gain = critical_gain(activation) if init == "critical" else _torch_gain(activation)
    for layer in model.modules():
        if not isinstance(layer, nn.Linear):
            continue
        if init == "xavier":
            nn.init.xavier_uniform_(layer.weight, gain=gain)
        elif init == "dks":
            from dks.pytorch.parameter_sampling_functions import scaled_uniform_orthogonal_

            scaled_uniform_orthogonal_(layer.weight)
        else:
            nn.init.orthogonal_(layer.weight, gain=gain)
        nn.init.zeros_(layer.bias)


def _torch_gain(activation: Any) -> float:
    """``torch.nn.init.calculate_gain`` of the activation (1 for one torch does not know)."""
    name = activation if isinstance(activation, str) else ""
    try:
        return nn.init.calculate_gain(name)
    except ValueError:
        return 1.0


def _expect(fn, q: float) -> float:
    """``E[fn(sqrt(q) z)]`` for z ~ N(0, 1), by Gauss-Hermite quadrature."""
    x = torch.from_numpy(math.sqrt(q) * _Z)
    return float(np.dot(_W, fn(x).numpy()))


def critical_gain(activation: Any) -> float:
    """The weight scale sigma_w (biases 0) at which an infinitely wide MLP with this activation
    sits at the edge of chaos: ``sigma_w^2 E[f'(sqrt(q*) z)^2] = 1`` where q* is the fixed point
    of the pre-activation second moment ``q = sigma_w^2 E[f(sqrt(q) z)^2]`` (0 for an odd f
    below the transition). For a bounded f only: with an unbounded one (softplus, ELU) the
    second moment has no finite fixed point at zero bias, and this raises ValueError."""
    spec = resolve(activation)
    square = lambda x: spec.fn(x.double()) ** 2
    slope2 = lambda x: spec.deriv(x.double()) ** 2

    def fixed_point(sigma_w: float) -> float:
        excess = lambda q: sigma_w**2 * _expect(square, q) / q - 1.0
        lo, hi = 1e-12, 1e8
        if excess(lo) <= 0:
            return 0.0  # the variance dies out: q* = 0
        if not excess(hi) < 0:
            raise ValueError(
                f"{spec.title}: the pre-activation variance grows without bound at zero bias, "
                "so there is no edge of chaos to initialise at; use init=orthogonal"
            )
        return float(brentq(excess, lo, hi, rtol=1e-12))

    def chi(sigma_w: float) -> float:
        return sigma_w**2 * _expect(slope2, fixed_point(sigma_w)) - 1.0

    return float(brentq(chi, 1e-3, 20.0, xtol=1e-10))


def dks_activation(activation: Any, depth: int) -> nn.Module:
    """The DKS-transformed activation for a plain MLP of ``depth`` hidden layers (the dks
    package's PyTorch API; its subnetwork maximising function composes the activation's local
    C map ``depth`` times, as its documentation prescribes for a stack of dense layers)."""
    try:
        from dks.pytorch.activation_transform import get_transformed_activations
    except ImportError as e:
        raise ValueError(
            f"transform=dks needs the dks package (pip install '.[study]'): {e}"
        ) from None
    name = resolve(activation).name

    def subnet_max_func(x, r_fn):
        for _ in range(depth):
            x = r_fn(x)
        return x

    fns = get_transformed_activations([name], method="DKS", subnet_max_func=subnet_max_func)
    return Activation(fns[name])
