"""KeOps's import-time CUDA warning stays out of stdout (tables, progress bars) whichever
library imports it (POT for emd, GeomLoss for keops), and quieting it writes nothing to
os.environ."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("pykeops")

_SCRIPT = """
import os, sys, torch
from solvers import solve, solve_sample
before = dict(os.environ)
x, y = torch.randn(6, 2, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
if sys.argv[1] == "keops":
    out = solve_sample(x, y, method="keops")
else:
    out = solve(torch.cdist(x, y), method=sys.argv[1])
new = {k for k in set(os.environ) ^ set(before) if "KEOPS" in k}
assert not new, new  # POT itself sets KMP_* variables: not ours
print("value", float(out.value))
"""


def _run(method: str, extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if "KEOPS" not in k}
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, method],
        capture_output=True,
        text=True,
        env={**env, **extra},
        timeout=600,
    )


@pytest.mark.parametrize("method", ["emd", "pot_sinkhorn", "keops"])
def test_solve_prints_no_keops_line_and_leaves_environ(method):
    if method == "keops":
        pytest.importorskip("geomloss")
    done = _run(method, {})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[KeOps]" not in done.stdout
    assert done.stdout.startswith("value ")


def test_the_user_can_still_ask_keops_to_speak():
    import torch

    if torch.cuda.is_available():
        pytest.skip("KeOps prints its CUDA warning only without CUDA")
    done = _run("emd", {"PYKEOPS_VERBOSE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[KeOps]" in done.stdout + done.stderr
