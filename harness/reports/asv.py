"""Collate the asv timing suite (``suites/timing``) into the layout of the solver benchmark.

asv stores one JSON file per (machine, commit, environment) under
``<results_dir>/<machine>/``; each benchmark ``benchmarks.<View>View.<metric>`` holds its
results flattened over the product of its parameters ``(method, size)``. This module reads the
latest file into benchmark records (:data:`harness.reports.bench.COLUMNS`) so that the same
pure table functions render ``asv.md``.
"""

from __future__ import annotations

import itertools
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from harness.training import safe_io

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["find_latest", "load_records", "write_report", "METRICS"]

#: asv benchmark function -> (record column, factor); times are seconds in asv, ms here.
METRICS = {
    "time_solve": ("time_ms", 1e3),
    "time_solve_backward": ("time_backward_ms", 1e3),
    "track_relative_error": ("rel_error", 1.0),
    "track_marginal_error": ("marginal_error", 1.0),
}


def _run_time(path: Path) -> float:
    """When the run that wrote ``path`` happened: its latest benchmark start (ms since epoch)."""
    try:
        data = json.loads(path.read_text())
        cols = data.get("result_columns", [])
        i = cols.index("started_at")
        starts = [row[i] for row in data["results"].values() if len(row) > i and row[i]]
        if starts:
            return max(starts)
    except (ValueError, KeyError, OSError, json.JSONDecodeError):
        pass
    return path.stat().st_mtime * 1e3


def find_latest(results_dir: str | Path, machine: str | None = None) -> Path:
    """Return the most recently run asv results file under ``results_dir`` (one machine or all).

    Raises
    ------
    FileNotFoundError
        With the command that produces results when there are none.
    """
    root = Path(results_dir)
    dirs = [root / machine] if machine else sorted(p for p in root.glob("*") if p.is_dir())
    files = [f for d in dirs for f in d.glob("*.json") if f.name != "machine.json"]
    if not files:
        where = root / machine if machine else root
        raise FileNotFoundError(
            f"no asv results under {where}. Run the timing suite first, e.g.\n"
            "  asv machine --yes\n"
            "  asv run --python=same --quick --set-commit-hash $(git rev-parse HEAD)\n"
            "(asv saves nothing for --python=same unless --set-commit-hash is given)"
        )
    return max(files, key=_run_time)


def load_records(path: str | Path) -> tuple["pd.DataFrame", dict]:
    """Read one asv results file into benchmark records and its provenance.

    Returns
    -------
    records : pandas.DataFrame
        One row per (view, size, method), columns :data:`harness.reports.bench.COLUMNS`.
        ``status`` is ``ok`` where ``time_solve`` has a value, ``skipped`` where asv recorded
        NaN (setup raised ``NotImplementedError``), ``error`` where it failed.
    meta : dict
        ``commit_hash``, ``env_name``, ``machine`` parameters and the run's ``date``.
    """
    import pandas as pd

    from harness.reports import bench

    path = Path(path)
    data = json.loads(path.read_text())
    cols = data["result_columns"]
    rows: dict[tuple[str, int, str], dict] = {}
    started = []
    for name, values in data["results"].items():
        entry = dict(zip(cols, values, strict=False))
        parts = name.split(".")
        if len(parts) < 3 or parts[-1] not in METRICS:
            continue
        view = parts[-2].lower().removesuffix("view")
        if view not in bench.VIEWS:
            continue
        column, factor = METRICS[parts[-1]]
        if entry.get("started_at"):
            started.append(entry["started_at"])
        results = entry.get("result")
        combos = list(itertools.product(*[[_literal(p) for p in ps] for ps in entry["params"]]))
        if results is None:  # the whole benchmark failed (e.g. an import error)
            results = [None] * len(combos)
        repeats = entry.get("stats_repeat") or [None] * len(combos)
        for (method, size), value, rep in zip(combos, results, repeats, strict=False):
            rec = rows.setdefault(
                (view, int(size), method),
                {
                    "view": view,
                    "size_name": bench.VIEWS[view].size_name,
                    "size": int(size),
                    "method": method,
                    "status": "ok",
                    "reason": "",
                },
            )
            if value is None:
                rec.update(status="error", reason=f"{parts[-1]} failed (see asv's log)")
            elif isinstance(value, float) and math.isnan(value):
                if rec["status"] == "ok":
                    rec.update(status="skipped", reason="skipped in setup (NotImplementedError)")
            else:
                rec[column] = float(value) * factor
                if column == "time_ms" and rep is not None:
                    rec["repeat"] = rep
    records = pd.DataFrame.from_records(list(rows.values()))
    if not records.empty:
        records = _add_reference(records)
    records = records.reindex(columns=bench.COLUMNS)
    date = datetime.fromtimestamp(max(started) / 1e3, timezone.utc) if started else None
    meta = {
        "file": str(path),
        "commit_hash": data.get("commit_hash", ""),
        "env_name": data.get("env_name", ""),
        "machine": data.get("params", {}),
        "date": date.isoformat(timespec="seconds") if date else "",
    }
    return records, meta


def _literal(text: str):
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _add_reference(records: "pd.DataFrame") -> "pd.DataFrame":
    # The suite compares every method with bench.reference_method on the same problem; recover
    # its name (and the problem's shape) by rebuilding the seeded problem, which is cheap.
    from harness.reports import bench

    records = records.copy()
    for key in ("ref_method", "cost"):
        records[key] = ""
    for col in ("n", "m", "k"):
        records[col] = 0
    for (view, size), idx in records.groupby(["view", "size"]).groups.items():
        problem = bench.VIEWS[view].build(int(size), 0)
        records.loc[idx, "ref_method"] = bench.reference_method(problem) or ""
        records.loc[idx, ["n", "m", "k"]] = [problem.n, problem.m, problem.k]
        records.loc[idx, "cost"] = problem.cost
    records = records.sort_values(["view", "size"], kind="stable")
    return records


def write_report(
    results_dir: str | Path = ".asv/results",
    out: str | Path = "results/solvers",
    *,
    machine: str | None = None,
) -> dict[str, Path]:
    """Write ``asv.md`` and ``asv.csv`` (same layout as ``bench.md``) from the latest asv run."""
    from harness.reports import bench

    path = find_latest(results_dir, machine)
    records, meta = load_records(path)
    if records.empty:
        raise ValueError(f"{path} holds no results of the solver timing suite")
    out = safe_io.ensure_dir(Path(out))
    m = meta["machine"]
    header = [
        f"Source: `{path}` (asv; commit {meta['commit_hash'][:12]}, environment "
        f"{meta['env_name']}, run {meta['date']})  ",
        f"Machine: {m.get('machine', '?')}, {m.get('os', '?')}, {m.get('arch', '?')}, "
        f"{m.get('cpu', '?')}, {m.get('num_cpu', '?')} cores, RAM {m.get('ram', '?')}  ",
        "Collated by: `otransfer report solvers`. Times are asv's (median over its samples; "
        "one sample with `--quick`); relative errors from `track_relative_error`.",
    ]
    paths = {"csv": out / "asv.csv", "md": out / "asv.md"}
    safe_io.write_text(paths["csv"], records.to_csv(index=False), out)
    text = bench.render_markdown(records, header).replace(
        "# Solver comparison benchmark", "# Solver timing suite (asv)", 1
    )
    safe_io.write_text(paths["md"], text + "\n", out)
    return paths
