"""``results/VERDICTS.md``: the page a researcher reads.

It leads with one line per claim of the register (``claims/*.yaml``): the aggregate across
columns (IQM of the per-seed differences, stratified bootstrap interval, probability of
improvement; :func:`harness.reports.stats.aggregate`), the replicability count
(:func:`harness.reports.stats.replicability`), the claim's verdict (:func:`claim_verdict`,
the rule of docs/statistics.md, "How the page is built"), the paper's count and the sign
agreement with the paper's means, the median MDE beside the register's minimum effect. Claims
no suite writes are listed as not run, with the reason. Then per family the per-column table,
and a forest plot per paper. Each suite's numbers come from
``results/confirmatory/<suite>/verdicts.csv`` when present (confirmatory), else
``results/<suite>/verdicts.csv`` (exploratory, labelled so on every line). A later round of
the confirmatory plan (``results/confirmatory-round<N>/``, ``otransfer confirm --round N``)
replaces round 1 on the page once it has reported every suite round 1 has, as the registers
say before the round runs (:func:`reported_round`); until then the page says how far it is.
"""

from __future__ import annotations

import math
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from harness.reports import verdict_rules as vr
from harness.reports.verdict_text import LEVEL_TEXT, counts, fmt

__all__ = [
    "EXPLORATORY",
    "EXPLORATORY_NOTE",
    "CONFIRMATORY",
    "ClaimSummary",
    "claim_verdict",
    "summarize",
    "reported_round",
    "suite_frames",
    "plot_verdicts",
    "write_verdicts",
]

EXPLORATORY = "EXPLORATORY"
EXPLORATORY_NOTE = (
    "exploratory: seeds were looked at while the protocol was designed; not a confirmatory result"
)
CONFIRMATORY = "confirmatory"
_COLOURS = {
    vr.HOLDS: "tab:green",
    vr.REVERSED: "tab:red",
    vr.EQUIVALENT: "tab:blue",
    vr.INCONCLUSIVE: "tab:gray",
    vr.VACUOUS: "tab:orange",
    vr.NOT_TESTED: "lightgray",
}
SCALE = (
    "CPU proxies of the papers' experiments: scikit-learn digits and generated `latent` "
    "tasks stand in for CIFAR- and ImageNet-scale data, MLPs and small CNNs for the "
    "ResNets (each suite's header says which)"
)


def _seeds(text) -> dict[int, float]:
    if not isinstance(text, str) or not text.strip():
        return {}
    return {int(s): float(v) for s, v in (x.split(":") for x in text.split())}


@dataclass(frozen=True)
class ClaimSummary:
    """One register claim over its tested columns (see :func:`claim_verdict`)."""

    verdict: str
    tested: int
    columns: int
    k: int
    k_reversed: int
    aggregate: object | None
    sign_agree: int
    sign_known: int
    mde: float


def _tested(g):
    return g[(g["verdict"] != vr.NOT_TESTED) & (g["n"] >= 2)]


def _aggregate(t):
    from harness.reports import stats

    cols = [(_seeds(a), _seeds(b)) for a, b in zip(t["values_a"], t["values_b"], strict=True)]
    common = sorted(set.intersection(*(set(a) & set(b) for a, b in cols))) if cols else []
    if len(common) < 2:
        return None
    a = [[ca[s] for ca, _ in cols] for s in common]
    b = [[cb[s] for _, cb in cols] for s in common]
    return stats.aggregate(a, b)


def claim_verdict(k: int, k_rev: int, agg, kind: str, margin: float, words: Sequence[str]) -> str:
    """The claim's verdict over its tested columns (``words``: their verdicts; ``k``,
    ``k_rev`` and ``agg`` come from the columns that are not vacuous), first rule
    that applies: not tested (no tested column); holds (``k >= 1`` columns by the
    replicability count and the aggregate interval on the claim's side: above 0 for
    superiority, above ``-margin`` for non-inferiority, inside ``+-margin`` for equivalence);
    reversed (symmetric: ``k_rev >= 1`` and the interval on the other side); equivalent (every
    tested column equivalent); vacuous (most tested columns vacuous); else inconclusive."""
    if not words:
        return vr.NOT_TESTED
    lo, hi = (agg.lo, agg.hi) if agg is not None else (math.nan, math.nan)
    side = {
        "superiority": lo > 0,
        "non_inferiority": lo > -margin,
        "equivalence": -margin < lo and hi < margin,
    }[kind]
    other = {
        "superiority": hi < 0,
        "non_inferiority": hi < -margin,
        "equivalence": lo > margin or hi < -margin,
    }[kind]
    if k >= 1 and side:
        return vr.HOLDS
    if k_rev >= 1 and other:
        return vr.REVERSED
    if all(w == vr.EQUIVALENT for w in words):
        return vr.EQUIVALENT
    if 2 * sum(w == vr.VACUOUS for w in words) > len(words):
        return vr.VACUOUS
    return vr.INCONCLUSIVE


def summarize(g) -> ClaimSummary:
    """:class:`ClaimSummary` of one claim's rows of ``verdicts.csv`` (all its columns)."""
    from harness.reports import stats

    tested = _tested(g)
    t = tested[tested["verdict"] != vr.VACUOUS]  # a term switched off is evidence of nothing
    kind, margin = str(g["test_kind"].iloc[0]), float(g["margin"].iloc[0])
    k = stats.replicability(t["p_holds"].to_numpy(float)).k if len(t) else 0
    k_rev = stats.replicability(t["p_reversed"].to_numpy(float)).k if len(t) else 0
    agg = _aggregate(t) if len(t) else None
    both = g[(g["n"] > 0) & g["paper_diff"].notna() & g["mean_diff"].notna()]
    agree = int(
        sum(
            (m > 0) == (p > 0) and (m < 0) == (p < 0)
            for m, p in zip(both["mean_diff"], both["paper_diff"], strict=True)
        )
    )
    mdes = [float(x) for x in t["mde"] if x == x]
    return ClaimSummary(
        claim_verdict(k, k_rev, agg, kind, margin, list(tested["verdict"])),
        len(tested),
        len(g),
        k,
        k_rev,
        agg,
        agree,
        len(both),
        statistics.median(mdes) if mdes else math.nan,
    )


def _reported(folder: Path) -> set[str]:
    return (
        {d.name for d in folder.iterdir() if (d / "verdicts.csv").is_file()}
        if folder.is_dir()
        else set()
    )


def reported_round(root: Path) -> tuple[str, str]:
    """``(folder, line)``: the folder of the confirmatory round the page reports and one line
    on the rounds. Round N (``confirmatory-round<N>/``) is reported once it has a
    ``verdicts.csv`` for every suite that round 1 (``confirmatory/``) has; the latest such
    round wins; otherwise round 1, with how far each later round is."""
    first = _reported(root / "confirmatory")
    later = sorted(
        (int(m.group(1)), d.name)
        for d in (root.iterdir() if root.is_dir() else ())
        if (m := re.fullmatch(r"confirmatory-round(\d+)", d.name)) and d.is_dir()
    )
    done = [(n, name) for n, name in later if first and first <= _reported(root / name)]
    if done:
        n, name = done[-1]
        return name, (
            f"Confirmatory suites: round {n} (`{name}/`: fresh seeds, every suite at one "
            "commit, `claims/*.yaml` `rounds:`); round 1 (`confirmatory/`) stays as the "
            "earlier round."
        )
    line = "; ".join(
        f"round {n} (`{name}/`) has reported {len(_reported(root / name) & first)} of "
        f"{len(first)} suites"
        for n, name in later
    )
    return "confirmatory", (
        f"Confirmatory suites: round 1 (`confirmatory/`). Later rounds: {line}; the page "
        "reports a round once it has every suite (`claims/*.yaml` `rounds:`)."
        if later
        else ""
    )


def suite_frames(
    root: Path, suites: Sequence[str] | None = None, folder: str | None = None
) -> dict[str, tuple]:
    """``{suite: (label, frame)}``: ``<round>/<suite>/verdicts.csv`` of the reported
    confirmatory round (:func:`reported_round`) when present (:data:`CONFIRMATORY`), else
    ``<suite>/verdicts.csv`` (:data:`EXPLORATORY`); each frame's ``folder`` column is the
    suite's report folder relative to ``root``. ``folder``: the round's folder when the caller
    has :func:`reported_round`'s answer (one reading of the folders for the whole page)."""
    from harness.reports.files import read_csv as _read_csv

    conf = root / (folder if folder is not None else reported_round(root)[0])
    names = (
        list(suites)
        if suites is not None
        else sorted(
            {
                d.name
                for base in (root, conf)
                if base.is_dir()
                for d in base.iterdir()
                if (d / "verdicts.csv").is_file()
            }
        )
    )
    out = {}
    for name in names:
        for label, path in (
            (CONFIRMATORY, conf / name / "verdicts.csv"),
            (EXPLORATORY, root / name / "verdicts.csv"),
        ):
            if path.is_file():
                f = _read_csv(path, dtype={"paper_table": str, "entry_id": str})
                if "entry_id" in f:  # older files (t intervals) are not read
                    folder = path.parent.relative_to(root).as_posix()
                    out[name] = (label, f.assign(suite=name, folder=folder))
                break
    return out


def _short(label: str) -> str:
    """The run's label on a line: the page's header says what each means."""
    return "confirmatory" if label == CONFIRMATORY else "EXPLORATORY"


def _claim_line(reg, fam, e, rows, not_run: Mapping) -> str:
    head = f"| {reg.paper} | {fam.table} | `{e.id}` | `{e.comparison}` | {e.paper_count} |"
    if rows is None or not len(rows):
        why = not_run.get(e.id)
        text = f"not run: {why}" if why else "not reported yet (no verdicts.csv)"
        return head + f" - | - | **{text}** | - | - | min {e.min_effect:g} | - |"
    s = summarize(rows)
    a = s.aggregate
    agg = (
        "-"
        if a is None
        else (
            f"{a.iqm:+.2f} [{a.lo:+.2f}, {a.hi:+.2f}]; "
            f"P(A>B) {a.poi:.2f} [{a.poi_lo:.2f}, {a.poi_hi:.2f}]"
        )
    )
    label = ", ".join(dict.fromkeys(_short(x) for x in rows["label"]))
    suites = ", ".join(
        f"[{x}]({folder}/leaderboard.md)"
        for x, folder in dict.fromkeys(zip(rows["suite"], rows["folder"], strict=True))
    )
    rev = f"; reversed on ≥ {s.k_reversed}" if s.k_reversed else ""
    return head + (
        f" {agg} | holds on ≥ {s.k} of {s.tested}{rev} | **{s.verdict}** | "
        f"{s.sign_agree} of {s.sign_known} | {fmt(s.mde, '.2f')} | "
        f"min {e.min_effect:g} | {suites} ({label}) |"
    )


def _header(frames: Mapping, exploratory: bool, root: Path, rounds: str) -> list[str]:
    from harness.reports.files import read_csv as _read_csv

    title = "# Verdicts: the papers' claims, checked at CPU scale" + (
        " (EXPLORATORY)" if exploratory else ""
    )
    lines = [
        title + "\n",
        "Regenerated by `otransfer report --all`. "
        + (
            f"**{EXPLORATORY}**: {EXPLORATORY_NOTE} (every suite without a "
            "`confirmatory/` folder).\n"
            if exploratory
            else "Every suite: the confirmatory run.\n"
        ),
        *([f"- **Rounds**: {rounds}"] if rounds else []),
        f"- **Scale**: {SCALE}.",
        "- **Test**: per task column, the paired per-seed differences A − B (points; same "
        "seed = same data and initialisation). Primary test: the exact sign-flip test when "
        "no seed trains on another's test examples (`test_pool: fixed`), else the "
        "Nadeau-Bengio corrected t test (seeds re-draw their split from one pool; "
        "normal differences assumed). Each suite's test is listed below.",
        f"- **Family and level**: {LEVEL_TEXT}; a family is one paper table or ablation of "
        "the register (`claims/*.yaml`).",
        "- **Verdicts**: holds / reversed / equivalent / inconclusive / vacuous / not "
        "tested, per column (docs/statistics.md); the claim's verdict aggregates them "
        '(docs/statistics.md, "How the page is built").',
        "- **Minimum detectable effects** (80 % power, α = 0.05 before Holm) are in the "
        "claim lines (median over tested columns) beside the register's minimum effect of "
        "interest; an MDE above it means the run could not see the effect the paper "
        "reports.",
        "",
        "| suite | run | seeds | primary test | budgets (grid points per row) |",
        "|:--|:--|--:|:--|:--|",
    ]
    for name, (label, f) in frames.items():
        seeds = int(f["n"].max()) if len(f) else 0
        tests = "; ".join(sorted({f"{m}" for m in f["method"].dropna()}))
        folder = f["folder"].iloc[0] if len(f) else name
        lines.append(
            f"| [{name}]({folder}/leaderboard.md) | {_short(label)} | "
            f"{seeds} | "
            f"{tests} | {_budgets(root / folder, _read_csv)} |"
        )
    return lines + [""]


def _budgets(base: Path, read) -> str:
    path = base / "leaderboard.csv"
    if not path.is_file():
        return "-"
    f = read(path)
    if "budget" not in f:
        return "-"
    b = f.groupby("method", sort=False)["budget"].max()
    return ", ".join(f"{m} {int(x)}" for m, x in b.items() if x == x)


def _family_section(fam, rows) -> list[str]:
    label = ", ".join(dict.fromkeys(_short(x) for x in rows["label"]))
    out = [
        f"### {fam.id}: table {fam.table} ({label})\n",
        "| suite | | claim | task | n | mean [interval] | p (Holm) | verdict | reason | MDE |",
        "|:--|:--|:--|:--|--:|:--|--:|:--|:--|--:|",
    ]
    for r in rows.itertuples():
        out.append(
            f"| {r.suite} | {r.kind} | `{r.claim}` | {r.task} | {r.n} | "
            f"{fmt(r.mean_diff, '+.2f')} [{fmt(r.ci_low, '+.2f')}, "
            f"{fmt(r.ci_high, '+.2f')}] | {fmt(r.p_adj, '.3g')} | **{r.verdict}** | "
            f"{r.reason} | {fmt(r.mde, '.2f')} |"
        )
    return out + [""]


def _not_run(regs) -> dict[str, str]:
    from harness.experiments.register import claims_not_run, written
    from harness.experiments.suite import SuiteError, available_suites

    try:
        done = written(available_suites())
    except (SuiteError, FileNotFoundError, ValueError):
        done = None
    return {x.id: x.reason for rows in claims_not_run(regs, done=done).values() for x in rows}


def write_verdicts(
    results_root: str | os.PathLike = "results",
    suites: Sequence[str] | None = None,
    plots: bool = True,
    regs=None,
) -> Path:
    """Write ``<results_root>/VERDICTS.md`` (module docstring) and ``verdicts_<paper>.png``.
    ``suites``: the suites to read (default: every folder with a ``verdicts.csv``);
    ``regs``: the register (default ``claims/``)."""
    import pandas as pd

    from harness.experiments.register import load_registers
    from harness.experiments.suite import slug
    from harness.training import safe_io

    root = Path(results_root)
    regs = load_registers() if regs is None else regs
    folder, rounds = reported_round(root)
    frames = suite_frames(root, suites, folder)
    allv = (
        pd.concat([f.assign(label=label) for label, f in frames.values()], ignore_index=True)
        if frames
        else None
    )
    exploratory = any(label == EXPLORATORY for label, _ in frames.values())
    lines = _header(frames, exploratory, root, rounds)
    not_run = _not_run(regs)
    lines += [
        "## The claims, one line each\n",
        "| paper | table | entry | comparison | paper's count | aggregate: IQM of A − B "
        "[95 % stratified bootstrap]; P(A > B) | replicability (columns) | verdict | "
        "sign agrees with paper | median MDE | min effect | suite |",
        "|:--|:--|:--|:--|:--|:--|:--|:--|:--|--:|:--|:--|",
    ]
    premises = []
    for reg in regs.values():
        for fam in reg.families:
            for e in fam.claims:
                rows = None if allv is None else allv[allv["entry_id"] == e.id]
                lines.append(_claim_line(reg, fam, e, rows, not_run))
            premises += [(reg, fam, p) for p in fam.premises]
    lines += [
        "",
        "Premises (checked first on every column; a column whose premise fails has "
        "its claims not tested):\n",
    ]
    for reg, fam, p in premises:
        rows = (
            None if allv is None else allv[(allv["entry_id"] == p.id) & (allv["kind"] == "premise")]
        )
        got = (
            counts(rows["verdict"]) + f" of {len(rows)} column(s)"
            if rows is not None and len(rows)
            else "not run"
        )
        lines.append(f"- {reg.paper} {fam.table} `{p.id}` `{p.comparison}`: {got}")
    lines += _unregistered(allv) + ["", "## Per family, per column\n"]
    for reg in regs.values():
        for fam in reg.families:
            rows = None if allv is None else allv[allv["family"] == fam.id]
            if rows is not None and len(rows):
                lines += _family_section(fam, rows)
    if plots and allv is not None:
        lines += ["## Forest plots\n"]
        for paper, pf in allv.groupby("paper", sort=True):
            png = root / f"verdicts_{slug(str(paper))}.png"
            plot_verdicts(pf, f"{paper}: paired differences and primary intervals", png)
            lines.append(
                f"- {paper}: [{png.name}]({png.name}) (green holds, red reversed, "
                "blue equivalent, grey inconclusive, orange vacuous, light grey not "
                "tested)"
            )
    path = root / "VERDICTS.md"
    safe_io.write_text(path, "\n".join(lines) + "\n", root)
    return path


def _unregistered(allv) -> list[str]:
    if allv is None:
        return []
    u = allv[allv["entry_id"].fillna("") == ""]
    if not len(u):
        return []
    return [
        "",
        "Written by a suite but in no register entry (flagged; Holm joins them to "
        "their paper table's family):\n",
    ] + [
        f"- {s} · {k} `{c}`: {counts(g['verdict'])} of {len(g)} column(s)"
        for (s, k, c), g in u.groupby(["suite", "kind", "claim"], sort=False)
    ]


def plot_verdicts(frame, title: str, path) -> None:
    """Forest plot of ``frame`` (rows of ``verdicts.csv`` with a ``suite`` column): one line
    per premise / claim and task, the mean paired difference (points) and the primary test's
    interval, coloured by the six verdicts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from harness.reports.files import save_figure as _save

    f = frame[frame["n"] > 0].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8.0, 1.2 + 0.17 * max(1, len(f))))
    for i, r in f.iterrows():
        colour = _COLOURS.get(str(r["verdict"]), "tab:gray")
        lo, hi = r["ci_low"], r["ci_high"]
        if lo == lo and np.isfinite(lo) and np.isfinite(hi):
            ax.plot([lo, hi], [i, i], color=colour, lw=1.5)
        ax.plot(r["mean_diff"], i, "o", ms=4, color=colour)
    labels = [
        f"{r['suite']} · {'premise ' if r['kind'] == 'premise' else ''}{r['claim']} · {r['task']}"
        for _, r in f.iterrows()
    ]
    ax.set_yticks(np.arange(len(f)), labels, fontsize=6)
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_xlabel("A − B (accuracy points): mean and the primary test's 95 % interval")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    from matplotlib.lines import Line2D

    shown = [v for v in _COLOURS if v in set(f["verdict"].astype(str))]
    ax.legend(
        [Line2D([], [], color=_COLOURS[v], marker="o", lw=1.5) for v in shown],
        shown,
        fontsize=6,
        loc="lower right",
        title="verdict",
        title_fontsize=6,
    )
    fig.tight_layout()
    _save(fig, path)
