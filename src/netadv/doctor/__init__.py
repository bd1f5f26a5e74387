"""``netadv.doctor(model)``: where a network's gradients die, and which rewrite to try.

It finds the activation sites as :func:`netadv.plan` does, measures each site (gain, saturated
or dead fraction, pre-activations against the stable interval) and the weight gradients by
depth at the current weights, and recommends GA, HD-FGD, SA or nothing, with the reason and the
study's evidence. With ``data`` it also runs a short trial of the baseline and of each rewrite
and decides on the measured losses. See docs/DOCTOR.md.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from netadv.doctor.diagnosis import Diagnosis, Trial
from netadv.doctor.inputs import (
    BATCH_SIZE,
    Batches,
    check_matches,
    default_loss,
    describe,
    infer_input,
    run_model,
)
from netadv.doctor.measure import Measurement, measure
from netadv.doctor.trial import LR, STEPS, TIME_LIMIT, train_arm
from netadv.doctor.verdict import Signals, static_verdict, trial_verdict
from netadv.errors import ConfigError
from netadv.layers.widths import n_params
from netadv.rewrite import RewritePlan, plan, rewrite

__all__ = ["Diagnosis", "doctor"]

#: The rewrites the doctor considers.
METHODS = ("ga", "hdfgd", "sa")


def doctor(
    model: nn.Module,
    *,
    example_inputs: Any = None,
    data: Any = None,
    loss_fn: Callable | None = None,
    steps: int = STEPS,
    methods: list[str] | tuple[str, ...] | None = None,
    lr: float = LR,
    time_limit: float = TIME_LIMIT,
    batch_size: int = BATCH_SIZE,
    quiet: bool = False,
    seed: int = 0,
) -> Diagnosis:
    """Diagnose ``model``'s gradient flow at its current weights and recommend a rewrite (or
    none). The model is not changed.

    Args:
        example_inputs: a tuple holding one input tensor (as for :func:`netadv.plan`); without
            it and without data, a model whose first layer is a Linear gets a random batch.
        data: a DataLoader, an iterable of (inputs, targets) batches, or tensors (X, Y) (cut
            into ``batch_size`` batches); its first batch is measured, and a trial of ``steps``
            steps per arm (at most ``time_limit`` seconds each, AdamW at ``lr``) decides.
        loss_fn: ``loss_fn(output, targets)``; default cross-entropy for integer targets, mean
            squared error otherwise.
        methods: the rewrites to consider among "ga", "hdfgd", "sa" (default: every one whose
            plan changes a site of this model).
        quiet: no progress bars (they go to stderr, one per arm).
    """
    methods = _check(methods, steps, lr, time_limit)
    batches = Batches(data, batch_size, seed) if data is not None else None
    x, y, where = _inputs(model, example_inputs, batches)
    found, plans = _plans(model, x, methods)
    probe = partial(measure, x=x, y=y, loss_fn=loss_fn, loss_name=_loss_name(loss_fn, y))
    before = probe(model, sites=found.sites)
    ga = probe(rewrite(model, plans["ga"])) if "ga" in plans else None
    sig = _signals(before, ga, plans, [s.activation for s in found.sites])
    static = static_verdict(sig)
    rec, trial, notes = static, None, _notes(before)
    if batches is not None and plans:
        trial = _trial(model, plans, batches, loss_fn, before, steps, lr, time_limit, quiet, seed)
        rec = trial_verdict(sig, trial.arms[0], trial.arms[1:], steps)
    elif batches is not None:
        notes.append("no rewrite applies to this model, so the trial was not run")
    after = None
    if rec.method is not None:  # the recommended rewrite, measured at the same weights
        after = ga if rec.method == "ga" else probe(rewrite(model, plans[rec.method]))
    return Diagnosis(
        model=type(model).__name__,
        parameters=n_params(model),
        inputs=describe(x, where),
        discovery=found.discovery,
        before=before,
        signals=sig,
        recommendation=rec,
        static_recommendation=static,
        trial=trial,
        after=after,
        notes=notes,
        data_given=batches is not None,
    )


def _signals(before: Measurement, ga: Measurement | None, plans, activations) -> Signals:
    return Signals(
        ratio=before.ratio,
        finite=before.finite,
        gain_product=before.gain_product,
        plans=plans,
        activations=activations,
        ga_ratio=ga.ratio if ga else None,
        dead=_dead(before),
    )


def _check(methods, steps: int, lr: float, time_limit: float) -> tuple[str, ...] | None:
    if methods is not None:
        methods = (methods,) if isinstance(methods, str) else tuple(methods)
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise ConfigError(
                f"unknown method {bad[0]!r}: the doctor considers {', '.join(METHODS)}"
            )
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    if lr <= 0 or time_limit <= 0:
        raise ConfigError(f"lr and time_limit must be > 0, got {lr} and {time_limit}")
    return methods


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _inputs(model: nn.Module, example_inputs: Any, batches: Batches | None):
    """(x, y, where): the inputs of the measured pass, its targets (None without data), and
    where they came from; checked to run through the model."""
    example = _example(example_inputs)
    if batches is not None:
        x, y = batches.first()
        check_matches(example, x)
        where = "first batch of data"
    elif example is not None:
        x, y, where = example, None, "example_inputs"
    else:
        x, y = infer_input(model), None
        where = "random batch shaped for the first layer"
        if x is None:
            raise ConfigError(
                f"the doctor runs {type(model).__name__} to find and measure its sites: pass "
                "example_inputs=(tensor,) or data= (CLI: --input-shape N,C,H,W or --config)"
            )
    if x.dim() == 0 or x.shape[0] < 2:
        raise ConfigError(
            f"the doctor measures a batch: give at least 2 samples (8 or more is better), got "
            f"inputs of shape {tuple(x.shape)}"
        )
    device = _device(model)
    x, y = x.to(device), (y.to(device) if y is not None else None)
    training = {m: m.training for m in model.modules()}
    try:
        with torch.no_grad():
            run_model(model.eval(), x, "data" if batches is not None else where)
    finally:
        for m, flag in training.items():
            m.training = flag
    return x, y, where


def _example(example_inputs: Any) -> Tensor | None:
    if example_inputs is None:
        return None
    if isinstance(example_inputs, Tensor):
        return example_inputs
    if isinstance(example_inputs, tuple | list) and len(example_inputs) == 1:
        if isinstance(example_inputs[0], Tensor):
            return example_inputs[0]
    raise ConfigError("the doctor takes example_inputs as a tuple holding one input tensor")


def _plans(model: nn.Module, x: Tensor, methods) -> tuple[RewritePlan, dict[str, RewritePlan]]:
    """The GA plan (its sites are the model's sites as netadv plan lists them) and the plan of
    every considered method that changes a site."""
    sites = plan(model, "ga", example_inputs=(x,))
    if not sites.sites:
        raise ConfigError(
            f"no activation sites found in {type(model).__name__}: the doctor diagnoses the "
            "activations a rewrite could change (see netadv plan)"
        )
    out = {}
    for m in methods or METHODS:
        p = sites if m == "ga" else plan(model, m, example_inputs=(x,))
        if p.changed():
            out[m] = p
    return sites, out


def _loss_name(loss_fn: Callable | None, y: Tensor | None) -> str:
    if y is None:
        return "surrogate"  # measure() names the surrogate it picks
    if loss_fn is not None:
        return "loss_fn on the first batch"
    return ("cross-entropy" if not y.is_floating_point() else "mean squared error") + (
        " on the first batch"
    )


def _dead(m: Measurement) -> float | None:
    """Mean saturated/dead fraction of the measured sites whose activation has no adversarial."""
    rows = [r["saturated"] for r in m.sites if r.get("gain") is not None and not r["interval"]]
    return sum(rows) / len(rows) if rows else None


def _notes(m: Measurement) -> list[str]:
    missing = [r["name"] for r in m.sites if r.get("gain") is None]
    if not missing:
        return []
    return [
        f"{len(missing)} site(s) listed without statistics ({', '.join(missing[:3])}...): "
        "functional calls, whose inputs the doctor does not capture"
    ]


def _trial(model, plans, batches, loss_fn, before, steps, lr, time_limit, quiet, seed) -> Trial:
    """The baseline and each rewrite trained from the same weights on the same batches."""
    layer = before.layers[0]["layer"] if before.layers else None
    models = {"baseline": copy.deepcopy(model), **{m: rewrite(model, p) for m, p in plans.items()}}
    arms = [
        train_arm(
            name,
            m,
            batches,
            loss_fn or default_loss,
            steps=steps,
            lr=lr,
            time_limit=time_limit,
            input_layer=layer,
            quiet=quiet,
            seed=seed,
        )
        for name, m in models.items()
    ]
    return Trial(steps, lr, time_limit, arms)
