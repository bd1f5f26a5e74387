"""Giving each call site its own module: rewrite one module's forward with torch.fx.

A functional activation call (``F.gelu(x)``) or one call of a module used at several places
(torchvision's BasicBlock calls ``self.relu`` twice) cannot be changed by swapping a
submodule. The module whose forward makes the call (its *owner*) is traced with every child as
a leaf, the call's node is pointed at a new submodule of the owner, and the owner's class is
swapped for a subclass whose ``forward`` is the regenerated code. The owner keeps its type
(``isinstance`` holds), its name in ``print(model)``, its attributes and its state_dict keys.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from dataclasses import dataclass, field

import torch.fx as fx
from torch import nn
from torch.fx.graph_module import _format_import_block, _forward_from_src
from torch.package import sys_importer

from netadv.rewrite import ecosystem as eco


class _OwnerTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return True


def trace_owner(owner: nn.Module) -> fx.Graph:
    """The owner's own forward as a graph, children as leaves. Optional arguments defaulting to
    None are specialised to None (fx then asserts they stay None); other defaults refuse."""
    base = getattr(type(owner), "_netadv_base", None)
    if base is not None:
        raise ValueError(f"{type(owner).__name__} was already rewritten by netadv")
    sig = inspect.signature(owner.forward)
    concrete = {}
    for name, p in sig.parameters.items():
        if p.default is inspect.Parameter.empty:
            continue
        if p.default is not None:
            raise ValueError(
                f"forward has an optional argument {name}={p.default!r} that tracing would freeze"
            )
        concrete[name] = None
    graph = _OwnerTracer().trace(owner, concrete_args=concrete or None)
    for node in graph.nodes:  # fx names specialised placeholders "<name>_1"; keep the API name
        if node.op == "placeholder" and isinstance(node.target, str):
            raw = node.target.lstrip("*")
            for name in concrete:
                if raw == f"{name}_1":
                    node.target = name
    return graph


def node_op(node: fx.Node) -> eco.FunctionalOp | None:
    if node.op == "call_method":
        return eco.functional_op(node.target, method=True)
    if node.op == "call_function":
        return eco.functional_op(node.target)
    return None


@dataclass
class OwnerGraph:
    """Where the call sites of one owner are in its traced graph."""

    graph: fx.Graph | None = None
    error: str | None = None
    slots: dict[tuple[str, str], list[fx.Node]] = field(default_factory=dict)

    @classmethod
    def of(cls, owner: nn.Module) -> OwnerGraph:
        try:
            graph = trace_owner(owner)
        except Exception as e:  # any tracing failure makes the owner's sites unreachable
            text = str(e).strip().splitlines()
            return cls(error=f"{type(e).__name__}: {text[0] if text else ''}"[:160])
        slots: dict[tuple[str, str], list[fx.Node]] = defaultdict(list)
        for node in graph.nodes:
            if node.op == "call_module":
                slots[("module", node.target)].append(node)
            else:
                op = node_op(node)
                if op is not None:
                    slots[("function", op.family)].append(node)
        return cls(graph, None, dict(slots))

    def node(
        self, kind: str, target: str, occurrence: int, seen: int
    ) -> tuple[fx.Node | None, str]:
        """The node of one call, or None and why; ``seen`` is how many such calls the owner
        made per call in the recorded forward."""
        if self.graph is None:
            return None, f"does not trace with torch.fx ({self.error})"
        nodes = self.slots.get((kind, target), [])
        if len(nodes) != seen:
            return None, (
                f"its traced forward has {len(nodes)} call(s) of {target} but the forward made "
                f"{seen} (control flow)"
            )
        return nodes[occurrence], ""


def input_node(node: fx.Node) -> fx.Node | None:
    if node.args and isinstance(node.args[0], fx.Node):
        return node.args[0]
    for k in ("input", "self"):
        if isinstance(node.kwargs.get(k), fx.Node):
            return node.kwargs[k]
    return None


def unique_name(owner: nn.Module, wanted: str) -> str:
    name = wanted.replace(".", "_")
    if not hasattr(owner, name):
        return name
    i = 1
    while hasattr(owner, f"{name}_{i}"):
        i += 1
    return f"{name}_{i}"


def point_to(graph: fx.Graph, node: fx.Node, target: str) -> None:
    """Make ``node`` a call of submodule ``target`` on the node's input."""
    if node.op == "call_module":
        node.target = target
        return
    x = input_node(node)
    with graph.inserting_before(node):
        new = graph.call_module(target, (x,))
    node.replace_all_uses_with(new)
    graph.erase_node(node)


_CLASSES: dict[tuple, type] = {}


def _restore(base: type, import_block: str, src: str) -> nn.Module:
    cls = rewritten_class(base, import_block, src)
    return cls.__new__(cls)


def _reduce_ex(self: nn.Module, protocol: int):
    """Pickle (torch.save of a whole model) and deepcopy: rebuild the class from its code."""
    return (_restore, (self._netadv_base, *self._netadv_code), self.__getstate__())


def rewritten_class(base: type, import_block: str, src: str) -> type:
    """The subclass of ``base`` whose forward is the fx-generated ``src`` (one per code)."""
    key = (base, import_block, src)
    if key not in _CLASSES:
        _CLASSES[key] = type(
            base.__name__,
            (base,),
            {
                "forward": _forward_from_src(import_block + src, {}),
                "_netadv_base": base,
                "_netadv_code": (import_block, src),
                "__reduce_ex__": _reduce_ex,
                "__module__": base.__module__,
                "__qualname__": base.__qualname__,
                "__doc__": f"{base.__name__} with a forward rewritten by netadv.rewrite.",
            },
        )
    return _CLASSES[key]


def install(owner: nn.Module, graph: fx.Graph) -> None:
    """Swap ``owner``'s class for a subclass whose forward runs ``graph``."""
    graph.lint()
    code = graph.python_code(root_module="self")
    import_block = _format_import_block(code.globals, sys_importer)
    owner.__class__ = rewritten_class(type(owner), import_block, code.src)
