"""The data flow around an activation call: the layers an HD-FGD/SA block would replace.

A block replaces ``producer -> [norm ->] activation`` (and with match_params also shrinks the
``consumer`` reading the activation's output), so each of those layers must feed only the next
and run once per forward. :class:`Flow` reads this off a :class:`~netadv.rewrite.trace.Trace`
and says why not where it does not hold.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from torch import nn

from netadv.rewrite import ecosystem as eco
from netadv.rewrite.calls import Call, Trace

#: How many pass-through layers (Identity, Dropout) the flow looks through.
_MAX_CHAIN = 64


@dataclass(frozen=True)
class Fold:
    """The calls an HD-FGD/SA block takes the place of, around one activation call."""

    producer: Call
    norm: Call | None = None
    consumer: Call | None = None


class Flow:
    """Producer, norm and consumer of activation calls, from a Trace."""

    def __init__(self, model: nn.Module, trace: Trace):
        self.model = model
        self.trace = trace
        self.registrations: dict[int, list[str]] = defaultdict(list)
        for p, m in model.named_modules(remove_duplicate=False):
            self.registrations[id(m)].append(p)

    def module(self, path: str) -> nn.Module:
        """The module registered at ``path``."""
        return self.model.get_submodule(path)

    def paths(self, path: str) -> list[str]:
        """Every name the module at ``path`` is registered under."""
        return self.registrations[id(self.module(path))]

    def fold(self, call: Call, with_consumer: bool) -> tuple[Fold | None, str | None]:
        """(the calls a block around ``call`` replaces, None) or (None, why there is none)."""
        producer, norm, why = self.producer(call)
        if why is not None:
            return None, why
        consumer = None
        if with_consumer:
            consumer, why = self.consumer(call)
            if why is not None:
                return None, why
        return Fold(producer, norm, consumer), None

    def producer(self, call: Call) -> tuple[Call | None, Call | None, str | None]:
        """(producer, norm, None) or (None, None, why not)."""
        if not call.inputs:
            return None, None, "it reads no tensor"
        src, key, reader, why = self._source(call.inputs[0], call)
        if why is None and src is None:
            why = self._unknown()
        elif why is None and src.kind != "module":
            why = f"its input comes from {src.describe()}, not a Linear/Conv"
        if why is not None:
            return None, None, why
        norm = None
        if eco.is_norm(self.module(src.name)):
            norm = src
            src, key, reader, why = self._before_norm(norm, key, reader)
            if why is not None:
                return None, None, why
        if not eco.is_producer(self.module(src.name)):
            where = f"the norm {norm.name}'s input" if norm else "its input"
            return None, None, f"{where} comes from {src.describe()}, not a Linear or Conv1d/2d/3d"
        why = self._only_reader(key, reader, src.name) or self._once(src, "producer")
        if why:
            return None, None, why
        return src, norm, None

    def _before_norm(self, norm: Call, key, reader: Call) -> tuple[Call | None, Any, Call, str]:
        """What feeds a norm that feeds an activation: (call, key it made, the key's reader,
        why it cannot be a producer)."""
        why = self._only_reader(key, reader, norm.name) or self._once(norm, "norm")
        if why:
            return None, key, reader, why
        if not norm.inputs:
            return None, key, reader, f"the norm {norm.name} reads no tensor"
        src, key, reader, why = self._source(norm.inputs[0], norm)
        if why is None and src is None:
            why = f"the norm {norm.name}'s input is not produced by a layer"
        elif why is None and src.kind != "module":
            why = f"the norm {norm.name} reads {src.describe()}, not a Linear/Conv"
        return src, key, reader, why

    def consumer(self, call: Call) -> tuple[Call | None, str | None]:
        """The layer reading the activation's output (through Dropout/Identity), for
        match_params."""
        if not call.outputs:
            return None, "match_params needs the consumer, but the activation's output is unknown"
        key = call.outputs[0]
        for _ in range(_MAX_CHAIN):
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

    def _source(self, key, reader: Call) -> tuple[Call | None, Any, Call, str | None]:
        """The call that made ``key``, looking through nn.Identity layers (they compute
        nothing, so a block may take their place): (call, key it made, the key's reader,
        why not)."""
        for _ in range(_MAX_CHAIN):
            src = self.trace.made_by(key)
            if src is None or src.kind != "module" or src.module_type is not nn.Identity:
                return src, key, reader, None
            why = self._only_reader(key, reader, src.name)
            if why or not src.inputs:
                return None, key, reader, why or f"{src.name} reads no tensor"
            key, reader = src.inputs[0], src
        return None, key, reader, "too many Identity layers"

    def _once(self, call: Call, role: str) -> str | None:
        """Why the layer of ``call`` cannot be replaced: it runs or is registered more than
        once (None: it can)."""
        n = self.trace.module_calls.get(call.name, 1)
        if n != 1:
            return f"the {role} {call.name} is called {n} times per forward"
        regs = self.paths(call.name)
        if len(regs) != 1:
            return f"the {role} {call.name} is registered under {len(regs)} names"
        return None

    def _only_reader(self, key, reader: Call, of: str) -> str | None:
        """Why ``of``'s output ``key`` cannot go into a block: another call reads it too."""
        others = [c for c in self.trace.readers(key) if c is not reader]
        if others:
            return f"{of}'s output is also read by {others[0].describe()}"
        return None

    def _unknown(self) -> str:
        """Why an activation's input has no producer, for the way the trace was made."""
        if self.trace.mode == "module structure":
            return (
                "its input cannot be traced from the module structure (not inside an "
                "nn.Sequential); pass example_inputs"
            )
        return "its input is not produced by a layer (a model input)"
