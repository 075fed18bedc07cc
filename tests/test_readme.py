"""The README's two quick-start commands are what CI runs and what the CLI offers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


# --------------------------------------------------------------------------- every snippet runs


def _blocks(lang: str, path: Path = ROOT / "README.md") -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(), re.S | re.M)


def _commands(path: Path) -> list[list[str]]:
    """Every ``otransfer ...`` command line of the ``bash`` blocks of ``path`` (continuation
    lines joined, comments dropped, ``.venv/bin/`` stripped), as argv after the program."""
    import shlex

    out = []
    for block in _blocks("bash", path):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and words[0].endswith("otransfer"):
                    out.append(words[1:])
    return out


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_every_python_snippet_runs_as_written(index, capsys):
    """Each ```python block of the README, executed as it is written (the training
    snippet's ``res.history["steps"][0]`` raised KeyError)."""
    code = _blocks("python")[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
    # train() draws no bar into a log: a captured (non-terminal) stderr stays short
    assert capsys.readouterr().err.count("\r") < 5


@pytest.mark.parametrize(
    "doc", ["README.md", "docs/plugins.md", "docs/scale.md", "docs/extending.md"]
)
def test_every_command_line_parses(doc):
    """Each ``otransfer ...`` line of the document's bash blocks parses with the real parser,
    and the suites it names exist (the plugin example's own file aside)."""
    from harness.cli import build_parser
    from harness.experiments.suite import available_suites

    commands = _commands(ROOT / doc)
    assert commands, f"no otransfer command in {doc}"
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv or ["run", "mini"])
        suite = getattr(args, "suite", None)
        if suite and not suite.endswith(".yaml") and suite not in ("solvers",):
            assert suite in available_suites(), (doc, argv)
