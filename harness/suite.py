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
        teacher: teacher         # the referenced stage's model, same dataset and seed
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
``select: val`` reports, for each row and column, only the grid point with the best mean
validation accuracy (the papers' cross-validated hyper-parameters; the choice is listed);
``splits: {val: NAME, test: NAME}`` picks the evaluation splits (ImageNet: ``test: val``);
``pretrained: PATH`` names a local state_dict (``$VARS`` and ``~`` expanded when the job runs;
e.g. ImageNet weights), used by ``init: pretrained`` and ``teacher: pretrained``;
``source: {dataset, dataset_params, weight}`` trains jointly on a source task through a second
classifier (lu2017 JTLN; ``weight`` is ``lambda_s``); ``report: false`` leaves a stage out of
the leaderboards (default: stages that another stage uses as teacher or init are left out).
A ``jtln`` term's ``label_cost: mkmmd | ot`` is computed from the stage's teacher's
penultimate features of the source and target training sets (lu2017 §3.4).

:func:`expand` turns a suite into :class:`Job` s: datasets x regularizers x params x seeds per
stage; each job's ``key`` is the sha256 of the canonical JSON of its resolved config (16 hex).
``--set k=v`` overrides (:func:`apply_overrides`) edit the raw suite before validation.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

__all__ = ["SuiteError", "Suite", "Stage", "Job", "load_suite", "parse_suite", "expand",
           "apply_overrides", "parse_override", "available_suites", "SUITES_DIR", "config_key"]

#: Where suite names resolve (``suites/<name>.yaml`` at the repository root).
SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"

_TOP_KEYS = {"name": str, "description": str, "seeds": list, "stages": dict}
_STAGE_KEYS = {"model": str, "model_params": dict, "dataset": (str, list),
               "dataset_params": dict, "train": dict, "regularizers": list, "teacher": str,
               "grid": dict, "seeds": list, "init": str, "source": dict, "table": str,
               "task": str, "report": bool, "reference": dict, "pretrained": str, "splits": dict,
               "analysis": dict, "select": str}
#: ``init:`` / ``teacher:`` value naming the stage's own ``pretrained`` weights file.
PRETRAINED = "pretrained"
_REFERENCE_KEYS = {"paper": str, "table": (str, int), "columns": dict, "rows": dict,
                   "claims": list}
_SOURCE_KEYS = {"dataset": str, "dataset_params": dict, "weight": (int, float)}
#: Regularizer parameters read by the suite, not by the regularizer: the leaderboard row name.
ROW_KEY = "row"
_SUBMAPS = ("grid", "model_params", "dataset_params", "train")
_TYPE_NAMES = {str: "a string", list: "a list", dict: "a mapping", int: "an integer",
               float: "a number", bool: "true or false"}


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
class Suite:
    name: str
    description: str
    stages: tuple[Stage, ...]
    seeds: tuple[int, ...]
    path: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


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
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"suite file {str(p)!r} not found")
        return p
    for ext in (".yaml", ".yml"):
        cand = SUITES_DIR / f"{p.name}{ext}"
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"no suite {str(path_or_name)!r}: not a file and not in {SUITES_DIR} "
                            f"(known: {', '.join(available_suites()) or 'none'})")


class _Lines:
    """Line numbers (1-based) of the nodes of a YAML document, by key path."""

    def __init__(self, text: str):
        try:
            self.root = yaml.compose(text)
        except yaml.YAMLError:
            self.root = None

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
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                    and part < len(node.value):
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
    text = path.read_text()
    return parse_suite(text, str(path), overrides)


def parse_suite(text: str, filename: str = "<suite>", overrides: Iterable[str] = ()) -> Suite:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f"line {mark.line + 1}" if mark is not None else "unknown line"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(f"{filename}, {line}: invalid YAML: {problem}") from None
    lines = _Lines(text)
    raw = apply_overrides(raw if raw is not None else {}, overrides)
    return _check(raw, filename, lines)


def _err(filename: str, lines: _Lines, path: Sequence[Any], msg: str) -> SuiteError:
    line = lines.line(path)
    key = ".".join(map(str, path)) or "<top>"
    return SuiteError(f"{filename}, line {line if line is not None else '?'}, key {key!r}: {msg}")


def _check(raw: Any, filename: str, lines: _Lines) -> Suite:
    def fail(path, msg):
        raise _err(filename, lines, path, msg)

    if not isinstance(raw, dict):
        fail([], "a suite file is a mapping with keys " + ", ".join(_TOP_KEYS))
    for key, value in raw.items():
        if key not in _TOP_KEYS:
            fail([key], f"unknown key {key!r}; expected one of {', '.join(_TOP_KEYS)}")
        if not isinstance(value, _TOP_KEYS[key]):
            fail([key], f"must be {_type_name(_TOP_KEYS[key])}, got {type(value).__name__}")
    for key in ("name", "stages"):
        if key not in raw:
            fail([], f"missing required key {key!r}")
    seeds = _seeds(raw.get("seeds", [0]), ["seeds"], fail)
    if not raw["stages"]:
        fail(["stages"], "needs at least one stage")
    stages: list[Stage] = []
    for sname, s in raw["stages"].items():
        base = ["stages", sname]
        if not isinstance(s, dict):
            fail(base, f"a stage must be a mapping, got {type(s).__name__}")
        for key, value in s.items():
            if key not in _STAGE_KEYS:
                fail(base + [key], f"unknown stage key {key!r}; expected one of "
                                   f"{', '.join(_STAGE_KEYS)}")
            if not isinstance(value, _STAGE_KEYS[key]):
                fail(base + [key], f"must be {_type_name(_STAGE_KEYS[key])}, got "
                                   f"{type(value).__name__}")
        for key in ("model", "dataset"):
            if key not in s:
                fail(base, f"stage {sname!r} is missing required key {key!r}")
        datasets = (s["dataset"],) if isinstance(s["dataset"], str) else tuple(s["dataset"])
        if not datasets or not all(isinstance(d, str) for d in datasets):
            fail(base + ["dataset"], "must be a dataset name or a non-empty list of names")
        earlier = [st.name for st in stages]
        for ref in ("teacher", "init"):
            if s.get(ref) == PRETRAINED:
                if "pretrained" not in s:
                    fail(base + [ref], f"{ref}: pretrained needs the stage's 'pretrained: PATH' "
                                       "(a local state_dict file)")
                continue
            if s.get(ref) is not None and s[ref] not in earlier:
                fail(base + [ref], f"{ref} {s[ref]!r} is not an earlier stage "
                                   f"(earlier: {', '.join(earlier) or 'none'})")
        teacher = s.get("teacher")
        source = s.get("source")
        if source is not None:
            for key, value in source.items():
                if key not in _SOURCE_KEYS:
                    fail(base + ["source", key], f"unknown source key {key!r}; expected one of "
                                                 f"{', '.join(_SOURCE_KEYS)}")
                if not isinstance(value, _SOURCE_KEYS[key]) or isinstance(value, bool):
                    fail(base + ["source", key], f"must be {_type_name(_SOURCE_KEYS[key])}")
            if "dataset" not in source:
                fail(base + ["source"], "a source needs a 'dataset'")
            source = {"dataset": source["dataset"],
                      "dataset_params": dict(source.get("dataset_params", {})),
                      "weight": float(source.get("weight", 1.0))}
        regs = []
        for i, r in enumerate(s.get("regularizers", ["none"])):
            if isinstance(r, str):
                regs.append((r, {}))
            elif isinstance(r, dict) and len(r) == 1 and isinstance(next(iter(r.values())),
                                                                    (dict, type(None))):
                spec, params = next(iter(r.items()))
                params = dict(params or {})
                if ROW_KEY in params and not isinstance(params[ROW_KEY], str):
                    fail(base + ["regularizers", i], f"{ROW_KEY!r} (the row name) must be a "
                                                     "string")
                regs.append((str(spec), params))
            else:
                fail(base + ["regularizers", i], "a regularizer is a spec string or a one-key "
                                                 "mapping {spec: {param: value}}")
        if not regs:
            fail(base + ["regularizers"], "needs at least one regularizer (use 'none')")
        splits = s.get("splits")
        if splits is not None:
            for key, value in splits.items():
                if key not in ("val", "test") or not (
                        isinstance(value, str) or (value is None and key == "val")):
                    fail(base + ["splits", key], "splits maps 'val' / 'test' to a split name of "
                                                 "the dataset ('val' may be null: none)")
        if s.get("select") not in (None, "val"):
            fail(base + ["select"], "select must be 'val': report, per row and column, the grid "
                                    "point with the best mean validation accuracy")
        analysis = s.get("analysis")
        if analysis is not None:
            analysis = _check_analysis(analysis, base + ["analysis"], fail, teacher)
        reference = s.get("reference")
        if reference is not None:
            reference = _check_reference(reference, base + ["reference"], fail)
        grid = {}
        for k, v in s.get("grid", {}).items():
            if not isinstance(v, list) or not v:
                fail(base + ["grid", k], "a grid axis is a non-empty list of values")
            try:
                taken = any(_accepts(spec, str(k), p) for spec, p in regs)
            except ValueError as exc:  # an unknown regularizer or plan name
                fail(base + ["regularizers"], str(exc))
            if not taken:
                fail(base + ["grid", k], f"no regularizer of this stage takes {k!r} (the grid "
                                         "spans regularizer parameters only; train settings "
                                         "go in 'train', or one stage per value)")
            grid[str(k)] = tuple(v)
        train = dict(s.get("train", {}))
        from .train import TrainConfig
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        for k in train:
            if k not in fields:
                fail(base + ["train", k], f"unknown train setting {k!r}; TrainConfig fields: "
                                          f"{', '.join(sorted(fields))}")
        if "seed" in train:
            fail(base + ["train", "seed"], "set seeds with the 'seeds' list, not train.seed")
        try:
            TrainConfig(**train)
        except (TypeError, ValueError) as exc:
            fail(base + ["train"], str(exc))
        stage_seeds = _seeds(s["seeds"], base + ["seeds"], fail) if "seeds" in s else seeds
        stages.append(Stage(
            name=str(sname), model=s["model"], model_params=dict(s.get("model_params", {})),
            datasets=datasets, dataset_params=dict(s.get("dataset_params", {})), train=train,
            regularizers=tuple(regs), teacher=teacher, grid=grid, seeds=stage_seeds,
            init=s.get("init"), pretrained=s.get("pretrained"), splits=splits, analysis=analysis,
            source=source, table=s.get("table", str(sname)),
            task=s.get("task"), report=s.get("report"), reference=reference,
            select=s.get("select")))
    return Suite(name=raw["name"], description=raw.get("description", ""), stages=tuple(stages),
                 seeds=seeds, path=filename, raw=raw)


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
    if not an.get("trace_taps"):
        fail(path, "an analysis needs 'trace_taps': the layers to compare")
    if teacher is None:
        fail(path, "the plan-trace analysis compares with the stage's teacher: set 'teacher'")
    return {"trace_taps": [str(t) for t in an["trace_taps"]], "split": an.get("split", "val"),
            "max_examples": int(an.get("max_examples", 3000))}


def _check_reference(ref: dict, path, fail) -> dict:
    """A stage's ``reference``: the paper table (results/reference/) its leaderboard mirrors."""
    from .reference import load_reference, parse_claim

    for key, value in ref.items():
        if key not in _REFERENCE_KEYS:
            fail(path + [key], f"unknown reference key {key!r}; expected one of "
                               f"{', '.join(_REFERENCE_KEYS)}")
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
            fail(path + ["columns", ours], f"{ref['paper']} table {ref['table']} has no column "
                                           f"{theirs!r}; its columns: {', '.join(sorted(known))}")
    rows = set(cells["row"])
    for ours, theirs in ref.get("rows", {}).items():
        if theirs not in rows:
            fail(path + ["rows", ours], f"{ref['paper']} table {ref['table']} has no row "
                                        f"{theirs!r}; its rows: {', '.join(sorted(rows))}")
    for i, claim in enumerate(ref.get("claims", [])):
        try:
            parse_claim(claim)
        except ValueError as exc:
            fail(path + ["claims", i], str(exc))
    return {"paper": ref["paper"], "table": str(ref["table"]),
            "columns": dict(ref.get("columns", {})), "rows": dict(ref.get("rows", {})),
            "claims": list(ref.get("claims", []))}


def _seeds(value, path, fail) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or \
            not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        fail(path, "seeds must be a non-empty list of integers")
    return tuple(value)


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise SuiteError(f"--set expects key=value, got {text!r}")
    return key.strip().split("."), yaml.safe_load(value) if value.strip() else None


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
            elif isinstance(node, list) and part.lstrip("-").isdigit() \
                    and -len(node) <= int(part) < len(node):
                node = node[int(part)]
            else:
                break
            i += 1
        last = ".".join(parts[i:])
        if isinstance(node, list):
            if not (last.lstrip("-").isdigit() and -len(node) <= int(last) < len(node)):
                raise SuiteError(f"--set {text!r}: {last!r} is not an index of the list at "
                                 f"{'.'.join(parts[:i])!r}")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise SuiteError(f"--set {text!r}: cannot set a key inside a non-mapping")
    return raw


# --------------------------------------------------------------------------- expansion


def _accepts(spec: str, key: str, params: Mapping[str, Any] | None = None) -> bool:
    """Whether a term of ``spec`` takes grid key ``key`` (solver keys: with the plan that
    ``params`` sets, else the term's default plan)."""
    from .regularizers import get_regularizer

    head, dot, rest = key.partition(".")
    names = [n.strip() for n in spec.split("+")]
    infos = [get_regularizer(n) for n in names]
    if dot:
        return any(head == i.name or head in i.aliases for i in infos)
    params = params or {}
    return any(key in i.accepted(params.get(f"{i.name}.plan", params.get("plan")))
               for i in infos)


def _merge_params(params: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` updated with a grid ``point``; a grid key replaces the same parameter however
    it is written (``kd.tau`` replaces ``tau`` and the reverse)."""
    out = dict(params)
    for k, v in point.items():
        _, dot, rest = k.partition(".")
        for other in list(out):
            _, odot, orest = other.partition(".")
            if other == k or (dot and not odot and other == rest) or \
                    (not dot and odot and orest == k):
                del out[other]
        out[k] = v
    return out


def expand(suite: Suite) -> list[Job]:
    """Every job of ``suite``, stage by stage (in order), then dataset, spec, grid point, seed.

    A student's config holds its teacher job's key (same dataset and seed; the teacher stage's
    only dataset when it has one), so retraining a teacher differently changes the students'
    keys too.
    """
    from .train import TrainConfig

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
                    reg_params = _merge_params(params, dict(zip(axes, values)))
                    for seed in stage.seeds:
                        train = TrainConfig(**{**stage.train, "seed": int(seed)}).to_dict()
                        cfg = {
                            "suite": suite.name, "stage": stage.name, "model": stage.model,
                            "model_params": dict(stage.model_params), "dataset": dataset,
                            "dataset_params": dict(stage.dataset_params), "train": train,
                            "regularizer": spec, "regularizer_params": reg_params,
                            "seed": int(seed), "teacher": None,
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
                            cfg["teacher"] = _teacher_key(by_stage[stage.teacher], dataset,
                                                          int(seed), stage, suite)
                        if stage.init == PRETRAINED:
                            cfg["init"] = PRETRAINED
                        elif stage.init is not None:  # keys of plain stages stay as they were
                            cfg["init"] = _teacher_key(by_stage[stage.init], dataset, int(seed),
                                                       stage, suite, "init")
                        if stage.source is not None:
                            cfg["source"] = dict(stage.source)
                        cfg = json.loads(canonical_json(cfg))
                        label = (row or spec) + (" (" + ", ".join(
                            f"{k}={canonical_json(v)}" for k, v in zip(axes, values)) + ")"
                            if axes else "")
                        out.append(Job(suite.name, stage.name, config_key(cfg), cfg, label,
                                       table=stage.table or stage.name,
                                       task=(stage.task or "{dataset}").replace(
                                           "{dataset}", dataset), report=report,
                                       reference=stage.reference, row=row or spec,
                                       select=stage.select))
        by_stage[stage.name] = out
        jobs.extend(out)
    return jobs


def _teacher_key(teachers: list[Job], dataset: str, seed: int, stage: Stage, suite: Suite,
                 ref: str = "teacher") -> str:
    cands = [j for j in teachers if j.dataset == dataset and j.seed == seed]
    if not cands and len({j.dataset for j in teachers}) == 1:
        cands = [j for j in teachers if j.seed == seed]
    if not cands:
        raise SuiteError(f"{suite.path}: stage {stage.name!r} needs a {getattr(stage, ref)!r} "
                         f"job for dataset {dataset!r} and seed {seed}; there is none")
    if len(cands) > 1:
        raise SuiteError(f"{suite.path}: stage {stage.name!r}: several {getattr(stage, ref)!r} "
                         f"jobs for dataset {dataset!r} and seed {seed}; a {ref} stage needs "
                         "one regularizer and no grid")
    return cands[0].key
