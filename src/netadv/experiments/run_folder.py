"""A run's folder, ``<output_dir>/<name>``, and everything the loop writes to it.

``config.yaml`` (the config), ``metrics.jsonl`` (a row per epoch), ``checkpoint.pt`` (what a
resume needs, after the last finished epoch: weights, optimizer, schedule, loss scaler and
every rank's random state), ``summary.json`` (see :func:`netadv.experiments.loop.summarise`),
``diagnostics.jsonl`` when asked for, ``train.lock`` (held by the training process, so
``compare`` can tell a run that died from one still running), and the task's own files.

The checkpoint and the summary are replaced atomically, so a run killed at any moment resumes
from its last finished epoch; the metrics and diagnostics rows written after that checkpoint
are dropped on resume. A resume must use the run's own config (raising ``epochs`` is the one
change allowed), checked before anything in the folder is touched. Only rank 0 writes (the
loop calls the writing methods there). A full disk, a read-only folder or a damaged
checkpoint is a :class:`RunFolderError`, one line saying what to do.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import socket
import time
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
import yaml
from torch import nn

from netadv.errors import ConfigError
from netadv.experiments.config import RunConfig, differences

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked, and compare cannot tell a dead run
    fcntl = None  # type: ignore[assignment]

CHECKPOINT = "checkpoint.pt"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
DIAGNOSTICS_FILE = "diagnostics.jsonl"
STEPS_FILE = "steps.jsonl"  # one row per epoch: the training loss of each of its steps
LOCK_FILE = "train.lock"
STEP_LOGS = (DIAGNOSTICS_FILE, STEPS_FILE)  # appended to during an epoch; trimmed to the checkpoint
# config keys that locate the folder rather than shape the run (a copied folder resumes)
LOCATION_KEYS = ("name", "output_dir")
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


class RunFolderError(ValueError):
    """A run folder cannot be written (full disk, read-only) or resumed from (a damaged or
    foreign checkpoint, another process training it); the message says what to do."""


def checkpoint_state(
    model: dict[str, Any],
    optimizer: dict[str, Any],
    scheduler,
    *,
    scaler: torch.amp.GradScaler,
    rng: list[dict[str, Any]],
    epoch: int,
    elapsed: float,
    cfg: RunConfig,
) -> dict[str, Any]:
    """What a resume needs after ``epoch`` (read back by :meth:`RunFolder.restore`): the full
    state dicts of the model and optimizer (whatever the strategy), the schedule's and
    scaler's; ``rng`` holds every rank's random state
    (:func:`netadv.experiments.rng.capture`), in rank order."""
    return {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng,
        "world": len(rng),
        "epoch": epoch,
        "elapsed": elapsed,
        "config": cfg.to_dict(),
    }


@dataclass
class Resumed:
    """What a checkpoint gives back to the loop."""

    epoch: int  # the last finished epoch
    elapsed: float  # train seconds up to it
    history: list[dict]  # the metrics rows up to it
    scaler: dict[str, Any]  # the AMP loss scaler's state ({} when it was off)
    rng: dict[str, Any] | None  # this rank's random state (None: a checkpoint without it)


class RunFolder:
    """The folder of ``cfg``'s run. Refuses to start over a run (pass ``resume``), to resume
    none, to resume with another config, or while another process trains it: one line."""

    def __init__(self, cfg: RunConfig, *, main: bool, resume: bool):
        self.path = Path(cfg.output_dir) / cfg.name
        self.resume = resume
        self.main = main
        self.saved_epoch = 0  # the epoch of the checkpoint on disk (0: none)
        self.extended_from: int | None = None  # the recorded epochs, when cfg raises them
        self._lock: IO | None = None
        checkpoint = self.file(CHECKPOINT)
        if main and not resume and checkpoint.exists():
            raise ConfigError(
                f"{self.path} already holds a run: pass --resume to continue it, or "
                "choose another name/output_dir"
            )
        if resume:
            if not checkpoint.exists():
                raise ConfigError(f"--resume: no checkpoint in {self.path}")
            self.extended_from = self._check_same_config(cfg)
            if main and is_training(self.path):
                raise RunFolderError(self._busy())

    def file(self, name: str) -> Path:
        return self.path / name

    # -- resume -------------------------------------------------------------------------------

    def _check_same_config(self, cfg: RunConfig) -> int | None:
        """Refuse a config that differs from the run's recorded one (ConfigError naming the
        keys); returns the recorded epochs when ``cfg`` raises them, else None."""
        recorded = {**RunConfig().to_dict(), **self._recorded_config()}  # older: defaults
        changed = differences(recorded, cfg.to_dict())
        for key in LOCATION_KEYS:
            changed.pop(key, None)
        before, after = changed.pop("epochs", (None, None))
        problems = [f"{key} ({_show(a)} -> {_show(b)})" for key, (a, b) in changed.items()]
        if before is not None and after < before:
            problems.append(f"epochs ({before} -> {after}: epochs can only be raised)")
        if problems:
            raise ConfigError(
                f"--resume: the config differs from the run's {self.file(CONFIG_FILE)} in "
                f"{', '.join(problems)}; resume with the run's own config (raising epochs is "
                "the one change allowed), or start a new run under another name (--set name=...)"
            )
        return before

    def _recorded_config(self) -> dict[str, Any]:
        """config.yaml, or the checkpoint's copy when config.yaml is missing or damaged."""
        try:
            data = yaml.safe_load(self.file(CONFIG_FILE).read_text())
        except (OSError, ValueError, yaml.YAMLError):
            data = None
        if not isinstance(data, dict):
            data = self._load_checkpoint().get("config")
        if not isinstance(data, dict):
            raise RunFolderError(
                f"--resume: {self.path} records no config (config.yaml is missing and the "
                "checkpoint has none); start a new run under another name (--set name=...)"
            )
        return data

    def restore(
        self, model: nn.Module, optimizer, scheduler, rank: int, world: int, strategy
    ) -> Resumed:
        """Load the checkpoint into the model and optimizer (through ``strategy``'s
        ``load_model`` and ``load_optimizer``: :mod:`netadv.experiments.parallel`) and the
        schedule; returns the rest of what it holds (this rank's random state among it)."""
        state = self._load_checkpoint()
        path = self.file(CHECKPOINT)
        saved_world = state.get("world", world)
        if saved_world != world:
            raise RunFolderError(
                f"{path} was written by a run of {saved_world} process(es); resume it with "
                f"as many (torchrun --nproc_per_node={saved_world}, or without torchrun for "
                f"1), not {world}"
            )
        _load_states(path, state, (model, optimizer, scheduler), strategy)
        self.saved_epoch = state["epoch"]
        rng = state.get("rng")
        return Resumed(
            state["epoch"],
            state["elapsed"],
            self._rows_upto(METRICS_FILE, state["epoch"]),
            state.get("scaler") or {},
            rng[rank] if rng else None,
        )

    def _load_checkpoint(self) -> dict:
        """The checkpoint, loaded without running code; a damaged or foreign file is a
        RunFolderError naming it."""
        return read_checkpoint(
            self.file(CHECKPOINT),
            "cannot resume from {path}: {why}; start a new run under another name "
            f"(--set name=...), or remove {self.path} to start this one over",
        )

    def _rows_upto(self, name: str, epoch: int) -> list[dict]:
        """The rows of a JSONL log of epochs up to ``epoch`` (a line cut by a kill ends them)."""
        path = self.file(name)
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            if row["epoch"] <= epoch:
                rows.append(row)
        return rows

    # -- writing (rank 0) ---------------------------------------------------------------------

    def start(self, cfg: RunConfig, history: list[dict]) -> None:
        """The folder and its lock, config.yaml, metrics.jsonl holding ``history`` (the rows
        kept on resume; none on a fresh run), and the step logs cut to the checkpoint."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        if not self.resume and self.file(CHECKPOINT).exists():  # another process got here first
            raise ConfigError(f"{self.path} already holds a run: choose another name/output_dir")
        self.write_text(CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        self.write_text(METRICS_FILE, _jsonl(history))
        for name in STEP_LOGS:
            kept = self._rows_upto(name, self.saved_epoch)
            if kept or self.file(name).exists():
                self.write_text(name, _jsonl(kept))

    def record_epoch(
        self,
        row: dict,
        summary: dict,
        files: dict[str, str],
        checkpoint: dict | None,
        steps: dict | None = None,
    ) -> None:
        """The end of an epoch: the task's files of it, its per-step losses and its metrics row
        appended, then the checkpoint (None: keep the previous one) and the summary, each
        replaced atomically."""
        for name, text in files.items():
            self.write_text(name, text)
        if steps is not None:
            self.append_row(STEPS_FILE, steps)
        self.append_row(METRICS_FILE, row)
        if checkpoint is not None:
            buffer = io.BytesIO()  # serialised first: a full disk fails in write(), with ENOSPC
            torch.save(checkpoint, buffer)
            self.write_bytes(CHECKPOINT, buffer.getvalue())
            self.saved_epoch = checkpoint["epoch"]
        self.write_summary(summary)

    def append_row(self, name: str, row: dict) -> None:
        """One JSON row appended to a JSONL log of the run."""
        with _naming(self.file(name)), open(self.file(name), "a") as f:
            f.write(json.dumps(row) + "\n")

    def write_summary(self, summary: dict) -> None:
        self.write_json(SUMMARY_FILE, summary)

    def write_json(self, name: str, data: Any) -> None:
        self.write_text(name, json.dumps(data, indent=2))

    def write_text(self, name: str, text: str) -> None:
        """Replace ``name`` atomically (see :meth:`write_bytes`)."""
        self.write_bytes(name, text.encode())

    def write_bytes(self, name: str, data: bytes) -> None:
        """Replace ``name`` atomically: written to ``name.tmp`` and flushed to the disk, then
        renamed over it. A failed write removes the temp file; the previous file stays."""
        path = self.file(name)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with _naming(path):
                write_file(tmp, data)
                tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # -- the lock and the disk ----------------------------------------------------------------

    def _take_lock(self) -> None:
        """Hold train.lock while this process trains (released at exit, however it ends)."""
        if fcntl is None:
            return
        lock = open(self.file(LOCK_FILE), "a+")
        for _ in range(20):  # a compare may hold it for a moment
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.05)
        else:
            lock.close()
            raise RunFolderError(self._busy())
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        lock.flush()
        self._lock = lock

    def _busy(self) -> str:
        try:
            who = self.file(LOCK_FILE).read_text().strip() or "another process"
        except OSError:
            who = "another process"
        return f"{self.path} is being trained now ({who}): wait for it, or choose another name"

    def close(self) -> None:
        """Release the lock (the training process is done with the folder)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @contextmanager
    def disk_errors(self) -> Iterator[None]:
        """A full disk or a read-only run folder met inside becomes a RunFolderError."""
        try:
            yield
        except OSError as e:
            error = self._disk_error(e)
            if error is None:
                raise
            raise error from None

    def _disk_error(self, e: OSError) -> RunFolderError | None:
        where = Path(e.filename) if isinstance(e.filename, str) else self.path
        if where.suffix == ".tmp":  # the file being replaced is the one to name
            where = where.with_suffix("")
        if e.errno in NO_SPACE:
            kept = (
                f"the checkpoint of epoch {self.saved_epoch} is kept: free space, then continue "
                "with --resume"
                if self.saved_epoch
                else "no checkpoint was written yet: free space, then run it again"
            )
            return RunFolderError(f"cannot write {where}: no space left on device; {kept}")
        mine = self.path.resolve()
        inside = where.resolve() == mine or mine in where.resolve().parents
        if e.errno in NOT_WRITABLE and (inside or where.resolve() in mine.parents):
            return RunFolderError(
                f"cannot write {where}: {e.strerror or 'not writable'} (a read-only folder?); "
                "make it writable, or set a writable output_dir (--set output_dir=DIR)"
            )
        return None


def read_checkpoint(path: Path, message: str) -> dict:
    """A netadv checkpoint loaded without running code (``weights_only``); a damaged, foreign
    or unsafe file is a RunFolderError: ``message`` formatted with its ``path`` and ``why``."""
    why = None
    try:
        if path.stat().st_size == 0:
            why = "it is empty (0 bytes)"
        elif not zipfile.is_zipfile(path):  # torch writes a zip archive
            why = "it is truncated, or not a torch checkpoint"
        else:
            with warnings.catch_warnings():  # torch's note on the pickle protocol
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        why = "it holds objects a netadv checkpoint never holds (not loaded: not safe)"
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError):
        why = "it is damaged (a torch archive that does not load)"
    except OSError as e:
        why = f"it cannot be read ({e.strerror})"
    if why is None and not (
        isinstance(state, dict)
        and {"model", "optimizer", "scheduler", "epoch", "elapsed"} <= state.keys()
        and isinstance(state["model"], dict)
    ):
        why = "it is not a netadv checkpoint (no model, optimizer and epoch in it)"
    if why is not None:
        raise RunFolderError(message.format(path=path, why=why))
    return state


def initial_weights(model: nn.Module, source: str) -> int:
    """Load the final weights of the run folder (or checkpoint file) ``source`` into ``model``,
    the same base architecture; returns the epoch they are from."""
    path = Path(source)
    path = path / CHECKPOINT if path.is_dir() else path
    if not path.exists():
        raise ConfigError(f"init_from={source}: no checkpoint there ({path} does not exist)")
    fix = "give a run folder of the same model before any rewrite (a baseline run)"
    state = read_checkpoint(path, "init_from: cannot start from {path}: {why}; " + fix)
    try:
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
    except RuntimeError:  # a size mismatch
        raise ConfigError(
            f"init_from={source}: its weights do not fit this model "
            f"({_mismatch(model, state['model'])}); {fix}"
        ) from None
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise ConfigError(
            f"init_from={source}: its weights do not fit this model ({first} is "
            f"{'missing there' if missing else 'not in this model'}); {fix}"
        )
    return int(state["epoch"])


def is_training(folder: Path) -> bool | None:
    """Whether a process holds the run's train.lock, i.e. is training it; None when the folder
    has no lock (written by a netadv that did not lock, or on a system without flock)."""
    if fcntl is None:
        return None
    try:
        with open(Path(folder) / LOCK_FILE) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False  # closing the file releases the shared lock
    except FileNotFoundError:
        return None


def write_file(path: Path, data: bytes) -> None:
    """``data`` to ``path``, flushed to the disk (so a full disk fails here, with ENOSPC)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An OSError inside that names no file (a write() or fsync() on a full disk) names
    ``path``."""
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e


def _load_states(path: Path, state: dict, into: tuple, strategy) -> None:
    """The checkpoint's states into the model, optimizer and schedule (``into``), or a
    RunFolderError saying why they do not fit."""
    model, optimizer, scheduler = into
    fix = (
        "resume with the config the checkpoint was made with, or start a new run under "
        "another name (--set name=...)"
    )
    try:
        strategy.load_model(model, state["model"])
    except RuntimeError:
        raise RunFolderError(
            f"{path} does not fit this model ({_mismatch(model, state['model'])}); {fix}"
        ) from None
    try:
        strategy.load_optimizer(model, optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (ValueError, KeyError, IndexError, RuntimeError, TypeError):
        raise RunFolderError(
            f"{path}: its optimizer state does not fit this model's parameters; {fix}"
        ) from None


def _mismatch(model: nn.Module, saved: dict[str, Any]) -> str:
    """The first difference between a model's tensors and a checkpoint's, in words."""
    own = model.state_dict()
    for key, tensor in own.items():
        if key not in saved:
            return f"it has no {key}"
        shape = tuple(getattr(saved[key], "shape", ()))
        if shape != tuple(tensor.shape):
            return f"{key} is {list(shape)} there, {list(tensor.shape)} here"
    extra = [key for key in saved if key not in own]
    return f"it has {extra[0]}, which this model lacks" if extra else "its tensors differ"


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
