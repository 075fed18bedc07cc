"""A suite's ``plugins:``: the modules it needs imported before it is checked (docs/plugins.md).

Each entry is a module name (``my_lab.ot_terms``, importable where the suite runs: installed or
on ``PYTHONPATH``) or a path to a ``.py`` file (relative to the suite file's folder); importing
it registers its components with the registries' decorators (``register_regularizer``,
``solvers.register``, ``register_model``, ``register_dataset``). The suite loader imports them
(:func:`import_plugins`), so every process that loads the suite — ``run``, the ``worker`` s that
``run --workers N`` and ``launch`` start, ``tune``, ``status``, ``report``, ``schema SUITE`` —
has the suite's components, whatever it was started from. Each plugin is imported once per
process (a file by its resolved path); one that fails raises one line naming the plugin, the
suite file and the error.

Installed packages may instead declare Python entry points (groups ``otransfer.solvers``,
``otransfer.regularizers``, ``otransfer.models``, ``otransfer.datasets``), imported at the
registries' first lookup (:func:`solvers.registry.load_entry_points`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["import_plugins", "suite_plugins", "PluginError"]

#: Plugin files imported in this process: resolved path -> module name.
_FILES: dict[str, str] = {}


class PluginError(ImportError):
    """A suite's plugin that cannot be imported (its message is the one line to print)."""


def _is_path(entry: str) -> bool:
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def _import_file(path: Path) -> str:
    """Import the ``.py`` file ``path`` under a name of its own (once); return that name."""
    key = str(path)
    if key in _FILES:
        return _FILES[key]
    if not path.is_file():
        raise FileNotFoundError(f"no file {key}")
    name = f"otransfer_plugin_{path.stem}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pickles (submitit) and dataclasses find it by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    _FILES[key] = name
    return name


def import_plugins(entries: Sequence[Any], suite_file: str) -> list[str]:
    """Import each plugin of a suite's ``plugins:`` list; return the modules' names.

    Parameters
    ----------
    entries : sequence of str
        Module names or ``.py`` paths (relative paths from the suite file's folder).
    suite_file : str
        The suite file (its folder resolves relative paths; ``<suite>`` for text: the working
        folder).

    Raises
    ------
    PluginError
        One line: which plugin of which suite file failed, and the error.
    """
    base = Path(suite_file).resolve().parent if Path(suite_file).is_file() else Path.cwd()
    names = []
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise PluginError(f"plugin {entry!r}: give a module name or a path to a .py file")
        try:
            if _is_path(entry):
                names.append(_import_file((base / Path(entry).expanduser()).resolve()))
            else:
                names.append(importlib.import_module(entry.strip()).__name__)
        except Exception as exc:
            why = " ".join(f"{type(exc).__name__}: {exc}".split())
            hint = (
                " (relative paths start from the suite file's folder)"
                if _is_path(entry)
                else " (a module name must be importable: installed, or on PYTHONPATH; "
                "or give a path to a .py file)"
            )
            raise PluginError(
                f"plugin {entry!r} failed to import: "
                f"{why}{hint if isinstance(exc, (ImportError, OSError)) else ''}"
            ) from None
    return names


def suite_plugins(raw: Any, filename: str, err) -> list[str]:
    """Import the ``plugins:`` of a parsed suite file ``raw`` (before it is checked: its names
    must be registered by then). ``err(path, msg)`` returns the exception to raise (the
    loader's, naming the file, the line and the key)."""
    entries = raw.get("plugins") if isinstance(raw, dict) else None
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise err(
            ["plugins"],
            f"must be a list of module names or paths to .py files, got {type(entries).__name__}",
        )
    names = []
    for i, entry in enumerate(entries):
        try:
            names += import_plugins([entry], filename)
        except PluginError as exc:
            raise err(["plugins", i], str(exc)) from None
    return names
