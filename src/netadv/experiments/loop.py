"""The training loop: one run of one config, on CPU, one GPU, or many through torchrun.

:func:`fit_task` reads top to bottom: set up (processes, run folder, data, model, method, the
:class:`~netadv.experiments.trainer.Trainer` with the model spread over the ranks, optimizer),
then per epoch train, evaluate, append a metrics row and write the checkpoint atomically; a
summary at the end. What image classification and translation do differently is the
:class:`~netadv.experiments.task.Task` it is given. From a script:
:func:`netadv.experiments.fit`.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from contextlib import closing
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

import netadv
from netadv.defaults import MAX_GAIN
from netadv.errors import ConfigError
from netadv.experiments import distributed
from netadv.experiments.config import RunConfig
from netadv.experiments.distributed import Placement, sum_over_ranks
from netadv.experiments.run_folder import CHECKPOINT, RunFolder, initial_weights
from netadv.experiments.task import Task
from netadv.experiments.tasks import task_for
from netadv.experiments.tracking import Tracker
from netadv.experiments.trainer import Trainer
from netadv.rewrite.widen import capacity_matched


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf: the run is marked diverged and its last checkpoint, if it has
    one, is kept (an epoch whose evaluation is NaN/Inf is never saved)."""

    @classmethod
    def at(cls, cfg: RunConfig, what: str, loss: float, where: str, run: RunFolder):
        kept = (
            f"the checkpoint of epoch {run.saved_epoch} is kept in {run.file(CHECKPOINT)}"
            if run.saved_epoch and run.file(CHECKPOINT).exists()
            else f"no checkpoint was written ({run.path} has none)"
        )
        return cls(f"[{cfg.name}] {what} became {loss} {where}; stopped, {kept}. {advice(cfg)}")


def advice(cfg: RunConfig) -> str:
    """What to change in a new run after a divergence (a resume takes the same config)."""
    tries = [f"a lower lr (now {cfg.lr:g})"]
    if cfg.grad_clip is None:
        tries.append("grad_clip: 1.0")
    else:
        tries.append(f"a smaller grad_clip (now {cfg.grad_clip:g})")
    if cfg.warmup_epochs == 0:
        tries.append("warmup_epochs: 1")
    if cfg.amp:
        tries.append("amp: false")
    if cfg.method in ("ga", "sa"):  # A_f's gain outside the stable interval grows with it
        tries.append(f"a smaller rewrite.max_gain (now {cfg.rewrite.get('max_gain', MAX_GAIN):g})")
    return f"Try a new run (another name) with {', '.join(tries[:-1])} or {tries[-1]}"


def train(cfg: RunConfig, *, resume: bool = False, quiet: bool = False) -> dict:
    """Run ``cfg`` on its task; returns the summary (also written to the run folder)."""
    return fit_task(cfg, task_for(cfg), resume=resume, quiet=quiet)


def fit_task(cfg: RunConfig, task: Task, *, resume: bool = False, quiet: bool = False) -> dict:
    """Train ``cfg`` on ``task``; returns the summary (also written to the run folder)."""
    threads = torch.get_num_threads()
    if cfg.threads is not None:  # on a busy machine torch's default can be many times slower
        torch.set_num_threads(cfg.threads)
    run = None
    try:
        # one process, or one rank of a torchrun launch: rank 0 ("main") writes and prints
        place = distributed.setup(cfg.device)
        # refuses to overwrite a run, to resume one with another config, or a busy one
        run = RunFolder(cfg, main=place.main, resume=resume)
        with run.disk_errors():  # a full disk or a read-only folder: one line
            summary = _fit(cfg, task, place, run, quiet)
        distributed.shutdown(place)
        return summary
    finally:
        if run is not None:
            run.close()  # the lock: compare now reads a run left "running" as died
        torch.set_num_threads(threads)


def _fit(cfg: RunConfig, task: Task, place: Placement, run: RunFolder, quiet: bool) -> dict:
    hardware = distributed.hardware(place)
    seed_everything(cfg.seed)

    # the data, then the same initial weights for every method, then the method applied
    data = task.load_data(cfg, run, place)
    model, params, flops = build(cfg, task, data)
    model.to(place.device)

    # the batch is shared out over the ranks; the learning rate follows a per-step schedule
    batch_size = max(1, cfg.batch_size // place.world)
    steps_per_epoch = math.ceil(math.ceil(task.train_size(data) / place.world) / batch_size)
    # the step's machinery: the model spread over the ranks (DDP, or FSDP's shards), the
    # optimizer and schedule, mixed precision, diagnostics
    trainer = Trainer.create(model, cfg, place, steps_per_epoch, run)

    # a resumed run continues after its checkpoint, with the metrics rows up to it and the
    # random state the uninterrupted run had there
    done, elapsed, history = trainer.resume(run, place) if run.resume else (0, 0.0, [])
    summarise_run = partial(summarise, cfg, task, params, flops, hardware)
    if place.main:
        run.start(cfg, history)
        task.save_files(data, run)
        if not quiet:
            print(
                f"[{cfg.name}] {task.describe(cfg, data)}; {cfg.model} {cfg.arm}; "
                f"{params:,} params, {flops / 1e6:.1f} MFLOPs/{task.example_name}; "
                f"{place.world} process(es) on {place.device}"
            )
        if run.extended_from is not None:
            print(extension_note(cfg, run.extended_from), file=sys.stderr)
        run.write_summary(summarise_run(history, "running"))
        if cfg.tensorboard:  # continuing at the checkpoint's step: later events are dropped
            trainer.tracker = Tracker.open(cfg, run, done * steps_per_epoch)

    with closing(trainer):  # TensorBoard's events flushed, however the run ends
        if cfg.init_from and not run.resume:  # the converted model, before any training
            history.append(converted(trainer, task, data, cfg, place, run, summarise_run, quiet))
        step = done * steps_per_epoch
        for epoch in range(done + 1, cfg.epochs + 1):
            batches = task.batches(data, cfg, place, epoch, batch_size)
            start = time.perf_counter()
            sums, step, bad_loss = trainer.epoch(task, batches, cfg, place, epoch, step, quiet)
            if bad_loss is not None:  # stop; the checkpoint of the last finished epoch stays
                if place.main:
                    run.write_summary(summarise_run(history, "diverged"))
                where = f"at epoch {epoch}, step {step}"
                raise TrainingDiverged.at(cfg, "the training loss", bad_loss, where, run)
            seconds = time.perf_counter() - start
            elapsed += seconds
            row = epoch_row(task, sums, place, epoch, (seconds, elapsed), trainer.optimizer)

            # evaluate every eval_every epochs and after the last; then the epoch's record
            files: dict[str, str] = {}
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                scores, files = trainer.evaluate(task, data, cfg, place)
                row.update(scores)
            history.append(row)
            bad = nonfinite_loss(row)  # such an epoch is not saved: the previous checkpoint stays
            summary = summarise_run(history, "diverged" if bad else "running")
            trainer.save(run, row, summary, files, elapsed, place, checkpoint=bad is None)
            if trainer.tracker is not None:
                trainer.tracker.epoch(row, step - 1)
            if place.main and not quiet:
                print(f"[{cfg.name}] epoch {epoch}: {task.epoch_line(row)}; {seconds:.1f} s")
            if bad:
                where = f"in the evaluation after epoch {epoch}"
                raise TrainingDiverged.at(
                    cfg, f"the {bad[0].replace('_', ' ')}", bad[1], where, run
                )
    summary = summarise_run(history, "ok")
    if place.main:
        run.write_summary(summary)
    return summary


def build(cfg: RunConfig, task: Task, data: Any) -> tuple[nn.Module, int, int]:
    """The task's model from the config's seed (the same initial weights for every method),
    fine-tuning's base weights loaded, the method applied; with its parameters and FLOPs."""
    torch.manual_seed(cfg.seed)
    model, example = task.build_model(cfg, data)
    if cfg.init_from:  # fine-tuning: a trained base model, converted by the method below
        initial_weights(model, cfg.init_from.replace("{seed}", str(cfg.seed)))
    model = apply_method(model, cfg, example)
    return model, sum(p.numel() for p in model.parameters()), count_flops(model, example)


def epoch_row(
    task: Task, sums: dict[str, float], place: Placement, epoch: int, times, optimizer
) -> dict[str, Any]:
    """An epoch's metrics row before evaluation: the task's train entries from the sums over
    every rank, its seconds and the train seconds so far (``times``), the learning rate."""
    totals = dict(zip(sums, sum_over_ranks(list(sums.values()), place)))
    seconds, elapsed = times
    row = {"epoch": epoch, **task.train_row(totals), "seconds": seconds, "elapsed": elapsed}
    row["lr"] = optimizer.param_groups[0]["lr"]
    if hasattr(os, "getloadavg"):  # how busy the machine was: whether seconds compare
        row["load"] = round(os.getloadavg()[0], 2)
    return row


def converted(trainer, task: Task, data, cfg: RunConfig, place, run, summarise_run, quiet) -> dict:
    """Epoch 0 of a fine-tuning run: the converted model evaluated before training (what the
    conversion itself cost or gained), recorded as a metrics row without a checkpoint."""
    scores, _ = trainer.evaluate(task, data, cfg, place)
    row = {"epoch": 0, "seconds": 0.0, "elapsed": 0.0, **scores}
    if place.main:
        run.record_epoch(row, summarise_run([row], "running"), {}, None)
        if trainer.tracker is not None:
            trainer.tracker.epoch(row, 0)
        if not quiet:
            print(f"[{cfg.name}] converted from {cfg.init_from}: {task.epoch_line(row)}")
    return row


def extension_note(cfg: RunConfig, before: int) -> str:
    """The log line of a finished run extended to more epochs."""
    note = f"[{cfg.name}] extending the run from {before} to {cfg.epochs} epochs"
    if cfg.schedule == "constant":
        return f"{note} (a constant learning rate: as if it had been set to {cfg.epochs})"
    return (
        f"{note}: the cosine schedule now spans {cfg.epochs} epochs, so the learning rate rises "
        f"again after epoch {before} (not the run a {cfg.epochs}-epoch config trains)"
    )


def nonfinite_loss(row: dict[str, Any]) -> tuple[str, float] | None:
    """The first evaluation loss of a metrics row that is NaN/Inf: (its key, value)."""
    for key, value in row.items():
        if key.endswith("_loss") and key != "train_loss" and not math.isfinite(value):
            return key, value
    return None


# --------------------------------------------------------------------------------------------
# set-up


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def apply_method(model: nn.Module, cfg: RunConfig, example: tuple[Tensor, ...]) -> nn.Module:
    """Baseline (optionally with every activation replaced), GA, HD-FGD or SA."""
    options = dict(cfg.rewrite)
    if cfg.capacity_of is not None:  # the baseline widened to the rewrite's parameter count
        wide, _ = capacity_matched(
            model, cfg.capacity_of, activation=cfg.activation, example_inputs=example, **options
        )
        return wide
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
    converted = next((r for r in history if r["epoch"] == 0), None)  # fine-tuning's epoch 0
    history = [r for r in history if r["epoch"] >= 1]
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
        **({f"converted_{m.test_key}": converted.get(m.test_key)} if converted else {}),
        "time_to_target_s": reached["elapsed"] if reached else None,
        "epochs_to_target": reached["epoch"] if reached else None,
        m.target_key: target,
        "status": status,
        "hardware": hardware,
    }
