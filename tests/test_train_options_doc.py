"""docs/train-options.md lists every field of TrainConfig (scripts/train_options.py writes it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_train_options_page_is_up_to_date():
    script = ROOT / "scripts" / "train_options.py"
    spec = importlib.util.spec_from_file_location("train_options", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--check"]) == 0, "run: PYTHONPATH=$PWD python scripts/train_options.py"
