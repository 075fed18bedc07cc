"""otransfer harness: training, suites, reports and the CLI.

The names below are imported on first use (torch and the solvers load then), so that
``import harness`` and ``otransfer --help`` stay instant.
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_LAZY = {
    "Taps": "taps",
    "representation_ot": "representation",
    "solve_representation": "representation",
    "matched_fraction": "representation",
    "RegContext": "regularizers",
    "Regularizer": "regularizers",
    "build_regularizer": "regularizers",
    "available_regularizers": "regularizers",
    "get_regularizer": "regularizers",
    "build_model": "models",
    "all_models": "models",
    "replace_head": "models",
    "load_dataset": "data",
    "all_datasets": "data",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
