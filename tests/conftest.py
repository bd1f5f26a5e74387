"""Shared cases for the method-core tests: every adversarial pair, with an independent reference.

Each case gives what the user passes to :func:`netadv.adversarial` and, written here without
the registry, the activation ``f`` (torch) and its derivative ``f'`` (numpy, from the table in
METHOD.md section 1), so tests compare the library against formulas it did not produce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import expit
from torch import nn

from netadv.activations import registry

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


@dataclass(frozen=True)
class Case:
    id: str
    arg: Any  # what is passed to netadv.adversarial
    f: Any  # torch reference of f, independent of the registry
    fprime: Any  # numpy reference of f', independent of the registry
    interval: tuple[float, float]  # the stable interval at max_gain=25, solved by hand
    kinks: tuple[float, ...] = ()


INF = math.inf
G = 25.0  # the default max_gain


def sym(c: float) -> tuple[float, float]:
    return (-c, c)


def _elu_prime(alpha, scale=1.0):
    return lambda x: scale * np.where(x >= 0, 1.0, alpha * np.exp(np.minimum(x, 0)))


def _leaky_prime(a):
    return lambda x: np.where(x >= 0, 1.0, a)


def _phi(x):
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def _erf_prime(x):
    return 2 / math.sqrt(math.pi) * np.exp(-x * x)


def _phi_prime(x):
    return np.exp(-x * x / 2) / math.sqrt(2 * math.pi)


CASES = [
    Case("identity", "identity", lambda x: x, np.ones_like, (-INF, INF)),
    Case(
        "sigmoid",
        "sigmoid",
        torch.sigmoid,
        lambda x: expit(x) * expit(-x),
        sym(math.acosh((G - 2) / 2)),  # 2 + 2 cosh(c) = G
    ),
    Case("tanh", "tanh", torch.tanh, lambda x: 1 / np.cosh(x) ** 2, sym(math.acosh(G**0.5))),
    Case(
        "softsign",
        "softsign",
        F.softsign,
        lambda x: 1 / (1 + np.abs(x)) ** 2,
        sym(G**0.5 - 1),
        (0.0,),
    ),
    Case("arctan", "arctan", torch.atan, lambda x: 1 / (1 + x * x), sym((G - 1) ** 0.5)),
    Case("erf", "erf", torch.erf, _erf_prime, sym(math.sqrt(math.log(2 * G / math.sqrt(math.pi))))),
    Case(
        "normal_cdf",
        "normal_cdf",
        _phi,
        _phi_prime,
        sym(math.sqrt(2 * math.log(G / math.sqrt(2 * math.pi)))),
    ),
    Case("softplus", "softplus", F.softplus, expit, (-math.log(G - 1), INF)),
    Case("elu", "elu", F.elu, _elu_prime(1.0), (-math.log(G), INF), (0.0,)),
    Case(
        "selu",
        "selu",
        F.selu,
        _elu_prime(SELU_ALPHA, SELU_SCALE),
        (-math.log(G * SELU_ALPHA * SELU_SCALE), INF),
        (0.0,),
    ),
    # slope 0.01 < 1/G: only x >= 0 is stable
    Case(
        "leaky_relu",
        "leaky_relu",
        lambda x: F.leaky_relu(x, 0.01),
        _leaky_prime(0.01),
        (0.0, INF),
        (0.0,),
    ),
    Case("exp", "exp", torch.exp, np.exp, (-math.log(G), INF)),
    Case(
        "ELU(0.5)",
        nn.ELU(alpha=0.5),
        lambda x: F.elu(x, 0.5),
        _elu_prime(0.5),
        (-math.log(G * 0.5), INF),
        (0.0,),
    ),
    Case(
        "LeakyReLU(0.1)",
        nn.LeakyReLU(0.1),
        lambda x: F.leaky_relu(x, 0.1),
        _leaky_prime(0.1),
        (-INF, INF),
        (0.0,),
    ),
    Case(
        "Softplus(beta=2)",
        nn.Softplus(beta=2),
        lambda x: F.softplus(x, beta=2),
        lambda x: expit(2 * x),
        (-math.log(G - 1) / 2, INF),
    ),
]
CASE_IDS = [c.id for c in CASES]


def _away_from(points, kinks, gap=1e-2):
    return [p for p in points if all(abs(p - k) > gap for k in kinks)]


def inside_points(lo: float, hi: float, kinks=()) -> list[float]:
    """Points strictly inside [lo, hi], away from its edges and the activation's kinks."""
    pts = []
    for side, edge in ((-1.0, lo), (1.0, hi)):
        if math.isinf(edge):
            pts += [side * v for v in (0.1, 0.7, 2.5, 6.0)]
        elif edge != 0:
            pts += [edge * v for v in (0.05, 0.4, 0.8, 0.97)]
    return sorted(_away_from(pts, kinks))


def outside_points(lo: float, hi: float, kinks=()) -> list[float]:
    """Points outside [lo, hi] (on the linear continuation), away from the edges and kinks."""
    pts = []
    if math.isfinite(lo):
        pts += [lo - 0.05, lo - 0.7, lo - 4.0]
    if math.isfinite(hi):
        pts += [hi + 0.05, hi + 0.7, hi + 4.0]
    return sorted(_away_from(pts, kinks))


@pytest.fixture
def restore_registry():
    """Undo register_activation's changes to the global registries after a test."""
    saved_acts = dict(registry._ROWS)
    saved_decs = dict(registry._DECOMPOSITIONS)
    yield
    registry._ROWS.clear()
    registry._ROWS.update(saved_acts)
    registry._DECOMPOSITIONS.clear()
    registry._DECOMPOSITIONS.update(saved_decs)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a loaded machine OpenMP's
    barriers make every small op wait for a descheduled thread (measured: 3x wall time)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
