"""Every adversarial pair is finite in every dtype (METHOD.md section 2): a fuzz over [-1e4, 1e4].

Every registered activation that has an adversarial (and the parameterised cases of conftest),
with both anchors, in float32, float16 and bfloat16 (half types are computed in float32 and
saturated): outputs and input gradients are finite at the extremes, at +-0, at tiny and
subnormal values, at the points where earlier versions overflowed, and at random points.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import netadv
from conftest import CASES
from netadv.activations import registry
from netadv.errors import NoAdversarialError

pytestmark = pytest.mark.usefixtures("one_thread")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=str)


def _pairs() -> dict[str, torch.nn.Module]:
    """Every pair netadv has, by a readable id: all registered names and conftest's cases."""
    args = {name: name for name in registry.names()}
    args.update({c.id: c.arg for c in CASES})
    out = {}
    for label, arg in args.items():
        for anchor in ("f0", "zero"):
            try:
                out[f"{label}/{anchor}"] = netadv.adversarial(arg, anchor=anchor)
            except NoAdversarialError:
                continue
    return out


PAIRS = _pairs()


def special_values(dtype: torch.dtype) -> list[float]:
    """The extremes of the fuzz range, +-0, the dtype's tiny and subnormal values, and the
    points where some function once overflowed (exp at 89, fp16 products at 34 and 1320)."""
    info = torch.finfo(dtype)
    small = [info.tiny, info.tiny * info.eps, 1e-30, 1e-8, 1e-3]
    large = [1.0, 2.5, 34.0, 89.0, 100.0, 1000.0, 1320.0, 1e4]
    return [0.0, -0.0] + [s * v for v in small + large for s in (1.0, -1.0)]


def test_every_pair_with_an_adversarial_is_covered():
    names = {label.split("/")[0] for label in PAIRS}
    assert {"sigmoid", "tanh", "softplus", "elu", "leaky_relu", "exp", "identity"} <= names
    assert "gelu" not in names and "relu" not in names  # no adversarial: refused, not fuzzed
    assert sum(label.endswith("/zero") for label in PAIRS) == len(PAIRS) // 2


def _check_finite(values: list[float], dtype: torch.dtype) -> None:
    x = torch.tensor(values, dtype=dtype).requires_grad_(True)
    for label, pair in PAIRS.items():
        y = pair(x)
        assert y.dtype == dtype and y.shape == x.shape
        (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
        assert torch.isfinite(y).all(), (label, dtype, values, y)
        assert torch.isfinite(g).all(), (label, dtype, values, g)


@dtypes
def test_pairs_finite_at_special_values(dtype):
    _check_finite(special_values(dtype), dtype)


@dtypes
@settings(max_examples=25, deadline=None)
@given(values=st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=16))
def test_pairs_finite_at_random_values(dtype, values):
    _check_finite(values, dtype)
