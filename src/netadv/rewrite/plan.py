"""``plan()``: find the activation sites of a model and decide what each becomes.

The decision is data (:class:`RewritePlan`, one :class:`Site` per activation call in forward
order) and can be printed before anything changes; :func:`netadv.rewrite` applies exactly it.

The pass: find the sites (:mod:`~netadv.rewrite.find`), decide each by the method's policy
(:mod:`~netadv.rewrite.policy`), settle how each change reaches its call (the calls of a shared
module, or of an owner that runs several times, change together or not at all), then assemble
the plan.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import replace
from itertools import count
from typing import Any

from torch import nn

from netadv.activations.registry import ActivationSpec, resolve
from netadv.defaults import (
    ANCHOR,
    INIT,
    INITS,
    MATCH_PARAMS,
    MAX_GAIN,
    PENALTY_WEIGHT,
    PERIOD,
    START,
    STARTS,
)
from netadv.errors import ConfigError
from netadv.layers.widths import n_params
from netadv.rewrite.find import Found, find_sites
from netadv.rewrite.flow import Flow
from netadv.rewrite.policy import (
    Alternation,
    Decision,
    Policy,
    calls_cannot_differ,
    considered,
    excluded,
    not_decomposed,
    runs_cannot_differ,
    serves_all,
    unreachable,
)
from netadv.rewrite.site import BLOCKS, METHODS, Method, RewritePlan, Role, Route, Site
from netadv.rewrite.trace import describe_inputs, discover

#: Layer options each method passes through to the layers it builds.
LAYER_OPTIONS = {
    Method.GA: ("anchor", "max_gain"),
    Method.HDFGD: ("init", "match_params"),
    Method.SA: ("init", "match_params", "penalty_weight", "anchor", "max_gain"),
    Method.REPLACE: (),
}
DEFAULTS = {
    "anchor": ANCHOR,
    "max_gain": MAX_GAIN,
    "init": INIT,
    "match_params": MATCH_PARAMS,
    "penalty_weight": PENALTY_WEIGHT,
}
#: Attribute of a rewritten model saying what rewrote it.
MARKER = "_netadv_rewrite"
#: Attribute of a rewritten model holding its plan's recipe (what netadv.save writes).
RECIPE = "_netadv_recipe"


def plan(
    model: nn.Module,
    method: str,
    *,
    activation: Any = None,
    example_inputs: Any = None,
    period: int = PERIOD,
    start: str = START,
    include: str | list[str] | None = None,
    exclude: str | list[str] | None = None,
    **layer_options: Any,
) -> RewritePlan:
    """Find every activation site of ``model`` in forward order and decide what it becomes.

    Args:
        method: "ga" (alternate f and A_f over sites), "hdfgd" (decompose every site that has
            a producer), "sa" (HD-FGD and SA alternate over the eligible sites) or "replace"
            (every site becomes ``activation``).
        activation: None keeps each site's activation; otherwise every site first becomes this
            activation (a name, a torch.nn module or class, a callable), then the method applies.
        example_inputs: a tuple of positional inputs (or a dict of keyword inputs) to run the
            model on once; without it the plan traces with torch.fx, or uses inputs the model
            describes (HuggingFace dummy_inputs), or the module structure, and says so.
        period, start: the alternation: sites ``i`` with ``(i // period) % 2 == 1`` get A_f (SA),
            the others f (HD-FGD); ``start="A"`` swaps the two.
        include, exclude: glob patterns (or lists of them) on site names (module paths, or
            ``owner.node()`` for functional calls); excluded sites stay unchanged and take no
            place in the alternation.
        layer_options: anchor, max_gain (ga, sa); init, match_params (hdfgd, sa);
            penalty_weight (sa). Passed to the layers. With ``init="copy"`` (the default)
            "hdfgd" keeps the model's function exactly; "ga" and "sa" change it at the sites
            they give A_f or the SA form, whatever the init (a trained model needs training
            again; docs/REWRITE.md gives the measured change).
    """
    opts = _check_options(method, period, start, layer_options)
    method = Method(method)
    check_not_rewritten(model)
    target = _target(activation, method)
    trace = discover(model, example_inputs)
    flow = Flow(model, trace)
    found = find_sites(model, trace, flow)
    inc, exc = _patterns(include), _patterns(exclude)
    policy = Policy(method, opts, Alternation(period, start), flow)
    decisions = _decide(policy, found, _considered(found, target, inc, exc))
    decisions = _settle_handles(found, _settle_shared(found, _routed(found, decisions)))
    return RewritePlan(
        method=method,
        activation=target.title if target is not None else None,
        options=_plan_options(period, start, inc, exc, opts),
        discovery=trace.mode,
        notes=list(trace.notes),
        sites=[_site(f, d) for f, d in zip(found, decisions)],
        params_before=n_params(model),
        fingerprint=fingerprint(model),
        activation_object=activation,
        inputs=describe_inputs(example_inputs),
    )


# ---- options ------------------------------------------------------------------------------------


def _check_options(method: str, period: int, start: str, layer_options: dict) -> dict:
    """The layer options ``method`` takes, defaults filled in; a ConfigError for a wrong one."""
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if start not in STARTS:
        raise ConfigError(f"start must be 'f' or 'A', got {start!r}")
    if not isinstance(period, int) or isinstance(period, bool) or period < 1:
        raise ConfigError(f"period must be a positive integer, got {period!r}")
    allowed = LAYER_OPTIONS[method]
    bad = sorted(set(layer_options) - set(allowed))
    if bad:
        raise ConfigError(
            f"option(s) {', '.join(bad)} do not apply to method {method!r}; it takes "
            f"{', '.join(allowed) or 'no layer options'}"
        )
    opts = {k: layer_options.get(k, DEFAULTS[k]) for k in allowed}
    _check_layer_options(opts)
    return opts


def _check_layer_options(opts: dict[str, Any]) -> None:
    """A ConfigError for layer options the layers would refuse."""
    if "init" in opts and opts["init"] not in INITS:
        raise ConfigError(f"init must be one of {INITS}, got {opts['init']!r}")
    if opts.get("match_params") and opts.get("init") == "copy":
        raise ConfigError(
            "match_params=True shrinks the hidden width, so the original weights cannot be "
            "copied: pass init='fresh'"
        )
    if opts.get("penalty_weight", 0) < 0:
        raise ConfigError(f"penalty_weight must be >= 0, got {opts['penalty_weight']}")


def _target(activation: Any, method: Method) -> ActivationSpec | None:
    """The activation every site first becomes (None: each keeps its own)."""
    if activation is not None:
        return resolve(activation)
    if method == Method.REPLACE:
        raise ConfigError("method 'replace' needs activation= (what every site becomes)")
    return None


def _patterns(p: Any) -> list[str]:
    """include/exclude as a list of glob patterns."""
    if p is None:
        return []
    return [p] if isinstance(p, str) else list(p)


def _plan_options(
    period: int, start: str, include: list[str], exclude: list[str], opts: dict[str, Any]
) -> dict[str, Any]:
    """The options as the plan shows them: the alternation, any patterns, the layer options."""
    options: dict[str, Any] = {"period": period, "start": start}
    if include:
        options["include"] = include
    if exclude:
        options["exclude"] = exclude
    options.update(opts)
    return options


def check_not_rewritten(model: nn.Module) -> None:
    """A ConfigError if netadv already rewrote ``model`` (or a module inside it)."""
    for path, m in model.named_modules():
        done = m.__dict__.get(MARKER)
        if done:
            where = f" (at {path})" if path else ""
            raise ConfigError(
                f"this model was already rewritten by netadv{where}: {done}. Rewrites do not "
                "compose; plan and rewrite the original model (use activation= to replace "
                "activations and apply a method in one step)"
            )


def fingerprint(model: nn.Module) -> tuple:
    """The model's module paths and types: a plan applies only to a model with the same."""
    return tuple((p, type(m).__name__) for p, m in model.named_modules())


# ---- decide -------------------------------------------------------------------------------------


def _selected(f: Found, include: list[str], exclude: list[str]) -> bool:
    """Whether include/exclude let the method consider the site."""
    names = [f.name] + ([f.path] if f.path and f.path != f.name else [])
    hit = lambda patterns: any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)
    return (not include or hit(include)) and not (exclude and hit(exclude))


def _considered(
    found: list[Found], target: ActivationSpec | None, include: list[str], exclude: list[str]
) -> list[Decision]:
    """Every site before the method: excluded, or considered (numbered in forward order)."""
    slots = count()
    return [
        considered(f, target, next(slots)) if _selected(f, include, exclude) else excluded()
        for f in found
    ]


def _decide(policy: Policy, found: list[Found], decisions: list[Decision]) -> list[Decision]:
    """What each considered site becomes under the policy's method."""
    if policy.method in (Method.HDFGD, Method.SA):
        return _decide_blocks(policy, found, decisions)
    decide = policy.ga if policy.method == Method.GA else policy.replaced
    return [d if d.slot is None else decide(f, d) for f, d in zip(found, decisions)]


def _decide_blocks(policy: Policy, found: list[Found], decisions: list[Decision]) -> list[Decision]:
    """HD-FGD/SA: every considered site with a producer becomes a block, in the alternation of
    block roles over those sites; the others say why they are not decomposed."""
    out = list(decisions)
    folds = {}
    for f, d in zip(found, decisions):
        if d.slot is None:
            continue
        fold, why = policy.fold(f, d)
        if fold is None:
            out[f.index] = d.kept(not_decomposed(why))
        else:
            folds[f.index] = fold
    shrunk: dict[str, int] = {}  # consumer path -> its input width after match_params
    for e, (i, fold) in enumerate(folds.items()):
        producer_in = shrunk.get(fold.producer.name)
        out[i], width = policy.block(out[i], fold, policy.block_role(e), producer_in)
        if width is not None and fold.consumer is not None:
            shrunk[fold.consumer.name] = width
    return out


# ---- settle how each change reaches its call ----------------------------------------------------


def _routed(found: list[Found], decisions: list[Decision]) -> list[Decision]:
    """Each change's route: as found, or through one new module for every call of a shared
    module (settled next), or none (the site stays unchanged, and says why)."""
    out = []
    for f, d in zip(found, decisions):
        if not d.changes:
            out.append(replace(d, route=None))
        elif f.reach is None or d.becomes in BLOCKS:
            out.append(replace(d, route=f.route))
        elif f.kind == "module" and f.calls > 1:
            out.append(replace(d, route=Route.SHARED))
        else:
            out.append(d.unchanged(unreachable(f.reach)))
    return out


def _settle_shared(found: list[Found], decisions: list[Decision]) -> list[Decision]:
    """Calls of a shared module whose owner does not trace: one new module can serve all of
    them only if they all become the same thing."""
    out = list(decisions)
    shared = _groups(found, lambda f: f.path if decisions[f.index].route == Route.SHARED else None)
    for path, group in shared.items():
        every = [f for f in found if f.path == path]
        reach = group[0].reach or ""
        if len(group) == len(every) and _alike(every, decisions):
            for f in every:
                out[f.index] = replace(decisions[f.index], note=serves_all(f.calls, reach))
            continue
        for f in every:
            d = decisions[f.index]
            if d.route is not None or d.becomes == Role.F:
                out[f.index] = d.unchanged(calls_cannot_differ(reach))
    return out


def _settle_handles(found: list[Found], decisions: list[Decision]) -> list[Decision]:
    """Sites that reach the same graph node (their owner runs several times per forward) are
    one call in the code: they change only if they all become the same thing."""
    out = list(decisions)
    handle = lambda f: (f.owner, f.kind, f.target, f.occurrence)
    groups = _groups(found, lambda f: handle(f) if f.kind == "function" or f.calls > 1 else None)
    for (owner, *_), group in groups.items():
        changing = any(decisions[f.index].route is not None for f in group)
        if len(group) > 1 and changing and not _alike(group, decisions):
            for f in group:
                out[f.index] = decisions[f.index].unchanged(runs_cannot_differ(owner, len(group)))
    return out


def _groups(found: list[Found], key: Callable[[Found], Hashable]) -> dict[Hashable, list[Found]]:
    """Found sites by ``key`` (None: in no group), each group and the groups in forward order."""
    groups: dict[Hashable, list[Found]] = defaultdict(list)
    for f in found:
        k = key(f)
        if k is not None:
            groups[k].append(f)
    return groups


def _alike(group: list[Found], decisions: list[Decision]) -> bool:
    """Whether the sites of ``group`` all become the same thing."""
    what = lambda d: (d.becomes, d.new_activation, d.spec.key if d.spec else None)
    return len({what(decisions[f.index]) for f in group}) == 1


# ---- assemble -----------------------------------------------------------------------------------


def _site(f: Found, d: Decision) -> Site:
    """The public record of one found site and its decision."""
    name = lambda call: None if call is None else call.name
    fold = d.fold
    return Site(
        index=f.index,
        name=f.name,
        kind=f.kind,
        path=f.path,
        owner=f.owner,
        activation=f.activation,
        becomes=d.becomes,
        new_activation=d.new_activation,
        producer=name(fold.producer) if fold else None,
        norm=name(fold.norm) if fold else None,
        consumer=name(fold.consumer) if fold else None,
        params_delta=d.params_delta,
        note=d.note,
        call=f.call,
        calls=f.calls,
        node=f.node,
        route=d.route,
        target=f.target,
        occurrence=f.occurrence,
        slot=d.slot,
        spec=d.spec,
        paths=f.paths,
        attribute=f.attribute,
    )
