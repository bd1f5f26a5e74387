"""The training loop: one run of one config, on CPU, one GPU, or many through torchrun.

:func:`fit` reads top to bottom: set up (processes, run folder, data, model, method, optimizer),
then per epoch train, evaluate, append a metrics row and write the checkpoint atomically; a
summary at the end. What image classification and translation do differently is the
:class:`~netadv.experiments.task.Task` it is given.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

import netadv
from netadv.diagnostics import Diagnostics
from netadv.errors import ConfigError
from netadv.experiments import distributed
from netadv.experiments.config import RunConfig
from netadv.experiments.distributed import Placement, sum_over_ranks
from netadv.experiments.run_folder import DIAGNOSTICS_FILE, RunFolder, checkpoint_state
from netadv.experiments.task import Task
from netadv.experiments.tasks import task_for


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""

    @classmethod
    def at(cls, name: str, loss: float, epoch: int, step: int, folder) -> TrainingDiverged:
        return cls(
            f"[{name}] loss became {loss} at epoch {epoch}, step {step}; stopped. The last "
            f"good checkpoint (epoch {epoch - 1}) is kept in {folder}"
        )


def train(cfg: RunConfig, *, resume: bool = False, quiet: bool = False) -> dict:
    """Run ``cfg`` on its task; returns the summary (also written to the run folder)."""
    return fit(cfg, task_for(cfg), resume=resume, quiet=quiet)


def fit(cfg: RunConfig, task: Task, *, resume: bool = False, quiet: bool = False) -> dict:
    """Train ``cfg`` on ``task``; returns the summary (also written to the run folder)."""
    # one process, or one rank of a torchrun launch: rank 0 ("main") writes and prints
    place = distributed.setup(cfg.device)
    hardware = distributed.hardware(place)
    run = RunFolder(cfg, main=place.main, resume=resume)  # refuses to overwrite a run
    seed_everything(cfg.seed)

    # the data, then the same initial weights for every method, then the method applied
    data = task.load_data(cfg, run, place)
    torch.manual_seed(cfg.seed)
    model, example = task.build_model(cfg, data)
    model = apply_method(model, cfg, example)
    params, flops = sum(p.numel() for p in model.parameters()), count_flops(model, example)
    model.to(place.device)

    # the batch is shared out over the ranks; the learning rate follows a per-step schedule
    batch_size = max(1, cfg.batch_size // place.world)
    steps_per_epoch = math.ceil(math.ceil(task.train_size(data) / place.world) / batch_size)
    optimizer = make_optimizer(model, cfg)
    scheduler = LambdaLR(optimizer, lr_lambda(cfg, steps_per_epoch))

    # a resumed run continues after its checkpoint, with the metrics rows up to it
    start_epoch, elapsed, history = 1, 0.0, []
    if resume:
        start_epoch, elapsed, history = run.restore(model, optimizer, scheduler)
    if place.main:
        run.start(cfg, history)
        task.save_files(data, run)
        if not quiet:
            print(
                f"[{cfg.name}] {task.describe(cfg, data)}; {cfg.model} {cfg.arm}; "
                f"{params:,} params, {flops / 1e6:.1f} MFLOPs/{task.example_name}; "
                f"{place.world} process(es) on {place.device}"
            )

    # the step's machinery (DDP's wrapper on many ranks, mixed precision, diagnostics)
    trainer = Trainer.create(model, cfg, place, optimizer, scheduler, run)
    summarise_run = partial(summarise, cfg, task, params, flops, hardware)
    if place.main:
        run.write_summary(summarise_run(history, "running"))
    step = (start_epoch - 1) * steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs + 1):
        batches = task.batches(data, cfg, place, epoch, batch_size)
        start = time.perf_counter()
        sums, step, bad_loss = trainer.epoch(task, batches, cfg, place, epoch, step, quiet)
        if bad_loss is not None:  # stop; the checkpoint of the last finished epoch stays
            if place.main:
                run.write_summary(summarise_run(history, "diverged"))
            raise TrainingDiverged.at(cfg.name, bad_loss, epoch, step, run.path)
        seconds = time.perf_counter() - start
        elapsed += seconds
        totals = dict(zip(sums, sum_over_ranks(list(sums.values()), place)))
        row = {"epoch": epoch, **task.train_row(totals), "seconds": seconds, "elapsed": elapsed}
        row["lr"] = optimizer.param_groups[0]["lr"]

        # evaluate every eval_every epochs and after the last; then the epoch's record
        files: dict[str, str] = {}
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            scores, files = task.evaluate(trainer.net, data, cfg, place)
            row.update(scores)
        history.append(row)
        summary = summarise_run(history, "running")
        if place.main:
            state = checkpoint_state(model, optimizer, scheduler, epoch, elapsed, cfg)
            run.record_epoch(row, summary, files, state)
            if not quiet:
                print(f"[{cfg.name}] epoch {epoch}: {task.epoch_line(row)}; {seconds:.1f} s")

    summary = summarise_run(history, "ok")
    if place.main:
        run.write_summary(summary)
    distributed.shutdown(place)
    return summary


@dataclass
class Trainer:
    """What a training step runs and updates."""

    model: nn.Module  # the model itself: its penalty, diagnostics and checkpoint
    net: nn.Module  # what runs the batches: the model, or its DDP wrapper on many ranks
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    scaler: torch.amp.GradScaler
    autocast: Callable[[], AbstractContextManager]
    diagnostics: Diagnostics | None
    grad_clip: float | None

    @classmethod
    def create(cls, model, cfg: RunConfig, place: Placement, optimizer, scheduler, run):
        net = nn.parallel.DistributedDataParallel(model) if place.world > 1 else model
        diagnostics = None
        if cfg.diagnostics and place.main:
            diagnostics = Diagnostics(model, run.file(DIAGNOSTICS_FILE), cfg.diagnostics_every)
        # mixed precision: bfloat16 on CPU; float16 on GPU, with loss scaling
        device = place.device.type
        amp = cfg.amp and device in ("cuda", "cpu")
        dtype = torch.bfloat16 if device == "cpu" else torch.float16
        scaler = torch.amp.GradScaler(device, enabled=amp and dtype == torch.float16)
        autocast = partial(torch.autocast, device, dtype=dtype) if amp else nullcontext
        return cls(model, net, optimizer, scheduler, scaler, autocast, diagnostics, cfg.grad_clip)

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
            self.update(loss, step, epoch)
            step += 1
            sums["loss"] += loss.item() * weight
            for key, value in counts.items():
                sums[key] += value
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        return sums, step, None

    def update(self, loss: Tensor, step: int, epoch: int) -> None:
        """Backward (through the AMP scaler), optional clipping, diagnostics, then the
        optimizer and schedule step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if self.diagnostics is not None:
            self.diagnostics.after_backward(step, epoch)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()


# --------------------------------------------------------------------------------------------
# set-up


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def apply_method(model: nn.Module, cfg: RunConfig, example: tuple[Tensor, ...]) -> nn.Module:
    """Baseline (optionally with every activation replaced), GA, HD-FGD or SA."""
    options = dict(cfg.rewrite)
    if cfg.method == "baseline":
        if cfg.activation is None:
            return model
        return netadv.rewrite(
            model, "replace", activation=cfg.activation, example_inputs=example, inplace=True
        )
    plan = netadv.plan(
        model, cfg.method, activation=cfg.activation, example_inputs=example, **options
    )
    wanted = {"ga": ("A_f",), "hdfgd": ("HD-FGD",), "sa": ("SA",)}[cfg.method]
    if not any(site.becomes in wanted for site in plan.sites):
        # e.g. GA on a GELU model: no site has an adversarial, the arm would be the baseline
        reasons = sorted({site.note for site in plan.sites if site.note}) or ["no sites found"]
        raise ConfigError(
            f"method {cfg.method} changes no activation site of this {cfg.model} "
            f"({reasons[0]}); for GA set activation to one with an adversarial (sigmoid, "
            "tanh, ...), for HD-FGD/SA one with a decomposition (gelu, silu, ...)"
        )
    return netadv.rewrite(model, plan, inplace=True)


def count_flops(model: nn.Module, example: tuple[Tensor, ...]) -> int:
    """Forward FLOPs for one example (matmuls and convolutions, as torch counts them)."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*(t[:1] for t in example))
    model.train(was_training)
    return int(counter.get_total_flops())


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


# --------------------------------------------------------------------------------------------
# summary


def summarise(
    cfg: RunConfig,
    task: Task,
    params: int,
    flops: int,
    hardware: str,
    history: list[dict[str, Any]],
    status: str,
) -> dict[str, Any]:
    """summary.json: the run's settings, size, final metrics (the task's), seconds per epoch,
    time to the target, and ``status``: "running", "ok" or "diverged"."""
    m = task.metrics
    evals = [r for r in history if m.test_key in r]
    target = getattr(cfg, m.target_key)
    reached = next(
        (r for r in evals if target is not None and m.reaches(r[m.test_key], target)), None
    )
    return {
        **task.settings(cfg),
        "params": params,
        "flops": flops,
        "epochs_completed": len(history),
        **m.finals(evals),
        "seconds_per_epoch": (
            sum(r["seconds"] for r in history) / len(history) if history else None
        ),
        "time_to_target_s": reached["elapsed"] if reached else None,
        "epochs_to_target": reached["epoch"] if reached else None,
        m.target_key: target,
        "status": status,
        "hardware": hardware,
    }
