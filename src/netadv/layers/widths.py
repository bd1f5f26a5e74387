"""Widths and parameter counts of the Linear/Conv layers an HD-FGD block is built from.

The block (:mod:`netadv.layers.hdfgd`) builds its wide producer and, with ``match_params``, its
narrower consumer from these; the plan (:mod:`netadv.rewrite`) counts the parameters a block
adds with the same arithmetic, on parameter-less ("meta") layers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from netadv.errors import ConfigError

#: match_params rounds a hidden width of at least 8 * MATCH_ALIGN down to a multiple of
#: MATCH_ALIGN: GEMMs on odd widths (511 instead of 504) were measured 20-30% slower on CPU.
MATCH_ALIGN = 8


def out_width_of(layer: nn.Module) -> int:
    """Output features of a Linear, output channels of a Conv."""
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def in_width_of(layer: nn.Module) -> int:
    """Input features of a Linear, input channels of a Conv."""
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels


def like(
    layer: nn.Module,
    *,
    in_width: int | None = None,
    out_width: int | None = None,
    init: bool = True,
    device: torch.device | str | None = None,
) -> nn.Module:
    """A fresh layer of the same kind and options as ``layer`` with other widths, on
    ``layer``'s device unless ``device`` is given ("meta": no memory, for counting parameters);
    ``init=False`` leaves its parameters uninitialised, for a caller that overwrites them."""
    w = layer.weight
    kw = dict(device=w.device if device is None else device, dtype=w.dtype)
    i = in_width_of(layer) if in_width is None else in_width
    o = out_width_of(layer) if out_width is None else out_width
    make = torch.nn.utils.skip_init if not init else lambda cls, *a, **k: cls(*a, **k)
    if isinstance(layer, nn.Linear):
        return make(nn.Linear, i, o, bias=layer.bias is not None, **kw)
    return make(
        type(layer),
        i,
        o,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
        bias=layer.bias is not None,
        padding_mode=layer.padding_mode,
        **kw,
    )


def norm_like(norm: nn.Module, width: int) -> nn.Module:
    """A fresh normalisation layer of the same kind and options as ``norm`` over ``width``
    features (BatchNorm, LayerNorm over the last dimension, GroupNorm with the same groups)."""
    p = next(iter(norm.parameters()), None)
    kw = {} if p is None else dict(device=p.device, dtype=p.dtype)
    if isinstance(norm, nn.LayerNorm):
        if len(norm.normalized_shape) != 1:
            raise ConfigError("HD-FGD supports LayerNorm over the last dimension only")
        bias = norm.bias is not None
        return nn.LayerNorm(
            width, eps=norm.eps, elementwise_affine=norm.elementwise_affine, bias=bias, **kw
        )
    if isinstance(norm, nn.GroupNorm):
        return nn.GroupNorm(norm.num_groups, width, eps=norm.eps, affine=norm.affine, **kw)
    return type(norm)(
        width,
        eps=norm.eps,
        momentum=norm.momentum,
        affine=norm.affine,
        track_running_stats=norm.track_running_stats,
        **kw,
    )


def n_params(m: nn.Module | None) -> int:
    """Parameters of ``m`` (0 for None)."""
    return 0 if m is None else sum(p.numel() for p in m.parameters())


def _per_unit(layer: nn.Module, dim: int) -> tuple[int, int]:
    """(parameters per unit along ``dim`` of the weight, parameters not per unit)."""
    w = layer.weight
    per = w.numel() // w.shape[dim]
    fixed = 0
    if layer.bias is not None:
        if dim == 0:
            per += 1
        else:
            fixed += layer.bias.numel()
    return per, fixed


def matched_width(producer, norm, consumer, k: int) -> int:
    """Largest hidden width h' whose k-wide producer, norm and consumer have at most the
    original's parameter count (a multiple of the GroupNorm's groups, and of
    :data:`MATCH_ALIGN` once it is at least 8 times that)."""
    if getattr(producer, "groups", 1) != 1 or getattr(consumer, "groups", 1) != 1:
        raise ConfigError("match_params needs ungrouped producer and consumer layers")
    h = out_width_of(producer)
    p_per, _ = _per_unit(producer, 0)
    c_per, c_fixed = _per_unit(consumer, 1)
    n_per = sum(p.numel() for p in norm.parameters()) // h if norm is not None else 0
    original = h * (p_per + n_per + c_per) + c_fixed
    width = (original - c_fixed) // (k * (p_per + n_per) + c_per)
    unit = norm.num_groups if isinstance(norm, nn.GroupNorm) else 1
    if width >= 8 * MATCH_ALIGN:
        unit = math.lcm(unit, MATCH_ALIGN)
    width -= width % unit
    if width < 1:
        raise ConfigError(f"match_params leaves no hidden units (k={k}, width {h})")
    return int(width)


def fold_delta(
    producer: nn.Module,
    norm: nn.Module | None,
    consumer: nn.Module | None,
    k: int,
    match_params: bool,
    producer_in: int | None = None,
) -> tuple[int, int]:
    """(parameters added, hidden width) of an HD-FGD/SA block replacing a Linear/Conv producer
    (+norm), with match_params also shrinking the consumer. ``producer_in``: the producer's
    input width when an earlier block shrank it (it was that block's consumer)."""
    if producer_in is not None:
        producer = like(producer, in_width=producer_in, device="meta")
    p, n, h = n_params(producer), n_params(norm), out_width_of(producer)
    if not match_params:
        return (k - 1) * (p + n), h
    c = n_params(consumer)
    c_fixed = consumer.bias.numel() if consumer.bias is not None else 0
    width = matched_width(producer, norm, consumer, k)
    per = k * (p // h + n // h) + (c - c_fixed) // h
    return width * per + c_fixed - (p + n + c), width
