"""Every example in a docstring of solvers/ and harness/ runs as a test.

The modules are found by their ``>>>`` lines, so a new example is picked up without editing a
list here; each runs with :mod:`doctest` in its module's namespace, one test per module.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import importlib.util
import io
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def modules_with_examples() -> list[str]:
    """Dotted names of the modules of solvers/ and harness/ whose source holds ``>>>``."""
    out = []
    for package in ("solvers", "harness"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if ">>>" not in path.read_text(encoding="utf-8"):
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out.append(".".join(parts))
    return out


MODULES = modules_with_examples()


def test_the_examples_are_found():
    assert {"solvers", "solvers._registry", "harness.transfer.taps"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_examples_of(name):
    # an optional backend (KeOps) prints a notice when first imported, in whichever example
    # happens to import it first: imported here, the notice is no example's output
    with contextlib.redirect_stdout(io.StringIO()):
        for backend in ("pykeops", "geomloss"):
            if importlib.util.find_spec(backend) is not None:
                importlib.import_module(backend)
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder().find(module, name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 or all(not t.examples for t in tests), name
    assert result.failed == 0, report.getvalue()
