"""The checker's walk through a parsed suite file: the top-level keys, then each stage in the
order a reader meets its keys (structure, references to earlier stages, regularizers, grid,
train settings), then the search blocks. Each problem raises one :class:`SuiteError` naming the
file, the line and the key; the value checks are in :mod:`harness.experiments.suite_values`,
those that look across keys in :mod:`harness.experiments.suite_checks`."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Mapping, Sequence

from harness.experiments.reference import parse_claim
from harness.experiments.suite_checks import (
    check_claims,
    check_rows,
    check_taps,
    name_problem,
    same_jobs_problem,
    spelling_problem,
    takers,
    value_key,
)
from harness.experiments.suite_expand import accepts, job_label, merge_params
from harness.experiments.suite_search import check_searches
from harness.experiments.suite_types import (
    NAME_PATTERN,
    PRETRAINED,
    ROW_KEY,
    SOURCE_KEYS,
    STAGE_KEYS,
    TOP_KEYS,
    Stage,
    Suite,
    type_name,
)
from harness.experiments.suite_values import (
    check_analysis,
    check_model_params,
    check_param_groups,
    check_reference,
    check_regularizer,
    check_seeds,
    check_stage_names,
    dataset_splits,
    own_claims,
)
from harness.experiments.suite_yaml import YamlLines, located_error

__all__ = ["check_suite"]


def check_suite(raw: Any, filename: str, lines: YamlLines) -> Suite:
    """The :class:`Suite` of a parsed suite file, or a :class:`SuiteError` naming the file, the
    line and the key of the first problem: top-level keys, then each stage in order (what it
    names must exist: models, datasets, earlier stages, regularizer terms and parameters,
    splits, train settings), then the search blocks."""

    def fail(path, msg):
        raise located_error(filename, lines, path, msg)

    _check_top(raw, fail)
    seeds = check_seeds(raw.get("seeds", [0]), ["seeds"], fail)
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
    check_claims(stages, parse_claim, accepts, job_label, fail)
    return Suite(
        name=raw["name"],
        description=raw.get("description", ""),
        stages=tuple(stages),
        seeds=seeds,
        path=filename,
        raw=raw,
        searches=check_searches(raw, stages, fail),
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
            fail(path + [key], f"must be {type_name(known[key])}, got {type(value).__name__}")


def _check_top(raw: Any, fail) -> None:
    if not isinstance(raw, dict):
        fail([], "a suite file is a mapping with keys " + ", ".join(TOP_KEYS))
    _check_keys(raw, TOP_KEYS, [], fail, "key ")
    for key in ("name", "stages"):
        if key not in raw:
            fail([], f"missing required key {key!r}")
    name = raw["name"]
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
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
    _check_keys(s, STAGE_KEYS, base, fail, "stage key ")
    for key in ("model", "dataset"):
        if key not in s:
            fail(base, f"stage {sname!r} is missing required key {key!r}")
    datasets = check_stage_names(s, base, fail)
    check_model_params(s.get("model_params", {}), base + ["model_params"], fail)
    _check_stage_refs(s, base, [st.name for st in earlier_stages], fail)
    teacher = s.get("teacher")
    source = _check_source(s.get("source"), base, fail)
    regs, resolved = _stage_regularizers(s, base, fail)
    check_taps(s, _teacher_stage(s, teacher, earlier_stages), resolved, base, fail)
    for key in ("table", "task"):
        problem = name_problem(f"{key}", s[key]) if key in s else None
        if problem:
            fail(base + [key], problem)
    splits = _stage_splits(s, source, base, fail)
    if s.get("select") not in (None, "val"):
        fail(
            base + ["select"],
            "select must be 'val': report, per row and column, the grid "
            "point with the best mean validation accuracy",
        )
    analysis = _stage_analysis(s, datasets, teacher, base, fail)
    reference = s.get("reference")
    if reference is not None:
        reference = check_reference(reference, base + ["reference"], fail)
    reference = own_claims(s, reference, base, fail)
    grid = _stage_grid(s, regs, base, fail)
    dup = same_jobs_problem([(spec, p, resolved[i]) for i, (spec, p) in enumerate(regs)], grid)
    if dup:
        fail(base + ["regularizers", dup[0]], dup[1])
    train = _stage_train(s, base, fail)
    stage_seeds = check_seeds(s["seeds"], base + ["seeds"], fail) if "seeds" in s else seeds
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


def _teacher_stage(s: Mapping, teacher: str | None, earlier_stages: Sequence[Stage]):
    """The model and parameters of the stage's teacher (``s`` itself for pretrained weights;
    ``None`` for no teacher)."""
    if teacher == PRETRAINED:
        return s
    return next(
        (
            {"model": st.model, "model_params": st.model_params}
            for st in earlier_stages
            if st.name == teacher
        ),
        None,
    )


def _stage_splits(s: Mapping, source: Mapping | None, base: list, fail) -> Mapping | None:
    """The stage's ``splits`` (checked), then its source's training split."""
    splits = s.get("splits")
    if splits is not None:
        _check_splits(s, splits, base, fail)
    if source is not None and "split" in source:
        have = dataset_splits(source["dataset"])
        if have is not None and source["split"] not in have:
            fail(
                base + ["source", "split"],
                f"dataset {source['dataset']!r} has no split "
                f"{source['split']!r} (splits: "
                f"{', '.join(have)})",
            )
    return splits


def _stage_analysis(s: Mapping, datasets, teacher, base: list, fail) -> dict | None:
    """The stage's ``analysis`` (checked, with defaults), its split one of every dataset's."""
    analysis = s.get("analysis")
    if analysis is None:
        return None
    analysis = check_analysis(analysis, base + ["analysis"], fail, teacher)
    for d in datasets:
        have = dataset_splits(d) or ()
        if analysis["split"] not in have:
            fail(
                base + ["analysis", "split"],
                f"dataset {d!r} has no split {analysis['split']!r} (splits: {', '.join(have)})",
            )
    return analysis


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
        if key not in SOURCE_KEYS:
            fail(
                base + ["source", key],
                f"unknown source key {key!r}; expected one of {', '.join(SOURCE_KEYS)}",
            )
        if not isinstance(value, SOURCE_KEYS[key]) or isinstance(value, bool):
            fail(base + ["source", key], f"must be {type_name(SOURCE_KEYS[key])}")
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
        check_regularizer(spec, params, base + ["regularizers", i], fail)
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
            have = dataset_splits(name)
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
            next((x for x, key in zip(v, keys, strict=False) if keys.count(key) > 1), None)
            if len(set(keys)) != len(keys)
            else None
        )
        if twice is not None:
            same = " and ".join(
                repr(x) for x, key in zip(v, keys, strict=False) if key == value_key(twice)
            )
            fail(
                base + ["grid", k],
                f"a grid axis lists a value twice ({same} are equal: the "
                f"same job twice, under two keys); remove one: {v!r}"[:400],
            )
        try:
            taking = [(spec, p) for spec, p in regs if accepts(spec, str(k), p)]
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
                and accepts(spec, str(a), p)
            ]
            for x, combo in itertools.product(v, itertools.product(*(s["grid"][a] for a in plans))):
                point = {**dict(zip(map(str, plans), combo, strict=False)), str(k): x}
                where = ", ".join(f"{a} = {y!r}" for a, y in point.items())

                def at(_path, msg, where=where, k=k):
                    fail(base + ["grid", k], f"{where}: {msg}")

                check_regularizer(spec, merge_params(p, point), [], at)
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
        check_param_groups(train["param_groups"], s, base + ["train", "param_groups"], fail)
    try:
        TrainConfig(**train)
    except (TypeError, ValueError) as exc:
        # the line of the setting the message names ("teacher_mode must be ..."), if any
        named = next((k for k in train if str(exc).startswith(str(k))), None)
        fail(base + ["train"] + ([named] if named is not None else []), str(exc))
    return train
