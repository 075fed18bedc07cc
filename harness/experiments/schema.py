"""A JSON Schema of suite files (``otransfer schema``), generated from the pydantic models of
:mod:`harness.experiments.suite_models` (the same declarations the checker's key tables come
from), :class:`harness.training.config.TrainConfig`'s fields and the model / dataset /
regularizer registries, so that it cannot drift from what ``otransfer run`` accepts.

Editors validate and complete YAML with it; with the YAML language server (VS Code's YAML
extension, neovim's yamlls), put on a suite file's first line::

    # yaml-language-server: $schema=../suite.schema.json

after ``otransfer schema --out suite.schema.json``. The schema is the structural half of the
checker: keys, types, names, enumerations. The checks that read other files or build objects
(a teacher stage defined earlier, a regularizer's parameters, a dataset's splits) stay with
``otransfer run``, whose errors name the line.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from typing import Any

from harness.training.precision import PRECISIONS as PRECISIONS_
from harness.zoo.pools import TEST_POOLS

__all__ = ["suite_schema", "SCHEMA_ID"]

SCHEMA_ID = "https://otransfer.invalid/suite.schema.json"
_SEED_MAX = 2**31 - 1


def _json_type(t) -> dict[str, Any]:
    """The JSON Schema of one entry of a checker key table (a type or a tuple of types)."""
    names = {
        str: "string",
        list: "array",
        dict: "object",
        int: "integer",
        float: "number",
        bool: "boolean",
        type(None): "null",
    }
    ts = t if isinstance(t, tuple) else (t,)
    kinds = [names[x] for x in ts]
    if "number" in kinds and "integer" in kinds:
        kinds.remove("integer")  # JSON Schema's numbers include the integers
    return {"type": kinds[0]} if len(kinds) == 1 else {"type": kinds}


def _annotation(tp) -> dict[str, Any]:
    """The JSON Schema of a resolved ``TrainConfig`` field annotation."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        parts = [_annotation(a) for a in args]
        return {"anyOf": parts}
    if origin is tuple:
        inner = _annotation(args[0]) if args and args[0] is not Ellipsis else {}
        return {"type": "array", "items": inner}
    if tp is type(None):
        return {"type": "null"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if dataclasses.is_dataclass(tp):  # ParamGroup
        hints = typing.get_type_hints(tp)
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {f.name: _annotation(hints[f.name]) for f in dataclasses.fields(tp)},
        }
    return {}


def _train_schema() -> dict[str, Any]:
    from harness.training import config as tr

    hints = typing.get_type_hints(tr.TrainConfig)
    props: dict[str, Any] = {}
    for f in dataclasses.fields(tr.TrainConfig):
        entry = _annotation(hints[f.name])
        doc = _field_doc(tr.TrainConfig.__doc__ or "", f.name)
        if doc:
            entry["description"] = doc
        if not isinstance(f.default, dataclasses._MISSING_TYPE):
            default = f.default
            entry["default"] = list(default) if isinstance(default, tuple) else default
        props[f.name] = entry
    for name, values in (
        ("schedule", tr.SCHEDULES),
        ("reg_batch", tr.REG_BATCHES),
        ("teacher_mode", tr.TEACHER_MODES),
        ("precision", PRECISIONS_),
    ):
        props[name]["enum"] = list(values)
    for name in ("epochs", "batch_size", "eval_every", "checkpoint_every", "log_every"):
        props[name]["minimum"] = 1
    props["loader_workers"]["minimum"] = 0
    props["steps"]["anyOf"] = [{"type": "integer", "minimum": 0}, {"type": "null"}]
    props["param_groups"]["items"]["properties"]["match"] = {
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
    }
    props["param_groups"]["items"]["properties"]["lr_mult"] = {"type": "number", "minimum": 0}
    return {"type": "object", "additionalProperties": False, "properties": props}


def _field_doc(doc: str, name: str) -> str:
    """The first sentence of ``name``'s entry in a numpy-style ``Attributes`` section."""
    m = re.search(
        rf"^\s*(?:\w+, )*{re.escape(name)}(?:, \w+)* : [^\n]*\n((?:\s{{8}}[^\n]*\n)+)", doc, re.M
    )
    if not m:
        return ""
    text = " ".join(line.strip() for line in m.group(1).splitlines())
    return text.split(". ")[0].rstrip(".") + "."


def _table(block: dict[str, Any], refine: dict[str, dict] | None = None) -> dict[str, Any]:
    """A block's schema generated from its model (:func:`suite_models.block_schemas`), with
    what only the registries know at run time (``refine``: key -> schema, merged)."""
    props = {k: dict(v) for k, v in block["properties"].items()}
    for k, extra in (refine or {}).items():
        props[k] = extra if "$ref" in extra or "anyOf" in extra else {**props[k], **extra}
    out = {"type": "object", "additionalProperties": False, "properties": props}
    if block.get("required"):
        out["required"] = list(block["required"])
    return out


def suite_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a suite file."""
    from harness.experiments.suite_models import block_schemas
    from harness.transfer.regularizers import available_regularizers
    from harness.zoo.data import available_datasets
    from harness.zoo.models import available_models

    top, defs = block_schemas()  # generated once from the models
    models, datasets = available_models(), available_datasets()
    dataset_name = {"enum": datasets}
    stage = _stage_schema(
        defs["stage"], models, dataset_name, _spec_schema(available_regularizers())
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "otransfer suite",
        "description": "An experiment suite: stages (teacher, students ...) x datasets x "
        "regularizers x grid x seeds (harness/experiments/suite.py). Generated by "
        "`otransfer schema` from the checker's declarations.",
        **_top_schema(top),
        "$defs": {
            "stage": stage,
            "train": _train_schema(),
            "source": _table(
                defs["source"],
                {"dataset": dataset_name, "weight": {"minimum": 0}},
            ),
            "reference": _table(defs["reference"]),
            "search": _search_schema(defs["search"]),
            "dimension": _table(defs["dimension"]),
        },
    }


def _spec_schema(regs: list[str]) -> dict[str, Any]:
    """A regularizer spec: registered terms joined by '+'."""
    term = "(?:" + "|".join(map(re.escape, regs)) + ")"
    return {
        "type": "string",
        "pattern": rf"^\s*{term}(?:\s*\+\s*{term})*\s*$",
        "description": "a regularizer (otransfer list regularizers), or several joined "
        "by '+': " + ", ".join(regs),
        "examples": regs,
    }


def _seeds_schema() -> dict[str, Any]:
    """A list of seeds: distinct integers in [0, 2^31)."""
    return {
        "type": "array",
        "uniqueItems": True,
        "minItems": 1,
        "items": {"type": "integer", "minimum": 0, "maximum": _SEED_MAX},
    }


def _stage_schema(block: dict, models: list, dataset_name: dict, spec: dict) -> dict[str, Any]:
    """A stage: its keys, the registered model and dataset names, regularizer specs."""

    seeds = _seeds_schema()
    return _table(
        block,
        {
            "model": {"enum": models, "description": "otransfer list models"},
            "dataset": {
                "anyOf": [dataset_name, {"type": "array", "minItems": 1, "items": dataset_name}]
            },
            "train": {"$ref": "#/$defs/train"},
            "regularizers": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "anyOf": [
                        spec,
                        {
                            "type": "object",
                            "minProperties": 1,
                            "maxProperties": 1,
                            "propertyNames": spec,
                            "additionalProperties": {"type": ["object", "null"]},
                        },
                    ]
                },
            },
            "grid": {
                "type": "object",
                "additionalProperties": {"type": "array", "minItems": 1, "uniqueItems": True},
            },
            "seeds": seeds,
            "select": {
                "enum": ["val"],
                "description": "report, per row and column, the grid "
                "point with the best mean validation "
                "accuracy",
            },
            "source": {"$ref": "#/$defs/source"},
            "reference": {"$ref": "#/$defs/reference"},
            "splits": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    role: {
                        "anyOf": [
                            {"type": "string"},
                            {"type": "object"},
                            *([{"type": "null"}] if role == "val" else []),
                        ]
                    }
                    for role in ("train", "val", "test")
                },
            },
            "model_params": {
                "type": "object",
                "properties": {
                    "widths": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "integer", "minimum": 1},
                    }
                },
            },
        },
    )


def _search_schema(block: dict) -> dict[str, Any]:
    """A ``search:`` block (``otransfer tune``)."""

    seeds = _seeds_schema()
    return _table(
        block,
        {
            "seeds": seeds,
            "trials": {"minimum": 1},
            "seed": {"minimum": 0, "maximum": _SEED_MAX},
            "space": {"type": "object", "additionalProperties": {"$ref": "#/$defs/dimension"}},
        },
    )


def _top_schema(block: dict) -> dict[str, Any]:
    """The top level of a suite file: its keys and their values."""
    from harness.experiments import suite_types as S

    seeds = _seeds_schema()
    return _table(
        block,
        {
            "name": {"pattern": f"^{S.NAME_PATTERN.pattern}$", "not": {"pattern": r"\.\."}},
            "seeds": seeds,
            "test_pool": {"enum": list(TEST_POOLS)},
            "plugins": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "description": "modules imported before the suite is checked, by "
                "every process that loads it: module names, or paths "
                "to .py files from the suite file's folder "
                "(docs/plugins.md)",
            },
            "stages": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {"$ref": "#/$defs/stage"},
            },
            "search": {
                "anyOf": [
                    {"$ref": "#/$defs/search"},
                    {"type": "array", "items": {"$ref": "#/$defs/search"}},
                ]
            },
        },
    )


def dumps(indent: int = 2) -> str:
    return json.dumps(suite_schema(), indent=indent) + "\n"
