"""Verdicts on a paper's claims from paired per-seed differences (docs/statistics.md).

A claim ``"A > B"`` on one column (task) of a leaderboard compares the two rows *seed by seed*:
the same seed is the same data subset and the same initialisation, so the per-seed difference
``d_s = acc_A(s) - acc_B(s)`` removes the variation the two runs share. Of the ``n`` matched seeds
(a seed present on one side only is dropped and listed):

* the mean difference ``d̄`` and its two-sided Student t confidence interval (default 95 %),
  ``d̄ ± t_{1-α/2, n-1} · s_d / √n`` with ``s_d`` the sample std (ddof 1) of the differences;
* the p-value of the two-sided Wilcoxon signed-rank test of the differences
  (:func:`scipy.stats.wilcoxon`; exact for small ``n``; 1.0 when every difference is 0);
* the verdict, from the interval alone: **holds** when it lies above 0, **reversed** when below
  0, **inconclusive** otherwise, and ``"inconclusive (n < 2)"`` with fewer than two pairs.

``A < B`` is tested as ``B > A``; ``>=`` and ``<=`` are tested as ``>`` and ``<`` (three seeds
cannot tell "at least as good" from "better"). A suite's *premises* (e.g. ``"kd > none"``: there
is something to transfer) are checked first with the same rule; in a column where a premise does
not hold, the claims are **not tested** and count neither way. The paper reports means only: its
count is of the columns where its means satisfy the claim.

With three seeds ``t_{0.975, 2} ≈ 4.30``: the interval is wide, and "inconclusive" is the honest
answer to most small differences; more seeds narrow it as ``1/√n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = [
    "LEVEL",
    "HOLDS",
    "REVERSED",
    "INCONCLUSIVE",
    "FEW",
    "NOT_TESTED",
    "MISSING",
    "Paired",
    "paired",
    "evaluate",
    "row_of",
    "paper_holds",
    "evaluate_claims",
    "summary_counts",
    "overall",
]

#: Default confidence level of the intervals.
LEVEL = 0.95
HOLDS, REVERSED, INCONCLUSIVE = "holds", "reversed", "inconclusive"
#: Fewer than two matched seeds: no interval.
FEW = "inconclusive (n < 2)"
#: A column whose premise did not hold (the verdict text carries the premise and its interval).
NOT_TESTED = "not tested"
#: A column where one of the claim's rows has no number.
MISSING = "not measurable"


@dataclass(frozen=True)
class Paired:
    """The paired comparison of two rows on one column.

    ``diffs``: ``{seed: a - b}`` of the matched seeds (accuracy points); ``dropped``: the seeds
    present on one side only. ``mean``, ``lo``, ``hi``: the mean difference and its t interval
    at ``level`` (NaN when ``n < 2``, ``lo``/``hi`` only); ``p``: the Wilcoxon signed-rank
    p-value (NaN when ``n < 2``).
    """

    diffs: Mapping[Any, float]
    dropped: tuple = ()
    mean: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    p: float = math.nan
    level: float = LEVEL
    verdict: str = FEW

    @property
    def n(self) -> int:
        return len(self.diffs)

    def interval(self, digits: int = 1) -> str:
        """``"+1.2 [-0.3, +2.7]"`` (points), or ``"n = 1"`` without an interval."""
        if self.n < 2:
            return f"n = {self.n}" + (f", {self.mean:+.{digits}f}" if self.n else "")
        return f"{self.mean:+.{digits}f} [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}]"


def paired(a: Mapping[Any, float], b: Mapping[Any, float], level: float = LEVEL) -> Paired:
    """Compare ``a`` and ``b`` (``{seed: accuracy}``, or Series indexed by seed) seed by seed.

    Parameters
    ----------
    a, b
        Per-seed values of the two rows on one column; NaN values count as absent.
    level
        Confidence level of the two-sided t interval of the mean difference, in (0, 1).

    Returns
    -------
    Paired
        ``verdict`` is :data:`HOLDS` when the interval lies above 0 (``lo > 0``),
        :data:`REVERSED` when below (``hi < 0``), :data:`INCONCLUSIVE` otherwise, and
        :data:`FEW` with fewer than two matched seeds.

    Notes
    -----
    ``d̄ ± t_{(1+level)/2, n-1} · s_d / √n``, ``s_d`` the sample std (ddof 1) of ``d_s``. With
    ``s_d = 0`` (every seed moved by the same amount) the interval is the point ``d̄``.
    """
    import numpy as np
    from scipy import stats

    assert 0 < level < 1, level
    a, b = _clean(a), _clean(b)
    seeds = [s for s in a if s in b]
    dropped = tuple(sorted((set(a) ^ set(b)), key=str))
    diffs = {s: a[s] - b[s] for s in seeds}
    d = np.array(list(diffs.values()), dtype=float)
    if len(d) == 0:
        return Paired(diffs, dropped, level=level)
    mean = float(d.mean())
    if len(d) < 2:
        return Paired(diffs, dropped, mean=mean, level=level)
    half = float(stats.t.ppf((1 + level) / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    lo, hi = mean - half, mean + half
    p = 1.0 if not np.any(d) else float(stats.wilcoxon(d).pvalue)
    verdict = HOLDS if lo > 0 else REVERSED if hi < 0 else INCONCLUSIVE
    return Paired(diffs, dropped, mean, lo, hi, p, level, verdict)


def _clean(x) -> dict:
    items = x.items() if hasattr(x, "items") else dict(x).items()
    return {k: float(v) for k, v in items if v is not None and v == v}


def evaluate(
    claims: Sequence[str],
    ours,
    paper=None,
    specs: Mapping[str, str] | None = None,
    premises: Sequence[str] = (),
    level: float = LEVEL,
) -> list[dict]:
    """Premises, then claims, decided per column from paired per-seed differences.

    Parameters
    ----------
    claims, premises
        ``"ROW > ROW"`` strings (:func:`harness.experiments.reference.parse_claim`); a row is
        named by our row name or, when unique, by its regularizer spec.
    ours
        Per-seed accuracies (%): rows = our row names, columns = a ``(task, seed)``
        MultiIndex (:func:`harness.reports.tables.leaderboard_seeds`).
    paper
        The paper's means laid out like ours (rows = our row names, columns = our tasks), or
        None.
    specs
        ``{row name: regularizer spec}``.

    Returns
    -------
    list of dict
        One per premise (``kind="premise"``) then per claim (``kind="claim"``): ``claim``,
        ``columns`` (one dict per task: ``task``, ``verdict``, ``n``, ``mean``, ``lo``, ``hi``,
        ``p``, ``dropped``, ``paper`` (bool or None), ``premise`` (the failed premise's text
        and interval, or None)), the counts ``holds``, ``reversed``, ``inconclusive``,
        ``not_tested``, ``missing``; ``ours`` (= ``holds``) / ``ours_of`` (columns tested),
        ``paper`` / ``paper_of``, and ``verdict`` (:func:`overall`).
    """
    from harness.experiments.reference import parse_claim

    specs = dict(specs or {})
    tasks = list(dict.fromkeys(ours.columns.get_level_values(0))) if len(ours.columns) else []
    out, failed = [], {t: None for t in tasks}  # task -> "premise, interval" that failed first
    for kind, texts in (("premise", premises), ("claim", claims)):
        for text in texts:
            c = parse_claim(text)
            left, right = (c.left, c.right) if c.op in (">", ">=") else (c.right, c.left)
            a, b = row_of(ours.index, left, specs), row_of(ours.index, right, specs)
            cols = []
            for task in tasks:
                col = {
                    "task": task,
                    "n": 0,
                    "mean": math.nan,
                    "lo": math.nan,
                    "hi": math.nan,
                    "p": math.nan,
                    "dropped": (),
                    "premise": None,
                    "paper": paper_holds(c, paper, specs, task),
                }
                if (
                    a is None
                    or b is None
                    or ours.loc[a, task].isna().all()
                    or ours.loc[b, task].isna().all()
                ):
                    col["verdict"] = MISSING
                else:
                    r = paired(ours.loc[a, task], ours.loc[b, task], level)
                    col.update(
                        n=r.n,
                        mean=r.mean,
                        lo=r.lo,
                        hi=r.hi,
                        p=r.p,
                        dropped=r.dropped,
                        verdict=r.verdict,
                        interval=r.interval(),
                    )
                if kind == "claim" and failed[task] is not None:
                    col["premise"] = failed[task]
                    col["verdict"] = f"{NOT_TESTED} (premise failed: {failed[task]})"
                if kind == "premise" and col["verdict"] != HOLDS and failed[task] is None:
                    failed[task] = f"{c}, {col.get('interval', col['verdict'])}"
                cols.append(col)
            res = {"claim": str(c), "kind": kind, "columns": cols, **summary_counts(cols)}
            res["ours"], res["ours_of"] = (
                res["holds"],
                res["holds"] + res["reversed"] + res["inconclusive"],
            )
            known = [x["paper"] for x in cols if x["paper"] is not None]
            res["paper"], res["paper_of"] = sum(known), len(known)
            res["verdict"] = overall(res)
            out.append(res)
    return out


def summary_counts(columns: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """``holds`` / ``reversed`` / ``inconclusive`` (with ``n < 2``) / ``not_tested`` /
    ``missing`` counts of per-column verdicts."""
    v = [c["verdict"] for c in columns]
    return {
        "holds": v.count(HOLDS),
        "reversed": v.count(REVERSED),
        "inconclusive": sum(x.startswith(INCONCLUSIVE) for x in v),
        "not_tested": sum(x.startswith(NOT_TESTED) for x in v),
        "missing": v.count(MISSING),
    }


def overall(res: Mapping[str, int]) -> str:
    """One word across columns: ``holds`` / ``reversed`` when so on more than half of the
    tested columns, ``inconclusive`` otherwise; ``not tested`` when every measurable column's
    premise failed, ``not measurable`` when no column has both rows."""
    tested = res["holds"] + res["reversed"] + res["inconclusive"]
    if not tested:
        return NOT_TESTED if res["not_tested"] else MISSING
    if 2 * res["holds"] > tested:
        return HOLDS
    if 2 * res["reversed"] > tested:
        return REVERSED
    return INCONCLUSIVE


def row_of(index, name: str, specs: Mapping[str, str]) -> str | None:
    if name in index:
        return name
    hits = [r for r, s in specs.items() if s == name and r in index]
    return hits[0] if len(hits) == 1 else None


def paper_holds(c, paper, specs, task) -> bool | None:
    """Whether the paper's means satisfy claim ``c`` on ``task`` (None: a number is missing)."""
    if paper is None or task not in getattr(paper, "columns", ()):
        return None
    a, b = row_of(paper.index, c.left, specs), row_of(paper.index, c.right, specs)
    if a is None or b is None:
        return None
    x, y = paper.at[a, task], paper.at[b, task]
    if not (x == x and y == y):
        return None
    return bool(c.test(float(x), float(y)))


def evaluate_claims(
    claims: Sequence[str],
    ours,
    paper,
    specs: Mapping[str, str],
    premises: Sequence[str] = (),
    level: float | None = None,
) -> list[dict]:
    """Decide ``premises`` then ``claims`` per column from paired per-seed differences.

    ``ours``: per-seed accuracies (%), rows = our row names, columns = ``(task, seed)``
    (:func:`harness.reports.tables.leaderboard_seeds`); ``paper``: the paper's means, rows = our row
    names, columns = our tasks; ``specs``: row name -> spec. One dict per premise and claim; see
    :func:`harness.reports.verdicts.evaluate` (``ours`` / ``ours_of``: columns where it holds /
    columns tested; ``paper`` / ``paper_of``; ``verdict``).
    """
    return evaluate(claims, ours, paper, specs, premises, LEVEL if level is None else level)
