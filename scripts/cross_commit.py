"""Compare the same jobs run at two commits, and against the committed confirmatory records.

    python scripts/cross_commit.py ROOT_A ROOT_B [--committed results/confirmatory]

ROOT_A and ROOT_B are ``--results`` folders of ``otransfer run SUITE --set seeds=[...]`` made at
two checkouts (``git worktree add``); every suite folder with a ``runs.csv`` in both is matched
on job key. Prints, per suite, how many jobs have bit-identical test and validation accuracies
at the two commits, and how many of ROOT_A's equal the committed record of the same key.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def _runs(path: Path) -> dict[str, dict]:
    return {r["key"]: r for r in csv.DictReader(path.open())} if path.is_file() else {}


def _compare(a: dict, b: dict, cols=("test_accuracy", "best_val_accuracy")) -> tuple:
    keys = sorted(set(a) & set(b))
    same = sum(all(a[k][c] == b[k][c] for c in cols if c in a[k] and c in b[k]) for k in keys)
    diff = max((abs(float(a[k][cols[0]]) - float(b[k][cols[0]])) for k in keys), default=0.0)
    return len(keys), same, 100 * diff


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root_a", type=Path)
    ap.add_argument("root_b", type=Path)
    ap.add_argument("--committed", type=Path, default=Path("results/confirmatory"))
    args = ap.parse_args(argv)
    suites = sorted(
        p.name for p in args.root_a.iterdir() if (args.root_b / p.name / "runs.csv").is_file()
    )
    print("| suite | commits | jobs matched | bit-identical | largest test difference |")
    print("|---|---|---:|---:|---:|")
    for s in suites:
        a, b = _runs(args.root_a / s / "runs.csv"), _runs(args.root_b / s / "runs.csv")
        shas = "/".join(sorted({r["git_sha"][:7] for r in (*a.values(), *b.values())}))
        n, same, d = _compare(a, b)
        print(f"| {s} | {shas} | {n} | {same} | {d:.2f} pt |")
    print()
    print("| suite | jobs re-run | equal to the committed record (test) | largest difference |")
    print("|---|---:|---:|---:|")
    for s in suites:
        a, c = _runs(args.root_a / s / "runs.csv"), _runs(args.committed / s / "runs.csv")
        n, same, d = _compare(a, c, cols=("test_accuracy",))
        print(f"| {s} | {n} | {same} | {d:.2f} pt |")


if __name__ == "__main__":
    main()
