"""The suite file's structure declared once (pydantic models): the checker's key tables and the
JSON schema are generated from it, every shipped suite validates against it, and a file the
models reject the checker rejects too, naming the same key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from harness.experiments import suite_models as M
from harness.experiments import suite_types as S

ROOT = Path(__file__).resolve().parents[1]
SUITES = sorted((ROOT / "suites").glob("*.yaml"))


def test_key_tables_are_the_models_fields_in_order():
    """Hand-computed: the checker's tables as they were written by hand before the models."""
    assert S.SOURCE_KEYS == {
        "dataset": str,
        "dataset_params": dict,
        "weight": (int, float),
        "split": str,
    }
    assert S.TOP_KEYS == {
        "name": str,
        "description": str,
        "seeds": list,
        "stages": dict,
        "search": (dict, list),
        "test_pool": str,
        "plugins": list,
    }
    assert S.REFERENCE_KEYS["table"] == (str, int)
    assert S.DIM_KEYS["log"] is bool and S.SEARCH_KEYS["trials"] is int
    assert list(S.STAGE_KEYS)[:4] == ["model", "model_params", "dataset", "dataset_params"]
    assert S.STAGE_KEYS["dataset"] == (str, list) and S.STAGE_KEYS["source"] is dict
    for model, table in [(M.StageBlock, S.STAGE_KEYS), (M.SearchBlock, S.SEARCH_KEYS)]:
        assert list(model.model_fields) == list(table)


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_every_shipped_suite_validates_against_the_models(path):
    M.SuiteFile.model_validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize(
    "patch, loc, words",
    [
        ({"stages": {"s": {"model": "mlp", "dataset": "digits", "epoch": 3}}}, "epoch", "unknown"),
        ({"stages": {"s": {"model": 3, "dataset": "digits"}}}, "model", "must be a string"),
        ({"seeds": "0"}, "seeds", "must be a list"),
        ({"stages": {"s": {"model": "mlp", "dataset": "digits", "report": "yes"}}}, "report", ""),
    ],
)
def test_models_and_checker_reject_the_same_key(tmp_path, patch, loc, words):
    from harness.experiments.suite import SuiteError, load_suite

    raw = {"name": "t", "stages": {"s": {"model": "mlp", "dataset": "digits"}}, **patch}
    with pytest.raises(ValidationError) as got:
        M.SuiteFile.model_validate(raw)
    assert loc in {str(part) for e in got.value.errors() for part in e["loc"]}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SuiteError, match=loc) as err:
        load_suite(path)
    assert words in str(err.value) and "t.yaml" in str(err.value)


def test_schema_blocks_come_from_the_models():
    from harness.experiments.schema import suite_schema

    schema = suite_schema()
    top, defs = M.block_schemas()
    assert set(schema["properties"]) == set(top["properties"]) == set(S.TOP_KEYS)
    assert schema["required"] == ["name", "stages"]
    for name, model in [
        ("stage", M.StageBlock),
        ("source", M.SourceBlock),
        ("search", M.SearchBlock),
    ]:
        assert set(schema["$defs"][name]["properties"]) == set(model.model_fields)
        required = [k for k, f in model.model_fields.items() if f.is_required()]
        assert schema["$defs"][name].get("required", []) == required
    # an optional key is left out, never null: as the checker reads it
    assert schema["$defs"]["stage"]["properties"]["teacher"] == {
        "type": "string",
        "description": "an earlier stage, or 'pretrained'",
    }
    assert schema["properties"]["seeds"]["items"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 2**31 - 1,
    }
    assert schema["properties"]["search"]["anyOf"][0] == {"$ref": "#/$defs/search"}


def test_the_suite_keys_page_is_up_to_date():
    """docs/suite-keys.md is generated from the models (scripts/suite_keys.py)."""
    import importlib.util

    script = ROOT / "scripts" / "suite_keys.py"
    spec = importlib.util.spec_from_file_location("suite_keys", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--check"]) == 0, "run: PYTHONPATH=$PWD python scripts/suite_keys.py"
