"""scripts/profile_jobs.py and scripts/profile_batched.py: the bucketing of a cProfile by
function, and rows that still name functions of the code (a renamed function would leave its
row at 0 s without a word)."""

import cProfile
import importlib.util
import pstats
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    sys.path.insert(0, str(ROOT / "scripts"))  # profile_batched imports profile_jobs
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "scripts"))


def _inner(n: int) -> int:
    return sum(i * i for i in range(n))


def _outer() -> int:
    return _inner(20_000) + _inner(40_000)


def test_cumulative_sums_a_functions_calls_and_keeps_the_nesting():
    jobs = _script("profile_jobs")
    prof = cProfile.Profile()
    prof.enable()
    _outer()
    _inner(10_000)
    prof.disable()
    stats = pstats.Stats(prof)
    rows = [
        ("outer", ("test_profile_scripts", "_outer")),
        ("inner", ("test_profile_scripts", "_inner")),
        ("inner from outer", ("test_profile_scripts", "_inner@_outer")),
        ("absent", ("test_profile_scripts", "no_such_function")),
    ]
    got = jobs.cumulative(stats, rows)
    by_hand = {fn: v[3] for (file, _, fn), v in stats.stats.items() if "test_profile" in file}
    assert got["inner"] == pytest.approx(by_hand["_inner"])  # all three calls
    assert got["outer"] == pytest.approx(by_hand["_outer"])
    assert 0 < got["inner from outer"] < got["inner"]  # two of the three calls
    assert got["inner from outer"] <= got["outer"]
    assert got["absent"] == 0.0


@pytest.mark.parametrize("name", ["profile_jobs", "profile_batched"])
def test_rows_name_functions_that_exist(name):
    rows = _script(name).ROWS
    sources = {p: p.read_text() for p in (ROOT / "harness").rglob("*.py")}
    sources |= {p: p.read_text() for p in (ROOT / "solvers").rglob("*.py")}
    for label, (part, fn) in rows:
        fn = fn.partition("@")[0]
        ours = [s for p, s in sources.items() if part in str(p)]
        if not ours:  # a library's file (dataloader.py, sgd.py, POT, autograd): not ours to check
            continue
        assert any(re.search(rf"^\s*def {fn}\(", s, re.M) for s in ours), (label, part, fn)
