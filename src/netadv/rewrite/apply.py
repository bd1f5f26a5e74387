"""``rewrite()``: apply a :class:`RewritePlan` to a model (a copy, or in place)."""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import torch.fx as fx
from torch import nn

from netadv.errors import ConfigError
from netadv.layers.adversarial import Adversarial
from netadv.layers.hdfgd import hdfgd
from netadv.rewrite import ecosystem as eco
from netadv.rewrite.graph import OwnerGraph, install, point_to, unique_name
from netadv.rewrite.modules import Folded, activation_module
from netadv.rewrite.plan import (
    DEFAULTS,
    MARKER,
    RECIPE,
    check_not_rewritten,
    fingerprint,
    plan,
)
from netadv.rewrite.site import BLOCKS, RewritePlan, Role, Route, Site


def rewrite(
    model: nn.Module, method: str | RewritePlan, *, inplace: bool = False, **options: Any
) -> nn.Module:
    """Rewrite ``model`` by :func:`netadv.plan` ``(model, method, **options)`` and return the
    result: a rewritten deep copy, or ``model`` itself with ``inplace=True``. ``method`` may
    also be a :class:`RewritePlan` made for this model, which is then applied exactly.

    Rewriting a model a second time is an error (rewrites do not compose: use ``activation=``
    to replace activations and apply a method in one plan)."""
    check_not_rewritten(model)
    if isinstance(method, RewritePlan):
        if options:
            raise ConfigError(
                f"rewrite(model, plan) takes no other options (got {', '.join(options)}); "
                "they are part of the plan"
            )
        the_plan = method
        if fingerprint(model) != the_plan.fingerprint:
            raise ConfigError(
                "this plan was made for a different model (its modules differ); plan again"
            )
    else:
        the_plan = plan(model, method, **options)
    out = model if inplace else copy.deepcopy(model)
    apply_plan(out, the_plan)
    return out


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent), name, module)


class _Builder:
    def __init__(self, model: nn.Module, p: RewritePlan):
        self.model = model
        self.plan = p
        self.opts = p.options
        self._adversarial: dict[tuple, nn.Module] = {}

    def option(self, name: str) -> Any:
        """A layer option of the plan (the default where the plan's method does not take it)."""
        return self.opts.get(name, DEFAULTS[name])

    def activation(self, s: Site) -> nn.Module | None:
        """The module a site's call becomes (None: it keeps what it has)."""
        if s.becomes in BLOCKS:
            return Folded(into=s.producer)
        if s.becomes == Role.A_F:
            key = s.spec.key
            if key not in self._adversarial:
                self._adversarial[key] = Adversarial(
                    s.spec, anchor=self.opts["anchor"], max_gain=self.opts["max_gain"]
                )
            return copy.deepcopy(self._adversarial[key])
        if s.new_activation is not None:
            obj = self.plan.activation_object
            return activation_module(obj if isinstance(obj, nn.Module) else s.spec)
        return None

    def block(self, s: Site, current: dict[str, nn.Module]) -> dict[str, nn.Module]:
        """The HD-FGD/SA block and the modules around it, by path; ``current`` holds what
        earlier blocks put in place (a consumer an earlier block shrank may be this producer)."""
        get = lambda path: current[path] if path in current else self.model.get_submodule(path)
        producer = get(s.producer)
        norm = get(s.norm) if s.norm else None
        consumer = get(s.consumer) if s.consumer else None
        block = hdfgd(
            eco.as_producer(producer),
            s.spec,
            norm=norm,
            consumer=eco.as_producer(consumer) if consumer is not None else None,
            init=self.opts["init"],
            match_params=self.opts["match_params"],
            adversarial=s.becomes == Role.SA,
            penalty_weight=self.option("penalty_weight"),
            anchor=self.option("anchor"),
            max_gain=self.option("max_gain"),
        )
        out: dict[str, nn.Module] = {s.producer: block}
        if norm is not None:
            out[s.norm] = Folded(into=s.producer)
        if consumer is not None:
            # the shrunken consumer stays where it was, after any Dropout in between
            new_consumer = block.consumer
            del block._modules["consumer"]
            block.consumer = None
            out[s.consumer] = new_consumer
        return out


def apply_plan(model: nn.Module, p: RewritePlan) -> None:
    build = _Builder(model, p)
    swaps: dict[str, nn.Module] = {}
    by_owner: dict[str, list[tuple[Site, nn.Module | None]]] = defaultdict(list)
    for s in p.sites:
        if s.route is None:
            continue
        new = build.activation(s)
        if s.becomes in BLOCKS:
            swaps.update(build.block(s, swaps))
        if s.route in (Route.PATH, Route.SHARED):
            for path in s.paths:
                swaps.setdefault(path, new)
        elif s.route == Route.ATTRIBUTE:
            owner = model.get_submodule(s.owner)
            new.train(owner.training)
            setattr(owner, s.attribute, new)  # the module now stands where the function was
        else:
            by_owner[s.owner].append((s, new))

    for owner_path, items in by_owner.items():
        _rewrite_owner(model, owner_path, items, p)

    for path, new in swaps.items():
        old = model.get_submodule(path)
        new.train(old.training)
        _set(model, path, new)
    changed = [s.path or s.owner for s in p.sites if s.route is not None] + list(swaps)
    eco.after_rewrite(model, changed)
    setattr(model, MARKER, f"netadv.rewrite(method={p.method!r}): {p.summary()}")
    setattr(model, RECIPE, p.recipe())


def _rewrite_owner(
    model: nn.Module, owner_path: str, items: list[tuple[Site, nn.Module | None]], p: RewritePlan
) -> None:
    """Point the owner's changed calls at their new modules in its traced forward."""
    owner = model.get_submodule(owner_path)
    g = OwnerGraph.of(owner)
    if g.graph is None:
        raise RuntimeError(f"{owner_path or 'the model'} no longer traces: {g.error}")
    # the new module of each changed call, by the call's occurrence in its slot
    changed = {(s.kind, s.target, s.occurrence): new for s, new in items}
    done = set()
    for s, _new in items:
        slot = (s.kind, s.target)
        if slot in done:
            continue
        done.add(slot)
        new = {j: m for (kind, target, j), m in changed.items() if (kind, target) == slot}
        if s.kind == "function":
            _point_function_calls(owner, g.graph, g.slots[slot], new)
        else:
            calls = [x for x in p.sites if x.kind == "module" and x.path == s.path]
            own_all = "." not in s.target and all(x.owner == owner_path for x in calls)
            _split_module_calls(owner, g.graph, g.slots[slot], s.target, new, own_all)
    install(owner, g.graph)


def _point_function_calls(
    owner: nn.Module, graph: fx.Graph, nodes: list[fx.Node], new: dict[int, nn.Module]
) -> None:
    """Each changed function call becomes a call of its new module, registered on the owner."""
    for j, node in enumerate(nodes):
        if j in new:
            name = unique_name(owner, node.name)
            new[j].train(owner.training)
            setattr(owner, name, new[j])
            point_to(graph, node, name)


def _split_module_calls(
    owner: nn.Module,
    graph: fx.Graph,
    nodes: list[fx.Node],
    target: str,
    new: dict[int, nn.Module],
    own_all: bool,
) -> None:
    """A module called at several places: every call gets its own module (the new one, or a
    copy of the original); with ``own_all`` (the owner makes every call of its own child) the
    first call keeps the original's name."""
    original = owner.get_submodule(target)
    # registered under one name per call (nn.Sequential(lin, act, lin, act)): one each
    regs = [n for n, c in owner._modules.items() if c is original]
    names = regs if own_all and len(regs) == len(nodes) else None
    for j, node in enumerate(nodes):
        module = new.get(j)
        if j == 0 and own_all:
            if module is not None:
                module.train(original.training)
                setattr(owner, target, module)
            continue
        if module is None:
            module = copy.deepcopy(original)
        module.train(original.training)
        name = names[j] if names else unique_name(owner, f"{target}_{j}")
        setattr(owner, name, module)
        point_to(graph, node, name)
