"""Lazy public names of a package: ``import harness.experiments`` stays instant (torch, Optuna and
the solvers load when a name is first used), while ``from harness.experiments import run_suite``
works as an eager import would."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def attach(package: str, names: Mapping[str, str]
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


#: Entry-point groups already loaded in this process (each is loaded once).
_GROUPS_LOADED: set[str] = set()


def load_entry_points(group: str) -> list[str]:
    """Import every module that a Python entry point of ``group`` names (``otransfer.solvers``,
    ``otransfer.regularizers``, ``otransfer.models``, ``otransfer.datasets``), once per process:
    their imports register components with the registries' decorators. A plugin that fails to
    import is skipped with one line on standard error naming it, its package and the error.
    Returns the entry points' names loaded by this call."""
    if group in _GROUPS_LOADED:
        return []
    _GROUPS_LOADED.add(group)  # first: a plugin that looks its registry up does not recurse
    import sys
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=group):
        try:
            ep.load()
            loaded.append(ep.name)
        except Exception as exc:  # a broken plugin: said in one line, the others still load
            pkg = getattr(getattr(ep, "dist", None), "name", None) or "?"
            line = " ".join(f"{type(exc).__name__}: {exc}".split())
            print(f"otransfer: plugin {ep.name!r} ({ep.value}, entry point group {group}, "
                  f"package {pkg}) failed to import and is skipped: {line}", file=sys.stderr)
    return loaded
