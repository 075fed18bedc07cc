"""Power of the paired per-seed test: the minimum detectable effect (MDE) at n seeds and the
seeds needed for a given effect, from the exploratory verdicts (scripts/power.py).

The verdicts (harness/reports/verdicts.py) give, per claim and column, the mean of the n
paired per-seed differences and its 95 % Student t interval ``mean +- t_{0.975,n-1} s/sqrt(n)``,
so the standard deviation of the differences is ``s = half-width * sqrt(n) / t_{0.975,n-1}``
(:func:`sd_from_interval`). The power of the two-sided one-sample t test of ``H0: mean = 0``
at a true mean ``delta`` is exact from the noncentral t distribution (noncentrality
``delta sqrt(n) / s``, both tails; Cohen 1988 ch. 2; statsmodels ``TTestPower`` and R's
``power.t.test(type="one.sample", strict=TRUE)`` compute the same), and the MDE is the
``delta`` where it reaches the target power (:func:`mde`).

The verdicts' p-value is an exact two-sided signed-rank (sign-flip) test: with n seeds its
smallest value is ``2 / 2^n``, so no n below ``log2(2 m / alpha)`` can reject under Holm's
correction in a family of m claims (:func:`permutation_floor`), whatever the effect.
"""

from __future__ import annotations

import math

from scipy import optimize, stats

__all__ = ["sd_from_interval", "t_power", "mde", "seeds_needed", "permutation_floor"]

ALPHA = 0.05
POWER = 0.8
LEVEL = 0.95
N_CAP = 200


def sd_from_interval(low: float, high: float, n: int, level: float = LEVEL) -> float:
    """The sd of the n paired differences whose Student t interval at ``level`` is
    ``[low, high]``: ``(high - low) / 2 * sqrt(n) / t_{(1+level)/2, n-1}``."""
    if n < 2:
        raise ValueError(f"an interval of n={n} differences holds no sd; n must be at least 2")
    if not high >= low:
        raise ValueError(f"interval [{low}, {high}] is not ordered (or not a number)")
    return (high - low) / 2 * math.sqrt(n) / float(stats.t.ppf((1 + level) / 2, n - 1))


def t_power(delta: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Exact power of the two-sided one-sample t test (n differences, sd ``sd``) at mean
    ``delta``: ``P(|T| > t_{1-alpha/2, n-1})``, T noncentral t(n-1, delta sqrt(n) / sd)."""
    df, nc = n - 1, delta * math.sqrt(n) / sd
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    upper, lower = float(stats.nct.sf(crit, df, nc)), float(stats.nct.cdf(-crit, df, nc))
    # scipy's nct returns NaN for a far tail (large nc, large df): it is 0 there
    return (upper if math.isfinite(upper) else 1.0) + (lower if math.isfinite(lower) else 0.0)


def mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest mean difference the two-sided t test detects with ``power`` at n seeds
    (same units as ``sd``); 0 when ``sd`` is 0 (every seed gave the same difference)."""
    if n < 2:
        raise ValueError(f"a t test needs at least 2 seeds; got n={n}")
    if sd == 0:
        return 0.0
    hi = sd * 1.0
    while t_power(hi, sd, n, alpha) < power:
        hi *= 2
    return float(
        optimize.brentq(lambda d: t_power(d, sd, n, alpha) - power, 0.0, hi, xtol=1e-10 * sd)
    )


def seeds_needed(
    sd: float, effect: float, alpha: float = ALPHA, power: float = POWER, cap: int = N_CAP
) -> int | None:
    """The smallest n (2..cap) with ``mde(sd, n) <= effect``; None when even ``cap`` seeds
    do not reach it. The MDE falls with n, so a bisection finds it."""
    if mde(sd, cap, alpha, power) > effect:
        return None
    lo, hi = 2, cap  # mde(lo) > effect unless lo already reaches it
    if mde(sd, lo, alpha, power) <= effect:
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if mde(sd, mid, alpha, power) <= effect else (mid, hi)
    return hi


def permutation_floor(m: int = 1, alpha: float = ALPHA) -> int:
    """The fewest seeds at which an exact two-sided sign-flip test can reject at Holm's
    smallest threshold ``alpha / m``: ``2 / 2^n <= alpha / m``, n = ceil(log2(2 m / alpha))."""
    if m < 1:
        raise ValueError(f"a family holds at least one claim; got m={m}")
    return math.ceil(math.log2(2 * m / alpha) - 1e-12)
