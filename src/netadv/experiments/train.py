"""The training loop: one run of one config, on CPU, one GPU, or many through torchrun.

Read top to bottom: set up (distributed, seed, data, model, method), then per epoch train,
evaluate, append a metrics row, write the checkpoint atomically; a summary at the end.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

import netadv
from netadv.errors import ConfigError
from netadv.experiments.config import RunConfig
from netadv.experiments.data import image_datasets
from netadv.experiments.models import build_model

CHECKPOINT = "checkpoint.pt"


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""


# --------------------------------------------------------------------------------------------
# setup


def setup_distributed() -> tuple[int, int, torch.device | None]:
    """(rank, world size, device) from torchrun's environment; (0, 1, None) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, None
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return rank, world, torch.device("cuda", local)
    dist.init_process_group("gloo")
    return rank, world, torch.device("cpu")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _inputs(example: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The model's positional inputs: one tensor, or a tuple (e.g. source and target ids)."""
    return example if isinstance(example, tuple) else (example,)


def apply_method(
    model: nn.Module, cfg: RunConfig, example: torch.Tensor | tuple[torch.Tensor, ...]
) -> nn.Module:
    """Baseline (optionally with every activation replaced), GA, HD-FGD or SA."""
    options = dict(cfg.rewrite)
    if cfg.method == "baseline":
        if cfg.activation is None:
            return model
        return netadv.rewrite(
            model,
            "replace",
            activation=cfg.activation,
            example_inputs=_inputs(example),
            inplace=True,
        )
    plan = netadv.plan(
        model, cfg.method, activation=cfg.activation, example_inputs=_inputs(example), **options
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


def count_flops(model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...]) -> int:
    """Forward FLOPs for one example (matmuls and convolutions, as torch counts them)."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*(t[:1] for t in _inputs(example)))
    model.train(was_training)
    return int(counter.get_total_flops())


def lr_lambda(cfg: RunConfig, steps_per_epoch: int):
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


# --------------------------------------------------------------------------------------------
# run folder


def run_folder(cfg: RunConfig, main: bool, resume: bool) -> tuple[Path, Path]:
    """(run folder, checkpoint path); refuses to overwrite a run, or to resume none."""
    run_dir = Path(cfg.output_dir) / cfg.name
    ckpt_path = run_dir / CHECKPOINT
    if main and not resume and ckpt_path.exists():
        raise ConfigError(
            f"{run_dir} already holds a run: pass --resume to continue it, or "
            "choose another name/output_dir"
        )
    if resume and not ckpt_path.exists():
        raise ConfigError(f"--resume: no checkpoint in {run_dir}")
    return run_dir, ckpt_path


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a kill mid-write leaves the previous checkpoint intact


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise ConfigError(
            f"cannot load checkpoint {path}: {str(e).splitlines()[0]}; remove it to start "
            "over, or resume from a copy"
        ) from None


def read_metrics(path: Path, upto_epoch: int) -> list[dict]:
    """Metrics rows up to ``upto_epoch`` (rows after the checkpoint are dropped on resume)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut by a kill
        if row["epoch"] <= upto_epoch:
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# one epoch


def record_epoch(
    run_dir: Path,
    row: dict,
    summary: dict,
    model,
    optimizer,
    scheduler,
    epoch: int,
    elapsed: float,
    cfg: RunConfig,
) -> None:
    """Rank 0 at the end of an epoch: append the metrics row, then write the checkpoint and
    the summary atomically (a resume drops metrics rows newer than the checkpoint)."""
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "elapsed": elapsed,
        "config": cfg.to_dict(),
    }
    save_checkpoint(run_dir / CHECKPOINT, state)
    write_json_atomic(run_dir / "summary.json", summary)


def optimizer_step(
    loss, model, optimizer, scaler, scheduler, grad_clip, diagnostics, step, epoch
) -> None:
    """Backward (through the AMP scaler), optional clipping, diagnostics, optimizer and
    schedule step: the part of a training step every task shares."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if diagnostics is not None:
        diagnostics.after_backward(step, epoch)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


def stop_diverged(
    name: str, loss, epoch: int, step: int, run_dir: Path, summary: dict | None
) -> None:
    """Record the divergence (rank 0 passes the summary) and stop; the checkpoint of the last
    finished epoch stays untouched."""
    if summary is not None:
        write_json_atomic(run_dir / "summary.json", summary)
    raise TrainingDiverged(
        f"[{name}] loss became {loss.item()} at epoch {epoch}, step {step}; stopped. The last "
        f"good checkpoint (epoch {epoch - 1}) is kept in {run_dir}"
    )


def _reduce(values: list[float], device: torch.device, world: int) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(t)
    return t.tolist()


def evaluate(model: nn.Module, loader: DataLoader, device, world: int) -> dict[str, float]:
    model.eval()
    loss = correct1 = correct5 = n = 0.0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = model(x).float()
            loss += F.cross_entropy(out, y, reduction="sum").item()
            top = out.topk(min(5, out.shape[1]), dim=1).indices
            correct1 += (top[:, 0] == y).sum().item()
            correct5 += (top == y[:, None]).any(1).sum().item()
            n += len(y)
    loss, correct1, correct5, n = _reduce([loss, correct1, correct5, n], device, world)
    model.train()
    return {"test_loss": loss / n, "test_top1": correct1 / n, "test_top5": correct5 / n}


def train(cfg: RunConfig, *, resume: bool = False, quiet: bool = False) -> dict:
    """Run ``cfg``; returns the summary (also written to the run folder)."""
    if cfg.task == "translate":
        from netadv.experiments.translate.task import train_translation

        return train_translation(cfg, resume=resume, quiet=quiet)
    rank, world, dist_device = setup_distributed()
    main = rank == 0
    device = dist_device or pick_device(cfg.device)
    hw = hardware(device, world)
    run_dir, ckpt_path = run_folder(cfg, main, resume)
    seed_everything(cfg.seed)

    data = image_datasets(
        cfg.dataset,
        cfg.data_dir,
        download=cfg.download and main,
        image_size=cfg.image_size,
        augment=cfg.augment,
        limit_train=cfg.limit_train,
        limit_test=cfg.limit_test,
    )
    torch.manual_seed(cfg.seed)  # the same initial weights for every method
    model = build_model(
        cfg.model,
        in_chans=data.in_chans,
        num_classes=data.num_classes,
        image_size=data.image_size,
        **cfg.model_kwargs,
    )
    example = torch.stack([data.test[i][0] for i in range(2)])
    model = apply_method(model, cfg, example)
    params = sum(p.numel() for p in model.parameters())
    flops = count_flops(model, example)
    model.to(device)

    if world > 1:
        sampler = DistributedSampler(data.train, num_replicas=world, rank=rank, seed=cfg.seed)
        test_sampler = DistributedSampler(data.test, num_replicas=world, rank=rank, shuffle=False)
    else:
        sampler, test_sampler = None, None
    per_rank_batch = max(1, cfg.batch_size // world)
    steps_per_epoch = math.ceil(len(data.train) / world / per_rank_batch)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps_per_epoch))

    start_epoch, elapsed, history = 1, 0.0, []
    if resume:
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, elapsed = state["epoch"] + 1, state["elapsed"]
        history = read_metrics(run_dir / "metrics.jsonl", state["epoch"])
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.yaml")
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
        if not quiet:
            print(
                f"[{cfg.name}] {data.description}; {cfg.model} {cfg.arm}; {params:,} params, "
                f"{flops / 1e6:.1f} MFLOPs/example; {world} process(es) on {device}"
            )

    ddp = world > 1
    net = nn.parallel.DistributedDataParallel(model) if ddp else model
    diagnostics = None
    if cfg.diagnostics and main:
        from netadv.diagnostics import Diagnostics

        diagnostics = Diagnostics(model, run_dir / "diagnostics.jsonl", cfg.diagnostics_every)
    amp = cfg.amp and device.type in ("cuda", "cpu")
    amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
    test_loader = DataLoader(
        data.test, batch_size=256, sampler=test_sampler, num_workers=cfg.num_workers
    )
    summary = _summary(cfg, params, flops, history, status="running", hw=hw)
    if main:
        write_json_atomic(run_dir / "summary.json", summary)
    step = (start_epoch - 1) * steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs + 1):
        if ddp:
            sampler.set_epoch(epoch)
            epoch_sampler = sampler
        else:  # a fresh, seed-determined order per epoch, the same after a resume
            g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            epoch_sampler = RandomSampler(data.train, generator=g)
        loader = DataLoader(
            data.train,
            batch_size=per_rank_batch,
            sampler=epoch_sampler,
            num_workers=cfg.num_workers,
            drop_last=False,
        )
        net.train()
        sums = [0.0, 0.0, 0.0]  # loss * n, correct, n
        t0 = time.perf_counter()
        bar = tqdm(
            loader,
            desc=f"[{cfg.name}] epoch {epoch}/{cfg.epochs}",
            leave=False,
            disable=quiet or not main,
            mininterval=1.0,
        )
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if diagnostics is not None:
                diagnostics.before_step(step)
            with torch.autocast(device.type, dtype=amp_dtype) if amp else nullcontext():
                out = net(x)
                loss = F.cross_entropy(out.float(), y, label_smoothing=cfg.label_smoothing)
                loss = loss + netadv.penalty(model)
            if not torch.isfinite(loss):
                summary = _summary(cfg, params, flops, history, status="diverged", hw=hw)
                stop_diverged(cfg.name, loss, epoch, step, run_dir, summary if main else None)
            optimizer_step(
                loss, model, optimizer, scaler, scheduler, cfg.grad_clip, diagnostics, step, epoch
            )
            step += 1
            sums[0] += loss.item() * len(y)
            sums[1] += (out.argmax(1) == y).sum().item()
            sums[2] += len(y)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        seconds = time.perf_counter() - t0
        elapsed += seconds
        loss_sum, correct, n = _reduce(sums, device, world)
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / n,
            "train_top1": correct / n,
            "train_examples": int(n),
            "seconds": seconds,
            "elapsed": elapsed,
            "lr": optimizer.param_groups[0]["lr"],
        }
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            row.update(evaluate(net, test_loader, device, world))
        history.append(row)
        summary = _summary(cfg, params, flops, history, status="running", hw=hw)
        if main:
            record_epoch(run_dir, row, summary, model, optimizer, scheduler, epoch, elapsed, cfg)
            if not quiet:
                test = (
                    f"test top-1 {100 * row['test_top1']:.2f}% top-5 "
                    f"{100 * row['test_top5']:.2f}% loss {row['test_loss']:.4f}"
                    if "test_top1" in row
                    else "(no eval this epoch)"
                )
                print(
                    f"[{cfg.name}] epoch {epoch}: train loss {row['train_loss']:.4f} "
                    f"top-1 {100 * row['train_top1']:.2f}%; {test}; {seconds:.1f} s"
                )
    summary = _summary(cfg, params, flops, history, status="ok", hw=hw)
    if main:
        write_json_atomic(run_dir / "summary.json", summary)
    if ddp:
        dist.destroy_process_group()
    return summary


def hardware(device: torch.device, world: int) -> str:
    """One line naming where a run ran (s/epoch compares only within one machine)."""
    import platform

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return f"{world} x {device.type} ({name}), torch {torch.__version__}"


def _summary(
    cfg: RunConfig, params: int, flops: int, history: list[dict], status: str, hw: str
) -> dict:
    evals = [r for r in history if "test_top1" in r]
    reached = next(
        (
            r
            for r in evals
            if cfg.target_accuracy is not None and r["test_top1"] >= cfg.target_accuracy
        ),
        None,
    )
    return {
        "name": cfg.name,
        "arm": cfg.arm,
        "method": cfg.method,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "activation": cfg.activation,
        "seed": cfg.seed,
        "task": cfg.task,
        "params": params,
        "flops": flops,
        "epochs_completed": len(history),
        "final_top1": evals[-1]["test_top1"] if evals else None,
        "final_top5": evals[-1]["test_top5"] if evals else None,
        "best_top1": max((r["test_top1"] for r in evals), default=None),
        "seconds_per_epoch": (
            sum(r["seconds"] for r in history) / len(history) if history else None
        ),
        "time_to_target_s": reached["elapsed"] if reached else None,
        "epochs_to_target": reached["epoch"] if reached else None,
        "target_accuracy": cfg.target_accuracy,
        "status": status,
        "hardware": hw,
    }
