"""HD-FGD: high-dimensional function graph decomposition (METHOD.md sections 4-5).

An activation whose expression uses its input k times, ``f(x) = E(x, ..., x)``, is lifted to
``F(x_1, ..., x_k) = E(x_1, ..., x_k)`` with ``F(x, ..., x) = f(x)``. Decompositions are sympy
expressions in ``x_1 .. x_k`` (the built-in ones are rows of
:mod:`netadv.activations.builtins`), compiled once to tensor code. The split adversarial (SA)
form replaces each term function by its adversarial and keeps the combination rules.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import sympy
from torch import Tensor

from netadv import symbolic
from netadv.activations import registry
from netadv.activations.kernel import build_kernel
from netadv.activations.registry import (
    ActivationSpec,
    decomposition_names,
    register_decomposition,
    resolve,
)
from netadv.defaults import ANCHOR, MAX_GAIN
from netadv.errors import ConfigError, NoAdversarialError
from netadv.symbolic import number_occurrences

__all__ = ["Decomposition", "decompose", "decomposition_names", "register_decomposition"]


@dataclass(frozen=True)
class Decomposition:
    """A lifted activation ``F(x_1, ..., x_k)`` with ``F(x, ..., x) = f(x)``."""

    name: str
    expr: sympy.Expr

    @property
    def symbols(self) -> tuple[sympy.Symbol, ...]:
        return tuple(sorted(self.expr.free_symbols, key=lambda s: int(str(s)[2:])))

    @property
    def k(self) -> int:
        return len(self.symbols)

    @property
    def terms(self) -> tuple[str, ...]:
        """How each variable enters: the largest sub-expression of that variable alone."""
        out = []
        for s in self.symbols:
            nodes = [n for n in sympy.preorder_traversal(self.expr) if n.free_symbols == {s}]
            out.append(str(max(nodes, key=sympy.count_ops)))
        return tuple(out)

    def __getstate__(self) -> dict:
        return {"name": self.name, "expr": self.expr}  # not the compiled ``lifted``

    @functools.cached_property
    def lifted(self):
        """``lifted(xs, funcs=None) -> Tensor`` evaluating F on the list of k tensors ``xs``
        (its overflow-safe form, :func:`netadv.symbolic.stable_form`)."""
        return symbolic.to_torch(symbolic.stable_form(self.expr), self.symbols)

    def __call__(self, *xs: Tensor) -> Tensor:
        if len(xs) != self.k:
            raise ValueError(f"{self.name} takes {self.k} inputs, got {len(xs)}")
        return self.lifted(xs)

    def __str__(self) -> str:
        return f"{self.name}: {self.expr} (k={self.k})"

    def split_adversarial(
        self, *, anchor: str = ANCHOR, max_gain: float = MAX_GAIN
    ) -> tuple[sympy.Expr, dict[str, ActivationSpec]]:
        """The SA form: each term function ``t`` (a maximal chain of one-argument functions)
        becomes ``A_t``. Returns the expression, with functions named ``A_...``, and by name
        the activation each ``A_...`` is the adversarial of (its kernel is
        ``build_kernel(spec, anchor=anchor, max_gain=max_gain)``, already built and cached
        here). A chain with no adversarial stays as it is."""
        terms: dict[str, ActivationSpec] = {}

        def walk(e: sympy.Basic) -> sympy.Basic:
            if isinstance(e, sympy.Function) and len(e.args) == 1:
                chain, arg = _chain(e)
                spec = _chain_spec(chain)
                try:
                    build_kernel(spec, anchor=anchor, max_gain=max_gain)
                except NoAdversarialError:
                    return e.func(walk(e.args[0]))
                name = "A_" + "_".join(fn.__name__ for fn in chain)
                terms.setdefault(name, spec)
                return sympy.Function(name)(walk(arg))
            if not e.args:
                return e
            return e.func(*[walk(a) for a in e.args])

        expr = walk(self.expr)
        if not terms:
            raise ConfigError(
                f"no term of {self.name} ({self.expr}) has an adversarial function, so its SA "
                f"form equals HD-FGD; use adversarial=False"
            )
        origin = {n: s.f0() if anchor == "f0" else 0.0 for n, s in terms.items()}
        try:  # SA denominators are held relative to their value at the origin
            symbolic.stable_form(expr, origin)
        except ValueError as e:
            advice = "use anchor='f0'" if anchor == "zero" else "use HD-FGD (adversarial=False)"
            raise ConfigError(
                f"the SA form of {self.name}, {expr}, has no value at the origin with "
                f"anchor={anchor!r} ({e}); {advice}"
            ) from None
        return expr, terms


#: The variable of a term function (one object, so per-chain caches hit).
_T = sympy.Dummy("t", real=True)


def _chain(e: sympy.Basic) -> tuple[tuple, sympy.Basic]:
    """The maximal chain of one-argument functions at ``e`` (outermost first), and its
    argument."""
    chain, arg = [], e
    while isinstance(arg, sympy.Function) and len(arg.args) == 1:
        chain.append(arg.func)
        arg = arg.args[0]
    return tuple(chain), arg


def _chain_spec(chain: tuple) -> ActivationSpec:
    name = registry.sympy_activation(chain[0].__name__) if len(chain) == 1 else None
    return resolve(name) if name is not None else _composite_spec(chain)


@functools.lru_cache(maxsize=128)
def _composite_spec(chain: tuple) -> ActivationSpec:
    """One spec object per chain, so its stable interval is computed once per process."""
    g = _T
    for fn in reversed(chain):
        g = fn(g)
    name = "_".join(fn.__name__ for fn in chain)
    # no sympy integrate here (expr=None): composite chains rarely have one, and it can be slow
    fn, deriv = symbolic.unary(g, _T), symbolic.unary(sympy.diff(g, _T), _T)
    return ActivationSpec(name, fn, deriv, origin=(_composite_spec, (chain,)))


def decompose(f: Any) -> Decomposition:
    """The HD-FGD decomposition of ``f``: a registered name (gelu, silu, mish, gelu_tanh,
    tanh...), a torch.nn activation, a :class:`Decomposition`, or a one-symbol sympy
    expression (decomposed by numbering the occurrences of its symbol)."""
    if isinstance(f, Decomposition):
        return f
    if isinstance(f, str) and not _is_name(f) and _registered_call(f) is not None:
        f = _registered_call(f)  # "leaky_relu(0.1)": a registered activation with parameters
    if isinstance(f, sympy.Basic) or isinstance(f, str) and not _is_name(f):
        expr = symbolic.parse(f) if isinstance(f, str) else f
        return Decomposition(str(expr), number_occurrences(expr))
    if isinstance(f, str) and registry.decomposition_expr(f) is not None:
        return Decomposition(f.lower(), registry.decomposition_expr(f))
    spec = resolve(f)
    if spec.expr is not None:
        return Decomposition(spec.name, number_occurrences(spec.expr))
    expr = registry.decomposition_expr(spec.decomposition) if spec.decomposition else None
    if expr is None:
        raise ValueError(
            f"{spec.title} has no HD-FGD decomposition; registered: "
            f"{', '.join(decomposition_names())} (pass a sympy expression, or register one with "
            f"netadv.register_activation(name, f, decomposition=...))"
        )
    return Decomposition(spec.decomposition, expr)


def _registered_call(text: str) -> ActivationSpec | None:
    """The activation ``text`` names as a call with parameters ("elu(alpha=0.5)"), else None."""
    try:
        return registry.by_name(text)
    except (ValueError, TypeError):
        return None


def _is_name(text: str) -> bool:
    return text.replace("_", "").replace("-", "").isalnum()
