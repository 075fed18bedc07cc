"""The six verdicts of a claim on one column, from the tests of
:mod:`harness.reports.stats`; ``docs/statistics.md`` states the rules for readers.

:func:`column_tests` runs the tests of one claim on one column's per-seed differences
``d_s = A(s) - B(s)`` (the claim ``A > B``, ``A >= B`` or ``A ~ B`` of the register,
``claims/*.yaml``); :func:`holm_family` adjusts the p-values of a family (one paper table:
every claim on every column, premises not included); :func:`classify` turns one column's
tests and its adjusted p-values into a :class:`Verdict`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Mapping

import numpy as np

from harness.reports import stats

__all__ = [
    "HOLDS",
    "REVERSED",
    "EQUIVALENT",
    "INCONCLUSIVE",
    "VACUOUS",
    "NOT_TESTED",
    "VERDICTS",
    "KINDS",
    "ColumnTests",
    "Verdict",
    "column_tests",
    "holm_family",
    "classify",
]

HOLDS, REVERSED, EQUIVALENT = "holds", "reversed", "equivalent"
INCONCLUSIVE, VACUOUS, NOT_TESTED = "inconclusive", "vacuous", "not tested"
VERDICTS = (HOLDS, REVERSED, EQUIVALENT, INCONCLUSIVE, VACUOUS, NOT_TESTED)
#: The register's kinds of test (``Entry.kind_of_test``).
KINDS = ("superiority", "non_inferiority", "equivalence")


@dataclass(frozen=True)
class ColumnTests:
    """The tests of one claim on one column (p-values not yet adjusted for the family).

    ``p_holds`` / ``p_reversed``: two-sided-scale p-values (twice the one-sided sign-flip
    p-value, at most 1) of the test whose rejection says the claim holds / is reversed:

    * superiority ``A > B``: ``d`` above / below 0;
    * non-inferiority ``A >= B``: ``d`` above / below ``-margin``;
    * equivalence ``A ~ B``: the TOST within ``+-margin`` / ``d`` beyond ``+margin`` or below
      ``-margin`` (the smaller of the two).

    ``p_primary = min(p_holds, p_reversed)`` is the p-value adjusted in the family (for
    superiority it is the two-sided p-value). ``p_equivalent``: the TOST within ``+-margin``.
    All from the sign-flip test, or from the Nadeau-Bengio t test (``split``). ``test``: that
    test of ``d`` (mean and interval, :mod:`harness.reports.stats`). ``zeros``: seeds with
    ``d == 0`` exactly. ``mde``: :func:`stats.mde` at ``alpha``, points.
    """

    kind: str
    margin: float
    test: stats.Test
    p_holds: float
    p_reversed: float
    p_equivalent: float
    zeros: int
    sd: float
    mde: float
    alpha: float

    @property
    def n(self) -> int:
        return self.test.n

    @property
    def p_primary(self) -> float:
        return min(self.p_holds, self.p_reversed)


@dataclass(frozen=True)
class Verdict:
    """``verdict``: one of :data:`VERDICTS`; ``reason``: the rule that fired, one line;
    ``p``: the family-adjusted p-value it used (NaN when none); ``mde``: points."""

    verdict: str
    reason: str
    p: float = math.nan
    mde: float = math.nan


def _two(p: float) -> float:
    return min(1.0, 2 * p)


def column_tests(
    diffs,
    kind: str = "superiority",
    margin: float = 0.5,
    alpha: float = 0.05,
    level: float = stats.LEVEL,
    split: tuple[int, int] | None = None,
) -> ColumnTests:
    """Run the tests of one claim on one column's per-seed differences ``d = A - B``.

    ``kind``: one of :data:`KINDS`; ``margin``: the register's margin (points); ``alpha``:
    the level of the MDE (pass ``alpha / m`` for the worst case of Holm over ``m``).
    ``split``: ``(n_train, n_test)`` when each seed re-draws its train/test split from one
    pool: every p-value then comes from the Nadeau-Bengio corrected t test (2+ seeds) instead
    of the sign-flip test; None (a fixed test pool): the sign-flip test.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: use one of {', '.join(KINDS)}")
    d = stats._diffs(diffs)
    if split is not None and len(d) < 2:
        raise ValueError(f"{len(d)} seed(s): the Nadeau-Bengio test needs 2+; pass split=None")
    if split is None:
        test, sf = stats.sign_flip(d, level), stats.sign_flip_p
    else:
        test = stats.nadeau_bengio(d, *split, level=level)

        def sf(x, alternative="two-sided", shift=0.0):
            return stats.nadeau_bengio_p(x, *split, alternative, shift)

    eq = max(sf(d, "greater", -margin), sf(d, "less", margin)) if len(d) else 1.0
    if kind == "superiority":
        ph, pr = _two(sf(d, "greater")), _two(sf(d, "less"))
    elif kind == "non_inferiority":
        ph, pr = _two(sf(d, "greater", -margin)), _two(sf(d, "less", -margin))
    else:
        ph, pr = eq, min(_two(sf(d, "greater", margin)), _two(sf(d, "less", -margin)))
    sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
    return ColumnTests(
        kind,
        float(margin),
        test,
        ph,
        pr,
        eq,
        int(np.sum(d == 0)),
        sd,
        stats.mde(len(d), sd, alpha, split=split),
        alpha,
    )


def holm_family(tests: Mapping[Hashable, ColumnTests]) -> dict[Hashable, tuple[float, float]]:
    """Holm inside one family: ``{key: (p_primary adjusted, p_equivalent adjusted)}`` for
    ``{(claim, column): ColumnTests}`` of every claim of the family on every column tested
    (premises and columns whose premise failed left out). The two sets are adjusted
    separately (:func:`harness.reports.stats.holm`)."""
    keys = list(tests)
    prim = stats.holm([tests[k].p_primary for k in keys])
    equi = stats.holm([tests[k].p_equivalent for k in keys])
    return {k: (float(p), float(e)) for k, p, e in zip(keys, prim, equi, strict=True)}


def classify(
    t: ColumnTests,
    p_adj: float | None = None,
    p_equiv_adj: float | None = None,
    *,
    alpha: float = 0.05,
    premise_ok: bool = True,
    at_lower_edge: bool = False,
    min_effect: float | None = None,
    zero_share: float = 0.5,
) -> Verdict:
    """The verdict of one claim on one column. The first rule that applies:

    1. **not tested** -- ``premise_ok`` is False (a premise of the family failed on this
       column; premises are checked first and are not repeated as claims);
    2. **vacuous** -- the selected term sits at the lower edge of its grid
       (``at_lower_edge``: the search picked the smallest weight, so the method is the
       baseline in disguise), or ``d == 0`` exactly on more than ``zero_share`` of the seeds
       (identical to its baseline on most seeds);
    3. **inconclusive (n < 2)** -- fewer than two matched seeds;
    4. **holds** / **reversed** -- the family-adjusted primary p-value ``p_adj`` (default:
       unadjusted ``t.p_primary``) is ``<= alpha``, in the claim's direction
       (``p_holds <= p_reversed``) / against it;
    5. **equivalent** -- a superiority or non-inferiority claim whose adjusted TOST p-value
       ``p_equiv_adj`` is ``<= alpha``: ``d`` lies within ``+-margin`` (no effect of interest);
    6. **inconclusive** -- otherwise; the reason gives the MDE at 80 % power beside the
       register's ``min_effect`` (``inf``: too few seeds for the exact test to reach alpha).
    """
    p = t.p_primary if p_adj is None else float(p_adj)
    pe = t.p_equivalent if p_equiv_adj is None else float(p_equiv_adj)
    if not premise_ok:
        return Verdict(NOT_TESTED, "a premise failed on this column")
    if at_lower_edge:
        return Verdict(VACUOUS, "selected term at the lower edge of its grid")
    if t.n and t.zeros > zero_share * t.n:
        return Verdict(VACUOUS, f"identical to the baseline on {t.zeros} of {t.n} seeds")
    if t.n < 2:
        return Verdict(INCONCLUSIVE, f"n = {t.n} < 2", mde=t.mde)
    if p <= alpha:
        holds = t.p_holds <= t.p_reversed
        side = "for" if holds else "against"
        return Verdict(
            HOLDS if holds else REVERSED, f"p = {p:.3g} <= {alpha} {side} the claim", p, t.mde
        )
    if t.kind != "equivalence" and pe <= alpha:
        return Verdict(EQUIVALENT, f"TOST p = {pe:.3g} <= {alpha} within +-{t.margin:g}", pe, t.mde)
    want = "" if min_effect is None else f" (effect of interest {min_effect:g})"
    return Verdict(INCONCLUSIVE, f"p = {p:.3g}; MDE {t.mde:.2g} pt at 80 % power{want}", p, t.mde)
