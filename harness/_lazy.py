"""Lazy public names of a package: ``import harness.experiments`` stays instant (torch, Optuna and
the solvers load when a name is first used), while ``from harness.experiments import run_suite``
works as an eager import would."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def attach(
    package: str, names: Mapping[str, str]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` of ``package`` exporting each of ``names``
    (public name -> submodule that defines it)."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(names) | set(importlib.import_module(package).__dict__))

    return sorted(names), __getattr__, __dir__


def load_entry_points(group: str) -> list[str]:
    """:func:`solvers.registry.load_entry_points` (imported here on call: ``solvers`` loads
    torch, and this module must stay instant)."""
    from solvers.registry import load_entry_points as load

    return load(group)
