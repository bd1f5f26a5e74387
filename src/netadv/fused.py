"""The fused path: netadv's pointwise math run eagerly or compiled by torch.compile (inductor).

Every netadv layer keeps its math in pure tensor functions (a forward and a hand-written
backward) wrapped in a :class:`Pointwise`. A backend decides how a call runs:

- ``"eager"``: plain torch ops, always available and always correct.
- ``"compile"``: ``torch.compile`` (inductor, ``dynamic=True``) of the function, so the whole
  forward or backward becomes one loop over the tensor. Compiled once per kernel and process;
  inductor caches the generated code on disk, so later processes pay less.
- ``"auto"`` (the default): compile where it is known to work (a CUDA tensor with Triton, a CPU
  tensor with a C++ compiler on PATH) and where it pays (at least :data:`AUTO_MIN_NUMEL`
  elements), else eager. Small tensors, which unit tests and toy models use, therefore never
  pay the one-time compile (seconds on a CPU).

Any failure to compile or to run a compiled kernel falls back to eager for that kernel, with
one warning: the fused path never breaks a run. Inside a user's own ``torch.compile`` region the
eager functions are traced into the user's graph instead (no nested compile). Set the backend
with :func:`set_backend`, the ``NETADV_BACKEND`` environment variable, or per module with its
``backend`` attribute (see ``docs/PERFORMANCE.md``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import types
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from netadv.errors import ConfigError

BACKENDS = ("auto", "eager", "compile")
#: ``auto`` compiles a kernel only for tensors with at least this many elements: below it the
#: compiled call's fixed cost (guards, a launch) is comparable to the eager ops it saves.
AUTO_MIN_NUMEL = 1 << 18
#: The torch.compile backend of the fused path. Tests set "aot_eager" (dynamo tracing, no code
#: generation) to check that every kernel traces as one graph without paying a C++ compile.
COMPILE_BACKEND = "inductor"

log = logging.getLogger("netadv")


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


_backend = _check(os.environ.get("NETADV_BACKEND", "auto").strip().lower() or "auto")


def set_backend(name: str) -> None:
    """Choose how netadv's pointwise kernels run: ``"auto"`` (default), ``"eager"`` or
    ``"compile"``. A module's own ``backend`` attribute, when set, takes precedence."""
    global _backend
    _backend = _check(name)


def get_backend() -> str:
    return _backend


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """``with use_backend("eager"): ...`` -- the global backend for a block."""
    before = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(before)


@functools.cache
def compiler_available(device_type: str) -> bool:
    """Whether inductor can generate code for ``device_type`` here: Triton for CUDA, a C++
    compiler for CPU. (A compiler that is present but broken is caught at the first call.)"""
    if device_type == "cuda":
        try:
            from torch.utils._triton import has_triton

            return bool(has_triton())
        except Exception:  # an unusual torch build
            return False
    if device_type == "cpu":
        names = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
        return any(n and shutil.which(n) for n in names)
    return False


#: Device types on which a compiled kernel has failed for a reason not tied to one kernel.
_broken: dict[str, str] = {}
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _is_environment_failure(exc: BaseException) -> bool:
    """A failure of the toolchain (no working compiler or headers), not of one kernel's code:
    then no other kernel on that device tries to compile either."""
    text = f"{type(exc).__name__}: {exc}"
    return any(s in text for s in ("CppCompileError", "InvalidCxxCompiler", "Python.h"))


def _fresh_code(fn: Callable, name: str) -> Callable:
    """A copy of ``fn`` with its own code object, so that dynamo's per-code cache and its
    recompile limit belong to this kernel alone."""
    code = fn.__code__.replace(co_name=name)
    out = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    out.__kwdefaults__ = fn.__kwdefaults__
    return out


class Pointwise:
    """A pure tensor function that runs eagerly or compiled, as the backend decides.

    Args:
        fn: the eager implementation; it must be traceable by dynamo to be compiled.
        name: a label for warnings and the compiled code.
        compilable: False keeps it eager whatever the backend (e.g. it calls autograd).
    """

    def __init__(self, fn: Callable[..., object], name: str, *, compilable: bool = True):
        self.fn = fn
        self.name = name
        self.compilable = compilable
        self.failed: str | None = None
        self.last: str | None = None  # the path the last call took: "eager" or "compile"
        self._compiled: Callable | None = None

    def wants_compile(self, x: Tensor, backend: str | None = None) -> bool:
        mode = backend or _backend
        if mode == "eager" or not self.compilable or self.failed is not None:
            return False
        device = x.device.type
        if device in _broken:
            return False
        if mode == "compile":
            if not compiler_available(device):
                _warn_once(
                    f"nocompiler-{device}",
                    f"netadv: backend 'compile' needs a C++ compiler (CPU) or Triton (CUDA), "
                    f"none found for {device}; running eager",
                )
                return False
            return True
        return x.numel() >= AUTO_MIN_NUMEL and compiler_available(device)

    def __call__(self, *args, backend: str | None = None):
        if torch.compiler.is_compiling():  # inside the user's torch.compile: trace inline
            return self.fn(*args)
        x = args[0]
        if not self.wants_compile(x, backend):
            self.last = "eager"
            return self.fn(*args)
        try:
            if self._compiled is None:
                log.info("netadv: compiling %s (one-time; inductor caches it on disk)", self.name)
                self._compiled = torch.compile(
                    _fresh_code(self.fn, f"netadv_{self.name}"),
                    backend=COMPILE_BACKEND,
                    dynamic=True,
                    fullgraph=True,
                    isolate_recompiles=True,
                )
            # contiguous inputs: one compiled kernel serves them all (an expanded grad from
            # .sum().backward() or a transposed input would otherwise each recompile)
            dense = [a.contiguous() if isinstance(a, Tensor) else a for a in args]
            out = self._compiled(*dense)
        except Exception as e:  # never break a run: eager is always correct
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self.failed = reason
            if _is_environment_failure(e):
                _broken[x.device.type] = reason
            _warn_once(
                f"fail-{self.name}-{x.device.type}",
                f"netadv: compiling {self.name} failed ({reason[:300]}); running eager",
            )
            self.last = "eager"
            return self.fn(*args)
        self.last = "compile"
        return out


def describe(setting: str | None, kernel: Pointwise | None) -> str:
    """The backend as a module repr shows it: the setting, and what the last call used."""
    mode = setting or f"{_backend}(global)"
    if kernel is None:
        return mode
    if kernel.failed is not None:
        return f"{mode}->eager (compile failed)"
    if not kernel.compilable:
        return f"{mode}->eager (not compilable)"
    return f"{mode}->{kernel.last}" if kernel.last else mode
