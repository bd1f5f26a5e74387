"""Image classification datasets as uint8 tensors, with torchvision transforms per sample.

Each reader checks what it reads and says in one line what to do when a file is missing or
unusable (``DatasetMissingError``); a ``data_dir`` that does not exist is a ``ConfigError``,
never created. Fashion-MNIST: :mod:`netadv.experiments.fashion` (IDX files, Debian's package
read in place); CIFAR-10/100: :mod:`netadv.experiments.cifar` (no code runs from the files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

from netadv.experiments.cifar import cifar
from netadv.experiments.dataset_files import DatasetMissingError, default_root
from netadv.experiments.fashion import fashion_mnist

__all__ = [
    "DatasetMissingError",
    "ImageData",
    "TensorImages",
    "default_root",
    "fashion_mnist_tensors",
    "image_datasets",
]


def fashion_mnist_tensors(
    root: str | Path | None = None, *, download: bool = False
) -> tuple[TensorDataset, TensorDataset]:
    """(train, test) as float tensors in [0, 1], shape (N, 1, 28, 28), and int64 labels."""
    xtr, ytr, xte, yte = fashion_mnist(root, download=download)
    return (
        TensorDataset(xtr.to(torch.float32).div_(255), ytr),
        TensorDataset(xte.to(torch.float32).div_(255), yte),
    )


@dataclass
class ImageData:
    train: Dataset
    test: Dataset
    num_classes: int
    in_chans: int
    image_size: int
    description: str


class TensorImages(Dataset):
    """uint8 images (N, C, H, W) and labels, with a torchvision transform applied per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i]
        return (self.transform(x) if self.transform is not None else x), self.labels[i]


def _digits() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images * (255 / 16)).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(d.target).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    test, train = order[:360], order[360:]  # fixed split, the same on every machine
    return images[train], labels[train], images[test], labels[test]


def _synthetic(n_train: int = 2048, n_test: int = 512, size: int = 16, classes: int = 10):
    """Class templates plus noise: learnable in a few steps, for fast tests."""
    g = torch.Generator().manual_seed(1234)
    # smooth (4x4 upsampled) templates, so crops and flips keep them recognisable
    coarse = torch.rand(classes, 1, 4, 4, generator=g)
    templates = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")

    def draw(n):
        labels = torch.randint(0, classes, (n,), generator=g)
        x = 0.6 * templates[labels] + 0.4 * torch.rand(n, 1, size, size, generator=g)
        return (x * 255).round().to(torch.uint8), labels

    return (*draw(n_train), *draw(n_test))


def image_datasets(
    name: str,
    root: str | Path | None = None,
    *,
    download: bool = False,
    image_size: int | None = None,
    augment: bool = True,
    limit_train: int | None = None,
    limit_test: int | None = None,
    verify_cifar: bool | None = None,
) -> ImageData:
    """Train/test datasets with standard augmentation (random crop with padding, horizontal
    flip) on train and per-channel normalisation from the training set.

    ``root``: the folder holding the dataset's files (must exist; None: netadv's cache, and
    Debian's package for Fashion-MNIST). ``verify_cifar``: check CIFAR files against the
    published MD5 sums (None: unless ``NETADV_ALLOW_CUSTOM_CIFAR=1``)."""
    xtr, ytr, xte, yte, classes = _images(name, root, download, verify_cifar)
    if limit_train:
        xtr, ytr = xtr[:limit_train], ytr[:limit_train]
    if limit_test:
        xte, yte = xte[:limit_test], yte[:limit_test]
    size = image_size or xtr.shape[-1]
    train_tf, test_tf = _transforms(xtr, size, augment)
    return ImageData(
        TensorImages(xtr, ytr, train_tf),
        TensorImages(xte, yte, test_tf),
        classes,
        xtr.shape[1],
        size,
        f"{name}: {len(ytr)} train / {len(yte)} test, {xtr.shape[1]}x{size}x{size}, "
        f"{classes} classes",
    )


def _images(name: str, root: str | Path | None, download: bool, verify: bool | None) -> tuple:
    """uint8 train images, labels, test images, labels (N, C, H, W), and the class count."""
    if name == "fashion-mnist":
        return (*fashion_mnist(root, download=download), 10)
    if name in ("cifar10", "cifar100"):
        images = cifar(name, root, download=download, verify=verify)
        return (*images, 10 if name == "cifar10" else 100)
    if name == "digits":
        return (*_digits(), 10)
    if name == "synthetic":
        return (*_synthetic(), 10)
    raise ValueError(
        f"unknown dataset {name!r}; known: fashion-mnist, cifar10, cifar100, digits, synthetic"
    )


def _transforms(train_images: torch.Tensor, size: int, augment: bool):
    """(train, test) transforms: to ``size`` (padding when that is even, else resizing),
    augmentation on train, then float and normalisation by the training set's statistics."""
    from torchvision.transforms import v2

    native = train_images.shape[-1]
    scaled = train_images.float() / 255
    mean = scaled.mean(dim=(0, 2, 3)).tolist()
    std = scaled.std(dim=(0, 2, 3)).clamp(min=1e-3).tolist()
    resize = (
        []
        if size == native
        else (
            [v2.Pad((size - native) // 2)]
            if size > native and (size - native) % 2 == 0
            else [v2.Resize(size, antialias=True)]
        )
    )
    finish = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    augmentation = (
        [v2.RandomCrop(size, padding=max(1, size // 8)), v2.RandomHorizontalFlip()]
        if augment
        else []
    )
    return v2.Compose(resize + augmentation + finish), v2.Compose(resize + finish)
