"""Checks of a suite's ``search:`` blocks (``otransfer tune``) against its checked stages: the
stage, regularizer entry and dataset tuned, the space's dimensions (each built as a trial
would build it), pruner, sampler and seeds; each block becomes a
:class:`~harness.experiments.suite_types.Search`."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Mapping, Sequence

from harness.experiments.suite_checks import takers, value_key
from harness.experiments.suite_expand import accepts, merge_params
from harness.experiments.suite_types import (
    DIM_KEYS,
    ROW_KEY,
    SEARCH_KEYS,
    Search,
    Stage,
    resolve_split,
    type_name,
)
from harness.experiments.suite_values import check_regularizer, check_seeds

__all__ = ["check_searches"]


def check_searches(raw: Mapping, stages: Sequence[Stage], fail) -> tuple[Search, ...]:
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
    searches = tuple(
        _check_search(b, p, list(stages), fail) for b, p in zip(blocks, paths, strict=False)
    )
    seen = [(x.stage, x.regularizer, x.row, x.dataset) for x in searches]
    if len(set(seen)) != len(seen):
        fail(["search"], "two search blocks tune the same stage, regularizer and dataset")
    return searches


_DIM_HELP = (
    "a search dimension is {low: L, high: H[, log: true, step: S, type: int]} or {choices: [...]}"
)
#: TrainConfig fields a search does not set: the trials' seed is the search's ``seed``, the
#: device the machine's (``--device``).
_FIXED_TRAIN = ("seed", "device")
_SCALARS = (str, int, float, bool, type(None))


def _check_search(block: Any, path: list, stages: Sequence[Stage], fail) -> Search:
    """Check one ``search:`` block against the suite's stages (see docs/suite-format.md)."""
    stage = _search_stage(block, path, stages, fail)
    idx, rows = _search_entry(block, path, stage, fail)
    spec = stage.regularizers[idx][0]
    params = {k: v for k, v in stage.regularizers[idx][1].items() if k != ROW_KEY}
    dataset = _search_dataset(block, path, stage, fail)
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
    options = _search_options(block, path, fail)
    if "seed" in block and "seeds" in block:
        fail(path + ["seeds"], "give 'seed' or 'seeds', not both")
    seeds = block.get("seeds", [block.get("seed", stage.seeds[0])])  # non-empty, distinct,
    check_seeds(seeds, path + (["seeds"] if "seeds" in block else ["seed"]), fail)  # in [0, 2^31)
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


def _search_stage(block: Any, path: list, stages: Sequence[Stage], fail) -> Stage:
    """The block's keys and their types, then the stage it tunes."""
    if not isinstance(block, dict):
        fail(path, "a search block is a mapping with keys " + ", ".join(SEARCH_KEYS))
    for key, value in block.items():
        if key not in SEARCH_KEYS:
            fail(
                path + [key],
                f"unknown search key {key!r}; expected one of {', '.join(SEARCH_KEYS)}",
            )
        if not isinstance(value, SEARCH_KEYS[key]) or isinstance(value, bool):
            fail(path + [key], f"must be {type_name(SEARCH_KEYS[key])}, got {type(value).__name__}")
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
    return stage


def _search_entry(block: Mapping, path: list, stage: Stage, fail) -> tuple[int, list[str]]:
    """``(index, rows)``: the index of the regularizer entry tuned (by its row name, else by its
    spec) and the rows of the stage's entries."""
    rows = [p.get(ROW_KEY) or spec for spec, p in stage.regularizers]
    want = block.get("regularizer")
    if want is None:
        if len(rows) != 1:
            fail(
                path,
                f"stage {stage.name!r} has {len(rows)} regularizers; name the one to "
                f"tune with 'regularizer' (one of {', '.join(map(repr, rows))})",
            )
        return 0, rows
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
    return cands[0], rows


def _search_dataset(block: Mapping, path: list, stage: Stage, fail) -> str:
    """The dataset searched on: the block's ``dataset``, or the stage's only one."""
    dataset = block.get("dataset")
    if dataset is None:
        if len(stage.datasets) > 1:
            fail(
                path,
                f"stage {stage.name!r} has several datasets; name the one to search on "
                f"with 'dataset' (one of {', '.join(stage.datasets)})",
            )
        return stage.datasets[0]
    if dataset not in stage.datasets:
        fail(
            path + ["dataset"],
            f"stage {stage.name!r} has no dataset {dataset!r} (its "
            f"datasets: {', '.join(stage.datasets)})",
        )
    return dataset


def _search_options(block: Mapping, path: list, fail) -> dict[str, dict]:
    """The block's ``pruner`` and ``sampler`` (``{"name": ..., **kwargs}``), each checked."""
    from harness.experiments.search_options import check_option

    options = {}
    for kind, default in (("pruner", {"name": "median"}), ("sampler", {"name": "tpe"})):
        opt = dict(block.get(kind, default))
        problem = check_option(kind, opt)
        if problem:
            fail(path + [kind], problem)
        options[kind] = opt
    return options


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
    out, values = _dim_shape(dim, path, fail)
    if key.startswith("train."):
        _check_train_dim(key, values, path, stage, fail)
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
    plans = {a: c for a, c in plans.items() if accepts(spec, a, params)}
    for v, combo in itertools.product(values, itertools.product(*plans.values())):
        # the ends of a range, each choice (with each plan): built as a trial will build them
        point = {**dict(zip(plans, combo, strict=False)), key: v}
        where = ", ".join(f"{a} = {y!r}" for a, y in point.items())
        check_regularizer(
            spec,
            merge_params(params, point),
            [],
            lambda _p, msg, where=where: fail(path, f"{where}: {msg}"),
        )
    return out


def _dim_shape(dim: Any, path: list, fail) -> tuple[dict[str, Any], list]:
    """``(normalised dimension, the values to try)``: each choice, or the ends of a range."""
    if not isinstance(dim, dict):
        fail(path, _DIM_HELP)
    for k, v in dim.items():
        if k not in DIM_KEYS:
            fail(path + [k], f"unknown key {k!r}: {_DIM_HELP}")
        if k in ("low", "high", "step") and isinstance(v, str):
            fail(
                path + [k],
                f"must be a number, got the string {v!r} (YAML reads 1e-4 as a "
                "string: write 1.0e-4)",
            )
        if not isinstance(v, DIM_KEYS[k]) or (isinstance(v, bool) and k != "log"):
            fail(path + [k], f"must be {type_name(DIM_KEYS[k])}, got {type(v).__name__}")
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
    return out, values


def _check_train_dim(key: str, values: list, path: list, stage: Stage, fail) -> None:
    """A ``train.<field>`` dimension: a free TrainConfig field, each value one it takes with the
    stage's other train settings."""
    from harness.training.loop import TrainConfig

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
