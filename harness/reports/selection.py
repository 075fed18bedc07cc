"""Hyper-parameter selection that cannot leak: ``select: val`` cells.

A ``select: val`` stage runs every grid point of a row for every seed; the report keeps one
point per row, task column and seed. Two rules (:data:`SELECTIONS`):

- ``"loso"`` (the default): leave-one-seed-out cross-fitting. Seed ``s`` gets the grid point
  with the best mean validation accuracy over the *other* seeds, and reports its own test
  accuracy there, so no seed's own data (validation or test) chooses its hyper-parameters.
  A cell with one seed (or whose other seeds have no validation accuracy) cannot do this: it
  falls back to the pooled rule for that seed and says so (``rule`` column of the choices,
  ``†`` note in the report), never silently.
- ``"pooled"``: the former rule, kept for comparison. One point per cell, the best mean
  validation accuracy over *all* seeds, each seed's test accuracy read there; a seed's own
  validation accuracy takes part in choosing its point.

Ties (equal scores after rounding to 12 decimals, so float summation order cannot decide) go to
the grid point listed first in the records (the suite's expansion order: axes in the order the
grid names them, values in the order listed).

Every choice is recorded (:func:`select_by_val`'s frame, ``selection.csv``): the point, its
position on each numeric axis (``lower`` / ``upper`` / ``interior``), the grid size (the
budget), and an ``edge`` flag when the point sits at the end of a numeric axis of at least
:data:`EDGE_MIN` values (a grid that was not wide enough). Where the budgets of a table's rows
differ, :func:`expected_max_frame` gives the expected maximum validation accuracy against the
budget (Dodge et al. 2019, "Show your work", §3, with the empirical CDF), so rows can be
compared at an equal budget.
"""

from __future__ import annotations

import json
from collections import Counter

SELECTIONS = ("loso", "pooled")
#: an axis needs at least this many values for a choice at its end to be flagged as an edge
EDGE_MIN = 3
_ROUND = 12  # decimals of a score compared for ties
_FALLBACK = "pooled (no other seed)"

__all__ = [
    "SELECTIONS",
    "EDGE_MIN",
    "parse_point",
    "select_by_val",
    "axis_positions",
    "budgets",
    "edge_summary",
    "expected_max",
    "expected_max_frame",
    "annotate",
    "with_budget",
    "selection_markdown",
]


def check_selection(selection: str) -> str:
    """``selection`` if it is one of :data:`SELECTIONS`, else a one-line ``ValueError``."""
    if selection not in SELECTIONS:
        raise ValueError(
            f"unknown selection {selection!r}: use one of {', '.join(SELECTIONS)} "
            "(loso: leave-one-seed-out, the default; pooled: the old rule)"
        )
    return selection


def parse_point(label: str, row: str) -> dict:
    """The grid point of a leaderboard label ``row (k1=v1, k2=v2)`` (values canonical JSON, as
    :func:`harness.experiments.suite_expand.job_label` writes them): ``{"k1": v1, ...}``;
    ``{}`` for a label without one."""
    rest = label[len(row) :].strip() if label.startswith(row) else ""
    if not (rest.startswith("(") and rest.endswith(")")):
        return {}
    body, out, dec = rest[1:-1], {}, json.JSONDecoder()
    while body:
        key, sep, body = body.partition("=")
        if not sep:
            return {}
        try:
            value, end = dec.raw_decode(body)
        except ValueError:
            return {}
        out[key.strip()] = value
        body = body[end:].lstrip(", ")
    return out


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def axis_positions(points: list[dict], chosen: dict) -> dict[str, tuple[str, int]]:
    """``{axis: (position, number of values)}`` of ``chosen`` among the grid ``points``, for
    each numeric axis: ``lower`` / ``upper`` at its smallest / largest value, else
    ``interior`` (categorical axes, e.g. a plan name, have no edge)."""
    out = {}
    for axis in dict.fromkeys(k for p in points for k in p):
        values = {p[axis] for p in points if axis in p}
        if axis not in chosen or not all(_numeric(v) for v in values):
            continue
        v = chosen[axis]
        pos = "lower" if v == min(values) else "upper" if v == max(values) else "interior"
        out[axis] = (pos, len(values))
    return out


def _pick(scores):
    """The first label (grid order) of the best rounded score; ``None`` when all are NaN."""
    r = scores.round(_ROUND)
    return None if r.isna().all() else r.index[int(r.fillna(-float("inf")).to_numpy().argmax())]


def _cell_choices(g, row: str, task: str, selection: str):
    """``(chosen records, choice dicts)`` of one ``select: val`` cell (one row and task)."""
    import pandas as pd

    order = list(dict.fromkeys(g["method"]))
    wide = g.pivot_table(
        index="method", columns="seed", values="v", aggfunc="mean", dropna=False
    ).reindex(order)
    if wide.isna().all().all():
        raise ValueError(
            f"select: val needs validation accuracies; row {row!r} on {task!r} "
            "has none (the dataset has no 'val' split)"
        )
    points = [parse_point(m, row) for m in order]
    pooled = wide.mean(axis=1)
    keep, out = [], []
    for seed in sorted(set(g["seed"])):
        rule, score = "pooled", pooled
        if selection == "loso":
            others = wide.drop(columns=[seed], errors="ignore").mean(axis=1)
            rule, score = ("loso", others) if others.notna().any() else (_FALLBACK, pooled)
        best = _pick(score)
        mine = g[(g["method"] == best) & (g["seed"] == seed)]
        keep.append(mine)
        pos = axis_positions(points, points[order.index(best)])
        edges = [a for a, (p, n) in pos.items() if p != "interior" and n >= EDGE_MIN]
        test = pd.to_numeric(mine["test_accuracy"], errors="coerce")
        out.append(
            {
                "row": row,
                "task": task,
                "seed": int(seed),
                "rule": rule,
                "point": best,
                "val_score": float(score[best]),
                "test_accuracy": float(test.mean()) if len(test) else float("nan"),
                "budget": len(order),
                "position": ", ".join(f"{a}={p}" for a, (p, _) in pos.items()),
                "edge": bool(edges),
                "edge_axes": " ".join(edges),
                "long_axis": any(n >= EDGE_MIN for _, n in pos.values()),
            }
        )
    return keep, out


CHOICE_COLUMNS = [
    "row",
    "task",
    "seed",
    "rule",
    "point",
    "val_score",
    "test_accuracy",
    "budget",
    "position",
    "edge",
    "edge_axes",
    "long_axis",
]


def select_by_val(d, selection: str = "loso"):
    """``(records, choices)``: of each ``select: val`` row (spec without its grid point) and
    task, per seed, the record of the grid point chosen by ``selection`` (module docstring),
    renamed to the row; rows of stages without ``select: val`` pass through. ``choices``: one
    row per (row, task, seed), columns :data:`CHOICE_COLUMNS` (``val_score``: the mean
    validation accuracy the choice maximised; ``budget``: the grid size; ``long_axis``: the grid
    has a numeric axis of at least :data:`EDGE_MIN` values, where an edge is flagged)."""
    import pandas as pd

    check_selection(selection)
    if "select" not in d or "row" not in d or not (d["select"] == "val").any():
        return d, pd.DataFrame(columns=CHOICE_COLUMNS)
    keep, choices = [d[d["select"] != "val"]], []
    sel = d[d["select"] == "val"]
    sel = sel.assign(v=pd.to_numeric(sel["val_accuracy"], errors="coerce"))
    for (row, task), g in sel.groupby(["row", "dataset"], sort=False):
        recs, rows = _cell_choices(g, row, task, selection)
        keep += [r.drop(columns="v").assign(method=row) for r in recs]
        choices += rows
    out = pd.concat(keep)
    order = {r: i for i, r in enumerate(dict.fromkeys(d["row"]))}  # the suite's row order
    out = out.iloc[sorted(range(len(out)), key=lambda i: order[out["row"].iloc[i]])]
    return out, pd.DataFrame(choices, columns=CHOICE_COLUMNS)


def _row_labels(d):
    """The leaderboard row of each record: the row of a ``select: val`` record, else its
    label (``method``; the spec when there is none)."""
    label = (
        d["method"].where(d["method"].notna(), d["regularizer"])
        if "method" in d
        else d["regularizer"]
    )
    if "select" in d and "row" in d:
        label = label.where(d["select"] != "val", d["row"])
    return label


def budgets(d):
    """Grid points behind each leaderboard row and task of the records ``d`` (before
    selection): a ``select: val`` row's grid size, 1 for any other row. A Series indexed by
    ``(row, task)``."""
    label = _row_labels(d)
    method = d["method"].where(d["method"].notna(), label) if "method" in d else label
    return method.groupby([label.rename("row"), d["dataset"].rename("task")], sort=False).nunique()


def expected_max(values, n: int) -> float:
    """E[max of ``n`` i.i.d. draws] from the empirical CDF of ``values`` (Dodge et al. 2019, §3,
    expected validation performance): ``Σ_i v_(i) ((i/N)^n − ((i−1)/N)^n)`` over the sorted
    values ``v_(1) ≤ … ≤ v_(N)``."""
    v = sorted(float(x) for x in values if x == x)
    if not v or n < 1:
        raise ValueError(
            f"expected_max needs at least one value and n >= 1 (got {len(v)} value(s), n = {n})"
        )
    N = len(v)
    return sum(x * ((i / N) ** n - ((i - 1) / N) ** n) for i, x in enumerate(v, start=1))


def expected_max_frame(d, table: str = ""):
    """Per row and task of the records ``d`` (before selection): the expected maximum
    validation accuracy (%) of ``n`` grid points drawn at random, ``n = 1..budget``, from its
    grid points' mean validation accuracies over seeds (:func:`expected_max`). Columns
    ``table, row, task, budget, n, expected_max_val``."""
    import pandas as pd

    val = (
        100.0 * pd.to_numeric(d["val_accuracy"], errors="coerce")
        if "val_accuracy" in d
        else pd.Series(float("nan"), index=d.index)
    )
    label = _row_labels(d)
    method = d["method"].where(d["method"].notna(), label) if "method" in d else label
    grid = val.groupby(
        [label.rename("row"), d["dataset"].rename("task"), method.rename("m")], sort=False
    ).mean()
    rows = []
    for (row, task), g in grid.groupby(level=[0, 1], sort=False):
        if g.notna().any():
            rows += [
                {
                    "table": table,
                    "row": row,
                    "task": task,
                    "budget": len(g),
                    "n": n,
                    "expected_max_val": expected_max(g.to_numpy(), n),
                }
                for n in range(1, len(g) + 1)
            ]
    return pd.DataFrame(rows, columns=["table", "row", "task", "budget", "n", "expected_max_val"])


def edge_summary(choices) -> dict:
    """Counts of edge selections: ``eligible`` (choices on a grid with a numeric axis of at
    least :data:`EDGE_MIN` values), ``edge`` (of those, at an end of such an axis), and the
    same per cell (row, task) — ``cells_edge``: cells with any seed's choice at an edge —
    and ``fallback``: choices that could not leave their seed out."""
    if choices is None or not len(choices):
        return {
            "choices": 0,
            "eligible": 0,
            "edge": 0,
            "cells": 0,
            "cells_eligible": 0,
            "cells_edge": 0,
            "fallback": 0,
        }
    elig = choices[choices["long_axis"].astype(bool)]
    cells = elig.groupby(["row", "task"], sort=False)["edge"].any()
    return {
        "choices": len(choices),
        "eligible": len(elig),
        "edge": int(elig["edge"].sum()),
        "cells": choices.groupby(["row", "task"]).ngroups,
        "cells_eligible": len(cells),
        "cells_edge": int(cells.sum()),
        "fallback": int((choices["rule"] == _FALLBACK).sum()),
    }


def annotate(table, choices):
    """``table`` (a leaderboard) with each ``select: val`` cell followed by its chosen point:
    the most chosen over seeds with its count when seeds differ (``"71.2 ± 3.0 · alpha=0.01
    (7/10)"``), and ``†`` when a seed's choice sits at a grid edge."""
    table = table.copy()
    if choices is None or not len(choices):
        return table
    for (row, task), g in choices.groupby(["row", "task"], sort=False):
        if row not in table.index or task not in table.columns or table.at[row, task] == "-":
            continue
        point, count = Counter(g["point"]).most_common(1)[0]
        short = ", ".join(
            f"{k.removeprefix(row + '.')}={json.dumps(v)}"  # kd.tau -> tau
            for k, v in parse_point(point, row).items()
        )
        text = table.at[row, task]
        if short:
            text += f" · {short}" + (f" ({count}/{len(g)})" if count < len(g) else "")
        if g["edge"].any():
            text += " †"
        table.at[row, task] = text
    return table


def with_budget(table, budget):
    """``table`` (a leaderboard) with a ``grid`` column after the first: the number of grid
    points behind each row (its budget; ``a/b`` when the task columns differ)."""
    out = table.copy()
    col = []
    for row in out.index:
        b = sorted({int(x) for (r, _), x in budget.items() if r == row})
        col.append("/".join(map(str, b)) or "-")
    out.insert(0, "grid", col)
    return out


_RULE_TEXT = {
    "loso": "leave-one-seed-out: each seed's point is the best mean validation accuracy over "
    "the *other* seeds, and that seed's test accuracy is reported there",
    "pooled": "pooled: one point per cell, the best mean validation accuracy over *all* seeds "
    "(each seed's own validation accuracy takes part in its choice)",
}


def budgets_differ(budget) -> bool:
    """Whether the rows of one table have different budgets (grid sizes)."""
    return budget is not None and len(set(int(x) for x in budget.to_numpy())) > 1


def selection_markdown(choices, selection: str, expmax=None, budget=None) -> str:
    """The report's paragraph on one table's ``select: val`` choices: the rule, the points
    chosen per cell (with their counts over seeds), the share of edge selections and, where
    the budgets differ, the expected maximum validation accuracy against the budget."""
    lines = []
    if choices is not None and len(choices):
        lines.append(
            f"Hyper-parameters chosen on the validation split ({_RULE_TEXT[selection]}; "
            "ties go to the point listed first in the grid; every seed's choice: "
            "[selection.csv](selection.csv)):\n"
        )
        for (row, task), g in choices.groupby(["row", "task"], sort=False):
            counts = Counter(g["point"]).most_common()
            pts = ", ".join(f"`{p}`" + (f" ×{c}" if len(counts) > 1 else "") for p, c in counts)
            edge = int(g["edge"].sum())
            lines.append(
                f"- {row} · {task}: {pts} (val {100 * g['val_score'].mean():.1f} %; "
                f"grid {int(g['budget'].iloc[0])})"
                + (f" † edge for {edge} of {len(g)} seed(s)" if edge else "")
            )
        s = edge_summary(choices)
        if s["eligible"]:
            lines.append(
                f"\n† Edge selections: {s['edge']} of {s['eligible']} choices "
                f"({100 * s['edge'] / s['eligible']:.0f} %; {s['cells_edge']} of "
                f"{s['cells_eligible']} cells) sit at an end of a numeric grid axis of "
                f"≥ {EDGE_MIN} values: the grid may be too narrow there."
            )
        if s["fallback"]:
            lines.append(
                f"\n{s['fallback']} choice(s) had no other seed to choose on (one "
                "seed): they fall back to the pooled rule (`rule` in selection.csv)."
            )
        lines.append("")
    if expmax is not None and len(expmax) and budgets_differ(budget):
        lines.append(_expmax_markdown(expmax))
    return "\n".join(lines) + ("\n" if lines else "")


def _expmax_markdown(expmax) -> str:
    """Rows x budgets ``n`` (1 and every row's own budget) of the expected maximum validation
    accuracy (%), mean over the task columns; ``-`` beyond a row's own grid."""
    ns = sorted({1, *map(int, expmax["budget"])})
    mean = expmax.groupby(["row", "n"], sort=False)["expected_max_val"].mean()
    rows = list(dict.fromkeys(expmax["row"]))
    head = "| row | grid | " + " | ".join(f"n = {n}" for n in ns) + " |"
    out = [
        "The rows' budgets differ: expected maximum validation accuracy (%) of `n` grid "
        "points drawn at random from the row's grid (Dodge et al. 2019, empirical CDF of its "
        "points' mean validation accuracies), mean over the task columns; compare rows at "
        "equal `n` (per task: [expected_max_val.csv](expected_max_val.csv)):\n",
        head,
        "|:--|--:|" + "--:|" * len(ns),
    ]
    for row in rows:
        top = int(expmax.loc[expmax["row"] == row, "budget"].max())
        cells = [f"{mean[(row, n)]:.1f}" if (row, n) in mean else "-" for n in ns]
        out.append(f"| {row} | {top} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def flat_budget(flat, budget):
    """``leaderboard.csv``'s rows of one table with a ``budget`` column (grid points) after
    ``n``."""
    b = [budget.get((r, c)) for r, c in zip(flat["method"], flat["task"], strict=True)]
    out = flat.copy()
    out.insert(list(out.columns).index("n") + 1, "budget", b)
    return out
