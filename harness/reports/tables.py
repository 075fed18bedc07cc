"""Suite reports: the files of ``otransfer report`` (``leaderboard.{md,csv,tex}``,
``runs.csv``, ``verdicts.csv``, ``selection.csv``, the plots and ``index.html``), the results
index and ``report --all``.

The tables themselves are pure pandas functions of the run records
(:mod:`harness.reports.leaderboards`); :func:`write_report` writes them all as Markdown, CSV
and LaTeX, with one bar chart per table and the plan-trace curves (li2020 Fig. 3) where an OT
term logged them (:mod:`harness.reports.report_plots`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from harness.experiments.suite import slug
from harness.reports.figures import plot_table, plot_traces, with_teacher_accuracy
from harness.reports.files import write_csv
from harness.reports.leaderboards import (
    beside,
    diagnostics_of,
    flat_rows,
    leaderboard,
    records_from_csv,
    runs_frame,
    select_by_val,
    split_tables,
    term_strength,
    to_latex,
    with_choices,
    with_time,
    with_tuned,
)
from harness.reports.numbers import leaderboard_numbers, leaderboard_seeds
from harness.reports.report_plots import friedman_section, layers_section, plots_section
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
    "select_by_val",
    "term_strength",
    "diagnostics_of",
]

# the name this module's callers (tests/test_twins.py) always used
_with_choices = with_choices


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
    write_csv(runs_frame(tables, df), paths["runs"], root, index=False)
    write_csv(pd.concat(flat, ignore_index=True), paths["csv"], root, index=False)
    safe_io.write_text(paths["tex"], "\n".join(tex), root)
    _write_selection(suite, chosen, out, root, paths)
    verdicts_csv = out / "verdicts.csv"
    if verdicts is not None:
        write_csv(verdicts, verdicts_csv, root, index=False)
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
            write_csv(
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
    table = sel.with_budget(sel.annotate(with_time(leaderboard(d), d), choices), budget)
    ref, paper, claims = _paper_side(d, mean, per_seed, reference, choices, suite, name)
    if paper is not None:
        table = beside(table, paper[1], ref)
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
    md.append(friedman_section(name, per_seed, out, plots, paths))
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
    md += layers_section(name, d, out, plots, logs, paths)
    if plots:
        md += plots_section(suite, name, d, mean, out, logs, paths, choices)
    return {
        "md": md,
        "tex": [f"% {name}", to_latex(leaderboard(d, bold="\\textbf{{{}}}"))],
        "flat": sel.flat_budget(flat_rows(name, mean, std, n, per_seed, ref, paper), budget),
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
    specs = dict(zip(row, d["regularizer"], strict=True))
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
    specs, rows = dict(zip(row, d["regularizer"], strict=True)), []
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
    from harness.experiments.suite import expand, load_suite, quick_suite

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
