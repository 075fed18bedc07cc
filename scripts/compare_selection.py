"""Leave-one-seed-out against pooled selection on the committed results.

    PYTHONPATH=$PWD python scripts/compare_selection.py --out /tmp/selection [--results results]

Reports every suite of suites/ that has a committed ``results/<suite>/runs.csv`` twice, into
``OUT/loso/<suite>/`` and ``OUT/pooled/<suite>/`` (never over ``results/``; no plots), then
prints the verdicts that change, and the edge selections and budgets per table, as Markdown
(docs/selection.md quotes it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def report_both(results: Path, out: Path) -> list[str]:
    from harness.experiments.suite import available_suites, expand, load_suite
    from harness.reports.tables import records_from_csv, write_report

    done = []
    for name in available_suites():
        csv = results / name / "runs.csv"
        if not csv.is_file():
            continue
        suite = load_suite(name)
        jobs = expand(suite)
        refs = {}
        for j in jobs:
            if j.report and j.reference:
                refs.setdefault(j.table or j.stage, j.reference)
        for rule in ("loso", "pooled"):
            write_report(
                suite.name,
                out_dir=out / rule / name,
                plots=False,
                references=refs,
                records_df=records_from_csv(csv, jobs),
                selection=rule,
            )
        done.append(name)
    return done


def _read(path: Path):
    return pd.read_csv(path) if path.is_file() else None


def verdict_changes(out: Path, names: list[str]):
    keys = ["table", "kind", "claim", "task"]
    rows = []
    for name in names:
        a, b = (
            _read(out / "loso" / name / "verdicts.csv"),
            _read(out / "pooled" / name / "verdicts.csv"),
        )
        if a is None or b is None:
            continue
        m = b.merge(a, on=keys, suffixes=("_pooled", "_loso"))
        m["suite"] = name
        rows.append(m)
    m = pd.concat(rows, ignore_index=True)
    word = lambda v: str(v).split(" (")[0]  # noqa: E731  "not tested (premise ...)" -> word
    m["changed"] = m["verdict_pooled"].map(word) != m["verdict_loso"].map(word)
    return m


def edge_table(out: Path, names: list[str]):
    rows = []
    for rule in ("pooled", "loso"):
        for name in names:
            ch = _read(out / rule / name / "selection.csv")
            if ch is None:
                continue
            for table, g in ch.groupby("table", sort=False):
                elig = g[g["long_axis"]]
                cells = elig.groupby(["row", "task"])["edge"].any()
                b = g.groupby("row", sort=False)["budget"].max()
                rows.append(
                    {
                        "rule": rule,
                        "suite": name,
                        "table": table,
                        "choices": len(elig),
                        "edge": int(elig["edge"].sum()),
                        "cells": len(cells),
                        "cells_edge": int(cells.sum()),
                        "budgets": ", ".join(f"{r} {int(x)}" for r, x in b.items()),
                    }
                )
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path, help="scratch folder (not results/)")
    p.add_argument("--results", default=Path("results"), type=Path)
    args = p.parse_args(argv)
    if (
        args.out.resolve() == args.results.resolve()
        or args.results.resolve() in args.out.resolve().parents
    ):
        p.error("--out must not be inside --results: the committed results stay as they are")
    names = report_both(args.results, args.out)
    m = verdict_changes(args.out, names)
    ch = m[m["changed"]]
    print(f"## Verdicts: {int(m['changed'].sum())} of {len(m)} change (pooled -> loso)\n")
    print(
        ch[
            [
                "suite",
                "table",
                "kind",
                "claim",
                "task",
                "verdict_pooled",
                "verdict_loso",
                "mean_diff_pooled",
                "mean_diff_loso",
            ]
        ].to_markdown(index=False, floatfmt="+.2f")
    )
    e = edge_table(args.out, names)
    print("\n## Edge selections (numeric axis of >= 3 values) and budgets per table\n")
    print(e.to_markdown(index=False))
    for rule, g in e.groupby("rule"):
        print(
            f"\n{rule}: {g['edge'].sum()} of {g['choices'].sum()} choices "
            f"({100 * g['edge'].sum() / max(1, g['choices'].sum()):.0f} %), "
            f"{g['cells_edge'].sum()} of {g['cells'].sum()} cells at an edge"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
