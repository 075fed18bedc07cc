"""The figures of one table of a suite report, with the Markdown that shows them: the
critical-difference diagram, the per-layer plan traces (li2020 Fig. 2), the bar chart, the
accuracy-versus-batch-size lines and the plan-trace curves (:mod:`harness.reports.figures`
draws them)."""

from __future__ import annotations

from pathlib import Path

from harness.experiments.suite import slug
from harness.reports.figures import (
    numeric_axis,
    plot_layer_traces,
    plot_lines,
    plot_table,
    plot_traces,
)
from harness.reports.files import read_csv, write_csv
from harness.reports.leaderboards import layer_trace_table

__all__ = ["friedman_section", "layers_section", "plots_section"]


def friedman_section(name: str, per_seed, out: Path, plots: bool, paths: dict) -> str:
    """The table's Friedman line, and its critical-difference diagram ``<table>_cd.png``."""
    from harness.reports.verdict_text import friedman_markdown

    png = out / f"{slug(name)}_cd.png" if plots else None
    text, written = friedman_markdown(per_seed, name, png)
    if written is not None:
        paths[f"cd:{name}"] = written
    return text


def layers_section(name: str, d, out: Path, plots: bool, logs: bool, paths: dict) -> list:
    """The per-layer plan traces after training (li2020 Fig. 2), from the records' logs or,
    for a report from CSV, the table an earlier report wrote."""
    layers = layer_trace_table(d)
    layers_csv = out / f"{slug(name)}_layers.csv"
    from_logs = layers is not None
    if layers is None and not logs and layers_csv.is_file():  # drawn from earlier records
        layers = read_csv(layers_csv, index_col=0)
    if layers is None:
        return []
    if from_logs:
        write_csv(layers, layers_csv)
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


def plots_section(
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
