"""The power calculation (harness/reports/power.py) against independent references."""

import math

import numpy as np
import pytest
from scipy import stats

from harness.reports.power import mde, permutation_floor, sd_from_interval, seeds_needed, t_power


def test_mde_one_sample_n10():
    # Reference: statsmodels 0.15.0, TTestPower().solve_power(nobs=10, alpha=0.05, power=0.8)
    # = 0.99600191 (two-sided, both tails, noncentral t), run on this machine 2026-12 (R was
    # not available here to cross-check power.t.test).
    assert mde(1.0, 10) == pytest.approx(0.996002, abs=2e-5)
    # the normal-quantile shortcut (t_{0.975,9} + t_{0.8,9}) / sqrt(10) = 0.99471
    approx = (stats.t.ppf(0.975, 9) + stats.t.ppf(0.8, 9)) / math.sqrt(10)
    assert approx == pytest.approx(0.99471, abs=1e-4) and abs(mde(1.0, 10) - approx) < 0.01
    assert mde(2.5, 10) == pytest.approx(2.5 * mde(1.0, 10), rel=1e-8)  # scales with sd


def test_power_against_statsmodels():
    sm = pytest.importorskip("statsmodels.stats.power")
    for d, n in [(0.5, 10), (0.3, 40), (1.2, 6)]:
        assert t_power(d, 1.0, n) == pytest.approx(
            sm.TTestPower().power(effect_size=d, nobs=n, alpha=0.05), abs=1e-8
        )
    # seeds for d = 0.5: statsmodels solves n = 33.37, so 34 whole seeds
    assert seeds_needed(1.0, 0.5) == 34
    assert sm.TTestPower().solve_power(effect_size=0.5, alpha=0.05, power=0.8) == pytest.approx(
        33.367, abs=1e-3
    )
    assert seeds_needed(1.0, 0.01) is None  # over the cap of 200
    assert seeds_needed(0.0, 0.5) == 2


def test_sd_from_interval_inverts_the_t_interval():
    rng = np.random.default_rng(0)
    d = rng.normal(1.0, 2.0, size=12)
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert sd_from_interval(lo, hi, len(d)) == pytest.approx(d.std(ddof=1), rel=1e-10)
    with pytest.raises(ValueError, match="n must be at least 2"):
        sd_from_interval(0.0, 1.0, 1)


def test_permutation_floor():
    # smallest two-sided sign-flip p with n seeds is 2 / 2^n
    assert permutation_floor(1) == 6 and 2 / 2**6 <= 0.05 < 2 / 2**5
    assert permutation_floor(4) == 8 and 2 / 2**8 <= 0.05 / 4 < 2 / 2**7
    # the exact Wilcoxon test of scipy reaches it with all 6 differences positive
    assert stats.wilcoxon([1, 2, 3, 4, 5, 6]).pvalue == pytest.approx(2 / 2**6)
