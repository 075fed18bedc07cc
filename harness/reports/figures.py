"""Figures of a report: one per table, fit for a paper draft.

:func:`plot_table` draws one panel per task (small multiples, one value axis for all): a bar per
method (mean), its ± std whisker, every seed as a small jittered dot over it, the best mean of the
task outlined, the student-alone rows (:data:`REFERENCE_ROWS`) as dashed lines and the teacher's
accuracy (when the records carry it, :func:`with_teacher_accuracy`) as a dash-dot line, and the
grid point that ``select: val`` chose most often written in the bar. :func:`plot_lines` is the same
for a numeric task axis (li2020 Table 4's batch sizes). Both write a PDF beside the PNG.

The value axis (:func:`value_axis`) starts at 0 unless that hides every difference: when the
largest gap between two means of one task is under :data:`GAP_SHARE` of the axis (0 to the
top), the axis is broken: a short stub from 0, a visible break mark, then the data's range.
The trace plots (li2020 Figs. 2, 3) keep their own 0-1 axis.
"""

from __future__ import annotations

import math
from collections import Counter

from harness.reports.files import save_figure as _save
from harness.training import safe_io

__all__ = [
    "GAP_SHARE",
    "REFERENCE_ROWS",
    "chosen_points",
    "numeric_axis",
    "plot_layer_traces",
    "plot_lines",
    "plot_table",
    "plot_traces",
    "value_axis",
    "with_teacher_accuracy",
]

#: rows drawn as a dashed reference line in every panel: the student trained alone
REFERENCE_ROWS = {
    "none": "none (student alone)",
    "scratch": "scratch",
    "target only": "target only",
}
#: below this share of the axis, the largest gap of a task is hidden by an axis from 0
GAP_SHARE = 0.10
_STUB = 8  # the main part of a broken axis is this many times as long as the stub from 0


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


def numeric_axis(columns) -> tuple[str, list[float]] | None:
    """``("batch", [16, 32, ...])`` when every column ends in ``name=<number>[%]`` with one
    name (li2020 Table 4's batch sizes, Table 3's pre-training levels), else None."""
    import re

    found = [re.search(r"([A-Za-z_]+)=([0-9.]+)%?$", str(c)) for c in columns]
    if len(columns) < 2 or not all(found) or len({m.group(1) for m in found}) != 1:
        return None
    return found[0].group(1), [float(m.group(2)) for m in found]


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
                    tap = k[: -len("/matched")]
                    _term, _, short = tap.partition("/")  # "omega_p/penultimate"
                    rows.append(
                        {
                            "method": r.get("method") or r["regularizer"],
                            "task": r["dataset"],
                            "tap": short if "+" not in str(r["regularizer"]) and short else tap,
                            "epoch": int(e.get("epoch", 0)) + 1,
                            "seed": r["seed"],
                            "matched": float(v),
                        }
                    )
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
    fig, axes = plt.subplots(
        1, len(taps), figsize=(1.0 + 5.5 * len(taps), 3.8), sharey=True, squeeze=False
    )
    for ax, tap in zip(axes[0], taps, strict=True):
        sub = tr[tr["tap"] == tap]
        for (method, task), g in sub.groupby(["method", "task"], sort=False):
            st = g.groupby("epoch")["matched"].agg(["mean", "std"]).fillna(0.0)
            label = " · ".join(
                str(p)
                for p, many in (
                    (method, sub["method"].nunique() > 1),
                    (task, sub["task"].nunique() > 1),
                )
                if many
            ) or str(method)
            ax.plot(st.index, st["mean"], label=label)
            ax.fill_between(st.index, st["mean"] - st["std"], st["mean"] + st["std"], alpha=0.2)
        _finish(
            fig,
            ax,
            None,
            xlabel="epoch",
            ylabel=_TRACE if ax is axes[0][0] else "",
            ylim=_UNIT,
            title=f"{title}: {tap}",
        )
    fig.suptitle("trace of the plan along training (li2020 Fig. 3)", fontsize=10)
    _save(fig, path)
    return True


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
    _finish(
        fig,
        ax,
        path,
        xlabel="layer (input → output)",
        ylabel=_TRACE,
        ylim=_UNIT,
        title=f"{title}: neurons matching their initial role (li2020 Fig. 2)",
    )


def _save_both(fig, path) -> None:
    """``path`` (PNG, 150 dpi) and the same figure as a PDF beside it (vector, for a draft;
    no creation date, so an unchanged figure rewrites the same bytes)."""
    from pathlib import Path

    import matplotlib.pyplot as plt

    safe_io.write_figure(fig, path, dpi=150)
    safe_io.write_figure(fig, Path(path).with_suffix(".pdf"), metadata={"CreationDate": None})
    plt.close(fig)


def with_teacher_accuracy(df):
    """``df`` plus ``teacher_accuracy`` (a fraction): the test accuracy of each record's
    teacher job (its config's ``teacher`` key) when that job's record is in ``df`` (reports
    from the Optuna storage; a ``runs.csv`` keeps the column once written). Unchanged when no
    record's teacher is found."""
    if "config" not in df or "key" not in df or "teacher_accuracy" in df:
        return df
    acc = dict(zip(df["key"], df["test_accuracy"], strict=True))
    teacher = [acc.get(c.get("teacher")) if isinstance(c, dict) else None for c in df["config"]]
    if all(t is None for t in teacher):
        return df
    return df.assign(teacher_accuracy=teacher)


def _short_point(point: str, row: str) -> str:
    """``"alpha=0.01, tau=5"`` of a grid point: each key without its term's name
    (``kd.tau`` -> ``tau``) where the short names stay distinct."""
    from harness.reports.selection import parse_point

    p = parse_point(point, row)
    short = {k: k.rsplit(".", 1)[-1] for k in p}
    if len(set(short.values())) < len(short):
        short = {k: k.removeprefix(row + ".") for k in p}
    return ", ".join(
        f"{short[k]}={v:g}"
        if isinstance(v, (int, float)) and not isinstance(v, bool)
        else f"{short[k]}={v}"
        for k, v in p.items()
    )


def chosen_points(choices, by_task: bool = True) -> dict:
    """``{(row, task): "alpha=0.01, tau=5"}`` (``by_task=False``: ``{row: ...}`` over every
    task): the grid point ``select: val`` chose most often over the seeds (the selection
    frame, :func:`harness.reports.selection.select_by_val`); rows without a grid are absent."""
    out = {}
    if choices is None or not len(choices):
        return out
    keys = ["row", "task"] if by_task else ["row"]
    for key, g in choices.groupby(keys, sort=False):
        key = key if by_task else key[0] if isinstance(key, tuple) else key
        row = key[0] if by_task else key
        short = _short_point(Counter(g["point"]).most_common(1)[0][0], row)
        if short:
            out[key] = short
    return out


def value_axis(mean, std, seeds, extra=()) -> tuple[float, float, bool]:
    """``(lo, hi, broken)`` of the accuracy axis (%). ``hi``: the largest seed value or
    mean + std, plus 1, rounded up to 5 (at most 100). From 0 (``lo = 0``, not broken) when the
    largest gap between two means of one task is at least :data:`GAP_SHARE` of ``hi``; else
    broken, the main part from ``lo`` (the smallest seed value or mean − std, minus 1, rounded
    down to 5). ``extra``: other values drawn on the axis (the teacher's accuracy)."""
    import numpy as np

    values = np.concatenate(
        [
            seeds.to_numpy(float).ravel(),
            (mean + std.fillna(0)).to_numpy(float).ravel(),
            (mean - std.fillna(0)).to_numpy(float).ravel(),
            np.asarray(list(extra), dtype=float),
        ]
    )
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 100.0, False
    hi = min(100.0, 5.0 * math.ceil((values.max() + 1.0) / 5.0))
    gap = max(
        (float(mean[c].max() - mean[c].min()) for c in mean.columns if mean[c].notna().sum() > 1),
        default=0.0,
    )
    lo = 5.0 * math.floor((values.min() - 1.0) / 5.0)
    if gap >= GAP_SHARE * hi or lo <= 10.0:
        return 0.0, hi, False
    return lo, hi, True


def _axes(fig, spec, lo: float, hi: float, broken: bool, horizontal: bool):
    """``(main, parts)`` of one panel: one axes from 0, or a broken axis: a stub from 0, the
    main part from ``lo`` at the same scale, and a break mark between them."""
    if not broken:
        ax = fig.add_subplot(spec)
        (ax.set_xlim if horizontal else ax.set_ylim)(0.0, hi)
        return ax, [ax]
    stub_len = (hi - lo) / _STUB
    if horizontal:
        gs = spec.subgridspec(1, 2, width_ratios=[1, _STUB], wspace=0.08)
        stub = fig.add_subplot(gs[0])
        main = fig.add_subplot(gs[1], sharey=stub)
        stub.set_xlim(0.0, stub_len)
        stub.set_xticks([0.0])
        main.set_xlim(lo, hi)
        stub.spines["right"].set_visible(False)
        main.spines["left"].set_visible(False)
        main.tick_params(axis="y", left=False, labelleft=False)
        ends = ((stub, [1, 1], [0, 1]), (main, [0, 0], [0, 1]))
    else:
        gs = spec.subgridspec(2, 1, height_ratios=[_STUB, 1], hspace=0.08)
        main = fig.add_subplot(gs[0])
        stub = fig.add_subplot(gs[1], sharex=main)
        stub.set_ylim(0.0, stub_len)
        stub.set_yticks([0.0])
        main.set_ylim(lo, hi)
        stub.spines["top"].set_visible(False)
        main.spines["bottom"].set_visible(False)
        main.tick_params(axis="x", bottom=False, labelbottom=False)
        ends = ((stub, [0, 1], [1, 1]), (main, [0, 1], [0, 0]))
    mark = {
        "marker": [(-1, -1.5), (1, 1.5)],
        "markersize": 9,
        "linestyle": "none",
        "color": "k",
        "mec": "k",
        "mew": 1,
        "clip_on": False,
    }
    for ax, xs, ys in ends:  # the break: two slanted strokes on each side of the gap
        ax.plot(xs, ys, transform=ax.transAxes, **mark)
    return main, [stub, main]


def _colours(methods) -> dict:
    import matplotlib.pyplot as plt

    palette = plt.get_cmap("tab10").colors
    own = [m for m in methods if m not in REFERENCE_ROWS]
    return {m: "0.65" if m in REFERENCE_ROWS else palette[own.index(m) % 10] for m in methods}


def _teacher(df, tasks) -> dict:
    """``{task: mean teacher accuracy (%)}`` where the records carry it."""
    import pandas as pd

    if "teacher_accuracy" not in df:
        return {}
    t = pd.to_numeric(df["teacher_accuracy"], errors="coerce")
    g = (100.0 * t).groupby(df["dataset"]).mean()
    return {c: float(g[c]) for c in tasks if c in g and pd.notna(g[c])}


def _reference_lines(ax, mean, task, teacher, horizontal: bool) -> None:
    line = ax.axvline if horizontal else ax.axhline
    for row, style in zip(
        [r for r in mean.index if r in REFERENCE_ROWS], ("--", ":"), strict=False
    ):
        if math.isfinite(mean.at[row, task]):
            line(mean.at[row, task], color="0.3", linestyle=style, linewidth=1.0, zorder=1)
    if task in teacher:
        line(teacher[task], color="tab:red", linestyle="-.", linewidth=1.0, zorder=1)


def _legend(fig, mean, teacher, seeds: int, top: float) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Line2D([], [], color="0.3", linestyle=style, label=REFERENCE_ROWS[r])
        for r, style in zip(
            [r for r in mean.index if r in REFERENCE_ROWS], ("--", ":"), strict=False
        )
    ]
    if teacher:
        handles.append(Line2D([], [], color="tab:red", linestyle="-.", label="teacher"))
    handles += [
        Patch(facecolor="none", edgecolor="black", linewidth=1.5, label="best mean"),
        Line2D(
            [],
            [],
            color="black",
            marker="o",
            markersize=3,
            linestyle="none",
            alpha=0.6,
            label=f"one seed ({seeds})",
        ),
    ]
    fig.legend(
        handles=handles,
        loc="upper center",
        ncol=len(handles),
        fontsize=7,
        frameon=False,
        bbox_to_anchor=(0.5, top),
    )


def _seed_dots(main, methods, task, seeds, m, points, span, rng) -> None:
    """The seeds of each row of one panel of :func:`plot_table` as jittered dots, and the
    row's mean (and chosen grid point) written at the left edge of the value axis ``span``."""
    import numpy as np

    lo, hi = span
    for j, r in enumerate(methods):
        v = seeds.loc[r, task].to_numpy(float) if task in seeds.columns else np.array([])
        v = v[np.isfinite(v)]
        main.scatter(
            v,
            j + rng.uniform(-0.22, 0.22, v.size),
            s=4,
            color="black",
            alpha=0.55,
            linewidths=0,
            zorder=4,
        )
        if np.isfinite(m[j]):
            text = f"{m[j]:.1f}" + (f" · {points[(r, task)]}" if (r, task) in points else "")
            main.text(
                lo + 0.01 * (hi - lo),
                j,
                text,
                va="center",
                ha="left",
                fontsize=6.5,
                zorder=3.5,
                clip_on=True,
                bbox={"facecolor": "white", "alpha": 0.6, "edgecolor": "none", "pad": 0.6},
            )


def plot_table(df, title: str, path, choices=None) -> None:
    """One table as small multiples, one panel per task (module docstring): PNG at ``path``
    and a PDF beside it. ``choices``: the selection frame, for the chosen grid points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from harness.reports.numbers import leaderboard_numbers, leaderboard_seeds

    mean, std, n = leaderboard_numbers(df)
    seeds = leaderboard_seeds(df)
    methods, tasks = list(mean.index), list(mean.columns)
    teacher = _teacher(df, tasks)
    lo, hi, broken = value_axis(mean, std, seeds, teacher.values())
    cols = min(len(tasks), 3)
    rows = math.ceil(len(tasks) / cols)
    left = 0.3 + 0.075 * max(len(str(r)) for r in methods)  # inches for the row names
    fig = plt.figure(figsize=(left + 0.2 + 3.2 * cols, 1.3 + rows * (0.55 + 0.3 * len(methods))))
    grid = fig.add_gridspec(rows, cols, hspace=0.45, wspace=0.12)
    colour, points = _colours(methods), chosen_points(choices)
    rng = np.random.default_rng(0)  # the jitter is the same on every report
    y = np.arange(len(methods))
    for i, task in enumerate(tasks):
        main, parts = _axes(fig, grid[i // cols, i % cols], lo, hi, broken, horizontal=True)
        m, s = mean[task].to_numpy(float), std[task].fillna(0).to_numpy(float)
        best = np.nanargmax(m) if np.isfinite(m).any() else None
        for ax in parts:
            bars = ax.barh(
                y, np.nan_to_num(m), 0.7, color=[colour[r] for r in methods], alpha=0.8, zorder=2
            )
            if best is not None:
                bars[best].set_edgecolor("black")
                bars[best].set_linewidth(1.5)
        main.errorbar(
            m, y, xerr=s, fmt="none", ecolor="black", elinewidth=0.8, capsize=2, zorder=4.5
        )
        _seed_dots(main, methods, task, seeds, m, points, (lo, hi), rng)
        _reference_lines(main, mean, task, teacher, horizontal=True)
        main.set_title(str(task), fontsize=8)
        main.grid(axis="x", alpha=0.3)
        parts[0].set_yticks(y, [str(r) for r in methods] if i % cols == 0 else [])
        parts[0].tick_params(axis="y", labelsize=8, length=0 if i % cols else 3.5)
        parts[0].set_ylim(len(methods) - 0.5, -0.5)
        for ax in parts:
            ax.tick_params(axis="x", labelsize=7)
    fig.supxlabel(
        f"test accuracy (%): bar = mean, whisker = ± std, dots = the "
        f"{int(n.max().max()) if n.size else 0} seeds"
        + ("; axis broken between 0 and " + f"{lo:g}" if broken else ""),
        fontsize=8,
    )
    height = fig.get_figheight()
    fig.suptitle(str(title), fontsize=10, y=1.0 - 0.08 / height, va="top")
    _legend(fig, mean, teacher, int(n.max().max()) if n.size else 0, 1.0 - 0.38 / height)
    fig.subplots_adjust(
        left=left / fig.get_figwidth(), right=0.98, bottom=0.6 / height, top=1.0 - 0.95 / height
    )
    _save_both(fig, path)


def plot_lines(df, title: str, path, choices=None) -> None:
    """Test accuracy (%) versus a numeric task axis (li2020 Table 4: batch size): a line per
    method (mean ± std, the most chosen grid point in its legend label), the seeds as jittered
    dots, student-alone rows dashed; value axis as :func:`value_axis`. PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from harness.reports.numbers import leaderboard_numbers, leaderboard_seeds

    mean, std, n = leaderboard_numbers(df)
    seeds = leaderboard_seeds(df)
    name, xs = numeric_axis(mean.columns)
    teacher = _teacher(df, list(mean.columns))
    lo, hi, broken = value_axis(mean, std, seeds, teacher.values())
    fig = plt.figure(figsize=(6.5, 4.4))
    main, parts = _axes(fig, fig.add_gridspec(1, 1)[0], lo, hi, broken, horizontal=False)
    colour, points = _colours(mean.index), chosen_points(choices, by_task=False)
    rng, width = np.random.default_rng(0), 0.012 * (max(xs) - min(xs))
    for method in mean.index:
        m, s = mean.loc[method].to_numpy(float), std.loc[method].fillna(0).to_numpy(float)
        label = str(method) + (f" ({points[method]})" if method in points else "")
        main.errorbar(
            xs,
            m,
            yerr=s,
            marker="o",
            markersize=4,
            capsize=3,
            label=label,
            color=colour[method],
            linestyle="--" if method in REFERENCE_ROWS else "-",
        )
        for x, task in zip(xs, mean.columns, strict=True):
            v = seeds.loc[method, task].to_numpy(float) if task in seeds.columns else []
            v = np.asarray(v)[np.isfinite(v)]
            main.scatter(
                x + rng.uniform(-width, width, v.size),
                v,
                s=4,
                color=colour[method],
                alpha=0.5,
                linewidths=0,
            )
    if teacher:
        main.plot(
            xs,
            [teacher.get(c, np.nan) for c in mean.columns],
            color="tab:red",
            linestyle="-.",
            linewidth=1.0,
            label="teacher",
        )
    parts[0].set_xticks(xs, [f"{x:g}" for x in xs])  # the bottom axes: the stub when broken
    parts[0].set_xlabel(name)
    main.set_ylabel(
        f"test accuracy (%), mean ± std, dots: {int(n.max().max())} seeds"
        + (f"\n(axis broken between 0 and {lo:g})" if broken else ""),
        fontsize=8,
    )
    main.set_title(str(title), fontsize=10)
    main.grid(alpha=0.3)
    main.legend(fontsize=7)
    fig.subplots_adjust(left=0.13, right=0.98, bottom=0.12, top=0.93)
    _save_both(fig, path)
