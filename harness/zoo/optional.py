"""Optional dependencies: import one, or fail in one line naming the extra that installs it."""

from __future__ import annotations

import importlib

__all__ = ["optional_import"]


def optional_import(module: str, extra: str, what: str):
    """``module`` imported, or a one-line ``ModuleNotFoundError`` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"{what} needs {module.split('.')[0]}: pip install 'otransfer[{extra}]'"
        ) from None
