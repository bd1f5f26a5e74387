"""Decide: what each found site becomes under a method, and why not where it cannot.

The policy of METHOD.md section 5, one small decision per method: ``replace`` (every site takes
the new activation), GA (the alternation's second sites get ``A_f``), HD-FGD (every site with a
producer becomes a block) and SA (HD-FGD and SA blocks alternate over those sites). The "why
not" of every site that stays as it is comes from the functions at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from netadv.activations.kernel import stable_interval
from netadv.activations.registry import ActivationSpec
from netadv.decompose import decompose
from netadv.defaults import PERIOD, START
from netadv.errors import ConfigError, NoAdversarialError
from netadv.layers.widths import fold_delta
from netadv.rewrite import ecosystem as eco
from netadv.rewrite.find import Found
from netadv.rewrite.flow import Flow, Fold
from netadv.rewrite.site import BLOCKS, Method, Role, Route


@dataclass(frozen=True)
class Decision:
    """What the plan makes of one found site (the rest of a :class:`Site`'s fields)."""

    becomes: Role
    note: str = ""
    new_activation: str | None = None  # the replacement's title, where the activation changes
    spec: ActivationSpec | None = None  # what the site computes after
    slot: int | None = None  # place among the sites the method considers (None: excluded)
    fold: Fold | None = None  # the calls an HD-FGD/SA block replaces
    params_delta: int = 0
    route: Route | None = None  # how rewrite reaches the change (set last)

    @property
    def changes(self) -> bool:
        """Whether the site computes something else after the rewrite."""
        return self.becomes in (Role.A_F, *BLOCKS) or self.new_activation is not None

    def kept(self, note: str) -> Decision:
        """The site keeps its activation (or just takes the replacement), and says why."""
        becomes = Role.F if self.new_activation else Role.UNCHANGED
        return replace(self, becomes=becomes, note=note, fold=None, params_delta=0)

    def unchanged(self, note: str) -> Decision:
        """The site does not change at all, and says why."""
        return replace(
            self,
            becomes=Role.UNCHANGED,
            note=note,
            new_activation=None,
            fold=None,
            params_delta=0,
            route=None,
        )


@dataclass(frozen=True)
class Alternation:
    """Sites ``i`` with ``(i // period) % 2 == 1`` take the second role (A_f for GA, SA for
    SA), the others the first; ``start="A"`` swaps the two."""

    period: int = PERIOD
    start: str = START

    def second(self, i: int) -> bool:
        """Whether site ``i`` of the alternation takes the second role."""
        return ((i // self.period) % 2 == 1) == (self.start == "f")


def considered(found: Found, target: ActivationSpec | None, slot: int) -> Decision:
    """A site the method considers: it computes ``target`` (if given) and stays ``f``."""
    own = found.spec
    renamed = target is not None and (own is None or own.key != target.key)
    new = target if target is not None else own
    return Decision(Role.F, new_activation=target.title if renamed else None, spec=new, slot=slot)


def excluded() -> Decision:
    """A site include/exclude leaves out: unchanged, and no place in the alternation."""
    return Decision(Role.UNCHANGED, note="excluded by include/exclude")


class Policy:
    """The decisions of one plan: a method, its layer options and alternation, the model's
    data flow. What an activation can become is asked once per activation."""

    def __init__(self, method: Method, opts: dict[str, Any], alternation: Alternation, flow: Flow):
        self.method = method
        self.opts = opts
        self.alternation = alternation
        self.flow = flow
        self._memo: dict[tuple, Any] = {}

    def replaced(self, found: Found, d: Decision) -> Decision:
        """replace: the site takes the new activation (noted where it already has it)."""
        return d if d.new_activation is not None else replace(d, note=f"already {d.spec.title}")

    def ga(self, found: Found, d: Decision) -> Decision:
        """GA: the alternation's second sites become ``A_f``, where the activation has one."""
        if not self.alternation.second(d.slot):
            return d
        if d.spec is None:
            return replace(d, becomes=Role.UNCHANGED, note=unregistered(found.activation))
        why = self._once("adversarial", d.spec, self._no_adversarial)
        return replace(d, becomes=Role.UNCHANGED, note=why) if why else replace(d, becomes=Role.A_F)

    def fold(self, found: Found, d: Decision) -> tuple[Fold | None, str | None]:
        """HD-FGD eligibility: the calls a block around the site replaces, or why none can."""
        if d.spec is None:
            return None, unregistered(found.activation)
        why = self._once("decompose", d.spec, self._no_decomposition)
        if why is None and found.reach is not None:
            why = unreachable(found.reach)
        if why is not None:
            return None, why
        return self.flow.fold(found.record, self.opts["match_params"])

    def block_role(self, e: int) -> Role:
        """HD-FGD decomposes every eligible site; SA alternates HD-FGD and SA over them."""
        return Role.SA if self.method == Method.SA and self.alternation.second(e) else Role.HDFGD

    def block(
        self, d: Decision, fold: Fold, role: Role, producer_in: int | None
    ) -> tuple[Decision, int | None]:
        """The site as an HD-FGD/SA block, with the parameters it adds, and the hidden width
        its consumer then reads; or the site kept, and why, where no block can be built.
        ``producer_in``: the producer's input width where an earlier block shrank it."""
        if role == Role.SA:
            why = self._once("sa", d.spec, self._no_split_adversarial)
            if why:
                return d.kept(why), None
        module = lambda call: None if call is None else self.flow.module(call.name)
        layer = lambda call: None if call is None else eco.as_producer(module(call))
        try:
            delta, width = fold_delta(
                layer(fold.producer),
                module(fold.norm),
                layer(fold.consumer),
                decompose(d.spec).k,
                self.opts["match_params"],
                producer_in,
            )
        except ConfigError as err:
            return d.kept(str(err)), None
        return replace(d, becomes=role, fold=fold, params_delta=delta), width

    # ---- what an activation can become ----------------------------------------------------

    def _once(self, what: str, spec: ActivationSpec, why_not) -> str | None:
        """Per-plan cache: registry specs are rebuilt on every lookup, their keys are not."""
        key = (what, spec.key if spec.expr is None and spec.fn is not None else id(spec))
        if key not in self._memo:
            self._memo[key] = why_not(spec)
        return self._memo[key]

    def _no_adversarial(self, spec: ActivationSpec) -> str | None:
        """Why the activation has no A_f within max_gain (None: it has)."""
        try:
            stable_interval(spec, self.opts["max_gain"])
        except (NoAdversarialError, ConfigError) as e:
            return str(e)
        return None

    def _no_decomposition(self, spec: ActivationSpec) -> str | None:
        """Why the activation has no HD-FGD decomposition (None: it has)."""
        try:
            decompose(spec)
        except ValueError as e:
            return str(e)
        return None

    def _no_split_adversarial(self, spec: ActivationSpec) -> str | None:
        """Why the activation has no SA form (None: it has)."""
        try:
            decompose(spec).split_adversarial(
                anchor=self.opts["anchor"], max_gain=self.opts["max_gain"]
            )
        except (ConfigError, NoAdversarialError) as e:
            return str(e)
        return None


# ---- why not ------------------------------------------------------------------------------------


def unregistered(title: str) -> str:
    """Why not: netadv does not know the activation."""
    return (
        f"{title} is not a registered activation (register it with "
        "netadv.activations.registry.register_module_class / netadv.register_activation)"
    )


def unreachable(reach: str) -> str:
    """Why not: no change can reach the call."""
    return f"unreachable: {reach}"


def not_decomposed(why: str) -> str:
    """Why not (HD-FGD/SA): no block can be built around the call."""
    return f"not decomposed: {why}"


def serves_all(calls: int, reach: str) -> str:
    """Not a why not: every call of a shared module changes alike, through one new module."""
    return f"one new module serves all {calls} calls of this shared module ({reach})"


def calls_cannot_differ(reach: str) -> str:
    """Why not: the calls of a shared module would change differently."""
    return f"shared module whose calls cannot differ: {reach}"


def runs_cannot_differ(owner: str, runs: int) -> str:
    """Why not: the runs of one call in the owner's code would change differently."""
    return (
        f"the owner {owner or 'model'} runs {runs} times per forward, so its calls cannot "
        "differ between runs"
    )
