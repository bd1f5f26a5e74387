"""Datasets, through torchvision wherever torchvision has them.

Fashion-MNIST comes from (in order) ``--data-dir`` / ``NETADV_DATA``, Debian's
``dataset-fashion-mnist`` package (gzipped IDX files in /usr/share/datasets/fashion-mnist), or a
torchvision download when online. Debian's files are linked into torchvision's folder layout
(``<root>/FashionMNIST/raw``) so torchvision's own reader loads them.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

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
