"""The run folder under fault injection: a resume with another config, damaged or foreign
checkpoints, a full disk, a read-only folder, a run already being trained. Each is one line
from ``netadv train`` (exit status 2) and loses nothing in the folder."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from netadv.cli import main
from netadv.experiments import run_folder
from netadv.experiments.loop import train
from netadv.experiments.report import load_run
from netadv.experiments.run_folder import CHECKPOINT, LOCK_FILE, RunFolderError


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a folder: its bytes and modification time."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def _cli(capsys, *argv: str) -> tuple[int, str]:
    """``netadv ARGV``: its exit status and its one line on stderr."""
    code = main(list(argv))
    err = capsys.readouterr().err
    assert err.count("\n") <= 1, err
    return code, err.strip()


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def finished(tmp_path, tiny) -> Path:
    """A finished 2-epoch run, ``a``."""
    train(tiny("name=a"), quiet=True)
    return tmp_path / "a"


# -- resume with the run's own config -------------------------------------------------------


@pytest.mark.parametrize(
    "override, named",
    [
        ("method=ga", "method (baseline -> ga)"),
        ("lr=0.01", "lr (0.001 -> 0.01)"),
        ("label=sa", "label (null -> sa)"),
        ("rewrite.period=2", "rewrite.period ((unset) -> 2)"),
        ("model_kwargs.width=64", "model_kwargs.width (32 -> 64)"),
        ("epochs=1", "epochs (2 -> 1: epochs can only be raised)"),
        ("threads=1", "threads (null -> 1)"),
    ],
)
def test_resume_with_another_config_is_refused_and_touches_nothing(
    finished, tiny_file, capsys, override, named
):
    before = _snapshot(finished)
    code, err = _cli(
        capsys, "train", "--config", str(tiny_file("name=a")), "--resume", "--set", override
    )
    assert code == 2
    assert err.startswith("netadv train: error: --resume: the config differs from the run's ")
    assert named in err and "raising epochs is the one change allowed" in err
    assert _snapshot(finished) == before


def test_config_yaml_lost_falls_back_to_the_checkpoints_config(finished, tiny):
    (finished / "config.yaml").unlink()
    with pytest.raises(ValueError, match=r"method \(baseline -> ga\)"):
        train(tiny("name=a", "method=ga"), resume=True, quiet=True)


def test_raising_epochs_extends_a_finished_run_and_says_so(finished, tiny, capsys):
    summary = train(tiny("name=a", "epochs=3"), resume=True, quiet=True)
    err = capsys.readouterr().err
    assert "[a] extending the run from 2 to 3 epochs: the cosine schedule now spans 3" in err
    assert summary["status"] == "ok" and summary["epochs_completed"] == 3
    assert _epochs(finished) == [1, 2, 3]
    assert yaml.safe_load((finished / "config.yaml").read_text())["epochs"] == 3


def test_a_copied_run_folder_resumes_under_its_new_name(finished, tiny, tmp_path):
    shutil.copytree(finished, tmp_path / "copy" / "b")
    summary = train(
        tiny("name=b", f"output_dir={tmp_path / 'copy'}", "epochs=3"), resume=True, quiet=True
    )
    assert summary["name"] == "b" and _epochs(tmp_path / "copy" / "b") == [1, 2, 3]


# -- damaged, foreign and unsafe checkpoints ------------------------------------------------


class _Unsafe:
    """Runs ``os.mkdir(marker)`` when unpickled: a checkpoint must never do that."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _damage(run: Path, how: str, tiny) -> str:
    """Damage ``run``'s checkpoint; returns what the message must say about it."""
    path = run / CHECKPOINT
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
        return "it is empty (0 bytes)"
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
        return "it is truncated, or not a torch checkpoint"
    if how == "random":
        path.write_bytes(os.urandom(4096))
        return "it is truncated, or not a torch checkpoint"
    if how == "unsafe":
        torch.save({"model": _Unsafe(run.parent / "pwned")}, path)
        return "it holds objects a netadv checkpoint never holds (not loaded: not safe)"
    if how == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
        return "it is not a netadv checkpoint"
    # shape mismatch: the checkpoint of a wider model under this run's config
    train(tiny("name=wide", "model_kwargs.width=64", "epochs=1"), quiet=True)
    shutil.copy(run.parent / "wide" / CHECKPOINT, path)
    return "does not fit this model (1.weight is [64, 256] there, [32, 256] here); resume with"


@pytest.mark.parametrize("how", ["empty", "truncated", "random", "unsafe", "foreign", "shape"])
def test_damaged_checkpoint_is_one_line_exit_2_and_nothing_lost(
    finished, tiny, tiny_file, capsys, how
):
    says = _damage(finished, how, tiny)
    before = _snapshot(finished)
    code, err = _cli(capsys, "train", "--config", str(tiny_file("name=a", "epochs=3")), "--resume")
    assert code == 2 and err.startswith("netadv train: error: ")
    assert str(finished / CHECKPOINT) in err and says in err
    assert "weights_only" not in err and "Re-running" not in err  # never torch's advice
    assert _snapshot(finished) == before
    assert not (finished.parent / "pwned").exists()  # the unsafe pickle was not executed


# -- a full disk, a read-only folder --------------------------------------------------------


def _failing_write(monkeypatch, error: int, name: str, call: int = 1) -> None:
    """Fault injection: the ``call``-th write of ``name`` (any file: "*") writes half its
    bytes, then fails with ``error`` naming no file (as write() and fsync() fail)."""
    write, calls = run_folder.write_file, []

    def failing(path: Path, data: bytes) -> None:
        if name in ("*", path.name):
            calls.append(1)
            if len(calls) == call:
                path.write_bytes(data[: len(data) // 2])
                raise OSError(error, os.strerror(error))
        write(path, data)

    monkeypatch.setattr(run_folder, "write_file", failing)


@pytest.mark.parametrize(
    "call, kept",
    [
        (2, "the checkpoint of epoch 1 is kept: free space, then continue with --resume"),
        (1, "no checkpoint was written yet: free space, then run it again"),
    ],
)
def test_full_disk_keeps_the_previous_checkpoint(
    tmp_path, tiny_file, capsys, monkeypatch, call, kept
):
    config = str(tiny_file("name=a"))
    _failing_write(monkeypatch, errno.ENOSPC, "checkpoint.pt.tmp", call)
    code, err = _cli(capsys, "train", "--quiet", "--config", config)
    run = tmp_path / "a"
    assert code == 2
    assert err == (
        f"netadv train: error: cannot write {run / CHECKPOINT}: no space left on device; {kept}"
    )
    assert not list(run.glob("*.tmp"))  # the partial file is gone
    if call == 2:
        assert torch.load(run / CHECKPOINT, weights_only=True)["epoch"] == 1
    else:
        assert not (run / CHECKPOINT).exists()

    # space again: the run continues (or starts again) and finishes
    monkeypatch.undo()
    again = ["--resume"] if call == 2 else []
    assert _cli(capsys, "train", "--quiet", "--config", config, *again) == (0, "")
    assert _epochs(run) == [1, 2]


def test_read_only_folder_is_one_line(tmp_path, tiny_file, capsys, monkeypatch):
    _failing_write(monkeypatch, errno.EROFS, "*")
    code, err = _cli(capsys, "train", "--quiet", "--config", str(tiny_file("name=a")))
    assert code == 2
    assert err == (
        f"netadv train: error: cannot write {tmp_path / 'a' / 'config.yaml'}: Read-only file "
        "system (a read-only folder?); make it writable, or set a writable output_dir "
        "(--set output_dir=DIR)"
    )


def test_read_only_output_dir_by_permissions(tmp_path, tiny_file, capsys, monkeypatch):
    """An output_dir whose permissions forbid creating the run folder. Root ignores permission
    bits (CI runs as root), so the denial mkdir meets there is injected, as the OS raises it."""
    config = str(tiny_file("name=a", f"output_dir={tmp_path / 'ro'}"))
    (tmp_path / "ro").mkdir(mode=0o555)
    mkdir = Path.mkdir

    def denied(self: Path, *args, **kwargs) -> None:
        if self.parent == tmp_path / "ro":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    code, err = _cli(capsys, "train", "--quiet", "--config", config)
    assert code == 2 and "Permission denied (a read-only folder?)" in err


# -- a run being trained --------------------------------------------------------------------


def test_a_run_being_trained_is_not_resumed_or_started_again(finished, tiny, tmp_path):
    with open(finished / LOCK_FILE) as lock:  # as the training process holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = _snapshot(finished)
        with pytest.raises(RunFolderError, match=r"a is being trained now \(pid \d+ on "):
            train(tiny("name=a", "epochs=3"), resume=True, quiet=True)
        assert _snapshot(finished) == before

        # a fresh run of the same name while the first is in its first epoch
        (tmp_path / "b").mkdir()
        shutil.copy(finished / LOCK_FILE, tmp_path / "b" / LOCK_FILE)
        with open(tmp_path / "b" / LOCK_FILE) as other:
            fcntl.flock(other, fcntl.LOCK_EX)
            with pytest.raises(RunFolderError, match="b is being trained now"):
                train(tiny("name=b"), quiet=True)
    # released: it resumes
    assert train(tiny("name=a", "epochs=3"), resume=True, quiet=True)["status"] == "ok"


@pytest.mark.slow
def test_sigkill_frees_the_lock_compare_reads_died_and_resume_works(tmp_path, tiny_file, tiny):
    """The lock is the process's: alive, compare reads the run as running; SIGKILLed, the
    system frees it, compare reads died, and the run resumes."""
    config = tiny_file("name=k", "epochs=40")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "netadv", "train", "--quiet", "--config", str(config)]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.PIPE)
    run = tmp_path / "k"
    try:
        deadline = time.monotonic() + 120
        while not (run / CHECKPOINT).exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        assert load_run(run).status == "running"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert load_run(run).status == "died"
    summary = train(tiny("name=k", "epochs=40"), resume=True, quiet=True)
    assert summary["status"] == "ok" and _epochs(run) == list(range(1, 41))
