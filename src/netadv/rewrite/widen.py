"""The capacity-matched baseline: the model with its own activations, widened to the parameter
count an HD-FGD/SA rewrite would give it.

HD-FGD adds ``(k - 1)`` copies of each producer's rows (and norm); a gain of the rewritten model
over the baseline can therefore come from the method or from the added capacity. The
capacity-matched baseline tells them apart: at every site the rewrite would fold, the hidden
width ``h`` of producer (+norm) and consumer becomes ``round(r * h)``, with one factor ``r`` for
the whole model chosen so that the parameter count is the nearest to the rewritten model's. The
widened layers are freshly initialised (there is nothing to copy into the new units).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from netadv.errors import ConfigError
from netadv.layers.widths import like, n_params, norm_like, out_width_of
from netadv.rewrite import ecosystem as eco
from netadv.rewrite.apply import rewrite
from netadv.rewrite.plan import plan
from netadv.rewrite.site import BLOCKS, Site


def capacity_matched(
    model: nn.Module, method: str = "hdfgd", *, example_inputs: Any = None, **options: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """A widened copy of ``model`` with about the parameters of ``rewrite(model, method,
    **options)``, and a record: the target and achieved parameter counts, the factor, and per
    widened site its producer, consumer and the widths before and after.

    ``method`` is "hdfgd" or "sa" (SA's blocks have HD-FGD's parameters); ``options`` are the
    plan's (activation, period, start, include, exclude, layer options): with ``activation``
    the widened model also has every activation replaced by it, as the rewrite would (a
    ReLU ResNet's "SiLU route"). Every site the rewrite would fold
    is widened if one Linear/Conv consumer reads its activation (a ResNet stem feeding a
    residual stream has none: it keeps its width, listed under ``kept`` with the reason, and the
    other sites make up its parameters); if no site can be widened this raises
    :class:`~netadv.ConfigError`."""
    if method not in ("hdfgd", "sa"):
        raise ConfigError(f"capacity matching is for hdfgd or sa, got {method!r}")
    target = plan(model, method, example_inputs=example_inputs, **options)
    wanted = [s.index for s in target if s.becomes in BLOCKS]
    if not wanted:
        raise ConfigError(f"{method} changes no site of this model: nothing to match")
    # the same sites with their consumers (a plan with match_params finds them)
    rest = {k: v for k, v in options.items() if k not in ("init", "match_params")}
    found = plan(
        model, method, example_inputs=example_inputs, init="fresh", match_params=True, **rest
    )
    sites = [found.sites[i] for i in wanted]
    kept = [{"site": s.name, "why": s.note} for s in sites if s.consumer is None]
    layout = _Layout(model, [s for s in sites if s.consumer is not None])
    if not layout.sites:
        raise ConfigError(f"cannot widen any site of this model: {kept[0]['why']}")
    factor = layout.factor_for(target.params_after)
    out = copy.deepcopy(model)
    layout.apply(out, factor)
    if options.get("activation") is not None:
        out = rewrite(
            out, "replace", activation=options["activation"], example_inputs=example_inputs,
            inplace=True,
        )  # fmt: skip
    record = {
        "params_before": target.params_before,
        "params_target": target.params_after,
        "params": n_params(out),
        "factor": factor,
        "sites": layout.rows(factor),
        "kept": kept,
    }
    return out, record


@dataclass
class _Layout:
    """The layers widening touches: per site its producer, norm and consumer paths, and each
    layer's original module."""

    model: nn.Module
    sites: list[Site]
    layers: dict[str, nn.Module] = field(default_factory=dict)

    def __post_init__(self):
        for s in self.sites:
            for path in (s.producer, s.norm, s.consumer):
                if path and path not in self.layers:
                    self.layers[path] = self.model.get_submodule(path)

    def widths(self, factor: float) -> list[int]:
        """Each site's hidden width at ``factor`` (a multiple of a GroupNorm's groups)."""
        out = []
        for s in self.sites:
            unit = getattr(self.layers.get(s.norm or ""), "num_groups", 1)
            h = out_width_of(eco.as_producer(self.layers[s.producer]))
            out.append(max(unit, unit * round(factor * h / unit)))
        return out

    def shapes(self, factor: float) -> dict[str, dict[str, int]]:
        """Per touched layer, its new widths: ``in``/``out`` for Linear/Conv, ``n`` for norms."""
        shapes: dict[str, dict[str, int]] = {p: {} for p in self.layers}
        for s, width in zip(self.sites, self.widths(factor)):
            shapes[s.producer]["out"] = width
            shapes[s.consumer]["in"] = width
            if s.norm:
                shapes[s.norm]["n"] = width
        return shapes

    def build(self, path: str, shape: dict[str, int], device=None) -> nn.Module:
        old = self.layers[path]
        if "n" in shape:
            return norm_like(old, shape["n"]).to(device) if device else norm_like(old, shape["n"])
        layer = eco.as_producer(old)
        return like(layer, in_width=shape.get("in"), out_width=shape.get("out"), device=device)

    def params(self, factor: float) -> int:
        """The widened model's parameter count (counted on parameter-less layers)."""
        before = n_params(self.model) - sum(n_params(m) for m in self.layers.values())
        shapes = self.shapes(factor)
        return before + sum(n_params(self.build(p, sh, "meta")) for p, sh in shapes.items())

    def factor_for(self, target: int) -> float:
        """The factor whose parameter count is nearest ``target`` (bisection: the count grows
        with the factor), searched on [1, 16]."""
        lo, hi = 1.0, 16.0
        if self.params(hi) < target:
            raise ConfigError("capacity matching would need more than 16x the hidden width")
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.params(mid) < target else (lo, mid)
        return min((lo, hi), key=lambda f: abs(self.params(f) - target))

    def apply(self, model: nn.Module, factor: float) -> None:
        for path, shape in self.shapes(factor).items():
            old = model.get_submodule(path)
            new = self.build(path, shape)
            new.train(old.training)
            parent, _, name = path.rpartition(".")
            setattr(model.get_submodule(parent), name, new)

    def rows(self, factor: float) -> list[dict[str, Any]]:
        return [
            {
                "site": s.name,
                "producer": s.producer,
                "consumer": s.consumer,
                "width": out_width_of(eco.as_producer(self.layers[s.producer])),
                "widened": w,
            }
            for s, w in zip(self.sites, self.widths(factor))
        ]
