"""Speed and memory benchmarks: every netadv layer side by side with native PyTorch.

Suites (``netadv bench --suite P1,P2,P3,P4,P6 [--quick]``; docs/PERFORMANCE.md has the numbers):

- P1: forward+backward time of each adversarial activation, and of the generic (knot table)
  construction, against native ``F.gelu`` and ``F.silu``, per dtype and backend.
- P2: bytes saved for backward per adversarial / HD-FGD / SA site, over the input's bytes.
- P3: HD-FGD and SA GELU blocks against a hand-written GEGLU of the same shape.
- P4: a training step and inference latency (batch 1 and 256) of GA-, HD-FGD- and
  SA-rewritten ViT and ResNet against their baselines, with FLOPs and parameters.
- P6: plan + rewrite time for Swin-T and a 48-layer ViT.

Timing: every case of a table runs once per round, in an order rotated each round, after warm-up
rounds; a case's ratio is the median over rounds of its time divided by the reference's time in
the same round, so load from other processes, which drifts over seconds, cancels out of ratios.
Tables show the median time, its min-max over rounds, and that ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netadv import fused

SUITES = ("P1", "P2", "P3", "P4", "P6")


# --- tables ---------------------------------------------------------------------------------


@dataclass
class Table:
    """One printed table: a title, column names and rows of cells, and notes under it."""

    suite: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        cells = [[_cell(c) for c in row] for row in self.rows]
        widths = [
            max(len(str(x)) for x in [name] + [r[i] for r in cells])
            for i, name in enumerate(self.columns)
        ]
        line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
        out = [f"{self.suite}: {self.title}", line(self.columns)]
        out.append(line(["-" * w for w in widths]))
        out += [line(r) for r in cells]
        out += [f"  {n}" for n in self.notes]
        return "\n".join(out)

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "-" if v is None else str(v)


# --- timing ---------------------------------------------------------------------------------


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float
    ratio: float  # median over rounds of time / reference time in the same round
    first_ms: float  # the first call (includes one-time work such as compiling)
    min_ratio: float = math.nan  # min time / the reference's min time


#: "wall" (time.perf_counter) or "cpu" (time.process_time: CPU seconds of this process, all
#: threads; on a machine shared with other jobs it leaves out time spent descheduled).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def set_clock(name: str) -> None:
    global _clock
    if name not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {name!r}")
    _clock = CLOCKS[name]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    cases: dict[str, Callable[[], Any]],
    reference: str,
    *,
    repeats: int,
    warmup: int = 2,
    device: torch.device | str = "cpu",
) -> dict[str, Timing]:
    """Time each case ``repeats`` times in rotated rounds; ratios are against ``reference``."""
    device = torch.device(device)
    names = list(cases)
    first: dict[str, float] = {}
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            _sync(device)
            t0 = _clock()
            cases[name]()
            _sync(device)
            dt = _clock() - t0
            first.setdefault(name, dt)
            if r >= warmup:
                times[name].append(dt)
    ref = times[reference]
    out = {}
    for name in names:
        ts = times[name]
        ratios = [t / max(q, 1e-12) for t, q in zip(ts, ref)]
        out[name] = Timing(
            1e3 * statistics.median(ts),
            1e3 * min(ts),
            1e3 * max(ts),
            statistics.median(ratios),
            1e3 * first[name],
            min(ts) / max(min(ref), 1e-12),
        )
    return out


def _timing_cells(t: Timing) -> list[Any]:
    return [t.median_ms, f"{_cell(t.min_ms)}-{_cell(t.max_ms)}", t.ratio, t.min_ratio]


def _fwd_bwd(fn: Callable[[Tensor], Tensor], x: Tensor, grad: Tensor) -> Callable[[], None]:
    def step():
        x.grad = None
        fn(x).backward(grad)

    return step


@dataclass
class BenchConfig:
    quick: bool = False
    device: str = "cpu"
    backends: tuple[str, ...] = ("eager", "compile")
    repeats: int | None = None

    @property
    def reps(self) -> int:
        return self.repeats or (5 if self.quick else 15)


def _backends(cfg: BenchConfig) -> list[str]:
    """The backends to run: compile only where a compiler is present."""
    out = []
    for b in cfg.backends:
        if b == "compile" and not fused.compiler_available(torch.device(cfg.device).type):
            continue
        out.append(b)
    return out


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


def generic_sigmoid() -> nn.Module:
    """The generic (knot table) construction for sigmoid: its registry derivative, no closed
    form, so every call goes through the table."""
    from netadv.activations.registry import ActivationSpec, resolve
    from netadv.layers.adversarial import Adversarial

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
    import netadv

    n = (1 << 18) if cfg.quick else (1 << 22)
    tables = []
    modules = {name: netadv.adversarial(name) for name in P1_ADVERSARIAL}
    modules["generic (sigmoid)"] = generic_sigmoid()
    for dtype in _dtypes(cfg):
        for backend in _backends(cfg):
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
                table.rows.append([name, *_timing_cells(t), t.median_ms / silu, t.first_ms])
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
    import netadv

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
    import netadv

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
    for backend in _backends(cfg):
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
            table.rows.append([name, *_timing_cells(t), n_params])
        worst = max(res["HD-FGD gelu"].ratio, res["SA gelu"].ratio)
        table.notes.append(f"target: HD-FGD and SA <= 1.05 x GEGLU; worst here: {worst:.3g}")
        tables.append(table)
    return tables


# --- P4: rewritten models -------------------------------------------------------------------


def _flops(model: nn.Module, x: Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def _models(cfg: BenchConfig) -> dict[str, tuple[Callable[[], nn.Module], str, str]]:
    """name -> (builder, activation for the HD-FGD/SA arms, activation for the GA arms)."""
    from netadv.experiments.models import resnet18, vit

    if cfg.quick:
        return {
            "ViT": (lambda: vit(3, 10, 32, embed_dim=32, depth=2, num_heads=2), "gelu", "sigmoid"),
            "ResNet": (lambda: resnet18(3, 10, width=4), "silu", "sigmoid"),
        }
    return {
        "ViT": (lambda: vit(3, 10, 32, embed_dim=192, depth=6, num_heads=3), "gelu", "sigmoid"),
        "ResNet": (lambda: resnet18(3, 10, width=16), "silu", "sigmoid"),
    }


def _arms(build, act: str, ga_act: str, example) -> dict[str, tuple[nn.Module, str]]:
    """Each arm and the baseline it is compared with."""
    import netadv

    base = build()
    base_ga = netadv.rewrite(base, "replace", activation=ga_act, example_inputs=example)
    kw = dict(activation=act, example_inputs=example)
    mp = dict(match_params=True, init="fresh")
    return {
        f"baseline ({act})": (base, f"baseline ({act})"),
        "HD-FGD": (netadv.rewrite(base, "hdfgd", **kw), f"baseline ({act})"),
        "SA": (netadv.rewrite(base, "sa", **kw), f"baseline ({act})"),
        "HD-FGD match_params": (netadv.rewrite(base, "hdfgd", **kw, **mp), f"baseline ({act})"),
        "SA match_params": (netadv.rewrite(base, "sa", **kw, **mp), f"baseline ({act})"),
        f"baseline ({ga_act})": (base_ga, f"baseline ({ga_act})"),
        f"GA ({ga_act})": (
            netadv.rewrite(base, "ga", activation=ga_act, example_inputs=example),
            f"baseline ({ga_act})",
        ),
    }


def suite_p4(cfg: BenchConfig) -> list[Table]:
    dev = cfg.device
    train_batch, big = (8, 16) if cfg.quick else (32, 256)
    tables = []
    for model_name, (build, act, ga_act) in _models(cfg).items():
        torch.manual_seed(0)
        example = (torch.randn(2, 3, 32, 32),)
        arms = _arms(build, act, ga_act, example)
        for m, _ in arms.values():
            m.to(dev)
        x1 = torch.randn(1, 3, 32, 32, device=dev)
        flops = {name: _flops(m.eval(), x1) for name, (m, _) in arms.items()}
        params = {name: sum(p.numel() for p in m.parameters()) for name, (m, _) in arms.items()}
        xs = torch.randn(train_batch, 3, 32, 32, device=dev)
        ys = torch.randint(0, 10, (train_batch,), device=dev)
        xb = torch.randn(big, 3, 32, 32, device=dev)
        # "auto" in place of "compile": what a user gets by default (compiled kernels for big
        # tensors, eager below fused.AUTO_MIN_NUMEL elements, where a compiled call's fixed
        # cost would dominate, as at batch 1)
        for backend in ["auto" if b == "compile" else b for b in _backends(cfg)]:
            results: dict[str, dict[str, Timing]] = {}
            with fused.use_backend(backend):
                for what in ("train", "infer b1", f"infer b{big}"):
                    cases = {}
                    for name, (m, _) in arms.items():
                        cases[name] = _p4_case(m, what, xs, ys, x1, xb)
                    results[what] = {}
                    for base in {b for _, b in arms.values()}:  # each baseline its own arms
                        group = {n: c for n, c in cases.items() if arms[n][1] == base}
                        reps = max(3, cfg.reps // 2)
                        results[what].update(measure(group, base, repeats=reps, device=dev))
            table = Table(
                "P4",
                f"{model_name}: train step (batch {train_batch}, fwd+bwd+SGD) and inference, "
                f"backend={backend}",
                [
                    "arm",
                    "train ms",
                    "train ratio",
                    "b1 ms",
                    "b1 ratio",
                    f"b{big} ms",
                    f"b{big} ratio",
                    "FLOPs (b1)",
                    "FLOP ratio",
                    "params",
                    "target",
                ],
            )
            for name, (_, base) in arms.items():
                fr = flops[name] / flops[base]
                is_base = name == base
                plain = name.startswith("GA") or "match_params" in name
                target = None if is_base else (1.05 if plain else 1.05 * fr)
                table.rows.append(
                    [
                        name,
                        results["train"][name].median_ms,
                        results["train"][name].ratio,
                        results["infer b1"][name].median_ms,
                        results["infer b1"][name].ratio,
                        results[f"infer b{big}"][name].median_ms,
                        results[f"infer b{big}"][name].ratio,
                        flops[name],
                        fr,
                        params[name],
                        target,
                    ]
                )
            table.notes.append(
                "ratios: against the arm's own baseline (same activation); target: <= 1.05 "
                "(GA, match_params), <= 1.05 x FLOP ratio (HD-FGD, SA at full width)"
            )
            tables.append(table)
    return tables


def _p4_case(m: nn.Module, what: str, xs, ys, x1, xb) -> Callable[[], None]:
    import netadv

    if what == "train":
        opt = torch.optim.SGD(m.parameters(), lr=1e-3)

        def step():
            m.train()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(m(xs), ys) + netadv.penalty(m)
            loss.backward()
            opt.step()

        return step
    x = x1 if what == "infer b1" else xb

    def infer():
        m.eval()
        with torch.inference_mode():
            m(x)

    return infer


# --- P6: plan + rewrite time ----------------------------------------------------------------


def _p6_models(cfg: BenchConfig) -> dict[str, Callable[[], nn.Module]]:
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if cfg.quick:
        return {
            "ViT depth 12 (tiny widths)": lambda: VisionTransformer(
                img_size=32, patch_size=4, embed_dim=32, depth=12, num_heads=2
            ),
        }
    return {
        "Swin-T": lambda: timm.create_model("swin_tiny_patch4_window7_224", pretrained=False),
        "ViT-S depth 48": lambda: VisionTransformer(
            img_size=224, patch_size=16, embed_dim=384, depth=48, num_heads=6
        ),
    }


def suite_p6(cfg: BenchConfig) -> list[Table]:
    import netadv

    table = Table(
        "P6",
        "plan + rewrite time in seconds (model construction excluded; median of repeats)",
        ["model", "method", "sites", "plan", "rewrite (copy)", "min-max", "rewrite (inplace)"],
    )
    reps = 2 if cfg.quick else 3
    for name, build in _p6_models(cfg).items():
        model = build()
        for method in ("hdfgd", "sa"):
            plan_times, copy_times, inplace_times = [], [], []
            sites = 0
            for _ in range(reps):
                t0 = time.perf_counter()
                p = netadv.plan(model, method)
                plan_times.append(time.perf_counter() - t0)
                sites = len(p.changed())
                t0 = time.perf_counter()
                netadv.rewrite(model, method)
                copy_times.append(time.perf_counter() - t0)
                fresh = build()
                t0 = time.perf_counter()
                netadv.rewrite(fresh, method, inplace=True)
                inplace_times.append(time.perf_counter() - t0)
                del fresh
            table.rows.append(
                [
                    name,
                    method,
                    sites,
                    statistics.median(plan_times),
                    statistics.median(copy_times),
                    f"{min(copy_times):.3g}-{max(copy_times):.3g}",
                    statistics.median(inplace_times),
                ]
            )
    table.notes.append(
        "target: < 2 s; rewrite (copy) deep-copies the model first (the default), "
        "rewrite (inplace) is rewrite(..., inplace=True)"
    )
    return [table]


# --- the command ----------------------------------------------------------------------------

_SUITE_FUNCS = {"P1": suite_p1, "P2": suite_p2, "P3": suite_p3, "P4": suite_p4, "P6": suite_p6}


def machine() -> str:
    """One line describing where the numbers come from."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    parts = [
        f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        f"{torch.get_num_threads()} threads",
        f"clock: {'cpu' if _clock is time.process_time else 'wall'}",
    ]
    if torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name())
    parts.append(f"C++ compiler: {'yes' if fused.compiler_available('cpu') else 'no'}")
    return "; ".join(parts)


def run(suites: list[str], cfg: BenchConfig, echo: Callable[[str], None] = print) -> list[Table]:
    tables = []
    for s in suites:
        t0 = time.perf_counter()
        for table in _SUITE_FUNCS[s](cfg):
            echo(table.format() + "\n")
            tables.append(table)
        echo(f"[{s} took {time.perf_counter() - t0:.1f} s]\n")
    return tables


def add_bench_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--suite", default=",".join(SUITES), help=f"comma-separated, of {','.join(SUITES)}"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, eager only (< 60 s)")
    parser.add_argument(
        "--backend",
        default=None,
        help="comma-separated backends to time (eager,compile); default: eager and compile "
        "(compile only where a compiler is present); --quick: eager",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per table")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=sorted(CLOCKS),
        help="wall time, or this process's CPU time (steadier on a shared machine)",
    )
    parser.add_argument("--json", default=None, help="also write the tables to this JSON file")
    return parser


def bench_main(args: argparse.Namespace) -> int:
    suites = [s.strip().upper() for s in args.suite.split(",") if s.strip()]
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITES)}")
    if args.backend:
        backends = tuple(b.strip() for b in args.backend.split(","))
        for b in backends:
            if b not in ("eager", "compile"):
                raise ValueError(f"--backend takes eager and/or compile, got {b!r}")
    else:
        backends = ("eager",) if args.quick else ("eager", "compile")
    if args.threads:
        torch.set_num_threads(args.threads)
    set_clock(args.clock)
    cfg = BenchConfig(args.quick, args.device, backends, args.repeats)
    print(f"machine: {machine()}\n")
    tables = run(suites, cfg)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "tables": [asdict(t) for t in tables]}, f, indent=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_bench_arguments(argparse.ArgumentParser(prog="netadv bench"))
    return bench_main(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
