"""The field's habits: ruff's lint rules (pyproject.toml's ``[tool.ruff.lint]``) and its
formatter on the whole repository, here (so the README's test command runs them), in .ci/run
and in .pre-commit-config.yaml. ruff is pinned in the ``test`` extra: a formatter's style moves
between releases."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: pycodestyle errors and warnings, pyflakes, import order and bugbear: pyproject.toml's
#: [tool.ruff.lint] target, the whole of it (a ratchet: never narrow it).
ENFORCED = "E,W,F,I,B"


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


def test_ruff_format_would_change_nothing():
    out = subprocess.run(
        [*_ruff(), "format", "--check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]
