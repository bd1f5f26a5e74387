"""The activation registry: from names, modules and callables to specs.

The registry holds one :class:`~netadv.activations.builtins.ActivationRow` per activation (the
built-in table, then a user's registrations) and the lookup tables derived from the rows:
aliases, torch.nn classes, torch callables, sympy functions and HD-FGD decompositions.

An :class:`ActivationSpec` is one activation with its parameters bound: the function, its
derivative, a closed-form adversarial when one exists, and the name of its HD-FGD
decomposition. :func:`resolve` turns anything a user may pass (a name, a torch.nn activation
instance or class, a torch callable, a sympy expression) into a spec.
"""

from __future__ import annotations

import ast
import functools
import inspect
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sympy
import torch
from torch import Tensor, nn

from netadv import symbolic
from netadv.activations import closed_forms as cf
from netadv.activations.builtins import BUILTINS, ActivationRow
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
    #: where f has no adversarial, one to suggest (netadv.adversarial's argument, as source)
    surrogate: str | None = field(default=None, compare=False)
    #: ``(function, args)`` that makes this spec again, for a spec built outside the registry
    #: (an SA term's chain of functions): how it is pickled
    origin: tuple | None = field(default=None, compare=False)

    def __deepcopy__(self, memo):  # immutable, shared like a function
        return self

    def __reduce__(self):
        """Pickled as how to get it again (its functions are not pickled): a registered name
        and parameters, or a sympy expression."""
        if self.origin is not None:
            return self.origin
        if self.expr is not None:
            return (from_sympy, (self.expr, self.name))
        if _row_named(self.name) is not None and _same(
            by_name(self.name, **dict(self.params)), self
        ):
            return (_by_name, (self.name, self.params))
        raise pickle.PicklingError(
            f"cannot pickle the activation {self.title}: it is a Python callable netadv did not "
            "register; register it under a name (netadv.register_activation(name, f)), or save "
            "model.state_dict() instead of the whole model"
        )

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


def _same(a: ActivationSpec, b: ActivationSpec) -> bool:
    """Whether two specs compute the same activation (the one a name gives, say)."""
    return a is b or (a.key == b.key and a.fn is b.fn)


def _by_name(name: str, params: tuple[tuple[str, Any], ...]) -> ActivationSpec:
    return by_name(name, **dict(params))


# ---- the rows and what is derived from them -------------------------------------------------

_ROWS: dict[str, ActivationRow] = {}
_ALIASES: dict[str, str] = {}
# torch.nn classes -> (registry name, how to read the instance's parameters). Extensible through
# register_module_class (the rewriter adds timm's and transformers' classes the same way).
_MODULE_CLASSES: dict[type, tuple[str, Callable[[nn.Module], dict]]] = {}
_TORCH_CALLABLES: dict[Callable, str] = {}
_SYMPY_FUNCTIONS: dict[str, str] = {}  # sympy function name -> registry name
_DECOMPOSITIONS: dict[str, sympy.Expr] = {}


def _no_params(module: nn.Module) -> dict:
    return {}


def _module_params(row: ActivationRow, module: nn.Module) -> dict:
    """A built-in module's parameters from its attributes; ``_name`` names a variant."""
    for attribute, value, variant in row.variants:
        if getattr(module, attribute, None) == value:
            return {"_name": variant}
    return {p.name: getattr(module, p.name) for p in row.params if hasattr(module, p.name)}


def add(row: ActivationRow) -> None:
    """Register ``row`` (replacing one of the same name) and everything derived from it."""
    _ROWS[row.name] = row
    _ALIASES.update((alias, row.name) for alias in row.aliases)
    for cls in row.modules:
        _MODULE_CLASSES[cls] = (row.name, functools.partial(_module_params, row))
    _TORCH_CALLABLES.update((c, row.name) for c in row.callables)
    if row.sympy is not None:
        _SYMPY_FUNCTIONS[row.sympy.__name__] = row.name
    if isinstance(row.decomposition, sympy.Basic):
        _DECOMPOSITIONS[row.name] = row.decomposition


for _builtin in BUILTINS:
    add(_builtin)


def names() -> list[str]:
    return sorted(_ROWS)


def sympy_activation(function_name: str) -> str | None:
    """The registered activation a sympy function (by name) computes, if any."""
    return _SYMPY_FUNCTIONS.get(function_name)


# ---- decompositions -------------------------------------------------------------------------


def register_decomposition(name: str, decomposition: Any) -> None:
    """Register a decomposition under ``name``: a :class:`~netadv.Decomposition`, a sympy
    expression in ``x_1 .. x_k`` (symbols named that way), or a one-symbol expression to lift
    automatically."""
    _DECOMPOSITIONS[name.lower()] = _decomposition_expr(decomposition)


def _decomposition_expr(decomposition: Any) -> sympy.Expr:
    if isinstance(decomposition, str | sympy.Basic):
        return symbolic.lifted_expr(decomposition)
    return decomposition.expr  # a netadv.Decomposition


def decomposition_expr(name: str) -> sympy.Expr | None:
    """The registered decomposition ``F(x_1..x_k)`` called ``name`` (None if there is none)."""
    return _DECOMPOSITIONS.get(name.lower())


def decomposition_names() -> list[str]:
    return sorted(_DECOMPOSITIONS)


# ---- names -> specs -------------------------------------------------------------------------


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown activation {name!r}; known: {', '.join(names())} (or pass a torch callable, "
        f"a torch.nn module, or a sympy expression; add one with netadv.register_activation)"
    )


def _row_named(name: str) -> ActivationRow | None:
    key = name.lower().replace("-", "_")
    return _ROWS.get(_ALIASES.get(key, key))


def _parse_call(text: str) -> tuple[str, dict[str, Any]]:
    """``"leaky_relu(0.1)"`` / ``"elu(alpha=0.5)"`` -> name and keyword parameters."""
    try:
        call = ast.parse(text.strip(), mode="eval").body
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            raise ValueError
        row = _ROWS[_ALIASES.get(call.func.id.lower(), call.func.id.lower())]
        params = {row.params[i].name: ast.literal_eval(a) for i, a in enumerate(call.args)}
        params.update({k.arg: ast.literal_eval(k.value) for k in call.keywords})
        return call.func.id, params
    except (SyntaxError, ValueError, KeyError, IndexError):
        raise _unknown(text) from None


def _bind(row: ActivationRow, params: Mapping[str, Any]) -> dict[str, float]:
    """Every parameter of ``row``: the given ones (as floats), else the defaults."""
    values = row.defaults()
    for k, v in params.items():
        if k not in values:
            raise TypeError(f"{row.name}() got an unexpected keyword argument {k!r}")
        values[k] = float(v)
    return values


def by_name(name: str, **params) -> ActivationSpec:
    if "(" in name:
        name, parsed = _parse_call(name)
        params = {**parsed, **params}
    row = _row_named(name)
    if row is None:
        raise _unknown(name)
    try:
        values = _bind(row, params)
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad parameters for activation {name!r}: {e}") from None
    memo = (row, tuple(values.items()))
    if memo not in _SPECS:
        _SPECS[memo] = _spec(row, values)
    return _SPECS[memo]


#: Specs already made, by (row, parameters): the same activation resolves to the same spec
#: object, so what is cached per spec (stable interval, kernels) is computed once. Keyed by the
#: row object, so a name re-registered (or a registry restored) never hits stale specs.
_SPECS: dict[tuple, ActivationSpec] = {}


def _closed_form_at(
    factory: Callable[..., cf.ClosedForm], params: dict, x_max: float
) -> cf.ClosedForm:
    if "x_max" in inspect.signature(factory).parameters:
        return factory(x_max=x_max, **params)
    return factory(**params)


def _bound(fn: Callable | None, values: dict[str, float]) -> Callable | None:
    return functools.partial(fn, **values) if fn is not None and values else fn


def _spec(row: ActivationRow, values: dict[str, float]) -> ActivationSpec:
    """``row`` with its parameters bound to ``values``."""
    closed = None
    if row.closed_form is not None:
        closed = functools.partial(_closed_form_at, row.closed_form, values)
    decomposition = row.decomposition
    if isinstance(decomposition, sympy.Basic):
        decomposition = row.name
    return ActivationSpec(
        row.name,
        _bound(row.fn, values),
        _bound(row.derivative, values),
        closed,
        decomposition,
        row.listed(values),
        expr=row.expr,
        surrogate=row.surrogate(**values) if row.surrogate is not None else None,
    )


def call_params(name: str, values: Mapping[str, Any]) -> tuple[str, dict[str, float]]:
    """The activation a functional call of ``name`` computes, given its arguments ``values``:
    a variant's name where one applies, and the parameters that name its instance."""
    row = _ROWS[name]
    for keyword, value, variant in row.variants:
        if values.get(keyword) == value:
            return call_params(variant, values)
    bound = {p.name: float(values.get(p.name, p.default)) for p in row.params}
    return name, dict(row.listed(bound))


# ---- modules, callables, expressions -> specs ----------------------------------------------


def register_module_class(cls: type, name: str, params: Callable[[nn.Module], dict] | None = None):
    """Teach netadv that instances of ``cls`` compute the registered activation ``name``."""
    _MODULE_CLASSES[cls] = (name, params or _no_params)


def module_activation_name(module: nn.Module) -> str | None:
    """The registry name a module instance computes, or None if it is not a known activation."""
    for cls in type(module).__mro__:
        if cls in _MODULE_CLASSES:
            name, params = _MODULE_CLASSES[cls]
            return params(module).get("_name", name)
    return None


def from_sympy(expr: sympy.Expr | str, name: str | None = None) -> ActivationSpec:
    expr = symbolic.parse(expr) if isinstance(expr, str) else sympy.sympify(expr)
    return _from_sympy(expr, name)


@functools.lru_cache(maxsize=128)
def _from_sympy(expr: sympy.Expr, name: str | None) -> ActivationSpec:
    """One spec per expression, so its stable interval and kernel are built once."""
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


def _from_module(f: nn.Module) -> ActivationSpec:
    for cls in type(f).__mro__:
        if cls in _MODULE_CLASSES:
            name, params = _MODULE_CLASSES[cls]
            p = params(f)
            if "_spec" in p:  # a module that carries its spec (netadv's Activation)
                return p["_spec"]
            name = p.pop("_name", name)
            return by_name(name, **p)
    check_elementwise(f, type(f).__name__)
    return ActivationSpec(type(f).__name__, f)  # an unknown element-wise module: generic


#: The probe of :func:`check_elementwise` (float64, distinct, both signs) and a permutation.
_PROBE = (-2.5, -1.25, -0.5, -0.125, 0.25, 0.75, 1.5, 3.0)
_PERMUTATION = (5, 2, 7, 0, 3, 6, 1, 4)
_ACCEPTED = (
    "netadv takes functions applied to each element on its own: a registered name, torch.tanh, "
    "nn.GELU(), lambda x: x * torch.sigmoid(x), or a one-symbol sympy expression"
)


def check_elementwise(fn: Callable, name: str) -> None:
    """Raise ValueError unless ``fn`` maps a tensor to one of its shape element by element:
    probed on a small float64 vector, permuted (cumsum fails) and cut short (softmax, which a
    permutation cannot tell, fails)."""
    x = torch.tensor(_PROBE, dtype=torch.float64)
    perm = torch.tensor(_PERMUTATION)
    with torch.no_grad():
        try:
            y = fn(x)
            why = _not_elementwise(fn, x, y, perm)
        except Exception as e:  # noqa: BLE001 - any failure of a user's callable is reported
            first = str(e).splitlines()[0] if str(e) else ""
            why = f"calling it on a float64 tensor of shape (8,) failed ({type(e).__name__}: "
            why += f"{first})"
    if why is not None:
        raise ValueError(f"{name} is not an element-wise activation: {why}; {_ACCEPTED}")


def _not_elementwise(fn: Callable, x: Tensor, y: Any, perm: Tensor) -> str | None:
    """Why ``fn`` (with ``y = fn(x)``) is not element-wise, or None."""
    if not isinstance(y, Tensor):
        return f"it returns {type(y).__name__}, not a tensor of its input's shape"
    if y.shape != x.shape:
        return f"it maps a tensor of shape {tuple(x.shape)} to one of shape {tuple(y.shape)}"
    same = lambda a, b: torch.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)
    if not same(fn(x[perm]), y[perm]):
        return "permuting its input does not permute its output (f(x[p]) != f(x)[p])"
    if not same(fn(x[:3]), y[:3]):
        return "each output depends on other elements (f(x[:3]) != f(x)[:3])"
    return None


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
        return _from_module(f)
    if isinstance(f, sympy.Basic):
        return from_sympy(f)
    if callable(f):
        if f in _TORCH_CALLABLES:
            return by_name(_TORCH_CALLABLES[f])
        name = getattr(f, "__name__", type(f).__name__)
        check_elementwise(f, name)
        return ActivationSpec(name, f)
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
    """Register ``f`` under ``name`` so every netadv API accepts the name (a row, as the
    built-ins are; ``netadv.register_activation`` is this function).

    ``derivative`` (f') and ``adversarial`` (a closed form of A_f, any anchor) are optional:
    without them netadv uses autograd and the generic construction. ``decomposition`` is a
    registered decomposition name, a sympy expression in x_1..x_k, or a one-symbol expression.
    """
    key = name.lower()
    base = resolve(f)
    for what, fn in (("derivative", derivative), ("adversarial", adversarial)):
        if fn is not None:
            check_elementwise(fn, f"{name}'s {what}")
    closed = base.closed_form
    if adversarial is not None:
        deriv = derivative or base.derivative or autograd_derivative(base.fn)
        a0 = float(adversarial(torch.zeros(1, dtype=torch.float64))[0])
        closed = functools.partial(cf.given, adversarial, deriv, a0)
    if decomposition is not None:
        decomposition = _decomposition_expr(decomposition)
    row = ActivationRow(
        key,
        fn=base.fn,
        derivative=derivative or base.derivative,
        closed_form=closed,
        decomposition=decomposition if decomposition is not None else base.decomposition,
        expr=base.expr,
    )
    add(row)
