"""A run's folder, ``<output_dir>/<name>``, and everything the loop writes to it.

``config.yaml`` (the config), ``metrics.jsonl`` (a row per epoch), ``checkpoint.pt`` (what a
resume needs, after the last finished epoch), ``summary.json`` (see
:func:`netadv.experiments.loop.summarise`), ``diagnostics.jsonl`` when asked for, and the
task's own files. The checkpoint and the summary are replaced atomically, so a run killed at
any moment resumes from its last finished epoch; metrics rows written after that checkpoint
are dropped on resume. Only rank 0 writes (the loop calls the writing methods there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netadv.errors import ConfigError
from netadv.experiments.config import RunConfig

CHECKPOINT = "checkpoint.pt"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
DIAGNOSTICS_FILE = "diagnostics.jsonl"


def checkpoint_state(
    model: nn.Module, optimizer, scheduler, epoch: int, elapsed: float, cfg: RunConfig
) -> dict[str, Any]:
    """What a resume needs after ``epoch`` (read back by :meth:`RunFolder.restore`)."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "elapsed": elapsed,
        "config": cfg.to_dict(),
    }


class RunFolder:
    """The folder of ``cfg``'s run. Refuses to start over a run (pass ``resume``) or to resume
    none: ConfigError, one line."""

    def __init__(self, cfg: RunConfig, *, main: bool, resume: bool):
        self.path = Path(cfg.output_dir) / cfg.name
        self.resume = resume
        checkpoint = self.file(CHECKPOINT)
        if main and not resume and checkpoint.exists():
            raise ConfigError(
                f"{self.path} already holds a run: pass --resume to continue it, or "
                "choose another name/output_dir"
            )
        if resume and not checkpoint.exists():
            raise ConfigError(f"--resume: no checkpoint in {self.path}")

    def file(self, name: str) -> Path:
        return self.path / name

    # -- resume -------------------------------------------------------------------------------

    def restore(self, model: nn.Module, optimizer, scheduler) -> tuple[int, float, list[dict]]:
        """Load the checkpoint into the model, optimizer and schedule; returns the epoch to
        continue with, the train seconds so far and the metrics rows up to the checkpoint."""
        state = self._load_checkpoint()
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        return state["epoch"] + 1, state["elapsed"], self._metrics_upto(state["epoch"])

    def _load_checkpoint(self) -> dict:
        path = self.file(CHECKPOINT)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated or foreign file
            raise ConfigError(
                f"cannot load checkpoint {path}: {str(e).splitlines()[0]}; remove it to start "
                "over, or resume from a copy"
            ) from None

    def _metrics_upto(self, epoch: int) -> list[dict]:
        """The metrics rows of epochs up to ``epoch`` (a line cut by a kill ends them)."""
        path = self.file(METRICS_FILE)
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
        """The folder, config.yaml, and metrics.jsonl holding ``history`` (the rows kept on
        resume; none on a fresh run)."""
        self.path.mkdir(parents=True, exist_ok=True)
        cfg.save(self.file(CONFIG_FILE))
        self.file(METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in history))

    def record_epoch(
        self, row: dict, summary: dict, files: dict[str, str], checkpoint: dict
    ) -> None:
        """The end of an epoch: the task's files of it, the metrics row appended, then the
        checkpoint and the summary, each replaced atomically."""
        for name, text in files.items():
            self.write_text(name, text)
        with open(self.file(METRICS_FILE), "a") as f:
            f.write(json.dumps(row) + "\n")
        tmp = self.file(CHECKPOINT).with_suffix(".tmp")
        torch.save(checkpoint, tmp)
        tmp.replace(self.file(CHECKPOINT))  # a kill mid-write leaves the previous one intact
        self.write_summary(summary)

    def write_summary(self, summary: dict) -> None:
        self.write_json(SUMMARY_FILE, summary)

    def write_json(self, name: str, data: Any) -> None:
        self.write_text(name, json.dumps(data, indent=2))

    def write_text(self, name: str, text: str) -> None:
        """Replace ``name`` atomically (written to ``name.tmp`` first)."""
        path = self.file(name)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
