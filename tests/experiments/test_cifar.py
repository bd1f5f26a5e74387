"""CIFAR-10/100 read without running code from the files: the restricted unpickler, the
published MD5 sums, and one line for every kind of bad file. The files are small ones in the
real format (the python-version archive's pickles)."""

from __future__ import annotations

import codecs
import io
import os
import pickle
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from netadv.cli import main
from netadv.experiments import cifar as cifar_mod
from netadv.experiments.cifar import ALLOW_CUSTOM, cifar, cifar_files
from netadv.experiments.data import DatasetMissingError, image_datasets

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.yaml"

NAMES = ("cifar10", "cifar100")


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2's str (BINSTRING), as the official files were written."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        head = bytes([n]) if n < 256 else struct.pack("<i", n)
        self.write((pickle.SHORT_BINSTRING if n < 256 else pickle.BINSTRING) + head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_dumps(obj: object) -> bytes:
    """A pickle like the official files: protocol 2, Python 2 str, numpy 1's module names."""
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def dumps(obj: dict, style: str) -> bytes:
    """``style``: "py2" (bytes keys, as the official files), or "p2"/"p4"/"p5" (Python 3
    pickles of str keys at that protocol: what a re-pack writes)."""
    if style == "py2":
        return py2_dumps({k.encode(): v for k, v in obj.items()})
    return pickle.dumps(obj, protocol=int(style[1]))


def write_cifar(root: Path, name: str, n_per_file: int = 20, style: str = "py2") -> Path:
    """Small files in the real CIFAR python format; returns the archive's folder."""
    spec = cifar_files(name)
    rng = np.random.default_rng(0)
    folder = root / spec.folder
    folder.mkdir(parents=True)
    label_key = "labels" if name == "cifar10" else "fine_labels"
    for f in spec.train + spec.test:
        batch = {
            "batch_label": b"training batch",
            label_key: rng.integers(0, spec.classes, n_per_file).tolist(),
            "data": rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8),
            "filenames": [b"x.png"] * n_per_file,
        }
        (folder / f).write_bytes(dumps(batch, style))
    names = {spec.meta_key: [f"c{i}" for i in range(spec.classes)], "num_vis": 3072}
    (folder / spec.meta).write_bytes(dumps(names, style))
    return folder


@pytest.fixture
def custom(monkeypatch):
    """Files that are not the official ones are accepted (the MD5 check is off)."""
    monkeypatch.setenv(ALLOW_CUSTOM, "1")


def torchvision_reading(root: Path, name: str, train: bool) -> tuple[torch.Tensor, ...]:
    """What the old code got: torchvision's class (plain pickle.load) with its MD5 check off."""
    from torchvision.datasets import CIFAR10, CIFAR100

    class Trusting(CIFAR10 if name == "cifar10" else CIFAR100):
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            pass

    ds = Trusting(str(root), train=train)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(ds.targets, dtype=torch.long)


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


# -- the data, as torchvision gave it ---------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("style", ["py2", "p2", "p4", "p5"])
def test_reads_what_torchvision_read(tmp_path, custom, name, style):
    write_cifar(tmp_path, name, style=style)
    xtr, ytr, xte, yte = cifar(name, tmp_path)
    for (x, y), train in (((xtr, ytr), True), ((xte, yte), False)):
        tx, ty = torchvision_reading(tmp_path, name, train)
        assert torch.equal(x, tx) and torch.equal(y, ty)
        assert x.dtype == torch.uint8 and y.dtype == torch.int64 and x.shape[1:] == (3, 32, 32)


@pytest.mark.parametrize("name, classes, n_train", [("cifar10", 10, 100), ("cifar100", 100, 20)])
def test_image_datasets_from_a_local_folder(tmp_path, custom, name, classes, n_train):
    write_cifar(tmp_path, name)
    data = image_datasets(name, tmp_path)
    assert (data.num_classes, data.in_chans, data.image_size) == (classes, 3, 32)
    assert len(data.train) == n_train and len(data.test) == 20
    x, y = data.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= int(y) < classes
    # test images are normalised with the training statistics, not augmented
    assert torch.equal(data.test[3][0], data.test[3][0])


# -- missing folders and files ----------------------------------------------------------------


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetMissingError) as e:
        image_datasets("cifar10", tmp_path)
    assert one_line(e) == (
        f"CIFAR-10 not found in {tmp_path}: put the python-version archive's folder "
        "(cifar-10-batches-py/) there (from https://www.cs.toronto.edu/~kriz/cifar.html), "
        "point --set data_dir=DIR at the folder holding it, or --set download=true when online"
    )
    assert "--data-dir" not in str(e.value) and list(tmp_path.iterdir()) == []


def test_a_folder_missing_some_files_names_them(tmp_path, custom):
    folder = write_cifar(tmp_path, "cifar10")
    (folder / "data_batch_3").unlink()
    (folder / "batches.meta").unlink()
    with pytest.raises(DatasetMissingError) as e:
        cifar("cifar10", tmp_path)
    assert one_line(e) == (
        f"{folder} lacks data_batch_3, batches.meta: re-extract cifar-10-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html, or --set download=true when online"
    )


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(url, root, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(DatasetMissingError) as e:
        cifar("cifar100", tmp_path, download=True)
    assert one_line(e).startswith(
        f"could not download CIFAR-100 into {tmp_path} (<urlopen error [Errno -3] Temporary "
        "failure in name resolution>): put the python-version archive's folder "
        "(cifar-100-python/) there by hand"
    )


def test_download_fetches_the_archive_then_reads_it(tmp_path, monkeypatch, custom):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake(url, root, filename=None, md5=None):
        calls.append((url, Path(root), filename, md5))
        write_cifar(Path(root), "cifar10", n_per_file=2)

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake)
    xtr, *_ = cifar("cifar10", tmp_path, download=True)
    assert calls == [
        (
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            tmp_path,
            "cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
        )
    ]
    assert xtr.shape == (10, 3, 32, 32)
    cifar("cifar10", tmp_path, download=True)  # present now: no second download
    assert len(calls) == 1


# -- the published MD5 sums -------------------------------------------------------------------


def test_files_that_are_not_the_official_ones_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_CUSTOM, raising=False)
    folder = write_cifar(tmp_path, "cifar10")
    with pytest.raises(DatasetMissingError) as e:
        cifar("cifar10", tmp_path)
    digest = cifar_mod.hashlib.md5((folder / "batches.meta").read_bytes()).hexdigest()
    assert one_line(e) == (
        f"{folder / 'batches.meta'} is not the official CIFAR-10 file (MD5 {digest}, published "
        "5ff9c542aee3614f3951f8cda6e48888): re-extract cifar-10-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html (or delete it and --set download=true); "
        "or set NETADV_ALLOW_CUSTOM_CIFAR=1 to use your own data in this format"
    )
    assert cifar("cifar10", tmp_path, verify=False)[0].shape == (100, 3, 32, 32)
    monkeypatch.setenv(ALLOW_CUSTOM, "1")
    assert cifar("cifar10", tmp_path)[0].shape == (100, 3, 32, 32)


def test_official_files_pass_and_their_digest_is_cached(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_CUSTOM, raising=False)
    folder = write_cifar(tmp_path, "cifar100")
    spec = cifar_files("cifar100")
    for f in spec.files:  # pretend these are the published files
        digest = cifar_mod.hashlib.md5((folder / f).read_bytes()).hexdigest()
        monkeypatch.setitem(spec.md5, f, digest)
    monkeypatch.setattr(cifar_mod, "_MD5", {})
    hashed = []
    real_md5 = cifar_mod.hashlib.md5
    monkeypatch.setattr(
        cifar_mod.hashlib, "md5", lambda data, **kw: hashed.append(len(data)) or real_md5(data)
    )
    first = cifar("cifar100", tmp_path)
    assert len(hashed) == 3
    assert all(torch.equal(a, b) for a, b in zip(first, cifar("cifar100", tmp_path)))
    assert len(hashed) == 3  # same path, size and mtime: not hashed again
    stat = (folder / "train").stat()
    os.utime(folder / "train", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    cifar("cifar100", tmp_path)
    assert len(hashed) == 4


# -- a CIFAR folder cannot run code -----------------------------------------------------------


class RunsCode:
    """What a malicious batch holds: unpickling it calls ``os.system``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Evals:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"__import__('pathlib').Path({str(self.marker)!r}).touch()",)


def _object_array(marker: Path) -> np.ndarray:
    a = np.empty(1, dtype=object)
    a[0] = RunsCode(marker)
    return a


ATTACKS = {
    "os.system": (lambda m: {"data": RunsCode(m), "labels": []}, "posix.system"),
    "builtins.eval": (lambda m: {"data": Evals(m), "labels": []}, "builtins.eval"),
    "in a label": (lambda m: {"data": np.zeros((1, 3072), np.uint8), "labels": [RunsCode(m)]}, ""),
    "in an object array": (lambda m: {"data": _object_array(m), "labels": [0]}, "posix.system"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_pickle_that_would_run_code_is_refused(tmp_path, custom, attack):
    build, asks = ATTACKS[attack]
    marker = tmp_path / "pwned"
    folder = write_cifar(tmp_path, "cifar10")
    (folder / "data_batch_2").write_bytes(pickle.dumps(build(marker)))
    with pytest.raises(DatasetMissingError) as e:
        cifar("cifar10", tmp_path)
    assert one_line(e).startswith(
        f"{folder / 'data_batch_2'} is not a CIFAR file: its pickle asks for {asks or 'posix'}"
    )
    assert "refusing to load it" in str(e.value)
    assert not marker.exists()


def test_without_the_override_the_md5_check_refuses_first(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_CUSTOM, raising=False)
    marker = tmp_path / "pwned"
    folder = write_cifar(tmp_path, "cifar10")
    for f in cifar_files("cifar10").files:
        (folder / f).write_bytes(pickle.dumps({"data": RunsCode(marker)}))
    with pytest.raises(DatasetMissingError, match="is not the official CIFAR-10 file"):
        cifar("cifar10", tmp_path)
    assert not marker.exists()


def test_cli_refuses_a_malicious_folder_in_one_line(tmp_path, custom, capsys):
    marker = tmp_path / "pwned"
    folder = write_cifar(tmp_path / "data", "cifar10")
    (folder / "test_batch").write_bytes(pickle.dumps({"data": RunsCode(marker)}))
    argv = [
        "train",
        "--config",
        str(SMOKE),
        "--set",
        "dataset=cifar10",
        "--set",
        f"data_dir={tmp_path / 'data'}",
    ]
    assert main([*argv, "--set", f"output_dir={tmp_path / 'runs'}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"netadv train: error: {folder / 'test_batch'} is not a CIFAR file")
    assert err.count("\n") == 1 and not marker.exists()


# -- truncated, empty and malformed files -----------------------------------------------------


def _batch(n: int = 20, **change) -> dict:
    batch = {"data": np.zeros((n, 3072), np.uint8), "labels": [0] * n}
    return {k: v for k, v in {**batch, **change}.items() if v is not None}


FULL = pickle.dumps(_batch())
BAD_FILES = {
    "empty": (b"", "is empty: re-extract cifar-10-python.tar.gz"),
    "cut mid-pickle": (
        FULL[: len(FULL) // 2],
        "is truncated or not a CIFAR pickle (UnpicklingError: pickle data was truncated)",
    ),
    "not a pickle": (b"<html>404</html>", "is truncated or not a CIFAR pickle"),
    "a list": (pickle.dumps([1, 2]), "is not a CIFAR file: it holds a list, not a dict"),
    "no data": (pickle.dumps(_batch(data=None)), "it has no 'data' (its keys: labels)"),
    "no labels": (pickle.dumps(_batch(labels=None)), "it has no 'labels' (its keys: data)"),
    "float data": (
        pickle.dumps(_batch(data=np.zeros((20, 3072)))),
        "'data' must be a uint8 array of shape (N, 3072), not float64 of shape (20, 3072)",
    ),
    "narrow data": (
        pickle.dumps(_batch(data=np.zeros((20, 1024), np.uint8))),
        "'data' must be a uint8 array of shape (N, 3072), not uint8 of shape (20, 1024)",
    ),
    "label out of range": (pickle.dumps(_batch(labels=[0] * 19 + [10])), "has label 10, outside"),
    "labels not ints": (
        pickle.dumps(_batch(labels=["cat"] * 20)),
        "must be a list of ints, not a list of 20 str",
    ),
    "too few labels": (pickle.dumps(_batch(labels=[0] * 19)), "has 20 images but 19 labels"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_batch_is_one_line_naming_the_file(tmp_path, custom, case):
    content, says = BAD_FILES[case]
    folder = write_cifar(tmp_path, "cifar10")
    (folder / "data_batch_4").write_bytes(content)
    with pytest.raises(DatasetMissingError) as e:
        cifar("cifar10", tmp_path)
    message = one_line(e)
    assert message.startswith(str(folder / "data_batch_4")) and says in message
    assert message.endswith(
        "re-extract cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
        "(or delete it and --set download=true)"
    )


@pytest.mark.parametrize(
    "meta, says",
    [
        (
            {"fine_label_names": ["a"] * 3},
            "'fine_label_names' must list 100 class names, not a list of 3 str",
        ),
        ({"coarse_label_names": ["a"] * 20}, "it has no 'fine_label_names'"),
    ],
)
def test_a_bad_meta_file_is_one_line(tmp_path, custom, meta, says):
    folder = write_cifar(tmp_path, "cifar100")
    (folder / "meta").write_bytes(pickle.dumps(meta))
    with pytest.raises(DatasetMissingError) as e:
        cifar("cifar100", tmp_path)
    assert one_line(e).startswith(f"{folder / 'meta'}") and says in str(e.value)


class EncodesAsHex:
    def __reduce__(self):
        return codecs.encode, ("x", "hex")


def test_codecs_encode_is_admitted_for_latin1_only(tmp_path, custom):
    """Python 3 writes bytes at protocol 2 as ``_codecs.encode(text, "latin1")``."""
    folder = write_cifar(tmp_path, "cifar10")
    assert b"c_codecs\nencode\n" in pickle.dumps(_batch(), protocol=2)
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": EncodesAsHex()}, protocol=2))
    with pytest.raises(DatasetMissingError, match=r"asks for _codecs\.encode with str, 'hex'"):
        cifar("cifar10", tmp_path)
