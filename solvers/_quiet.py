"""KeOps prints a CUDA warning to stdout when it is imported, and POT and GeomLoss both import
it: on a CPU machine the line lands over progress bars and inside printed tables."""

from __future__ import annotations

import contextlib
import functools
import io
import os

__all__ = ["quiet_keops"]


@functools.cache
def quiet_keops() -> None:
    """Import KeOps (if installed) with stdout captured and turn its verbosity off, unless the
    user asked for it (``PYKEOPS_VERBOSE=1``); call before importing ``ot`` or ``geomloss``.
    Nothing is written to ``os.environ``. Done once per process (cached: the solvers call it
    on every solve, and a failed import would otherwise search ``sys.path`` each time)."""
    if os.environ.get("PYKEOPS_VERBOSE") == "1":
        return
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import pykeops
    except ImportError:  # not installed: POT and GeomLoss do without it
        return
    pykeops.set_verbose(False)
