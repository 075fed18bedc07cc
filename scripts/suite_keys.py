"""Write docs/suite-keys.md: every key of every block of a suite file, read from the pydantic
models of :mod:`harness.experiments.suite_models` (type, required, meaning)::

    PYTHONPATH=$PWD python scripts/suite_keys.py          # rewrite the page
    PYTHONPATH=$PWD python scripts/suite_keys.py --check  # exit 1 when it is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.experiments import suite_models as M
from harness.experiments.suite_types import type_name
from harness.reports.files import page_command

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "suite-keys.md"
COMMAND = "PYTHONPATH=$PWD python scripts/suite_keys.py"

BLOCKS = [
    ("The top level", M.SuiteFile),
    ("A stage (`stages: {NAME: ...}`)", M.StageBlock),
    ("`source:` of a stage", M.SourceBlock),
    ("`reference:` of a stage", M.ReferenceBlock),
    ("`search:` (one block, or a list of them)", M.SearchBlock),
    ("One dimension of a search's `space:`", M.DimensionBlock),
]

HEADER = f"""# Suite file keys

Every key of every block of a suite file, its type and whether it is required, generated from
the pydantic models of `harness/experiments/suite_models.py` (the same declarations the
checker's key tables and `otransfer schema` come from) by `{COMMAND}`; do not edit by hand.
The guide, with examples and the checks a model cannot declare, is docs/suite-format.md; the
keys of `train:` are docs/train-options.md.
"""


def _cell(text: str) -> str:
    return text.replace("``", "`").replace("|", "\\|")


def block(title: str, model) -> str:
    doc = (model.__doc__ or "").strip().splitlines()[0]
    rows = [f"## {title}", "", _cell(doc), "", "| key | type | required | meaning |"]
    rows.append("|---|---|---|---|")
    for key, kind in M.key_types(model).items():
        field = model.model_fields[key]
        required = "yes" if field.is_required() else ""
        rows.append(
            f"| `{key}` | {type_name(kind)} | {required} | {_cell(field.description or '')} |"
        )
    return "\n".join(rows)


def page() -> str:
    return HEADER + "\n" + "\n\n".join(block(t, m) for t, m in BLOCKS) + "\n"


def main(argv: list[str] | None = None) -> int:
    return page_command(argv, PAGE, page, COMMAND, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
