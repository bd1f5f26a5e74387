"""A process's random state (torch on the CPU and on its GPU, numpy, Python's ``random``), as
plain tensors and numbers a ``weights_only`` checkpoint holds.

A run consumes random numbers after its seeding: augmentation (torchvision draws from torch's
global generator per sample), dropout, the DataLoader's base seed for the evaluation loader.
The checkpoint keeps each rank's state so that a resumed run draws what the uninterrupted run
would have drawn (the training order and the loader workers' seeds come from per-epoch
generators instead: :func:`netadv.experiments.distributed.epoch_generator`).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture(device: torch.device) -> dict[str, Any]:
    """This process's random state: torch's CPU generator, the generator of ``device`` when it
    is a GPU (the only one a rank uses), numpy's and Python's."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def restore(state: dict[str, Any], device: torch.device) -> None:
    """Set this process's random state to ``state`` (from :func:`capture`)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
