"""What the doctor runs a model on: the user's data as a replayable sequence of batches, the
inputs of the one measured forward pass, and the loss.

``data`` may be a DataLoader, any iterable of ``(inputs, targets)`` batches, or a pair of
tensors ``(X, Y)`` (batched here). Every arm of a trial must see the same batches in the same
order, so :class:`Batches` replays them: a pair of tensors is cut by one seeded permutation per
pass; batches drawn from an iterable are kept (up to a memory budget) and cycled when the
iterable ends or the budget is reached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netadv.diagnostics import weight_layers
from netadv.errors import ConfigError

#: Batch size when ``data`` is a pair of tensors.
BATCH_SIZE = 64
#: Batch size of the random input made from a first Linear layer when no input is given.
INFERRED_BATCH = 16
#: Most bytes of batches kept from an iterable for replay (beyond it the kept ones cycle).
CACHE_BYTES = 512 * 2**20


def _is_pair_of_tensors(data: Any) -> bool:
    return (
        isinstance(data, tuple | list)
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
    )


def _pair(batch: Any) -> tuple[Tensor, Tensor]:
    if isinstance(batch, tuple | list) and len(batch) == 2 and isinstance(batch[0], Tensor):
        return batch[0], batch[1]
    raise ConfigError(
        f"data must yield (inputs, targets) pairs of tensors, got {type(batch).__name__}"
    )


class Batches:
    """A replayable sequence of ``(x, y)`` batches from ``data`` (see the module docstring)."""

    def __init__(self, data: Any, batch_size: int = BATCH_SIZE, seed: int = 0):
        self.seed, self.batch_size = seed, batch_size
        self._tensors: tuple[Tensor, Tensor] | None = None
        self._kept: list[tuple[Tensor, Tensor]] = []
        self._bytes = 0
        self._source: Iterator | None = None
        if _is_pair_of_tensors(data):
            x, y = data
            if len(x) != len(y) or len(x) == 0:
                raise ConfigError(
                    f"data=(X, Y) needs as many targets as inputs (> 0), got {len(x)} and {len(y)}"
                )
            self._tensors = (x, y)
        else:
            try:
                self._source = iter(data)
            except TypeError:
                raise ConfigError(
                    "data must be a DataLoader, an iterable of (inputs, targets) batches or a "
                    f"pair of tensors (X, Y), got {type(data).__name__}"
                ) from None

    def first(self) -> tuple[Tensor, Tensor]:
        return next(self.take(1))

    def take(self, steps: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The first ``steps`` batches, the same ones on every call."""
        if self._tensors is not None:
            yield from self._cut(steps)
            return
        i = 0
        for i in range(steps):
            if i == len(self._kept) and not self._pull():
                break
            yield self._kept[i]
        else:
            return
        if not self._kept:
            raise ConfigError("data yielded no batch")
        for j in range(i, steps):  # the source ended (or the budget): replay what was kept
            yield self._kept[j % len(self._kept)]

    def _pull(self) -> bool:
        """One more batch from the source into the kept list; False when there is none."""
        if self._source is None or self._bytes > CACHE_BYTES:
            return False
        try:
            x, y = _pair(next(self._source))
        except StopIteration:
            self._source = None
            return False
        self._kept.append((x, y))
        self._bytes += x.nbytes + y.nbytes
        return True

    def _cut(self, steps: int) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = self._tensors
        g = torch.Generator().manual_seed(self.seed)
        done = 0
        while done < steps:
            order = torch.randperm(len(x), generator=g)
            for start in range(0, len(x), self.batch_size):
                if done == steps:
                    return
                idx = order[start : start + self.batch_size]
                yield x[idx], y[idx]
                done += 1


# ---- the inputs of the measured pass ------------------------------------------------------------


def first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    layers = weight_layers(model)
    return layers[0] if layers else None


def expected_input(model: nn.Module | None, example: Tensor | None) -> str:
    """The input shape the model expects, in words (from the example inputs or its first layer)."""
    if example is not None:
        return f"{_shape(example)} (as example_inputs)"
    found = first_layer(model)
    if found is None:
        return "an input it accepts"
    name, layer = found
    if isinstance(layer, nn.Linear):
        return f"(N, {layer.in_features}) or what flattens to {layer.in_features} features ({name})"
    dims = ", ".join("HWD"[: layer.weight.dim() - 2])
    return f"(N, {layer.in_channels}, {dims}) ({name}: {type(layer).__name__})"


def infer_input(model: nn.Module) -> Tensor | None:
    """A random batch for a model whose first layer is a Linear (its width is all we need);
    None otherwise (a convolution does not say its image size)."""
    found = first_layer(model)
    if found is None or not isinstance(found[1], nn.Linear):
        return None
    g = torch.Generator().manual_seed(0)
    w = found[1].weight
    x = torch.randn(INFERRED_BATCH, found[1].in_features, generator=g)
    return x.to(device=w.device, dtype=w.dtype)


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(d) for d in t.shape) + ")"


def describe(x: Tensor, where: str) -> str:
    return f"{where} {_shape(x)} {str(x.dtype).removeprefix('torch.')}"


def check_matches(example: Tensor | None, x: Tensor) -> None:
    """A ConfigError when data's inputs differ from the example inputs beyond the batch size."""
    if example is not None and tuple(example.shape[1:]) != tuple(x.shape[1:]):
        raise ConfigError(
            f"data of the wrong shape: the model expects {expected_input(None, example)}, "
            f"data gives {_shape(x)}"
        )


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def run_model(model: nn.Module, x: Tensor, what: str = "inputs") -> Any:
    """``model(x)``, with a failure on these inputs as a one-line ConfigError."""
    try:
        return model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise ConfigError(
            f"the model does not run on {what} of shape {_shape(x)}: it expects "
            f"{expected_input(model, None)} ({first_line(e)})"
        ) from None


# ---- the loss -----------------------------------------------------------------------------------


def output_tensor(out: Any) -> Tensor:
    """The tensor a model's output stands for (``.logits``, the first item, the first value)."""
    if isinstance(out, Tensor):
        return out
    if hasattr(out, "logits") and isinstance(out.logits, Tensor):
        return out.logits
    items = out.values() if isinstance(out, dict) else out if isinstance(out, tuple | list) else ()
    for item in items:
        if isinstance(item, Tensor):
            return item
    raise ConfigError(f"cannot read a tensor from the model's output ({type(out).__name__})")


def default_loss(out: Any, y: Tensor) -> Tensor:
    """Cross-entropy for integer targets, mean squared error otherwise."""
    out = output_tensor(out)
    if not y.is_floating_point():
        return F.cross_entropy(out.flatten(0, -2) if out.dim() > 2 else out, y.flatten())
    return F.mse_loss(out, y.to(out.dtype))


def surrogate_target(out: Any) -> tuple[Callable, Tensor | None, str]:
    """The loss of the measured pass when there are no targets: cross-entropy against random
    labels for a classifier-shaped output (N, C > 1), else the mean square of the output."""
    t = output_tensor(out)
    if t.dim() == 2 and t.shape[1] > 1 and t.is_floating_point():
        g = torch.Generator().manual_seed(0)
        labels = torch.randint(0, t.shape[1], (t.shape[0],), generator=g).to(t.device)
        return default_loss, labels, "surrogate: cross-entropy against random labels"
    return lambda o, _: output_tensor(o).float().square().mean(), None, "surrogate: mean square"


def checked_loss(loss_fn: Callable, out: Any, y: Tensor | None) -> Tensor:
    """``loss_fn(out, y)``, with a failure as a one-line ConfigError."""
    try:
        loss = loss_fn(out, y)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        shape = _shape(output_tensor(out))
        got = _shape(y) if isinstance(y, Tensor) else "none"
        raise ConfigError(
            f"the loss fails on the model's output {shape} and targets {got} ({first_line(e)})"
        ) from None
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        raise ConfigError("loss_fn must return a scalar tensor")
    return loss
