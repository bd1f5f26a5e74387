"""The steadiness measure on curves whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netadv.experiments.report.steadiness import log_losses, steadiness


def curve(n: int, wobble: float, spikes: int = 0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    trend = 2.0 * np.exp(-np.arange(n) / (n / 4)) + 0.3
    noise = np.exp(wobble * rng.standard_normal(n))
    out = trend * noise
    if spikes:
        where = rng.choice(np.arange(n // 2 + 50, n), size=spikes, replace=False)
        out[where] *= 3.0  # a loss tripling for one step
    return out


def test_spread_measures_the_relative_wobble():
    quiet, noisy = steadiness(curve(4000, 0.02)), steadiness(curve(4000, 0.10))
    # r = log-noise minus a running mean of w = 80 steps: std close to the wobble itself
    assert quiet["spread"] == pytest.approx(0.02, rel=0.1)
    assert noisy["spread"] == pytest.approx(0.10, rel=0.1)
    assert quiet["spikes_per_1k"] == 0 and quiet["window"] == 80 and quiet["steps"] == 2000


def test_spikes_are_counted_and_do_not_hide_behind_the_spread():
    out = steadiness(curve(4000, 0.02, spikes=6))
    assert out["spikes_per_1k"] == pytest.approx(1000 * 6 / (2000 - 80))


def test_too_short_or_broken_runs_have_no_measure():
    assert steadiness([1.0] * 50)["spread"] is None
    bad = curve(400, 0.05)
    bad[-3] = math.nan
    assert steadiness(bad)["spread"] is None


def test_log_rows_keep_the_last_value_of_a_repeated_step():
    rows = [{"epoch": 1, "first_step": 0, "loss": [2.0, 1.5]}]
    rows.append({"epoch": 1, "first_step": 1, "loss": [1.4, None]})  # rewritten after a resume
    out = log_losses(rows)
    assert out[:2] == [2.0, 1.4] and math.isnan(out[2])
