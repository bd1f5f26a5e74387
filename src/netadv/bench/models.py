"""The suites on whole models: P4 (a training step and inference of GA-, HD-FGD- and
SA-rewritten ViT and ResNet against their baselines) and P6 (plan + rewrite time)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

import netadv
from netadv import fused
from netadv.bench.timing import BenchConfig, Table, Timing, backends, measure
from netadv.experiments.models import resnet18, vit

# --- P4: rewritten models -------------------------------------------------------------------


def _flops(model: nn.Module, x: Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def _models(cfg: BenchConfig) -> dict[str, tuple[Callable[[], nn.Module], str, str]]:
    """name -> (builder, activation for the HD-FGD/SA arms, activation for the GA arms)."""
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
        for backend in ["auto" if b == "compile" else b for b in backends(cfg)]:
            with fused.use_backend(backend):
                results = _p4_timings(arms, cfg, (xs, ys, x1, xb), big)
            table = Table(
                "P4",
                f"{model_name}: train step (batch {train_batch}, fwd+bwd+SGD) and inference, "
                f"backend={backend}",
                _p4_columns(big),
            )
            for name, (_, base) in arms.items():
                table.rows.append(_p4_row(name, base, results, flops, params))
            table.notes.append(
                "ratios: against the arm's own baseline (same activation); target: <= 1.05 "
                "(GA, match_params), <= 1.05 x FLOP ratio (HD-FGD, SA at full width)"
            )
            tables.append(table)
    return tables


def _p4_timings(
    arms: dict[str, tuple[nn.Module, str]], cfg: BenchConfig, inputs: tuple, big: int
) -> dict[str, dict[str, Timing]]:
    """{what: {arm: timing}} for the training step and the two inference batch sizes, each
    arm timed in one table with its own baseline."""
    results: dict[str, dict[str, Timing]] = {}
    for what in ("train", "infer b1", f"infer b{big}"):
        cases = {}
        for name, (m, _) in arms.items():
            cases[name] = _p4_case(m, what, *inputs)
        results[what] = {}
        for base in {b for _, b in arms.values()}:  # each baseline its own arms
            group = {n: c for n, c in cases.items() if arms[n][1] == base}
            reps = max(3, cfg.reps // 2)
            results[what].update(measure(group, base, repeats=reps, device=cfg.device))
    return results


def _p4_columns(big: int) -> list[str]:
    return [
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
    ]


def _p4_row(name: str, base: str, results, flops: dict, params: dict) -> list:
    fr = flops[name] / flops[base]
    is_base = name == base
    plain = name.startswith("GA") or "match_params" in name
    target = None if is_base else (1.05 if plain else 1.05 * fr)
    row: list = [name]
    for what in results:  # train, infer b1, infer bN
        row += [results[what][name].median_ms, results[what][name].ratio]
    return [*row, flops[name], fr, params[name], target]


def _p4_case(m: nn.Module, what: str, xs, ys, x1, xb) -> Callable[[], None]:
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
