"""The README's two quick-start commands are what CI runs and what the CLI offers."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", text, re.S)
    assert block, "README has a Quick start bash block"
    return [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]


def test_two_commands():
    assert len(_quick_start()) == 2


def test_ci_runs_the_readme_test_command():
    """.ci/run must call the README's test command (the part after the install)."""
    test_cmd = _quick_start()[1].split("&&")[-1].strip()
    pytest_part = test_cmd.replace(".venv/bin/python", "python")
    ci = (ROOT / ".ci" / "run").read_text()
    assert pytest_part in ci, (pytest_part, "not in .ci/run")


def test_main_command_is_the_cli():
    assert _quick_start()[0].rstrip().endswith(".venv/bin/otransfer")
