"""How a model is spread over a run's processes, and the full state its checkpoint holds.

``strategy: ddp`` (the default): every rank holds the whole model, wrapped in
``DistributedDataParallel``, which averages the gradients over the ranks after backward.
``strategy: fsdp``: FSDP2's ``fully_shard`` keeps 1/N of every parameter, of its gradient and
of its optimizer state on each of N ranks. Each repeated block (:func:`repeated_blocks`) is one
unit, all-gathered for its forward and again for its backward, then freed; what is left
(embeddings, norms, the head) is the root's unit. One process trains the plain model either way.

The checkpoint is the same whichever the strategy: the full, unsharded state dicts of the model
and the optimizer (its state keyed by parameter index, as ``optimizer.state_dict()`` writes
it), so an FSDP run's checkpoint loads into a plain model, and ``init_from`` and ``netadv``'s
loaders read it. Collecting them is a collective under FSDP: every rank calls :meth:`state`.
Evaluation runs with every unit gathered (:meth:`evaluating`): decoding calls a model's own
methods, not the ``forward`` FSDP hooks, and the ranks may run different numbers of batches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from netadv.experiments.config import RunConfig
from netadv.experiments.distributed import Placement


class Replicated:
    """One process, or DDP: every rank holds the whole model."""

    def wrap(self, model: nn.Module, place: Placement) -> nn.Module:
        """What runs the batches: the model, or its DDP wrapper on many ranks."""
        return nn.parallel.DistributedDataParallel(model) if place.world > 1 else model

    def grad_scaler(self, device: str, enabled: bool) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(device, enabled=enabled)

    def state(self, model: nn.Module, optimizer, main: bool) -> tuple[dict | None, dict | None]:
        """The full model and optimizer state dicts on rank 0 (None on the others)."""
        return (model.state_dict(), optimizer.state_dict()) if main else (None, None)

    def load_model(self, model: nn.Module, state: dict[str, Any]) -> None:
        model.load_state_dict(state)

    def load_optimizer(self, model: nn.Module, optimizer, state: dict[str, Any]) -> None:
        optimizer.load_state_dict(state)

    @contextmanager
    def evaluating(self, net: nn.Module) -> Iterator[None]:
        yield


class Sharded:
    """FSDP2 over the ranks of a torchrun launch (CPU with gloo, GPUs with NCCL)."""

    def wrap(self, model: nn.Module, place: Placement) -> nn.Module:
        """Shard each repeated block, then the root, in place (the model is what runs)."""
        # torch.distributed.fsdp is imported here: it takes about a second, and only FSDP runs
        # need it
        from torch.distributed.fsdp import fully_shard

        for block in repeated_blocks(model):
            fully_shard(block, reshard_after_forward=True)
        fully_shard(model)
        return model

    def grad_scaler(self, device: str, enabled: bool) -> torch.amp.GradScaler:
        # float16 on GPUs: a step is skipped on every rank when any rank's shard overflowed
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        return ShardedGradScaler(device, enabled=enabled)

    def state(self, model: nn.Module, optimizer, main: bool) -> tuple[dict | None, dict | None]:
        from torch.distributed.checkpoint.state_dict import (
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = _options(cpu_offload=True)  # gathered to rank 0's memory, one unit at a time
        weights = get_model_state_dict(model, options=options)
        moments = get_optimizer_state_dict(model, optimizer, options=options)
        return (weights, _by_index(moments)) if main else (None, None)

    def load_model(self, model: nn.Module, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(model, state, options=_options())

    def load_optimizer(self, model: nn.Module, optimizer, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        named = _by_name(model, optimizer, state)
        set_optimizer_state_dict(model, optimizer, named, options=_options())

    @contextmanager
    def evaluating(self, net: nn.Module) -> Iterator[None]:
        """Every unit gathered, and kept so by its forward, until the block ends."""
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in net.modules() if isinstance(m, FSDPModule)]
        for unit in units:
            unit.set_reshard_after_forward(False, recurse=False)
            unit.unshard()
        try:
            yield
        finally:
            for unit in units:  # back to training: the blocks freed after forward, the root not
                unit.reshard()
                unit.set_reshard_after_forward(unit is not net, recurse=False)


Strategy = Replicated | Sharded  # the same six methods: wrap the model, its scaler, states


def strategy_for(cfg: RunConfig, place: Placement) -> Strategy:
    """The config's strategy for this launch (one process: the plain model, either way)."""
    return Sharded() if cfg.strategy == "fsdp" and place.world > 1 else Replicated()


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The units FSDP shards besides the root: the children of every ``nn.ModuleList`` or
    ``nn.Sequential`` that holds several modules of one class with parameters (timm ViT's
    ``blocks.N``, Swin's stages and their blocks, the translation model's encoder and decoder
    layers, the MLP's Linear layers); inner ones first, as ``fully_shard`` wants them."""
    blocks: list[nn.Module] = []
    seen: set[int] = set()
    for module in reversed(list(model.modules())):  # children before their parents
        if not isinstance(module, nn.ModuleList | nn.Sequential):
            continue
        owning = [c for c in module.children() if next(c.parameters(), None) is not None]
        kinds = Counter(type(c) for c in owning)
        for child in owning:
            if kinds[type(child)] > 1 and id(child) not in seen:
                seen.add(id(child))
                blocks.append(child)
    return blocks


def _options(cpu_offload: bool = False):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)


def _by_index(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state dict keyed by parameter name (torch.distributed.checkpoint's) keyed
    by index instead, numbered over the groups in order as ``optimizer.state_dict()`` does."""
    if not state:
        return state
    index = {
        name: i for i, name in enumerate(n for g in state["param_groups"] for n in g["params"])
    }
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]]
    return {"state": {index[n]: s for n, s in state["state"].items()}, "param_groups": groups}


def _by_name(model: nn.Module, optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`_by_index` for this optimizer's parameters."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    names = [name_of[id(p)] for g in optimizer.param_groups for p in g["params"]]
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    return {"state": {names[i]: s for i, s in state["state"].items()}, "param_groups": groups}
