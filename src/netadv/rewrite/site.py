"""The plan as data: :class:`Site` (one activation call and what it becomes), :class:`RewritePlan`
(every site of a model, printable as a table), and the names they use (:class:`Method`,
:class:`Role`, :class:`Route`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from netadv.activations.registry import ActivationSpec


class _Name(str, Enum):
    """A name that is its string: equal to it, hashed, printed, formatted, repr'd and written to
    JSON as it (``Role.SA == "SA"``), so user code and printed plans see plain strings."""

    __str__ = str.__str__
    __format__ = str.__format__
    __repr__ = str.__repr__


class Method(_Name):
    """What a plan does to the sites (see :func:`netadv.plan`)."""

    GA = "ga"
    HDFGD = "hdfgd"
    SA = "sa"
    REPLACE = "replace"


class Role(_Name):
    """What a site becomes."""

    F = "f"  # the activation (its own, or the replacement)
    A_F = "A_f"  # the adversarial of the activation
    HDFGD = "HD-FGD"  # the producer (+norm) and the activation become an HD-FGD block
    SA = "SA"  # the same, with adversarial term functions
    UNCHANGED = "unchanged"


#: Roles in which the producer (+norm) and the activation become one block.
BLOCKS = (Role.HDFGD, Role.SA)


class Route(_Name):
    """How :func:`netadv.rewrite` reaches a site it changes."""

    PATH = "path"  # swap the module registered at the site's path
    SHARED = "shared"  # one new module for every call of a shared module
    GRAPH = "graph"  # point the call's node in its owner's traced forward at a new module
    ATTRIBUTE = "attribute"  # set the owner's attribute holding the called function to a module


METHODS = tuple(m.value for m in Method)
ROLES = tuple(r.value for r in Role)


@dataclass
class Site:
    """One activation call and what the plan makes of it."""

    index: int  # forward-execution order among all sites
    name: str  # module path (with the call number if the module is called more than once), or
    #            owner path + fx node name + "()" for a functional call
    kind: str  # "module" | "function"
    path: str | None  # module path of a module site
    owner: str  # module whose forward makes the call ("" = the model)
    activation: str  # the activation the site computes now
    becomes: Role
    new_activation: str | None = None  # set when the site's activation is replaced
    producer: str | None = None
    norm: str | None = None
    consumer: str | None = None
    params_delta: int = 0
    note: str = ""
    call: int = 0  # which call of the module (module sites)
    calls: int = 1  # calls of the module per forward
    node: str | None = None  # fx node name in the owner's graph (functional sites)
    route: Route | None = None  # how rewrite reaches it; None: no change
    # internal (not in to_dict)
    target: str = field(default="", repr=False)  # path in owner / function family
    occurrence: int = field(default=0, repr=False)
    slot: int | None = field(default=None, repr=False)  # index among considered sites
    spec: ActivationSpec | None = field(default=None, repr=False)  # what it computes after
    paths: tuple[str, ...] = field(default=(), repr=False)  # every registration of the module
    attribute: str | None = field(default=None, repr=False)  # the owner's attribute (ATTRIBUTE)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("target", "occurrence", "slot", "spec", "paths", "attribute"):
            d.pop(k)
        return {k: v.value if isinstance(v, Enum) else v for k, v in d.items()}


#: The fields of a site a saved recipe is checked against when it is loaded.
RECIPE_FIELDS = ("index", "name", "activation", "becomes", "new_activation", "producer", "norm",
                 "consumer", "params_delta")  # fmt: skip


def _recipe_site(s: Site) -> dict[str, Any]:
    d = s.to_dict()
    return {k: d[k] for k in RECIPE_FIELDS}


@dataclass
class RewritePlan:
    """What :func:`netadv.rewrite` will do to a model, site by site."""

    method: Method
    activation: str | None
    options: dict[str, Any]
    discovery: str
    notes: list[str]
    sites: list[Site]
    params_before: int
    fingerprint: tuple = field(repr=False, default=())
    activation_object: Any = field(repr=False, default=None)
    #: the example inputs' shapes and dtypes (:func:`netadv.rewrite.trace.describe_inputs`)
    inputs: Any = field(repr=False, default=None)

    def recipe(self) -> dict[str, Any]:
        """What :func:`netadv.save` records to redo this plan on a fresh base model: the call
        (method, activation by name, options, example input shapes) and the sites it gave."""
        return {
            "method": str(self.method),
            "activation": self.activation,
            "options": dict(self.options),
            "inputs": self.inputs,
            "discovery": self.discovery,
            "sites": [_recipe_site(s) for s in self.sites],
            "params_before": self.params_before,
            "params_after": self.params_after,
        }

    @property
    def params_after(self) -> int:
        return self.params_before + sum(s.params_delta for s in self.sites)

    def counts(self) -> dict[str, int]:
        c = Counter(s.becomes for s in self.sites)
        return {r: c[r] for r in ROLES if c[r]}

    def changed(self) -> list[Site]:
        return [s for s in self.sites if s.route is not None]

    def __len__(self) -> int:
        return len(self.sites)

    def __iter__(self):
        return iter(self.sites)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": str(self.method),
            "activation": self.activation,
            "options": dict(self.options),
            "discovery": self.discovery,
            "notes": list(self.notes),
            "sites": [s.to_dict() for s in self.sites],
            "counts": self.counts(),
            "params_before": self.params_before,
            "params_after": self.params_after,
        }

    def summary(self) -> str:
        counts = ", ".join(f"{n} {r}" for r, n in self.counts().items()) or "none"
        d = self.params_after - self.params_before
        return (
            f"{len(self.sites)} sites: {counts}; parameters {self.params_before:,} -> "
            f"{self.params_after:,} ({d:+,})"
        )

    def __str__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items() if v is not None)
        head = f"RewritePlan(method={self.method}"
        head += f", activation={self.activation}" if self.activation else ""
        head += f", {opts})" if opts else ")"
        lines = [head, f"discovery: {self.discovery}"]
        lines += [f"note: {n}" for n in self.notes]
        rows, footnotes = _table(self.sites)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        for note, n in footnotes.items():
            lines.append(f"[{n}] {note}")
        lines.append(self.summary())
        return "\n".join(lines)

    __repr__ = __str__


def _table(sites: list[Site]) -> tuple[list[tuple[str, ...]], dict[str, int]]:
    """The printed plan's rows (header first; a consumer column only where a site has one)
    and its footnotes (note -> number, numbered in order of first use)."""
    footnotes: dict[str, int] = {}
    rows = [("#", "site", "activation", "becomes", "producer", "norm", "params", "note")]
    show_consumer = any(s.consumer for s in sites)
    if show_consumer:
        rows[0] = rows[0][:6] + ("consumer",) + rows[0][6:]
    for s in sites:
        act = s.activation + (f" -> {s.new_activation}" if s.new_activation else "")
        ref = f"[{footnotes.setdefault(s.note, len(footnotes) + 1)}]" if s.note else ""
        row = (
            str(s.index),
            s.name,
            act,
            str(s.becomes),
            s.producer or "",
            s.norm or "",
            f"{s.params_delta:+,}" if s.params_delta else "0",
            ref,
        )
        if show_consumer:
            row = row[:6] + (s.consumer or "",) + row[6:]
        rows.append(row)
    return rows, footnotes
