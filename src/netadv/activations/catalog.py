"""The public face of the registry: list and register activations."""

from __future__ import annotations

import math
from typing import Any

from netadv.activations import registry
from netadv.activations.kernel import stable_interval
from netadv.defaults import MAX_GAIN
from netadv.errors import NoAdversarialError


def list_activations(max_gain: float = MAX_GAIN) -> list[dict[str, Any]]:
    """One row per registered activation: name, whether A_f has a closed form, the stable
    interval (None when f has no adversarial, with the reason), and the HD-FGD decomposition."""
    rows = []
    for name in registry.names():
        spec = registry.by_name(name)
        row: dict[str, Any] = {"name": name, "closed_form": spec.closed_form is not None}
        try:
            row["stable_interval"] = stable_interval(spec, max_gain)
            row["no_adversarial"] = None
        except NoAdversarialError as e:
            row["stable_interval"] = None
            row["no_adversarial"] = str(e).split(", so ")[0]
            row["closed_form"] = False
        expr = registry.decomposition_expr(spec.decomposition) if spec.decomposition else None
        row["decomposition"] = f"{expr} (k={len(expr.free_symbols)})" if expr is not None else None
        rows.append(row)
    return rows


def format_interval(interval: tuple[float, float] | None) -> str:
    if interval is None:
        return "-"
    return "[" + ", ".join(f"{v:.4g}" if math.isfinite(v) else str(v) for v in interval) + "]"


#: ``register_activation(name, f, *, derivative=None, adversarial=None, decomposition=None)``:
#: see :func:`netadv.activations.registry.register`.
register_activation = registry.register
