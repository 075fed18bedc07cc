"""The numbers behind every table and figure of a report, pure pandas functions of the run
records: the per-cell mean, std and count of the test accuracy, and every seed's value."""

from __future__ import annotations

__all__ = ["leaderboard_numbers", "leaderboard_seeds", "accuracies"]


def leaderboard_numbers(df, stage: str | None = None):
    """``(mean, std, n)`` frames of test accuracy (%) by regularizer (rows) x dataset (cols).

    ``df`` has columns ``regularizer``, ``dataset``, ``seed``, ``test_accuracy`` (a fraction) and
    optionally ``stage`` / ``status``; only completed rows count. ``stage``: keep that stage only
    (default: the stage with the most distinct regularizers, the later on ties: the students).
    """
    d = accuracies(df, stage)
    order_r = list(dict.fromkeys(d["regularizer"]))
    order_c = list(dict.fromkeys(d["dataset"]))
    g = d.groupby(["regularizer", "dataset"], sort=False)["acc"]
    mean = g.mean().unstack("dataset").reindex(index=order_r, columns=order_c)
    std = g.std(ddof=0).unstack("dataset").reindex(index=order_r, columns=order_c)
    n = g.count().unstack("dataset").reindex(index=order_r, columns=order_c)
    return mean, std, n


def leaderboard_seeds(df, stage: str | None = None):
    """Test accuracy (%) of every seed: rows as :func:`leaderboard_numbers`, columns a
    ``(task, seed)`` MultiIndex (tasks in order, seeds sorted). The paired verdicts
    (:mod:`harness.reports.verdicts`) match seeds across rows within a task; a seed recorded
    twice for one cell (several grid points not reduced by ``select: val``) keeps its mean."""
    import pandas as pd

    d = accuracies(df, stage)
    order_r = list(dict.fromkeys(d["regularizer"]))
    order_c = list(dict.fromkeys(d["dataset"]))
    wide = (
        d.groupby(["regularizer", "dataset", "seed"], sort=False)["acc"]
        .mean()
        .unstack(["dataset", "seed"])
    )
    cols = pd.MultiIndex.from_tuples(
        sorted(wide.columns, key=lambda c: (order_c.index(c[0]), c[1])), names=["task", "seed"]
    )
    return wide.reindex(index=order_r, columns=cols)


def accuracies(df, stage):
    """The completed records of one stage (see :func:`leaderboard_numbers`) with ``acc`` (%)
    and ``regularizer`` replaced by the row name."""
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
    row = (
        d["method"].where(d["method"].notna(), d["regularizer"])
        if "method" in d
        else d["regularizer"]
    )
    return d.assign(
        acc=100.0 * pd.to_numeric(d["test_accuracy"]),
        regularizer=row,
        seed=pd.to_numeric(d["seed"]).astype(int),
    )
