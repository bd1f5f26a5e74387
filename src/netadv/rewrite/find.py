"""Find: every activation call of a traced model, named, with how a change could reach it.

What is found here is what the trace says, before any decision: a :class:`Found` per call, in
forward order. The plan decides what each becomes (:mod:`netadv.rewrite.policy`).
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass

from torch import nn

from netadv.activations.registry import ActivationSpec
from netadv.rewrite.calls import Call, Trace
from netadv.rewrite.flow import Flow
from netadv.rewrite.graph import OwnerGraph, input_node
from netadv.rewrite.site import Route


@dataclass(frozen=True)
class Found:
    """One activation call as the trace shows it (the fields of :class:`Site` it fills)."""

    index: int  # forward-execution order among all sites
    name: str
    kind: str  # "module" | "function"
    path: str | None  # module path of a module site
    owner: str  # module whose forward makes the call ("" = the model)
    activation: str  # the activation's title
    spec: ActivationSpec | None  # what it computes (None: not a registered activation)
    record: Call  # the call in the trace, for the data flow around it
    route: Route | None  # how a change would reach the call
    reach: str | None = None  # why a change cannot reach the call (None: it can)
    call: int = 0  # which call of the module (module sites)
    calls: int = 1  # calls of the module per forward
    node: str | None = None  # fx node name in the owner's graph (functional sites)
    target: str = ""  # path in owner / function family
    occurrence: int = 0
    paths: tuple[str, ...] = ()  # every registration of the module
    attribute: str | None = None  # the owner's attribute holding the called function


def find_sites(model: nn.Module, trace: Trace, flow: Flow) -> list[Found]:
    """Every activation call of ``trace`` in forward order."""
    finder = _Finder(model, trace, flow)
    return [
        finder.module_site(i, c) if c.site.kind == "module" else finder.function_site(i, c)
        for i, c in enumerate(trace.sites())
    ]


class _Finder:
    """Names the calls of one trace and finds how each can be reached (owner graphs are
    traced once, when a call first needs one)."""

    def __init__(self, model: nn.Module, trace: Trace, flow: Flow):
        self.model = model
        self.trace = trace
        self.flow = flow
        self.graph = functools.cache(lambda owner: OwnerGraph.of(model.get_submodule(owner)))
        calls = trace.sites()
        self.per_owner_call = Counter(_slot(c) for c in calls)
        self.site_calls = Counter(c.name for c in calls if c.site.kind == "module")
        self.call_number: Counter = Counter()

    def module_site(self, index: int, c: Call) -> Found:
        """A module call: reached through its path where it is the module's only call, else
        through its owner's graph."""
        calls = self.trace.module_calls.get(c.name, 1)
        number = self.call_number[c.name]
        self.call_number[c.name] += 1
        route, reach = Route.PATH, None
        if calls != 1 or self.site_calls[c.name] != 1:
            _, route, reach = self.through_graph(c)
        return Found(
            index=index,
            name=c.name + (f" [call {number + 1}/{calls}]" if calls > 1 else ""),
            kind="module",
            path=c.name,
            owner=c.owner,
            activation=c.site.title,
            spec=c.site.spec,
            record=c,
            route=route,
            reach=reach,
            call=number,
            calls=calls,
            target=c.site.target,
            occurrence=c.site.occurrence,
            paths=tuple(self.flow.paths(c.name)),
        )

    def function_site(self, index: int, c: Call) -> Found:
        """A torch function call: reached through its owner's graph, named after its node."""
        sc = c.site
        node, route, reach = self.through_graph(c)
        attribute = None
        if route is None:  # no graph: the owner may call a function it holds as an attribute
            attribute = self.held_function(c)
            if attribute is not None:
                route, reach = Route.ATTRIBUTE, None
        name = attribute or node or sc.node or sc.target
        if attribute is None and not node and not sc.node and sc.occurrence:
            name += f"_{sc.occurrence}"
        return Found(
            index=index,
            name=(c.owner + "." if c.owner else "") + name + "()",
            kind="function",
            path=None,
            owner=c.owner,
            activation=sc.title,
            spec=sc.spec,
            record=c,
            route=route,
            reach=reach,
            node=node,
            target=sc.target,
            occurrence=sc.occurrence,
            attribute=attribute,
        )

    def held_function(self, c: Call) -> str | None:
        """The owner's attribute holding the function this call calls, when the owner makes
        exactly one such call per forward (``self.activation = F.gelu; ...
        self.activation(x)``, as torch.nn.TransformerEncoderLayer does): setting that attribute
        to a module then reaches the call without tracing the owner."""
        func, owner = c.site.func, self.model.get_submodule(c.owner)
        if func is None or self.per_owner_call[_slot(c)] != 1 or c.site.inplace:
            return None
        held = [k for k, v in vars(owner).items() if not k.startswith("_") and v is func]
        return held[0] if len(held) == 1 else None

    def through_graph(self, c: Call) -> tuple[str | None, Route | None, str | None]:
        """Whether the owner's traced forward lets the call be pointed at a new module: (the
        node of a function call, the route, why not)."""
        sc = c.site
        seen = self.per_owner_call[_slot(c)]  # such calls per call of the owner
        node, why = self.graph(c.owner).node(sc.kind, sc.target, sc.occurrence, seen)
        if node is None:
            return None, None, f"the owner {c.owner or 'model'} {why}"
        if sc.kind != "function":
            return None, Route.GRAPH, None
        x = input_node(node)
        if sc.inplace and (x is None or len(x.users) > 1):
            why = f"in-place call {node.name} whose input is read again after it cannot be replaced"
            return node.name, None, why
        return node.name, Route.GRAPH, None


def _slot(c: Call) -> tuple:
    """Calls of one target by one call of one owner share a slot."""
    return (c.owner, c.owner_call, c.site.kind, c.site.target)
