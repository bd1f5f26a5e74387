"""Fashion-MNIST read in place from its IDX files (the same tensors torchvision gave), a
``data_dir`` that must exist, and one line for every kind of bad file."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from netadv.cli import main
from netadv.errors import ConfigError
from netadv.experiments import fashion as fashion_mod
from netadv.experiments.data import DatasetMissingError, fashion_mnist_tensors, image_datasets
from netadv.experiments.fashion import DEBIAN, FILES, fashion_mnist

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.yaml"

CIFAR_SITE = "https://www.cs.toronto.edu/~kriz/cifar.html"
HAS_DEBIAN = all((DEBIAN / f"{f}.gz").is_file() for f in FILES)
REFETCH = (
    "replace it with an intact copy from https://github.com/zalandoresearch/fashion-mnist "
    "(or delete it and --set download=true when online)"
)


def idx(values: np.ndarray) -> bytes:
    """A uint8 IDX file of ``values``."""
    head = bytes([0, 0, 8, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape)
    return head + values.astype(np.uint8).tobytes()


def write_fashion(root: Path, n_train: int = 6, n_test: int = 4, gz: bool = False) -> dict:
    """Small IDX files in torchvision's layout (``root/FashionMNIST/raw``); returns their
    arrays by file name."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        arrays[f"{split}-images-idx3-ubyte"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}-labels-idx1-ubyte"] = rng.integers(0, 10, n, dtype=np.uint8)
    for name, values in arrays.items():
        data = idx(values)
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / name).write_bytes(data)
    return arrays


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    """As on a machine without Debian's dataset-fashion-mnist package."""
    monkeypatch.setattr(fashion_mod, "DEBIAN", tmp_path / "no-debian")
    monkeypatch.setenv("NETADV_DATA", str(tmp_path / "cache"))


def one_line(e: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(e.value)
    return str(e.value)


# -- the data: in place, and the same tensors as before ---------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not HAS_DEBIAN, reason="needs Debian's dataset-fashion-mnist")
def test_debian_files_are_read_in_place_as_torchvision_read_them(tmp_path, monkeypatch):
    from torchvision.datasets import FashionMNIST

    cache = tmp_path / "cache"
    monkeypatch.setenv("NETADV_DATA", str(cache))
    ours = fashion_mnist()
    assert not cache.exists()  # nothing staged or copied
    raw = tmp_path / "staged" / "FashionMNIST" / "raw"  # the old code's copy
    raw.mkdir(parents=True)
    for f in FILES:
        with gzip.open(DEBIAN / f"{f}.gz") as src, open(raw / f, "wb") as dst:
            shutil.copyfileobj(src, dst)
    for i, train in enumerate((True, False)):
        ds = FashionMNIST(str(tmp_path / "staged"), train=train)
        assert torch.equal(ours[2 * i], ds.data.unsqueeze(1))
        assert torch.equal(ours[2 * i + 1], ds.targets) and ours[2 * i + 1].dtype == torch.int64
    assert ours[0].shape == (60000, 1, 28, 28) and ours[2].shape == (10000, 1, 28, 28)
    # a data_dir holding the decompressed copy gives the same tensors
    staged = fashion_mnist(tmp_path / "staged")
    assert all(torch.equal(a, b) for a, b in zip(ours, staged))


def test_uint8_images_are_what_the_float_round_trip_gave():
    """The old path went uint8 -> float/255 -> *255, round -> uint8: exact for every value."""
    values = torch.arange(256, dtype=torch.uint8)
    assert torch.equal((values.to(torch.float32).div_(255) * 255).round().to(torch.uint8), values)


@pytest.mark.parametrize("gz", [False, True])
def test_a_data_dir_in_torchvisions_layout(tmp_path, gz, no_debian):
    arrays = write_fashion(tmp_path, gz=gz)
    xtr, ytr, xte, yte = fashion_mnist(tmp_path)
    assert np.array_equal(xtr[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(ytr.numpy(), arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(xte[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert ytr.dtype == torch.int64 and xtr.dtype == torch.uint8
    train, test = fashion_mnist_tensors(tmp_path)
    assert torch.equal(train.tensors[0], xtr.float() / 255) and len(test) == 4
    data = image_datasets("fashion-mnist", tmp_path, augment=False)
    assert torch.equal(data.train.images, xtr) and data.num_classes == 10


# -- data_dir ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset, holds",
    [
        (
            "fashion-mnist",
            "FashionMNIST/raw/*-ubyte (or *-ubyte.gz); or leave data_dir unset to read Debian's "
            "dataset-fashion-mnist package",
        ),
        ("cifar10", f"cifar-10-batches-py/ (the python-version archive from {CIFAR_SITE})"),
        ("cifar100", f"cifar-100-python/ (the python-version archive from {CIFAR_SITE})"),
    ],
)
def test_mistyped_data_dir_is_an_error_and_is_not_created(tmp_path, dataset, holds):
    typo = tmp_path / "dtaa"
    with pytest.raises(ConfigError) as e:
        image_datasets(dataset, typo, download=True)
    assert one_line(e) == (
        f"data_dir {typo} does not exist: --set data_dir=DIR must name an existing folder "
        f"holding {holds}"
    )
    assert not typo.exists()


def test_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"data_dir .*/f is not a folder: --set data_dir=DIR"):
        fashion_mnist(tmp_path / "f")


def test_cli_mistyped_data_dir_exits_2_with_one_line(tmp_path, capsys):
    typo = tmp_path / "typo"
    argv = [
        "train",
        "--config",
        str(SMOKE),
        "--set",
        "dataset=fashion-mnist",
        "--set",
        f"data_dir={typo}",
    ]
    assert main([*argv, "--set", f"output_dir={tmp_path / 'runs'}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"netadv train: error: data_dir {typo} does not exist: --set data_dir=")
    assert err.count("\n") == 1 and not typo.exists()


def test_nowhere_to_be_found_names_flags_that_exist(tmp_path, no_debian):
    with pytest.raises(DatasetMissingError) as e:
        fashion_mnist(tmp_path)
    raw = tmp_path / "FashionMNIST" / "raw"
    assert one_line(e) == (
        f"Fashion-MNIST not found in {raw} or {tmp_path / 'no-debian'}: install it with "
        "`apt-get install dataset-fashion-mnist` (Debian), point --set data_dir=DIR at a "
        "folder holding FashionMNIST/raw/*-ubyte, or --set download=true when online"
    )
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing created


def test_download_failure_is_one_line(tmp_path, monkeypatch, no_debian):
    import torchvision.datasets.utils as tv_utils

    def offline(url, root, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(DatasetMissingError) as e:
        fashion_mnist(tmp_path, download=True)
    assert one_line(e).startswith(
        "could not download Fashion-MNIST's train-images-idx3-ubyte.gz into "
        f"{tmp_path / 'FashionMNIST' / 'raw'} (<urlopen error [Errno -3] Temporary failure"
    )


def test_download_into_the_cache(tmp_path, monkeypatch, no_debian):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake(url, root, filename=None, md5=None):
        calls.append((url, md5))
        if len(calls) == 4:  # the archive holds all four; write them once
            shutil.rmtree(Path(root).parent)
            write_fashion(Path(root).parent.parent, gz=True)

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake)
    xtr, *_ = fashion_mnist(download=True)
    assert [url.rsplit("/", 1)[1] for url, _ in calls] == [f"{f}.gz" for f in FILES]
    assert calls[0][1] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d" and xtr.shape == (6, 1, 28, 28)
    assert (tmp_path / "cache" / "FashionMNIST" / "raw" / f"{FILES[0]}.gz").is_file()


# -- bad files --------------------------------------------------------------------------------

IMAGES = "train-images-idx3-ubyte"
LABELS = "train-labels-idx1-ubyte"
GOOD = idx(np.zeros((6, 28, 28), np.uint8))
BAD_FILES = {
    "empty": (IMAGES, b"", "is empty"),
    "cut": (IMAGES, GOOD[:1000], "is truncated (1000 bytes; its header promises 4720)"),
    "cut header": (IMAGES, GOOD[:10], "is truncated (10 bytes; its header is cut)"),
    "not idx": (IMAGES, b"<html>404</html>", "is not a uint8 IDX file with 3 dimension(s)"),
    "trailing": (IMAGES, GOOD + b"xx", "has 2 bytes more than its header (shape (6, 28, 28))"),
    "no values": (IMAGES, idx(np.zeros((0, 28, 28), np.uint8)), "holds no values"),
    "labels 2-D": (LABELS, GOOD, "is not a uint8 IDX file with 1 dimension(s)"),
    "too few labels": (LABELS, idx(np.zeros(5, np.uint8)), "6 images but"),
    "label 10": (LABELS, idx(np.array([0, 1, 2, 3, 4, 10], np.uint8)), "has label 10, outside"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_one_line_naming_it(tmp_path, case, no_debian):
    name, content, says = BAD_FILES[case]
    write_fashion(tmp_path)
    path = tmp_path / "FashionMNIST" / "raw" / name
    path.write_bytes(content)
    with pytest.raises(DatasetMissingError) as e:
        fashion_mnist(tmp_path)
    message = one_line(e)
    assert says in message and str(path) in message and message.endswith(REFETCH)


@pytest.mark.parametrize(
    "content, says",
    [(b"not gzip", "Not a gzipped file"), (gzip.compress(GOOD)[:30], "Compressed file ended")],
    ids=["not gzip", "cut"],
)
def test_a_bad_gzip_file_is_one_line(tmp_path, content, says, no_debian):
    write_fashion(tmp_path, gz=True)
    path = tmp_path / "FashionMNIST" / "raw" / f"{IMAGES}.gz"
    path.write_bytes(content)
    with pytest.raises(DatasetMissingError) as e:
        fashion_mnist(tmp_path)
    assert one_line(e).startswith(f"{path} is not a readable gzip file (") and says in str(e.value)


def test_a_folder_holding_part_of_the_files(tmp_path):
    write_fashion(tmp_path)
    raw = tmp_path / "FashionMNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetMissingError) as e:
        fashion_mnist(tmp_path)
    assert one_line(e) == (
        f"{raw} holds only part of Fashion-MNIST (no t10k-labels-idx1-ubyte): copy the missing "
        "files there from https://github.com/zalandoresearch/fashion-mnist, or --set "
        "download=true when online"
    )


def test_download_completes_a_folder_holding_part_of_the_files(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    write_fashion(tmp_path, gz=True)
    raw = tmp_path / "FashionMNIST" / "raw"
    gone = raw / "t10k-labels-idx1-ubyte.gz"
    kept = gone.read_bytes()
    gone.unlink()
    fetched = []

    def fake(url, root, filename=None, md5=None):
        fetched.append(filename)
        if filename == gone.name:
            gone.write_bytes(kept)

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake)
    assert fashion_mnist(tmp_path, download=True)[3].shape == (4,)
    assert gone.name in fetched


def test_a_bad_debian_file_says_reinstall(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    write_fashion(tmp_path, gz=True)
    (tmp_path / "FashionMNIST" / "raw").rename(debian)
    (debian / f"{IMAGES}.gz").write_bytes(b"")
    monkeypatch.setattr(fashion_mod, "DEBIAN", debian)
    monkeypatch.setenv("NETADV_DATA", str(tmp_path / "cache"))
    with pytest.raises(DatasetMissingError) as e:
        fashion_mnist()
    assert one_line(e) == (
        f"{debian / IMAGES}.gz is empty: reinstall it with "
        "`apt-get install --reinstall dataset-fashion-mnist`"
    )
