"""The field's habits: ruff on the whole repository, with the rules that
pass today enforced here (so the README's test command, and CI, run them); pyproject.toml's
``[tool.ruff.lint]`` holds the target set and .pre-commit-config.yaml runs it on commit."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: pyflakes (unused imports and variables, undefined names, __all__ naming what exists) and
#: syntax errors; a ratchet: rules join as the code passes them.
ENFORCED = "F,E9"


def _ruff() -> list[str]:
    exe = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(exe).exists():
        pytest.skip("ruff is not installed (pip install -e '.[test]' brings it)")
    return [exe]


def test_ruff_finds_nothing_of_the_enforced_rules():
    out = subprocess.run(
        [*_ruff(), "check", "--select", ENFORCED, "--output-format", "concise", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]
