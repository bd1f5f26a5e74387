"""What the rewriter recognises in a model: activation modules and functions, producers, norms.

Activation classes of torch.nn are in the core registry. timm's and HuggingFace transformers'
classes are registered here the first time a model is planned, and only for the libraries that
are already imported (a model built from them has imported them), so netadv never imports them
itself. Classes that are known to be activations but have no registry entry (ReLU6, Hardswish,
clipped GELUs...) are sites too: the plan reports them unchanged instead of guessing.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from netadv.activations import registry
from netadv.activations.builtins import BUILTINS
from netadv.layers.hdfgd import NORMS, PRODUCERS

# (module, class, registry name or None for "an activation netadv does not model")
_LIBRARY_CLASSES: list[tuple[str, str, str | None]] = [
    ("timm.layers.activations", "GELU", "gelu"),
    ("timm.layers.activations", "GELUTanh", "gelu_tanh"),
    ("timm.layers.activations", "QuickGELU", "quick_gelu"),
    ("timm.layers.activations", "Sigmoid", "sigmoid"),
    ("timm.layers.activations", "Tanh", "tanh"),
    ("timm.layers.activations", "Swish", "silu"),
    ("timm.layers.activations", "Mish", "mish"),
    ("timm.layers.activations", "HardSigmoid", None),
    ("timm.layers.activations", "HardSwish", None),
    ("timm.layers.activations", "HardMish", None),
    ("timm.layers.activations", "PReLU", None),
    ("timm.layers.activations_me", "SwishMe", "silu"),
    ("timm.layers.activations_me", "MishMe", "mish"),
    ("timm.layers.activations_me", "HardSigmoidMe", None),
    ("timm.layers.activations_me", "HardSwishMe", None),
    ("timm.layers.activations_me", "HardMishMe", None),
    ("transformers.activations", "GELUActivation", "gelu"),
    ("transformers.activations", "NewGELUActivation", "gelu_tanh"),
    ("transformers.activations", "FastGELUActivation", "gelu_tanh"),
    ("transformers.activations", "AccurateGELUActivation", "gelu_tanh"),
    ("transformers.activations", "GELUTanh", "gelu_tanh"),
    ("transformers.activations", "PytorchGELUTanh", "gelu_tanh"),
    ("transformers.activations", "QuickGELUActivation", "quick_gelu"),
    ("transformers.activations", "SiLUActivation", "silu"),
    ("transformers.activations", "MishActivation", "mish"),
    ("transformers.activations", "ClippedGELUActivation", None),
    ("transformers.activations", "LaplaceActivation", None),
    ("transformers.activations", "ReLUSquaredActivation", None),
    ("transformers.activations", "SqrtSoftplusActivation", None),
    ("transformers.activations", "XIELUActivation", None),
]

#: torch.nn element-wise activations netadv has no registry entry for.
_UNMODELLED: set[type] = {
    nn.ReLU6,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.PReLU,
    nn.RReLU,
    nn.CELU,
    nn.LogSigmoid,
    nn.Softshrink,
    nn.Hardshrink,
    nn.Tanhshrink,
    nn.Threshold,
}

_PASSTHROUGH: set[type] = {
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
}

# Layers that compute a Linear and can be rebuilt as one: class -> converter to nn.Linear.
_ADAPTERS: dict[type, Callable[[nn.Module], nn.Linear]] = {}
_seen_libraries: set[str] = set()


def _hf_conv1d_to_linear(m: nn.Module) -> nn.Linear:
    """transformers' Conv1D (GPT-2) is a Linear with a transposed weight."""
    w = m.weight
    lin = nn.Linear(w.shape[0], w.shape[1], bias=m.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        lin.weight.copy_(w.t())
        if m.bias is not None:
            lin.bias.copy_(m.bias)
    lin.train(m.training)
    return lin


_LIBRARY_ADAPTERS = [("transformers.pytorch_utils", "Conv1D", _hf_conv1d_to_linear)]
_LIBRARY_PASSTHROUGH = [("timm.layers.drop", "DropPath")]


def register_libraries() -> None:
    """Register the activation classes, adapters and pass-through layers of every supported
    library that is imported (cheap: runs once per newly imported library)."""
    for modname, clsname, name in _LIBRARY_CLASSES:
        mod = sys.modules.get(modname)
        cls = getattr(mod, clsname, None) if mod is not None else None
        if cls is None or (modname, clsname) in _seen_libraries:
            continue
        _seen_libraries.add((modname, clsname))
        if name is None:
            _UNMODELLED.add(cls)
        else:
            registry.register_module_class(cls, name)
    for modname, clsname, fn in _LIBRARY_ADAPTERS:
        cls = getattr(sys.modules.get(modname), clsname, None)
        if cls is not None:
            _ADAPTERS.setdefault(cls, fn)
    for modname, clsname in _LIBRARY_PASSTHROUGH:
        cls = getattr(sys.modules.get(modname), clsname, None)
        if cls is not None:
            _PASSTHROUGH.add(cls)


#: Modules the rewriter never looks inside (their calls are not sites), e.g. a normalisation
#: layer that computes a tanh (DyT).
_OPAQUE: set[type] = set()


def register_opaque_module(cls: type) -> None:
    """Mark ``cls`` as a layer whose inside is not the rewriter's business: the functions it
    calls (a tanh in a normalisation layer, say) are never activation sites."""
    _OPAQUE.add(cls)


def is_opaque(m: nn.Module) -> bool:
    return isinstance(m, tuple(_OPAQUE)) if _OPAQUE else False


def after_rewrite(model: nn.Module, changed: list[str]) -> None:
    """What a library's layer needs once something inside it changed: torch's
    TransformerEncoderLayer has a fused inference path (eval mode, no grad) that computes its
    feed-forward block from ``linear1``/``linear2``'s weights and a built-in ReLU/GELU, bypassing
    the modules; it is switched off in every layer whose inside was rewritten."""
    for path, m in model.named_modules():
        if isinstance(m, nn.TransformerEncoderLayer) and any(
            c == path or c.startswith(path + ".") for c in changed
        ):
            m.activation_relu_or_gelu = False


def register_unmodelled_activation(cls: type) -> None:
    """Mark ``cls`` as an element-wise activation netadv cannot convert: its calls are then
    listed as sites and reported unchanged (register a real one with
    ``netadv.activations.registry.register_module_class``)."""
    _UNMODELLED.add(cls)


#: Probe points: dense where activations bend, out to where they saturate.
_PROBE = torch.cat([torch.linspace(-6.0, 6.0, 97), torch.tensor([-30.0, -12.0, 12.0, 30.0])])
_PROBE = _PROBE.double()
_NOT_ACTIVATIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def probe_activation(m: nn.Module) -> str | None:
    """The registered activation an unknown module computes, found by running it: a module of a
    library netadv has no table for (HF Bloom's ``BloomGelu`` writes GELU with a tanh) is
    otherwise traced into and its inner functions taken for sites. Only parameter-free leaf
    modules from outside torch are probed, on float64 points, against every registered
    activation at its default parameters (agreement to 1e-6 relative); a match registers the
    class (:func:`netadv.activations.registry.register_module_class`)."""
    cls = type(m)
    if cls.__module__.startswith(("torch.", "netadv.")) or m in _NOT_ACTIVATIONS:
        return None
    if torch._C._is_torch_function_mode_enabled():  # inside a recording: never run a module
        return None
    if any(next(it, None) is not None for it in (m.children(), m.parameters(), m.buffers())):
        return None  # not a pure function of its input
    try:
        with torch.no_grad():
            y = m(_PROBE.clone())
    except Exception:  # not a one-tensor function: not an activation
        y = None
    name = _matching(y) if isinstance(y, torch.Tensor) and y.shape == _PROBE.shape else None
    if name is None:
        _NOT_ACTIVATIONS[m] = True
        return None
    registry.register_module_class(cls, name)
    return name


def probe_modules(model: nn.Module) -> None:
    """Probe every unknown module of ``model`` once (see :func:`probe_activation`)."""
    for m in model.modules():
        if registry.module_activation_name(m) is None:
            probe_activation(m)


def _matching(y: torch.Tensor) -> str | None:
    """The registered activation (not the identity) equal to ``y`` on the probe points."""
    y = y.double()
    for name in registry.names():
        if name == "identity":
            continue
        f = registry.by_name(name).fn(_PROBE)
        if torch.all((y - f).abs() <= 1e-6 * (1 + f.abs())):
            return name
    return None


def _exact_forward(m: nn.Module, bases: tuple[type, ...]) -> bool:
    return any(isinstance(m, b) and type(m).forward is b.forward for b in bases)


def module_activation(m: nn.Module) -> tuple[str | None, str] | None:
    """``(registry name or None, title)`` if ``m`` is an activation module, else None.
    nn.Identity (the registry's "identity") is not an activation site."""
    name = registry.module_activation_name(m)
    if name == "identity":
        return None
    if name is not None:
        return name, resolve_title(m)
    name = probe_activation(m)
    if name is not None:
        return name, resolve_title(m)
    if any(isinstance(m, c) for c in _UNMODELLED):
        return None, type(m).__name__
    return None


def resolve_title(m: Any) -> str:
    try:
        return registry.resolve(m).title
    except (ValueError, TypeError):
        return type(m).__name__


def is_passthrough(m: nn.Module) -> bool:
    return type(m) in _PASSTHROUGH


def is_producer(m: nn.Module) -> bool:
    if type(m) in _ADAPTERS:
        return True
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    return isinstance(m, PRODUCERS) and not transposed and _exact_forward(m, PRODUCERS)


def as_producer(m: nn.Module) -> nn.Module:
    """The layer itself, or its nn.Linear equivalent for an adapted class (HF Conv1D)."""
    fn = _ADAPTERS.get(type(m))
    return fn(m) if fn is not None else m


def is_norm(m: nn.Module) -> bool:
    """A torch.nn normalisation layer HD-FGD can widen (subclasses that change forward, such as
    timm's channels-first LayerNorm2d, are not)."""
    if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) != 1:
        return False
    return _exact_forward(m, NORMS)


# ---- functional activations -----------------------------------------------------------------


@dataclass(frozen=True)
class FunctionalOp:
    family: str  # "sigmoid", "gelu", ...: counted per owner to match fx nodes
    params: tuple[str, ...] = ()  # positional parameters after the input
    inplace: bool = False


#: Functional activations netadv has no registry entry for (sites reported unchanged); the
#: registered ones are the ``calls`` of the rows of netadv.activations.builtins.
_UNMODELLED_FUNCTIONS: dict[Any, FunctionalOp] = {
    F.celu: FunctionalOp("celu", ("alpha", "inplace")),
    F.relu6: FunctionalOp("relu6", ("inplace",)),
    F.hardtanh: FunctionalOp("hardtanh", ("min_val", "max_val", "inplace")),
    F.hardswish: FunctionalOp("hardswish", ("inplace",)),
    F.hardsigmoid: FunctionalOp("hardsigmoid", ("inplace",)),
    F.logsigmoid: FunctionalOp("logsigmoid"),
}


def _functional_tables() -> tuple[dict[Any, FunctionalOp], dict[str, FunctionalOp]]:
    """(called function -> op, tensor method name -> op); a method also by its function."""
    functions: dict[Any, FunctionalOp] = {}
    methods: dict[str, FunctionalOp] = {}
    for row in BUILTINS:
        for call in row.calls:
            op = FunctionalOp(row.name, call.params, call.inplace)
            if isinstance(call.target, str):
                methods[call.target] = op
                functions[getattr(torch.Tensor, call.target)] = op
            else:
                functions[call.target] = op
    return {**functions, **_UNMODELLED_FUNCTIONS}, methods


_FUNCTIONS, _METHODS = _functional_tables()
_PASSTHROUGH_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout}


def functional_op(target: Any, method: bool = False) -> FunctionalOp | None:
    """The activation op of a called function (or of a tensor method name, ``method=True``)."""
    if method:
        return _METHODS.get(target) if isinstance(target, str) else None
    try:
        return _FUNCTIONS.get(target)
    except TypeError:  # unhashable callable
        return None


def is_passthrough_function(target: Any) -> bool:
    try:
        return target in _PASSTHROUGH_FUNCTIONS
    except TypeError:
        return False


def functional_activation(
    op: FunctionalOp, args: tuple, kwargs: dict
) -> tuple[str | None, dict, bool]:
    """``(registry name or None, registry params, in place)`` of one functional call; ``args``
    are the arguments after the input."""
    values = dict(zip(op.params, args))
    values.update({k: v for k, v in kwargs.items() if k in op.params})
    inplace = op.inplace or bool(values.get("inplace", False))
    if op.family not in registry.names():
        return None, {}, inplace
    name, params = registry.call_params(op.family, values)
    return name, params, inplace
