"""Fashion-MNIST as uint8 tensors, read straight from its IDX files (gzipped or not).

Sources, in order: ``<data_dir>/FashionMNIST/raw`` (torchvision's layout; with ``data_dir``
unset, netadv's cache), Debian's ``dataset-fashion-mnist`` package (read in place, nothing is
copied), then a download into the first when ``download`` is set. The tensors are the ones
torchvision's ``FashionMNIST`` gives (same bytes, same order); its class is not used because it
prefers ``processed/*.pt`` files when a folder has them, and it needs the files decompressed.

IDX (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte (8: uint8), the number of
dimensions, each dimension as a big-endian uint32, then the values in C order.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import torch

from netadv.experiments.dataset_files import (
    DatasetMissingError,
    data_root,
    first_line,
    read_bytes,
)

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
#: split -> (images file, labels file)
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FILES = tuple(name for pair in SPLITS.values() for name in pair)
CLASSES = 10
HOLDS = (
    "FashionMNIST/raw/*-ubyte (or *-ubyte.gz); or leave data_dir unset to read Debian's "
    "dataset-fashion-mnist package"
)
GET = (
    "Fashion-MNIST not found in {looked}: install it with `apt-get install "
    "dataset-fashion-mnist` (Debian), point --set data_dir=DIR at a folder holding "
    "FashionMNIST/raw/*-ubyte, or --set download=true when online"
)
REINSTALL = "reinstall it with `apt-get install --reinstall dataset-fashion-mnist`"
ADD_MISSING = (
    "copy the missing files there from https://github.com/zalandoresearch/fashion-mnist, or "
    "--set download=true when online"
)
REFETCH = (
    "replace it with an intact copy from https://github.com/zalandoresearch/fashion-mnist "
    "(or delete it and --set download=true when online)"
)


def fashion_mnist(
    data_dir: str | Path | None = None, *, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train images (60000, 1, 28, 28) uint8, train labels (60000,) int64, test images
    (10000, 1, 28, 28), test labels. ``data_dir`` must exist when given (never created)."""
    root, _ = data_root(data_dir, HOLDS)
    raw = root / "FashionMNIST" / "raw"
    if download and 0 < len(_found(raw)) < len(FILES):
        _download(raw)  # completes a folder holding part of the files
    files = _files(raw) or _files(DEBIAN)
    if files is None and download:
        _download(raw)
        files = _files(raw)
    if files is None:
        raise DatasetMissingError(GET.format(looked=f"{raw} or {DEBIAN}"))
    return (*_split(files, "train"), *_split(files, "test"))


def _fix(folder: Path) -> str:
    return REINSTALL if folder == DEBIAN else REFETCH


def _found(folder: Path) -> dict[str, Path]:
    """The path of each file the folder holds (plain preferred to .gz)."""
    found = {}
    for name in FILES:
        for path in (folder / name, folder / f"{name}.gz"):
            if path.is_file():
                found[name] = path
                break
    return found


def _files(folder: Path) -> dict[str, Path] | None:
    """Every file's path; None when the folder holds none of them, an error when only some."""
    found = _found(folder)
    if not found:
        return None
    missing = [name for name in FILES if name not in found]
    if missing:
        raise DatasetMissingError(
            f"{folder} holds only part of Fashion-MNIST (no {', '.join(missing)}): "
            + (REINSTALL if folder == DEBIAN else ADD_MISSING)
        )
    return found


def _split(files: dict[str, Path], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    image_file, label_file = SPLITS[split]
    images = read_idx(files[image_file], ndim=3)
    labels = read_idx(files[label_file], ndim=1)
    fix = _fix(files[label_file].parent)
    if len(images) != len(labels):
        raise DatasetMissingError(
            f"{files[image_file]} holds {len(images)} images but {files[label_file]} "
            f"{len(labels)} labels: {fix}"
        )
    if int(labels.max()) >= CLASSES:
        raise DatasetMissingError(
            f"{files[label_file]} has label {int(labels.max())}, outside 0..{CLASSES - 1}: {fix}"
        )
    return images.unsqueeze(1), labels.long()


def read_idx(path: Path, ndim: int) -> torch.Tensor:
    """A uint8 IDX file (``.gz`` is decompressed in memory) as a tensor of its shape."""
    fix = _fix(path.parent)
    data = read_bytes(path, fix)
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetMissingError(
                f"{path} is not a readable gzip file ({first_line(e)}): {fix}"
            ) from None
    return parse_idx(data, ndim, str(path), fix)


def parse_idx(data: bytes, ndim: int, name: str, fix: str) -> torch.Tensor:
    """The uint8 values of an IDX file's bytes, checked against its header."""
    if data[:4] != bytes([0, 0, 8, ndim]):
        raise DatasetMissingError(
            f"{name} is not a uint8 IDX file with {ndim} dimension(s) (it starts with bytes "
            f"{data[:4].hex() or 'nothing'}, not 000008{ndim:02x}): {fix}"
        )
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header]) if len(data) >= header else None
    expected = header + math.prod(shape) if shape else None
    if expected is None or len(data) < expected:
        promised = f"its header promises {expected}" if expected else "its header is cut"
        raise DatasetMissingError(f"{name} is truncated ({len(data)} bytes; {promised}): {fix}")
    if len(data) > expected:
        raise DatasetMissingError(
            f"{name} has {len(data) - expected} bytes more than its header (shape {shape}) "
            f"promises: {fix}"
        )
    if expected == header:
        raise DatasetMissingError(f"{name} holds no values (shape {shape}): {fix}")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header).view(*shape)


def _download(raw: Path) -> None:
    """torchvision's mirrors and published MD5 sums, into ``raw``."""
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import download_and_extract_archive

    raw.mkdir(parents=True, exist_ok=True)
    for filename, md5 in FashionMNIST.resources:
        errors = []
        for mirror in FashionMNIST.mirrors:
            try:
                download_and_extract_archive(mirror + filename, raw, filename=filename, md5=md5)
                break
            except (RuntimeError, OSError) as e:  # URLError is an OSError
                errors.append(first_line(e))
        else:
            raise DatasetMissingError(
                f"could not download Fashion-MNIST's {filename} into {raw} "
                f"({'; '.join(errors)}): copy the four files there by hand, or install "
                "Debian's dataset-fashion-mnist package"
            )
