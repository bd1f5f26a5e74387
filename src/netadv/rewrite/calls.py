"""The records of a trace: :class:`Call` (one call in execution order), :class:`SiteCall`
(what makes a call an activation site) and :class:`Trace` (the calls and the data flow between
them), and which modules a trace does not look inside (:func:`is_atomic`).

:mod:`netadv.rewrite.trace` makes a Trace by running, tracing or reading a model.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from netadv.activations import registry
from netadv.activations.registry import ActivationSpec
from netadv.layers.adversarial import Adversarial
from netadv.layers.hdfgd import HDFGD
from netadv.rewrite import ecosystem as eco
from netadv.rewrite.modules import Activation, Folded

Key = Hashable


@dataclass
class SiteCall:
    """What makes a call an activation site."""

    kind: str  # "module" | "function"
    target: str  # module path relative to the owner, or the function's family ("sigmoid")
    spec: ActivationSpec | None  # None: an activation netadv has no registry entry for
    title: str
    inplace: bool = False
    node: str | None = None  # fx node name in the root trace (torch.fx discovery)
    occurrence: int = 0  # index among the owner's calls of the same target, per owner call
    func: Any = field(default=None, compare=False, repr=False)  # the function called


@dataclass
class Call:
    kind: str  # "module" | "function" | "output"
    name: str  # module path, or the function's name
    owner: str  # path of the module whose forward made the call ("" = the model)
    owner_call: int
    inputs: tuple[Key, ...]
    outputs: tuple[Key, ...]
    passthrough: bool = False
    module_type: type | None = None
    site: SiteCall | None = None

    def describe(self) -> str:
        if self.kind == "module":
            return f"{self.name} ({self.module_type.__name__})"
        if self.kind == "output":
            return "the model's output"
        return f"{self.name} (a function call)"


@dataclass
class Trace:
    mode: str  # "example_inputs" | "inferred inputs" | "torch.fx" | "module structure"
    calls: list[Call]
    module_calls: Counter  # module path -> calls per forward
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.users: dict[Key, list[int]] = defaultdict(list)
        self.maker: dict[Key, int] = {}
        for i, c in enumerate(self.calls):
            for k in dict.fromkeys(c.inputs):
                self.users[k].append(i)
            for k in c.outputs:
                self.maker.setdefault(k, i)

    def sites(self) -> list[Call]:
        return [c for c in self.calls if c.site is not None]

    def readers(self, key: Key) -> list[Call]:
        return [self.calls[i] for i in self.users.get(key, [])]

    def made_by(self, key: Key) -> Call | None:
        i = self.maker.get(key)
        return None if i is None else self.calls[i]


def is_netadv(m: nn.Module) -> bool:
    return isinstance(m, Adversarial | HDFGD | Folded | Activation)


def is_atomic(m: nn.Module) -> bool:
    return (
        eco.module_activation(m) is not None
        or is_netadv(m)
        or eco.is_producer(m)
        or eco.is_passthrough(m)
        or eco.is_norm(m)
        or eco.is_opaque(m)
    )


def module_site(m: nn.Module, target: str) -> SiteCall | None:
    found = eco.module_activation(m)
    if found is None:
        return None
    name, title = found
    spec = registry.resolve(m) if name is not None else None
    return SiteCall("module", target, spec, title)


def _constant(v: Any) -> bool:
    return v is None or isinstance(v, bool | int | float | str)


def function_site(op: eco.FunctionalOp, rest: tuple, kwargs: dict, func: Any = None) -> SiteCall:
    """The site of a call of ``func`` (an activation function ``op``) with the arguments
    ``rest`` after the input."""
    if not all(_constant(v) for v in list(rest) + list(kwargs.values())):
        title = f"{op.family} (computed arguments)"
        return SiteCall("function", op.family, None, title, func=func)
    name, params, inplace = eco.functional_activation(op, rest, kwargs)
    spec = registry.by_name(name, **params) if name is not None else None
    title = spec.title if spec else op.family
    return SiteCall("function", op.family, spec, title, inplace, func=func)


class Owners:
    """Relative paths of modules inside their owners (a shared module may live elsewhere)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.cache: dict[str, dict[int, str]] = {}

    def relative(self, owner: str, module: nn.Module, path: str) -> str:
        if owner == "":
            return path
        if path.startswith(owner + "."):
            return path[len(owner) + 1 :]
        if owner not in self.cache:
            sub = self.model.get_submodule(owner)
            self.cache[owner] = {}
            for p, m in sub.named_modules():
                self.cache[owner].setdefault(id(m), p)
        return self.cache[owner].get(id(module), path)


def number_sites(calls: list[Call]) -> None:
    seen: Counter = Counter()
    for c in calls:
        if c.site is not None:
            k = (c.owner, c.owner_call, c.site.kind, c.site.target)
            c.site.occurrence = seen[k]
            seen[k] += 1
