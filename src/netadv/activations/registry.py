"""The activation registry: one source of truth from names, modules and callables to specs.

An :class:`ActivationSpec` is everything netadv knows about one activation ``f``: the function,
its derivative, a closed-form adversarial when one exists, and the name of its HD-FGD
decomposition. :func:`resolve` turns anything a user may pass (a name, a torch.nn activation
instance or class, a torch callable, a sympy expression) into a spec.
"""

from __future__ import annotations

import ast
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sympy
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netadv import symbolic
from netadv.activations import closed_forms as cf
from netadv.activations.interval import autograd_derivative

ClosedFormFactory = Callable[[float], cf.ClosedForm]  # argument: max |x| it will be called on


@dataclass(frozen=True)
class ActivationSpec:
    """What netadv knows about one activation."""

    name: str
    fn: Callable[[Tensor], Tensor]
    derivative: Callable[[Tensor], Tensor] | None = None  # None: autograd of fn
    closed_form: ClosedFormFactory | None = None
    decomposition: str | None = None
    params: tuple[tuple[str, Any], ...] = ()
    expr: sympy.Expr | None = field(default=None, compare=False)  # for sympy-given activations

    @property
    def key(self) -> tuple:
        return (self.name, self.params)

    @property
    def title(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self.params)})"

    def deriv(self, x: Tensor) -> Tensor:
        return (self.derivative or autograd_derivative(self.fn))(x)

    def f0(self) -> float:
        return float(self.fn(torch.zeros(1, dtype=torch.float64))[0])


_REGISTRY: dict[str, Callable[..., ActivationSpec]] = {}
_ALIASES = {
    "swish": "silu",
    "phi": "normal_cdf",
    "atan": "arctan",
    "leakyrelu": "leaky_relu",
    "gelu_new": "gelu_tanh",
    "linear": "identity",
}


def _builtin(name: str, decomposition: str | None = None):
    def register(factory):
        _REGISTRY[name] = factory
        factory.decomposition = decomposition
        return factory

    return register


def _phi(x: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


@_builtin("identity")
def _identity() -> ActivationSpec:
    return ActivationSpec("identity", lambda x: x, torch.ones_like, lambda m: cf.identity())


@_builtin("sigmoid")
def _sigmoid() -> ActivationSpec:
    d = lambda x: torch.sigmoid(x) * torch.sigmoid(-x)
    return ActivationSpec("sigmoid", torch.sigmoid, d, lambda m: cf.sigmoid())


@_builtin("tanh", decomposition="tanh")
def _tanh() -> ActivationSpec:
    d = lambda x: 1 / torch.cosh(x) ** 2
    return ActivationSpec("tanh", torch.tanh, d, lambda m: cf.tanh(), decomposition="tanh")


@_builtin("softsign")
def _softsign() -> ActivationSpec:
    return ActivationSpec(
        "softsign", F.softsign, lambda x: 1 / (1 + x.abs()) ** 2, lambda m: cf.softsign()
    )


@_builtin("arctan")
def _arctan() -> ActivationSpec:
    return ActivationSpec("arctan", torch.atan, lambda x: 1 / (1 + x * x), lambda m: cf.arctan())


@_builtin("erf")
def _erf() -> ActivationSpec:
    d = lambda x: 2 / math.sqrt(math.pi) * torch.exp(-x * x)
    return ActivationSpec("erf", torch.erf, d, cf.erf)


@_builtin("normal_cdf")
def _normal_cdf() -> ActivationSpec:
    d = lambda x: torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    return ActivationSpec("normal_cdf", _phi, d, cf.normal_cdf)


@_builtin("exp")
def _exp() -> ActivationSpec:
    return ActivationSpec("exp", torch.exp, torch.exp, lambda m: cf.exp())


@_builtin("softplus")
def _softplus(beta: float = 1.0) -> ActivationSpec:
    return ActivationSpec(
        "softplus",
        lambda x: F.softplus(x, beta=beta),
        lambda x: torch.sigmoid(beta * x),
        lambda m: cf.softplus(beta),
        params=(("beta", float(beta)),) if beta != 1.0 else (),
    )


def _elu_like(name: str, alpha: float, scale: float, params) -> ActivationSpec:
    fn = lambda x: scale * F.elu(x, alpha=alpha)
    d = lambda x: scale * torch.where(x >= 0, torch.ones_like(x), alpha * torch.exp(x))
    return ActivationSpec(name, fn, d, lambda m: cf.elu(alpha, scale), params=params)


@_builtin("elu")
def _elu(alpha: float = 1.0) -> ActivationSpec:
    return _elu_like("elu", float(alpha), 1.0, (("alpha", float(alpha)),) if alpha != 1 else ())


@_builtin("selu")
def _selu() -> ActivationSpec:
    return _elu_like("selu", 1.6732632423543772, 1.0507009873554805, ())


@_builtin("leaky_relu")
def _leaky_relu(negative_slope: float = 0.01) -> ActivationSpec:
    a = float(negative_slope)
    d = lambda x: torch.where(x >= 0, torch.ones_like(x), torch.full_like(x, a))
    return ActivationSpec(
        "leaky_relu",
        lambda x: F.leaky_relu(x, a),
        d,
        lambda m: cf.leaky_relu(a),
        params=(("negative_slope", a),),
    )


# Activations with no global adversarial: registered for recognition and decomposition.
@_builtin("relu")
def _relu() -> ActivationSpec:
    return ActivationSpec("relu", torch.relu, lambda x: (x > 0).to(x.dtype))


@_builtin("gelu", decomposition="gelu")
def _gelu() -> ActivationSpec:
    return ActivationSpec("gelu", F.gelu, decomposition="gelu")


@_builtin("gelu_tanh", decomposition="gelu_tanh")
def _gelu_tanh() -> ActivationSpec:
    fn = lambda x: F.gelu(x, approximate="tanh")
    return ActivationSpec("gelu_tanh", fn, decomposition="gelu_tanh")


@_builtin("silu", decomposition="silu")
def _silu() -> ActivationSpec:
    return ActivationSpec("silu", F.silu, decomposition="silu")


@_builtin("mish", decomposition="mish")
def _mish() -> ActivationSpec:
    return ActivationSpec("mish", F.mish, decomposition="mish")


@_builtin("quick_gelu", decomposition="quick_gelu")
def _quick_gelu() -> ActivationSpec:
    fn = lambda x: x * torch.sigmoid(1.702 * x)
    return ActivationSpec("quick_gelu", fn, decomposition="quick_gelu")


def names() -> list[str]:
    return sorted(_REGISTRY)


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown activation {name!r}; known: {', '.join(names())} (or pass a torch callable, "
        f"a torch.nn module, or a sympy expression; add one with netadv.register_activation)"
    )


def _parse_call(text: str) -> tuple[str, dict[str, Any]]:
    """``"leaky_relu(0.1)"`` / ``"elu(alpha=0.5)"`` -> name and keyword parameters."""
    try:
        call = ast.parse(text.strip(), mode="eval").body
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            raise ValueError
        factory = _REGISTRY[_ALIASES.get(call.func.id.lower(), call.func.id.lower())]
        names = list(inspect.signature(factory).parameters)
        params = {names[i]: ast.literal_eval(a) for i, a in enumerate(call.args)}
        params.update({k.arg: ast.literal_eval(k.value) for k in call.keywords})
        return call.func.id, params
    except (SyntaxError, ValueError, KeyError, IndexError):
        raise _unknown(text) from None


def by_name(name: str, **params) -> ActivationSpec:
    if "(" in name:
        name, parsed = _parse_call(name)
        params = {**parsed, **params}
    key = name.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise _unknown(name)
    factory = _REGISTRY[key]
    try:
        memo = (factory, tuple(sorted(params.items())))
        hash(memo)
    except TypeError:
        memo = None
    if memo is not None and memo in _SPECS:
        return _SPECS[memo]
    try:
        spec = factory(**params)
    except TypeError as e:
        raise ValueError(f"bad parameters for activation {name!r}: {e}") from None
    if memo is not None:
        _SPECS[memo] = spec
    return spec


#: Specs already made, by (factory, parameters): the same activation resolves to the same spec
#: object, so what is cached per spec (stable interval, shared kernels) is computed once.
#: Keyed by the factory, so a name re-registered (or a registry restored) never hits stale specs.
_SPECS: dict[tuple, ActivationSpec] = {}


# torch.nn classes -> (registry name, how to read the instance's parameters). Extensible through
# register_module_class (the rewriter adds timm's and transformers' classes the same way).
_MODULE_CLASSES: dict[type, tuple[str, Callable[[nn.Module], dict]]] = {
    nn.Identity: ("identity", lambda m: {}),
    nn.Sigmoid: ("sigmoid", lambda m: {}),
    nn.Tanh: ("tanh", lambda m: {}),
    nn.Softsign: ("softsign", lambda m: {}),
    nn.Softplus: ("softplus", lambda m: {"beta": m.beta}),
    nn.ELU: ("elu", lambda m: {"alpha": m.alpha}),
    nn.SELU: ("selu", lambda m: {}),
    nn.LeakyReLU: ("leaky_relu", lambda m: {"negative_slope": m.negative_slope}),
    nn.ReLU: ("relu", lambda m: {}),
    nn.GELU: ("gelu", lambda m: {} if m.approximate == "none" else {"_name": "gelu_tanh"}),
    nn.SiLU: ("silu", lambda m: {}),
    nn.Mish: ("mish", lambda m: {}),
}

_TORCH_CALLABLES: dict[Callable, str] = {
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    F.tanh: "tanh",
    torch.atan: "arctan",
    torch.arctan: "arctan",
    torch.erf: "erf",
    torch.exp: "exp",
    F.softsign: "softsign",
    F.softplus: "softplus",
    F.elu: "elu",
    F.selu: "selu",
    F.leaky_relu: "leaky_relu",
    torch.relu: "relu",
    F.relu: "relu",
    F.gelu: "gelu",
    F.silu: "silu",
    F.mish: "mish",
}


def register_module_class(cls: type, name: str, params: Callable[[nn.Module], dict] | None = None):
    """Teach netadv that instances of ``cls`` compute the registered activation ``name``."""
    _MODULE_CLASSES[cls] = (name, params or (lambda m: {}))


def module_activation_name(module: nn.Module) -> str | None:
    """The registry name a module instance computes, or None if it is not a known activation."""
    for cls in type(module).__mro__:
        if cls in _MODULE_CLASSES:
            name, params = _MODULE_CLASSES[cls]
            return params(module).get("_name", name)
    return None


def from_sympy(expr: sympy.Expr | str, name: str | None = None) -> ActivationSpec:
    expr = symbolic.parse(expr) if isinstance(expr, str) else sympy.sympify(expr)
    x = symbolic.only_symbol(expr)
    if not x.is_real:  # activations are real: d|x|/dx is then sign(x), not re/im terms
        real = sympy.Symbol(x.name, real=True)
        expr, x = expr.subs(x, real), real
    return ActivationSpec(
        name or str(expr),
        symbolic.unary(expr, x),
        symbolic.unary(sympy.diff(expr, x), x),
        expr=expr,
    )


def resolve(f: Any) -> ActivationSpec:
    """Any accepted description of an activation -> its :class:`ActivationSpec`."""
    if isinstance(f, ActivationSpec):
        return f
    if isinstance(f, str):
        return by_name(f)
    if isinstance(f, type) and issubclass(f, nn.Module):
        try:
            f = f()
        except TypeError as e:
            raise ValueError(f"cannot instantiate {f.__name__} with no arguments: {e}") from None
    if isinstance(f, nn.Module):
        for cls in type(f).__mro__:
            if cls in _MODULE_CLASSES:
                name, params = _MODULE_CLASSES[cls]
                p = params(f)
                name = p.pop("_name", name)
                return by_name(name, **p)
        return ActivationSpec(type(f).__name__, f)  # an unknown element-wise module: generic
    if isinstance(f, sympy.Basic):
        return from_sympy(f)
    if callable(f):
        if f in _TORCH_CALLABLES:
            return by_name(_TORCH_CALLABLES[f])
        return ActivationSpec(getattr(f, "__name__", type(f).__name__), f)
    raise TypeError(
        f"cannot make an activation from {type(f).__name__}: pass a name, a torch.nn module "
        f"(instance or class), an element-wise torch callable, or a one-symbol sympy expression"
    )


def register(
    name: str,
    f: Any,
    *,
    derivative: Callable[[Tensor], Tensor] | None = None,
    adversarial: Callable[[Tensor], Tensor] | None = None,
    decomposition: Any = None,
) -> None:
    key = name.lower()
    base = resolve(f)
    closed = None
    if adversarial is not None:
        deriv = derivative or base.derivative or autograd_derivative(base.fn)
        a0 = float(adversarial(torch.zeros(1, dtype=torch.float64))[0])
        closed = lambda m: cf.ClosedForm(lambda x: adversarial(x) - a0, lambda x: 1 / deriv(x))
    if decomposition is not None:
        from netadv.decompose import register_decomposition

        register_decomposition(key, decomposition)
        decomposition = key
    spec = ActivationSpec(
        key,
        base.fn,
        derivative or base.derivative,
        closed or base.closed_form,
        decomposition or base.decomposition,
        expr=base.expr,
    )
    _REGISTRY[key] = lambda: spec
    _REGISTRY[key].decomposition = spec.decomposition
