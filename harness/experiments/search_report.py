"""What one ``otransfer tune`` call did (:class:`TuneSummary`) and its report: the trials'
table, the best point, the re-runs' test accuracy, and Optuna's plots."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

from harness.experiments.search_points import TUNED
from harness.experiments.suite import Search, canonical_json
from harness.training import safe_io

__all__ = ["TuneSummary", "write_tune_report"]


@dataclasses.dataclass
class TuneSummary:
    """What one :func:`tune` call did.

    ``trials``, ``completed``, ``pruned``, ``failed`` count this call's trials; ``total``
    the study's (every process). ``best_*`` is the study's best trial (None when no trial
    completed); ``reruns`` one dict per seed (``seed``, ``key``, ``status``,
    ``test_accuracy``, ``skipped``); ``test_mean`` / ``test_std`` their test accuracy
    (fractions, population std).
    """

    suite: str
    study: str
    storage: str
    stage: str
    regularizer: str
    trials: int = 0
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    total: int = 0
    best_number: int | None = None
    best_value: float | None = None
    best_point: dict[str, Any] | None = None
    reruns: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    test_mean: float | None = None
    test_std: float | None = None
    paths: dict[str, Path] = dataclasses.field(default_factory=dict)
    wall_time: float = 0.0


def _trials_frame(study, space: Mapping[str, Any]):
    """One row per trial: number, state, val accuracy (%), epochs, the point, wall time."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        point = json.loads(a["point"]) if "point" in a else dict(t.params)
        val = t.value if t.value is not None else a.get("val_accuracy")
        row = {
            "trial": t.number,
            "state": t.state.name,
            "val acc. (%)": round(100 * val, 2) if val is not None else None,
            "epochs": a.get("epochs_completed", len(t.intermediate_values) or None),
        }
        for key in space:
            v = point.get(key)
            row[key] = (
                f"{v:.4g}" if isinstance(v, float) else (canonical_json(v) if v is not None else "")
            )
        row["s"] = round(a["wall_time"], 1) if "wall_time" in a else None
        if t.state.name == "FAIL":
            row["reason"] = str(a.get("reason", ""))[:80]
        rows.append(row)
    return pd.DataFrame(rows)


def _save_axes(ax, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    fig.tight_layout()
    safe_io.write_figure(fig, path, dpi=120)
    plt.close(fig)


def _plots(study, stem: str, out_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Optuna's optimisation history, intermediate values and parameter importances as PNG;
    a note for each plot that cannot be drawn yet (too few trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization import matplotlib as ovm

    complete = [
        t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE
    ]
    varying = [
        k
        for k in {k for t in complete for k in t.params}
        if len({repr(t.params.get(k)) for t in complete}) > 1
    ]
    paths, notes = {}, []
    plots = {
        "history": lambda: ovm.plot_optimization_history(study, target_name="val accuracy"),
        "intermediate": lambda: ovm.plot_intermediate_values(study),
        "importance": lambda: ovm.plot_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=0), target_name="val accuracy"
        ),
    }
    for what, draw in plots.items():
        if what == "importance" and (len(complete) < 2 or not varying):
            notes.append(
                f"parameter importances: not drawn ({len(complete)} completed "
                f"trial(s), {len(varying)} varying parameter(s); needs >= 2 and >= 1)"
            )
            continue
        if what == "intermediate" and not any(
            t.intermediate_values for t in study.get_trials(deepcopy=False)
        ):
            notes.append("intermediate values: not drawn (no trial reported any)")
            continue
        if not complete and what != "intermediate":
            notes.append(f"{what}: not drawn (no completed trial)")
            continue
        path = out_dir / f"{stem}_{what}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning, empty-plot warnings
                _save_axes(draw(), path)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            notes.append(f"{what}: not drawn ({exc})")
            continue
        paths[what] = path
    return paths, notes


def write_tune_report(
    study,
    search: Search,
    out_dir: str | os.PathLike,
    summary: TuneSummary,
    plots: bool = True,
    table: str | None = None,
) -> dict[str, Path]:
    """Write ``tune_<stage>_<row>.md`` (the trials, the best point, the re-runs' test accuracy)
    and the plots ``tune_<stage>_<row>_{history,intermediate,importance}.png``; return the
    paths."""
    from harness.experiments.records import redact
    from harness.experiments.suite import slug

    out = safe_io.ensure_dir(Path(out_dir), Path(out_dir).parent)
    stem = f"tune_{slug(search.stage)}_{slug(search.row)}"
    table = table or search.stage
    paths, notes = _plots(study, stem, out) if plots else ({}, [])
    frame = _trials_frame(study, search.space)
    states = frame["state"].value_counts().to_dict() if len(frame) else {}
    md = [
        f"# {summary.suite}: search of `{search.row}` in stage `{search.stage}`\n",
        f"Optuna study `{summary.study}` in `{redact(summary.storage)}`; dataset "
        f"`{search.dataset}`, each trial trained with seed(s) "
        f"{', '.join(map(str, search.seeds))} and scored by its final **validation** accuracy "
        f"(mean over the seeds); pruner `{canonical_json(dict(search.pruner))}`, sampler "
        f"`{canonical_json(dict(search.sampler))}`. "
        + ", ".join(f"{n} {s.lower()}" for s, n in states.items())
        + ".\n",
        "Space: " + "; ".join(f"`{k}` {_describe(d)}" for k, d in search.space.items()) + "\n",
    ]
    if summary.best_number is not None:
        md.append(
            f"**Best**: trial {summary.best_number}, validation accuracy "
            f"{100 * summary.best_value:.2f} %: "
            + ", ".join(
                f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {canonical_json(v)}"
                for k, v in summary.best_point.items()
            )
            + "\n"
        )
    else:
        md.append("**Best**: none yet (no trial completed).\n")
    if summary.reruns:
        accs = [r["test_accuracy"] for r in summary.reruns]
        md += [
            f"Re-runs of the best point on the **test** split (row "
            f"`{search.row}{TUNED}` of the `{table}` leaderboard):\n",
            "| seed | key | test acc. (%) |",
            "|---|---|---|",
        ]
        md += [
            f"| {r['seed']} | {r['key']} | "
            + (f"{100 * a:.2f}" if a is not None else r["status"])
            + " |"
            for r, a in zip(summary.reruns, accs, strict=False)
        ]
        if summary.test_mean is not None:
            md.append(
                f"\nTest accuracy: **{100 * summary.test_mean:.1f} ± "
                f"{100 * summary.test_std:.1f} %** (mean ± std over "
                f"{sum(a is not None for a in accs)} seed(s)).\n"
            )
    md += ["## Trials\n", frame.to_markdown(index=False) if len(frame) else "(none)", ""]
    for what, path in paths.items():
        md.append(f"![{what}]({path.name})\n")
    md += [f"- {n}" for n in notes]
    paths["md"] = out / f"{stem}.md"
    safe_io.write_text(paths["md"], "\n".join(md) + "\n", out)
    return paths


def _describe(dim: Mapping[str, Any]) -> str:
    if "choices" in dim:
        return "in {" + ", ".join(canonical_json(c) for c in dim["choices"]) + "}"
    kind = ("log-" if dim["log"] else "") + ("int" if dim["type"] == "int" else "uniform")
    step = f", step {dim['step']}" if dim.get("step") else ""
    return f"{kind} [{dim['low']:g}, {dim['high']:g}]{step}"
