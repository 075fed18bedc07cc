"""KeOps's import-time CUDA warning stays out of stdout (tables, progress bars), and quieting
it writes nothing to os.environ."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("pykeops")
pytest.importorskip("geomloss")

_SCRIPT = """
import os, torch
from solvers import solve_sample
before = dict(os.environ)
x, y = torch.randn(6, 2, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
out = solve_sample(x, y, method="keops")
assert dict(os.environ) == before, sorted(set(os.environ) ^ set(before))
print("value", float(out.value))
"""


def _run(env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if "KEOPS" not in k}
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        capture_output=True,
        text=True,
        env={**env, **env_extra},
        timeout=600,
    )


def test_keops_solve_prints_only_its_caller_output_and_leaves_environ():
    done = _run({})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[KeOps]" not in done.stdout
    assert done.stdout.startswith("value ")
