"""Opt-in TensorBoard logging (``tensorboard: true``) into ``<run folder>/tensorboard/``.

Rank 0 writes, every tag against the training step (0-based, the step's index in the run):

- ``train/loss``, ``train/lr``: each step's training loss (rank 0's batch, as steps.jsonl) and
  the learning rate it was taken with;
- ``epoch/<key>``: every number of an epoch's metrics row (``epoch/test_top1``,
  ``epoch/seconds``, ...), at the epoch's last step (a fine-tuning run's epoch 0 at step 0);
- with diagnostics on, at each diagnostics row's step: ``diagnostics/gain`` (a histogram over
  the activation sites of each one's gain), ``diagnostics/grad_norm`` (a histogram over the
  weight layers of each one's gradient norm) and ``diagnostics/gain_product`` (the product
  of the gains over depth, a scalar);
- ``config``: the run's config as YAML text, at the step it starts from.

A resumed run opens its writer with ``purge_step`` at the checkpoint's step, so TensorBoard
drops what the killed run wrote after the checkpoint rather than showing it twice.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import yaml

from netadv.errors import ConfigError
from netadv.experiments.config import RunConfig
from netadv.experiments.run_folder import RunFolder

TENSORBOARD_DIR = "tensorboard"


class Tracker:
    """A run's TensorBoard writer (rank 0)."""

    def __init__(self, writer):
        self.writer = writer

    @classmethod
    def open(cls, cfg: RunConfig, run: RunFolder, start_step: int) -> Tracker:
        """A writer into the run folder that continues at ``start_step`` (0: a new run)."""
        try:  # an optional package (netadv[tracking]), imported only by runs that ask for it
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "tensorboard=true needs the tensorboard package: pip install "
                "'netadv[tracking]' (or tensorboard==2.21.0), or set tensorboard=false"
            ) from None
        writer = SummaryWriter(str(run.file(TENSORBOARD_DIR)), purge_step=start_step or None)
        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        # indented: a code block in TensorBoard's markdown
        writer.add_text(
            "config", "".join(f"    {line}\n" for line in text.splitlines()), start_step
        )
        return cls(writer)

    def step(self, step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def epoch(self, row: dict[str, Any], step: int) -> None:
        """An epoch's metrics row at its last ``step``; written to disk now."""
        for key, value in row.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(f"epoch/{key}", value, step)
        self.writer.flush()

    def diagnostics(self, row: dict[str, Any]) -> None:
        """A diagnostics row (:class:`netadv.diagnostics.Diagnostics`) at its step."""
        step = row["step"]
        gains = [s["gain"] for s in row["sites"] if math.isfinite(s["gain"])]
        norms = [v for v in row["grad_norms"].values() if math.isfinite(v)]
        if gains:
            self.writer.add_histogram("diagnostics/gain", torch.tensor(gains), step)
            self.writer.add_scalar(
                "diagnostics/gain_product", row["sites"][-1]["gain_product"], step
            )
        if norms:
            self.writer.add_histogram("diagnostics/grad_norm", torch.tensor(norms), step)

    def close(self) -> None:
        self.writer.close()
