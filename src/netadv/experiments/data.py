"""Datasets, through torchvision wherever torchvision has them.

Fashion-MNIST comes from (in order) ``--data-dir`` / ``NETADV_DATA``, Debian's
``dataset-fashion-mnist`` package (gzipped IDX files in /usr/share/datasets/fashion-mnist), or a
torchvision download when online. Debian's files are linked into torchvision's folder layout
(``<root>/FashionMNIST/raw``) so torchvision's own reader loads them.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
GET_FASHION = (
    "Fashion-MNIST not found: install it with `apt-get install dataset-fashion-mnist` (Debian), "
    "or pass --data-dir DIR holding FashionMNIST/raw/*-ubyte, or allow a download with "
    "--download when online"
)


class DatasetMissingError(FileNotFoundError):
    """A dataset is not on this machine; the message says how to get it."""


def default_root() -> Path:
    return Path(os.environ.get("NETADV_DATA", Path.home() / ".cache" / "netadv" / "data"))


def _stage_debian_fashion(root: Path) -> None:
    """Decompress Debian's IDX files into torchvision's layout (once)."""
    raw = root / "FashionMNIST" / "raw"
    if all((raw / f).exists() for f in FASHION_FILES):
        return
    if not all((DEBIAN_FASHION_MNIST / f"{f}.gz").exists() for f in FASHION_FILES):
        return
    raw.mkdir(parents=True, exist_ok=True)
    for f in FASHION_FILES:
        tmp = raw / f"{f}.partial"
        with gzip.open(DEBIAN_FASHION_MNIST / f"{f}.gz", "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.rename(raw / f)


def fashion_mnist_tensors(
    root: str | Path | None = None, *, download: bool = False
) -> tuple[TensorDataset, TensorDataset]:
    """(train, test) as float tensors in [0, 1], shape (N, 1, 28, 28), and int64 labels."""
    from torchvision.datasets import FashionMNIST

    root = Path(root) if root is not None else default_root()
    _stage_debian_fashion(root)
    out = []
    for train in (True, False):
        try:
            ds = FashionMNIST(str(root), train=train, download=download)
        except RuntimeError as e:  # torchvision: "Dataset not found"
            raise DatasetMissingError(f"{GET_FASHION} (looked in {root})") from e
        images = ds.data.unsqueeze(1).to(torch.float32).div_(255)
        out.append(TensorDataset(images, ds.targets.long()))
    return out[0], out[1]


# --------------------------------------------------------------------------------------------
# Image classification datasets as uint8 tensors + torchvision transforms per sample.

GET_CIFAR = (
    "{name} not found in {root}: put the python-version archive's folder ({folder}/) there "
    "(from https://www.cs.toronto.edu/~kriz/cifar.html), pass --data-dir DIR, or set "
    "download: true when online"
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


def _cifar(name: str, root: Path, download: bool) -> tuple[torch.Tensor, ...]:
    from torchvision.datasets import CIFAR10, CIFAR100

    base = CIFAR10 if name == "cifar10" else CIFAR100

    class LocalCIFAR(base):
        # torchvision verifies md5 sums of the official files; a local folder in the same
        # format (a subset, a re-pack) is accepted as long as every file is there and loads.
        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            files = [f for f, _ in self.train_list + self.test_list] + [self.meta["filename"]]
            return all((folder / f).exists() for f in files)

        def _load_meta(self) -> None:
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                data = pickle.load(f, encoding="latin1")
            self.classes = data[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    cls = base if download else LocalCIFAR
    out = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=download)
        except RuntimeError as e:
            raise DatasetMissingError(
                GET_CIFAR.format(name=name, root=root, folder=base.base_folder)
            ) from e
        out += [
            torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
            torch.tensor(ds.targets, dtype=torch.long),
        ]
    return tuple(out)


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
) -> ImageData:
    """Train/test datasets with standard augmentation (random crop with padding, horizontal
    flip) on train and per-channel normalisation from the training set."""
    root = Path(root) if root is not None else default_root()
    xtr, ytr, xte, yte, classes = _images(name, root, download)
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


def _images(name: str, root: Path, download: bool) -> tuple:
    """uint8 train images, labels, test images, labels (N, C, H, W), and the class count."""
    if name == "fashion-mnist":
        train, test = fashion_mnist_tensors(root, download=download)
        xtr, ytr = (train.tensors[0] * 255).round().to(torch.uint8), train.tensors[1]
        xte, yte = (test.tensors[0] * 255).round().to(torch.uint8), test.tensors[1]
        return xtr, ytr, xte, yte, 10
    if name in ("cifar10", "cifar100"):
        return (*_cifar(name, root, download), 10 if name == "cifar10" else 100)
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
