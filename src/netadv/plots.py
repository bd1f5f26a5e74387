"""Plots of activation pairs (matplotlib, headless)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from netadv.activations.registry import resolve
from netadv.defaults import ANCHOR, MAX_GAIN
from netadv.errors import NoAdversarialError
from netadv.layers.adversarial import Adversarial


def plot_pair(
    f: Any, output: str | Path, *, max_gain: float = MAX_GAIN, anchor: str = ANCHOR
) -> Path:
    """Plot f and A_f (left), f' and A_f' = 1/f' (right), the stable interval shaded. For an f
    with no adversarial, plot f and f' and say why in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = resolve(f)
    try:
        adv = Adversarial(spec, anchor=anchor, max_gain=max_gain)
        why = None
    except NoAdversarialError as e:
        adv, why = None, str(e).split(", so ")[0]
    span = 6.0
    if adv is not None:
        finite = [abs(v) for v in (adv.lo, adv.hi) if math.isfinite(v)]
        span = max([span, *(1.6 * v for v in finite)])
    x = torch.linspace(-span, span, 2001, dtype=torch.float64)
    fx, dfx = spec.fn(x), spec.deriv(x)

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax0.plot(x, fx, label="f")
    ax1.plot(x, dfx, label="f'")
    if adv is not None:
        xg = x.clone().requires_grad_(True)
        a = adv(xg)
        (ga,) = torch.autograd.grad(a.sum(), xg)
        ax0.plot(x, a.detach(), label="A_f")
        ax1.plot(x, ga, label="A_f' = 1/f'")
        ax1.set_yscale("symlog", linthresh=1.0)
        for ax in (ax0, ax1):
            ax.axvspan(
                max(adv.lo, -span),
                min(adv.hi, span),
                color="tab:green",
                alpha=0.08,
                label=f"stable interval (gain <= {max_gain:g})",
            )
    for ax, title in ((ax0, "function"), (ax1, "derivative")):
        ax.axhline(0, color="k", lw=0.5)
        ax.axvline(0, color="k", lw=0.5)
        ax.set_title(title)
        ax.set_xlabel("x")
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(spec.title if why is None else why, fontsize=10)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output
