"""Training from a script: :func:`fit`, what ``netadv train`` does, as a function."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from netadv.experiments.config import RunConfig, as_config
from netadv.experiments.loop import train


def fit(
    config: RunConfig | Mapping[str, Any] | str | os.PathLike,
    *,
    resume: bool = False,
    quiet: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Train one run and return its summary (the contents of ``summary.json``).

    ``config`` is a :class:`RunConfig`, a mapping of config keys (the rest are the defaults),
    or a YAML file's path; ``overrides`` are config keys applied over it as ``--set`` applies
    them: ``fit("configs/smoke.yaml", epochs=2, lr=3e-4)``; a mapping replaces a mapping key
    (``rewrite={"period": 2}``) and a dotted key sets one entry of it
    (``**{"rewrite.period": 2}``). The run writes its folder, ``<output_dir>/<name>``, as
    ``netadv train`` does; ``resume=True`` continues it from its checkpoint. A bad config is
    a :class:`netadv.errors.ConfigError` (one line), raised before anything runs; a loss that
    became NaN/Inf is :class:`netadv.experiments.TrainingDiverged`. Under
    ``torchrun`` every process calls it (rank 0 writes), as with ``-m netadv train``.
    """
    return train(as_config(config, **overrides), resume=resume, quiet=quiet)
