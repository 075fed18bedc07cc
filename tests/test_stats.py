"""The verdicts' statistics (harness/reports/stats.py, verdict_rules.py): each library call
against a case computed by hand, and each verdict rule."""

import math

import numpy as np
import pytest
from scipy import stats as st

pytest.importorskip("statsmodels")
from harness.reports import stats as S  # noqa: E402
from harness.reports import verdict_rules as V  # noqa: E402


def _scipy_flip_p(d, alternative="two-sided"):
    """The sign-flip p-value straight from scipy (the reference for the inversion)."""
    return st.permutation_test(
        (np.asarray(d, float),),
        lambda x, axis: x.mean(axis=axis),
        permutation_type="samples",
        n_resamples=np.inf,
        vectorized=True,
        alternative=alternative,
    ).pvalue


# ------------------------------------------------------------------ sign-flip (primary test)
def test_sign_flip_three_seeds_by_hand():
    # 8 sign vectors; mean 2 is reached by (+,+,+) and -2 by (-,-,-): p = 2/8
    r = S.sign_flip([1.0, 2.0, 3.0])
    assert r.p == pytest.approx(0.25) and r.mean == 2.0 and r.n == 3
    # K = floor(0.025 * 8) = 0: no sign vector set is small enough, the interval is the line
    assert (r.lo, r.hi) == (-math.inf, math.inf)
    assert r.method == "sign-flip, exact"


def test_sign_flip_six_seeds_interval_by_hand():
    d = [1.0, 2, 3, 4, 5, 6]
    r = S.sign_flip(d)
    assert r.p == pytest.approx(2 / 64)
    # 95 %: K = floor(0.025 * 64) = 1: the smallest and largest subset means
    assert (r.lo, r.hi) == (1.0, 6.0)
    # 80 %: K = floor(0.1 * 64) = 6; subset means in order 1, 1.5, 2, 2, 2, 7/3 ({1,2,4}), ...
    r80 = S.sign_flip(d, level=0.8)
    assert r80.lo == pytest.approx(7 / 3) and r80.hi == pytest.approx(7 - 7 / 3)


@pytest.mark.parametrize("level", [0.8, 0.9, 0.95])
def test_sign_flip_interval_inverts_scipys_test(level):
    d = np.array([0.4, 1.3, -0.2, 0.9, 2.1, 0.6, 1.0])
    r = S.sign_flip(d, level)
    alpha, eps = 1 - level, 1e-6
    for edge, out in ((r.lo, -eps), (r.hi, eps)):
        assert _scipy_flip_p(d - (edge + out)) <= alpha + 1e-12  # just outside: rejected
        assert _scipy_flip_p(d - (edge - out)) > alpha  # just inside: kept
    assert r.p == pytest.approx(_scipy_flip_p(d))


def test_sign_flip_monte_carlo_and_bca_beyond_exact():
    d = np.random.default_rng(3).normal(1.0, 1.0, S.CI_EXACT_MAX + 5)
    r = S.sign_flip(d)
    assert r.method.endswith("random") and r.ci_method == "BCa bootstrap"
    assert r.lo < r.mean < r.hi and r.p < 1e-3
    assert S.sign_flip(d) == r  # fixed seeds: the same numbers every run


def test_sign_flip_bad_input_says_so():
    with pytest.raises(ValueError, match="NaN"):
        S.sign_flip([1.0, float("nan")])
    with pytest.raises(ValueError, match="level"):
        S.sign_flip([1.0, 2.0], level=95)
    assert S.sign_flip_p([0.0, 0.0, 0.0]) == 1.0


def test_min_seeds_by_hand():
    # smallest two-sided p = 2**(1-n): n = 5 gives 1/16 > 0.05, n = 6 gives 1/32
    assert S.min_seeds(0.05) == 6
    assert S.min_seeds(0.05, m=5) == 8  # 2**-6 = 0.0156 > 0.01 >= 2**-7


# ------------------------------------------------------------------ Nadeau-Bengio
def test_nadeau_bengio_by_hand():
    # d = 1, 2, 3: mean 2, s^2 = 1; var = (1/3 + 300/1200) * 1 = 7/12
    r = S.nadeau_bengio([1.0, 2.0, 3.0], n_train=1200, n_test=300)
    se = math.sqrt(7 / 12)
    t = 2 / se
    # t with 2 df in closed form: sf(t) = (1 - t / sqrt(t^2 + 2)) / 2
    assert r.p == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)
    q = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # t_{0.975, 2} in closed form = 4.3027
    assert (r.lo, r.hi) == pytest.approx((2 - q * se, 2 + q * se), rel=1e-9)
    with pytest.raises(ValueError, match="n_train"):
        S.nadeau_bengio([1.0, 2.0], 0, 300)


# ------------------------------------------------------------------ TOST and MDE
def test_tost_sign_flip_by_hand():
    d = [0.1, -0.1, 0.2, 0.0, 0.05, 0.1]
    r = S.tost(d, 0.5)
    # d + 0.5 all > 0 and d - 0.5 all < 0: each one-sided p is 1/64
    assert (r.p, r.p_lower, r.p_upper) == pytest.approx((1 / 64, 1 / 64, 1 / 64))
    assert S.tost([0.6, 0.4, 0.7, 0.5, 0.45, 0.8], 0.5).p > 0.5


def test_tost_t_matches_hand_formula():
    d = np.array([0.1, -0.3, 0.2, 0.0, 0.25, 0.1])
    r = S.tost(d, 0.5, method="t")
    n, m, se = len(d), d.mean(), d.std(ddof=1) / math.sqrt(len(d))
    lo = st.t.sf((m + 0.5) / se, n - 1)
    up = st.t.cdf((m - 0.5) / se, n - 1)
    assert (r.p_lower, r.p_upper, r.p) == pytest.approx((lo, up, max(lo, up)), rel=1e-9)
    with pytest.raises(ValueError, match="margin"):
        S.tost(d, 0.0)


@pytest.mark.parametrize("n", [6, 10, 20])
def test_mde_has_80_percent_power(n):
    sd, alpha = 1.3, 0.05
    e = S.mde(n, sd, alpha)
    # power of the two-sided one-sample t test at effect e, from the noncentral t
    crit, nc = st.t.ppf(1 - alpha / 2, n - 1), e / sd * math.sqrt(n)
    power = st.nct.sf(crit, n - 1, nc) + st.nct.cdf(-crit, n - 1, nc)
    assert power == pytest.approx(0.8, abs=1e-4)
    approx = (st.t.ppf(1 - alpha / 2, n - 1) + st.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
    assert e == pytest.approx(approx, rel=0.05)
    assert S.mde(5, sd) == math.inf and math.isnan(S.mde(1, sd))


# ------------------------------------------------------------------ Holm, replicability
def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(2*0.03, .), max(1*0.04, 0.06)
    assert S.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = S.holm([0.01, float("nan"), 0.04])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)


P_DROR = [0.168, 0.297, 0.357, 0.019, 0.218, 0.001]  # the example of Dror et al.'s code


def test_replicability_bonferroni_by_hand():
    r = S.replicability(P_DROR, 0.05)
    # sorted .001 .019 .168 .218 .297 .357: 6*.001, 5*.019, 4*.168, then running max .672
    assert r.partial == pytest.approx((0.006, 0.095, 0.672, 0.672, 0.672, 0.672))
    assert r.k == 1 and r.n == 6
    assert S.replicability([0.001, 0.002, 0.2]).k == 2  # 0.003, 0.004, 0.2


def test_replicability_fisher_by_hand():
    def chi2_sf_even(x, df):  # P(chi2_df >= x), df even, in closed form
        return math.exp(-x / 2) * sum((x / 2) ** j / math.factorial(j) for j in range(df // 2))

    p = sorted(P_DROR)
    hand = [chi2_sf_even(-2 * sum(map(math.log, p[u:])), 2 * (6 - u)) for u in range(6)]
    hand = list(np.maximum.accumulate(hand))
    r = S.replicability(P_DROR, 0.05, method="fisher")
    assert r.partial == pytest.approx(hand, rel=1e-9)
    assert r.k == 2  # 0.0010, 0.0399 <= 0.05 < 0.196
    with pytest.raises(ValueError, match="method"):
        S.replicability(P_DROR, method="simes")


# ------------------------------------------------------------------ aggregate (rliable)
def test_aggregate_by_hand():
    a = np.array([[1.0, 5.0], [3.0, 5.0]])
    b = np.array([[2.0, 4.0], [2.0, 5.0]])
    r = S.aggregate(a, b, reps=500)
    # d = [[-1, 1], [1, 0]]: 25 % trimmed mean of 4 cells drops one each side -> (0 + 1) / 2
    assert r.iqm == pytest.approx(0.5)
    # column 0: 1<2, 1<2, 3>2, 3>2 -> 1/2; column 1: 5>4, 5=5, 5>4, 5=5 -> 3/4; mean 5/8
    assert r.poi == pytest.approx(0.625)
    assert r.lo <= r.iqm <= r.hi and r.poi_lo <= r.poi <= r.poi_hi
    assert (r.n_seeds, r.n_columns) == (2, 2)


def test_aggregate_constant_shift_has_a_point_interval():
    b = np.random.default_rng(0).normal(80, 1, (5, 3))
    r = S.aggregate(b + 0.7, b)
    assert (r.iqm, r.lo, r.hi) == pytest.approx((0.7, 0.7, 0.7))


def test_stratified_bootstrap_matches_rliable_metrics():
    from rliable import metrics

    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, (5, 4)), np.round(rng.normal(0, 1, (5, 4)))
    x, y = S._stratified(a, rng, 30), S._stratified(b, rng, 30)
    for col in range(4):  # seeds are resampled within their own column
        assert np.isin(x[:, :, col], a[:, col]).all()
    assert S._iqm_batch(x) == pytest.approx([metrics.aggregate_iqm(v) for v in x])
    assert S._poi_batch(x, y) == pytest.approx(
        [metrics.probability_of_improvement(u, v) for u, v in zip(x, y, strict=True)]
    )
    with pytest.raises(ValueError, match="NaN"):
        S.aggregate(np.array([[1.0, np.nan]]), np.ones((1, 2)))


# ------------------------------------------------------------------ Friedman + CD (autorank)
def test_friedman_cd_by_hand(tmp_path):
    pytest.importorskip("autorank")
    # 5 blocks, A > B > C in each: mean ranks 1, 2, 3;
    # chi2_F = 12 N / (k (k+1)) * (sum R^2 - k (k+1)^2 / 4) = 12*5/12 * (14 - 12) = 10
    blocks = np.arange(5.0)
    scores = {"A": blocks + 2, "B": blocks + 1, "C": blocks}
    r = S.friedman_cd(scores, png=tmp_path / "cd.png")
    assert r.statistic == pytest.approx(10.0)
    assert r.statistic == pytest.approx(st.friedmanchisquare(*scores.values()).statistic)
    assert r.p == pytest.approx(math.exp(-5))  # chi2 with 2 df: sf(x) = exp(-x/2)
    assert r.mean_ranks == {"A": 1.0, "B": 2.0, "C": 3.0}
    # Nemenyi: q_0.05 = 2.343 for k = 3 (Demsar 2006, Table 5a); CD = q sqrt(k(k+1)/(6N))
    assert r.cd == pytest.approx(2.343 * math.sqrt(12 / 30), abs=1e-3)
    assert open(r.png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="3\\+ methods"):
        S.friedman_cd({"A": blocks, "B": blocks})


# ------------------------------------------------------------------ the six verdicts
UP = [0.5, 1.2, 0.3, 0.9, 1.1, 0.7, 0.4]


def test_holds_and_reversed():
    t = V.column_tests(UP)
    assert t.p_holds == pytest.approx(2 / 128) and t.p_primary == pytest.approx(_scipy_flip_p(UP))
    assert V.classify(t).verdict == V.HOLDS
    assert V.classify(V.column_tests([-x for x in UP])).verdict == V.REVERSED
    # the same column after Holm in a family where the adjusted p passes alpha
    assert V.classify(t, p_adj=0.06).verdict == V.INCONCLUSIVE


def test_equivalent():
    t = V.column_tests([0.1, -0.1, 0.2, 0.0, 0.05, 0.1, -0.05])
    v = V.classify(t)
    assert v.verdict == V.EQUIVALENT and v.p == pytest.approx(1 / 128)
    assert V.classify(t, p_equiv_adj=0.2).verdict == V.INCONCLUSIVE


def test_inconclusive_gives_the_mde():
    v = V.classify(V.column_tests([1.0, -1.0, 2.0, 0.5, -0.5, 1.5]), min_effect=0.6)
    assert v.verdict == V.INCONCLUSIVE and "MDE" in v.reason and "0.6" in v.reason
    assert v.mde > 0.6
    # five seeds: the exact test cannot reach 0.05 whatever the effect
    assert V.classify(V.column_tests([1.0, 2, 3, 4, 5])).mde == math.inf
    assert V.classify(V.column_tests([1.0])).reason == "n = 1 < 2"


def test_vacuous_and_not_tested():
    t = V.column_tests([0.0, 0.0, 0.0, 0.3, 0.0, 0.2])
    assert V.classify(t).verdict == V.VACUOUS  # 4 of 6 seeds identical to the baseline
    assert V.classify(V.column_tests(UP), at_lower_edge=True).verdict == V.VACUOUS
    assert V.classify(V.column_tests(UP), premise_ok=False).verdict == V.NOT_TESTED


def test_non_inferiority_and_equivalence_kinds():
    near = [0.1, -0.1, 0.2, 0.01, 0.05, 0.1, -0.05]
    assert V.classify(V.column_tests(near, "non_inferiority")).verdict == V.HOLDS
    assert V.classify(V.column_tests(near, "equivalence")).verdict == V.HOLDS
    far = [x + 2 for x in UP]
    assert V.classify(V.column_tests(far, "equivalence")).verdict == V.REVERSED
    assert V.classify(V.column_tests([-x - 1 for x in UP], "non_inferiority")).verdict == V.REVERSED
    with pytest.raises(ValueError, match="kind"):
        V.column_tests(UP, "better")


def test_holm_family_adjusts_primary_and_equivalence_apart():
    fam = {
        ("c1", "T1"): V.column_tests(UP),
        ("c1", "T2"): V.column_tests(UP[:6]),
        ("c2", "T1"): V.column_tests([1.0, -1.0, 2.0, 0.5, -0.5, 1.5]),
    }
    adj = V.holm_family(fam)
    raw = [fam[k].p_primary for k in fam]
    assert [adj[k][0] for k in fam] == pytest.approx(list(S.holm(raw)))
    assert [adj[k][1] for k in fam] == pytest.approx(
        list(S.holm([fam[k].p_equivalent for k in fam]))
    )


def test_resampled_splits_use_nadeau_bengio():
    d = np.array([0.5, 1.2, 0.3, 0.9, 1.1, 0.7, 0.4])
    n, r = len(d), 300 / 1200
    se = math.sqrt((1 / n + r) * d.var(ddof=1))
    t = V.column_tests(d, split=(1200, 300))
    assert t.p_holds == pytest.approx(2 * st.t.sf(d.mean() / se, n - 1), rel=1e-9)
    assert t.p_primary == pytest.approx(S.nadeau_bengio(d, 1200, 300).p, rel=1e-9)
    assert t.test.method == "Nadeau-Bengio t"
    assert t.mde == pytest.approx(S.mde(n, t.sd) * math.sqrt(1 + n * r), rel=1e-9)
    # a negligible test share leaves the plain paired t: the TOST is statsmodels'
    x = np.array([0.1, -0.3, 0.2, 0.0, 0.25, 0.1])
    near = V.column_tests(x, split=(10**12, 1))
    assert near.p_equivalent == pytest.approx(S.tost(x, 0.5, method="t").p, rel=1e-6)
    with pytest.raises(ValueError, match="split=None"):
        V.column_tests([1.0], split=(1200, 300))


def test_sign_flip_tost_is_stats_tost():
    x = [0.1, -0.3, 0.2, 0.0, 0.25, 0.1, 0.45]
    assert V.column_tests(x).p_equivalent == S.tost(x, 0.5).p


def test_diffs_from_mapping_or_series():
    pd = pytest.importorskip("pandas")
    by_seed = {0: 1.0, 1: 2.0, 2: 3.0}
    assert S.sign_flip(by_seed) == S.sign_flip(pd.Series(by_seed)) == S.sign_flip([1, 2, 3])
