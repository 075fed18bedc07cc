"""Experiment suites: YAML files of stages, grids and seeds, expanded into hashed jobs.

A suite file (``yaml.safe_load``; schema-checked, errors name the file, the key and the line)::

    name: mini
    description: compression on digits
    seeds: [0, 1, 2]
    stages:                      # ordered: a stage may reference an earlier one
      teacher:
        model: mlp
        model_params: {widths: [256, 256]}
        dataset: digits          # or a list of datasets (grid axis)
        train: {epochs: 10, lr: 0.05}
      students:
        model: mlp
        model_params: {widths: [8]}
        dataset: digits
        dataset_params: {n_per_class: 10}   # n_per_class sub-samples the train split only
        teacher: teacher         # the referenced stage's model, same dataset and seed (a
                                 # teacher stage with `seeds: [0]`: its one job for every seed)
        train: {epochs: 30}
        regularizers:            # spec strings, or {spec: params}
          - none
          - kd: {tau: 4}
          - kd: {tau: 2, row: "KD (tau=2)"}   # 'row': the leaderboard's row name
        grid: {kd.alpha: [0.5, 1.0]}   # params grid, applied to specs that accept the key
        table: compression       # leaderboard this stage's rows go to (default: stage name)
        task: digits             # its column (default: the dataset name; "{dataset}" is
                                 # replaced by it, for a stage with a list of datasets)

More stage keys: ``init: <stage>`` starts each student from that stage's trained weights (same
seed) with a fresh head (fine-tuning; ``l2sp``'s ``w0`` are those weights);
``analysis: {trace_taps: [...], split, max_examples}`` records, after training, the trace of the
exact plan between the network's and the teacher's neurons at each tap (li2020 Fig. 2);
``select: val`` reports, for each row, column and seed, only the grid point with the best mean
validation accuracy over the *other* seeds (leave-one-seed-out; the papers' cross-validated
hyper-parameters; every choice in ``selection.csv``, :mod:`harness.reports.selection`);
``splits: {train: NAME, val: NAME, test: NAME}`` picks the training and evaluation splits
(ImageNet: ``test: val``), each for every dataset of the stage or per dataset
(``train: {aircraft: trainval}, val: {aircraft: null}``);
``pretrained: PATH`` names a local state_dict (``$VARS`` and ``~`` expanded when the job runs;
e.g. ImageNet weights), used by ``init: pretrained`` and ``teacher: pretrained``;
``reference: {paper, table, columns, rows, premises, claims}`` puts the paper's numbers
(results/reference/) beside the leaderboard and decides each claim ``"ROW > ROW"`` per column
from the paired per-seed differences (:mod:`harness.reports.verdicts`); ``premises`` (same syntax,
e.g. ``"kd > none"``: there is something to transfer) are checked first, and a column whose
premise does not hold has its claims *not tested* (not counted either way);
``claims: [...]`` and ``premises: [...]`` on a stage with no paper are a study's own claims,
decided the same way (docs/claims.md, "Claims of one's own");
``source: {dataset, dataset_params, weight, split}`` trains jointly on a source task through a second
classifier (lu2017 JTLN; ``weight`` is ``lambda_s``); ``report: false`` leaves a stage out of
the leaderboards (default: stages that another stage uses as teacher or init are left out).
A ``jtln`` term's ``label_cost: mkmmd | ot`` is computed from the stage's teacher's
penultimate features of the source and target training sets (lu2017 §3.4).

``train:`` takes :class:`harness.training.loop.TrainConfig`'s fields (``seed`` excepted: ``seeds``).
Two of them shape what is trained and against what::

    train:
      param_groups:            # layer-wise learning rates (lu2017 §4); the first match wins
        - {match: [features.0, features.3, features.6], lr_mult: 0}   # 0: frozen
        - {match: [features.8, features.10], lr_mult: 0.1}            # lr * 0.1
        - {match: "*.bn*.weight", lr_mult: 1.0}                         # fnmatch glob
      teacher_mode: train      # eval (default) | train: teacher batch norm on batch statistics

A ``match`` is a parameter-name pattern (or a list of them): a module path matching at dotted
boundaries, or an ``fnmatch`` glob when it holds ``*?[``; the regularizer's own parameters are
``regularizer.<name>``. Parameters of no group keep ``lr``; a pattern matching none of the
stage model's parameters is an error when the suite loads. ``teacher_mode: train`` is li2020's
T = A^(0) (a teacher that is the student's initial network); keep ``eval`` for a separately
trained teacher. Both are left out of job keys at their defaults.

A top-level ``test_pool: fixed`` tests every stage whose datasets take a ``test_pool`` parameter
(``digits``, ``latent``, ``synthetic``) on one fixed test draw that no seed trains on
(:mod:`harness.zoo.pools`); it is written into those stages' ``dataset_params`` (a stage's own
setting wins), so their job keys differ from the resampled runs'. ``resampled`` (the default)
changes nothing.

A top-level ``plugins: [my_terms.py, my_lab.ot]`` lists modules (names, or ``.py`` paths from the
suite file's folder) imported before the file is checked, by every process that loads it: their
components (``register_regularizer``, ``solvers.register`` ...) are then valid names here
(:mod:`harness.experiments.plugins`, docs/plugins.md). It is part of no job's key.

A top-level ``search:`` block (a mapping, or a list of them) declares an Optuna search of one
stage's regularizer for ``otransfer tune`` (:mod:`harness.experiments.search`); it is not part of any job's
config, so it changes no key::

    search:
      stage: students            # the stage whose regularizer is tuned
      regularizer: omega_p+kd    # one of its regularizers: the spec (or the entry's row name)
      trials: 20                 # default of --trials
      pruner: {name: median, n_warmup_steps: 5}   # harness.experiments.search.PRUNERS; sampler: SAMPLERS
      space:                     # keys as in 'grid' (term.param), plus train.<TrainConfig field>
        omega_p.alpha: {low: 1.0e-3, high: 10.0, log: true}
        kd.tau: {choices: [4, 5, 10]}
        train.lr: {low: 1.0e-3, high: 0.3, log: true}

A dimension is ``{low, high[, log, step, type: float | int]}`` or ``{choices: [...]}`` (a
choice may be a list, e.g. the ``taps`` of a term). ``dataset`` (the stage's dataset searched
on; required when it has several) and ``seed`` (of the trials' training; default the stage's
first seed) are optional. The stage's dataset needs a validation split: trials are scored on it.

:func:`expand` turns a suite into :class:`Job` s: datasets x regularizers x params x seeds per
stage; each job's ``key`` is the sha256 of the canonical JSON of its resolved config (16 hex).
It counts them first (a product of sizes) and refuses a suite of more than 100,000 jobs
(``OTRANSFER_MAX_JOBS``). Checks that look across keys (names spelt as registered, rows pooled
from two configs, claims naming rows of their table, parameter values) are in
:mod:`harness.experiments.suite_checks`; a suite file is read only when it is UTF-8 text of at
most 1 MiB, nested at most 50 levels.
``--set k=v`` overrides (:func:`apply_overrides`) edit the raw suite before validation.

The schema is declared once, as data: the key -> type tables (``_TOP_KEYS``, ``_STAGE_KEYS``,
``_SOURCE_KEYS``, ``_REFERENCE_KEYS``, ``_SEARCH_KEYS``, ``_DIM_KEYS``) that the checker reads
and :mod:`harness.experiments.schema` turns into the JSON schema for editors. Why not pydantic
(measured on this file, 2026-12-03): of its 97 failure sites, 15 are what a pydantic model
declares (an unknown key, a wrong type, a missing key); the other 82 check a value against the
registries and the rest of the file (model and dataset names and their parameters, earlier
stages, regularizer terms and the parameters each takes, grid axes a term accepts, splits a
dataset has, the claim grammar, ``TrainConfig``), which pydantic would run as validators
written by hand all the same, and its errors (a ``loc`` path) would still need the YAML node
marks (``_Lines``) to name the line. A dependency for ~15 checks does not serve.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from harness.experiments.plugins import suite_plugins
from harness.experiments.reference import parse_claim
from harness.experiments.suite_checks import (
    check_claims,
    check_known,
    check_rows,
    check_taps,
    count_jobs,
    job_count_problem,
    job_limit,
    meta_model,
    name_problem,
    number_hint,
    param_value_problem,
    same_jobs_problem,
    spec_problem,
    spelling_problem,
    takers,
    value_key,
)

__all__ = [
    "SuiteError",
    "Suite",
    "Stage",
    "Job",
    "Search",
    "load_suite",
    "parse_suite",
    "with_overrides",
    "merge_params",
    "slug",
    "expand",
    "apply_overrides",
    "parse_override",
    "available_suites",
    "SUITES_DIR",
    "config_key",
]

#: Where suite names resolve (``suites/<name>.yaml`` at the repository root).
SUITES_DIR = Path(__file__).resolve().parents[2] / "suites"

_TOP_KEYS = {
    "name": str,
    "description": str,
    "seeds": list,
    "stages": dict,
    "search": (dict, list),
    "test_pool": str,
    "plugins": list,
}
_STAGE_KEYS = {
    "model": str,
    "model_params": dict,
    "dataset": (str, list),
    "dataset_params": dict,
    "train": dict,
    "regularizers": list,
    "teacher": str,
    "grid": dict,
    "seeds": list,
    "init": str,
    "source": dict,
    "table": str,
    "task": str,
    "report": bool,
    "reference": dict,
    "pretrained": str,
    "splits": dict,
    "analysis": dict,
    "select": str,
    "claims": list,
    "premises": list,
}
#: ``init:`` / ``teacher:`` value naming the stage's own ``pretrained`` weights file.
PRETRAINED = "pretrained"
_REFERENCE_KEYS = {
    "paper": str,
    "table": (str, int),
    "columns": dict,
    "rows": dict,
    "claims": list,
    "premises": list,
}
_SOURCE_KEYS = {"dataset": str, "dataset_params": dict, "weight": (int, float), "split": str}
#: Regularizer parameters read by the suite, not by the regularizer: the leaderboard row name.
ROW_KEY = "row"
_SUBMAPS = ("grid", "model_params", "dataset_params", "train")
_TYPE_NAMES = {
    str: "a string",
    list: "a list",
    dict: "a mapping",
    int: "an integer",
    float: "a number",
    bool: "true or false",
}


class SuiteError(ValueError):
    """A malformed suite file; the message names the file, the key and the line."""


def _type_name(t) -> str:
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


# --------------------------------------------------------------------------- loading


def available_suites(directory: str | os.PathLike | None = None) -> list[str]:
    d = Path(directory) if directory else SUITES_DIR
    return sorted(p.stem for p in d.glob("*.yaml")) + sorted(p.stem for p in d.glob("*.yml"))


def _resolve_path(path_or_name: str | os.PathLike) -> Path:
    p = Path(path_or_name)
    if p.suffix in (".yaml", ".yml") or p.exists() or p.is_symlink():
        if p.is_dir():
            raise FileNotFoundError(
                f"suite file {str(p)!r} is a directory: give a .yaml file in it, or a suite name"
            )
        if p.is_symlink() and not p.exists():
            raise FileNotFoundError(
                f"suite file {str(p)!r} is a link to nothing (a broken link or a loop of links)"
            )
        if not p.is_file():
            raise FileNotFoundError(
                f"suite file {str(p)!r} not found" + (" (not a regular file)" if p.exists() else "")
            )
        return p
    for ext in (".yaml", ".yml"):
        cand = SUITES_DIR / f"{p.name}{ext}"
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"no suite {str(path_or_name)!r}: not a file and not in {SUITES_DIR} "
        f"(known: {', '.join(available_suites()) or 'none'})"
    )


class _Lines:
    """Line numbers (1-based) of the nodes of a YAML document, by key path."""

    def __init__(self, root):
        self.root = root if isinstance(root, yaml.Node) else None

    def line(self, path: Sequence[Any]) -> int | None:
        node, best = self.root, None
        if node is None:
            return None
        best = node.start_mark.line + 1
        for part in path:
            nxt = None
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == str(part):
                        best = k.start_mark.line + 1
                        nxt = v
                        break
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(part, int)
                and part < len(node.value)
            ):
                nxt = node.value[part]
                best = nxt.start_mark.line + 1
            if nxt is None:
                break
            node = nxt
        return best


def load_suite(path_or_name: str | os.PathLike, overrides: Iterable[str] = ()) -> Suite:
    """Load and check a suite by file path or by name (``suites/<name>.yaml``).

    ``overrides`` are ``"dotted.key=value"`` strings (values YAML-parsed), applied before the
    schema check. Raises :class:`SuiteError` (file, key, line) on a malformed file.
    """
    path = _resolve_path(path_or_name)
    return parse_suite(_read_suite_text(path), str(path), overrides)


#: Largest suite file read (the shipped ones are under 20 kB; PyYAML parses ~1 MB a second).
MAX_SUITE_BYTES = 1 << 20


def suite_file_text(path_or_name: str | os.PathLike) -> str:
    """The text of a suite file (a name in suites/ or a path), read as :func:`load_suite`
    reads it."""
    return _read_suite_text(_resolve_path(path_or_name))


def _read_suite_text(path: Path) -> str:
    """The text of suite file ``path``: at most :data:`MAX_SUITE_BYTES`, UTF-8."""
    size = path.stat().st_size
    if size > MAX_SUITE_BYTES:
        raise SuiteError(
            f"{path}: {size:,} bytes, more than a suite file's {MAX_SUITE_BYTES:,} "
            "(is it a suite? generate long seed lists with --set seeds=...)"
        )
    with open(path, "rb") as f:  # at most the limit, should the file grow meanwhile
        data = f.read(MAX_SUITE_BYTES + 1)
    if len(data) > MAX_SUITE_BYTES:
        raise SuiteError(f"{path}: more than a suite file's {MAX_SUITE_BYTES:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SuiteError(
            f"{path}: not UTF-8 text (byte {data[exc.start]:#04x} at offset "
            f"{exc.start}): a suite file is YAML text, saved as UTF-8"
        ) from None


#: Bounds of a suite file's YAML: aliases, and nodes once every alias is expanded (a
#: "billion laughs" file of nested anchors would otherwise take minutes and gigabytes).
MAX_ALIASES = 1000
MAX_NODES = 200_000
#: Deepest nesting of mappings and lists (a suite needs about 6).
MAX_DEPTH = 50


class _SuiteLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """``yaml.SafeLoader`` (libyaml's when PyYAML has it: 7x faster, nesting capped at 1,000
    levels without recursion in Python) that refuses a key written twice in one mapping (YAML
    keeps the last silently; merge keys ``<<: *anchor`` may still be overridden); aliases,
    nodes and depth are bounded by :func:`_compose`."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = key_node.value
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} is written twice in this mapping (first on "
                        f"line {seen[key] + 1}; YAML would keep only the last)",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root) -> None:
    """Raise when ``root`` holds more than :data:`MAX_ALIASES` alias uses or expands to more
    than :data:`MAX_NODES` nodes (counted once per node object, with memoisation)."""
    sizes: dict[int, int] = {}
    uses = {"aliases": 0}
    seen_ids: set[int] = set()

    def size(node, depth: int = 0) -> int:
        if depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {MAX_DEPTH} levels deep", node.start_mark
            )
        if id(node) in sizes:
            uses["aliases"] += 1
            if uses["aliases"] > MAX_ALIASES:
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} alias uses", node.start_mark
                )
            return sizes[id(node)]
        if id(node) in seen_ids:  # a recursive alias
            raise yaml.composer.ComposerError(None, None, "a recursive alias", node.start_mark)
        seen_ids.add(id(node))
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(v, depth + 1) for v in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        if n > MAX_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"the document expands to more than {MAX_NODES:,} nodes (nested aliases?)",
                node.start_mark,
            )
        sizes[id(node)] = n
        return n

    if root is not None:
        size(root)


def _compose(text: str):
    """``(root node, data)`` of one YAML document, its size and depth checked between the two
    (:func:`_check_expansion`) so that nothing unbounded is ever constructed."""
    loader = _SuiteLoader(text)
    try:
        node = loader.get_single_node()
        _check_expansion(node)
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def parse_suite(text: str, filename: str = "<suite>", overrides: Iterable[str] = ()) -> Suite:
    try:
        root, raw = _compose(text)
    except RecursionError:
        raise SuiteError(
            f"{filename}: invalid YAML: nested far deeper than a suite's "
            f"{MAX_DEPTH} levels (a generated or corrupt file?)"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f"line {mark.line + 1}" if mark is not None else "unknown line"
        if isinstance(getattr(exc, "position", None), int):  # a character YAML refuses
            line = f"line {text.count(chr(10), 0, exc.position) + 1}"
        problem = (getattr(exc, "problem", None) or str(exc)).strip().splitlines()[0]
        if "nesting depth" in problem:  # libyaml's cap, 1,000 levels
            problem += f" (a suite nests a few levels; at most {MAX_DEPTH} are read)"
        raise SuiteError(f"{filename}, {line}: invalid YAML: {problem}") from None
    lines = _Lines(root)
    raw = apply_overrides(raw if raw is not None else {}, overrides)
    suite_plugins(raw, filename, lambda path, msg: _err(filename, lines, path, msg))
    return _check(raw, filename, lines)


def _err(filename: str, lines: _Lines, path: Sequence[Any], msg: str) -> SuiteError:
    line = lines.line(path)
    key = ".".join(map(str, path)) or "<top>"
    return SuiteError(f"{filename}, line {line if line is not None else '?'}, key {key!r}: {msg}")


def _check(raw: Any, filename: str, lines: _Lines) -> Suite:
    """The :class:`Suite` of a parsed suite file, or a :class:`SuiteError` naming the file, the
    line and the key of the first problem: top-level keys, then each stage in order (what it
    names must exist: models, datasets, earlier stages, regularizer terms and parameters,
    splits, train settings), then the search blocks."""

    def fail(path, msg):
        raise _err(filename, lines, path, msg)

    _check_top(raw, fail)
    seeds = _seeds(raw.get("seeds", [0]), ["seeds"], fail)
    stages: list[Stage] = []
    for sname, s in _with_test_pool(raw, fail)["stages"].items():
        problem = name_problem("a stage name", sname) or (
            "a stage name holds no '.' (--set stages.NAME.key would not reach it)"
            if "." in sname
            else None
        )
        if problem:
            fail(["stages", sname], problem)
        stages.append(_check_stage(sname, s, stages, seeds, fail))
    check_rows(stages, fail)  # no two configs pooled into one row
    check_claims(stages, parse_claim, _accepts, _label, fail)
    return Suite(
        name=raw["name"],
        description=raw.get("description", ""),
        stages=tuple(stages),
        seeds=seeds,
        path=filename,
        raw=raw,
        searches=_check_searches(raw, stages, fail),
    )


def _with_test_pool(raw: Mapping, fail) -> Mapping:
    """``raw`` with its top-level ``test_pool`` written into every stage whose datasets take
    it (:func:`harness.zoo.pool_switch.apply_suite_test_pool`; a bad value fails at that key)."""
    from harness.zoo.pool_switch import apply_suite_test_pool

    try:
        return apply_suite_test_pool(raw)
    except ValueError as exc:
        fail(["test_pool"], str(exc))


def _check_keys(mapping: Mapping, known: Mapping[str, Any], path: list, fail, what: str) -> None:
    """Every key of ``mapping`` is one of ``known`` (key -> type) and of its type."""
    for key, value in mapping.items():
        if key not in known:
            fail(path + [key], f"unknown {what}{key!r}; expected one of {', '.join(known)}")
        if not isinstance(value, known[key]):
            fail(path + [key], f"must be {_type_name(known[key])}, got {type(value).__name__}")


def _check_top(raw: Any, fail) -> None:
    if not isinstance(raw, dict):
        fail([], "a suite file is a mapping with keys " + ", ".join(_TOP_KEYS))
    _check_keys(raw, _TOP_KEYS, [], fail, "key ")
    for key in ("name", "stages"):
        if key not in raw:
            fail([], f"missing required key {key!r}")
    if not isinstance(raw["name"], str) or not _NAME.fullmatch(raw["name"]) or ".." in raw["name"]:
        fail(
            ["name"],
            f"a suite name is a plain name of 1-100 letters, digits, '-', '_' or '.' "
            f"(no '/', no '..': it names results/<name>/); got {raw['name']!r}"[:300],
        )
    if not raw["stages"]:
        fail(["stages"], "needs at least one stage")


def _check_stage(sname: str, s: Any, earlier_stages: Sequence[Stage], seeds, fail) -> Stage:
    """One stage of the suite, checked in the order a reader meets its keys."""
    base = ["stages", sname]
    if not isinstance(s, dict):
        fail(base, f"a stage must be a mapping, got {type(s).__name__}")
    _check_keys(s, _STAGE_KEYS, base, fail, "stage key ")
    for key in ("model", "dataset"):
        if key not in s:
            fail(base, f"stage {sname!r} is missing required key {key!r}")
    datasets = _check_stage_names(s, base, fail)
    _check_model_params(s.get("model_params", {}), base + ["model_params"], fail)
    _check_stage_refs(s, base, [st.name for st in earlier_stages], fail)
    teacher = s.get("teacher")
    source = _check_source(s.get("source"), base, fail)
    regs, resolved = _stage_regularizers(s, base, fail)
    teacher_stage = (
        next(
            (
                {"model": st.model, "model_params": st.model_params}
                for st in earlier_stages
                if st.name == teacher
            ),
            None,
        )
        if teacher != PRETRAINED
        else s
    )
    check_taps(s, teacher_stage, resolved, base, fail)
    for key in ("table", "task"):
        problem = name_problem(f"{key}", s[key]) if key in s else None
        if problem:
            fail(base + [key], problem)
    splits = s.get("splits")
    if splits is not None:
        _check_splits(s, splits, base, fail)
    if source is not None and "split" in source:
        have = _dataset_splits(source["dataset"])
        if have is not None and source["split"] not in have:
            fail(
                base + ["source", "split"],
                f"dataset {source['dataset']!r} has no split "
                f"{source['split']!r} (splits: "
                f"{', '.join(have)})",
            )
    if s.get("select") not in (None, "val"):
        fail(
            base + ["select"],
            "select must be 'val': report, per row and column, the grid "
            "point with the best mean validation accuracy",
        )
    analysis = s.get("analysis")
    if analysis is not None:
        analysis = _check_analysis(analysis, base + ["analysis"], fail, teacher)
        for d in datasets:
            have = _dataset_splits(d) or ()
            if analysis["split"] not in have:
                fail(
                    base + ["analysis", "split"],
                    f"dataset {d!r} has no split {analysis['split']!r} (splits: {', '.join(have)})",
                )
    reference = s.get("reference")
    if reference is not None:
        reference = _check_reference(reference, base + ["reference"], fail)
    reference = _own_claims(s, reference, base, fail)
    grid = _stage_grid(s, regs, base, fail)
    dup = same_jobs_problem([(spec, p, resolved[i]) for i, (spec, p) in enumerate(regs)], grid)
    if dup:
        fail(base + ["regularizers", dup[0]], dup[1])
    train = _stage_train(s, base, fail)
    stage_seeds = _seeds(s["seeds"], base + ["seeds"], fail) if "seeds" in s else seeds
    return Stage(
        name=sname,
        model=s["model"],
        model_params=dict(s.get("model_params", {})),
        datasets=datasets,
        dataset_params=dict(s.get("dataset_params", {})),
        train=train,
        regularizers=tuple(regs),
        teacher=teacher,
        grid=grid,
        seeds=stage_seeds,
        init=s.get("init"),
        pretrained=s.get("pretrained"),
        splits=splits,
        analysis=analysis,
        source=source,
        table=s.get("table", sname),
        task=s.get("task"),
        report=s.get("report"),
        reference=reference,
        select=s.get("select"),
    )


def _check_stage_names(s: Mapping, base: list, fail) -> tuple[str, ...]:
    """The stage's datasets; its model and datasets (and the source's) are registered names
    with parameters they accept: a misspelt name fails here, naming its line, not when its
    job starts."""
    from harness.zoo.data import get_dataset
    from harness.zoo.models import get_model

    datasets = (s["dataset"],) if isinstance(s["dataset"], str) else tuple(s["dataset"])
    if not datasets or not all(isinstance(d, str) for d in datasets):
        fail(base + ["dataset"], "must be a dataset name or a non-empty list of names")
    if len(set(datasets)) != len(datasets):
        fail(base + ["dataset"], f"lists a dataset twice (its jobs twice): {list(datasets)!r}")
    try:
        model = get_model(s["model"])
    except ValueError as exc:
        fail(base + ["model"], str(exc))
    check_known(
        model.params,
        s.get("model_params", {}),
        f"model {model.name!r}",
        base + ["model_params"],
        fail,
    )
    problem = spelling_problem("model", s["model"], model.name)
    if problem:
        fail(base + ["model"], problem)
    src = s.get("source")
    src_dataset = (
        src["dataset"] if isinstance(src, dict) and isinstance(src.get("dataset"), str) else None
    )
    for d in (*datasets, *([src_dataset] if src_dataset else [])):
        where = base + (["dataset"] if d in datasets else ["source", "dataset"])
        try:
            info = get_dataset(d)
        except ValueError as exc:
            fail(where, str(exc))
        problem = spelling_problem("dataset", d, info.name)
        if problem:
            fail(where, problem)
    for d in datasets:
        check_known(
            get_dataset(d).params,
            s.get("dataset_params", {}),
            f"dataset {d!r}",
            base + ["dataset_params"],
            fail,
            lowest=0,
        )
        _check_dataset_params(d, s.get("dataset_params", {}), base + ["dataset_params"], fail)
    if src_dataset:
        check_known(
            get_dataset(src_dataset).params,
            src.get("dataset_params", {}),
            f"dataset {src_dataset!r}",
            base + ["source", "dataset_params"],
            fail,
            lowest=0,
        )
        _check_dataset_params(
            src_dataset, src.get("dataset_params", {}), base + ["source", "dataset_params"], fail
        )
    return datasets


def _check_stage_refs(s: Mapping, base: list, earlier: list[str], fail) -> None:
    """``teacher`` / ``init``: an earlier stage, or ``pretrained`` with a weights file."""
    if "pretrained" in s and not str(s["pretrained"]).strip():
        fail(base + ["pretrained"], "pretrained is blank: give the path of a local state_dict file")
    for ref in ("teacher", "init"):
        if s.get(ref) == PRETRAINED:
            if "pretrained" not in s:
                fail(
                    base + [ref],
                    f"{ref}: pretrained needs the stage's 'pretrained: PATH' "
                    "(a local state_dict file)",
                )
            continue
        if s.get(ref) is not None and s[ref] not in earlier:
            fail(
                base + [ref],
                f"{ref} {s[ref]!r} is not an earlier stage "
                f"(earlier: {', '.join(earlier) or 'none'})",
            )


def _check_source(source: Mapping | None, base: list, fail) -> dict | None:
    """A joint-training source task (lu2017): its keys, resolved with their defaults."""
    if source is None:
        return None
    for key, value in source.items():
        if key not in _SOURCE_KEYS:
            fail(
                base + ["source", key],
                f"unknown source key {key!r}; expected one of {', '.join(_SOURCE_KEYS)}",
            )
        if not isinstance(value, _SOURCE_KEYS[key]) or isinstance(value, bool):
            fail(base + ["source", key], f"must be {_type_name(_SOURCE_KEYS[key])}")
    if "dataset" not in source:
        fail(base + ["source"], "a source needs a 'dataset'")
    w = source.get("weight", 1.0)
    if not math.isfinite(w) or w < 0:
        fail(
            base + ["source", "weight"],
            f"the source's weight (lambda_s) must be a finite number >= 0; got {w!r}",
        )
    return {
        "dataset": source["dataset"],
        "dataset_params": dict(source.get("dataset_params", {})),
        "weight": float(source.get("weight", 1.0)),
        # the source's training split; only when given (keys stay as they were)
        **({"split": source["split"]} if "split" in source else {}),
    }


def _stage_regularizers(s: Mapping, base: list, fail) -> tuple[list[tuple[str, dict]], list]:
    """``(spec, params)`` of each regularizer, and each one's resolved parameters by term;
    unknown terms, parameters, solvers and values they cannot take fail now, not mid-run."""
    regs = []
    for i, r in enumerate(s.get("regularizers", ["none"])):
        if isinstance(r, str):
            regs.append((r, {}))
        elif (
            isinstance(r, dict)
            and len(r) == 1
            and isinstance(next(iter(r.values())), (dict, type(None)))
        ):
            spec, params = next(iter(r.items()))
            params = dict(params or {})
            if ROW_KEY in params:
                problem = name_problem(f"{ROW_KEY!r} (the row name)", params[ROW_KEY])
                if problem:
                    fail(base + ["regularizers", i], problem)
            regs.append((str(spec), params))
        else:
            fail(
                base + ["regularizers", i],
                "a regularizer is a spec string or a one-key mapping {spec: {param: value}}",
            )
    if not regs:
        fail(base + ["regularizers"], "needs at least one regularizer (use 'none')")
    resolved = [
        _check_regularizer(spec, params, base + ["regularizers", i], fail)
        for i, (spec, params) in enumerate(regs)
    ]
    return regs, resolved


def _check_splits(s: Mapping, splits: Mapping, base: list, fail) -> None:
    """``splits``: one split for every dataset of the stage, or one per dataset
    (``{aircraft: trainval}``; a dataset left out keeps the default)."""
    names = s.get("dataset") if isinstance(s.get("dataset"), list) else [s.get("dataset")]
    for key, value in splits.items():
        per = value if isinstance(value, dict) else {n: value for n in names}
        if key not in ("train", "val", "test") or not all(
            isinstance(v, str) or (v is None and key == "val") for v in per.values()
        ):
            fail(
                base + ["splits", key],
                "splits maps 'train' / 'val' / 'test' to a split name "
                "of the datasets, or to {dataset: split name} ('val' "
                "may be null: none)",
            )
        for name, v in per.items():
            have = _dataset_splits(name)
            if have is None:  # a dataset of no stage is a typo; one of another stage is
                # allowed (a stage merged from a YAML anchor with its splits)
                fail(
                    base + ["splits", key, name],
                    f"{name!r} is not a registered dataset (otransfer list datasets)",
                )
            from harness.zoo.data import get_dataset

            problem = spelling_problem("dataset", name, get_dataset(name).name)
            if problem:  # 'Aircraft' would never match the job's 'aircraft': silently unused
                fail(base + ["splits", key, name], problem)
            if isinstance(v, str) and have is not None and v not in have:
                fail(
                    base + ["splits", key],
                    f"dataset {name!r} has no split {v!r} (splits: {', '.join(have)})",
                )


def _stage_grid(s: Mapping, regs, base: list, fail) -> dict[str, tuple]:
    """``grid``: each axis a non-empty list of distinct values of a regularizer parameter."""
    grid = {}
    for k, v in s.get("grid", {}).items():
        if not isinstance(v, list) or not v:
            fail(base + ["grid", k], "a grid axis is a non-empty list of values")
        keys = [value_key(x) for x in v]
        twice = (
            next((x for x, key in zip(v, keys) if keys.count(key) > 1), None)
            if len(set(keys)) != len(keys)
            else None
        )
        if twice is not None:
            same = " and ".join(repr(x) for x, key in zip(v, keys) if key == value_key(twice))
            fail(
                base + ["grid", k],
                f"a grid axis lists a value twice ({same} are equal: the "
                f"same job twice, under two keys); remove one: {v!r}"[:400],
            )
        try:
            taking = [(spec, p) for spec, p in regs if _accepts(spec, str(k), p)]
        except ValueError as exc:  # an unknown regularizer or plan name
            fail(base + ["regularizers"], str(exc))
        if not taking:
            fail(
                base + ["grid", k],
                f"no regularizer of this stage takes {k!r} (the grid spans "
                "regularizer parameters only; train settings go in "
                "'train', or one stage per value)",
            )
        for spec, p in taking:  # each value as its entries will be built with it (and with
            # each plan of a plan axis: a solver key must be one every plan takes)
            plans = [
                a
                for a in s["grid"]
                if a != k
                and (a == "plan" or str(a).endswith(".plan"))
                and isinstance(s["grid"][a], list)
                and _accepts(spec, str(a), p)
            ]
            for x, combo in itertools.product(v, itertools.product(*(s["grid"][a] for a in plans))):
                point = {**dict(zip(map(str, plans), combo)), str(k): x}
                where = ", ".join(f"{a} = {y!r}" for a, y in point.items())

                def at(_path, msg, where=where):
                    fail(base + ["grid", k], f"{where}: {msg}")

                _check_regularizer(spec, merge_params(p, point), [], at)
        grid[str(k)] = tuple(v)
    for spec, p in regs:  # 'tau' and 'kd.tau': one parameter, two axes (one overwritten)
        seen: dict[tuple[str, str], str] = {}
        for k in grid:
            for t in takers(spec, k, {x: y for x, y in p.items() if x != ROW_KEY}):
                other = seen.setdefault((t, k.partition(".")[2] or k), k)
                if other != k:
                    fail(
                        base + ["grid", k],
                        f"axes {other!r} and {k!r} both set {t}."
                        f"{k.partition('.')[2] or k} of {spec!r}: one "
                        "would overwrite the other (the same jobs under "
                        "several keys); keep one",
                    )
    return grid


def _stage_train(s: Mapping, base: list, fail) -> dict:
    """``train``: :class:`~harness.training.loop.TrainConfig` fields that build one."""
    from harness.training.loop import TrainConfig

    train = dict(s.get("train", {}))
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for k in train:
        if k not in fields:
            fail(
                base + ["train", k],
                f"unknown train setting {k!r}; TrainConfig fields: {', '.join(sorted(fields))}",
            )
    if "seed" in train:
        fail(base + ["train", "seed"], "set seeds with the 'seeds' list, not train.seed")
    if "param_groups" in train:
        _check_param_groups(train["param_groups"], s, base + ["train", "param_groups"], fail)
    try:
        TrainConfig(**train)
    except (TypeError, ValueError) as exc:
        # the line of the setting the message names ("teacher_mode must be ..."), if any
        named = next((k for k in train if str(exc).startswith(str(k))), None)
        fail(base + ["train"] + ([named] if named is not None else []), str(exc))
    return train


def _check_searches(raw: Mapping, stages: Sequence[Stage], fail) -> tuple[Search, ...]:
    if "search" not in raw:
        return ()
    blocks = raw["search"] if isinstance(raw["search"], list) else [raw["search"]]
    paths = (
        [["search", i] for i in range(len(blocks))]
        if isinstance(raw["search"], list)
        else [["search"]]
    )
    if not blocks:
        fail(["search"], "a search list needs at least one search block")
    searches = tuple(_check_search(b, p, list(stages), fail) for b, p in zip(blocks, paths))
    seen = [(x.stage, x.regularizer, x.row, x.dataset) for x in searches]
    if len(set(seen)) != len(seen):
        fail(["search"], "two search blocks tune the same stage, regularizer and dataset")
    return searches


def _check_dataset_params(name: str, params: Any, path, fail) -> None:
    """What a dataset's parameters accept, checked before any job runs: ``classes`` a list of
    distinct class indices of the dataset (two at least; or a count of at least 2 for the
    synthetic mixture), ``n_per_class`` a positive integer."""
    from harness.zoo.data import all_datasets

    info = all_datasets().get(name)
    if info is None or not isinstance(params, dict):
        return  # unknown names and non-mappings are reported elsewhere
    n = params.get("n_per_class")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        fail(path + ["n_per_class"], f"n_per_class must be a positive integer; got {n!r}")
    if "test_pool" in params and "test_pool" in info.params:
        from harness.zoo.pools import TEST_POOLS

        if params["test_pool"] not in TEST_POOLS:
            fail(
                path + ["test_pool"],
                f"test_pool must be one of "
                f"{', '.join(map(repr, TEST_POOLS))}; got "
                f"{params['test_pool']!r}",
            )
    classes = params.get("classes")
    if classes is None or "classes" not in info.params:
        return
    if isinstance(info.params.get("classes"), int):  # synthetic: a number of classes
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
            fail(
                path + ["classes"],
                f"classes is the number of classes (at least 2); got {classes!r}",
            )
        return
    total = params.get("num_classes", info.params.get("num_classes", info.num_classes))
    if not isinstance(classes, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) for c in classes
    ):
        fail(
            path + ["classes"],
            f"classes is a list of class indices, e.g. [0, 1, 2]; got {classes!r}",
        )
    if len(classes) < 2:
        fail(
            path + ["classes"],
            f"classes needs at least 2 classes (one class makes every "
            f"prediction right); got {classes!r}",
        )
    if len(set(classes)) != len(classes):
        fail(path + ["classes"], f"classes lists a class twice: {classes!r}")
    out = [c for c in classes if not 0 <= c < int(total)]
    if out:
        fail(path + ["classes"], f"dataset {name!r} has classes 0..{int(total) - 1}; got {out[0]}")


def _check_model_params(params: Any, path, fail) -> None:
    """``widths``: a list of positive integers (every MLP-like model's hidden widths)."""
    if not isinstance(params, dict) or "widths" not in params:
        return
    w = params["widths"]
    if (
        not isinstance(w, list)
        or not w
        or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in w)
    ):
        fail(path + ["widths"], f"widths is a non-empty list of positive integers; got {w!r}")


def _check_param_groups(groups: Any, stage: Mapping[str, Any], path, fail) -> None:
    """``train.param_groups``: a list of ``{match: pattern(s), lr_mult: number}``, each entry's
    error on its own line; the patterns are checked against the stage's model's parameter
    names now (not mid-run), the network built on PyTorch's ``meta`` device (no memory)."""
    from harness.training.loop import REGULARIZER_PREFIX, ParamGroup

    if not isinstance(groups, list):
        fail(
            path,
            "param_groups is a list of {match: PATTERN or [PATTERNS], lr_mult: NUMBER} "
            "(lr_mult 0 freezes; the first match wins)",
        )
    parsed = []
    for i, entry in enumerate(groups):
        if isinstance(entry, dict):
            for key in entry:
                if key not in ("match", "lr_mult"):
                    fail(
                        path + [i, key],
                        f"unknown param_groups key {key!r}; expected match, lr_mult",
                    )
        try:
            parsed.append(ParamGroup.parse(entry))
        except (TypeError, ValueError) as exc:
            key = next(
                (
                    k
                    for k in ("lr_mult", "match")
                    if f"'{k}'" in str(exc) and isinstance(entry, dict) and k in entry
                ),
                None,
            )
            fail(path + [i] + ([key] if key else []), str(exc))
    names = _model_param_names(stage)
    if names is None:  # a model the meta device cannot build: the trainer checks at its start
        return
    # the regularizer's embeddings ("regularizer.*") exist only once it has seen a batch: the
    # trainer checks those patterns
    for i, g in enumerate(parsed):
        for j, pattern in enumerate(g.match):
            if not pattern.startswith(REGULARIZER_PREFIX) and not any(
                ParamGroup(match=pattern).matches(n) for n in names
            ):
                where = path + [i, "match"] + ([j] if isinstance(groups[i]["match"], list) else [])
                fail(
                    where,
                    f"pattern {pattern!r} matches no parameter of model "
                    f"{stage.get('model')!r} (its modules: {_name_summary(names)})",
                )
    first = {next((i for i, g in enumerate(parsed) if g.matches(n)), None) for n in names}
    for i, g in enumerate(parsed):
        if i not in first and not all(m.startswith(REGULARIZER_PREFIX) for m in g.match):
            fail(
                path + [i],
                "every parameter this group matches belongs to an earlier group "
                "(the first match wins)",
            )


def _model_param_names(stage: Mapping[str, Any]) -> list[str] | None:
    """The parameter names the trainer will see for ``stage``'s model (with the source
    classifier of joint training), or ``None`` when it cannot be built on the meta device."""
    model = meta_model(stage.get("model"), stage.get("model_params"), bool(stage.get("source")))
    return None if model is None else [n for n, _ in model.named_parameters()]


def _name_summary(names: list[str]) -> str:
    """Module paths of ``names`` (their parameters' names without the last part)."""
    mods = list(dict.fromkeys(n.rpartition(".")[0] or n for n in names))
    return ", ".join(mods[:12]) + (", ..." if len(mods) > 12 else "")


def _check_analysis(an: dict, path, fail, teacher) -> dict:
    """``analysis: {trace_taps: [...], split: val, max_examples: 3000}``: after training, the
    trace of the exact OT plan between the trained network's and the teacher's neurons at each
    tap, on that split (li2020 Fig. 2, post hoc)."""
    keys = {"trace_taps": list, "split": str, "max_examples": int}
    for key, value in an.items():
        if key not in keys:
            fail(path + [key], f"unknown analysis key {key!r}; expected one of {', '.join(keys)}")
        if not isinstance(value, keys[key]) or isinstance(value, bool):
            fail(path + [key], f"must be {_type_name(keys[key])}")
    if not an.get("trace_taps") or not all(
        isinstance(t, str) and t.strip() for t in an["trace_taps"]
    ):
        fail(
            path + (["trace_taps"] if "trace_taps" in an else []),
            "an analysis needs 'trace_taps': a list of the layers (tap names) to compare",
        )
    if an.get("max_examples", 1) < 1:
        fail(path + ["max_examples"], f"max_examples must be >= 1; got {an['max_examples']}")
    if teacher is None:
        fail(path, "the plan-trace analysis compares with the stage's teacher: set 'teacher'")
    return {
        "trace_taps": [str(t) for t in an["trace_taps"]],
        "split": an.get("split", "val"),
        "max_examples": int(an.get("max_examples", 3000)),
    }


def _check_reference(ref: dict, path, fail) -> dict:
    """A stage's ``reference``: the paper table (results/reference/) its leaderboard mirrors."""
    from harness.experiments.reference import load_reference, parse_claim

    for key, value in ref.items():
        if key not in _REFERENCE_KEYS:
            fail(
                path + [key],
                f"unknown reference key {key!r}; expected one of {', '.join(_REFERENCE_KEYS)}",
            )
        if not isinstance(value, _REFERENCE_KEYS[key]):
            fail(path + [key], f"must be {_type_name(_REFERENCE_KEYS[key])}")
    for key in ("paper", "table"):
        if key not in ref:
            fail(path, f"a reference needs {key!r}")
    try:
        cells = load_reference(ref["paper"], str(ref["table"]))
    except (ValueError, FileNotFoundError) as exc:
        fail(path, str(exc))
    known = set(cells["column"])
    for ours, theirs in ref.get("columns", {}).items():
        if theirs not in known:
            fail(
                path + ["columns", ours],
                f"{ref['paper']} table {ref['table']} has no column "
                f"{theirs!r}; its columns: {', '.join(sorted(known))}",
            )
    rows = set(cells["row"])
    for ours, theirs in ref.get("rows", {}).items():
        if theirs is not None and theirs not in rows:  # null: a row the paper does not have
            fail(
                path + ["rows", ours],
                f"{ref['paper']} table {ref['table']} has no row "
                f"{theirs!r}; its rows: {', '.join(sorted(rows))}",
            )
    for key in ("premises", "claims"):  # same syntax; premises are checked first (report)
        for i, claim in enumerate(ref.get(key, [])):
            try:
                parse_claim(claim)
            except ValueError as exc:
                fail(path + [key, i], str(exc))
    out = {
        "paper": ref["paper"],
        "table": str(ref["table"]),
        "columns": dict(ref.get("columns", {})),
        "rows": dict(ref.get("rows", {})),
        "claims": list(ref.get("claims", [])),
    }
    if ref.get("premises"):  # absent when empty: older records compare equal
        out["premises"] = list(ref["premises"])
    return out


def _own_claims(s: Mapping, reference, base, fail):
    """A stage's ``claims:`` / ``premises:`` of one's own (no paper): the reference the report
    decides them from (``paper`` empty); beside a paper's ``reference`` they belong in it."""
    from harness.experiments.reference import parse_claim

    own = {k: s[k] for k in ("premises", "claims") if k in s}
    if not own:
        return reference
    if reference is not None:
        fail(
            base + [next(iter(own))],
            "this stage has a paper's reference block: list its premises and claims there",
        )
    for key, items in own.items():
        for i, text in enumerate(items):
            try:
                parse_claim(text if isinstance(text, str) else "")
            except ValueError as exc:
                fail(base + [key, i], str(exc))
    out = {
        "paper": "",
        "table": "",
        "columns": {},
        "rows": {},
        "claims": list(own.get("claims", [])),
    }
    if own.get("premises"):
        out["premises"] = list(own["premises"])
    return out


_SEARCH_KEYS = {
    "stage": str,
    "regularizer": str,
    "dataset": str,
    "trials": int,
    "seed": int,
    "seeds": list,
    "pruner": dict,
    "sampler": dict,
    "space": dict,
}
_DIM_KEYS = {
    "low": (int, float),
    "high": (int, float),
    "log": bool,
    "step": (int, float),
    "type": str,
    "choices": list,
}
_DIM_HELP = (
    "a search dimension is {low: L, high: H[, log: true, step: S, type: int]} or {choices: [...]}"
)
#: TrainConfig fields a search does not set: the trials' seed is the search's ``seed``, the
#: device the machine's (``--device``).
_FIXED_TRAIN = ("seed", "device")
_SCALARS = (str, int, float, bool, type(None))


def _check_search(block: Any, path: list, stages: Sequence[Stage], fail) -> Search:
    """Check one ``search:`` block against the suite's stages (see the module docstring)."""
    from harness.experiments.search_options import check_option

    if not isinstance(block, dict):
        fail(path, "a search block is a mapping with keys " + ", ".join(_SEARCH_KEYS))
    for key, value in block.items():
        if key not in _SEARCH_KEYS:
            fail(
                path + [key],
                f"unknown search key {key!r}; expected one of {', '.join(_SEARCH_KEYS)}",
            )
        if not isinstance(value, _SEARCH_KEYS[key]) or isinstance(value, bool):
            fail(
                path + [key], f"must be {_type_name(_SEARCH_KEYS[key])}, got {type(value).__name__}"
            )
    if "stage" not in block:
        fail(path, "a search needs 'stage': the stage whose regularizer is tuned")
    by_name = {st.name: st for st in stages}
    stage = by_name.get(block["stage"])
    if stage is None:
        fail(
            path + ["stage"],
            f"search stage {block['stage']!r} is not a stage of this suite "
            f"(stages: {', '.join(by_name)})",
        )
    # the regularizer entry tuned: by its row name, else by its spec
    rows = [p.get(ROW_KEY) or spec for spec, p in stage.regularizers]
    want = block.get("regularizer")
    if want is None:
        if len(rows) != 1:
            fail(
                path,
                f"stage {stage.name!r} has {len(rows)} regularizers; name the one to "
                f"tune with 'regularizer' (one of {', '.join(map(repr, rows))})",
            )
        idx = 0
    else:
        cands = [i for i, r in enumerate(rows) if r == want] or [
            i for i, (spec, _) in enumerate(stage.regularizers) if spec == want
        ]
        if not cands:
            fail(
                path + ["regularizer"],
                f"stage {stage.name!r} has no regularizer {want!r}; its "
                f"regularizers: {', '.join(map(repr, rows))}",
            )
        if len(cands) > 1:
            fail(
                path + ["regularizer"],
                f"several regularizers of stage {stage.name!r} have "
                f"spec {want!r}; name one by its row: "
                f"{', '.join(repr(rows[i]) for i in cands)}",
            )
        idx = cands[0]
    spec = stage.regularizers[idx][0]
    params = {k: v for k, v in stage.regularizers[idx][1].items() if k != ROW_KEY}
    dataset = block.get("dataset")
    if dataset is None:
        if len(stage.datasets) > 1:
            fail(
                path,
                f"stage {stage.name!r} has several datasets; name the one to search on "
                f"with 'dataset' (one of {', '.join(stage.datasets)})",
            )
        dataset = stage.datasets[0]
    elif dataset not in stage.datasets:
        fail(
            path + ["dataset"],
            f"stage {stage.name!r} has no dataset {dataset!r} (its "
            f"datasets: {', '.join(stage.datasets)})",
        )
    problem = _no_val_split(stage, dataset)
    if problem:
        fail(path + ["stage"], problem)
    trials = block.get("trials", 20)
    if trials < 1:
        fail(path + ["trials"], f"trials must be >= 1; got {trials}")
    space = block.get("space")
    if not space:
        fail(
            path + (["space"] if "space" in block else []),
            "a search needs a non-empty 'space': dotted keys (omega_p.alpha, train.lr) mapped "
            "to " + _DIM_HELP.split(" is ", 1)[1],
        )
    plans = _plan_dims(space)  # a solver key must suit each plan the search may pick
    dims = {
        str(k): _check_dim(
            str(k),
            d,
            path + ["space", k],
            stage,
            spec,
            params,
            fail,
            {a: c for a, c in plans.items() if a != str(k)},
        )
        for k, d in space.items()
    }
    options = {}
    for kind, default in (("pruner", {"name": "median"}), ("sampler", {"name": "tpe"})):
        opt = dict(block.get(kind, default))
        problem = check_option(kind, opt)
        if problem:
            fail(path + [kind], problem)
        options[kind] = opt
    if "seed" in block and "seeds" in block:
        fail(path + ["seeds"], "give 'seed' or 'seeds', not both")
    seeds = block.get("seeds", [block.get("seed", stage.seeds[0])])  # non-empty, distinct,
    _seeds(seeds, path + (["seeds"] if "seeds" in block else ["seed"]), fail)  # in [0, 2^31)
    return Search(
        stage=stage.name,
        regularizer=spec,
        params=params,
        row=rows[idx],
        dataset=dataset,
        space=dims,
        trials=int(trials),
        seed=int(seeds[0]),
        seeds=tuple(int(x) for x in seeds),
        **options,
    )


def _plan_dims(space: Mapping) -> dict[str, list]:
    """The choices of each plan dimension (``omega_p.plan: {choices: [...]}``) of a space."""
    return {
        str(k): d["choices"]
        for k, d in space.items()
        if (str(k) == "plan" or str(k).endswith(".plan"))
        and isinstance(d, dict)
        and isinstance(d.get("choices"), list)
    }


def _check_dim(
    key: str,
    dim: Any,
    path: list,
    stage: Stage,
    spec: str,
    params: Mapping[str, Any],
    fail,
    plans: Mapping[str, list] = {},
) -> dict[str, Any]:  # noqa: B006 - read only
    """One dimension of a search space, normalised: ``{"choices": [...]}`` or
    ``{"low", "high", "log", "step", "type"}``; its key must be one a term of ``spec`` takes
    (as grid keys are) or ``train.<TrainConfig field>``."""
    from harness.training.loop import TrainConfig

    if not isinstance(dim, dict):
        fail(path, _DIM_HELP)
    for k, v in dim.items():
        if k not in _DIM_KEYS:
            fail(path + [k], f"unknown key {k!r}: {_DIM_HELP}")
        if k in ("low", "high", "step") and isinstance(v, str):
            fail(
                path + [k],
                f"must be a number, got the string {v!r} (YAML reads 1e-4 as a "
                "string: write 1.0e-4)",
            )
        if not isinstance(v, _DIM_KEYS[k]) or (isinstance(v, bool) and k != "log"):
            fail(path + [k], f"must be {_type_name(_DIM_KEYS[k])}, got {type(v).__name__}")
    if "choices" in dim:
        extra = sorted(set(dim) - {"choices"})
        if extra:
            fail(
                path + [extra[0]],
                "'choices' and a range (low, high, log, step, type) exclude each other",
            )
        if not dim["choices"]:
            fail(path + ["choices"], "needs at least one choice")
        for i, c in enumerate(dim["choices"]):
            if not (
                isinstance(c, _SCALARS)
                or (isinstance(c, list) and all(isinstance(x, _SCALARS) for x in c))
            ):
                fail(
                    path + ["choices", i],
                    "a choice is a number, a string, true/false, null "
                    "or a list of those (e.g. taps)",
                )
        out: dict[str, Any] = {"choices": list(dim["choices"])}
        values = list(dim["choices"])
    else:
        if "low" not in dim or "high" not in dim:
            fail(path, f"a range needs 'low' and 'high' ({_DIM_HELP})")
        low, high, log, step = dim["low"], dim["high"], dim.get("log", False), dim.get("step")
        kind = dim.get("type", "float")
        if kind not in ("float", "int"):
            fail(path + ["type"], f"type is 'float' or 'int', got {kind!r}")
        if low > high:
            fail(path + ["low"], f"low ({low}) > high ({high})")
        if log and low <= 0:
            fail(path + ["low"], f"a log-spaced range needs low > 0; got low = {low}")
        if step is not None and log:
            fail(path + ["step"], "'step' and 'log: true' exclude each other (Optuna)")
        if step is not None and step <= 0:
            fail(path + ["step"], f"step must be > 0; got {step}")
        if kind == "int" and not all(isinstance(v, int) for v in (low, high, step or 1)):
            fail(path, "type: int needs integer low, high and step")
        out = {"low": low, "high": high, "log": bool(log), "step": step, "type": kind}
        values = [low, high]
    if key.startswith("train."):
        name = key[len("train.") :]
        free = sorted({f.name for f in dataclasses.fields(TrainConfig)} - set(_FIXED_TRAIN))
        if name not in free:
            fail(
                path,
                f"{key!r}: a train key names a TrainConfig field other than "
                f"{' and '.join(_FIXED_TRAIN)} ({', '.join(free)})",
            )
        for v in values:
            try:
                TrainConfig(**{**stage.train, name: v})
            except (TypeError, ValueError) as exc:
                fail(path, f"{key} = {v!r}: {exc}")
        return out
    try:
        terms = takers(spec, key, params)
    except ValueError as exc:  # an unknown regularizer or plan name
        fail(path, str(exc))
    if not terms:
        fail(
            path,
            f"no term of regularizer {spec!r} takes {key!r} (search keys are grid keys, "
            "term.param such as omega_p.alpha, or train.<TrainConfig field>)",
        )
    if len(terms) > 1:
        fail(
            path,
            f"{key!r} is taken by several terms of {spec!r}; write "
            f"{' or '.join(repr(f'{t}.{key}') for t in terms)}",
        )
    keys = [value_key(v) for v in values]
    if "choices" in out and len(set(keys)) != len(keys):
        fail(path + ["choices"], f"lists a choice twice (equal as numbers): {values!r}"[:300])
    plans = {a: c for a, c in plans.items() if _accepts(spec, a, params)}
    for v, combo in itertools.product(values, itertools.product(*plans.values())):
        # the ends of a range, each choice (with each plan): built as a trial will build them
        point = {**dict(zip(plans, combo)), key: v}
        where = ", ".join(f"{a} = {y!r}" for a, y in point.items())
        _check_regularizer(
            spec,
            merge_params(params, point),
            [],
            lambda _p, msg, where=where: fail(path, f"{where}: {msg}"),
        )
    return out


def resolve_split(splits: Mapping[str, Any] | None, role: str, dataset: str) -> str | None:
    """The split of ``dataset`` in ``role`` (``train`` / ``val`` / ``test``) under a stage's
    ``splits`` (one name for every dataset, or ``{dataset: name}``); the role's name when unset."""
    value = (splits or {}).get(role, role)
    return value.get(dataset, role) if isinstance(value, dict) else value


def _no_val_split(stage: Stage, dataset: str) -> str | None:
    """Why ``stage`` has no validation split on ``dataset`` (None when it has one); the same
    rule as the runner's (:func:`harness.experiments.runner._datasets`)."""
    from harness.zoo.data import get_dataset, held_splits

    try:
        info = get_dataset(dataset)
    except ValueError as exc:
        return str(exc)
    chosen = resolve_split(stage.splits, "val", dataset)
    if chosen is None:
        return (
            f"stage {stage.name!r} sets 'splits: {{val: null}}': a search scores its trials "
            "on a validation split (the test split is kept for the re-runs)"
        )
    if chosen == "val" and "val" not in held_splits(dataset, stage.dataset_params):
        return (
            f"dataset {dataset!r} has a validation split only with dataset_params.val_size "
            f"> 0 (held out of train); set it on stage {stage.name!r} to search"
        )
    if chosen not in info.splits:
        return (
            f"dataset {dataset!r} has no split {chosen!r} to score the search's trials on "
            f"(splits: {', '.join(info.splits)}); a search needs a validation split"
        )
    return None


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def _seeds(value, path, fail) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        fail(path, "seeds must be a non-empty list of integers")
    bad = [v for v in value if not 0 <= v < 2**31]
    if bad:
        fail(path, f"a seed is an integer in [0, 2^31); got {bad[0]}")
    counts = collections.Counter(value)
    dup = sorted(v for v, n in counts.items() if n > 1)
    if dup:
        fail(path, f"seed {dup[0]} is listed twice (it would run the same jobs twice)")
    return tuple(value)


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    key, eq, value = text.partition("=")
    shown = repr(text if len(text) <= 200 else text[:200] + "...")
    if not eq or not key.strip():
        raise SuiteError(f"--set expects key=value, got {shown}")
    try:
        parsed = _compose(value)[1] if value.strip() else None
    except RecursionError:
        raise SuiteError(f"--set {shown}: the value is nested too deeply") from None
    except yaml.YAMLError as exc:
        problem = (getattr(exc, "problem", None) or str(exc)).strip().splitlines()[0]
        raise SuiteError(f"--set {shown}: the value is not valid YAML ({problem})") from None
    return key.strip().split("."), parsed


def slug(name: str) -> str:
    """A file-name-safe form of a table name (``"transfer+compression"`` -> ``transfer-compression``)."""
    import re

    return re.sub(r"[^A-Za-z0-9_.]+", "-", str(name)).strip("-").lower() or "table"


def with_overrides(suite: Suite, overrides: Iterable[str]) -> Suite:
    """``suite`` (loaded) with ``--set`` ``overrides`` applied and checked again."""
    overrides = list(overrides)
    if not overrides:
        return suite
    return _check(apply_overrides(suite.raw, overrides), suite.path, _Lines(None))


def apply_overrides(raw: Any, overrides: Iterable[str]) -> Any:
    """Return a copy of ``raw`` with each ``"a.b.c=value"`` set (value parsed as YAML).

    Keys are dotted paths into the suite (``stages.students.train.epochs=2``, ``seeds=[0]``);
    the last part may itself hold dots when it names a regularizer parameter
    (``stages.students.grid.kd.tau=[2,4]`` sets key ``kd.tau`` of ``grid``).
    """
    overrides = list(overrides)
    if not overrides:
        return raw
    raw = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node, i = raw, 0
        # descend while the next part names an existing entry; the rest is one (dotted) key
        while i < len(parts) - 1:
            part = parts[i]
            if isinstance(node, dict) and part in node and isinstance(node[part], (dict, list)):
                node = node[part]
            elif isinstance(node, dict) and part not in node and part in _SUBMAPS:
                node = node.setdefault(part, {})  # e.g. a stage's grid given on the CLI
            elif (
                isinstance(node, list)
                and part.lstrip("-").isdigit()
                and -len(node) <= int(part) < len(node)
            ):
                node = node[int(part)]
            else:
                break
            i += 1
        if parts[:i] == ["stages"] and len(parts) - i > 1 and isinstance(node, dict):
            raise SuiteError(
                f"--set {text!r}: no stage {parts[i]!r} (stages: "
                f"{', '.join(map(str, node)) or 'none'})"
            )
        last = ".".join(parts[i:])
        if isinstance(node, list):
            if not (last.lstrip("-").isdigit() and -len(node) <= int(last) < len(node)):
                raise SuiteError(
                    f"--set {text!r}: {last!r} is not an index of the list at "
                    f"{'.'.join(parts[:i])!r}"
                )
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise SuiteError(f"--set {text!r}: cannot set a key inside a non-mapping")
    return raw


def _dataset_splits(name: Any) -> tuple[str, ...] | None:
    """The splits of registered dataset ``name`` (``None`` when it is not registered: that
    error is reported where the dataset is checked)."""
    from harness.zoo.data import get_dataset

    try:
        return tuple(get_dataset(str(name)).splits)
    except (KeyError, ValueError):
        return None


def _check_regularizer(spec: str, params: Mapping[str, Any], path, fail) -> dict:
    """Build ``spec`` with ``params`` once (cheap: no data, no solve) so that an unknown term,
    parameter or OT method (``plan: nosuch``), a misspelt name (``KD``) or a value the term or
    its solver cannot take (``max_iter: -5``) is a schema error naming its line. Returns the
    resolved parameters by term."""
    from harness.transfer.regularizers import build_regularizer, label_cost_spec

    given = {}
    for k, v in params.items():
        if k == ROW_KEY:
            continue
        if k.endswith("label_cost") and isinstance(v, (str, Mapping)):
            try:  # computed by the runner from the teacher's features: check its spelling
                label_cost_spec(v)
            except ValueError as exc:
                fail(path, f"{k}: {exc}")
            continue
        given[k] = v
    try:
        reg = build_regularizer(spec, **given)
    except KeyError as exc:
        fail(path, str(exc).strip("'\""))
    except (ValueError, TypeError) as exc:  # with the YAML pitfall of a number as a string
        hint = next(
            (number_hint(v) for v in given.values() if isinstance(v, str) and repr(v) in str(exc)),
            "",
        )
        fail(path, f"{exc}{hint}")
    problem = spec_problem(spec) or param_value_problem(reg.params)
    if problem:
        fail(path, problem)
    resolved = {t: dict(p) for t, p in reg.params.items()}
    for k, v in params.items():  # label costs as written (the runner computes them)
        head, dot, rest = k.partition(".")
        if k.endswith("label_cost") and k not in given:
            for t, p in resolved.items():
                if (rest if dot else k) in p and (not dot or head == t):
                    p[rest if dot else k] = v
    return resolved


# --------------------------------------------------------------------------- expansion


def _accepts(spec: str, key: str, params: Mapping[str, Any] | None = None) -> bool:
    """Whether a term of ``spec`` takes grid key ``key`` (:func:`~harness.experiments.suite_checks.takers`)."""
    return bool(takers(spec, key, params))


def merge_params(params: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` updated with a grid ``point``; a grid key replaces the same parameter however
    it is written (``kd.tau`` replaces ``tau`` and the reverse)."""
    out = dict(params)
    for k, v in point.items():
        _, dot, rest = k.partition(".")
        for other in list(out):
            _, odot, orest = other.partition(".")
            if (
                other == k
                or (dot and not odot and other == rest)
                or (not dot and odot and orest == k)
            ):
                del out[other]
        out[k] = v
    return out


def expand(suite: Suite) -> list[Job]:
    """Every job of ``suite``, stage by stage (in order), then dataset, spec, grid point, seed.

    A student's config holds its teacher job's key (same dataset and seed; the teacher stage's
    only dataset when it has one; its only seed when it has one, a teacher shared by every
    seed), so retraining a teacher differently changes the students' keys too.
    """
    from harness.training.loop import TrainConfig

    problem = job_count_problem(suite.name, count_jobs(suite.stages, _accepts), job_limit())
    if problem:  # counted, not built: refused in microseconds
        raise SuiteError(f"{suite.path or suite.name}: {problem}")
    jobs: list[Job] = []
    by_stage: dict[str, list[Job]] = {}
    used = {ref for st in suite.stages for ref in (st.teacher, st.init) if ref}
    for stage in suite.stages:
        out = []
        report = stage.report if stage.report is not None else stage.name not in used
        for dataset in stage.datasets:
            for spec, params in stage.regularizers:
                params = dict(params)
                row = params.pop(ROW_KEY, None)
                axes = [k for k in stage.grid if _accepts(spec, k, params)]
                for values in itertools.product(*(stage.grid[k] for k in axes)):
                    reg_params = merge_params(params, dict(zip(axes, values)))
                    for seed in stage.seeds:
                        train = TrainConfig(**{**stage.train, "seed": int(seed)}).to_dict()
                        cfg = {
                            "suite": suite.name,
                            "stage": stage.name,
                            "model": stage.model,
                            "model_params": dict(stage.model_params),
                            "dataset": dataset,
                            "dataset_params": dict(stage.dataset_params),
                            "train": train,
                            "regularizer": spec,
                            "regularizer_params": reg_params,
                            "seed": int(seed),
                            "teacher": None,
                        }
                        if stage.analysis is not None:
                            cfg["analysis"] = dict(stage.analysis)
                        if stage.splits is not None:
                            cfg["splits"] = dict(stage.splits)
                        if stage.pretrained is not None:  # the path as written ($VARS kept)
                            cfg["pretrained"] = stage.pretrained
                        if stage.teacher == PRETRAINED:
                            cfg["teacher"] = PRETRAINED
                        elif stage.teacher is not None:
                            cfg["teacher"] = _teacher_key(
                                by_stage[stage.teacher], dataset, int(seed), stage, suite
                            )
                        if stage.init == PRETRAINED:
                            cfg["init"] = PRETRAINED
                        elif stage.init is not None:  # keys of plain stages stay as they were
                            cfg["init"] = _teacher_key(
                                by_stage[stage.init], dataset, int(seed), stage, suite, "init"
                            )
                        if stage.source is not None:
                            cfg["source"] = dict(stage.source)
                        cfg = json.loads(canonical_json(cfg))
                        label = _label(row or spec, axes, values)
                        out.append(
                            Job(
                                suite.name,
                                stage.name,
                                config_key(cfg),
                                cfg,
                                label,
                                table=stage.table or stage.name,
                                task=(stage.task or "{dataset}").replace("{dataset}", dataset),
                                report=report,
                                reference=stage.reference,
                                row=row or spec,
                                select=stage.select,
                            )
                        )
        by_stage[stage.name] = out
        jobs.extend(out)
    return jobs


def _label(row: str, axes: Sequence[str], values: Sequence[Any]) -> str:
    """A leaderboard row: the entry's row (or spec) and its grid point (``kd (kd.tau=2)``)."""
    return row + (
        " (" + ", ".join(f"{k}={canonical_json(v)}" for k, v in zip(axes, values)) + ")"
        if axes
        else ""
    )


def _teacher_key(
    teachers: list[Job], dataset: str, seed: int, stage: Stage, suite: Suite, ref: str = "teacher"
) -> str:
    cands = [j for j in teachers if j.dataset == dataset and j.seed == seed]
    if not cands and len({j.dataset for j in teachers}) == 1:
        cands = [j for j in teachers if j.seed == seed]
    if not cands:  # a teacher stage of one seed: its one job serves every seed (one teacher,
        # as the papers that distil from released networks have)
        same = [j for j in teachers if j.dataset == dataset] or (
            teachers if len({j.dataset for j in teachers}) == 1 else []
        )
        if len({j.seed for j in same}) == 1:
            cands = same
    if not cands:
        raise SuiteError(
            f"{suite.path}: stage {stage.name!r} needs a {getattr(stage, ref)!r} "
            f"job for dataset {dataset!r} and seed {seed}; there is none"
        )
    if len(cands) > 1:
        raise SuiteError(
            f"{suite.path}: stage {stage.name!r}: several {getattr(stage, ref)!r} "
            f"jobs for dataset {dataset!r} and seed {seed}; a {ref} stage needs "
            "one regularizer and no grid"
        )
    return cands[0].key
