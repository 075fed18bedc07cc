"""What a suite is once checked: :class:`Suite`, :class:`Stage`, :class:`Search`, :class:`Job`,
and the schema of a suite file declared as data.

The key -> type tables (:data:`TOP_KEYS`, :data:`STAGE_KEYS`, :data:`SOURCE_KEYS`,
:data:`REFERENCE_KEYS`, :data:`SEARCH_KEYS`, :data:`DIM_KEYS`) that the checker reads
(:mod:`harness.experiments.suite_stage`) are generated from the pydantic models of
:mod:`harness.experiments.suite_models`, as the JSON schema for editors is
(:mod:`harness.experiments.schema`). A job's ``key`` is :func:`config_key` of its config: the
first 16 hex digits of the sha256 of its canonical JSON. The file format is described in
docs/suite-format.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from harness.experiments.suite_models import (
    DimensionBlock,
    ReferenceBlock,
    SearchBlock,
    SourceBlock,
    StageBlock,
    SuiteFile,
    key_types,
)

__all__ = [
    "TOP_KEYS",
    "STAGE_KEYS",
    "REFERENCE_KEYS",
    "SOURCE_KEYS",
    "SEARCH_KEYS",
    "DIM_KEYS",
    "NAME_PATTERN",
    "PRETRAINED",
    "ROW_KEY",
    "SuiteError",
    "type_name",
    "Stage",
    "Search",
    "Suite",
    "Job",
    "canonical_json",
    "config_key",
    "resolve_split",
]


TOP_KEYS = key_types(SuiteFile)
STAGE_KEYS = key_types(StageBlock)
#: ``init:`` / ``teacher:`` value naming the stage's own ``pretrained`` weights file.
PRETRAINED = "pretrained"
REFERENCE_KEYS = key_types(ReferenceBlock)
SOURCE_KEYS = key_types(SourceBlock)
#: Regularizer parameters read by the suite, not by the regularizer: the leaderboard row name.
ROW_KEY = "row"


_TYPE_NAMES = {
    str: "a string",
    list: "a list",
    dict: "a mapping",
    int: "an integer",
    float: "a number",
    bool: "true or false",
}


SEARCH_KEYS = key_types(SearchBlock)
DIM_KEYS = key_types(DimensionBlock)


NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


class SuiteError(ValueError):
    """A malformed suite file; the message names the file, the key and the line."""


def type_name(t) -> str:
    if isinstance(t, tuple):
        return " or ".join(_TYPE_NAMES[x] for x in t)
    return _TYPE_NAMES[t]


@dataclass(frozen=True)
class Stage:
    name: str
    model: str
    model_params: Mapping[str, Any]
    datasets: tuple[str, ...]
    dataset_params: Mapping[str, Any]
    train: Mapping[str, Any]
    regularizers: tuple[tuple[str, Mapping[str, Any]], ...]
    teacher: str | None
    grid: Mapping[str, tuple]
    seeds: tuple[int, ...]
    init: str | None = None
    pretrained: str | None = None
    splits: Mapping[str, Any] | None = None
    analysis: Mapping[str, Any] | None = None
    source: Mapping[str, Any] | None = None
    table: str = ""
    task: str | None = None
    report: bool | None = None
    reference: Mapping[str, Any] | None = None
    select: str | None = None


@dataclass(frozen=True)
class Search:
    """A ``search:`` block: the Optuna search of one stage's regularizer (``otransfer tune``).

    Attributes
    ----------
    stage, dataset : str
        The stage tuned and the dataset (one of the stage's) its trials train on.
    regularizer : str
        The spec of the stage's regularizer entry that is tuned.
    params : Mapping[str, Any]
        That entry's own parameters (without ``row``); a trial's point replaces the keys it sets.
    row : str
        The entry's leaderboard row (its ``row`` or its spec); the re-runs' row is
        ``"<row> (tuned)"``.
    space : Mapping[str, Mapping[str, Any]]
        Per dotted key, ``{"choices": [...]}`` or ``{"low", "high", "log", "step", "type"}``.
    trials : int
        Default number of trials a ``tune`` call adds.
    seed : int
        Seed of the trials' training (the first of ``seeds``).
    seeds : tuple of int
        Seeds each trial trains on; its value is the mean validation accuracy over them (one
        seed's small validation split is easily over-fitted by the search).
    pruner, sampler : Mapping[str, Any]
        ``{"name": ..., **kwargs}`` of :data:`harness.experiments.search.PRUNERS` / ``SAMPLERS``.
    """

    stage: str
    regularizer: str
    params: Mapping[str, Any]
    row: str
    dataset: str
    space: Mapping[str, Mapping[str, Any]]
    trials: int = 20
    seed: int = 0
    seeds: tuple[int, ...] = ()
    pruner: Mapping[str, Any] = field(default_factory=lambda: {"name": "median"})
    sampler: Mapping[str, Any] = field(default_factory=lambda: {"name": "tpe"})


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    stages: tuple[Stage, ...]
    seeds: tuple[int, ...]
    path: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: ``search:`` blocks (``otransfer tune``); not part of any job's config.
    searches: tuple[Search, ...] = ()


@dataclass(frozen=True)
class Job:
    """One training run: its resolved ``config`` (plain JSON data) and content ``key``."""

    suite: str
    stage: str
    key: str
    config: Mapping[str, Any] = field(compare=False)
    #: Row label of the leaderboard: the spec, plus the grid point when the stage has a grid
    #: (``"kd (kd.tau=2)"``).
    label: str = field(default="", compare=False)
    #: The leaderboard (``table``) and column (``task``) of this job, and whether it is
    #: reported at all (teachers and init stages are not, unless the suite says so).
    table: str = field(default="", compare=False)
    task: str = field(default="", compare=False)
    report: bool = field(default=True, compare=False)
    #: The paper table this job's leaderboard reproduces (stage key ``reference``).
    reference: Mapping[str, Any] | None = field(default=None, compare=False)
    #: The row without its grid point, and the stage's ``select`` rule (see :class:`Stage`).
    row: str = field(default="", compare=False)
    select: str | None = field(default=None, compare=False)

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def dataset(self) -> str:
        return str(self.config["dataset"])

    @property
    def regularizer(self) -> str:
        return str(self.config["regularizer"])

    def config_json(self) -> str:
        return canonical_json(self.config)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(o):
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON data: {o!r}")


def config_key(config: Mapping[str, Any]) -> str:
    """First 16 hex digits of the sha256 of the canonical JSON of ``config``."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def resolve_split(splits: Mapping[str, Any] | None, role: str, dataset: str) -> str | None:
    """The split of ``dataset`` in ``role`` (``train`` / ``val`` / ``test``) under a stage's
    ``splits`` (one name for every dataset, or ``{dataset: name}``); the role's name when unset."""
    value = (splits or {}).get(role, role)
    return value.get(dataset, role) if isinstance(value, dict) else value
