"""The solver comparison benchmark: every registered OT method on the problems of the papers.

The problems, the views and the measurement are in :mod:`harness.reports.bench_run`, the figures
in :mod:`harness.reports.bench_plots`; this module lays the records out as tables (pure
functions of the records frame) and writes ``bench.{csv,md}`` and the figures. Every name of
the three is importable from here.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from harness.reports.bench_plots import plot_accuracy, plot_times
from harness.reports.bench_run import (
    BUDGET_S,
    COLUMNS,
    GROWTH,
    VIEWS,
    Problem,
    View,
    invalid_reason,
    reference_method,
    run,
    run_once,
    warm_up,
)
from harness.training import safe_io

if TYPE_CHECKING:  # pandas and matplotlib are imported where they are used
    import pandas as pd

__all__ = [
    "VIEWS",
    "View",
    "Problem",
    "COLUMNS",
    "BUDGET_S",
    "GROWTH",
    "run",
    "run_once",
    "warm_up",
    "invalid_reason",
    "reference_method",
    "machine_info",
    "time_table",
    "ratio_table",
    "backward_table",
    "skip_notes",
    "markdown_table",
    "render_markdown",
    "plot_times",
    "plot_accuracy",
    "write_outputs",
]

# --------------------------------------------------------------------------- tables (pure)


def _fmt_ms(t: float) -> str:
    if t >= 100:
        return f"{t:.0f}"
    if t >= 10:
        return f"{t:.1f}"
    return f"{t:.2f}"


def _fmt_err(e: float) -> str:
    if e != e:  # NaN: no reference
        return "n/a"
    return "0" if e == 0 else f"{e:.1e}"


def _pivot(
    records: "pd.DataFrame", view: str, cell: Callable[["pd.Series"], str]
) -> "pd.DataFrame":
    """Rows = method (order of first appearance), columns = ``"<size_name>=<size>"`` ascending;
    ``cell(row)`` for ``ok`` rows, ``—`` for skipped, ``error`` for failed runs."""
    import pandas as pd

    sub = records[records["view"] == view]
    methods = list(dict.fromkeys(sub["method"]))
    sizes = sorted(sub["size"].unique())
    size_name = sub["size_name"].iloc[0] if len(sub) else "size"
    cols = [f"{size_name}={int(s)}" for s in sizes]
    table = pd.DataFrame("", index=pd.Index(methods, name="method"), columns=cols, dtype=object)
    for _, row in sub.iterrows():
        status = row["status"]
        text = cell(row) if status == "ok" else ("error" if status == "error" else "—")
        table.loc[row["method"], f"{size_name}={int(row['size'])}"] = text
    return table


def time_table(records: "pd.DataFrame", view: str) -> "pd.DataFrame":
    """Median solve time in ms with the relative error of the value in brackets."""
    return _pivot(records, view, lambda r: f"{_fmt_ms(r['time_ms'])} ({_fmt_err(r['rel_error'])})")


def backward_table(records: "pd.DataFrame", view: str) -> "pd.DataFrame":
    """Median time of solve + ``value.backward()`` in ms."""
    return _pivot(records, view, lambda r: _fmt_ms(r["time_backward_ms"]))


def ratio_table(records: "pd.DataFrame", view: str) -> "pd.DataFrame":
    """Solve time divided by the reference (exact) method's time on the same problem."""
    sub = records[(records["view"] == view) & (records["status"] == "ok")]
    ref_time = {
        int(r["size"]): r["time_ms"] for _, r in sub.iterrows() if r["method"] == r["ref_method"]
    }

    def cell(r) -> str:
        t_ref = ref_time.get(int(r["size"]))
        return "n/a" if not t_ref else f"{r['time_ms'] / t_ref:.3g}"

    return _pivot(records, view, cell)


def skip_notes(records: "pd.DataFrame", view: str) -> list[str]:
    """One line per (method, reason) of skipped or failed cells, listing the sizes."""
    sub = records[(records["view"] == view) & (records["status"] != "ok")]
    lines = []
    for (method, status, reason), grp in sub.groupby(["method", "status", "reason"], sort=False):
        sizes = ", ".join(str(int(s)) for s in sorted(grp["size"]))
        name = grp["size_name"].iloc[0]
        lines.append(f"{method} ({name} = {sizes}): {status}, {reason}")
    return lines


def markdown_table(table: "pd.DataFrame") -> str:
    # Cells are preformatted strings: keep them verbatim (no number re-parsing by tabulate) and
    # right-align the size columns so that magnitudes line up.
    return table.to_markdown(
        disable_numparse=True, colalign=("left",) + ("right",) * table.shape[1]
    )


def render_markdown(
    records: "pd.DataFrame", header: Sequence[str], *, descriptions: dict[str, str] | None = None
) -> str:
    """Render the benchmark records as Markdown: ``header`` lines, then per view the time table
    (with relative errors), the ratio-to-reference table, the backward table and skip notes."""
    descriptions = (
        descriptions if descriptions is not None else {k: v.description for k, v in VIEWS.items()}
    )
    out = ["# Solver comparison benchmark", "", *header, ""]
    for view in dict.fromkeys(records["view"]):
        sub = records[records["view"] == view]
        refs = sorted(set(sub["ref_method"].dropna()) - {""})
        ref = ", ".join(refs) or "the exact method"
        out += [
            f"## {view}",
            "",
            descriptions.get(view, ""),
            "",
            f"### Solve time, ms (relative error of the value vs {ref})",
            "",
            markdown_table(time_table(records, view)),
            "",
            f"### Solve time relative to {ref}",
            "",
            markdown_table(ratio_table(records, view)),
            "",
            "### Solve + backward time, ms",
            "",
            markdown_table(backward_table(records, view)),
            "",
        ]
        notes = skip_notes(records, view)
        if notes:
            out += ["Not measured:", "", *[f"- {line}" for line in notes], ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- provenance, output


def machine_info() -> dict[str, str]:
    """Platform, CPU, Python, torch (and its thread count) and solver package versions."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    pkgs = []
    for dist in ("numpy", "pot", "geomloss", "pykeops"):
        try:
            pkgs.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            pass
    return {
        "platform": platform.platform(),
        "cpu": f"{cpu}, {os.cpu_count()} logical cores",
        "python": platform.python_version(),
        "torch": f"{torch.__version__}, {torch.get_num_threads()} threads",
        "packages": ", ".join(pkgs),
    }


_LABELS = {
    "platform": "Platform",
    "cpu": "CPU",
    "python": "Python",
    "torch": "Torch",
    "packages": "Packages",
}


def write_outputs(
    records: "pd.DataFrame",
    out: str | Path,
    *,
    command: str,
    settings: str = "",
    prefix: str = "bench",
) -> dict[str, Path]:
    """Write ``<prefix>.csv``, ``<prefix>.md``, ``<prefix>_time.png``, ``<prefix>_accuracy.png``.

    Returns
    -------
    dict
        ``{"csv": path, "md": path, "time_png": path, "accuracy_png": path}``.
    """
    out = safe_io.ensure_dir(Path(out))
    paths = {
        "csv": out / f"{prefix}.csv",
        "md": out / f"{prefix}.md",
        "time_png": out / f"{prefix}_time.png",
        "accuracy_png": out / f"{prefix}_accuracy.png",
    }
    safe_io.write_text(paths["csv"], records.to_csv(index=False), out)
    info = machine_info()
    header = [
        f"Command: `{command}`  ",
        f"Date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}  ",
        *[f"{_LABELS.get(k, k)}: {v}  " for k, v in info.items()],
    ]
    if settings:
        header.append(settings)
    safe_io.write_text(paths["md"], render_markdown(records, header) + "\n", out)
    plot_times(records, paths["time_png"])
    plot_accuracy(records, paths["accuracy_png"])
    return paths
