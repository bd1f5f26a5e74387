"""The reviewer's statistics against textbook values and brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from netadv.experiments.report import significance as sig


def test_paired_by_seed():
    a, b = sig.paired({0: 1.0, 1: 2.0, 3: 5.0}, {1: 1.5, 0: 0.5, 2: 9.0})
    assert (a, b) == ([1.0, 2.0], [0.5, 1.5])


def test_paired_t_matches_scipy_and_refuses_degenerate_input():
    a, b = [0.70, 0.72, 0.69, 0.74], [0.68, 0.69, 0.69, 0.70]
    assert sig.paired_t_p(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert sig.paired_t_p([1.0], [0.5]) is None
    assert sig.paired_t_p([1.0, 2.0], [0.0, 1.0]) is None  # constant difference: no spread


def test_sign_flip_is_exact():
    a, b = [3.0, 1.0, 2.5, 4.0, 0.5], [1.0, 0.0, 2.0, 1.0, 1.0]
    d = np.subtract(a, b)
    flips = [abs(np.dot(s, d)) / len(d) for s in itertools.product((1, -1), repeat=len(d))]
    expected = np.mean([m >= abs(d.mean()) - 1e-12 for m in flips])
    assert sig.sign_flip_p(a, b) == pytest.approx(expected)
    # all differences of one sign and the largest |mean|: the smallest p there is
    assert sig.sign_flip_p([1, 2, 3, 4, 5], [0, 0, 0, 0, 0]) == sig.smallest_sign_flip_p(5)
    assert sig.smallest_sign_flip_p(5) == 1 / 16 and sig.smallest_sign_flip_p(6) < 0.05
    assert sig.sign_flip_p([1.0, 2.0], [1.0, 2.0]) is None


def test_mean_difference_ci_paired_and_welch():
    a, b = [5.0, 6.0, 7.0, 9.0], [4.0, 5.5, 6.0, 7.0]
    d = np.subtract(a, b)
    out = sig.mean_difference(a, b, is_paired=True)
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert out["diff"] == pytest.approx(d.mean())
    assert out["ci95"] == pytest.approx((d.mean() - half, d.mean() + half))
    welch = sig.mean_difference(a, b, is_paired=False)
    res = stats.ttest_ind(a, b, equal_var=False)
    lo, hi = res.confidence_interval(0.95)
    assert welch["ci95"] == pytest.approx((lo, hi))


def test_hedges_g():
    a, b = [2.0, 3.0, 4.0], [1.0, 2.0, 3.0]
    out = sig.hedges_g(a, b)
    assert out["g"] == pytest.approx((1 - 3 / (4 * 6 - 9)) * 1.0)  # pooled sd is 1
    lo, hi = out["ci95"]
    assert lo < out["g"] < hi
    assert sig.hedges_g([1.0], [2.0, 3.0])["g"] is None


def test_holm_and_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, None, 0.03, 0.20]
    # Holm: sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1, running max
    assert sig.holm(p) == pytest.approx([0.04, 0.09, None, 0.09, 0.20])
    # BH: q_i = min over j >= i of p_(j) * m / j
    q = 0.04 * 4 / 3
    assert sig.benjamini_hochberg(p) == pytest.approx([0.04, q, None, q, 0.20])
    known = [x for x in p if x is not None]
    expected = stats.false_discovery_control(known, method="bh")
    assert [x for x in sig.benjamini_hochberg(p) if x is not None] == pytest.approx(expected)
    assert sig.holm([]) == [] and sig.benjamini_hochberg([None]) == [None]


def test_detectable_difference_has_the_stated_power():
    sd, n = 0.5, 5
    delta = sig.detectable_difference(sd, n)
    # simulate the paired t-test at that true difference: about 80% of trials reject
    rng = np.random.default_rng(0)
    d = rng.normal(delta, sd, size=(20000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    power = np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1))
    assert power == pytest.approx(0.8, abs=0.015)
    assert sig.detectable_difference(None, 5) is None and sig.detectable_difference(1.0, 1) is None
