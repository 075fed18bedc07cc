"""Checks of a suite stage's values against the registries and the files they name: its model
and datasets and their parameters, ``train.param_groups`` against the model's parameter names,
``analysis``, ``reference`` and a stage's own claims, seeds, and each regularizer entry built
once (:func:`check_regularizer`). Each takes the ``fail(path, message)`` that raises the suite's
one-line error naming file, line and key."""

from __future__ import annotations

import collections
from typing import Any, Mapping

from harness.experiments.suite_checks import (
    check_known,
    meta_model,
    number_hint,
    param_value_problem,
    spec_problem,
    spelling_problem,
)
from harness.experiments.suite_types import REFERENCE_KEYS, ROW_KEY, type_name

__all__ = [
    "check_stage_names",
    "check_model_params",
    "check_param_groups",
    "check_analysis",
    "check_reference",
    "own_claims",
    "check_seeds",
    "dataset_splits",
    "check_regularizer",
]


def check_stage_names(s: Mapping, base: list, fail) -> tuple[str, ...]:
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


def check_model_params(params: Any, path, fail) -> None:
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


def check_param_groups(groups: Any, stage: Mapping[str, Any], path, fail) -> None:
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


def check_analysis(an: dict, path, fail, teacher) -> dict:
    """``analysis: {trace_taps: [...], split: val, max_examples: 3000}``: after training, the
    trace of the exact OT plan between the trained network's and the teacher's neurons at each
    tap, on that split (li2020 Fig. 2, post hoc)."""
    keys = {"trace_taps": list, "split": str, "max_examples": int}
    for key, value in an.items():
        if key not in keys:
            fail(path + [key], f"unknown analysis key {key!r}; expected one of {', '.join(keys)}")
        if not isinstance(value, keys[key]) or isinstance(value, bool):
            fail(path + [key], f"must be {type_name(keys[key])}")
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


def check_reference(ref: dict, path, fail) -> dict:
    """A stage's ``reference``: the paper table (results/reference/) its leaderboard mirrors."""
    from harness.experiments.reference import load_reference, parse_claim

    for key, value in ref.items():
        if key not in REFERENCE_KEYS:
            fail(
                path + [key],
                f"unknown reference key {key!r}; expected one of {', '.join(REFERENCE_KEYS)}",
            )
        if not isinstance(value, REFERENCE_KEYS[key]):
            fail(path + [key], f"must be {type_name(REFERENCE_KEYS[key])}")
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


def own_claims(s: Mapping, reference, base, fail):
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


def check_seeds(value, path, fail) -> tuple[int, ...]:
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


def dataset_splits(name: Any) -> tuple[str, ...] | None:
    """The splits of registered dataset ``name`` (``None`` when it is not registered: that
    error is reported where the dataset is checked)."""
    from harness.zoo.data import get_dataset

    try:
        return tuple(get_dataset(str(name)).splits)
    except (KeyError, ValueError):
        return None


def check_regularizer(spec: str, params: Mapping[str, Any], path, fail) -> dict:
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
