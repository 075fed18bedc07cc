"""The structure of a suite file, declared once as pydantic models.

Each block of a suite file (the top level, a stage, a ``source:``, a ``reference:``, a
``search:`` and one dimension of its ``space:``) is a model here: its keys, their types, which
are required, and the constraints an editor can check (seed ranges, minimums, name patterns).
Two things are generated from them and cannot drift from each other:

* the checker's key tables (:func:`key_types`; ``suite_types.TOP_KEYS`` ...), which give the
  errors of ``otransfer run`` with the file, the line and the key
  (:mod:`harness.experiments.suite_stage`);
* the JSON schema of ``otransfer schema`` (:mod:`harness.experiments.schema`), which adds only
  what the registries know at run time (model, dataset and regularizer names) and the train
  block from :class:`harness.training.config.TrainConfig`.

What a model cannot say stays in the checker: the stages' order and references, the
registries, the regularizer specs and grids, and reading other files (docs/suite-format.md).
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

__all__ = [
    "SuiteFile",
    "StageBlock",
    "SourceBlock",
    "ReferenceBlock",
    "SearchBlock",
    "DimensionBlock",
    "key_types",
    "block_schemas",
]

SEED_MAX = 2**31 - 1
Seed = Annotated[StrictInt, Field(ge=0, le=SEED_MAX)]
Seeds = Annotated[list[Seed], Field(min_length=1, json_schema_extra={"uniqueItems": True})]
Mapping_ = dict[str, Any]
Number = Union[StrictInt, StrictFloat]


class _Block(BaseModel):
    """A mapping of a suite file: only its declared keys, each of its declared type."""

    model_config = ConfigDict(extra="forbid", strict=True)


class SourceBlock(_Block):
    """``source:`` of a stage: the source task trained jointly with the target (lu2017)."""

    dataset: StrictStr = Field(description="the source task's dataset (otransfer list datasets)")
    dataset_params: Mapping_ | None = Field(None, description="the source dataset's parameters")
    weight: Number | None = Field(
        None, description="lambda_s: the weight of the source cross-entropy (default 1; >= 0)"
    )
    split: StrictStr | None = Field(None, description="the source dataset's split (train)")


class ReferenceBlock(_Block):
    """``reference:`` of a stage: the paper's table printed beside ours, and its claims."""

    paper: StrictStr | None = Field(None, description="a paper of results/reference/")
    table: StrictStr | StrictInt | None = Field(None, description="the paper's table")
    columns: Mapping_ | None = Field(None, description="our task column -> the paper's column")
    rows: Mapping_ | None = Field(None, description="our row -> the paper's row (null: none)")
    claims: list[StrictStr] | None = Field(None, description="comparisons 'A > B', 'A >= B'")
    premises: list[StrictStr] | None = Field(None, description="checked before the claims")


class DimensionBlock(_Block):
    """One dimension of a search ``space:``: a range (``low``/``high``) or ``choices``."""

    low: Number | None = Field(None, description="the range's lower end")
    high: Number | None = Field(None, description="the range's upper end")
    log: StrictBool | None = Field(None, description="sampled on a log scale")
    step: Number | None = Field(None, description="the range's step")
    type: StrictStr | None = Field(None, description="int or float (default: from low/high)")
    choices: list[Any] | None = Field(None, description="the values of a categorical one")


class SearchBlock(_Block):
    """``search:`` (``otransfer tune``): an Optuna study over one stage's regularizer."""

    stage: StrictStr = Field(description="the stage searched")
    regularizer: StrictStr | None = Field(None, description="its regularizer searched")
    dataset: StrictStr | None = Field(None, description="its dataset, when it has several")
    trials: Annotated[StrictInt, Field(ge=1)] | None = Field(None, description="trials run")
    seed: Seed | None = Field(None, description="the sampler's seed")
    seeds: Seeds | None = Field(None, description="the seeds each trial trains")
    pruner: Mapping_ | None = Field(None, description="{name, ...}: an Optuna pruner")
    sampler: Mapping_ | None = Field(None, description="{name, ...}: an Optuna sampler")
    space: dict[str, DimensionBlock] | None = Field(None, description="parameter -> dimension")


class StageBlock(_Block):
    """One stage: a model trained on its dataset(s), with regularizers, grid and seeds."""

    model: StrictStr = Field(description="otransfer list models")
    model_params: Mapping_ | None = Field(
        None, description="the model's arguments (widths, depth, stages ...)"
    )
    dataset: StrictStr | Annotated[list[StrictStr], Field(min_length=1)] = Field(
        description="a dataset, or a list: one column each"
    )
    dataset_params: Mapping_ | None = Field(
        None, description="the dataset's parameters (n_per_class sub-samples the train split)"
    )
    train: Mapping_ | None = Field(None, description="training settings: docs/train-options.md")
    regularizers: Annotated[list[Any], Field(min_length=1)] | None = Field(
        None, description="specs ('kd', 'omega_p + kd') or {spec: params}: one row each"
    )
    teacher: StrictStr | None = Field(None, description="an earlier stage, or 'pretrained'")
    grid: Mapping_ | None = Field(None, description="a regularizer parameter -> its values")
    seeds: Seeds | None = Field(
        None, description="this stage's seeds (default: the suite's); [0] serves every seed"
    )
    init: StrictStr | None = Field(None, description="an earlier stage, or 'pretrained'")
    source: SourceBlock | None = Field(None, description="a source task trained jointly")
    table: StrictStr | None = Field(None, description="the leaderboard table of its rows")
    task: StrictStr | None = Field(None, description="the column name of its results")
    report: StrictBool | None = Field(
        None, description="false: left out of the leaderboards (default: teachers are)"
    )
    reference: ReferenceBlock | None = Field(
        None, description="the paper's numbers beside ours, and its claims"
    )
    pretrained: StrictStr | None = Field(
        None, description="a local state_dict for teacher/init: pretrained ($VARS, ~)"
    )
    splits: Mapping_ | None = Field(None, description="{train, val, test}: the splits used")
    analysis: Mapping_ | None = Field(
        None, description="{trace_taps, split, max_examples}: layer traces after training"
    )
    select: StrictStr | None = Field(
        None, description="val: per row, column and seed, the grid point best on validation"
    )
    claims: list[Any] | None = Field(None, description="comparisons 'A > B' on its rows")
    premises: list[Any] | None = Field(None, description="checked before the claims")


class SuiteFile(_Block):
    """A suite file: stages (teacher, students ...) x datasets x regularizers x grid x seeds."""

    name: StrictStr = Field(description="names results/<name>/")
    description: StrictStr | None = Field(None, description="one line: listings and reports")
    seeds: Seeds | None = Field(
        None, description="distinct integers in [0, 2^31): one job per seed and grid point"
    )
    stages: Annotated[dict[str, StageBlock], Field(min_length=1)] = Field(
        description="name -> stage, in order: a stage may name an earlier one"
    )
    search: SearchBlock | list[SearchBlock] | None = Field(
        None, description="otransfer tune's Optuna studies"
    )
    test_pool: StrictStr | None = Field(
        None,
        description="fixed: one test pool no seed trains on (harness/zoo/pools.py); "
        "default: each seed draws its own split",
    )
    plugins: list[Annotated[StrictStr, Field(min_length=1)]] | None = Field(
        None,
        description="modules imported before the suite is checked, by every process that "
        "loads it: module names, or paths to .py files from the suite file's folder "
        "(docs/plugins.md)",
    )


def _python_types(tp) -> tuple[type, ...]:
    """The Python types a YAML value of annotation ``tp`` may have (None left out)."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        out: list[type] = []
        for arg in typing.get_args(tp):
            out += [t for t in _python_types(arg) if t not in out]
        return tuple(out)
    if tp is type(None):
        return ()
    if origin in (list, dict):
        return (origin,)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return (dict,)
    if tp in (bool, int, float, str):  # StrictInt is Annotated[int, ...]: reduced above
        return (tp,)
    return (object,)


def key_types(model: type[BaseModel]) -> dict[str, type | tuple[type, ...]]:
    """``key -> type`` (or a tuple of types) of a block, in its declared order: the table the
    checker reads (``suite_types.TOP_KEYS`` ...)."""
    out: dict[str, type | tuple[type, ...]] = {}
    for name, field in model.model_fields.items():
        ts = _python_types(field.annotation)
        out[name] = ts[0] if len(ts) == 1 else ts
    return out


#: the JSON schema's name of each block (``#/$defs/<name>``; the top level is the document)
DEF_NAMES = {
    "StageBlock": "stage",
    "SourceBlock": "source",
    "ReferenceBlock": "reference",
    "SearchBlock": "search",
    "DimensionBlock": "dimension",
}


def _clean(node):
    """pydantic's JSON schema as the checker reads the file: no key may be null (an optional
    key is left out, not set to null), no titles; ``$ref`` to :data:`DEF_NAMES`."""
    if isinstance(node, list):
        return [_clean(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _clean(v) for k, v in node.items() if k != "title"}
    if "$ref" in out:
        out["$ref"] = "#/$defs/" + DEF_NAMES[out["$ref"].rsplit("/", 1)[-1]]
    branches = out.get("anyOf")
    if branches and {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        out.pop("default", None)
        del out["anyOf"]
        out.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
    return out


def block_schemas() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The JSON schema of the top level and of each block (by :data:`DEF_NAMES` name),
    generated from the models."""
    full = SuiteFile.model_json_schema(ref_template="#/$defs/{model}")
    defs = {DEF_NAMES[k]: _clean(v) for k, v in full.pop("$defs").items()}
    return _clean(full), defs
