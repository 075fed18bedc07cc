"""The leaderboards of a suite's records: pure pandas functions of the run records, no I/O
but reading a committed ``runs.csv`` (:func:`records_from_csv`).

:func:`leaderboard` lays a suite out like the papers' tables: one row per regularizer spec, one
column per dataset (task), cells ``"mean ± std"`` of the test accuracy (%) over seeds, the best
mean of each column in bold. A suite may hold several tables (its stages' ``table`` keys:
compression, fine-tuning, ...); :func:`split_tables` cuts the records into them.
:mod:`harness.reports.tables` writes them.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

from harness.reports.files import read_csv
from harness.reports.numbers import leaderboard_numbers

__all__ = [
    "diagnostics_of",
    "term_strength",
    "leaderboard",
    "to_latex",
    "split_tables",
    "select_by_val",
    "with_choices",
    "layer_trace_table",
    "with_time",
    "beside",
    "with_tuned",
    "flat_rows",
    "runs_frame",
    "records_from_csv",
]


def diagnostics_of(record) -> dict[str, float]:
    """``{"<term>/value_ratio": mean over epochs, "<term>/grad_ratio": ...}`` of one record:
    from its per-epoch logs, or from the ``diagnostics`` JSON column of a ``runs.csv``."""
    import json

    epochs = record.get("epochs")
    if isinstance(epochs, list):
        keys = sorted({k for e in epochs for k in e if k.startswith("diag/")})
        return {
            k[len("diag/") :]: sum(e[k] for e in epochs if k in e)
            / sum(1 for e in epochs if k in e)
            for k in keys
        }
    text = record.get("diagnostics")
    return json.loads(text) if isinstance(text, str) and text else {}


def term_strength(df):
    """Per row and column, each regularization term's strength against the cross-entropy:
    the mean over seeds of the per-epoch ``diag/<term>/value_ratio`` (term / CE) and
    ``diag/<term>/grad_ratio`` (‖∇_w term‖ / ‖∇_w CE‖ on the student) that training logs once
    an epoch (:func:`harness.training.loop.train`). ``None`` when the records carry no such logs.

    Returns a frame indexed by ``(regularizer, term)`` with one ``"value · grad"`` string per
    column (task), for the report: a term whose ratios are ~0 is too weak to move the student;
    one whose gradient dwarfs the cross-entropy's overrides the task.
    """
    import pandas as pd

    if "epochs" not in df and "diagnostics" not in df:
        return None
    rows = []
    for _, r in df.iterrows():
        for key, value in diagnostics_of(r).items():
            term, kind = key.rsplit("/", 1)
            rows.append(
                {
                    "regularizer": r["regularizer"],
                    "dataset": r["dataset"],
                    "term": term,
                    "kind": kind,
                    "value": value,
                }
            )
    if not rows:
        return None
    f = (
        pd.DataFrame(rows)
        .groupby(["regularizer", "term", "dataset", "kind"], sort=False)["value"]
        .mean()
        .unstack("kind")
    )
    cells = f.apply(
        lambda x: (
            f"{x.get('value_ratio', float('nan')):.3g} · {x.get('grad_ratio', float('nan')):.3g}"
        ),
        axis=1,
    )
    order_c = list(dict.fromkeys(df["dataset"]))
    return cells.unstack("dataset").reindex(
        columns=[c for c in order_c if c in set(f.index.get_level_values(2))]
    )


def leaderboard(df, stage: str | None = None, digits: int = 1, bold: str = "**{}**"):
    """Leaderboard of ``df`` (records): rows = regularizer spec (``method``, the spec plus its
    grid point, when the frame has it), columns = dataset, cells
    ``"mean ± std"`` of test accuracy (%) over seeds (population std), the best mean of each
    column wrapped in ``bold`` (all ties). Missing cells are ``"-"``. Pure: no I/O.
    """
    import pandas as pd

    mean, std, _ = leaderboard_numbers(df, stage)
    out = pd.DataFrame(index=mean.index, columns=mean.columns, dtype=object)
    for col in mean.columns:
        best = mean[col].max()
        for row in mean.index:
            m, s = mean.at[row, col], std.at[row, col]
            if pd.isna(m):
                out.at[row, col] = "-"
                continue
            cell = f"{m:.{digits}f} ± {s:.{digits}f}"
            if round(m, digits) == round(best, digits):
                cell = bold.format(cell)
            out.at[row, col] = cell
    out.index.name = "regularizer"
    out.columns.name = None
    return out


def to_latex(table) -> str:
    """A booktabs LaTeX tabular of a :func:`leaderboard` (built with ``bold="\\textbf{{{}}}"``)."""
    cols = list(table.columns)
    esc = lambda s: str(s).replace("_", r"\_").replace("±", r"$\pm$")  # noqa: E731
    lines = [
        r"\begin{tabular}{l" + "c" * len(cols) + "}",
        r"\toprule",
        " & ".join([esc(table.index.name or "")] + [esc(c) for c in cols]) + r" \\",
        r"\midrule",
    ]
    for idx, row in table.iterrows():
        lines.append(" & ".join([esc(idx)] + [esc(v) for v in row]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def split_tables(df) -> dict:
    """``{table name: records}`` of the reported jobs, in the suite's order.

    Each frame has its ``dataset`` column replaced by the job's ``task`` (the table's column) and
    a single ``stage`` value, so :func:`leaderboard` lays it out directly. Records written before
    tables existed (no ``table`` column) form one table, the stage comparing the most specs.
    """
    d = df
    if "status" in d:
        d = d[d["status"] == "completed"]
    if "table" not in d or d["table"].isna().all():
        return {"results": d} if len(d) else {}
    d = d.assign(
        table=d["table"].where(d["table"].notna(), d["stage"]),
        dataset=d["task"].where(d["task"].notna(), d["dataset"]),
    )
    if "report" in d:
        d = d[d["report"].map(lambda v: v is not False and v == v)]  # NaN (old) counts as True
    out = {}
    for name in dict.fromkeys(d["table"]):
        sub = d[d["table"] == name]
        out[name] = sub.assign(job_stage=sub["stage"], stage=name)
    return out


def select_by_val(d):
    """The pooled rule (:mod:`harness.reports.selection`, ``selection="pooled"``): for each row
    and task, the grid point with the best mean validation accuracy over all seeds. Returns
    ``(records, choices)``, ``choices`` a list of ``(row, task, grid point, mean val
    accuracy)``. Reports use leave-one-seed-out by default
    (:func:`harness.reports.tables.write_report`)."""
    from harness.reports.selection import select_by_val as select

    out, ch = select(d, "pooled")
    return out, list(dict.fromkeys((r.row, r.task, r.point, r.val_score) for r in ch.itertuples()))


def with_choices(table, choices):
    """``table`` (a :func:`leaderboard`) with each ``select: val`` cell followed by the grid
    point chosen for it on validation (``"71.2 ± 3.0 · alpha=0.01"``), so that no reader has
    to look the choice up below the table."""
    table = table.copy()
    for row, task, point, _ in choices:
        if row in table.index and task in table.columns and table.at[row, task] != "-":
            short = point[len(row) :].strip(" ()") if point.startswith(row) else point
            short = short.replace(f"{row}.", "")  # "omega_p.alpha=0.01" -> "alpha=0.01"
            if short:  # a row with no grid point has nothing to show
                table.at[row, task] = f"{table.at[row, task]} · {short}"
    return table


def layer_trace_table(df):
    """li2020 Fig. 2 as numbers: mean trace of the plan per tap (rows, in tap order) and
    task (columns; ``task · method`` when a table has several methods), or None."""
    import pandas as pd

    if "layer_traces" not in df:
        return None
    rows = []
    for _, r in df.iterrows():
        tr = r["layer_traces"]
        if isinstance(tr, dict):
            for i, (tap, v) in enumerate(tr.items()):
                rows.append(
                    {
                        "tap": tap,
                        "order": i,
                        "task": r["dataset"],
                        "method": r.get("method") or r["regularizer"],
                        "trace": v,
                    }
                )
    if not rows:
        return None
    t = pd.DataFrame(rows)
    several = t["method"].nunique() > 1
    t["column"] = t["task"] + (" · " + t["method"] if several else "")
    taps = t.groupby("tap")["order"].min().sort_values().index
    out = t.groupby(["tap", "column"], sort=False)["trace"].mean().unstack("column")
    return out.reindex(index=taps, columns=list(dict.fromkeys(t["column"])))


def with_time(table, df):
    """``table`` plus a column of the mean wall time (s) of a job of each row."""
    import pandas as pd

    row = (
        df["method"].where(df["method"].notna(), df["regularizer"])
        if "method" in df
        else df["regularizer"]
    )
    t = (
        pd.to_numeric(df["wall_time"], errors="coerce").groupby(row).mean()
        if "wall_time" in df
        else pd.Series(dtype=float)
    )
    out = table.copy()
    out["s / job"] = [f"{t[i]:.1f}" if i in t and pd.notna(t[i]) else "-" for i in out.index]
    return out


def beside(table, paper_text, ref):
    """Our columns, each followed by the paper's column it mirrors."""
    out = table[[]].copy()
    for col in table.columns:
        out[col] = table[col]
        if col in paper_text.columns:
            out[f"paper: {ref.columns.get(col, '?')}"] = paper_text[col]
    return out


def with_tuned(df, keys):
    """The records of the jobs ``keys``, in that order, plus the re-runs of a searched best
    point (``otransfer tune``, :mod:`harness.experiments.search`) whose anchor job is among
    ``keys``, each right after its anchor (the tuned row follows its regularizer's rows). Of a
    row's re-runs, only the latest search's best point is kept."""
    order = {k: float(i) for i, k in enumerate(keys)}
    own = df["key"].isin(order)
    if "anchor" in df and "tune_study" in df:
        tuned = df[~own & df["anchor"].isin(order)]
        latest = {}
        for _, r in tuned.sort_values("trial").iterrows():
            latest[(r["table"], r["method"])] = (r["tune_study"], r["tune_trial"])
        for _, r in tuned.iterrows():
            if latest[(r["table"], r["method"])] == (r["tune_study"], r["tune_trial"]):
                order[r["key"]] = order[r["anchor"]] + 0.5
    df = df[df["key"].isin(order)]
    return df.iloc[sorted(range(len(df)), key=lambda i: order[df["key"].iloc[i]])]


def flat_rows(name: str, mean, std, n, per_seed, ref, paper):
    """``leaderboard.csv``'s rows of one table: mean, std, n, the paper's number and every
    seed's value (so anyone can redo the paired tests)."""
    f = (
        mean.stack()
        .rename("mean")
        .to_frame()
        .join(std.stack().rename("std"))
        .join(n.stack().rename("n"))
        .reset_index()
    )
    f = f.rename(columns={"regularizer": "method", "dataset": "task"})
    f.insert(0, "table", name)
    if paper is not None:
        f["paper"] = [paper[0].at[r, c] for r, c in zip(f["method"], f["task"], strict=True)]
        f["paper_column"] = [ref.columns.get(c, "") for c in f["task"]]
    for seed in sorted(set(per_seed.columns.get_level_values("seed"))):  # redo the tests
        f[f"seed_{seed}"] = [
            per_seed[(c, seed)].get(r) if (c, seed) in per_seed else None
            for r, c in zip(f["method"], f["task"], strict=True)
        ]
    return f


def runs_frame(tables: Mapping, df):
    """``runs.csv``: every job behind the tables, one row per seed (the records, flattened),
    with the term strengths for reports from CSV."""
    import pandas as pd

    cols = [
        c
        for c in (
            "key",
            "stage",
            "table",
            "task",
            "method",
            "regularizer",
            "seed",
            "test_accuracy",
            "best_val_accuracy",
            "val_accuracy",
            "wall_time",
            "git_sha",
            "teacher_accuracy",
        )
        if c in df
    ]
    runs = pd.concat(tables.values())
    if "job_stage" in runs:
        runs = runs.assign(stage=runs["job_stage"])
    if "epochs" in runs or "diagnostics" in runs:  # the term strengths, for reports from CSV
        diag = [diagnostics_of(r) for _, r in runs.iterrows()]
        runs = runs.assign(diagnostics=[json.dumps(x, sort_keys=True) if x else "" for x in diag])
        cols.append("diagnostics")
    return runs[cols]


def records_from_csv(path: str | os.PathLike, jobs):
    """The records of a committed ``runs.csv`` (one row per reported job and seed, in the order
    of the report that wrote it), completed with what the suite's ``jobs`` say of each key
    (dataset, row, ``select``, reference, config), for
    :func:`harness.reports.tables.write_report` when the Optuna storage is not at hand (it is
    not committed). Rows of other keys (the re-runs of a searched point, ``otransfer tune``)
    keep their own ``method`` as row; per-epoch logs are not in the CSV."""
    df = read_csv(path, dtype={"key": str, "git_sha": str})
    by = {j.key: j for j in jobs}
    got = [by.get(k) for k in df["key"]]
    return df.assign(
        dataset=[j.dataset if j else t for j, t in zip(got, df["task"], strict=True)],
        row=[j.row if j else m for j, m in zip(got, df["method"], strict=True)],
        select=[j.select if j else None for j in got],
        report=True,
        reference=[dict(j.reference) if j and j.reference else None for j in got],
        config=[dict(j.config) if j else None for j in got],
        status="completed",
    )
