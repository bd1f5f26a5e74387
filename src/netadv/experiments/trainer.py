"""What a training step runs and updates: the model spread over the ranks (DDP or FSDP2), the
optimizer and its schedule, mixed precision, diagnostics and TensorBoard; and the end of an
epoch in the run folder (the checkpoint, with every rank's random state).

:func:`netadv.experiments.loop.fit_task` drives a :class:`Trainer` epoch by epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

import netadv
from netadv.diagnostics import Diagnostics
from netadv.experiments import distributed, rng
from netadv.experiments.config import RunConfig
from netadv.experiments.distributed import Placement
from netadv.experiments.parallel import Strategy, strategy_for
from netadv.experiments.run_folder import DIAGNOSTICS_FILE, RunFolder, checkpoint_state
from netadv.experiments.task import Task
from netadv.experiments.tracking import Tracker


@dataclass
class Trainer:
    """What a training step runs and updates."""

    model: nn.Module  # the model itself: its penalty, diagnostics and checkpoint
    net: nn.Module  # what runs the batches: the model, its DDP wrapper, or it sharded (FSDP)
    strategy: Strategy  # how the model is spread over the ranks (parallel.py)
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    scaler: torch.amp.GradScaler
    autocast: Callable[[], AbstractContextManager]
    diagnostics: Diagnostics | None
    cfg: RunConfig
    tracker: Tracker | None = None  # TensorBoard (rank 0, tensorboard: true)
    losses: list[float] = field(default_factory=list)  # the current epoch's, per step
    first_step: int = 0

    @classmethod
    def create(cls, model, cfg: RunConfig, place: Placement, steps_per_epoch: int, run):
        # spread over the ranks first: FSDP replaces the parameters the optimizer will hold
        strategy = strategy_for(cfg, place)
        net = strategy.wrap(model, place)
        optimizer = make_optimizer(model, cfg)
        scheduler = LambdaLR(optimizer, lr_lambda(cfg, steps_per_epoch))
        diagnostics = None
        if cfg.diagnostics and place.main:
            diagnostics = Diagnostics(model, run.file(DIAGNOSTICS_FILE), cfg.diagnostics_every)
        # mixed precision: bfloat16 on CPU; float16 on GPU, with loss scaling
        device = place.device.type
        amp = cfg.amp and device in ("cuda", "cpu")
        dtype = torch.bfloat16 if device == "cpu" else torch.float16
        scaler = strategy.grad_scaler(device, enabled=amp and dtype == torch.float16)
        autocast = partial(torch.autocast, device, dtype=dtype) if amp else nullcontext
        return cls(model, net, strategy, optimizer, scheduler, scaler, autocast, diagnostics, cfg)

    def resume(self, run: RunFolder, place: Placement) -> tuple[int, float, list[dict]]:
        """The checkpoint into the model, optimizer, schedule, loss scaler and this rank's
        random generators; returns the last finished epoch, the train seconds up to it and
        the metrics rows up to it."""
        saved = run.restore(
            self.model, self.optimizer, self.scheduler, place.rank, place.world, self.strategy
        )
        if saved.scaler:
            self.scaler.load_state_dict(saved.scaler)
        if saved.rng is not None:
            rng.restore(saved.rng, place.device)
        return saved.epoch, saved.elapsed, saved.history

    def evaluate(self, task: Task, data: Any, cfg: RunConfig, place: Placement):
        """The task's evaluation of the model (gathered whole under FSDP)."""
        with self.strategy.evaluating(self.net):
            return task.evaluate(self.net, data, cfg, place)

    def save(
        self,
        run: RunFolder,
        row: dict,
        summary: dict,
        files: dict[str, str],
        elapsed: float,
        place: Placement,
        *,
        checkpoint: bool,
    ) -> None:
        """The end of an epoch in the run folder (rank 0 writes; every rank sends its random
        state, and its shards under FSDP, for the checkpoint)."""
        states = distributed.gather([rng.capture(place.device)], place) if checkpoint else []
        if checkpoint:
            weights, moments = self.strategy.state(self.model, self.optimizer, place.main)
        if not place.main:
            return
        state = None
        if checkpoint:
            state = checkpoint_state(
                weights,
                moments,
                self.scheduler,
                scaler=self.scaler,
                rng=states,
                epoch=row["epoch"],
                elapsed=elapsed,
                cfg=self.cfg,
            )
        steps = None
        if self.cfg.log_steps:
            steps = {"epoch": row["epoch"], "first_step": self.first_step, "loss": self.losses}
        run.record_epoch(row, summary, files, state, steps)

    def epoch(
        self,
        task: Task,
        batches: Iterable,
        cfg: RunConfig,
        place: Placement,
        epoch: int,
        step: int,
        quiet: bool,
    ) -> tuple[dict[str, float], int, float | None]:
        """One pass over ``batches``: the sums of the loss and of the task's counts, the next
        step, and the loss if it became NaN/Inf (which ends the pass there)."""
        sums = dict.fromkeys(("loss", *task.counts), 0.0)
        self.losses = []  # this rank's loss at every step (steps.jsonl: steadiness)
        self.first_step = step
        self.net.train()
        bar = tqdm(
            batches,
            desc=f"[{cfg.name}] epoch {epoch}/{cfg.epochs}",
            leave=False,
            disable=quiet or not place.main,
            mininterval=1.0,
        )
        for batch in bar:
            if self.diagnostics is not None:
                self.diagnostics.before_step(step)
            with self.autocast():
                loss, weight, counts = task.loss(self.net, batch, cfg, place.device)
                loss = loss + netadv.penalty(self.model)  # the method's own term, if any
            if not torch.isfinite(loss):
                return sums, step, loss.item()
            lr = self.optimizer.param_groups[0]["lr"]  # this step's (the schedule then moves)
            self.update(loss, step, epoch)
            value = loss.item()
            if self.tracker is not None:
                self.tracker.step(step, value, lr)
            step += 1
            self.losses.append(float(f"{value:.6g}"))
            sums["loss"] += value * weight
            for key, count in counts.items():
                sums[key] += count
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
        return sums, step, None

    def update(self, loss: Tensor, step: int, epoch: int) -> None:
        """Backward (through the AMP scaler), optional clipping, diagnostics, then the
        optimizer and schedule step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if self.diagnostics is not None:
            row = self.diagnostics.after_backward(step, epoch)
            if row is not None and self.tracker is not None:
                self.tracker.diagnostics(row)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None


def make_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    # no weight decay on biases and normalisation parameters (the usual practice)
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_lambda(cfg: RunConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_epochs``, then cosine to 0 at the end (or constant)."""
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    total = cfg.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor
