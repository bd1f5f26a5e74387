"""The image classification task: cross-entropy training, Top-1/Top-5 on the test split, on
the datasets of :mod:`netadv.experiments.data` and the models of
:mod:`netadv.experiments.models`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from netadv.experiments.config import RunConfig
from netadv.experiments.data import ImageData, image_datasets
from netadv.experiments.distributed import (
    Placement,
    epoch_generator,
    rank_sampler,
    sum_over_ranks,
)
from netadv.experiments.models import build_model
from netadv.experiments.run_folder import RunFolder
from netadv.experiments.task import Counts, Metric, Task, TaskMetrics

METRICS = TaskMetrics(
    primary=Metric("top1", "Top-1 (%)", "summary", "final_top1", scale=100.0),
    secondary=Metric(
        "top5_err", "Top-5 err (%)", "summary", "final_top5", scale=100.0, complement=True
    ),
    test_key="test_top1",
    target_key="target_accuracy",
    target_name="accuracy",
    unit="%",
    measured="test Top-1 accuracy after the last epoch (higher is better) and Top-5 error "
    "(100 - Top-5 accuracy, lower is better)",
    axis_label="test Top-1 (%)",
    final={
        "final_top1": ("test_top1", "last"),
        "final_top5": ("test_top5", "last"),
        "best_top1": ("test_top1", "best"),
    },
)
SETTINGS = ("name", "arm", "method", "model", "dataset", "activation", "seed", "task")


@dataclass
class Images:
    """The datasets, and the test split's loader (each rank evaluates its share)."""

    data: ImageData
    test: DataLoader


def load_images(cfg: RunConfig, run: RunFolder, place: Placement) -> Images:
    data = image_datasets(
        cfg.dataset,
        cfg.data_dir,
        download=cfg.download and place.main,
        image_size=cfg.image_size,
        augment=cfg.augment,
        limit_train=cfg.limit_train,
        limit_test=cfg.limit_test,
    )
    sampler = None
    if place.world > 1:
        sampler = DistributedSampler(
            data.test, num_replicas=place.world, rank=place.rank, shuffle=False
        )
    test = DataLoader(data.test, batch_size=256, sampler=sampler, num_workers=cfg.num_workers)
    return Images(data, test)


def image_classifier(cfg: RunConfig, images: Images) -> tuple[nn.Module, tuple[Tensor]]:
    """The config's model for the data's shapes, and two test images as example inputs."""
    data = images.data
    model = build_model(
        cfg.model,
        in_chans=data.in_chans,
        num_classes=data.num_classes,
        image_size=data.image_size,
        **cfg.model_kwargs,
    )
    return model, (torch.stack([data.test[i][0] for i in range(2)]),)


def batches(images: Images, cfg: RunConfig, place: Placement, epoch: int, size: int):
    train = images.data.train
    if place.world > 1:
        sampler = rank_sampler(train, place, cfg.seed, epoch)
    else:
        sampler = RandomSampler(train, generator=epoch_generator(cfg.seed, epoch))
    # the workers' seeds (and so their augmentation) from a per-epoch generator, not from the
    # global one: the same after a resume, whatever the evaluation drew
    return DataLoader(
        train,
        batch_size=size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        drop_last=False,
        generator=epoch_generator(cfg.seed, epoch, stream=1),
    )


def cross_entropy(
    net: nn.Module, batch: Any, cfg: RunConfig, device: torch.device
) -> tuple[Tensor, int, Counts]:
    """Mean cross-entropy of a batch (with label smoothing), and its correct predictions."""
    x, y = (t.to(device, non_blocking=True) for t in batch)
    out = net(x)
    loss = F.cross_entropy(out.float(), y, label_smoothing=cfg.label_smoothing)
    return loss, len(y), {"correct": (out.argmax(1) == y).sum().item(), "examples": len(y)}


def train_row(sums: Counts) -> dict[str, Any]:
    n = sums["examples"]
    return {
        "train_loss": sums["loss"] / n,
        "train_top1": sums["correct"] / n,
        "train_examples": int(n),
    }


def evaluate(
    net: nn.Module, images: Images, cfg: RunConfig, place: Placement
) -> tuple[dict[str, float], dict[str, str]]:
    """Test loss, Top-1 and Top-5 (fractions) over the whole test split; no files."""
    net.eval()
    loss = correct1 = correct5 = n = 0.0
    with torch.no_grad():
        for x, y in images.test:
            x, y = x.to(place.device), y.to(place.device)
            out = net(x).float()
            loss += F.cross_entropy(out, y, reduction="sum").item()
            top = out.topk(min(5, out.shape[1]), dim=1).indices
            correct1 += (top[:, 0] == y).sum().item()
            correct5 += (top == y[:, None]).any(1).sum().item()
            n += len(y)
    loss, correct1, correct5, n = sum_over_ranks([loss, correct1, correct5, n], place)
    net.train()
    return {"test_loss": loss / n, "test_top1": correct1 / n, "test_top5": correct5 / n}, {}


def epoch_line(row: dict[str, Any]) -> str:
    test = (
        f"test top-1 {100 * row['test_top1']:.2f}% top-5 "
        f"{100 * row['test_top5']:.2f}% loss {row['test_loss']:.4f}"
        if "test_top1" in row
        else "(no eval this epoch)"
    )
    return f"train loss {row['train_loss']:.4f} top-1 {100 * row['train_top1']:.2f}%; {test}"


CLASSIFY = Task(
    name="classify",
    metrics=METRICS,
    settings=lambda cfg: {key: getattr(cfg, key) for key in SETTINGS},
    load_data=load_images,
    build_model=image_classifier,
    train_size=lambda images: len(images.data.train),
    batches=batches,
    counts=("correct", "examples"),
    loss=cross_entropy,
    train_row=train_row,
    evaluate=evaluate,
    save_files=lambda images, run: None,
    describe=lambda cfg, images: images.data.description,
    example_name="example",
    epoch_line=epoch_line,
)
