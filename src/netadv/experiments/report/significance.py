"""Tests a reviewer applies to arm-vs-reference comparisons over seeds.

- paired tests where two arms share seeds (the same seed is the same initial weights and batch
  order, so per-seed differences remove that noise): the paired t-test and an exact sign-flip
  permutation test (no normality assumption; with n pairs its smallest two-sided p-value is
  ``2 / 2**n``, so 5 seeds can never reach p < 0.05 and 6 are the fewest that can);
- effect sizes: the mean difference with its 95% CI (paired where the seeds pair), and Hedges'
  g (the standardised difference, small-sample corrected) with an approximate 95% CI;
- corrections for the many comparisons of a study: Holm's step-down (controls the family-wise
  error rate) and Benjamini-Hochberg (controls the false discovery rate);
- the smallest difference a paired comparison of n seeds detects with 80% power at the
  observed spread (what "n seeds" buys).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats
from scipy.optimize import brentq

#: Up to this many pairs the sign-flip test enumerates every flip; beyond, a fixed-seed sample.
EXACT_FLIPS = 16
SAMPLED_FLIPS = 100_000


def paired(a: Mapping[Any, float], b: Mapping[Any, float]) -> tuple[list[float], list[float]]:
    """The values of ``a`` and ``b`` (each by seed) on the seeds both have, in seed order."""
    common = sorted(set(a) & set(b), key=str)
    return [float(a[s]) for s in common], [float(b[s]) for s in common]


def paired_t_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided paired t-test of ``a - b``; None with fewer than 2 pairs or no spread."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) < 2 or np.ptp(d) == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_rel(a, b).pvalue)
    return p if math.isfinite(p) else None


def sign_flip_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided sign-flip permutation test of the mean paired difference: the fraction of the
    ``2**n`` sign assignments whose |mean| is at least the observed one (exact up to
    :data:`EXACT_FLIPS` pairs, sampled beyond). None with no pairs or all differences 0."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    if n == 0 or not d.any():
        return None
    observed = abs(d.mean())
    if n <= EXACT_FLIPS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        rng = np.random.default_rng(0)
        signs = rng.choice((1.0, -1.0), size=(SAMPLED_FLIPS, n))
    means = np.abs(signs @ d) / n
    # a tolerance so that flips equal to the observed mean up to rounding count as "as extreme"
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))


def smallest_sign_flip_p(n: int) -> float:
    """The smallest two-sided p-value an exact sign-flip test of ``n`` pairs can give."""
    return 2.0 / 2**n if n > 0 else 1.0


def mean_difference(a: Sequence[float], b: Sequence[float], *, is_paired: bool) -> dict[str, Any]:
    """``mean(a) - mean(b)`` with its 95% CI: from the per-pair differences when paired, else
    Welch's (unequal variances). CI is None with fewer than 2 values on a side."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        return {"diff": None, "ci95": None}
    diff = float(a.mean() - b.mean())
    if is_paired:
        d = a - b
        if len(d) < 2:
            return {"diff": diff, "ci95": None}
        half = float(stats.t.ppf(0.975, len(d) - 1)) * float(d.std(ddof=1)) / math.sqrt(len(d))
        return {"diff": diff, "ci95": (diff - half, diff + half)}
    if len(a) < 2 or len(b) < 2:
        return {"diff": diff, "ci95": None}
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return {"diff": diff, "ci95": (diff, diff)}
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, dof)) * se
    return {"diff": diff, "ci95": (diff - half, diff + half)}


def hedges_g(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Hedges' g (the difference of means over the pooled standard deviation, corrected for
    small samples) with its approximate 95% CI (normal, Hedges & Olkin's variance). None where
    a side has fewer than 2 values or there is no spread."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return {"g": None, "ci95": None}
    pooled = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return {"g": None, "ci95": None}
    correction = 1 - 3 / (4 * (na + nb) - 9)
    g = correction * (a.mean() - b.mean()) / pooled
    se = math.sqrt((na + nb) / (na * nb) + g * g / (2 * (na + nb)))
    return {"g": float(g), "ci95": (float(g - 1.96 * se), float(g + 1.96 * se))}


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and is not counted)."""
    index = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(index)
    order = sorted(index, key=lambda i: pvalues[i])
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def benjamini_hochberg(pvalues: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg q-values (None stays None and is not counted)."""
    index = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(index)
    order = sorted(index, key=lambda i: pvalues[i], reverse=True)
    out: list[float | None] = [None] * len(pvalues)
    running = 1.0
    for k, i in enumerate(order):
        rank = m - k  # 1-based rank in ascending order
        running = min(running, pvalues[i] * m / rank)
        out[i] = min(1.0, running)
    return out


def detectable_difference(sd: float | None, n: int, power: float = 0.8) -> float | None:
    """The smallest true mean difference a two-sided paired t-test at alpha 0.05 finds with
    probability ``power``, for ``n`` pairs whose differences have standard deviation ``sd``
    (the noncentral-t calculation). None with fewer than 2 pairs or no spread known."""
    if sd is None or n < 2 or not math.isfinite(sd) or sd <= 0:
        return None
    dof, crit = n - 1, float(stats.t.ppf(0.975, n - 1))

    def achieved(delta: float) -> float:
        nc = delta / (sd / math.sqrt(n))
        return float(stats.nct.sf(crit, dof, nc) + stats.nct.cdf(-crit, dof, nc)) - power

    hi = sd
    while achieved(hi) < 0:
        hi *= 2
    return float(brentq(achieved, 0.0, hi, xtol=1e-9 * sd))
