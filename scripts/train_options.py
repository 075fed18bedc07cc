"""Write docs/train-options.md: every ``train:`` key of a suite, read from
:class:`harness.training.config.TrainConfig`'s fields (type, default) and its docstring's
``Attributes`` section (meaning)::

    PYTHONPATH=$PWD python scripts/train_options.py          # rewrite the page
    PYTHONPATH=$PWD python scripts/train_options.py --check  # exit 1 when it is out of date
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from harness.reports.files import page_command
from harness.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "train-options.md"
COMMAND = "PYTHONPATH=$PWD python scripts/train_options.py"

HEADER = f"""# `train:` options

The keys a suite's `train:` mapping takes (a stage's, or `defaults.train`): the fields of
`harness.training.config.TrainConfig`, which checks them (a wrong type or value is an error
naming the key). `seed` is set by the suite's `seeds`, one job per seed. Generated from the
class by `{COMMAND}`; do not edit by hand.

| key | type | default | meaning |
|---|---|---|---|
"""


def _entries(doc: str) -> dict[str, tuple[str, str]]:
    """``{field: (declared type, text)}`` from a numpy-style ``Attributes`` section."""
    out: dict[str, tuple[str, str]] = {}
    section = doc.split("Attributes\n    ----------\n", 1)[1]
    for m in re.finditer(r"^    (\S[^\n]*?) : ([^\n]*)\n((?:        [^\n]*\n|\n)*)", section, re.M):
        text = " ".join(line.strip() for line in m.group(3).splitlines() if line.strip())
        for name in m.group(1).split(", "):
            out[name] = (m.group(2).strip(), text)
    return out


def _cell(text: str) -> str:
    """reStructuredText to Markdown, for a table cell."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")
    return text.replace("|", "\\|")


def _type(annotation: str) -> str:
    """A field's annotation as a suite author writes the value."""
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    if base == "tuple[ParamGroup, ...]":
        base = "list of {match, lr_mult}"
    elif m := re.fullmatch(r"tuple\[(\w+), \.\.\.\]", base):
        base = f"list of {m.group(1)}"
    return f"{base} or null" if optional else base


def page() -> str:
    docs = _entries(TrainConfig.__doc__ or "")
    rows = []
    for f in dataclasses.fields(TrainConfig):
        declared, text = docs.get(f.name, ("", ""))
        kind = declared if declared.startswith("{") else _type(str(f.type))
        default = f.default
        default = list(default) if isinstance(default, tuple) else default
        shown = "null" if default is None else repr(default).replace("'", '"')
        if isinstance(default, bool):
            shown = str(default).lower()
        rows.append(f"| `{f.name}` | `{_cell(kind)}` | `{shown}` | {_cell(text)} |")
    return HEADER + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    return page_command(argv, PAGE, page, COMMAND, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
