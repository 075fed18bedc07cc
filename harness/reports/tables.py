"""Suite reports: tables are pure pandas functions of the run records (style.md §12).

:func:`leaderboard` lays a suite out like the papers' tables: one row per regularizer spec, one
column per dataset (task), cells ``"mean ± std"`` of the test accuracy (%) over seeds, the best
mean of each column in bold. A suite may hold several tables (its stages' ``table`` keys:
compression, fine-tuning, ...); :func:`split_tables` cuts the records into them and
:func:`write_report` writes them all as Markdown, CSV and LaTeX, with one bar chart per table and
the plan-trace curves (li2020 Fig. 3) where an OT term logged them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

from harness.experiments.suite import slug
from harness.reports.figures import (  # noqa: F401  (moved there; still importable here)
    numeric_axis,
    plot_layer_traces,
    plot_lines,
    plot_table,
    plot_traces,
    with_teacher_accuracy,
)

# the reports' file I/O (harness.reports.files), under the names this module always used
from harness.reports.files import CSV_LIMIT  # noqa: E402,F401
from harness.reports.files import read_csv as _read_csv  # noqa: E402,F401
from harness.reports.files import save_figure as _save  # noqa: E402,F401
from harness.reports.files import write_csv as _write_csv  # noqa: E402,F401
from harness.reports.numbers import accuracies as _accuracies  # noqa: F401  (moved there; still importable here)
from harness.reports.numbers import leaderboard_numbers, leaderboard_seeds
from harness.training import safe_io

__all__ = [
    "leaderboard",
    "leaderboard_numbers",
    "write_report",
    "to_latex",
    "split_tables",
    "plot_table",
    "plot_traces",
    "slug",
    "write_index",
    "with_tuned",
    "leaderboard_seeds",
    "records_from_csv",
    "report_suite",
    "report_all",
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
    accuracy)``. Reports use leave-one-seed-out by default (:func:`write_report`)."""
    from harness.reports.selection import select_by_val as select

    out, ch = select(d, "pooled")
    return out, list(dict.fromkeys((r.row, r.task, r.point, r.val_score) for r in ch.itertuples()))


def _with_choices(table, choices):
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


def _with_time(table, df):
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


def _paper_side(d, mean, seeds, reference=None, choices=None, suite: str = "", name: str = ""):
    """``(Reference, (values, text), rows)`` of a table whose stage names a paper table:
    ``reference`` (the current suite's block) or else the one recorded with the jobs; ``rows``:
    its premises and claims per column, not yet Holm-adjusted
    (:func:`harness.reports.claim_verdicts.table_rows`)."""
    from harness.experiments.reference import paper_numbers, reference_from_config
    from harness.experiments.register_claims import registered_claims, with_register
    from harness.reports import claim_verdicts as cv

    refs = [r for r in d["reference"] if isinstance(r, dict)] if "reference" in d else []
    if reference is None and not refs:  # an ablation: the register's entries located here
        return None, None, _located_rows(d, seeds, choices, suite, name)
    cfg = reference if reference is not None else refs[0]
    ref = reference_from_config(with_register(cfg, registered_claims(suite, name, cfg)))
    row = (
        d["method"].where(d["method"].notna(), d["regularizer"])
        if "method" in d
        else d["regularizer"]
    )
    specs = dict(zip(row, d["regularizer"]))
    # claims of one's own (a stage's `claims:`) have no paper to print beside
    paper = (
        paper_numbers(ref, [(r, specs[r]) for r in mean.index], list(mean.columns))
        if ref.paper
        else None
    )
    rows = cv.table_rows(
        ref,
        seeds,
        None if paper is None else paper[0],
        specs,
        name,
        cv.designs(d),
        cv.lower_edges(choices),
        suite,
    )
    return ref, paper, rows


def _located_rows(d, seeds, choices, suite: str, name: str) -> list:
    """The premises and claims the register locates in table ``name`` of ``suite`` when the
    table names no paper table (an ablation), one family at a time, on all its tasks."""
    from harness.experiments.reference import Reference
    from harness.experiments.register_claims import located_claims
    from harness.reports import claim_verdicts as cv

    row = (
        d["method"].where(d["method"].notna(), d["regularizer"])
        if "method" in d
        else d["regularizer"]
    )
    specs, rows = dict(zip(row, d["regularizer"])), []
    for (paper, table), cs in located_claims(suite, name).items():
        ref = Reference(
            paper,
            table,
            {},
            {},
            claims=tuple(dict.fromkeys(c.text for c in cs if c.kind == "claim")),
            premises=tuple(dict.fromkeys(c.text for c in cs if c.kind == "premise")),
        )
        rows += cv.table_rows(
            ref, seeds, None, specs, name, cv.designs(d), cv.lower_edges(choices), suite
        )
    return rows


def _beside(table, paper_text, ref):
    """Our columns, each followed by the paper's column it mirrors."""
    out = table[[]].copy()
    for col in table.columns:
        out[col] = table[col]
        if col in paper_text.columns:
            out[f"paper: {ref.columns.get(col, '?')}"] = paper_text[col]
    return out


def with_tuned(df, keys):
    """The records of the jobs ``keys``, in that order, plus the re-runs of a searched best
    point (``otransfer tune``, :mod:`harness.experiments.search`) whose anchor job is among ``keys``, each
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


def write_report(
    suite: str,
    storage: str | None = None,
    out_dir: str | os.PathLike | None = None,
    results_root: str | os.PathLike = "results",
    keys=None,
    plots: bool = True,
    references: Mapping | None = None,
    records_df=None,
    selection: str = "loso",
    page: Mapping | None = None,
) -> dict[str, Path]:
    """Write ``leaderboard.{md,csv,tex}`` of ``suite`` (records in ``storage``) to ``out_dir``
    (default ``<results_root>/<suite>``), one section per table, the PNG plots
    (``<table>.png``, ``<table>_trace.png``) and, for tables with a paper reference, the
    paired verdicts of its premises and claims (``verdicts.csv``); return the paths.

    ``keys``: count only these jobs (the current expansion of the suite file; records of other
    configs, e.g. ``--set`` runs, share the study). ``references``: ``{table: reference
    block}`` of the current suite file (claims and premises are a view: editing them changes
    no job), else the block recorded with the jobs. ``records_df``: the records themselves
    (:func:`records_from_csv`) instead of reading ``storage``; plots of per-epoch logs the
    frame lacks are linked when an earlier report drew them. ``selection``: how ``select: val``
    rows choose their grid point, ``"loso"`` (leave-one-seed-out) or ``"pooled"`` (the old
    rule; :mod:`harness.reports.selection`); every choice goes to ``selection.csv``.
    ``page``: what ``index.html`` (:func:`harness.reports.html.write_page`) shows besides the
    report: ``description``, ``suite_text``, ``command``.
    """
    import pandas as pd

    from harness.experiments import records
    from harness.reports.selection import check_selection

    check_selection(selection)
    out = Path(out_dir) if out_dir is not None else Path(results_root) / suite
    root = out if out_dir is not None else Path(results_root)
    safe_io.ensure_dir(out, root)  # no write leaves the results folder through a link
    if records_df is None:
        storage = storage or records.default_storage(suite, results_root)
        df = records.records_frame(storage, suite)
    else:
        storage, df = "the records given", records_df
    logs = "epochs" in df  # per-epoch logs (plan traces), absent from runs.csv
    df = with_teacher_accuracy(df)  # the teacher's line in the figures (teacher records here)
    references = dict(references or {})
    if keys is not None:  # rows in the suite's order, not the order the jobs ran in
        df = with_tuned(df, keys)
    tables = split_tables(df)
    if not tables:
        from harness.experiments.secrets import redact

        raise ValueError(f"no completed runs of suite {suite!r} in {redact(storage)}")
    paths = {
        "md": out / "leaderboard.md",
        "csv": out / "leaderboard.csv",
        "tex": out / "leaderboard.tex",
        "runs": out / "runs.csv",
    }
    extra = [
        out / "verdicts.csv",
        out / "selection.csv",
        out / "expected_max_val.csv",
        out / "index.html",
    ]
    for path in [*paths.values(), *extra]:  # nothing written if one is refused
        safe_io.check_write(path, root)
    md = [f"# {suite}: test accuracy (%), mean ± std over seeds; best in bold\n"]
    tex, flat = [], []
    verdict_rows, chosen, refs = [], [], {}
    for name, d in tables.items():
        section = _table_section(
            suite, name, d, references.get(name), out, plots, logs, paths, selection
        )
        chosen.append(section["selection"])
        md += section["md"]
        tex += section["tex"]
        flat.append(section["flat"])
        verdict_rows += section["verdicts"]
        refs[name] = section["ref"]
    verdicts = _verdicts(verdict_rows, refs, md)
    searches = sorted(out.glob("tune_*.md"))  # otransfer tune's tables of trials
    if searches:
        md += ["## Searches (`otransfer tune`)\n"] + [f"- [{p.stem}]({p.name})" for p in searches]
    safe_io.write_text(paths["md"], "\n".join(md), root)
    _write_csv(_runs_frame(tables, df), paths["runs"], root, index=False)
    _write_csv(pd.concat(flat, ignore_index=True), paths["csv"], root, index=False)
    safe_io.write_text(paths["tex"], "\n".join(tex), root)
    _write_selection(suite, chosen, out, root, paths)
    verdicts_csv = out / "verdicts.csv"
    if verdicts is not None:
        _write_csv(verdicts, verdicts_csv, root, index=False)
        paths["verdicts"] = verdicts_csv
    elif os.path.lexists(verdicts_csv):  # the suite no longer names a paper's claims
        verdicts_csv.unlink()  # (a link is removed, not followed)
    from harness.reports.html import write_page

    paths["html"] = write_page(
        out, root, suite, paths, pd.concat(flat, ignore_index=True), page or {}
    )
    return paths


def _write_selection(suite: str, chosen: list, out: Path, root, paths: dict) -> None:
    """``selection.csv`` (every seed's chosen point) and ``expected_max_val.csv`` (tables whose
    budgets differ) of a report; a stale one is removed."""
    import pandas as pd

    for key, col in (("selection", "choices"), ("expected_max_val", "expmax")):
        frames = [c[col] for c in chosen if c[col] is not None and len(c[col])]
        path = out / f"{key}.csv"
        if frames:
            _write_csv(
                pd.concat(frames, ignore_index=True)
                .assign(suite=suite)
                .pipe(lambda f: f[["suite", *f.columns[:-1]]]),
                path,
                root,
                index=False,
            )
            paths[key] = path
        elif os.path.lexists(path):
            path.unlink()


def _table_section(
    suite: str,
    name: str,
    d,
    reference,
    out: Path,
    plots: bool,
    logs: bool,
    paths: dict,
    selection: str = "loso",
) -> dict:
    """One table of the report: its markdown (leaderboard beside the paper's, verdicts,
    chosen hyper-parameters, term strengths, layer traces, plots), LaTeX, flat CSV rows,
    verdict rows and the ``select: val`` choices; the files it writes are added to ``paths``."""
    from harness.reports import selection as sel

    budget, expmax = sel.budgets(d), sel.expected_max_frame(d, name)
    d, choices = sel.select_by_val(d, selection)  # per seed: its chosen point's test accuracy
    mean, std, n = leaderboard_numbers(d)
    per_seed = leaderboard_seeds(d)
    seeds = int(n.max().max()) if n.size else 0
    table = sel.with_budget(sel.annotate(_with_time(leaderboard(d), d), choices), budget)
    ref, paper, claims = _paper_side(d, mean, per_seed, reference, choices, suite, name)
    if paper is not None:
        table = _beside(table, paper[1], ref)
    md = [
        f"## {name}\n",
        f"{seeds} seed(s) per cell; `s / job`: mean wall time of one "
        "training run (this machine); `grid`: grid points behind the row (its budget)."
        + (
            f" `paper: X`: {ref.paper} Table {ref.table}, column X (results/reference/)."
            if paper is not None
            else ""
        )
        + "\n",
        table.to_markdown(),
        "",
    ]
    if claims:
        md.append(_CLAIMS + name)  # filled in by _verdicts once the families are adjusted
    md.append(_friedman(name, per_seed, out, plots, paths))
    md.append(sel.selection_markdown(choices, selection, expmax, budget))
    strength = term_strength(d)
    if strength is not None:
        md += [
            "Term strength: `value · gradient` ratios to the cross-entropy, "
            "term / CE and ‖∇term‖ / ‖∇CE‖ on the student's weights, logged on the "
            "first batch of ~10 epochs spread over training, mean over those and seeds "
            "(near 0: too weak "
            "to move the student):\n",
            strength.to_markdown(),
            "",
        ]
    md += _layers_section(name, d, out, plots, logs, paths)
    if plots:
        md += _plots_section(suite, name, d, mean, out, logs, paths, choices)
    return {
        "md": md,
        "tex": [f"% {name}", to_latex(leaderboard(d, bold="\\textbf{{{}}}"))],
        "flat": sel.flat_budget(_flat_rows(name, mean, std, n, per_seed, ref, paper), budget),
        "verdicts": claims,
        "ref": ref,
        "selection": {
            "choices": choices.assign(table=name)[["table", *sel.CHOICE_COLUMNS]],
            "expmax": expmax if sel.budgets_differ(budget) else None,
        },
    }


_CLAIMS = "\x00claims of "


def _verdicts(rows: list, refs: Mapping, md: list):
    """Holm within each register family over all the report's claim columns, then the
    verdicts (:func:`harness.reports.claim_verdicts.finish`): each table's claims section
    replaces its placeholder in ``md``; returns ``verdicts.csv``'s frame (None: no claims)."""
    from harness.reports import claim_verdicts as cv
    from harness.reports.verdict_text import claims_markdown

    if not rows:
        return None
    frame = cv.verdicts_frame(cv.finish(rows))
    for i, line in enumerate(md):
        if isinstance(line, str) and line.startswith(_CLAIMS):
            name = line[len(_CLAIMS) :]
            md[i] = claims_markdown(frame[frame["table"] == name], refs[name])
    return frame


def _friedman(name: str, per_seed, out: Path, plots: bool, paths: dict) -> str:
    """The table's Friedman line, and its critical-difference diagram ``<table>_cd.png``."""
    from harness.reports.verdict_text import friedman_markdown

    png = out / f"{slug(name)}_cd.png" if plots else None
    text, written = friedman_markdown(per_seed, name, png)
    if written is not None:
        paths[f"cd:{name}"] = written
    return text


def _layers_section(name: str, d, out: Path, plots: bool, logs: bool, paths: dict) -> list:
    """The per-layer plan traces after training (li2020 Fig. 2), from the records' logs or,
    for a report from CSV, the table an earlier report wrote."""
    layers = layer_trace_table(d)
    layers_csv = out / f"{slug(name)}_layers.csv"
    from_logs = layers is not None
    if layers is None and not logs and layers_csv.is_file():  # drawn from earlier records
        layers = _read_csv(layers_csv, index_col=0)
    if layers is None:
        return []
    if from_logs:
        _write_csv(layers, layers_csv)
    paths[f"layers_csv:{name}"] = layers_csv
    md = [
        "Trace of the exact plan between the trained network's neurons and the "
        "teacher's, per layer, after training (li2020 Fig. 2; mean over seeds):\n",
        layers.round(3).to_markdown(),
        "",
    ]
    if plots:
        png = out / f"{slug(name)}_layers.png"
        if from_logs or not png.is_file():
            plot_layer_traces(layers, name, png)
        paths[f"layers:{name}"] = png
        md.append(f"![{name}: trace per layer]({png.name})\n")
    return md


def _plots_section(
    suite: str, name: str, d, mean, out: Path, logs: bool, paths: dict, choices=None
) -> list:
    """The table's bar chart, accuracy versus a numeric column (Table 4's batch sizes), each
    with its PDF (:mod:`harness.reports.figures`), and the plan-trace curves."""
    png = out / f"{slug(name)}.png"
    plot_table(d, f"{suite}: {name}", png, choices)
    paths[f"png:{name}"] = png
    md = [f"![{name}]({png.name})\n", f"Vector: [{png.stem}.pdf]({png.stem}.pdf)\n"]
    if numeric_axis(mean.columns) is not None:  # accuracy vs batch size (Table 4)
        line = out / f"{slug(name)}_lines.png"
        plot_lines(d, f"{suite}: {name}", line, choices)
        paths[f"lines:{name}"] = line
        md += [
            f"![{name}: accuracy versus {numeric_axis(mean.columns)[0]}]({line.name})\n",
            f"Vector: [{line.stem}.pdf]({line.stem}.pdf)\n",
        ]
    trace = out / f"{slug(name)}_trace.png"
    if plot_traces(d, name, trace) or (not logs and trace.is_file()):
        paths[f"trace:{name}"] = trace
        md.append(f"![{name}: trace of the plan]({trace.name})\n")
    return md


def _flat_rows(name: str, mean, std, n, per_seed, ref, paper):
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
        f["paper"] = [paper[0].at[r, c] for r, c in zip(f["method"], f["task"])]
        f["paper_column"] = [ref.columns.get(c, "") for c in f["task"]]
    for seed in sorted(set(per_seed.columns.get_level_values("seed"))):  # redo the tests
        f[f"seed_{seed}"] = [
            per_seed[(c, seed)].get(r) if (c, seed) in per_seed else None
            for r, c in zip(f["method"], f["task"])
        ]
    return f


def _runs_frame(tables: Mapping, df):
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
    (dataset, row, ``select``, reference, config), for :func:`write_report` when the Optuna storage is
    not at hand (it is not committed). Rows of other keys (the re-runs of a searched point,
    ``otransfer tune``) keep their own ``method`` as row; per-epoch logs are not in the CSV."""
    df = _read_csv(path, dtype={"key": str, "git_sha": str})
    by = {j.key: j for j in jobs}
    got = [by.get(k) for k in df["key"]]
    return df.assign(
        dataset=[j.dataset if j else t for j, t in zip(got, df["task"])],
        row=[j.row if j else m for j, m in zip(got, df["method"])],
        select=[j.select if j else None for j in got],
        report=True,
        reference=[dict(j.reference) if j and j.reference else None for j in got],
        config=[dict(j.config) if j else None for j in got],
        status="completed",
    )


def write_index(results_root: str | os.PathLike = "results", suites: dict | None = None) -> Path:
    """Write ``<results_root>/README.md``: a link to every suite's leaderboard and plots, the
    solver benchmark, the step-time benchmark and the papers' reference numbers.

    ``suites``: ``{name: description}`` of the suites to list (default: every directory of
    ``results_root`` holding a ``leaderboard.md``).
    """
    root = Path(results_root)
    lines = ["# Results\n"]
    if (root / "VERDICTS.md").is_file():
        lines += [
            "**[VERDICTS.md](VERDICTS.md)**: one page of the papers' claims checked at "
            "CPU scale (one line per register claim; six verdicts per column, Holm within "
            "each family; docs/statistics.md).\n"
        ]
    lines += [
        "Regenerated by `otransfer report --all`. Every table is a view of the run records "
        "(`runs.csv` beside it: one row per job and seed, exported from the Optuna storage "
        "`runs.sqlite3`); the papers' numbers are in "
        "[reference/](reference/README.md).\n",
        "## Suites\n",
    ]
    dirs = (
        sorted(d for d in root.iterdir() if (d / "leaderboard.md").is_file())
        if root.is_dir()
        else []
    )
    suites = suites or {}
    for d in dirs:
        desc = " ".join(str(suites.get(d.name, "")).split())
        pngs = sorted(p.name for p in d.glob("*.png"))
        lines.append(
            f"- **{d.name}**: [leaderboard]({d.name}/leaderboard.md)"
            + (
                f" ([CSV]({d.name}/leaderboard.csv), [LaTeX]({d.name}/leaderboard.tex), "
                f"[runs]({d.name}/runs.csv))"
            )
            + (" · plots: " + ", ".join(f"[{p[:-4]}]({d.name}/{p})" for p in pngs) if pngs else "")
            + (f"  \n  {desc}" if desc else "")
        )
    if not dirs:
        lines.append("(none yet: `otransfer run SUITE`)")
    lines += ["", "## Benchmarks\n"]
    for rel, what in (
        ("solvers/bench.md", "OT solvers on the papers' problems (`otransfer solvers bench`)"),
        ("solvers/asv.md", "asv timing of the solvers (`otransfer report solvers`)"),
        (
            "regularizers/step_time.md",
            "training-step time / L2-SP step (`otransfer regularizers bench`)",
        ),
    ):
        if (root / rel).is_file():
            lines.append(f"- [{rel}]({rel}): {what}")
    for png in sorted((root / "solvers").glob("*.png")) if (root / "solvers").is_dir() else []:
        lines.append(f"- [solvers/{png.name}](solvers/{png.name})")
    path = root / "README.md"
    safe_io.write_text(path, "\n".join(lines) + "\n", root)
    return path


def report_suite(
    name: str,
    storage: str | None = None,
    out: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    quick: bool = False,
    from_csv: str | os.PathLike | None = None,
    selection: str = "loso",
    results_root: str | os.PathLike = "results",
) -> dict[str, Path]:
    """``otransfer report SUITE``: :func:`write_report` of the suite file as it is now (its
    jobs' keys, and its claims and premises: a view, they change no job key), from
    ``storage`` or from a committed ``runs.csv``. Raises what loading the suite or reading
    the records raises (:class:`SuiteError`, ``FileNotFoundError``, ``ValueError`` when there
    are no records, :class:`StorageError`)."""
    from harness.experiments.runner import quick_suite
    from harness.experiments.suite import expand, load_suite

    suite = load_suite(name, overrides)
    if quick:
        suite = quick_suite(suite)
    jobs = expand(suite)
    references = {}
    for j in jobs:
        if j.report and j.reference:
            references.setdefault(j.table or j.stage, j.reference)
    from harness.reports.html import report_command, suite_text

    return write_report(
        suite.name,
        storage,
        out,
        results_root,
        keys=None if from_csv else [j.key for j in jobs],
        references=references,
        records_df=records_from_csv(from_csv, jobs) if from_csv else None,
        selection=selection,
        page={
            "description": suite.description,
            "suite_text": suite_text(name),
            "command": report_command(
                name, storage, out, overrides, quick, from_csv, selection, results_root
            ),
        },
    )


def report_all(results_root: str | os.PathLike, report_one, warn) -> tuple[int, list[Path]]:
    """``otransfer report --all``: ``report_one(name, csv)`` (0 when written) for every suite
    of suites/ with records under ``results_root`` — its Optuna storage when present, else the
    committed ``runs.csv`` (the storage is not committed: ``*.sqlite3`` is git-ignored) — then
    ``VERDICTS.md`` and ``README.md``. Returns the exit status and the index files written."""
    from harness.experiments.suite import SuiteError, available_suites, load_suite

    status, described, reported = 0, {}, []
    for name in available_suites():
        try:
            described[name] = load_suite(name).description
        except (FileNotFoundError, SuiteError) as exc:
            warn(str(exc))
            status = 1
            continue
        d = Path(results_root) / name
        if (d / "runs.sqlite3").is_file():
            csv = None
        elif (d / "runs.csv").is_file():
            csv = d / "runs.csv"
            warn(f"{name}: no runs.sqlite3, reporting from {csv}")
        else:
            continue
        code = report_one(name, csv)
        status |= code
        if code == 0:
            reported.append(name)
    from harness.reports.html import write_index_page
    from harness.reports.verdict_page import write_verdicts

    return status, [
        write_verdicts(results_root, reported),
        write_index(results_root, described),
        write_index_page(results_root, described),
    ]
