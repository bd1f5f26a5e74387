"""The method on a GPU (skipped without CUDA): benchmarks/gpu_check.sh runs these on a lent
machine. Every pair and block on CUDA against the same math on the CPU, the fused (Triton) path
against eager in fp32/bf16/fp16, and a rewritten model's training step with mixed precision."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import netadv
from netadv import fused
from netadv.activations import registry
from netadv.errors import NoAdversarialError

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = torch.device("cuda")


def _pairs() -> list[str]:
    out = []
    for name in registry.names():
        try:
            netadv.stable_interval(name)
        except NoAdversarialError:
            continue
        out.append(name)
    return out


@pytest.mark.parametrize("name", _pairs())
def test_adversarial_on_cuda_equals_cpu(name):
    a = netadv.adversarial(name)
    x = torch.linspace(-40, 40, 4097, dtype=torch.float64)
    with fused.use_backend("eager"):
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
            xc = x.to(dtype).requires_grad_(True)
            xg = x.to(CUDA, dtype).requires_grad_(True)
            yc, yg = a(xc), a(xg)
            (gc,) = torch.autograd.grad(yc.sum(), xc)
            (gg,) = torch.autograd.grad(yg.sum(), xg)
            assert torch.allclose(yg.cpu(), yc, rtol=tol, atol=tol)
            assert torch.allclose(gg.cpu(), gc, rtol=tol, atol=tol)


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "silu", "mish", "tanh"])
@pytest.mark.parametrize("sa", [False, True])
def test_blocks_on_cuda_equal_cpu(act, sa):
    torch.manual_seed(0)
    block = netadv.hdfgd(nn.Linear(16, 32), act, consumer=nn.Linear(32, 8), adversarial=sa)
    x = torch.randn(64, 16)
    with fused.use_backend("eager"):
        y_cpu = block(x)
        y_gpu = block.to(CUDA)(x.to(CUDA))
    assert torch.allclose(y_gpu.cpu(), y_cpu, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("sa", [False, True])
def test_triton_path_equals_eager(dtype, sa):
    torch.manual_seed(0)
    block = netadv.hdfgd(nn.Linear(64, 256), "gelu", adversarial=sa).to(CUDA, dtype)
    x = torch.randn(4096, 64, device=CUDA, dtype=dtype, requires_grad=True)
    outs = {}
    for backend in ("eager", "compile"):
        block.backend = backend
        y = block(x)
        (g,) = torch.autograd.grad(y.float().square().mean(), x)
        outs[backend] = (y.float(), g.float())
        assert torch.isfinite(y).all() and torch.isfinite(g).all()
    assert block.form.kernel.forward.last == "compile"  # Triton ran, no fallback
    tol = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 3e-3}[dtype]
    for e, c in zip(outs["eager"], outs["compile"]):
        assert torch.allclose(c, e, atol=tol, rtol=tol)


@pytest.mark.parametrize("method", ["ga", "hdfgd", "sa"])
def test_rewritten_vit_trains_with_amp(method):
    from netadv.experiments.models import build_model

    torch.manual_seed(0)
    model = build_model("vit", in_chans=3, num_classes=10, image_size=32, embed_dim=64,
                        depth=2, num_heads=2)  # fmt: skip
    x = torch.randn(32, 3, 32, 32)
    kw = {"activation": "tanh"} if method == "ga" else {}
    model = netadv.rewrite(model, method, example_inputs=(x[:2],), **kw).to(CUDA)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    xb, yb = x.to(CUDA), torch.randint(0, 10, (32,), device=CUDA)
    losses = []
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(xb).float(), yb) + netadv.penalty(model)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
