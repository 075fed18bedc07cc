"""The words of a suite report about its verdicts: the claims section of ``leaderboard.md``
(:func:`claims_markdown`), the lines ``otransfer run`` prints (:func:`verdict_summary`) and the
per-table Friedman test with its critical-difference diagram (:func:`friedman_markdown`).
The numbers come from :mod:`harness.reports.claim_verdicts` (``verdicts.csv``)."""

from __future__ import annotations

from pathlib import Path

from harness.reports.verdict_rules import VERDICTS

__all__ = ["LEVEL_TEXT", "claims_markdown", "verdict_summary", "friedman_markdown", "fmt", "counts"]

LEVEL_TEXT = (
    "α = 0.05 two-sided, Holm within each register family (premises and columns "
    "whose premise failed excluded)"
)


def fmt(x, spec: str) -> str:
    """``format(x, spec)``, ``-`` for None / NaN."""
    try:
        return "-" if x is None or x != x else format(float(x), spec)
    except (TypeError, ValueError):
        return str(x)


def counts(verdicts) -> str:
    """``"2 holds / 0 reversed / ... "`` over the six verdicts."""
    words = [str(v) for v in verdicts]
    return " / ".join(f"{words.count(w)} {w}" for w in VERDICTS)


def _tests_used(frame) -> str:
    notes = frame.drop_duplicates(["method", "test_note"])
    return "; ".join(f"{r.method} ({r.test_note})" for r in notes.itertuples())


def _paper_count(g) -> str:
    known = g["paper_holds"].dropna().astype(str)
    known = known[known.isin(["True", "False"])]
    return f"{int((known == 'True').sum())} of {len(known)}" if len(known) else "-"


def claims_markdown(frame, ref) -> str:
    """Premises then claims of one table (rows of ``verdicts.csv``): per claim the counts of
    the six verdicts beside the paper's count, then per column the mean difference with the
    primary test's interval, p, Holm-adjusted p, verdict, reason and MDE."""
    fams = ", ".join(dict.fromkeys(frame.loc[frame["kind"] == "claim", "family"]))
    tables = ", ".join(
        dict.fromkeys(
            f"{p} Table {t}" if p == p and p else "this suite (its own claims, no paper)"
            for p, t in zip(frame["paper"], frame["paper_table"].astype(str), strict=True)
        )
    )
    lines = [
        f"Premises and claims of {tables}, decided per task column "
        "from the paired per-seed differences A − B (points; same seed = same data and "
        f"initialisation). Primary test: {_tests_used(frame)}; 95 % interval of that "
        f"test. Level: {LEVEL_TEXT}; family {fams or '-'}. Verdicts: holds / reversed / "
        "equivalent (TOST within ±margin) / inconclusive (MDE at 80 % power beside) / "
        "vacuous (selected weight at the lower edge of its grid, or identical to the "
        "baseline on most seeds) / not tested (a premise failed). Premises are checked "
        "first, unadjusted, and are not repeated as claims (docs/statistics.md). These "
        "numbers: [verdicts.csv](verdicts.csv).\n"
    ]
    for (kind, claim), g in frame.groupby(["kind", "claim"], sort=False):
        entry = g["entry_id"].fillna("").iloc[0] or "unregistered"
        lines.append(
            f"- {kind} `{claim}` ({entry}, {g['test_kind'].iloc[0]}): "
            f"{counts(g['verdict'])} of {len(g)} column(s); paper {_paper_count(g)}"
        )
    lines += [
        "",
        "| | claim | task | n | mean A − B | interval | p | p (Holm) | verdict | "
        "reason | MDE | paper |",
        "|:--|:--|:--|--:|--:|:--|--:|--:|:--|:--|--:|:--|",
    ]
    for r in frame.itertuples():
        paper = {"True": "yes", "False": "no"}.get(str(r.paper_holds), "-")
        lines.append(
            f"| {r.kind} | `{r.claim}` | {r.task} | {r.n} | {fmt(r.mean_diff, '+.2f')}"
            f" | [{fmt(r.ci_low, '+.2f')}, {fmt(r.ci_high, '+.2f')}] | "
            f"{fmt(r.p, '.3g')} | {fmt(r.p_adj, '.3g')} | **{r.verdict}** | "
            f"{r.reason} | {fmt(r.mde, '.2f')} | {paper} |"
        )
    dropped = sorted(
        {
            (r.task, str(r.dropped_seeds))
            for r in frame.itertuples()
            if isinstance(r.dropped_seeds, str) and r.dropped_seeds
        }
    )
    if dropped:
        lines += [
            "",
            "Seeds recorded for one side only (dropped from the pairs): "
            + "; ".join(f"{t}: {s}" for t, s in dropped),
        ]
    return "\n".join(lines) + "\n"


def verdict_summary(verdicts_csv) -> str:
    """The verdicts of a suite's ``verdicts.csv`` as a few plain lines, premises first: per
    leaderboard and claim, the count of task columns of each of the six verdicts, the paper's
    count, and each column's mean paired difference with its interval (what ``otransfer run``
    prints before the leaderboards)."""
    from harness.reports.files import read_csv as _read_csv

    v = _read_csv(verdicts_csv)
    methods = ", ".join(dict.fromkeys(v["method"].dropna().astype(str))) if "method" in v else "-"
    lines = [
        f"Verdicts (paired per-seed differences A − B in points, mean [95 % interval of "
        f"the primary test: {methods or '-'}]; {LEVEL_TEXT}; a column whose premise "
        "does not hold has its claims not tested):"
    ]
    for (table, kind, claim), g in v.groupby(["table", "kind", "claim"], sort=False):
        fam = f" [{g['family'].iloc[0]}]" if "family" in g else ""
        cells = "; ".join(
            f"{r.task}: {fmt(r.mean_diff, '+.1f')} [{fmt(r.ci_low, '+.1f')}, "
            f"{fmt(r.ci_high, '+.1f')}]"
            for r in g.itertuples()
        )
        lines.append(
            f"  {table} · {kind} {claim}{fam}: {counts(g['verdict'])} of {len(g)} "
            f"(paper {_paper_count(g)})  — {cells}"
        )
    return "\n".join(lines) + "\n"


def friedman_markdown(per_seed, name: str, png: Path | None) -> tuple[str, Path | None]:
    """Friedman's test and the critical-difference diagram of one table's rows
    (:func:`harness.reports.stats.friedman_cd`): blocks are the (task, seed) pairs every row
    has. Returns the markdown line and the PNG written (None when skipped)."""
    from harness.reports import stats

    full = per_seed.dropna(axis=1, how="any")
    rows, blocks = full.shape
    if rows < 3 or blocks < 2:
        return (
            f"Friedman test of {name}: skipped ({rows} row(s), {blocks} complete "
            "(task, seed) block(s); needs 3 rows and 2 blocks).\n",
            None,
        )
    scores = {str(r): full.loc[r].to_numpy(float) for r in full.index}
    try:
        r = stats.friedman_cd(scores, png=png)
    except ValueError as exc:
        return f"Friedman test of {name}: skipped ({exc}).\n", None
    ranks = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.mean_ranks.items(), key=lambda kv: kv[1]))
    link = f" Diagram: [{png.name}]({png.name})." if png is not None else ""
    return (
        f"Friedman test of the {rows} rows over {blocks} (task, seed) blocks "
        f"(autorank, Nemenyi; Demšar 2006): χ² = {r.statistic:.2f}, p = {r.p:.3g}, "
        f"critical difference {r.cd:.2f} at α = {r.alpha:g}; mean ranks (1 = best): "
        f"{ranks}.{link}\n",
        (Path(r.png) if r.png else None),
    )
