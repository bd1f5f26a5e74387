"""The demo: a deep sigmoid MLP on Fashion-MNIST, baseline vs GA (alternating f / A_f).

Readable top to bottom: load data, build both arms from one seed, train one epoch each with the
same optimizer and batches, then print test accuracy and the gradient norm of every layer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import netadv
from netadv.experiments.data import fashion_mnist_tensors
from netadv.experiments.models import MLP

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


@dataclass
class DemoConfig:
    depth: int = 12
    width: int = 256
    activation: str = "sigmoid"
    epochs: int = 1
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    data_dir: str | None = None
    limit: int | None = None  # train on the first N examples (tests)


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear | netadv.HDFGD)]


def train_arm(model: nn.Module, train, test, cfg: DemoConfig, label: str) -> dict:
    """Train one epoch; return test accuracy, mean per-layer weight-gradient norms, time."""
    torch.manual_seed(cfg.seed)
    loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    grad_sums = dict.fromkeys(layers, 0.0)
    first_grads: dict[str, float] = {}
    steps, start = 0, time.perf_counter()
    model.train()
    for _ in range(cfg.epochs):
        for x, y in tqdm(loader, desc=label, leave=False, mininterval=1.0):
            x = (x - FASHION_MEAN) / FASHION_STD
            loss = F.cross_entropy(model(x), y) + netadv.penalty(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for n, m in layers.items():
                g = m.weight.grad.norm().item()
                grad_sums[n] += g
                first_grads.setdefault(n, g)
            opt.step()
            steps += 1
    seconds = time.perf_counter() - start
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(test, batch_size=1000):
            correct += (model((x - FASHION_MEAN) / FASHION_STD).argmax(1) == y).sum().item()
    return {
        "accuracy": correct / len(test),
        "grad_init": first_grads,
        "grad_mean": {n: s / steps for n, s in grad_sums.items()},
        "seconds": seconds,
        "final_loss": loss.item(),
    }


def run(cfg: DemoConfig) -> dict[str, dict]:
    train, test = fashion_mnist_tensors(cfg.data_dir)
    if cfg.limit:
        train = torch.utils.data.Subset(train, range(cfg.limit))
    torch.manual_seed(cfg.seed)
    baseline = MLP(28 * 28, 10, depth=cfg.depth, width=cfg.width, activation=cfg.activation)
    ga = netadv.rewrite(baseline, "ga")  # same initial weights, every other site becomes A_f
    print(
        f"Fashion-MNIST, {cfg.depth}-layer {cfg.activation} MLP (width {cfg.width}), "
        f"{cfg.epochs} epoch(s), Adam lr={cfg.lr}, batch {cfg.batch_size}, seed {cfg.seed}"
    )
    print(netadv.plan(baseline, "ga"))
    results = {}
    for label, model in (("baseline", baseline), ("ga", ga)):
        results[label] = train_arm(model, train, test, cfg, label)
    print()
    print(
        f"{'layer':<10}{'baseline |g| init':>20}{'GA |g| init':>14}"
        f"{'baseline |g| mean':>20}{'GA |g| mean':>14}"
    )
    b, g = results["baseline"], results["ga"]
    for n in b["grad_init"]:
        print(
            f"{n:<10}{b['grad_init'][n]:>20.3e}{g['grad_init'][n]:>14.3e}"
            f"{b['grad_mean'][n]:>20.3e}{g['grad_mean'][n]:>14.3e}"
        )
    print()
    for label, r in results.items():
        print(
            f"{label:<9} test accuracy {100 * r['accuracy']:6.2f}%   "
            f"final train loss {r['final_loss']:.4f}   {r['seconds']:.1f} s"
        )
    return results
