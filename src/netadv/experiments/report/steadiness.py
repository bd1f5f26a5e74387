"""How steady a training loss is: the paper's "steadier loss curves", made a number.

Definition (documented in docs/RESULTS.md), over the second half of a run's per-step training
losses ``L_t`` (the first half is where every loss falls fast, for reasons unrelated to
steadiness):

- ``l_t = log L_t`` (fluctuations are relative: a 10% jump counts the same at any loss level);
- ``m_t`` = the mean of ``l`` over the trailing window of ``w`` steps before ``t`` (``w`` = 2%
  of the run's steps, at least 10): the curve the loss is following;
- ``r_t = l_t - m_t``, the step's departure from it;
- **spread** = the standard deviation of ``r_t`` (in natural-log units: 0.05 is about 5%
  step-to-step wobble around the running mean); lower is steadier;
- **spikes** = the number of steps with ``r_t > SPIKE_MADS * 1.4826 * MAD(r)`` (MAD: the median
  absolute deviation, a spread that the spikes themselves do not inflate), per 1,000 steps.

Both are per run; a report compares arms over seeds by their mean and 95% CI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: A step is a spike when it is this many robust standard deviations above its running mean.
SPIKE_MADS = 5.0
WINDOW_FRACTION = 0.02
MIN_WINDOW = 10
MIN_STEPS = 40  # fewer steps in the second half: no measure


def steadiness(losses: Sequence[float]) -> dict[str, Any]:
    """``{"spread", "spikes_per_1k", "steps", "window"}`` of a run's per-step losses (in step
    order); the numbers are None when the second half has fewer than :data:`MIN_STEPS` steps or
    a loss is not a positive finite number there."""
    values = np.asarray(losses, dtype=float)
    half = values[len(values) // 2 :]
    window = max(MIN_WINDOW, int(WINDOW_FRACTION * len(values)))
    empty = {"spread": None, "spikes_per_1k": None, "steps": len(half), "window": window}
    if len(half) < max(MIN_STEPS, window + 2) or not (np.isfinite(half).all() and (half > 0).all()):
        return empty
    logs = np.log(half)
    # trailing mean of the w steps before t, by a cumulative sum
    csum = np.concatenate([[0.0], np.cumsum(logs)])
    t = np.arange(window, len(logs))
    running = (csum[t] - csum[t - window]) / window
    r = logs[window:] - running
    spread = float(r.std(ddof=1))
    mad = float(np.median(np.abs(r - np.median(r))))
    spikes = int(np.sum(r > SPIKE_MADS * 1.4826 * mad)) if mad > 0 else 0
    return {
        "spread": spread,
        "spikes_per_1k": 1000.0 * spikes / len(r),
        "steps": len(half),
        "window": window,
    }


def log_losses(rows: Sequence[dict[str, Any]]) -> list[float]:
    """The training losses of a run's steps.jsonl rows (one per epoch: ``first_step`` and the
    ``loss`` of each step), in step order; where a step repeats (a resumed run rewrote the
    steps after its checkpoint) the last row wins; a non-finite loss is NaN."""
    by_step: dict[int, float] = {}
    for row in rows:
        for i, loss in enumerate(row.get("loss") or []):
            ok = isinstance(loss, int | float) and not isinstance(loss, bool)
            by_step[int(row["first_step"]) + i] = float(loss) if ok else math.nan
    return [by_step[s] for s in sorted(by_step)]
