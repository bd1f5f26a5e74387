"""The suites on single layers: P1 (each activation's forward+backward time), P2 (bytes saved
for backward per site) and P3 (HD-FGD and SA blocks against a hand-written GEGLU)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import netadv
from netadv import fused
from netadv.activations.registry import ActivationSpec, resolve
from netadv.bench.timing import BenchConfig, Table, backends, measure, timing_cells
from netadv.layers.adversarial import Adversarial

# --- P1: activations ------------------------------------------------------------------------

P1_ADVERSARIAL = (
    "sigmoid",
    "tanh",
    "softsign",
    "arctan",
    "erf",
    "normal_cdf",
    "softplus",
    "elu",
    "leaky_relu(0.1)",
    "exp",
)


def _fwd_bwd(fn: Callable[[Tensor], Tensor], x: Tensor, grad: Tensor) -> Callable[[], None]:
    def step():
        x.grad = None
        fn(x).backward(grad)

    return step


def generic_sigmoid() -> nn.Module:
    """The generic (knot table) construction for sigmoid: its registry derivative, no closed
    form, so every call goes through the table."""
    base = resolve("sigmoid")
    spec = ActivationSpec("sigmoid_generic", base.fn, base.derivative)
    return Adversarial(spec)


def _dtypes(cfg: BenchConfig) -> list[torch.dtype]:
    if cfg.quick:
        return [torch.float32]
    out = [torch.float32, torch.bfloat16]
    if torch.device(cfg.device).type == "cuda" or _cpu_half_ok():
        out.append(torch.float16)
    return out


def _cpu_half_ok() -> bool:
    try:
        x = torch.ones(4, dtype=torch.float16, requires_grad=True)
        F.gelu(x).sum().backward()
        return True
    except RuntimeError:
        return False


def suite_p1(cfg: BenchConfig) -> list[Table]:
    n = (1 << 18) if cfg.quick else (1 << 22)
    tables = []
    modules = {name: netadv.adversarial(name) for name in P1_ADVERSARIAL}
    modules["generic (sigmoid)"] = generic_sigmoid()
    for dtype in _dtypes(cfg):
        for backend in backends(cfg):
            gen = torch.Generator(device=cfg.device).manual_seed(0)
            x = (2 * torch.randn(n, generator=gen, device=cfg.device)).to(dtype)
            x.requires_grad_(True)
            grad = torch.randn(n, generator=gen, device=cfg.device).to(dtype)
            cases = {"F.gelu (native)": _fwd_bwd(F.gelu, x, grad)}
            cases["F.silu (native)"] = _fwd_bwd(F.silu, x, grad)
            for name, m in modules.items():
                cases[f"A[{name}]"] = _fwd_bwd(m, x, grad)
            with fused.use_backend(backend):
                res = measure(cases, "F.gelu (native)", repeats=cfg.reps, device=cfg.device)
            silu = res["F.silu (native)"].median_ms
            table = Table(
                "P1",
                f"fwd+bwd of {n} {str(dtype)[6:]} elements, backend={backend}",
                ["case", "median ms", "min-max ms", "vs gelu", "(min)", "vs silu", "first call ms"],
            )
            for name, t in res.items():
                table.rows.append([name, *timing_cells(t), t.median_ms / silu, t.first_ms])
            target = 1.2 if backend == "compile" else 3.0
            worst = max(t.ratio for name, t in res.items() if name.startswith("A["))
            table.notes.append(
                f"target: <= {target} x F.gelu ({backend}); worst adversarial here: {worst:.3g}"
            )
            tables.append(table)
    return tables


# --- P2: bytes saved for backward -----------------------------------------------------------


class _Held:
    def __init__(self, t: Tensor):
        self.t = t
        self.nbytes = t.numel() * t.element_size()


def saved_bytes(fn: Callable[[Tensor], Any], x: Tensor) -> int:
    """Bytes of the tensors autograd still holds for backward once ``fn(x)`` has returned."""
    packed: list[weakref.ref] = []

    def pack(t):
        h = _Held(t)
        packed.append(weakref.ref(h))
        return h

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda h: h.t):
        out = fn(x)
    gc.collect()
    held = sum(r().nbytes for r in packed if r() is not None)
    del out
    return held


def geglu(z: Tensor) -> Tensor:
    """GEGLU's element-wise part: the two halves of one wide projection, x1 * gelu(x2)."""
    x1, x2 = z.chunk(2, dim=-1)
    return x1 * F.gelu(x2)


def suite_p2(cfg: BenchConfig) -> list[Table]:
    rows = []
    dev = cfg.device

    def add(name: str, fn, x: Tensor, note: str = "") -> None:
        x = x.detach().requires_grad_(True)
        held = saved_bytes(fn, x)
        rows.append([name, str(x.dtype)[6:], x.numel() * x.element_size(), held, None, note])
        rows[-1][4] = held / rows[-1][2]

    x = torch.randn(64, 257, device=dev)
    add("F.gelu (native)", F.gelu, x, "reference")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        add("A[sigmoid]", netadv.adversarial("sigmoid"), x.to(dtype))
    add("A[normal_cdf]", netadv.adversarial("normal_cdf"), x)
    add("A[elu]", netadv.adversarial("elu"), x)
    add("generic (sigmoid)", generic_sigmoid().to(dev), x)
    z = torch.randn(64, 2 * 96, device=dev)
    add("GEGLU x1*gelu(x2)", geglu, z, "reference (hand-written)")
    for act, k in (("gelu", 2), ("silu", 2), ("mish", 2), ("gelu_tanh", 3), ("tanh", 4)):
        for sa in (False, True):
            block = netadv.hdfgd(nn.Linear(8, 96), act, adversarial=sa).to(dev)
            zk = torch.randn(64, k * 96, device=dev)
            add(f"{'SA' if sa else 'HD-FGD'} {act}", block.activate, zk, "F(z), z = wide input")
    conv = netadv.hdfgd(nn.Conv2d(3, 8, 3), "silu", norm=nn.BatchNorm2d(8), adversarial=True)
    add("SA silu (conv)", conv.to(dev).activate, torch.randn(4, 16, 6, 6, device=dev))
    table = Table(
        "P2",
        "bytes autograd holds for backward per site / the input's bytes",
        ["site", "dtype", "input bytes", "saved bytes", "ratio", "note"],
        rows,
    )
    worst = max(r[4] for r in rows if not r[5].startswith("reference"))
    table.notes.append(f"target: == 1.0 for every netadv site; worst here: {worst:.3g}")
    return [table]


# --- P3: HD-FGD / SA block vs GEGLU ---------------------------------------------------------


class GEGLU(nn.Module):
    """Hand-written GEGLU MLP: one Linear to 2h, chunk, x1 * gelu(x2), Linear back."""

    def __init__(self, d: int, h: int):
        super().__init__()
        self.fc1 = nn.Linear(d, 2 * h)
        self.fc2 = nn.Linear(h, d)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(geglu(self.fc1(x)))


def _mlp(d: int, h: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, h), nn.GELU(), nn.Linear(h, d))


def _train_step(model: nn.Module, x: Tensor, grad: Tensor) -> Callable[[], None]:
    params = list(model.parameters())

    def step():
        for p in params:
            p.grad = None
        model(x).backward(grad)

    return step


def suite_p3(cfg: BenchConfig) -> list[Table]:
    tokens, d, h = (512, 64, 256) if cfg.quick else (4096, 384, 1536)
    dev = cfg.device
    torch.manual_seed(0)
    x = torch.randn(tokens, d, device=dev)
    grad = torch.randn(tokens, d, device=dev)
    mlp = _mlp(d, h).to(dev)
    models = {
        "GEGLU (hand-written)": GEGLU(d, h).to(dev),
        "HD-FGD gelu": netadv.hdfgd(mlp[0], "gelu", consumer=mlp[2]).to(dev),
        "SA gelu": netadv.hdfgd(mlp[0], "gelu", consumer=mlp[2], adversarial=True).to(dev),
        "MLP Linear-GELU-Linear (h)": mlp,
    }
    tables = []
    for backend in backends(cfg):
        cases = {name: _train_step(m, x, grad) for name, m in models.items()}
        with fused.use_backend(backend):
            res = measure(cases, "GEGLU (hand-written)", repeats=cfg.reps, device=dev)
        table = Table(
            "P3",
            f"block fwd+bwd, {tokens} tokens, d={d}, h={h}, backend={backend}",
            ["block", "median ms", "min-max ms", "vs GEGLU", "(min)", "params"],
        )
        for name, t in res.items():
            n_params = sum(p.numel() for p in models[name].parameters())
            table.rows.append([name, *timing_cells(t), n_params])
        worst = max(res["HD-FGD gelu"].ratio, res["SA gelu"].ratio)
        table.notes.append(f"target: HD-FGD and SA <= 1.05 x GEGLU; worst here: {worst:.3g}")
        tables.append(table)
    return tables
