"""A 6-layer tanh MLP on scikit-learn's digits: unchanged, and rewritten with HD-FGD and SA.

``python benchmarks/tanh_digits.py [--steps 300] [--seeds 0-9] [--lrs 1e-3,3e-3]`` prints, per
method and learning rate, the held-out accuracy of each seed, its largest training loss, the
mean loss of the first and last 20 steps, and the step at which the loss first became NaN/inf.
AdamW, batches of 128, width 64, inputs scaled to [0, 1]; the numbers quoted in
``tests/layers/test_training.py`` and ``netadv.symbolic.stable_form`` come from this script.
"""

from __future__ import annotations

import argparse
import math

import torch
from sklearn.datasets import load_digits
from torch import nn

import netadv


def data() -> tuple[torch.Tensor, ...]:
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1500], y[:1500], x[1500:], y[1500:]


def tanh_mlp(width: int = 64, depth: int = 6) -> nn.Sequential:
    layers, d = [], 64
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.Tanh()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, 10))


def run(method: str, lr: float, steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    xt, yt, xv, yv = data()
    model = tanh_mlp()
    if method != "baseline":
        model = netadv.rewrite(model, method, example_inputs=(xt[:8],))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (128,), generator=gen)
        loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx]) + netadv.penalty(model)
        if not math.isfinite(loss.item()):
            break
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    nan_at = None if len(losses) == steps else len(losses)
    with torch.no_grad():
        acc = (model(xv).argmax(1) == yv).float().mean().item() if nan_at is None else math.nan
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    return dict(acc=acc, max=max(losses, default=math.nan), first=first, last=last, nan_at=nan_at)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", default="0-4", help="a range 0-9 or a list 0,3,5")
    p.add_argument("--lrs", default="1e-3,3e-3")
    p.add_argument("--methods", default="baseline,hdfgd,sa")
    a = p.parse_args()
    lo, _, hi = a.seeds.partition("-")
    seeds = range(int(lo), int(hi) + 1) if hi else [int(s) for s in a.seeds.split(",")]
    torch.set_num_threads(1)
    for method in a.methods.split(","):
        for lr in (float(v) for v in a.lrs.split(",")):
            rows = [run(method, lr, a.steps, s) for s in seeds]
            cells = " ".join(
                f"{r['acc']:.2f}"
                + (f"(NaN@{r['nan_at']})" if r["nan_at"] is not None else "")
                + f"/{r['max']:.2g}/{r['first']:.2f}->{r['last']:.2f}"
                for r in rows
            )
            print(f"{method:8s} lr={lr:g} steps={a.steps}  acc/max loss/first->last: {cells}")


if __name__ == "__main__":
    main()
