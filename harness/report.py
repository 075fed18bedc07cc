"""Suite reports: tables are pure pandas functions of the run records (style.md §12).

:func:`leaderboard` lays a suite out like the papers' tables: one row per regularizer spec, one
column per dataset (task), cells ``"mean ± std"`` of the test accuracy (%) over seeds, the best
mean of each column in bold. A suite may hold several tables (its stages' ``table`` keys:
compression, fine-tuning, ...); :func:`split_tables` cuts the records into them and
:func:`write_report` writes them all as Markdown, CSV and LaTeX, with one bar chart per table and
the plan-trace curves (li2020 Fig. 3) where an OT term logged them.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["leaderboard", "leaderboard_numbers", "write_report", "to_latex", "split_tables",
           "plot_table", "plot_traces", "slug", "write_index", "with_tuned"]


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


def slug(name: str) -> str:
    """A file-name-safe form of a table name (``"transfer+compression"`` -> ``transfer-compression``)."""
    import re

    return re.sub(r"[^A-Za-z0-9_.]+", "-", str(name)).strip("-").lower() or "table"


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
    d = d.assign(table=d["table"].where(d["table"].notna(), d["stage"]),
                 dataset=d["task"].where(d["task"].notna(), d["dataset"]))
    if "report" in d:
        d = d[d["report"].map(lambda v: v is not False and v == v)]  # NaN (old) counts as True
    out = {}
    for name in dict.fromkeys(d["table"]):
        sub = d[d["table"] == name]
        out[name] = sub.assign(job_stage=sub["stage"], stage=name)
    return out


def select_by_val(d):
    """Keep, for each row (spec without its grid point) and task, the grid point with the best
    mean validation accuracy over seeds; rename it to the row. Rows of stages without
    ``select: val`` pass through. Returns ``(records, choices)``, ``choices`` a list of
    ``(row, task, grid point, mean val accuracy)``."""
    import pandas as pd

    if "select" not in d or "row" not in d or not (d["select"] == "val").any():
        return d, []
    keep, choices = [d[d["select"] != "val"]], []
    sel = d[d["select"] == "val"]
    val = pd.to_numeric(sel["val_accuracy"], errors="coerce")
    for (row, task), g in sel.assign(v=val).groupby(["row", "dataset"], sort=False):
        means = g.groupby("method", sort=False)["v"].mean()
        if means.isna().all():
            raise ValueError(f"select: val needs validation accuracies; row {row!r} on {task!r} "
                             "has none (the dataset has no 'val' split)")
        best = means.idxmax()
        choices.append((row, task, best, float(means[best])))
        keep.append(g[g["method"] == best].drop(columns="v").assign(method=row))
    out = pd.concat(keep)
    order = {r: i for i, r in enumerate(dict.fromkeys(d["row"]))}  # the suite's row order
    return out.iloc[sorted(range(len(out)), key=lambda i: order[out["row"].iloc[i]])], choices


_TRACE = "trace of the plan  tr(P)"
_UNIT = (-0.02, 1.02)


def _finish(fig, ax, path, *, xlabel: str, ylabel: str, title: str, ylim=None) -> None:
    """Label, grid and legend a line plot; save it (PNG, 120 dpi) and close it unless ``path``
    is None (a panel of a larger figure)."""
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if path is not None:
        _save(fig, path)


def _save(fig, path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def numeric_axis(columns) -> tuple[str, list[float]] | None:
    """``("batch", [16, 32, ...])`` when every column ends in ``name=<number>[%]`` with one
    name (li2020 Table 4's batch sizes, Table 3's pre-training levels), else None."""
    import re

    found = [re.search(r"([A-Za-z_]+)=([0-9.]+)%?$", str(c)) for c in columns]
    if len(columns) < 2 or not all(found) or len({m.group(1) for m in found}) != 1:
        return None
    return found[0].group(1), [float(m.group(2)) for m in found]


def plot_lines(df, title: str, path) -> None:
    """Test accuracy (%) versus a numeric task axis (li2020 Table 4: batch size), one line per
    method, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean, std, n = leaderboard_numbers(df)
    name, xs = numeric_axis(mean.columns)
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for method in mean.index:
        m, s = mean.loc[method].to_numpy(float), std.loc[method].fillna(0).to_numpy(float)
        ax.errorbar(xs, m, yerr=s, marker="o", capsize=3, label=str(method))
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    _finish(fig, ax, path, xlabel=name, title=str(title),
            ylabel=f"test accuracy (%), mean ± std over {int(n.max().max())} seeds")


def plot_table(df, title: str, path) -> None:
    """Horizontal bar chart of one table: test accuracy (%) mean ± std per method, one bar
    group per task, the best mean of each task outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    mean, std, n = leaderboard_numbers(df)
    methods, tasks = list(mean.index), list(mean.columns)
    h = 0.8 / max(1, len(tasks))
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.42 * len(methods) * max(1, len(tasks)) ** 0.6))
    y = np.arange(len(methods))
    lo = np.nanmin((mean - std).to_numpy()) if mean.size else 0.0
    for i, task in enumerate(tasks):
        m, s = mean[task].to_numpy(), std[task].fillna(0).to_numpy()
        pos = y + (i - (len(tasks) - 1) / 2) * h
        bars = ax.barh(pos, m, h * 0.9, xerr=s, capsize=2, label=str(task), alpha=0.85)
        best = np.nanargmax(m) if np.isfinite(m).any() else None
        if best is not None:
            bars[best].set_edgecolor("black")
            bars[best].set_linewidth(1.5)
        for p, v, e in zip(pos, m, s):
            if np.isfinite(v):
                ax.text(v + e, p, f"  {v:.1f}", va="center", fontsize=7)
    ax.set_yticks(y, [str(m) for m in methods])
    ax.invert_yaxis()
    ax.set_xlim(max(0.0, (lo if np.isfinite(lo) else 0.0) - 5.0), 100.0)
    ax.set_xlabel(f"test accuracy (%), mean ± std over {int(n.max().max()) if n.size else 0} "
                  "seeds")
    ax.set_title(str(title))
    ax.grid(axis="x", alpha=0.3)
    if len(tasks) > 1:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _trace_frame(df):
    """Long frame (method, tap, epoch, seed, matched) of the per-epoch plan traces."""
    import pandas as pd

    rows = []
    if "epochs" not in df:
        return pd.DataFrame(rows)
    for _, r in df.iterrows():
        epochs = r["epochs"] if isinstance(r["epochs"], list) else []
        for e in epochs:
            for k, v in e.items():
                if k.endswith("/matched"):
                    tap = k[:-len("/matched")]
                    term, _, short = tap.partition("/")  # "omega_p/penultimate"
                    rows.append({"method": r.get("method") or r["regularizer"],
                                 "task": r["dataset"], "tap": short if "+" not in str(
                                     r["regularizer"]) and short else tap,
                                 "epoch": int(e.get("epoch", 0)) + 1, "seed": r["seed"],
                                 "matched": float(v)})
    return pd.DataFrame(rows)


def plot_traces(df, title: str, path) -> bool:
    """li2020 Fig. 3: the trace of the transport plan along training, per method and tap, mean
    ± std over seeds: in the neurons view the share of neurons matched to their own index
    (1 for Omega_I, 1/d for Omega_U); in the samples view (lohit2020) the share of each example's
    mass sent to the same example. Returns False (and writes nothing) when no OT term of the
    table logged a square plan."""
    tr = _trace_frame(df)
    if tr.empty:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taps = list(dict.fromkeys(tr["tap"]))  # one panel per layer (li2020 Fig. 3 and S1)
    fig, axes = plt.subplots(1, len(taps), figsize=(1.0 + 5.5 * len(taps), 3.8), sharey=True,
                             squeeze=False)
    for ax, tap in zip(axes[0], taps):
        sub = tr[tr["tap"] == tap]
        for (method, task), g in sub.groupby(["method", "task"], sort=False):
            st = g.groupby("epoch")["matched"].agg(["mean", "std"]).fillna(0.0)
            label = " · ".join(str(p) for p, many in ((method, sub["method"].nunique() > 1),
                                                      (task, sub["task"].nunique() > 1))
                               if many) or str(method)
            ax.plot(st.index, st["mean"], label=label)
            ax.fill_between(st.index, st["mean"] - st["std"], st["mean"] + st["std"], alpha=0.2)
        _finish(fig, ax, None, xlabel="epoch", ylabel=_TRACE if ax is axes[0][0] else "",
                ylim=_UNIT, title=f"{title}: {tap}")
    fig.suptitle("trace of the plan along training (li2020 Fig. 3)", fontsize=10)
    _save(fig, path)
    return True


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
                rows.append({"tap": tap, "order": i, "task": r["dataset"],
                             "method": r.get("method") or r["regularizer"], "trace": v})
    if not rows:
        return None
    t = pd.DataFrame(rows)
    several = t["method"].nunique() > 1
    t["column"] = t["task"] + (" · " + t["method"] if several else "")
    taps = t.groupby("tap")["order"].min().sort_values().index
    out = t.groupby(["tap", "column"], sort=False)["trace"].mean().unstack("column")
    return out.reindex(index=taps, columns=list(dict.fromkeys(t["column"])))


def plot_layer_traces(table, title: str, path) -> None:
    """li2020 Fig. 2: trace of the plan versus layer depth, one line per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    x = range(len(table.index))
    for col in table.columns:
        ax.plot(x, table[col], marker="o", label=str(col))
    ax.set_xticks(list(x), [str(t) for t in table.index], rotation=30, ha="right")
    _finish(fig, ax, path, xlabel="layer (input → output)", ylabel=_TRACE, ylim=_UNIT,
            title=f"{title}: neurons matching their initial role (li2020 Fig. 2)")


def _with_time(table, df):
    """``table`` plus a column of the mean wall time (s) of a job of each row."""
    import pandas as pd

    row = df["method"].where(df["method"].notna(), df["regularizer"]) if "method" in df \
        else df["regularizer"]
    t = pd.to_numeric(df["wall_time"], errors="coerce").groupby(row).mean() \
        if "wall_time" in df else pd.Series(dtype=float)
    out = table.copy()
    out["s / job"] = [f"{t[i]:.1f}" if i in t and pd.notna(t[i]) else "-" for i in out.index]
    return out


def _paper_side(d, mean):
    """``(Reference, (values, text), claims)`` of a table whose stage names a paper table."""
    from .reference import evaluate_claims, paper_numbers, reference_from_config

    refs = [r for r in d["reference"] if isinstance(r, dict)] if "reference" in d else []
    if not refs:
        return None, None, []
    ref = reference_from_config(refs[0])
    row = d["method"].where(d["method"].notna(), d["regularizer"]) if "method" in d \
        else d["regularizer"]
    specs = dict(zip(row, d["regularizer"]))
    paper = paper_numbers(ref, [(r, specs[r]) for r in mean.index], list(mean.columns))
    claims = evaluate_claims(ref.claims, mean, paper[0], specs)
    return ref, paper, claims


def _beside(table, paper_text, ref):
    """Our columns, each followed by the paper's column it mirrors."""
    out = table[[]].copy()
    for col in table.columns:
        out[col] = table[col]
        if col in paper_text.columns:
            out[f"paper: {ref.columns.get(col, '?')}"] = paper_text[col]
    return out


def _claims_markdown(claims, ref) -> str:
    lines = [f"Claims of {ref.paper} Table {ref.table}, counted per task column:\n"]
    for c in claims:
        verdict = {True: "**holds** in our run", False: "**does not hold** in our run",
                   None: "not measurable (a row is missing)"}[c["holds"]]
        lines.append(f"- `{c['claim']}`: ours {c['ours']} of {c['ours_of']} task(s), paper "
                     f"{c['paper']} of {c['paper_of']}: {verdict}")
    return "\n".join(lines) + "\n"


def with_tuned(df, keys):
    """The records of the jobs ``keys``, in that order, plus the re-runs of a searched best
    point (``otransfer tune``, :mod:`harness.tune`) whose anchor job is among ``keys``, each
    right after its anchor (the tuned row follows its regularizer's rows). Of a row's re-runs,
    only the latest search's best point is kept."""
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


def write_report(suite: str, storage: str | None = None,
                 out_dir: str | os.PathLike | None = None,
                 results_root: str | os.PathLike = "results",
                 keys=None, plots: bool = True) -> dict[str, Path]:
    """Write ``leaderboard.{md,csv,tex}`` of ``suite`` (records in ``storage``) to ``out_dir``
    (default ``<results_root>/<suite>``), one section per table, and the PNG plots
    (``<table>.png``, ``<table>_trace.png``); return the paths. ``keys``: count only these jobs
    (the current expansion of the suite file; records of other configs, e.g. ``--set`` runs,
    share the study)."""
    import pandas as pd

    from . import records

    storage = storage or records.default_storage(suite, results_root)
    out = Path(out_dir) if out_dir is not None else Path(results_root) / suite
    out.mkdir(parents=True, exist_ok=True)
    df = records.records_frame(storage, suite)
    if keys is not None:  # rows in the suite's order, not the order the jobs ran in
        df = with_tuned(df, keys)
    tables = split_tables(df)
    if not tables:
        raise ValueError(f"no completed runs of suite {suite!r} in {storage}")
    paths = {"md": out / "leaderboard.md", "csv": out / "leaderboard.csv",
             "tex": out / "leaderboard.tex", "runs": out / "runs.csv"}
    md = [f"# {suite}: test accuracy (%), mean ± std over seeds; best in bold\n"]
    tex, flat = [], []
    for name, d in tables.items():
        d, choices = select_by_val(d)
        mean, std, n = leaderboard_numbers(d)
        seeds = int(n.max().max()) if n.size else 0
        table = _with_time(leaderboard(d), d)
        ref, paper, claims = _paper_side(d, mean)
        if ref is not None:
            table = _beside(table, paper[1], ref)
        md += [f"## {name}\n", f"{seeds} seed(s) per cell; `s / job`: mean wall time of one "
               "training run (this machine)."
               + (f" `paper: X`: {ref.paper} Table {ref.table}, column X (results/reference/)."
                  if ref is not None else "") + "\n", table.to_markdown(), ""]
        if claims:
            md.append(_claims_markdown(claims, ref))
        if choices:
            md.append("Hyper-parameters chosen on the validation split (best mean validation "
                      "accuracy over seeds):\n\n" + "\n".join(
                          f"- {row} · {task}: `{point}` (val {100 * v:.1f} %)"
                          for row, task, point, v in choices) + "\n")
        layers = layer_trace_table(d)
        if layers is not None:
            md += ["Trace of the exact plan between the trained network's neurons and the "
                   "teacher's, per layer, after training (li2020 Fig. 2; mean over seeds):\n",
                   layers.round(3).to_markdown(), ""]
            if plots:
                png = out / f"{slug(name)}_layers.png"
                plot_layer_traces(layers, name, png)
                paths[f"layers:{name}"] = png
                md.append(f"![{name}: trace per layer]({png.name})\n")
        if plots:
            png = out / f"{slug(name)}.png"
            plot_table(d, f"{suite}: {name}", png)
            paths[f"png:{name}"] = png
            md.append(f"![{name}]({png.name})\n")
            if numeric_axis(mean.columns) is not None:  # accuracy vs batch size (Table 4)
                line = out / f"{slug(name)}_lines.png"
                plot_lines(d, f"{suite}: {name}", line)
                paths[f"lines:{name}"] = line
                md.append(f"![{name}: accuracy versus {numeric_axis(mean.columns)[0]}]"
                          f"({line.name})\n")
            trace = out / f"{slug(name)}_trace.png"
            if plot_traces(d, name, trace):
                paths[f"trace:{name}"] = trace
                md.append(f"![{name}: trace of the plan]({trace.name})\n")
        tex += [f"% {name}", to_latex(leaderboard(d, bold="\\textbf{{{}}}"))]
        f = mean.stack().rename("mean").to_frame().join(std.stack().rename("std")) \
            .join(n.stack().rename("n")).reset_index()
        f = f.rename(columns={"regularizer": "method", "dataset": "task"})
        f.insert(0, "table", name)
        if ref is not None:
            f["paper"] = [paper[0].at[r, c] for r, c in zip(f["method"], f["task"])]
            f["paper_column"] = [ref.columns.get(c, "") for c in f["task"]]
        flat.append(f)
    searches = sorted(out.glob("tune_*.md"))  # otransfer tune's tables of trials
    if searches:
        md += ["## Searches (`otransfer tune`)\n"] + [f"- [{p.stem}]({p.name})" for p in searches]
    paths["md"].write_text("\n".join(md))
    # every job behind the tables, one row per seed (the records, flattened)
    cols = [c for c in ("key", "stage", "table", "task", "method", "regularizer", "seed",
                        "test_accuracy", "best_val_accuracy", "val_accuracy", "wall_time",
                        "git_sha") if c in df]
    runs = pd.concat(tables.values())
    if "job_stage" in runs:
        runs = runs.assign(stage=runs["job_stage"])
    runs = runs[cols]
    runs.to_csv(paths["runs"], index=False)
    pd.concat(flat, ignore_index=True).to_csv(paths["csv"], index=False)
    paths["tex"].write_text("\n".join(tex))
    return paths


def write_index(results_root: str | os.PathLike = "results", suites: dict | None = None) -> Path:
    """Write ``<results_root>/README.md``: a link to every suite's leaderboard and plots, the
    solver benchmark, the step-time benchmark and the papers' reference numbers.

    ``suites``: ``{name: description}`` of the suites to list (default: every directory of
    ``results_root`` holding a ``leaderboard.md``).
    """
    root = Path(results_root)
    lines = ["# Results\n",
             "Regenerated by `otransfer report --all`. Every table is a view of the run records "
             "(`runs.csv` beside it: one row per job and seed, exported from the Optuna storage "
             "`runs.sqlite3`); the papers' numbers are in "
             "[reference/](reference/README.md).\n", "## Suites\n"]
    dirs = sorted(d for d in root.iterdir() if (d / "leaderboard.md").is_file()) \
        if root.is_dir() else []
    suites = suites or {}
    for d in dirs:
        desc = " ".join(str(suites.get(d.name, "")).split())
        pngs = sorted(p.name for p in d.glob("*.png"))
        lines.append(f"- **{d.name}**: [leaderboard]({d.name}/leaderboard.md)"
                     + (f" ([CSV]({d.name}/leaderboard.csv), [LaTeX]({d.name}/leaderboard.tex), "
                        f"[runs]({d.name}/runs.csv))")
                     + (" · plots: " + ", ".join(f"[{p[:-4]}]({d.name}/{p})" for p in pngs)
                        if pngs else "") + (f"  \n  {desc}" if desc else ""))
    if not dirs:
        lines.append("(none yet: `otransfer run SUITE`)")
    lines += ["", "## Benchmarks\n"]
    for rel, what in (("solvers/bench.md", "OT solvers on the papers' problems "
                                           "(`otransfer solvers bench`)"),
                      ("solvers/asv.md", "asv timing of the solvers (`otransfer report solvers`)"),
                      ("regularizers/step_time.md", "training-step time / L2-SP step "
                                                    "(`otransfer regularizers bench`)")):
        if (root / rel).is_file():
            lines.append(f"- [{rel}]({rel}): {what}")
    for png in sorted((root / "solvers").glob("*.png")) if (root / "solvers").is_dir() else []:
        lines.append(f"- [solvers/{png.name}](solvers/{png.name})")
    path = root / "README.md"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
