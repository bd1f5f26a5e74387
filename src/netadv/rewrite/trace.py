"""Find the activation sites of a model in forward-execution order, with the data flow around
them (which layer produced an activation's input, who reads its output).

Three ways, best first:

- ``example_inputs`` (or inputs inferred from the model, such as HuggingFace's
  ``dummy_inputs``): run the model once in eval mode under ``no_grad`` with module hooks and a
  ``TorchFunctionMode``; every module call and every torch function call is recorded with the
  identity of the tensors it reads and writes. This sees shared modules, functional calls and
  models torch.fx cannot trace.
- torch.fx: trace the model symbolically and read the same facts off the graph.
- module structure: the registration order of the modules; data flow is known only inside
  ``nn.Sequential``. The plan says so.

All three give a :class:`~netadv.rewrite.calls.Trace`: a list of
:class:`~netadv.rewrite.calls.Call` records in execution order. A call is one use of an *atomic*
module (an activation, a Linear/Conv, a normalisation, a pass-through such as Dropout, a netadv
layer) or one torch function call made outside them; what happens inside an atomic module is
not recorded, and every other module is transparent (so a functional call inside a user's
module is a site of its own).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from netadv.errors import ConfigError
from netadv.rewrite import ecosystem as eco
from netadv.rewrite.calls import (
    Call,
    Key,
    Owners,
    Trace,
    function_site,
    is_atomic,
    module_site,
    number_sites,
)

#: Results of these calls describe a tensor, they do not read its values.
_METADATA_METHODS = {"size", "dim", "numel", "ndimension", "nelement", "stride", "is_contiguous"}
_METADATA_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout"}


# ---- running the model ------------------------------------------------------------------------


@dataclass
class _Frame:
    path: str
    index: int
    module: nn.Module | None = None
    atomic: bool = False
    recorded: bool = True
    inputs: tuple = ()
    input_objects: tuple = ()


class _Recorder(TorchFunctionMode):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.paths: dict[int, str] = {}
        for p, m in model.named_modules():
            self.paths.setdefault(id(m), p)
        self.owners = Owners(model)
        self.stack: list[_Frame] = []
        self.calls: list[Call] = []
        self.keep: list[Any] = []  # keeps tensors alive so their ids stay unique
        self.generation: Counter = Counter()
        self.counts: Counter = Counter()

    def key(self, t: torch.Tensor) -> Key:
        try:
            version = t._version
        except RuntimeError:  # inference tensors
            version = 0
        return (id(t), version, self.generation[id(t)])

    def tensors(self, tree: Any) -> list[torch.Tensor]:
        return [x for x in tree_leaves(tree) if isinstance(x, torch.Tensor)]

    def opaque(self) -> bool:
        return bool(self.stack) and (self.stack[-1].atomic or not self.stack[-1].recorded)

    def owner(self) -> tuple[str, int]:
        return (self.stack[-1].path, self.stack[-1].index) if self.stack else ("", 0)

    def _outputs(self, outs: list[torch.Tensor], passthrough: bool, objects) -> tuple:
        keys = []
        for t in outs:
            if passthrough and any(t is o for o in objects):
                self.generation[id(t)] += 1  # same object, new value in the data flow
            keys.append(self.key(t))
        self.keep.extend(outs)
        return tuple(keys)

    # module hooks
    def pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        with torch._C.DisableTorchFunction():
            path = self.paths[id(module)]
            index = self.counts[path]
            self.counts[path] += 1
            if self.opaque():
                self.stack.append(_Frame(path, index, recorded=False))
                return
            ins = self.tensors((args, kwargs))
            self.keep.extend(ins)
            self.stack.append(
                _Frame(
                    path,
                    index,
                    module,
                    path != "" and is_atomic(module),  # the model itself is always traced into
                    True,
                    tuple(self.key(t) for t in ins),
                    tuple(ins),
                )
            )

    def post(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        with torch._C.DisableTorchFunction():
            frame = self.stack.pop()
            if not frame.recorded or not frame.atomic:
                return
            passthrough = eco.is_passthrough(module)
            outs = self._outputs(self.tensors(output), passthrough, frame.input_objects)
            owner, owner_call = self.owner()
            target = self.owners.relative(owner, module, frame.path)
            self.calls.append(
                Call(
                    "module",
                    frame.path,
                    owner,
                    owner_call,
                    frame.inputs,
                    outs,
                    passthrough,
                    type(module),
                    module_site(module, target),
                )
            )

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.opaque():
            return func(*args, **kwargs)
        ins = self.tensors((args, kwargs))
        in_keys = tuple(self.key(t) for t in ins)
        out = func(*args, **kwargs)
        outs = self.tensors(out)
        if not outs and out is not None:  # a shape, a dtype, a Python number: metadata
            return out
        self.keep.extend(ins)
        passthrough = eco.is_passthrough_function(func)
        out_keys = self._outputs(outs, passthrough, ins)
        op = eco.functional_op(func)
        site = function_site(op, tuple(args[1:]), kwargs, func) if op is not None else None
        owner, owner_call = self.owner()
        name = getattr(func, "__name__", None) or repr(func)
        self.calls.append(
            Call("function", name, owner, owner_call, in_keys, out_keys, passthrough, None, site)
        )
        return out


def record_run(model: nn.Module, args: tuple, kwargs: dict, mode: str) -> Trace:
    """Run ``model(*args, **kwargs)`` once (eval mode, no_grad, no state changed) and record."""
    rec = _Recorder(model)
    handles = []
    modes = {m: m.training for m in model.modules()}
    try:
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(rec.pre, with_kwargs=True))
            handles.append(m.register_forward_hook(rec.post, with_kwargs=True, always_call=True))
        model.eval()
        with torch.no_grad(), rec:
            out = model(*args, **kwargs)
        outs = tuple(rec.key(t) for t in rec.tensors(out))
        rec.calls.append(Call("output", "output", "", 0, outs, ()))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    number_sites(rec.calls)
    return Trace(mode, rec.calls, rec.counts)


# ---- torch.fx -------------------------------------------------------------------------------


class _RootTracer(fx.Tracer):
    """Traces through modules with children; records which module's forward made each node."""

    def __init__(self):
        super().__init__()
        self.owner_stack: list[tuple[str, int]] = [("", 0)]
        self.counts: Counter = Counter({"": 1})

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_atomic(m) or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        index = self.counts[path]
        self.counts[path] += 1
        if self.is_leaf_module(m, path):
            return super().call_module(m, forward, args, kwargs)
        self.owner_stack.append((path, index))
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self.owner_stack.pop()

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta["netadv_owner"] = self.owner_stack[-1]
        return node


def _is_metadata(node: fx.Node) -> bool:
    if node.op == "call_method" and node.target in _METADATA_METHODS:
        return True
    return (
        node.op == "call_function"
        and node.target is getattr
        and len(node.args) > 1
        and node.args[1] in _METADATA_ATTRS
    )


def record_fx(model: nn.Module) -> Trace:
    tracer = _RootTracer()
    graph = tracer.trace(model)
    owners = Owners(model)
    calls: list[Call] = []
    for node in graph.nodes:
        if node.op in ("placeholder", "get_attr") or _is_metadata(node):
            continue
        owner, owner_call = node.meta.get("netadv_owner", ("", 0))
        ins = tuple(n.name for n in node.all_input_nodes)
        if node.op == "output":
            calls.append(Call("output", "output", "", 0, ins, ()))
            continue
        if node.op == "call_module":
            m = model.get_submodule(node.target)
            passthrough = eco.is_passthrough(m)
            site = module_site(m, owners.relative(owner, m, node.target))
            calls.append(
                Call(
                    "module",
                    node.target,
                    owner,
                    owner_call,
                    ins,
                    (node.name,),
                    passthrough,
                    type(m),
                    site,
                )
            )
            continue
        method = node.op == "call_method"
        op = eco.functional_op(node.target, method=method)
        passthrough = not method and eco.is_passthrough_function(node.target)
        site = None
        if op is not None:
            site = function_site(op, tuple(node.args[1:]), dict(node.kwargs), node.target)
            site.node = node.name
        name = node.target if method else getattr(node.target, "__name__", str(node.target))
        calls.append(
            Call("function", name, owner, owner_call, ins, (node.name,), passthrough, None, site)
        )
    number_sites(calls)
    return Trace("torch.fx", calls, tracer.counts)


# ---- module structure ---------------------------------------------------------------------------


def record_structure(model: nn.Module) -> Trace:
    """Registration order; data flow only between consecutive children of an nn.Sequential."""
    calls: list[Call] = []
    counts: Counter = Counter()
    previous: dict[str, tuple[str, nn.Module]] = {}
    for path, m in model.named_modules():
        if path == "" or not is_atomic(m):
            continue
        parent_path, _, leaf = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        before = previous.get(parent_path)
        source = ("out", before[0]) if isinstance(parent, nn.Sequential) and before else None
        previous[parent_path] = (path, m)
        counts[path] = 1
        ins = (source if source is not None else ("in", path),)
        passthrough = eco.is_passthrough(m)
        calls.append(
            Call(
                "module",
                path,
                parent_path,
                0,
                ins,
                (("out", path),),
                passthrough,
                type(m),
                module_site(m, leaf),
            )
        )
    # the last child of a Sequential feeds something the structure does not show
    for parent_path, (path, _) in previous.items():
        calls.append(Call("output", "unknown", parent_path, 0, (("out", path),), ()))
    number_sites(calls)
    return Trace("module structure", calls, counts)


# ---- choosing a way ---------------------------------------------------------------------------


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:200]


def infer_inputs(model: nn.Module) -> tuple[tuple, dict, str] | None:
    """Inputs a model describes itself: HuggingFace ``pixel_values`` of the configured image
    size, or ``dummy_inputs``."""
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    config = getattr(model, "config", None)
    size = getattr(config, "image_size", None)
    channels = getattr(config, "num_channels", None)
    if getattr(model, "main_input_name", None) == "pixel_values" and size and channels:
        hw = tuple(size) if isinstance(size, list | tuple) else (size, size)
        x = torch.randn(1, channels, *hw, device=device, dtype=dtype)
        return (), {"pixel_values": x}, f"model.config (pixel_values of shape {tuple(x.shape)})"
    dummy = getattr(model, "dummy_inputs", None)
    if isinstance(dummy, dict) and dummy:
        kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in dummy.items()}
        return (), kwargs, "model.dummy_inputs"
    return None


def describe_inputs(example_inputs: Any) -> dict[str, Any] | None:
    """The shapes and dtypes of example inputs (``{"args": [...], "kwargs": {...}}``), what a
    saved recipe needs to find the same sites again; None without inputs."""
    if example_inputs is None:
        return None
    args, kwargs = split_inputs(example_inputs)

    def one(t: Any) -> dict[str, Any] | None:
        if not isinstance(t, torch.Tensor):
            return None  # a non-tensor input (a flag): the recipe cannot remake it
        return {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}

    return {"args": [one(a) for a in args], "kwargs": {k: one(v) for k, v in kwargs.items()}}


def make_inputs(description: dict[str, Any] | None) -> Any:
    """Inputs of the described shapes and dtypes: fixed-seed normal floats, ones for integers
    and booleans (token ids and attention masks that keep every position)."""
    if description is None:
        return None
    gen = torch.Generator().manual_seed(0)

    def one(d: dict[str, Any] | None) -> Any:
        if d is None:
            raise ConfigError("the recipe's example inputs include a non-tensor: pass inputs")
        dtype = getattr(torch, d["dtype"])
        if dtype.is_floating_point:
            return torch.randn(d["shape"], generator=gen).to(dtype)
        return torch.ones(d["shape"], dtype=dtype)

    if description["kwargs"]:
        return {k: one(v) for k, v in description["kwargs"].items()}
    return tuple(one(a) for a in description["args"])


def split_inputs(example_inputs: Any) -> tuple[tuple, dict]:
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, list | tuple):
        return tuple(example_inputs), {}
    raise TypeError(
        f"example_inputs must be a tuple of positional inputs (as torch.export takes them), a "
        f"tensor, or a dict of keyword inputs; got {type(example_inputs).__name__}"
    )


def discover(model: nn.Module, example_inputs: Any = None) -> Trace:
    eco.register_libraries()
    eco.probe_modules(model)  # before any recording: probing runs modules
    if example_inputs is not None:
        args, kwargs = split_inputs(example_inputs)
        try:
            return record_run(model, args, kwargs, "example_inputs")
        except Exception as e:  # wrong inputs are a user error: say so in one line
            raise ConfigError(f"the model failed on example_inputs ({_first_line(e)})") from e
    notes = []
    try:
        return record_fx(model)
    except Exception as e:  # any tracing failure: fall back, and say why
        notes.append(f"torch.fx cannot trace the model ({_first_line(e)})")
    inferred = infer_inputs(model)
    if inferred is not None:
        args, kwargs, source = inferred
        try:
            trace = record_run(model, args, kwargs, "inferred inputs")
            trace.notes = notes + [f"ran the model on inputs from {source}"]
            return trace
        except Exception as e:
            notes.append(f"running the model on {source} failed ({_first_line(e)})")
    trace = record_structure(model)
    trace.notes = notes + [
        "no example_inputs: sites are listed in module registration order (not verified to be "
        "execution order); shared modules and functional calls cannot be seen, and producers "
        "are known only inside nn.Sequential; pass example_inputs for a complete plan"
    ]
    return trace
