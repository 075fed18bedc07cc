"""The pruners and samplers a suite's ``search:`` block may name (Optuna's), and their check.

Kept apart from :mod:`harness.experiments.search` so that the suite checker
(:mod:`harness.experiments.suite`) can validate a search block without importing the search.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

__all__ = ["PRUNERS", "SAMPLERS", "check_option", "build_option"]

#: Optuna pruners by the name a search's ``pruner: {name: ...}`` uses (``optuna.pruners``).
PRUNERS: dict[str, str] = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
    "none": "NopPruner",
}
#: Optuna samplers by the name a search's ``sampler: {name: ...}`` uses (``optuna.samplers``).
SAMPLERS: dict[str, str] = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
}
_OPTIONS = {"pruner": ("optuna.pruners", PRUNERS), "sampler": ("optuna.samplers", SAMPLERS)}


def _option_class(kind: str, name: str) -> type:
    import importlib

    module, table = _OPTIONS[kind]
    return getattr(importlib.import_module(module), table[name])


def build_option(kind: str, spec: Mapping[str, Any]):
    """The Optuna pruner or sampler ``spec`` (``{"name": ..., **kwargs}``) describes."""
    import optuna

    cls = _option_class(kind, spec["name"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(**{k: v for k, v in spec.items() if k != "name"})


def check_option(kind: str, spec: Mapping[str, Any]) -> str | None:
    """Why ``spec`` is not a valid ``pruner`` / ``sampler`` of a search (None when it is).

    The name must be one of :data:`PRUNERS` / :data:`SAMPLERS`, the other keys arguments of
    that Optuna class, and the class must build with them.
    """
    import inspect

    table = _OPTIONS[kind][1]
    name = spec.get("name")
    if name not in table:
        from solvers.registry import did_you_mean

        hint = did_you_mean(name, table)
        return f"unknown {kind} name {name!r}{hint} Known: {', '.join(table)}"
    params = inspect.signature(_option_class(kind, name)).parameters
    for key in spec:
        if key != "name" and key not in params:
            return (
                f"{kind} {name!r} ({table[name]}) takes no {key!r}; it takes "
                f"{', '.join(params) or 'nothing'}"
            )
    try:
        build_option(kind, spec)
    except (TypeError, ValueError) as exc:
        return f"{kind} {name!r}: {exc}"
    return None
