"""Statistics of the verdicts: small pure functions on per-seed values.

Every function takes numpy arrays (or mappings of them) and returns a frozen dataclass; the
numbers come from libraries (scipy, statsmodels, rliable, autorank), and ``tests/test_stats.py``
checks each call against a case computed by hand. ``docs/statistics.md`` states the rules.

* :func:`sign_flip` -- the declared primary test: the exact two-sided paired sign-flip
  permutation test of the mean difference (:func:`scipy.stats.permutation_test`), with the
  confidence interval that inverts it (Hartigan's subset means, exact for ``n <= CI_EXACT_MAX``).
* :func:`nadeau_bengio` -- the corrected resampled t interval (Nadeau & Bengio 2003) for seeds
  that each draw their own train/test split from one pool.
* :func:`tost` -- equivalence within a margin (two one-sided tests), by sign flips or by
  statsmodels' paired t TOST; :func:`mde` -- the minimum detectable effect at 80 % power.
* :func:`holm` -- Holm's step-down adjustment inside a family (statsmodels).
* :func:`replicability` -- the partial-conjunction count of columns where a claim holds
  (Dror et al. 2017).
* :func:`aggregate` -- one number per claim across columns: the IQM of the per-seed differences
  with a stratified bootstrap interval, and the probability of improvement (rliable).
* :func:`friedman_cd` -- per table, Friedman's test and a critical-difference diagram of the
  methods (autorank; Demšar 2006).

statsmodels, rliable and autorank are imported inside the functions that use them (the
``stats`` extra of pyproject.toml installs them).
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "EXACT_MAX",
    "CI_EXACT_MAX",
    "LEVEL",
    "Test",
    "Equivalence",
    "Replicability",
    "Aggregate",
    "Ranking",
    "sign_flip",
    "sign_flip_p",
    "nadeau_bengio",
    "nadeau_bengio_p",
    "tost",
    "mde",
    "min_seeds",
    "holm",
    "replicability",
    "aggregate",
    "friedman_cd",
]

#: Up to this many seeds the sign-flip p-value enumerates all 2**n sign vectors (exact; 0.3 s
#: at 16 on one core, 1.6 s at 18) ...
EXACT_MAX = 16
#: ... and up to this many the interval is the exact inversion (2**n subset means, cheap).
CI_EXACT_MAX = 20
#: Monte Carlo sign vectors beyond EXACT_MAX (fixed seed: the same numbers on every run).
MC_RESAMPLES = 99_999
LEVEL = 0.95


@dataclass(frozen=True)
class Test:
    """A test of the mean paired difference: ``p`` (two-sided), the interval ``[lo, hi]`` at
    ``level`` of the mean ``mean``; ``method`` names the test, ``ci_method`` the interval."""

    n: int
    mean: float
    lo: float
    hi: float
    p: float
    level: float
    method: str
    ci_method: str


@dataclass(frozen=True)
class Equivalence:
    """TOST within ``(-margin, margin)``: ``p = max(p_lower, p_upper)``; equivalence is shown
    at level alpha when ``p <= alpha``."""

    p: float
    p_lower: float
    p_upper: float
    margin: float
    method: str


@dataclass(frozen=True)
class Replicability:
    """``k``: the number of columns where the effect is shown (k-hat of Dror et al. 2017),
    from ``partial`` (the monotone partial-conjunction p-values, ``u = 1..N``) at ``alpha``."""

    k: int
    n: int
    partial: tuple
    alpha: float
    method: str


@dataclass(frozen=True)
class Aggregate:
    """One claim across columns: ``iqm`` of the per-seed differences (all seeds, all columns)
    in ``[lo, hi]``; ``poi``: the probability of improvement P(A > B) in ``[poi_lo, poi_hi]``
    (both intervals: stratified bootstrap, seeds resampled within each column)."""

    iqm: float
    lo: float
    hi: float
    poi: float
    poi_lo: float
    poi_hi: float
    n_seeds: int
    n_columns: int
    level: float


@dataclass(frozen=True)
class Ranking:
    """Friedman's test of ``k`` methods over ``n_blocks`` blocks: ``statistic`` (chi-square,
    ``k - 1`` df) and ``p``; ``mean_ranks`` (1 = best); ``cd``: the Nemenyi critical difference
    at ``alpha``; ``png``: the critical-difference diagram, or None."""

    statistic: float
    p: float
    mean_ranks: Mapping[str, float]
    cd: float
    alpha: float
    n_blocks: int
    png: str | None


def _diffs(diffs) -> np.ndarray:
    d = np.asarray(
        list(diffs.values()) if isinstance(diffs, Mapping) else diffs, dtype=float
    ).ravel()
    if np.isnan(d).any():
        raise ValueError("per-seed differences contain NaN: drop the unmatched seeds first")
    return d


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def sign_flip_p(diffs, alternative: str = "two-sided", shift: float = 0.0) -> float:
    """p-value of the paired sign-flip permutation test of ``mean(d - shift) = 0``.

    ``scipy.stats.permutation_test`` with ``permutation_type='samples'`` on one sample flips
    the signs of the differences: exact (all ``2**n`` sign vectors) for ``n <= EXACT_MAX``,
    else ``MC_RESAMPLES`` random ones (seed 0). ``alternative``: ``'two-sided'`` (scipy:
    twice the smaller tail), ``'greater'`` or ``'less'``. 1.0 with no differences.
    """
    from scipy import stats

    d = _diffs(diffs) - shift
    if len(d) == 0 or not np.any(d):
        return 1.0
    if len(d) == 1:  # two sign vectors (scipy needs two values): d and -d
        side = {"greater": d[0] > 0, "less": d[0] < 0}.get(alternative, False)
        return 0.5 if side else 1.0
    exact = len(d) <= EXACT_MAX
    r = stats.permutation_test(
        (d,),
        _mean,
        permutation_type="samples",
        vectorized=True,
        n_resamples=np.inf if exact else MC_RESAMPLES,
        alternative=alternative,
        rng=None if exact else 0,
    )
    return float(min(1.0, r.pvalue))


def _subset_means(d: np.ndarray) -> np.ndarray:
    """The ``2**n - 1`` means of the nonempty subsets of ``d``, sorted."""
    sums, counts = np.zeros(1), np.zeros(1)
    for x in d:
        sums, counts = np.concatenate([sums, sums + x]), np.concatenate([counts, counts + 1])
    return np.sort(sums[1:] / counts[1:])


def sign_flip(diffs, level: float = LEVEL) -> Test:
    """The declared primary test: exact two-sided sign-flip test and the interval inverting it.

    Parameters
    ----------
    diffs
        Per-seed paired differences ``d_s = A(s) - B(s)`` (array, or ``{seed: d}``).
    level
        Confidence level of the interval, in (0, 1).

    Notes
    -----
    Under H0 the pair (A(s), B(s)) is exchangeable within a seed, so each ``d_s`` is as likely
    as ``-d_s``; the test compares ``mean(d)`` with its ``2**n`` sign-flipped copies. Its
    smallest two-sided p-value is ``2 / 2**n`` (n = 5: 0.0625, never below 0.05).

    The interval (``n <= CI_EXACT_MAX``) inverts the same test with each tail at ``(1-level)/2``:
    by Hartigan (1969), the ``2**n - 1`` subset means of ``d`` cut the line into ``2**n``
    intervals that each hold the centre of symmetry with probability ``2**-n``, so with
    ``K = floor((1-level)/2 * 2**n)`` the K-th smallest and K-th largest subset means bound
    the set of ``mu`` where the test of ``d - mu`` does not reject (``K = 0``: the whole line).
    Beyond ``CI_EXACT_MAX``: scipy's BCa bootstrap interval (9999 resamples, seed 0).
    """
    from scipy import stats

    if not 0 < level < 1:
        raise ValueError(f"level={level} is outside (0, 1): pass e.g. 0.95")
    d = _diffs(diffs)
    n = len(d)
    if n == 0:
        return Test(0, math.nan, math.nan, math.nan, math.nan, level, "sign-flip", "none")
    exact = n <= EXACT_MAX
    p = sign_flip_p(d)
    if n <= CI_EXACT_MAX:
        k = int(math.floor((1 - level) / 2 * 2**n + 1e-9))
        means = _subset_means(d) if k else None
        lo, hi = (float(means[k - 1]), float(means[-k])) if k else (-math.inf, math.inf)
        ci = "inverted sign-flip test (Hartigan subset means)"
    elif np.ptp(d) == 0:
        lo = hi = float(d[0])
        ci = "degenerate (all differences equal)"
    else:
        b = stats.bootstrap(
            (d,), np.mean, confidence_level=level, method="BCa", n_resamples=9999, rng=0
        )
        lo, hi = float(b.confidence_interval.low), float(b.confidence_interval.high)
        ci = "BCa bootstrap"
    method = "sign-flip, exact" if exact else f"sign-flip, {MC_RESAMPLES} random"
    return Test(n, float(d.mean()), lo, hi, p, level, method, ci)


def nadeau_bengio(diffs, n_train: int, n_test: int, level: float = LEVEL) -> Test:
    """Corrected resampled t test (Nadeau & Bengio 2003, Machine Learning 52:239, eq. 13).

    For seeds that each draw their own train/test split from one pool, the differences are
    correlated through the overlapping training sets; the variance of their mean is
    ``(1/n + n_test/n_train) * s**2`` instead of ``s**2 / n`` (``s``: sample std, ddof 1).
    ``t = mean / sqrt(that)`` with ``n - 1`` df (scipy.stats.t); two-sided p and interval.
    Assumes normally distributed differences.
    """
    from scipy import stats

    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"n_train={n_train}, n_test={n_test}: pass the split sizes (> 0)")
    d = _diffs(diffs)
    n = len(d)
    if n < 2:
        raise ValueError(f"{n} difference(s): the corrected t test needs at least 2 seeds")
    mean = float(d.mean())
    se = math.sqrt((1 / n + n_test / n_train) * d.var(ddof=1))
    if se == 0:
        p = 1.0 if mean == 0 else 0.0
        return Test(n, mean, mean, mean, p, level, "Nadeau-Bengio t", "corrected t")
    t = mean / se
    p = float(2 * stats.t.sf(abs(t), n - 1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1) * se)
    return Test(n, mean, mean - half, mean + half, p, level, "Nadeau-Bengio t", "corrected t")


def nadeau_bengio_p(
    diffs, n_train: int, n_test: int, alternative: str = "two-sided", shift: float = 0.0
) -> float:
    """p-value of the corrected resampled t test (:func:`nadeau_bengio`) of
    ``mean(d - shift) = 0``; ``alternative``: ``'two-sided'``, ``'greater'`` or ``'less'``."""
    from scipy import stats

    d = _diffs(diffs) - shift
    r = nadeau_bengio(d, n_train, n_test)
    se = math.sqrt((1 / len(d) + n_test / n_train) * d.var(ddof=1))
    if alternative == "two-sided":
        return r.p
    if se == 0:
        return 0.0 if (r.mean > 0) == (alternative == "greater") and r.mean != 0 else 1.0
    t = r.mean / se
    return float(
        stats.t.sf(t, len(d) - 1) if alternative == "greater" else stats.t.cdf(t, len(d) - 1)
    )


def tost(diffs, margin: float, method: str = "sign-flip") -> Equivalence:
    """Two one-sided tests of ``-margin < mean(d) < margin`` (Schuirmann 1987).

    ``method='sign-flip'``: ``p_lower`` = sign-flip test of ``d + margin`` (alternative
    greater), ``p_upper`` = of ``d - margin`` (alternative less); ``method='t'``:
    ``statsmodels.stats.weightstats.ttost_paired`` (normal differences). ``p`` = the larger.
    """
    if not margin > 0:
        raise ValueError(f"margin={margin}: the equivalence margin must be > 0 (points)")
    d = _diffs(diffs)
    if method == "sign-flip":
        lo = sign_flip_p(d, "greater", shift=-margin) if len(d) else 1.0
        up = sign_flip_p(d, "less", shift=margin) if len(d) else 1.0
    elif method == "t":
        from statsmodels.stats.weightstats import ttost_paired

        if len(d) < 2:
            raise ValueError(f"{len(d)} difference(s): the t TOST needs at least 2 seeds")
        _, (_, lo, _), (_, up, _) = ttost_paired(d, np.zeros_like(d), -margin, margin)
        lo, up = float(lo), float(up)
    else:
        raise ValueError(f"method={method!r}: use 'sign-flip' or 't'")
    return Equivalence(max(lo, up), lo, up, float(margin), method)


def min_seeds(alpha: float = 0.05, m: int = 1) -> int:
    """The fewest seeds at which the exact two-sided sign-flip test can reject at ``alpha``
    after Holm over ``m`` hypotheses (its smallest p-value, ``2**(1-n)``, must be
    ``<= alpha / m``)."""
    return max(1, math.ceil(1 + math.log2(m / alpha) - 1e-12))


def mde(
    n: int, sd: float, alpha: float = 0.05, power: float = 0.8, split: tuple[int, int] | None = None
) -> float:
    """Minimum detectable effect (points) of the two-sided paired test at ``power``.

    ``delta * sd`` where ``delta`` solves the noncentral-t power equation of the one-sample t
    test with ``n`` seeds (``statsmodels.stats.power.TTestPower``); close to
    ``(t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)``. The sign-flip test has the t
    test's power asymptotically; it is ``inf`` when ``n < min_seeds(alpha)`` (no p-value of
    the exact test is small enough), NaN when ``n < 2``. ``split=(n_train, n_test)``: the
    Nadeau-Bengio test instead, whose standard error is ``sqrt(1 + n n_test / n_train)``
    times larger (no ``inf``: the t test has no smallest p-value).
    """
    if n < 2 or not sd == sd:
        return math.nan
    if split is None and n < min_seeds(alpha):
        return math.inf
    if sd == 0:
        return 0.0
    from statsmodels.stats.power import TTestPower

    delta = TTestPower().solve_power(
        effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided"
    )
    grow = 1.0 if split is None else math.sqrt(1 + n * split[1] / split[0])
    return float(np.asarray(delta).item() * sd * grow)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values of one family
    (``statsmodels.stats.multitest.multipletests(method='holm')``); NaN entries stay NaN and
    do not count in the family."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def replicability(
    pvalues: Sequence[float], alpha: float = 0.05, method: str = "bonferroni"
) -> Replicability:
    """Count of columns where an effect is shown (Dror, Baumer, Bogomolov, Reichart 2017,
    "Replicability analysis for NLP", TACL 5:471, §3; Benjamini & Heller 2008).

    With the column p-values sorted ``p_(1) <= ... <= p_(N)``, the partial-conjunction p-value
    of "at least u of N columns have an effect" is
    Bonferroni ``(N - u + 1) * p_(u)`` (valid under any dependence between columns), or
    Fisher ``P(chi2_{2(N-u+1)} >= -2 sum_{i>=u} log p_(i))`` (independent columns;
    ``scipy.stats.combine_pvalues``). Made monotone in ``u`` (running max),
    ``k = #{u : p^{u/N} <= alpha}``: with family-wise error ``alpha``, at least ``k``
    columns have an effect. deepsig 1.2.8 (``bonferroni_correction``) prints the Bonferroni
    values without the running max and maps them back to the wrong columns, so it is not used.
    """
    from scipy import stats

    p = np.sort(np.asarray(pvalues, dtype=float))
    if np.isnan(p).any() or ((p < 0) | (p > 1)).any():
        raise ValueError("p-values must lie in [0, 1]: drop the columns without one")
    n = len(p)
    if method == "bonferroni":
        part = [(n - u) * p[u] for u in range(n)]
    elif method == "fisher":
        part = [stats.combine_pvalues(p[u:], method="fisher").pvalue for u in range(n)]
    else:
        raise ValueError(f"method={method!r}: use 'bonferroni' or 'fisher'")
    mono = np.minimum(1.0, np.maximum.accumulate(np.asarray(part, dtype=float))) if n else []
    k = int(np.sum(np.asarray(mono) <= alpha))
    return Replicability(k, n, tuple(float(x) for x in mono), alpha, method)


def _matrix(x, name: str) -> np.ndarray:
    m = np.asarray(x, dtype=float)
    if m.ndim != 2 or 0 in m.shape:
        raise ValueError(f"{name} has shape {m.shape}: pass a (seeds x columns) matrix")
    if np.isnan(m).any():
        raise ValueError(f"{name} has NaN: keep the seeds present in every column")
    return m


def aggregate(a, b, level: float = LEVEL, reps: int = 2000, seed: int = 0) -> Aggregate:
    """One aggregate of claim ``A > B`` across columns (Agarwal et al. 2021, rliable).

    ``a``, ``b``: (seeds x columns) matrices of per-seed scores, rows matched by seed. The
    aggregate is the interquartile mean (``rliable.metrics.aggregate_iqm``: the 25 % trimmed
    mean of all cells) of ``a - b``; the probability of improvement
    (``rliable.metrics.probability_of_improvement``) is P(A > B) per column (Mann-Whitney U
    / (n_a n_b), ties half) averaged over columns.

    Intervals: rliable's stratified bootstrap (seeds resampled with replacement within each
    column, percentile interval at ``level``, ``reps`` resamples, numpy seed ``seed``); the
    differences resample pairs, the probability of improvement resamples ``a`` and ``b``
    independently as rliable's ``StratifiedIndependentBootstrap`` does. The resampling is
    done here with numpy: ``rliable.library`` (1.2.0) needs ``arch<8``, whose 7.x releases fail
    to import under pandas 3, and arch 8 refuses rliable's ``random_state`` argument.
    """
    from rliable import metrics

    a, b = _matrix(a, "a"), _matrix(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a {a.shape} and b {b.shape} differ: pass matched seeds x columns")
    if not 0 < level < 1 or reps < 1:
        raise ValueError(f"level={level}, reps={reps}: pass 0 < level < 1 and reps >= 1")
    rng = np.random.default_rng(seed)
    d = a - b
    iqm = _iqm_batch(_stratified(d, rng, reps))
    poi = _poi_batch(_stratified(a, rng, reps), _stratified(b, rng, reps))
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    (lo, hi), (plo, phi) = np.percentile(iqm, q), np.percentile(poi, q)
    return Aggregate(
        float(metrics.aggregate_iqm(d)),
        float(lo),
        float(hi),
        float(metrics.probability_of_improvement(a, b)),
        float(plo),
        float(phi),
        a.shape[0],
        a.shape[1],
        level,
    )


def _stratified(x: np.ndarray, rng: np.random.Generator, reps: int) -> np.ndarray:
    """``reps`` stratified bootstrap resamples, shape (reps, seeds, columns): the rows (seeds)
    of each column drawn with replacement, independently per column
    (rliable.library.StratifiedBootstrap)."""
    idx = rng.integers(0, x.shape[0], size=(reps, *x.shape))
    return np.take_along_axis(np.broadcast_to(x, idx.shape), idx, axis=1)


def _iqm_batch(x: np.ndarray) -> np.ndarray:
    """``rliable.metrics.aggregate_iqm`` of each resample ``x[r]`` (25 % trimmed mean of all
    cells, scipy.stats.trim_mean), vectorized over the first axis."""
    from scipy import stats

    return stats.trim_mean(x.reshape(len(x), -1), 0.25, axis=1)


def _poi_batch(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``rliable.metrics.probability_of_improvement(x[r], y[r])`` vectorized over ``r``: per
    column the share of pairs (i, j) with ``x_i > y_j`` (ties count half; the Mann-Whitney U
    over n_x n_y), averaged over columns; 0.5 for a column where ``x`` equals ``y``."""
    gt = (x[:, :, None, :] > y[:, None, :, :]).mean(axis=(1, 2))
    eq = (x[:, :, None, :] == y[:, None, :, :]).mean(axis=(1, 2))
    p = gt + 0.5 * eq
    same = np.all(x == y, axis=1)
    return np.where(same, 0.5, p).mean(axis=1)


def friedman_cd(
    scores: Mapping[str, Sequence[float]], alpha: float = 0.05, png: str | Path | None = None
) -> Ranking:
    """Friedman's test and the Nemenyi critical-difference diagram of a table's methods
    (Demšar 2006, JMLR 7:1, §3.2.2), by ``autorank.autorank(force_mode='nonparametric')``.

    ``scores``: ``{method: values}``, the same blocks in the same order for each method (a
    block: one column, or one (column, seed) pair); higher is better. Needs 3+ methods and
    5+ blocks (autorank's minimum). ``png``: where to write the diagram
    (``autorank.plot_stats``, matplotlib Agg), or None.
    """
    import pandas as pd
    from autorank import autorank
    from scipy import stats

    df = pd.DataFrame({k: np.asarray(v, dtype=float) for k, v in scores.items()})
    if df.shape[1] < 3 or df.shape[0] < 5:
        raise ValueError(
            f"{df.shape[1]} methods x {df.shape[0]} blocks: Friedman's test here "
            "needs 3+ methods and 5+ blocks (use (column, seed) blocks)"
        )
    if df.isna().any().any():
        raise ValueError("scores have NaN: keep the blocks every method has")
    with contextlib.redirect_stdout(io.StringIO()):  # autorank prints its forced mode
        r = autorank(df, alpha=alpha, verbose=False, order="descending", force_mode="nonparametric")
    stat = float(stats.friedmanchisquare(*df.T.values).statistic)
    ranks = {str(k): float(v) for k, v in r.rankdf["meanrank"].items()}
    out = None
    if png is not None:
        out = str(_cd_png(r, Path(png)))
    return Ranking(stat, float(r.pvalue), ranks, float(r.cd), alpha, df.shape[0], out)


def _cd_png(result, path: Path) -> Path:
    from autorank import plot_stats
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 1.2 + 0.3 * len(result.rankdf)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    plot_stats(result, allow_insignificant=True, ax=ax)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
