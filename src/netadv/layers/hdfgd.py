"""HD-FGD and SA blocks: one wide producer for all k terms, then the lifted function.

Weight layout: the k projections of hidden unit j are rows ``j*k .. j*k+k-1`` of the wide
producer (interleaved, "unit-major"). Column-parallel sharding splits a Linear's outputs into
contiguous blocks, so with this layout a shard that owns unit j owns all k of its terms and
can evaluate F locally; a normalisation layer's groups (GroupNorm) likewise hold whole units.

Speed: one GEMM/conv for all k terms, then one fused element-wise function
(:func:`netadv.functional.lifted`: generated forward and backward, saving only the wide
pre-activation, run eagerly or compiled per :mod:`netadv.fused`). Expressions the generator
cannot handle fall back to the sympy closures of :func:`netadv.symbolic.to_torch`.

Finiteness (METHOD.md section 2), for every finite input in float32, float16 and bfloat16:

- the lifted function F, the SA penalty, and F's gradient with respect to the pre-activations
  are finite: F is evaluated in its stable form (:func:`netadv.symbolic.stable_form`), half
  types are computed in float32, and results saturate at the dtype's largest value;
- in float16/bfloat16, a block's own backward is finite too: the producer's input and
  parameter gradients (and a norm's) saturate at the dtype's largest value instead of
  overflowing to inf. A saturated pre-activation gradient (65504 in float16) times the
  producer's weights overflows float16 whatever netadv does: an SA block's input gradient did
  from |x| >= 34 (gelu_tanh) or 1320 (gelu, silu, mish). Half-precision matmuls accumulate in
  float32 (measured on CPU; cuBLAS and cuDNN do by default, not measured here), so that
  overflow happens only in the final rounding and saturating the result is exact wherever the
  gradient fits the dtype. CPU convolutions accumulate their input gradient in half precision
  (measured: inf - inf = NaN), so there the pre-activation gradient is first held to
  ``max / S`` (``S`` the largest sum of ``|w|`` one input element collects), under which no
  partial sum can overflow;
- float32 blocks use PyTorch's producer backward: it overflows only where a gradient exceeds
  3.4e38. The consumer (when the block has one) is an ordinary layer.

Saturation keeps a run finite; with a float16 GradScaler it also hides this block's overflow
from the scaler (a later layer's usually still overflows).
"""

from __future__ import annotations

import copy
from typing import Any

import sympy
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from netadv.decompose import Decomposition, decompose
from netadv.defaults import ANCHOR, INIT, INITS, MAX_GAIN, PENALTY_WEIGHT
from netadv.errors import ConfigError
from netadv.functional import LiftedForm, lifted, lifted_stacked
from netadv.functional.autograd import saturated_grads
from netadv.fused import describe
from netadv.layers.adversarial import Adversarial
from netadv.layers.widths import like, matched_width, norm_like, out_width_of

PRODUCERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
HALF = (torch.float16, torch.bfloat16)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


def _copy_interleaved(dst: nn.Module, src: nn.Module, k: int) -> None:
    """Every parameter/buffer along dim 0 repeated k times unit-major (copy init)."""
    with torch.no_grad():
        for name, t in list(src.named_parameters()) + list(src.named_buffers()):
            target = getattr(dst, name, None)
            if target is None:
                continue
            if t.dim() == 0:
                target.copy_(t)
            else:  # row j*k+i <- row j, one pass with no temporary
                target.unflatten(0, (t.shape[0], k)).copy_(
                    t.unsqueeze(1).expand(-1, k, *t.shape[1:])
                )


class HDFGD(nn.Module):
    """``consumer(F(norm(producer(x)) split into k terms))``, HD-FGD or, with adversarial
    terms, SA. Build it with :func:`netadv.hdfgd`; ``F`` is :func:`netadv.functional.lifted` of
    the block's :class:`~netadv.functional.LiftedForm` (``form``)."""

    def __init__(
        self,
        producer: nn.Module,
        decomposition: Decomposition,
        *,
        norm: nn.Module | None = None,
        consumer: nn.Module | None = None,
        adversarial: dict[str, nn.Module] | None = None,
        sa_expr=None,
        penalty_weight: float = PENALTY_WEIGHT,
        width: int,
    ):
        super().__init__()
        self.producer = producer
        self.norm = norm
        self.consumer = consumer
        self.decomposition = decomposition
        self.k = decomposition.k
        self.width = width
        self.split_dim = -1 if isinstance(producer, nn.Linear) else 1
        self.penalty_weight = float(penalty_weight)
        self.adversarial = nn.ModuleDict(adversarial) if adversarial else None
        self.sa_expr = sa_expr
        terms = {n: m.kernel for n, m in adversarial.items()} if adversarial else None
        expr = sa_expr if adversarial else decomposition.expr
        self.form = LiftedForm(expr, decomposition.symbols, terms)
        self.last_penalty: Tensor | None = None
        # exactly nn.Linear (+ exactly nn.LayerNorm, whose statistics ignore feature order)
        self._blockable = type(producer) is nn.Linear and (
            norm is None or type(norm) is nn.LayerNorm
        )
        #: "auto", "eager" or "compile" for this block; None follows netadv.set_backend.
        self.backend: str | None = None

    def __getstate__(self) -> dict:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        # the form's generated kernels and the caches are rebuilt (or refilled) after loading
        return {k: v for k, v in state.items() if k not in ("form", "_blocked_cache")}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        terms = None
        if self.adversarial is not None:
            terms = {n: m.kernel for n, m in self.adversarial.items()}
        expr = self.sa_expr if self.adversarial is not None else self.decomposition.expr
        self.form = LiftedForm(expr, self.decomposition.symbols, terms)

    def _get_name(self) -> str:
        return "SA" if self.adversarial is not None else "HDFGD"

    def extra_repr(self) -> str:
        expr = self.sa_expr if self.adversarial is not None else self.decomposition.expr
        extra = f", penalty_weight={self.penalty_weight:g}" if self.adversarial is not None else ""
        if self.form.kernel is None:
            path = "closure"
        else:
            path = f"fused, backend={describe(self.backend, self.form.kernel.forward)}"
        return f"{self.decomposition.name}: {expr}, k={self.k}, width={self.width}{extra}, {path}"

    def preactivations(self, x: Tensor) -> tuple[Tensor, ...]:
        """The k pre-activations ``z_1 .. z_k``, each shaped like the original's."""
        z = self.producer(x)
        if self.norm is not None:
            z = self.norm(z)
        dim = self.split_dim
        return z.unflatten(dim, (self.width, self.k)).unbind(dim if dim < 0 else dim + 1)

    def activation(self, zs: tuple[Tensor, ...], funcs: dict | None = None) -> Tensor:
        """``F(z_1, ..., z_k)``; for SA, ``funcs`` may wrap the adversarial modules by name."""
        if self.adversarial is None:
            return self.form.closure(zs)
        return self.form.closure(zs, funcs if funcs is not None else dict(self.adversarial.items()))

    def activate(self, z: Tensor) -> Tensor:
        """``F`` of the wide pre-activation ``z`` (the producer's, or norm's, output, in the
        unit-major layout): the block's output before the consumer. SA blocks record their
        penalty here."""
        return self._record(lifted(z, self.form, dim=self.split_dim, backend=self.backend))

    def _record(self, out) -> Tensor:
        """F, keeping an SA block's penalty for :func:`penalty`."""
        if self.form.penalised:
            out, self.last_penalty = out
        return out

    def _term_major(self, t: Tensor | None) -> Tensor | None:
        """A unit-major parameter (dim 0 = width*k) reordered term-major (dim 0 = k*width)."""
        if t is None:
            return None
        return t.unflatten(0, (self.width, self.k)).transpose(0, 1).flatten(0, 1)

    def _blocked(self, x: Tensor) -> Tensor:
        """A Linear producer (+LayerNorm) computed with its rows reordered term-major, so that
        each term is a contiguous run of ``width`` features: the fused kernel then streams
        contiguous memory (inductor does not vectorise the unit-major stride-k access). Costs
        a copy of the weight, O(1/tokens) of the matmul; the parameters keep their layout."""
        w, b = self.producer.weight, self.producer.bias
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            wt, bt = self._term_major(w), self._term_major(b)
        else:  # eager inference: reuse the reordered copy until the weights change
            cache = self.__dict__.get("_blocked_cache")
            if cache is None or cache[0] != _version(w, b):
                cache = (_version(w, b), (self._term_major(w), self._term_major(b)))
                self.__dict__["_blocked_cache"] = cache
            wt, bt = cache[1]
        half = _half_dtype(x)
        if half is not None:
            x, wt, bt = saturated_grads(half, x, wt, bt)
        z = F.linear(x, wt, bt)
        if self.norm is not None:
            n = self.norm
            nw, nb = self._term_major(n.weight), self._term_major(n.bias)
            if half is not None:
                nw, nb = saturated_grads(half, nw, nb)
            z = F.layer_norm(z, n.normalized_shape, nw, nb, n.eps)
        lead = z.shape[:-1]
        z3 = z.reshape(-1, self.k, self.width)
        y = self._record(lifted_stacked(z3, self.form, backend=self.backend))
        return y.reshape(*lead, self.width)

    def forward(self, x: Tensor) -> Tensor:
        # the term-major fast path reads the producer's weight itself; a weight sharded by
        # tensor parallelism (a DTensor, with placements) goes through the producer module
        sharded = getattr(self.producer.weight, "placements", None) is not None
        if self.form.kernel is not None and self._blockable and not sharded:
            y = self._blocked(x)
            return self.consumer(y) if self.consumer is not None else y
        y = self.activate(self._produce(x))
        return self.consumer(y) if self.consumer is not None else y

    def _produce(self, x: Tensor) -> Tensor:
        """``norm(producer(x))``; in half precision with the gradients of x and of the producer's
        and norm's parameters saturated (see the module docstring)."""
        half = _half_dtype(x)
        if half is None:
            z = self.producer(x)
            return self.norm(z) if self.norm is not None else z
        z = _saturated_call(self.producer, x, half)
        if x.device.type == "cpu" and isinstance(self.producer, nn.modules.conv._ConvNd):
            (z,) = saturated_grads(half, z, limit=_conv_input_grad_limit(self.producer, half))
        return _saturated_call(self.norm, z, half) if self.norm is not None else z


def _half_dtype(x: Tensor) -> torch.dtype | None:
    """The half dtype a block's producer computes in when it will be differentiated (x's, or
    autocast's), else None."""
    if not torch.is_grad_enabled():
        return None
    if x.dtype in HALF:
        return x.dtype
    device = x.device.type
    if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) in HALF:
        return torch.get_autocast_dtype(device)
    return None


def _saturated_call(module: nn.Module, x: Tensor, dtype: torch.dtype) -> Tensor:
    """``module(x)`` with the gradients of x and of the module's parameters saturated to
    ``dtype``'s range."""
    params = dict(module.named_parameters())
    x, *values = saturated_grads(dtype, x, *params.values())
    return functional_call(module, dict(zip(params, values)), (x,))


def _conv_input_grad_limit(conv: nn.Module, dtype: torch.dtype) -> float:
    """The largest output gradient under which no partial sum of a convolution's input gradient
    can overflow ``dtype``: CPU convolutions accumulate it in half precision (measured: inf - inf
    = NaN at gradients of 6e4), unlike matmuls and CUDA convolutions, which accumulate in float32
    and overflow only in the final rounding."""
    w = conv.weight.detach()
    per_input = w.abs().float().sum(dim=[d for d in range(w.dim()) if d != 1]).max().item()
    return torch.finfo(dtype).max / max(per_input, 1.0)


def _version(*ts: Tensor | None) -> tuple:
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in ts if t is not None)


def sa_terms(
    decomposition: Decomposition, *, anchor: str = ANCHOR, max_gain: float = MAX_GAIN
) -> tuple[sympy.Expr, dict[str, Adversarial]]:
    """The SA form of ``decomposition`` (see :meth:`~netadv.Decomposition.split_adversarial`)
    and its adversarial terms as modules, by the names the expression calls them."""
    expr, specs = decomposition.split_adversarial(anchor=anchor, max_gain=max_gain)
    modules = {n: Adversarial(s, anchor=anchor, max_gain=max_gain) for n, s in specs.items()}
    return expr, modules


def _check_options(producer, norm, consumer, init: str, match_params: bool, penalty_weight):
    """Raise :class:`~netadv.ConfigError` for any option :func:`hdfgd` cannot honour."""
    transposed = isinstance(producer, nn.modules.conv._ConvTransposeNd)
    if not isinstance(producer, PRODUCERS) or transposed:
        raise ConfigError(
            f"HD-FGD producer must be nn.Linear or nn.Conv1d/2d/3d, got {type(producer).__name__}"
        )
    if norm is not None and not isinstance(norm, NORMS):
        raise ConfigError(
            f"norm must be one of {', '.join(c.__name__ for c in NORMS)}, got {type(norm).__name__}"
        )
    if init not in INITS:
        raise ConfigError(f"init must be one of {INITS}, got {init!r}")
    if match_params and consumer is None:
        raise ConfigError("match_params=True needs the consumer layer (pass consumer=...)")
    if match_params and init == "copy":
        raise ConfigError(
            "match_params=True shrinks the hidden width, so the original weights cannot be "
            "copied: use init='fresh'"
        )
    if match_params and not isinstance(consumer, PRODUCERS):
        raise ConfigError(
            f"match_params needs a Linear/Conv consumer, got {type(consumer).__name__}"
        )
    if penalty_weight < 0:
        raise ConfigError(f"penalty_weight must be >= 0, got {penalty_weight}")


def _wide_layers(producer, norm, consumer, k: int, init: str, match_params: bool):
    """(width, the k-wide producer and norm, the consumer reading ``width`` units): unit-major;
    with copy init every term starts as the original."""
    width = matched_width(producer, norm, consumer, k) if match_params else out_width_of(producer)
    copy_init = init == "copy"
    wide = like(producer, out_width=k * width, init=not copy_init)
    if copy_init:
        _copy_interleaved(wide, producer, k)
    wide_norm = None
    if norm is not None:
        wide_norm = norm_like(norm, k * width)
        if copy_init:
            _copy_interleaved(wide_norm, norm, k)
    new_consumer = None
    if consumer is not None:
        new_consumer = like(consumer, in_width=width) if match_params else copy.deepcopy(consumer)
    return width, wide, wide_norm, new_consumer


def _in_modes_of(block: HDFGD, producer: nn.Module, norm: nn.Module | None) -> HDFGD:
    """The block in its producer's train/eval mode, its norm in the original norm's."""
    block.train(producer.training)
    if norm is not None:
        block.norm.train(norm.training)
    return block


def hdfgd(
    producer: nn.Module,
    activation: Any,
    *,
    norm: nn.Module | None = None,
    consumer: nn.Module | None = None,
    init: str = INIT,
    match_params: bool = False,
    adversarial: bool = False,
    penalty_weight: float = PENALTY_WEIGHT,
    anchor: str = ANCHOR,
    max_gain: float = MAX_GAIN,
) -> HDFGD:
    """Rewrite ``act(norm(producer(x)))`` (then ``consumer``) as an HD-FGD block, or with
    ``adversarial=True`` an SA block.

    Args:
        producer: nn.Linear or nn.Conv1d/2d/3d feeding the activation.
        activation: anything :func:`netadv.decompose` accepts ("gelu", nn.SiLU(), sympy...).
        norm: optional BatchNorm/LayerNorm/GroupNorm between producer and activation; it then
            normalises all k*width channels.
        consumer: optional layer reading the activation's output, included in the block.
        init: "copy" (every term starts as the original producer) or "fresh" (each term drawn
            independently). With copy init an HD-FGD block computes the original function (to
            rounding); an SA block (``adversarial=True``) does not, whatever the init: its
            adversarial terms are different functions (see docs/REWRITE.md for the measured
            change).
        match_params: shrink the hidden width so producer (+norm) + consumer keep their
            parameter count (needs consumer and init="fresh").
        adversarial: build the SA block (each term function replaced by its adversarial).
        penalty_weight: SA's L2 penalty weight (see :func:`netadv.penalty`); 0 disables.
        anchor, max_gain: passed to the SA block's adversarial functions.
    """
    _check_options(producer, norm, consumer, init, match_params, penalty_weight)
    decomposition = decompose(activation)
    width, wide, wide_norm, new_consumer = _wide_layers(
        producer, norm, consumer, decomposition.k, init, match_params
    )
    sa_expr, modules = (None, None)
    if adversarial:
        sa_expr, modules = sa_terms(decomposition, anchor=anchor, max_gain=max_gain)
    block = HDFGD(
        wide,
        decomposition,
        norm=wide_norm,
        consumer=new_consumer,
        adversarial=modules,
        sa_expr=sa_expr,
        penalty_weight=penalty_weight,
        width=width,
    )
    return _in_modes_of(block, producer, norm)


def penalty(model: nn.Module) -> Tensor:
    """Sum over SA blocks of ``penalty_weight * sum_t mean(A_t(x)^2)`` recorded in the last
    forward, ready to add to the loss (a zero tensor when there are none)."""
    total = None
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for m in model.modules():
        if isinstance(m, HDFGD) and m.last_penalty is not None and m.penalty_weight > 0:
            term = m.penalty_weight * m.last_penalty
            total = term if total is None else total + term
    return total if total is not None else torch.zeros((), device=device)
