"""Suite reports: tables are pure pandas functions of the run records (style.md §12).

:func:`leaderboard` lays a suite out like the papers' tables: one row per regularizer spec, one
column per dataset (task), cells ``"mean ± std"`` of the test accuracy (%) over seeds, the best
mean of each column in bold. :func:`write_report` writes it as Markdown, CSV and LaTeX.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["leaderboard", "leaderboard_numbers", "write_report", "to_latex"]


def leaderboard_numbers(df, stage: str | None = None):
    """``(mean, std, n)`` frames of test accuracy (%) by regularizer (rows) x dataset (cols).

    ``df`` has columns ``regularizer``, ``dataset``, ``seed``, ``test_accuracy`` (a fraction) and
    optionally ``stage`` / ``status``; only completed rows count. ``stage``: keep that stage only
    (default: the stage with the most distinct regularizers, the later on ties: the students).
    """
    import pandas as pd

    d = df
    if "status" in d:
        d = d[d["status"] == "completed"]
    if "stage" in d and len(d):
        if stage is None:  # the stage comparing the most specs (students, not the teacher)
            order = list(dict.fromkeys(d["stage"]))
            width = d.groupby("stage")["regularizer"].nunique()
            stage = max(order, key=lambda s: (width[s], order.index(s)))
        d = d[d["stage"] == stage]
    # rows: "method" (spec + grid point) when recorded, else the spec
    row = d["method"].where(d["method"].notna(), d["regularizer"]) if "method" in d \
        else d["regularizer"]
    d = d.assign(acc=100.0 * pd.to_numeric(d["test_accuracy"]), regularizer=row)
    order_r = list(dict.fromkeys(d["regularizer"]))
    order_c = list(dict.fromkeys(d["dataset"]))
    g = d.groupby(["regularizer", "dataset"], sort=False)["acc"]
    mean = g.mean().unstack("dataset").reindex(index=order_r, columns=order_c)
    std = g.std(ddof=0).unstack("dataset").reindex(index=order_r, columns=order_c)
    n = g.count().unstack("dataset").reindex(index=order_r, columns=order_c)
    return mean, std, n


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
    lines = [r"\begin{tabular}{l" + "c" * len(cols) + "}", r"\toprule",
             " & ".join([esc(table.index.name or "")] + [esc(c) for c in cols]) + r" \\",
             r"\midrule"]
    for idx, row in table.iterrows():
        lines.append(" & ".join([esc(idx)] + [esc(v) for v in row]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def write_report(suite: str, storage: str | None = None,
                 out_dir: str | os.PathLike | None = None,
                 results_root: str | os.PathLike = "results",
                 keys=None) -> dict[str, Path]:
    """Write ``leaderboard.{md,csv,tex}`` of ``suite`` (records in ``storage``) to ``out_dir``
    (default ``<results_root>/<suite>``); return the paths. ``keys``: count only these jobs
    (the current expansion of the suite file; records of other configs, e.g. ``--set`` runs,
    share the study)."""
    from . import records

    storage = storage or records.default_storage(suite, results_root)
    out = Path(out_dir) if out_dir is not None else Path(results_root) / suite
    out.mkdir(parents=True, exist_ok=True)
    df = records.records_frame(storage, suite)
    if keys is not None:
        df = df[df["key"].isin(set(keys))]
    if df.empty:
        raise ValueError(f"no completed runs of suite {suite!r} in {storage}")
    table = leaderboard(df)
    mean, std, n = leaderboard_numbers(df)
    paths = {"md": out / "leaderboard.md", "csv": out / "leaderboard.csv",
             "tex": out / "leaderboard.tex"}
    seeds = int(n.max().max()) if n.size else 0
    header = (f"# {suite}: test accuracy (%), mean ± std over {seeds} seed(s); best in bold\n\n")
    paths["md"].write_text(header + table.to_markdown() + "\n")
    flat = mean.stack().rename("mean").to_frame().join(std.stack().rename("std")) \
        .join(n.stack().rename("n")).reset_index()
    flat.to_csv(paths["csv"], index=False)
    paths["tex"].write_text(to_latex(leaderboard(df, bold="\\textbf{{{}}}")))
    return paths
