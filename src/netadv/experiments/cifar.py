"""CIFAR-10/100 from the python-version archive's folder, read without running its code.

The batches are pickles, and ``pickle.load`` (what torchvision's ``CIFAR10`` calls) runs
whatever a file asks it to, so a CIFAR folder from elsewhere could run code. Here:

- files with the official names are checked against torchvision's published MD5 sums before
  anything is unpickled (the digest is cached per path, size and mtime within a process);
- a restricted unpickler admits only what the real files hold: dicts, lists, str/bytes, ints
  and numpy arrays (numpy's array reconstruction, ``numpy.ndarray``, ``numpy.dtype``, and
  ``_codecs.encode`` to latin-1, which is how Python 3 writes bytes at protocol 2);
- each file's contents are checked: a dict with uint8 ``data`` of shape (N, 3072) and N labels
  in range, and the meta file's class names.

Custom data in the same format (a subset, a re-pack) fails the MD5 check: set the environment
variable ``NETADV_ALLOW_CUSTOM_CIFAR=1`` (or pass ``verify=False``) to accept it. The restricted
unpickler and the content checks still apply.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from netadv.experiments.dataset_files import (
    DatasetMissingError,
    data_root,
    first_line,
    read_bytes,
)

ALLOW_CUSTOM = "NETADV_ALLOW_CUSTOM_CIFAR"
SITE = "https://www.cs.toronto.edu/~kriz/cifar.html"
ROW = 3 * 32 * 32  # one image, channel-major, as the files store it


@dataclass
class CifarFiles:
    """One CIFAR variant's folder, files and published MD5 sums (torchvision's lists)."""

    title: str  # "CIFAR-10"
    folder: str  # "cifar-10-batches-py"
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str  # the file naming the classes
    meta_key: str
    label_key: str  # "labels" / "fine_labels" (torchvision takes "labels" when a file has it)
    classes: int
    md5: dict[str, str]  # file -> published MD5
    url: str  # the archive, and its MD5
    archive: str
    archive_md5: str

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, *self.test, self.meta)

    @property
    def refetch(self) -> str:
        return f"re-extract {self.archive} from {SITE} (or delete it and --set download=true)"


@functools.cache
def cifar_files(name: str) -> CifarFiles:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    return CifarFiles(
        title="CIFAR-10" if name == "cifar10" else "CIFAR-100",
        folder=cls.base_folder,
        train=tuple(f for f, _ in cls.train_list),
        test=tuple(f for f, _ in cls.test_list),
        meta=cls.meta["filename"],
        meta_key=cls.meta["key"],
        label_key="labels" if name == "cifar10" else "fine_labels",
        classes=10 if name == "cifar10" else 100,
        md5={**dict(cls.train_list + cls.test_list), cls.meta["filename"]: cls.meta["md5"]},
        url=cls.url,
        archive=cls.filename,
        archive_md5=cls.tgz_md5,
    )


def cifar(
    name: str,
    data_dir: str | Path | None = None,
    *,
    download: bool = False,
    verify: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train images (N, 3, 32, 32) uint8, train labels (N,) int64, test images, test labels,
    in the files' order (what torchvision's ``CIFAR10``/``CIFAR100`` give, channels first).

    ``data_dir`` (must exist when given; default: netadv's cache) holds the archive's folder.
    ``verify``: check the published MD5 sums; None: unless ``NETADV_ALLOW_CUSTOM_CIFAR=1``."""
    spec = cifar_files(name)
    root, _ = data_root(data_dir, f"{spec.folder}/ (the python-version archive from {SITE})")
    folder = root / spec.folder
    if download and _missing(spec, folder):
        _download(spec, root)
    missing = _missing(spec, folder)
    if missing:
        raise DatasetMissingError(_missing_message(spec, root, folder, missing))
    if verify is None:
        verify = os.environ.get(ALLOW_CUSTOM, "").strip().lower() not in ("1", "true", "yes")
    _check_meta(load_file(folder / spec.meta, spec, verify), folder / spec.meta, spec)
    return (*_split(spec, folder, spec.train, verify), *_split(spec, folder, spec.test, verify))


def _missing(spec: CifarFiles, folder: Path) -> list[str]:
    return [f for f in spec.files if not (folder / f).is_file()]


def _missing_message(spec: CifarFiles, root: Path, folder: Path, missing: list[str]) -> str:
    if len(missing) == len(spec.files):
        return (
            f"{spec.title} not found in {root}: put the python-version archive's folder "
            f"({spec.folder}/) there (from {SITE}), point --set data_dir=DIR at the folder "
            "holding it, or --set download=true when online"
        )
    return (
        f"{folder} lacks {', '.join(missing)}: re-extract {spec.archive} from {SITE}, or "
        "--set download=true when online"
    )


def _download(spec: CifarFiles, root: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    root.mkdir(parents=True, exist_ok=True)
    try:
        download_and_extract_archive(spec.url, root, filename=spec.archive, md5=spec.archive_md5)
    except (RuntimeError, OSError) as e:  # URLError is an OSError
        raise DatasetMissingError(
            f"could not download {spec.title} into {root} ({first_line(e)}): put the "
            f"python-version archive's folder ({spec.folder}/) there by hand (from {SITE})"
        ) from None


def _split(
    spec: CifarFiles, folder: Path, files: tuple[str, ...], verify: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [_batch(load_file(folder / f, spec, verify), folder / f, spec) for f in files]
    images = np.vstack([data for data, _ in parts]).reshape(-1, 3, 32, 32)  # a fresh copy
    labels = np.concatenate([labels for _, labels in parts]).astype(np.int64)
    return torch.from_numpy(images), torch.from_numpy(labels)


# -- one file ---------------------------------------------------------------------------------

_MD5: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> MD5 of its bytes


def load_file(path: Path, spec: CifarFiles, verify: bool) -> object:
    """A CIFAR file's object: MD5 checked (when ``verify``), then restricted unpickling."""
    data = read_bytes(path, spec.refetch)
    if verify:
        got, published = _md5(path, data), spec.md5[path.name]
        if got != published:
            raise DatasetMissingError(
                f"{path} is not the official {spec.title} file (MD5 {got}, published "
                f"{published}): {spec.refetch}; or set {ALLOW_CUSTOM}=1 to use your own data "
                "in this format"
            )
    try:
        return restricted_loads(data)
    except ForbiddenGlobal as e:
        raise DatasetMissingError(
            f"{path} is not a CIFAR file: its pickle asks for {e}, and CIFAR files hold only "
            f"dicts, lists, strings and numpy uint8 arrays; refusing to load it: {spec.refetch}"
        ) from None
    except Exception as e:  # noqa: BLE001 -- any failure to parse untrusted bytes means the same
        raise DatasetMissingError(
            f"{path} is truncated or not a CIFAR pickle ({type(e).__name__}: {first_line(e)}): "
            f"{spec.refetch}"
        ) from None


def _md5(path: Path, data: bytes) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _MD5:
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if stat.st_size != len(data):  # changed while we read it: do not remember
            return digest
        _MD5[key] = digest
    return _MD5[key]


def _batch(obj: object, path: Path, spec: CifarFiles) -> tuple[np.ndarray, np.ndarray]:
    """The (N, 3072) uint8 rows and N labels of one batch, checked."""
    entries = _entries(obj, path, spec)
    key = next((k for k in ("labels", "fine_labels") if k in entries), spec.label_key)
    _require(entries, ("data", key), path, spec)
    data = entries["data"]
    if not (type(data) is np.ndarray and data.dtype == np.uint8 and data.shape[1:] == (ROW,)):
        raise DatasetMissingError(
            f"{path}: 'data' must be a uint8 array of shape (N, {ROW}), not {_describe(data)}: "
            f"{spec.refetch}"
        )
    return data, _labels(entries[key], len(data), path, spec)


def _labels(raw: object, n: int, path: Path, spec: CifarFiles) -> np.ndarray:
    if isinstance(raw, list) and all(type(v) is int for v in raw):
        labels = np.asarray(raw, dtype=np.int64)
    elif type(raw) is np.ndarray and raw.dtype.kind in "iu" and raw.ndim == 1:
        labels = raw.astype(np.int64)
    else:
        raise DatasetMissingError(
            f"{path}: the labels must be a list of ints, not {_describe(raw)}: {spec.refetch}"
        )
    if len(labels) != n:
        raise DatasetMissingError(f"{path} has {n} images but {len(labels)} labels: {spec.refetch}")
    if n and not (0 <= labels.min() and labels.max() < spec.classes):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise DatasetMissingError(
            f"{path} has label {bad}, outside 0..{spec.classes - 1}: {spec.refetch}"
        )
    return labels


def _check_meta(obj: object, path: Path, spec: CifarFiles) -> None:
    entries = _entries(obj, path, spec)
    _require(entries, (spec.meta_key,), path, spec)
    names = entries[spec.meta_key]
    if not (
        isinstance(names, list)
        and len(names) == spec.classes
        and all(isinstance(x, str | bytes) for x in names)
    ):
        raise DatasetMissingError(
            f"{path}: {spec.meta_key!r} must list {spec.classes} class names, not "
            f"{_describe(names)}: {spec.refetch}"
        )


def _entries(obj: object, path: Path, spec: CifarFiles) -> dict[str, object]:
    """A file's dict with str keys (Python 2 wrote them as bytes)."""
    if not isinstance(obj, dict):
        raise DatasetMissingError(
            f"{path} is not a CIFAR file: it holds a {type(obj).__name__}, not a dict: "
            f"{spec.refetch}"
        )
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _require(entries: dict, keys: tuple[str, ...], path: Path, spec: CifarFiles) -> None:
    absent = [k for k in keys if k not in entries]
    if absent:
        raise DatasetMissingError(
            f"{path} is not a CIFAR file: it has no {', '.join(map(repr, absent))} (its keys: "
            f"{', '.join(sorted(map(str, entries)))[:80] or 'none'}): {spec.refetch}"
        )


def _describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.dtype} of shape {x.shape}"
    if isinstance(x, list):
        return f"a list of {len(x)} {'/'.join(sorted({type(v).__name__ for v in x})[:3])}"
    return f"a {type(x).__name__}"


# -- the restricted unpickler -----------------------------------------------------------------


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle asked for a global (a function or class) a CIFAR file never holds."""


def _latin1(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of bytes call it, and nothing else."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise ForbiddenGlobal(f"_codecs.encode with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1", errors)


@functools.cache
def _allowed() -> dict[tuple[str, str], object]:
    try:  # numpy >= 2 writes numpy._core; files written with numpy 1 (and the official
        from numpy._core import multiarray, numeric  # ones) name numpy.core
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    allowed[("_codecs", "encode")] = _latin1
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``_allowed()``; any other raises ``ForbiddenGlobal``."""

    def find_class(self, module: str, name: str) -> object:
        found = _allowed().get((module, name))
        if found is None:
            raise ForbiddenGlobal(f"{module}.{name}")
        return found


def restricted_loads(data: bytes) -> object:
    """Unpickle ``data`` with only the globals numpy arrays need (Python 2's str decoded as
    latin-1, as torchvision reads CIFAR)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
