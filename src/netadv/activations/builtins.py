"""The built-in activations: one row each, and everything else netadv knows is derived from it.

From :data:`BUILTINS` come the registry's names, aliases, torch.nn classes and torch callables
(:mod:`netadv.activations.registry`), the activation each sympy function of an SA term chain
stands for, the HD-FGD decompositions (:mod:`netadv.decompose`), the module a rewrite puts in a
model for a name (:mod:`netadv.rewrite.modules`), the functional calls the rewriter finds in a
traced model (:mod:`netadv.rewrite.ecosystem`) and ``netadv list``. Nothing else names a
built-in activation.

Adding one (softsign, say) is one row here, plus its closed form in ``closed_forms.py`` if it
has one; every field but ``name`` and ``fn`` may be left out::

    ActivationRow(
        "softsign",
        fn=F.softsign,                   # f(x, **params)
        derivative=_softsign_prime,      # f'(x, **params); None: autograd of fn
        closed_form=cf.softsign,         # A_f with A(0) = 0 and 1/f'; None: the knot table
        params=(),                       # Param(name, default) for each parameter of f
        aliases=(),                      # other names users write
        modules=(nn.Softsign,),          # torch.nn classes that compute it
        callables=(F.softsign,),         # torch callables that compute it
        nn_factory=nn.Softsign,          # the torch.nn module a rewrite builds for it
        calls=(Call(F.softsign),),       # the functional calls the rewriter matches
    )

Functions in a row are module-level functions (``functools.partial`` for fixed arguments), not
lambdas, so that what is built from them can be pickled.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sympy
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netadv.activations import closed_forms as cf
from netadv.symbolic import Phi, lifted_symbols, sigmoid, softplus

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


@dataclass(frozen=True)
class Param:
    """A parameter of an activation. It is listed in the activation's title (and key) when it
    differs from ``default``, or always with ``always=True``."""

    name: str
    default: float
    always: bool = False


@dataclass(frozen=True)
class Call:
    """A functional call the rewriter recognises: a torch function, or a Tensor method given by
    name; ``params`` are its positional parameters after the input."""

    target: Callable | str
    params: tuple[str, ...] = ()
    inplace: bool = False


@dataclass(frozen=True, eq=False)  # identity: specs made from a row are memoised per row
class ActivationRow:
    """Everything netadv knows about one activation, built in or registered by a user."""

    name: str
    fn: Callable[..., Tensor]  # f(x, **params)
    derivative: Callable[..., Tensor] | None = None  # f'(x, **params); None: autograd of fn
    #: ``factory(**params) -> ClosedForm`` (A with A(0) = 0, and 1/f'); a factory with an
    #: ``x_max`` parameter also receives the largest |x| the form will be evaluated on.
    closed_form: Callable[..., cf.ClosedForm] | None = None
    params: tuple[Param, ...] = ()
    aliases: tuple[str, ...] = ()
    #: torch.nn classes computing f; their parameters are read from same-named attributes.
    modules: tuple[type, ...] = ()
    #: ``(attribute or keyword, value, other activation)``: a module or call with that setting
    #: computes the other activation (nn.GELU(approximate="tanh") is gelu_tanh).
    variants: tuple[tuple[str, Any, str], ...] = ()
    callables: tuple[Callable, ...] = ()  # torch callables computing f (default parameters)
    sympy: type | None = None  # the sympy function that is f (a term of an SA chain)
    #: HD-FGD: ``F(x_1..x_k)`` with ``F(x, ..., x) = f(x)``, registered under this row's name,
    #: or the name of a decomposition registered elsewhere.
    decomposition: sympy.Expr | str | None = None
    nn_factory: Callable[..., nn.Module] | None = None  # nn_factory(**params) -> a fresh module
    calls: tuple[Call, ...] = ()
    #: ``surrogate(**params)``: where f has no adversarial, a similar activation that has one, as
    #: Python source for netadv.adversarial's argument (shown in the error message).
    surrogate: Callable[..., str] | None = None
    expr: sympy.Expr | None = None  # f as a sympy expression (activations given that way)

    def defaults(self) -> dict[str, float]:
        return {p.name: p.default for p in self.params}

    def listed(self, values: dict[str, float]) -> tuple[tuple[str, float], ...]:
        """The parameters that name this activation's instance: non-default, or always."""
        return tuple(
            (p.name, values[p.name]) for p in self.params if p.always or values[p.name] != p.default
        )


# ---- f and f' -------------------------------------------------------------------------------


def _identity(x: Tensor) -> Tensor:
    return x


def _sigmoid_prime(x: Tensor) -> Tensor:
    return torch.sigmoid(x) * torch.sigmoid(-x)


def _tanh_prime(x: Tensor) -> Tensor:
    return 1 / torch.cosh(x) ** 2


def _softsign_prime(x: Tensor) -> Tensor:
    return 1 / (1 + x.abs()) ** 2


def _arctan_prime(x: Tensor) -> Tensor:
    return 1 / (1 + x * x)


def _erf_prime(x: Tensor) -> Tensor:
    return 2 / math.sqrt(math.pi) * torch.exp(-x * x)


def _normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def _normal_cdf_prime(x: Tensor) -> Tensor:
    return torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _softplus(x: Tensor, beta: float) -> Tensor:
    return F.softplus(x, beta=beta)


def _softplus_prime(x: Tensor, beta: float) -> Tensor:
    return torch.sigmoid(beta * x)


def _elu(x: Tensor, alpha: float, scale: float = 1.0) -> Tensor:
    return scale * F.elu(x, alpha=alpha)


def _elu_prime(x: Tensor, alpha: float, scale: float = 1.0) -> Tensor:
    return scale * torch.where(x >= 0, torch.ones_like(x), alpha * torch.exp(x))


def _leaky_relu(x: Tensor, negative_slope: float) -> Tensor:
    return F.leaky_relu(x, negative_slope)


def _leaky_relu_prime(x: Tensor, negative_slope: float) -> Tensor:
    return torch.where(x >= 0, torch.ones_like(x), torch.full_like(x, negative_slope))


def _relu_prime(x: Tensor) -> Tensor:
    return (x > 0).to(x.dtype)


def _leaky_relu_surrogate(negative_slope: float = 0.0) -> str:
    """A negative (or zero) slope makes f' change sign (or vanish): the slope's absolute value
    gives a monotonic LeakyReLU of the same shape, 0.1 where that is zero."""
    return f"'leaky_relu({abs(negative_slope) or 0.1:g})'"


def _quick_gelu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(1.702 * x)


# ---- the table -------------------------------------------------------------------------------

X1, X2, X3, X4 = lifted_symbols(4)
_SELU = dict(alpha=SELU_ALPHA, scale=SELU_SCALE)
_GELU_TANH = (
    X1 / 2 * (1 + sympy.tanh(sympy.sqrt(2 / sympy.pi) * (X2 + sympy.Float(0.044715) * X3**3)))
)

BUILTINS: tuple[ActivationRow, ...] = (
    ActivationRow(
        "identity",
        fn=_identity,
        derivative=torch.ones_like,
        closed_form=cf.identity,
        aliases=("linear",),
        modules=(nn.Identity,),
        nn_factory=nn.Identity,
    ),
    ActivationRow(
        "sigmoid",
        fn=torch.sigmoid,
        derivative=_sigmoid_prime,
        closed_form=cf.sigmoid,
        modules=(nn.Sigmoid,),
        callables=(torch.sigmoid, F.sigmoid),
        sympy=sigmoid,
        nn_factory=nn.Sigmoid,
        calls=(
            Call(torch.sigmoid),
            Call(torch.special.expit),
            Call(F.sigmoid),
            Call(torch.sigmoid_, inplace=True),
            Call("sigmoid"),
            Call("sigmoid_", inplace=True),
        ),
    ),
    ActivationRow(
        "tanh",
        fn=torch.tanh,
        derivative=_tanh_prime,
        closed_form=cf.tanh,
        modules=(nn.Tanh,),
        callables=(torch.tanh, F.tanh),
        sympy=sympy.tanh,
        decomposition=(sympy.exp(X1) - sympy.exp(-X2)) / (sympy.exp(X3) + sympy.exp(-X4)),
        nn_factory=nn.Tanh,
        calls=(
            Call(torch.tanh),
            Call(F.tanh),
            Call(torch.tanh_, inplace=True),
            Call("tanh"),
            Call("tanh_", inplace=True),
        ),
    ),
    ActivationRow(
        "softsign",
        fn=F.softsign,
        derivative=_softsign_prime,
        closed_form=cf.softsign,
        modules=(nn.Softsign,),
        callables=(F.softsign,),
        nn_factory=nn.Softsign,
        calls=(Call(F.softsign),),
    ),
    ActivationRow(
        "arctan",
        fn=torch.atan,
        derivative=_arctan_prime,
        closed_form=cf.arctan,
        aliases=("atan",),
        callables=(torch.atan, torch.arctan),
        sympy=sympy.atan,
    ),
    ActivationRow(
        "erf",
        fn=torch.erf,
        derivative=_erf_prime,
        closed_form=cf.erf,
        callables=(torch.erf,),
        sympy=sympy.erf,
    ),
    ActivationRow(
        "normal_cdf",
        fn=_normal_cdf,
        derivative=_normal_cdf_prime,
        closed_form=cf.normal_cdf,
        aliases=("phi",),
        sympy=Phi,
    ),
    ActivationRow(
        "exp",
        fn=torch.exp,
        derivative=torch.exp,
        closed_form=cf.exp,
        callables=(torch.exp,),
        sympy=sympy.exp,
    ),
    ActivationRow(
        "softplus",
        fn=_softplus,
        derivative=_softplus_prime,
        closed_form=cf.softplus,
        params=(Param("beta", 1.0),),
        modules=(nn.Softplus,),
        callables=(F.softplus,),
        sympy=softplus,
        nn_factory=nn.Softplus,
        calls=(Call(F.softplus, ("beta", "threshold")),),
    ),
    ActivationRow(
        "elu",
        fn=_elu,
        derivative=_elu_prime,
        closed_form=cf.elu,
        params=(Param("alpha", 1.0),),
        modules=(nn.ELU,),
        callables=(F.elu,),
        nn_factory=nn.ELU,
        calls=(Call(F.elu, ("alpha", "inplace")), Call(F.elu_, ("alpha",), inplace=True)),
    ),
    ActivationRow(
        "selu",
        fn=functools.partial(_elu, **_SELU),
        derivative=functools.partial(_elu_prime, **_SELU),
        closed_form=functools.partial(cf.elu, **_SELU),
        modules=(nn.SELU,),
        callables=(F.selu,),
        nn_factory=nn.SELU,
        calls=(Call(F.selu, ("inplace",)),),
    ),
    ActivationRow(
        "leaky_relu",
        fn=_leaky_relu,
        derivative=_leaky_relu_prime,
        closed_form=cf.leaky_relu,
        params=(Param("negative_slope", 0.01, always=True),),
        aliases=("leakyrelu",),
        modules=(nn.LeakyReLU,),
        callables=(F.leaky_relu,),
        nn_factory=nn.LeakyReLU,
        calls=(
            Call(F.leaky_relu, ("negative_slope", "inplace")),
            Call(F.leaky_relu_, ("negative_slope",), inplace=True),
        ),
        surrogate=_leaky_relu_surrogate,
    ),
    # Activations with no global adversarial: registered for recognition and decomposition.
    ActivationRow(
        "relu",
        fn=torch.relu,
        derivative=_relu_prime,
        modules=(nn.ReLU,),
        callables=(torch.relu, F.relu),
        nn_factory=nn.ReLU,
        calls=(
            Call(torch.relu),
            Call(F.relu, ("inplace",)),
            Call(torch.relu_, inplace=True),
            Call("relu"),
            Call("relu_", inplace=True),
        ),
        surrogate=_leaky_relu_surrogate,
    ),
    ActivationRow(
        "gelu",
        fn=F.gelu,
        modules=(nn.GELU,),
        variants=(("approximate", "tanh", "gelu_tanh"),),
        callables=(F.gelu,),
        decomposition=X1 * Phi(X2),
        nn_factory=nn.GELU,
        calls=(Call(F.gelu, ("approximate",)),),
    ),
    ActivationRow(
        "gelu_tanh",
        fn=functools.partial(F.gelu, approximate="tanh"),
        aliases=("gelu_new",),
        decomposition=_GELU_TANH,
        nn_factory=functools.partial(nn.GELU, approximate="tanh"),
    ),
    ActivationRow(
        "silu",
        fn=F.silu,
        aliases=("swish",),
        modules=(nn.SiLU,),
        callables=(F.silu,),
        decomposition=X1 * sigmoid(X2),
        nn_factory=nn.SiLU,
        calls=(Call(F.silu, ("inplace",)),),
    ),
    ActivationRow(
        "mish",
        fn=F.mish,
        modules=(nn.Mish,),
        callables=(F.mish,),
        decomposition=X1 * sympy.tanh(softplus(X2)),
        nn_factory=nn.Mish,
        calls=(Call(F.mish, ("inplace",)),),
    ),
    ActivationRow(
        "quick_gelu",
        fn=_quick_gelu,
        decomposition=X1 * sigmoid(sympy.Float(1.702) * X2),
    ),
)
