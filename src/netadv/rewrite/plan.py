"""``plan()``: find the activation sites of a model and decide what each becomes.

The decision is data (:class:`RewritePlan`, one :class:`Site` per activation call in forward
order) and can be printed before anything changes; :func:`netadv.rewrite` applies exactly it.
"""

from __future__ import annotations

import fnmatch
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from netadv.activations.registry import ActivationSpec, resolve
from netadv.decompose import decompose
from netadv.errors import ConfigError, NoAdversarialError
from netadv.layers.adversarial import stable_interval
from netadv.layers.hdfgd import INITS
from netadv.layers.widths import fold_delta, n_params
from netadv.rewrite import ecosystem as eco
from netadv.rewrite.graph import OwnerGraph, input_node
from netadv.rewrite.trace import Call, Trace, discover

METHODS = ("ga", "hdfgd", "sa", "replace")
STARTS = ("f", "A")
#: Layer options each method passes through to the layers it builds.
LAYER_OPTIONS = {
    "ga": ("anchor", "max_gain"),
    "hdfgd": ("init", "match_params"),
    "sa": ("init", "match_params", "penalty_weight", "anchor", "max_gain"),
    "replace": (),
}
DEFAULTS = {
    "anchor": "f0",
    "max_gain": 25.0,
    "init": "copy",
    "match_params": False,
    "penalty_weight": 1e-4,
}
ROLES = ("f", "A_f", "HD-FGD", "SA", "unchanged")
MARKER = "_netadv_rewrite"


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
    becomes: str  # one of ROLES
    new_activation: str | None = None  # set when the site's activation is replaced
    producer: str | None = None
    norm: str | None = None
    consumer: str | None = None
    params_delta: int = 0
    note: str = ""
    call: int = 0  # which call of the module (module sites)
    calls: int = 1  # calls of the module per forward
    node: str | None = None  # fx node name in the owner's graph (functional sites)
    route: str | None = None  # how rewrite reaches it: "path", "shared", "graph"; None: no change
    # internal (not in to_dict)
    target: str = field(default="", repr=False)  # path in owner / function family
    occurrence: int = field(default=0, repr=False)
    slot: int | None = field(default=None, repr=False)  # index among considered sites
    spec: ActivationSpec | None = field(default=None, repr=False)  # what it computes after
    paths: tuple[str, ...] = field(default=(), repr=False)  # every registration of the module

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("target", "occurrence", "slot", "spec", "paths"):
            d.pop(k)
        return d


@dataclass
class RewritePlan:
    """What :func:`netadv.rewrite` will do to a model, site by site."""

    method: str
    activation: str | None
    options: dict[str, Any]
    discovery: str
    notes: list[str]
    sites: list[Site]
    params_before: int
    fingerprint: tuple = field(repr=False, default=())
    activation_object: Any = field(repr=False, default=None)

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
            "method": self.method,
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
        footnotes: dict[str, int] = {}
        rows = [("#", "site", "activation", "becomes", "producer", "norm", "params", "note")]
        show_consumer = any(s.consumer for s in self.sites)
        if show_consumer:
            rows[0] = rows[0][:6] + ("consumer",) + rows[0][6:]
        for s in self.sites:
            act = s.activation + (f" -> {s.new_activation}" if s.new_activation else "")
            ref = ""
            if s.note:
                ref = f"[{footnotes.setdefault(s.note, len(footnotes) + 1)}]"
            row = (
                str(s.index),
                s.name,
                act,
                s.becomes,
                s.producer or "",
                s.norm or "",
                f"{s.params_delta:+,}" if s.params_delta else "0",
                ref,
            )
            if show_consumer:
                row = row[:6] + (s.consumer or "",) + row[6:]
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        for note, n in footnotes.items():
            lines.append(f"[{n}] {note}")
        lines.append(self.summary())
        return "\n".join(lines)

    __repr__ = __str__


# ---- data flow ----------------------------------------------------------------------------------


class _Flow:
    """Producer, norm and consumer of activation calls, from a Trace."""

    def __init__(self, model: nn.Module, trace: Trace):
        self.model = model
        self.trace = trace
        self.registrations: dict[int, list[str]] = defaultdict(list)
        for p, m in model.named_modules(remove_duplicate=False):
            self.registrations[id(m)].append(p)

    def module(self, path: str) -> nn.Module:
        return self.model.get_submodule(path)

    def paths(self, path: str) -> list[str]:
        return self.registrations[id(self.module(path))]

    def _once(self, call: Call, role: str) -> str | None:
        n = self.trace.module_calls.get(call.name, 1)
        if n != 1:
            return f"the {role} {call.name} is called {n} times per forward"
        regs = self.paths(call.name)
        if len(regs) != 1:
            return f"the {role} {call.name} is registered under {len(regs)} names"
        return None

    def _only_reader(self, key, reader: Call, of: str) -> str | None:
        others = [c for c in self.trace.readers(key) if c is not reader]
        if others:
            return f"{of}'s output is also read by {others[0].describe()}"
        return None

    def _unknown(self) -> str:
        if self.trace.mode == "module structure":
            return (
                "its input cannot be traced from the module structure (not inside an "
                "nn.Sequential); pass example_inputs"
            )
        return "its input is not produced by a layer (a model input)"

    def _source(self, key, reader: Call) -> tuple[Call | None, Any, Call, str | None]:
        """The call that made ``key``, looking through nn.Identity layers (they compute
        nothing, so a block may take their place): (call, key it made, the key's reader,
        why not)."""
        for _ in range(64):
            src = self.trace.made_by(key)
            if src is None or src.kind != "module" or src.module_type is not nn.Identity:
                return src, key, reader, None
            why = self._only_reader(key, reader, src.name)
            if why or not src.inputs:
                return None, key, reader, why or f"{src.name} reads no tensor"
            key, reader = src.inputs[0], src
        return None, key, reader, "too many Identity layers"

    def producer(self, call: Call) -> tuple[Call | None, Call | None, str | None]:
        """(producer, norm, None) or (None, None, why not)."""
        if not call.inputs:
            return None, None, "it reads no tensor"
        src, key, reader, why = self._source(call.inputs[0], call)
        if why:
            return None, None, why
        if src is None:
            return None, None, self._unknown()
        if src.kind != "module":
            return None, None, f"its input comes from {src.describe()}, not a Linear/Conv"
        norm = None
        m = self.module(src.name)
        if eco.is_norm(m):
            norm = src
            why = self._only_reader(key, reader, norm.name) or self._once(norm, "norm")
            if why:
                return None, None, why
            if not norm.inputs:
                return None, None, f"the norm {norm.name} reads no tensor"
            src, key, reader, why = self._source(norm.inputs[0], norm)
            if why:
                return None, None, why
            if src is None:
                return None, None, f"the norm {norm.name}'s input is not produced by a layer"
            if src.kind != "module":
                return None, None, f"the norm {norm.name} reads {src.describe()}, not a Linear/Conv"
            m = self.module(src.name)
        if not eco.is_producer(m):
            where = f"the norm {norm.name}'s input" if norm else "its input"
            return None, None, f"{where} comes from {src.describe()}, not a Linear or Conv1d/2d/3d"
        why = self._only_reader(key, reader, src.name) or self._once(src, "producer")
        if why:
            return None, None, why
        return src, norm, None

    def consumer(self, call: Call) -> tuple[Call | None, str | None]:
        """The layer reading the activation's output (through Dropout/Identity), for
        match_params."""
        if not call.outputs:
            return None, "match_params needs the consumer, but the activation's output is unknown"
        key = call.outputs[0]
        for _ in range(64):
            readers = self.trace.readers(key)
            if len(readers) != 1:
                what = "no layer" if not readers else f"{len(readers)} calls"
                return None, f"match_params needs one consumer; the output is read by {what}"
            r = readers[0]
            if r.passthrough and r.outputs:
                key = r.outputs[0]
                continue
            if r.kind != "module" or not eco.is_producer(self.module(r.name)):
                return None, f"match_params needs a Linear/Conv consumer; got {r.describe()}"
            why = self._once(r, "consumer")
            return (None, why) if why else (r, None)
        return None, "match_params: the consumer chain is too long"


# ---- options ---------------------------------------------------------------------------------


def _patterns(p: Any) -> list[str]:
    if p is None:
        return []
    return [p] if isinstance(p, str) else list(p)


def _check_options(method: str, period: int, start: str, layer_options: dict) -> dict:
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
    if "init" in opts and opts["init"] not in INITS:
        raise ConfigError(f"init must be one of {INITS}, got {opts['init']!r}")
    if opts.get("match_params") and opts.get("init") == "copy":
        raise ConfigError(
            "match_params=True shrinks the hidden width, so the original weights cannot be "
            "copied: pass init='fresh'"
        )
    if opts.get("penalty_weight", 0) < 0:
        raise ConfigError(f"penalty_weight must be >= 0, got {opts['penalty_weight']}")
    return opts


def check_not_rewritten(model: nn.Module) -> None:
    for path, m in model.named_modules():
        done = m.__dict__.get(MARKER)
        if done:
            where = f" (at {path})" if path else ""
            raise ConfigError(
                f"this model was already rewritten by netadv{where}: {done}. Rewrites do not "
                "compose; plan and rewrite the original model (use activation= to replace "
                "activations and apply a method in one step)"
            )


def _ga_problem(spec: ActivationSpec, max_gain: float) -> str | None:
    try:
        stable_interval(spec, max_gain)
    except (NoAdversarialError, ConfigError) as e:
        return str(e)
    return None


def _decompose_problem(spec: ActivationSpec) -> str | None:
    try:
        decompose(spec)
    except ValueError as e:
        return str(e)
    return None


def _sa_problem(spec: ActivationSpec, anchor: str, max_gain: float) -> str | None:
    try:
        decompose(spec).split_adversarial(anchor=anchor, max_gain=max_gain)
    except (ConfigError, NoAdversarialError) as e:
        return str(e)
    return None


# ---- the plan --------------------------------------------------------------------------------


def _fingerprint(model: nn.Module) -> tuple:
    return tuple((p, type(m).__name__) for p, m in model.named_modules())


def _slot_is_second(slot: int, period: int, start: str) -> bool:
    """True where the alternation puts A_f (GA) or SA (SA method)."""
    return ((slot // period) % 2 == 1) == (start == "f")


def plan(
    model: nn.Module,
    method: str,
    *,
    activation: Any = None,
    example_inputs: Any = None,
    period: int = 1,
    start: str = "f",
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
            penalty_weight (sa). Passed to the layers.
    """
    opts = _check_options(method, period, start, layer_options)
    check_not_rewritten(model)
    target = None
    if activation is not None:
        target = resolve(activation)
    elif method == "replace":
        raise ConfigError("method 'replace' needs activation= (what every site becomes)")
    trace = discover(model, example_inputs)
    flow = _Flow(model, trace)
    owner_graphs: dict[str, OwnerGraph] = {}
    per_owner_call = Counter(
        (c.owner, c.owner_call, c.site.kind, c.site.target) for c in trace.sites()
    )
    site_calls = Counter(c.name for c in trace.sites() if c.site.kind == "module")
    call_number: Counter = Counter()
    inc, exc = _patterns(include), _patterns(exclude)
    folds: dict[int, tuple[Call, Call | None, Call | None]] = {}
    decomposable: dict[int, str | None] = {}
    sites: list[Site] = []
    reaches: dict[int, str | None] = {}  # why a change could not reach the call

    memos: dict[tuple, Any] = {}

    def memo(what: str, spec: ActivationSpec, compute):
        """Per-plan cache: registry specs are rebuilt on every lookup, their keys are not."""
        key = (what, spec.key if spec.expr is None and spec.fn is not None else id(spec))
        if key not in memos:
            memos[key] = compute()
        return memos[key]

    def owner_graph(owner: str) -> OwnerGraph:
        if owner not in owner_graphs:
            owner_graphs[owner] = OwnerGraph.of(model.get_submodule(owner))
        return owner_graphs[owner]

    slot = 0
    for index, c in enumerate(trace.sites()):
        sc = c.site
        s = Site(
            index=index,
            name="",
            kind=sc.kind,
            path=c.name if sc.kind == "module" else None,
            owner=c.owner,
            activation=sc.title,
            becomes="f",
            target=sc.target,
            occurrence=sc.occurrence,
        )
        # how a change would reach the call
        reach = None
        if sc.kind == "module":
            s.calls = trace.module_calls.get(c.name, 1)
            s.call = call_number[c.name]
            call_number[c.name] += 1
            s.paths = tuple(flow.paths(c.name))
            s.name = c.name + (f" [call {s.call + 1}/{s.calls}]" if s.calls > 1 else "")
            if s.calls == 1 and site_calls[c.name] == 1:
                s.route = "path"
        if s.route is None:
            g = owner_graph(c.owner)
            seen = per_owner_call[(c.owner, c.owner_call, sc.kind, sc.target)]
            node, why = g.node(sc.kind, sc.target, sc.occurrence, seen)
            if node is None:
                reach = f"the owner {c.owner or 'model'} {why}"
            else:
                s.route = "graph"
                if sc.kind == "function":
                    s.node = node.name
                    x = input_node(node)
                    if sc.inplace and (x is None or len(x.users) > 1):
                        reach = (
                            f"in-place call {node.name} whose input is read again after it "
                            "cannot be replaced"
                        )
                        s.route = None
        if sc.kind == "function":
            node = s.node or sc.node or sc.target + (f"_{sc.occurrence}" if sc.occurrence else "")
            s.name = (c.owner + "." if c.owner else "") + node + "()"
        if not _selected(s, inc, exc):
            s.becomes, s.note, s.route = "unchanged", "excluded by include/exclude", None
            sites.append(s)
            continue
        s.slot = slot
        slot += 1
        reaches[index] = reach
        own = sc.spec
        new = target if target is not None else own
        s.spec = new
        if target is not None and (own is None or own.key != target.key):
            s.new_activation = target.title
        unregistered = (
            f"{sc.title} is not a registered activation (register it with "
            "netadv.activations.registry.register_module_class / netadv.register_activation)"
        )
        if method == "replace":
            if s.new_activation is None:
                s.note = f"already {new.title}"
        elif method == "ga":
            if _slot_is_second(s.slot, period, start):
                if new is None:
                    s.becomes, s.note = "unchanged", unregistered
                else:
                    why = memo("adversarial", new, lambda n=new: _ga_problem(n, opts["max_gain"]))
                    s.becomes, s.note = ("unchanged", why) if why else ("A_f", "")
        else:  # hdfgd / sa: first find what can be decomposed
            why = None
            if new is None:
                why = unregistered
            else:
                why = memo("decompose", new, lambda n=new: _decompose_problem(n))
            if why is None and reach is not None:
                why = f"unreachable: {reach}"
            if why is None:
                producer, norm, why = flow.producer(c)
                if why is None:
                    consumer = None
                    if opts["match_params"]:
                        consumer, why = flow.consumer(c)
                    if why is None:
                        folds[index] = (producer, norm, consumer)
            decomposable[index] = why
        sites.append(s)

    if method in ("hdfgd", "sa"):
        eligible = [s for s in sites if s.index in folds]
        shrunk: dict[str, int] = {}  # consumer path -> its input width after match_params
        for e, s in enumerate(eligible):
            producer, norm, consumer = folds[s.index]
            s.producer = producer.name
            s.norm = norm.name if norm else None
            s.consumer = consumer.name if consumer else None
            s.becomes = "SA" if method == "sa" and _slot_is_second(e, period, start) else "HD-FGD"
            if s.becomes == "SA":
                spec = s.spec
                why = memo(
                    "sa", spec, lambda sp=spec: _sa_problem(sp, opts["anchor"], opts["max_gain"])
                )
                if why:
                    s.becomes, s.note = ("f" if s.new_activation else "unchanged"), why
                    s.producer = s.norm = s.consumer = None
                    continue
            try:
                s.params_delta, width = fold_delta(
                    eco.as_producer(flow.module(producer.name)),
                    flow.module(norm.name) if norm else None,
                    eco.as_producer(flow.module(consumer.name)) if consumer else None,
                    decompose(s.spec).k,
                    opts["match_params"],
                    shrunk.get(producer.name),
                )
                if consumer is not None:
                    shrunk[consumer.name] = width
            except ConfigError as err:
                s.becomes, s.note = ("f" if s.new_activation else "unchanged"), str(err)
                s.producer = s.norm = s.consumer = None
        for s in sites:
            why = decomposable.get(s.index)
            if why and s.becomes == "f":
                s.becomes = "f" if s.new_activation else "unchanged"
                s.note = f"not decomposed: {why}"

    # which sites change, and whether every call can get its own module
    for s in sites:
        changes = s.becomes in ("A_f", "HD-FGD", "SA") or s.new_activation is not None
        reach = reaches.get(s.index)
        if not changes:
            s.route = None
        elif reach is not None and s.becomes not in ("HD-FGD", "SA"):
            if s.kind == "module" and s.calls > 1:
                s.route = "shared"  # settled below, for all calls of the module together
            else:
                s.route, s.becomes = None, "unchanged"
                s.new_activation = None
                s.note = f"unreachable: {reach}"
    _settle_shared(sites, reaches)
    _settle_handles(sites)

    options = {"period": period, "start": start}
    if inc:
        options["include"] = inc
    if exc:
        options["exclude"] = exc
    options.update(opts)
    return RewritePlan(
        method=method,
        activation=target.title if target is not None else None,
        options=options,
        discovery=trace.mode,
        notes=list(trace.notes),
        sites=sites,
        params_before=n_params(model),
        fingerprint=_fingerprint(model),
        activation_object=activation,
    )


def _decision(s: Site) -> tuple:
    return (s.becomes, s.new_activation, s.spec.key if s.spec else None)


def _unchange(s: Site, note: str) -> None:
    s.route, s.becomes, s.new_activation, s.params_delta = None, "unchanged", None, 0
    s.producer = s.norm = s.consumer = None
    s.note = note


def _selected(s: Site, include: list[str], exclude: list[str]) -> bool:
    names = [s.name] + ([s.path] if s.path and s.path != s.name else [])
    hit = lambda patterns: any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)
    return (not include or hit(include)) and not (exclude and hit(exclude))


def _settle_shared(sites: list[Site], reaches: dict[int, str | None]) -> None:
    """Calls of a shared module whose owner does not trace: one new module can serve all of
    them only if they all become the same thing."""
    groups: dict[str, list[Site]] = defaultdict(list)
    for s in sites:
        if s.route == "shared":
            groups[s.path].append(s)
    for path, group in groups.items():
        every = [s for s in sites if s.path == path]
        reach = reaches.get(group[0].index) or ""
        if len(group) == len(every) and len({_decision(s) for s in every}) == 1:
            for s in every:
                s.note = (
                    f"one new module serves all {s.calls} calls of this shared module ({reach})"
                )
        else:
            for s in every:
                if s.route is not None or s.becomes == "f":
                    _unchange(s, f"shared module whose calls cannot differ: {reach}")


def _settle_handles(sites: list[Site]) -> None:
    """Sites that reach the same graph node (their owner runs several times per forward) are
    one call in the code: they change only if they all become the same thing."""
    groups: dict[tuple, list[Site]] = defaultdict(list)
    for s in sites:
        if s.kind == "function" or s.calls > 1:
            groups[(s.owner, s.kind, s.target, s.occurrence)].append(s)
    for (owner, *_), group in groups.items():
        changing = any(s.route is not None for s in group)
        if len(group) > 1 and changing and len({_decision(s) for s in group}) > 1:
            for s in group:
                _unchange(
                    s,
                    f"the owner {owner or 'model'} runs {len(group)} times per forward, so its "
                    "calls cannot differ between runs",
                )
