"""The solver comparison benchmark's figures: solve time versus size, and time versus the
value's relative error (:mod:`harness.reports.bench` writes them)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from harness.training import safe_io

if TYPE_CHECKING:  # pandas and matplotlib are imported where they are used
    import pandas as pd

__all__ = ["plot_times", "plot_accuracy"]

# --------------------------------------------------------------------------- plots


def _method_styles(methods: Iterable[str]) -> dict[str, dict]:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    markers = "osD^vP*Xh<>"
    return {
        m: {"color": cmap(i % 10), "marker": markers[i % len(markers)]}
        for i, m in enumerate(methods)
    }


def plot_times(records: "pd.DataFrame", path: Path) -> None:
    """Solve time vs size, log-log, one line per method, one panel per view."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = list(dict.fromkeys(records["view"]))
    methods = list(dict.fromkeys(records["method"]))
    styles = _method_styles(methods)
    fig, axes = plt.subplots(1, len(views), figsize=(6.5 * len(views), 5.2), squeeze=False)
    for ax, view in zip(axes[0], views, strict=True):
        sub = records[(records["view"] == view) & (records["status"] == "ok")]
        for method, grp in sub.groupby("method", sort=False):
            grp = grp.sort_values("size")
            ax.plot(grp["size"], grp["time_ms"], label=method, **styles[method])
        size_name = records.loc[records["view"] == view, "size_name"].iloc[0]
        ax.set(
            xscale="log",
            yscale="log",
            xlabel=f"{size_name} (log scale)",
            ylabel="median solve time, ms (log scale)",
            title=f"{view} view",
        )
        sizes = sorted(records.loc[records["view"] == view, "size"].unique())
        ax.set_xticks(sizes, [str(int(s)) for s in sizes])
        ax.minorticks_off()
        ax.grid(True, which="major", alpha=0.3)
    # One legend for all panels, below them, so that it hides no line.
    handles = [plt.Line2D([], [], **styles[m]) for m in methods]
    fig.legend(
        handles, methods, loc="lower center", ncol=min(len(methods), 5), fontsize=9, frameon=False
    )
    fig.suptitle("OT solvers: time vs problem size (CPU; missing points were skipped)")
    fig.tight_layout(rect=(0, 0.06 * math.ceil(len(methods) / 5), 1, 1))
    safe_io.write_figure(fig, path, dpi=110)
    plt.close(fig)


def _clusters(
    points: list[tuple[float, float, str]], tol: float = 0.2
) -> list[tuple[float, float, list[str]]]:
    """Group points closer than ``tol`` decades on both log axes, so that their labels merge."""
    groups: list[tuple[float, float, list[str]]] = []
    for x, y, name in sorted(points):
        for gx, gy, names in groups:
            if (
                abs(math.log10(x) - math.log10(gx)) < tol
                and abs(math.log10(y) - math.log10(gy)) < tol
            ):
                names.append(name)
                break
        else:
            groups.append((x, y, [name]))
    return groups


def _label(ax, points: list[tuple[float, float, str]], renderer) -> None:
    """Annotate points (merged where they coincide), moving a label up or down until it
    overlaps no label placed before it."""
    placed = []
    for x, y, names in sorted(_clusters(points, tol=0.1), key=lambda g: (g[1], g[0])):
        for dy in (4, -12, 14, -22, 24, -32, 34):
            ann = ax.annotate(
                ", ".join(names), (x, y), textcoords="offset points", xytext=(6, dy), fontsize=8
            )
            box = ann.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in placed):
                break
            ann.remove()
        else:
            ann = ax.annotate(
                ", ".join(names), (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8
            )
            box = ann.get_window_extent(renderer)
        placed.append(box)


def plot_accuracy(records: "pd.DataFrame", path: Path, *, floor: float = 1e-8) -> None:
    """Relative error vs solve time at each view's largest size (exact = 0 drawn at ``floor``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = list(dict.fromkeys(records["view"]))
    styles = _method_styles(dict.fromkeys(records["method"]))
    fig, axes = plt.subplots(1, len(views), figsize=(6.5 * len(views), 5), squeeze=False)
    labels = []  # per panel, (x, y, method) to annotate once the layout is final
    for ax, view in zip(axes[0], views, strict=True):
        sub = records[(records["view"] == view) & (records["status"] == "ok")]
        size_name = records.loc[records["view"] == view, "size_name"].iloc[0]
        points: list[tuple[float, float, str]] = []
        labels.append(points)
        if sub.empty:
            ax.set_title(f"{view} view: nothing measured")
            continue
        size = int(sub["size"].max())
        sub = sub[(sub["size"] == size) & sub["rel_error"].notna()]
        for _, r in sub.iterrows():
            y = max(float(r["rel_error"]), floor)
            ax.scatter(r["time_ms"], y, s=50, **styles[r["method"]])
            points.append((float(r["time_ms"]), y, r["method"]))
        ax.axhline(floor, color="grey", lw=0.8, ls=":")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="median solve time, ms (log scale)",
            ylabel=f"relative error of the value (log; 0 drawn at {floor:g})",
            title=f"{view} view, {size_name} = {size}",
        )
        ax.margins(x=0.15, y=0.1)
        ax.grid(True, alpha=0.3)
    fig.suptitle("OT solvers: accuracy vs time at the largest size (lower left is better)")
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    for ax, points in zip(axes[0], labels, strict=True):
        _label(ax, points, renderer)
    safe_io.write_figure(fig, path, dpi=110)
    plt.close(fig)
