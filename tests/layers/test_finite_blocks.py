"""Every HD-FGD and SA block is finite in every dtype (METHOD.md section 2): a fuzz over
[-1e4, 1e4] of the lifted functions (fused kernel and closure path) and of whole blocks (Linear
and Conv producers), in float32, float16 and bfloat16: outputs, the SA penalty, input gradients
and parameter gradients."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import netadv
import netadv.functional as nf
from netadv.activations.registry import decomposition_names

pytestmark = pytest.mark.usefixtures("one_thread")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ACTS = decomposition_names()  # every built-in decomposition
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=str)
acts = pytest.mark.parametrize("act", ACTS)
sa = pytest.mark.parametrize("sa", [False, True], ids=["hdfgd", "sa"])


def test_every_builtin_decomposition_is_covered():
    assert {"gelu", "gelu_tanh", "silu", "mish", "quick_gelu", "tanh"} <= set(ACTS)


def fuzz_values(dtype: torch.dtype, n_random: int = 96) -> torch.Tensor:
    """+-1e4, +-0, tiny and subnormal values, the points where blocks once overflowed (tanh's
    e^x at 89, fp16 gradients at 34 and 1320), and random points of every magnitude."""
    info = torch.finfo(dtype)
    fixed = [info.tiny, info.tiny * info.eps, 1e-8, 0.5, 1.3, 34.0, 89.0, 1000.0, 1320.0, 1e4]
    gen = torch.Generator().manual_seed(0)
    magnitude = 10 ** (12 * torch.rand(n_random, generator=gen, dtype=torch.float64) - 8)
    sign = torch.randint(0, 2, (n_random,), generator=gen) * 2 - 1
    values = torch.cat([torch.tensor([0.0, -0.0] + fixed + [-v for v in fixed]), sign * magnitude])
    return values.to(dtype)


def _form(act: str, sa: bool, closure: bool) -> nf.LiftedForm:
    form = nf.lifted_form(act, adversarial=sa)
    if closure:  # the same form on the sympy closure path
        form = nf.LiftedForm(form.expr, form.symbols, form.terms)
        form.kernel = None
    return form


def _assert_finite(label, **tensors):
    for name, t in tensors.items():
        assert t is not None and torch.isfinite(t).all(), (label, name, t)


@acts
@sa
@pytest.mark.parametrize("closure", [False, True], ids=["fused", "closure"])
@dtypes
def test_lifted_function_finite_for_every_preactivation(act, sa, closure, dtype):
    """F, the penalty and dL/dz at every pairing of fuzz values over the k terms (the diagonal
    and, by rolling the terms apart, points far off it)."""
    form = _form(act, sa, closure)
    v = fuzz_values(dtype)
    z = torch.stack([v.roll(3 * i) for i in range(form.k)], dim=1)  # [A, k] = term-major
    z = torch.cat([z, v[:, None].expand(-1, form.k)]).unsqueeze(-1)  # and the diagonal
    z = z.reshape(-1, form.k).requires_grad_(True)  # unit-major, one unit per row
    out = nf.lifted(z, form)
    y, p = out if sa else (out, torch.zeros(()))
    assert y.dtype == dtype
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    (gz,) = torch.autograd.grad((y * g).sum() + p, z)
    _assert_finite((act, sa, closure, dtype), y=y, penalty=p, grad=gz)


@functools.cache
def _block(act: str, sa: bool, kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "linear":
        return netadv.hdfgd(nn.Linear(4, 6), act, adversarial=sa)
    return netadv.hdfgd(nn.Conv2d(2, 3, 3, padding=1), act, adversarial=sa)


@acts
@sa
@pytest.mark.parametrize("kind", ["linear", "conv"])
@dtypes
def test_block_finite_for_every_input(act, sa, kind, dtype):
    """Inputs from the fuzz values: output, penalty, input and parameter gradients."""
    block = _block(act, sa, kind).to(dtype)
    v = fuzz_values(dtype)
    per_sample = 4 if kind == "linear" else 2 * 3 * 3
    x = v[: len(v) // per_sample * per_sample].view(-1, *((4,) if kind == "linear" else (2, 3, 3)))
    x = x.clone().requires_grad_(True)
    y = block(x)
    p = netadv.penalty(block) if sa else torch.zeros((), dtype=dtype)
    params = [q for q in block.parameters()]
    grads = torch.autograd.grad(y.sum() + p, [x, *params])
    named = {f"grad {n}": g for (n, _), g in zip(block.named_parameters(), grads[1:])}
    _assert_finite((act, sa, kind, dtype), y=y, penalty=p, input_grad=grads[0], **named)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_block_half_gradients_are_exact_where_representable(dtype):
    """Saturating the producer's gradients changes nothing that fits the dtype: a block in
    half precision gives float32's gradients (rounded) where those fit."""
    block = _block("gelu", True, "linear")
    x32 = torch.randn(16, 4).requires_grad_(True)
    (g32,) = torch.autograd.grad(block.float()(x32).sum(), x32)
    x16 = x32.detach().to(dtype).requires_grad_(True)
    (g16,) = torch.autograd.grad(block.to(dtype)(x16).sum(), x16)
    torch.testing.assert_close(g16.float(), g32, rtol=5e-2, atol=5e-2)


def test_block_half_input_gradient_saturates_instead_of_overflowing():
    """An SA block's input gradient W^T g overflowed float16 to inf (gelu from |x| >= 1320):
    now it saturates at float16's largest value."""
    block = _block("gelu", True, "linear").to(torch.float16)
    x = torch.full((2, 4), 1e4, dtype=torch.float16, requires_grad=True)
    (g,) = torch.autograd.grad(block(x).sum(), x)
    assert torch.isfinite(g).all() and g.abs().max() == torch.finfo(torch.float16).max
