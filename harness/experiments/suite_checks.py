"""Checks of a suite that look past one key (:mod:`harness.experiments.suite` runs them at load).

Each function returns the problem as one line (or calls the ``fail(path, message)`` it is
given, which raises the suite's one-line error naming file, line and key); none imports the
suite module, so they stay testable on their own. What they refuse, with the reason:

* **names spelt otherwise than registered** (``KD``, ``"kd "``, ``MLP``): the lookups forgive
  case and spaces, but a job's key is the hash of its config *as written* and its leaderboard
  row is the spec as written, so ``KD`` beside ``kd`` would be two keys and two rows of one
  method. A suite spells each name exactly (aliases such as ``ipot`` are names too);
* **blank names** of stages, rows, tables and tasks;
* **two configs pooled into one row**: two regularizer entries (or two stages) of one table
  and column under one row name, a fixed ``task`` shared by several datasets of a stage, or two
  entries of a stage that train the same jobs (equal parameters once defaults are filled in:
  ``tau: 4`` and ``tau: 4.0``; only the row name differs);
* **claims and premises** that do not parse (``kd >> none``) or name no row of their table;
* **parameter values** a term or its solver cannot take (``max_iter: -5``, ``reg: "0.1"``,
  ``cost: Euclidean``), in the entries and in every grid value;
* **suites too large to expand**: the number of jobs is counted (a product of sizes, no job
  built) and refused above :func:`job_limit` (``OTRANSFER_MAX_JOBS``, default 100,000).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
from collections import defaultdict
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = [
    "MAX_JOBS_ENV",
    "MAX_JOBS_DEFAULT",
    "job_limit",
    "count_jobs",
    "job_count_problem",
    "name_problem",
    "spelling_problem",
    "spec_problem",
    "value_key",
    "takers",
    "param_value_problem",
    "same_jobs_problem",
    "check_rows",
    "check_claims",
    "number_hint",
    "meta_model",
    "check_taps",
    "check_known",
]

#: Environment variable raising (or lowering) the number of jobs a suite may expand to.
MAX_JOBS_ENV = "OTRANSFER_MAX_JOBS"
MAX_JOBS_DEFAULT = 100_000

# --------------------------------------------------------------------------- size


def job_limit() -> int:
    """The most jobs a suite may expand to: ``$OTRANSFER_MAX_JOBS`` or 100,000."""
    text = os.environ.get(MAX_JOBS_ENV, "").strip()
    if not text:
        return MAX_JOBS_DEFAULT
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise ValueError(f"{MAX_JOBS_ENV}={text!r} is not a whole number of jobs") from None
    if value < 1:
        raise ValueError(f"{MAX_JOBS_ENV}={text!r}: the job limit must be at least 1")
    return value


def count_jobs(
    stages: Sequence[Any], takes: Callable[[str, str, Mapping], bool]
) -> list[tuple[str, int, int, int, int]]:
    """``(stage, datasets, grid points over all entries, seeds, jobs)`` per stage, counted as
    products of sizes: nothing is expanded, so a 1000 x 1000 grid costs microseconds."""
    out = []
    for st in stages:
        points = 0
        for spec, params in st.regularizers:
            params = {k: v for k, v in params.items() if k != "row"}
            points += math.prod(len(st.grid[k]) for k in st.grid if takes(spec, k, params))
        n = len(st.datasets) * points * len(st.seeds)
        out.append((st.name, len(st.datasets), points, len(st.seeds), n))
    return out


def job_count_problem(
    name: str, counts: Sequence[tuple[str, int, int, int, int]], limit: int
) -> str | None:
    """Why a suite of these stage ``counts`` is too large to expand (None when it is not)."""
    total = sum(c[-1] for c in counts)
    if total <= limit:
        return None
    stage, d, p, s, n = max(counts, key=lambda c: c[-1])
    return (
        f"suite {name!r} expands to {total:,} jobs, more than the limit of {limit:,} (stage "
        f"{stage!r}: {d:,} dataset(s) x {p:,} regularizer grid point(s) x {s:,} seed(s) = "
        f"{n:,}): shrink its grids or seeds, or raise the limit with {MAX_JOBS_ENV}={total}"
    )


# --------------------------------------------------------------------------- names


def name_problem(what: str, name: Any) -> str | None:
    """Why ``name`` cannot name a stage, row, table or task (None when it can)."""
    if not isinstance(name, str):
        return f"{what} must be a string, got {type(name).__name__} {name!r} (quote it: '{name}')"
    if not name.strip():
        return f"{what} is blank ({name!r}): give it a name"
    if name != name.strip():
        return (
            f"{what} {name!r} starts or ends with spaces: write {name.strip()!r} (the "
            "spaces would make a second name of the same thing)"
        )
    return None


def spelling_problem(kind: str, written: str, canonical: str) -> str | None:
    """``written`` resolved to registered ``canonical`` only by forgiving case or spaces."""
    if written == canonical:
        return None
    return (
        f"{kind} {written!r} is spelt {canonical!r} in the registry; did you mean "
        f"{canonical!r}? (a suite spells names exactly: the spelling is part of each job's "
        "key and of its leaderboard row)"
    )


def spec_problem(spec: str) -> str | None:
    """Why regularizer spec ``spec`` is not written canonically: each term a registered name or
    alias exactly, joined by ``+`` without spaces, ``none`` alone. Unknown names are left to
    :func:`~harness.transfer.regularizers.build_regularizer`'s error (close matches)."""
    from harness.transfer.regularizers import all_regularizers

    names = {n: n for n in all_regularizers()}
    names.update({a: a for info in all_regularizers().values() for a in info.aliases})
    folded = {k.lower(): v for k, v in names.items()}
    parts = spec.split("+")
    fixed = [folded.get(p.strip().lower(), p.strip()) for p in parts]
    if len(parts) > 1 and "none" in fixed:
        rest = "+".join(p for p in fixed if p != "none") or "none"
        return (
            f"regularizer {spec!r}: 'none' in a sum adds nothing (and makes a second key "
            f"for the same jobs); write {rest!r}"
        )
    want = "+".join(fixed)
    if want != spec and all(p.strip().lower() in folded for p in parts):
        return spelling_problem("regularizer", spec, want)
    return None


# --------------------------------------------------------------------------- values


def value_key(v: Any) -> Any:
    """``v`` normalised for equality: numbers by value (``4`` = ``4.0``, ``1.0e-3`` = ``0.001``),
    lists as tuples; two grid values or parameters with equal keys train the same job."""
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, (int, float)):
        return ("num", float(v))
    if isinstance(v, (list, tuple)):
        return ("seq", tuple(value_key(x) for x in v))
    if isinstance(v, Mapping):
        return ("map", tuple(sorted((str(k), value_key(x)) for k, x in v.items())))
    return ("other", repr(v))


def number_hint(v: Any) -> str:
    """The YAML pitfall behind a string where a number was meant (``1e-3`` is a string)."""
    if isinstance(v, str):
        try:
            float(v)
        except ValueError:
            return ""
        return (
            f" (YAML reads {v!r} as a string: write a number with a dot and a signed "
            "exponent, e.g. 1.0e-3)"
        )
    return ""


#: Solver parameters by name: (kind, low, low allowed, high, high allowed); None: no bound.
_SOLVER_BOUNDS: dict[str, tuple] = {
    "max_iter": ("int", 1, True, None, True),
    "check_every": ("int", 1, True, None, True),
    "num_threads": ("int", 1, True, None, True),
    "reg": ("num", 0.0, False, None, True),
    "beta": ("num", 0.0, False, None, True),
    "gap": ("num", 0.0, True, None, True),
    "tol": ("num", 0.0, True, None, True),
    "scaling": ("num", 0.0, False, 1.0, False),
}


def _bound_problem(name: str, v: Any, kind: str, low, low_ok, high, high_ok) -> str | None:
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float))
        or (kind == "int" and not isinstance(v, int))
    ):
        what = "an integer" if kind == "int" else "a number"
        return f"{name} must be {what}; got {v!r}{number_hint(v)}"
    if not math.isfinite(v):
        return f"{name} must be finite; got {v!r}"
    if low is not None and (v < low or (v == low and not low_ok)):
        return f"{name} must be {'>=' if low_ok else '>'} {low:g}; got {v!r}"
    if high is not None and (v > high or (v == high and not high_ok)):
        return f"{name} must be {'<=' if high_ok else '<'} {high:g}; got {v!r}"
    return None


def _choices(key: str) -> tuple[str, ...] | None:
    from harness.transfer.regularizers import JTLN_ENTROPIES, KD_SCALES
    from harness.transfer.warm import WARM_CHOICES
    from solvers import COSTS

    if key == "warm_start":  # 'auto', true or false (harness.transfer.warm)
        return WARM_CHOICES
    return {"cost": tuple(COSTS), "scale": KD_SCALES, "entropy": JTLN_ENTROPIES}.get(key)


def param_value_problem(resolved: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The first parameter of a built regularizer (``Regularizer.params``: term -> resolved
    parameters) that its term or its plan's solver cannot take, as ``"term.key must be ..."``.
    Solver parameters are checked by kind and range (``max_iter`` a positive integer, ``reg``
    a positive number, ``scaling`` in (0, 1) ...), any other parameter by the kind of its
    default (a number, an integer, true/false) and, for names, by the registered choices."""
    from harness.transfer.regularizers import get_regularizer
    from solvers import get_method

    for term, params in resolved.items():
        info = get_regularizer(term)
        plan = params.get("plan", info.plan)
        solver = dict(get_method(plan).params) if isinstance(plan, str) else {}
        defaults = info.accepted(plan if isinstance(plan, str) else None)
        for key, v in params.items():
            name = f"{term}.{key}"
            if key in solver and key in _SOLVER_BOUNDS:
                problem = _bound_problem(name, v, *_SOLVER_BOUNDS[key])
            else:
                problem = _kind_problem(name, key, v, defaults.get(key))
            if problem:
                return problem
    return None


def _kind_problem(name: str, key: str, v: Any, default: Any) -> str | None:
    """``v`` of the kind of ``default`` (and one of the choices, for a name)."""
    choices = _choices(key)
    if choices is not None and isinstance(default, str):
        return (
            None
            if v in choices
            else f"{name} must be one of {', '.join(map(str, choices))}; got {v!r}"
        )
    if isinstance(default, bool):
        return None if isinstance(v, bool) else f"{name} must be true or false; got {v!r}"
    if isinstance(default, int):
        return _bound_problem(name, v, "int", 1, True, None, True)
    if isinstance(default, float):
        return _bound_problem(name, v, "num", None, True, None, True)
    return None


def takers(spec: str, key: str, params: Mapping[str, Any] | None = None) -> list[str]:
    """Names of the terms of ``spec`` that take grid (or search) key ``key``: ``term.param``
    or a bare ``param``. Solver keys count with the plan that ``params`` sets for the term,
    else its default plan."""
    from harness.transfer.regularizers import get_regularizer
    from solvers import all_methods

    head, dot, rest = key.partition(".")
    params = params or {}
    out = []
    for info in (get_regularizer(n.strip()) for n in spec.split("+")):
        plan = (
            params.get(f"{info.name}.plan", params.get("plan")) if "plan" in info.params else None
        )
        if dot and (head == info.name or head in info.aliases):
            # a term whose plan is configurable takes any solver's key: the plan may itself
            # be a grid axis (omega_p.plan: [sinkhorn, pot_sinkhorn] with omega_p.reg; each
            # value is then checked with each plan, suite._stage_grid)
            if (
                rest in info.accepted(plan)
                or "plan" in info.params
                and any(rest in m.params for m in all_methods().values())
            ):
                out.append(info.name)
        elif not dot and key in info.accepted(plan):
            out.append(info.name)
    return out


def same_jobs_problem(
    entries: Sequence[tuple[str, Mapping, Mapping[str, Mapping]]], grid: Mapping[str, Sequence]
) -> tuple[int, str] | None:
    """``(index, message)`` of the first regularizer entry of a stage that trains the same
    jobs as an earlier one: the same terms, and for every parameter (defaults filled in) a
    value in common, a grid axis counting as its values. ``entries``: ``(spec, params as
    written, resolved params by term)``."""
    seen: list[tuple[int, str, dict]] = []
    for i, (spec, params, resolved) in enumerate(entries):
        values = {(t, k): {value_key(v)} for t, p in resolved.items() for k, v in p.items()}
        written = {k: v for k, v in params.items() if k != "row"}
        for axis, axis_values in grid.items():
            for t in takers(spec, axis, written):
                values[(t, axis.partition(".")[2] or axis)] = {value_key(v) for v in axis_values}
        for j, other_spec, other in seen:
            if set(other) == set(values) and all(other[k] & values[k] for k in values):
                return i, (
                    f"trains the same jobs as regularizers.{j} ({other_spec!r}: the same "
                    "terms and parameters, defaults filled in; only the row name may "
                    "differ): one job would serve two rows; remove one or change a "
                    "parameter"
                )
        seen.append((i, spec, values))
    return None


# --------------------------------------------------------------------------- rows and claims


def _reported(stages: Sequence[Any]):
    used = {ref for st in stages for ref in (st.teacher, st.init) if ref}
    return [st for st in stages if (st.report if st.report is not None else st.name not in used)]


def check_rows(stages: Sequence[Any], fail) -> None:
    """No two configs pooled into one leaderboard row: per table and column (task), each row
    name comes from one regularizer entry of one stage and one dataset."""
    owner: dict[tuple[str, str, str], tuple[str, int, str]] = {}
    for st in _reported(stages):
        table = st.table or st.name
        for d in st.datasets:
            task = (st.task or "{dataset}").replace("{dataset}", d)
            for i, (spec, params) in enumerate(st.regularizers):
                row = params.get("row") or spec
                first = owner.setdefault((table, task, row), (st.name, i, d))
                if first == (st.name, i, d):
                    continue
                if first[:2] == (st.name, i):
                    fail(
                        ["stages", st.name, "task"],
                        f"task {task!r} is the column of datasets {first[2]!r} and {d!r}: "
                        "their results would be pooled into one cell; put '{dataset}' in "
                        "the task (e.g. 'task: \"{dataset} (100 images)\"')",
                    )
                fail(
                    ["stages", st.name, "regularizers", i],
                    f"row {row!r} of table {table!r}, column {task!r} is also "
                    f"stages.{first[0]}.regularizers.{first[1]}: two configs would be pooled "
                    "into one leaderboard row; give one a distinct 'row: NAME'",
                )


def _table_rows(stages: Sequence[Any], takes, label) -> dict[str, tuple[set, dict]]:
    """Per table: the row names its leaderboard shows (the row, or with ``select`` absent
    each grid point's label; ``None`` in the set when a grid is too large to list) and the
    row names of each spec."""
    out: dict[str, tuple[set, dict]] = defaultdict(lambda: (set(), defaultdict(set)))
    for st in _reported(stages):
        names, specs = out[st.table or st.name]
        for spec, params in st.regularizers:
            written = {k: v for k, v in params.items() if k != "row"}
            base = params.get("row") or spec
            axes = [k for k in st.grid if takes(spec, k, written)]
            shown = {base}
            if st.select != "val" and axes:
                if math.prod(len(st.grid[k]) for k in axes) > MAX_JOBS_DEFAULT:
                    shown = {None, base}  # listing them costs more than the check is worth
                else:
                    shown = {
                        label(base, axes, v) for v in itertools.product(*(st.grid[k] for k in axes))
                    }
            names |= shown
            specs[spec] |= shown - {None}
    return out


def check_claims(stages: Sequence[Any], parse_claim, takes, label, fail) -> None:
    """Each premise and claim of a ``reference`` parses and names rows of its table (a row
    name, or the spec of rows); the ``rows`` and ``columns`` it maps are rows and
    columns of the table; the stages of one table give one reference."""
    tables = _table_rows(stages, takes, label)
    tasks: dict[str, set] = defaultdict(set)
    for st in _reported(stages):
        tasks[st.table or st.name] |= {
            (st.task or "{dataset}").replace("{dataset}", d) for d in st.datasets
        }
    refs: dict[str, tuple[str, Mapping]] = {}
    reported = {st.name for st in _reported(stages)}
    for st in stages:
        if not st.reference:
            continue
        table, base = st.table or st.name, ["stages", st.name, "reference"]
        if st.name not in reported:
            fail(
                base,
                f"stage {st.name!r} is not reported (a teacher or init stage, or "
                "'report: false'): its reference would never be read; put it on a "
                "reported stage of the table, or set 'report: true'",
            )
        first = refs.setdefault(table, (st.name, st.reference))
        if first[1] != st.reference:
            fail(
                base,
                f"table {table!r} has another reference in stage {first[0]!r}: the "
                "report reads one per table; give both stages the same block",
            )
        names, specs = tables.get(table, (set(), {}))
        for key in ("premises", "claims"):
            for i, text in enumerate(st.reference.get(key, ())):
                sides = list(_claim_sides(text, parse_claim, base + [key, i], fail))
                if sides[0] == sides[1]:
                    fail(base + [key, i], f"{key[:-1]} {text!r} compares a row with itself")
                for side in sides:
                    problem = _row_problem(side, names, specs, table)
                    if problem:
                        fail(base + [key, i], f"{key[:-1]} {text!r}: {problem}")
        for ours in st.reference.get("rows", {}):
            problem = _row_problem(ours, names, {}, table)
            if problem:
                fail(base + ["rows", ours], problem)
        for ours in st.reference.get("columns", {}):
            if tasks.get(table) and ours not in tasks[table]:
                fail(
                    base + ["columns", ours],
                    f"{ours!r} is not a column of table {table!r} (its columns: "
                    f"{', '.join(map(repr, sorted(tasks[table])))})",
                )


def _claim_sides(text: str, parse_claim, path, fail) -> Iterable[str]:
    try:
        c = parse_claim(text)
    except ValueError as exc:
        fail(path, str(exc))
    return (c.left, c.right)


def _row_problem(name: str, names: set, specs: Mapping[str, set], table: str) -> str | None:
    if name in names:
        return None
    if None in names and any(n and name.startswith(f"{n} (") for n in names):
        return None  # a grid point's label of a grid too large to list
    if specs.get(name):
        # the spec of one row, or of several grid points' rows: the full-scale suites report
        # every point (no validation split to select on) and their claims stay unmeasured
        # until one is selected; that is said on the verdict page, not refused here
        return None
    listed = ", ".join(sorted(map(repr, (n for n in names if n is not None))))[:400]
    return f"{name!r} is not a row of table {table!r} (its rows: {listed or 'none'})"


# --------------------------------------------------------------------------- models


def meta_model(name: Any, params: Mapping | None, source: bool = False):
    """Model ``name`` built on PyTorch's ``meta`` device (shapes only: no memory, no
    initialisation cost), with a source classifier when ``source``; ``None`` when it cannot be
    built so (the job's own build then says why). Cached by name and parameters."""
    return _meta_model(str(name), json.dumps(params or {}, sort_keys=True, default=list), source)


@functools.lru_cache(maxsize=32)
def _meta_model(name: str, params_json: str, source: bool):
    try:
        import torch

        from harness.zoo.models import build_model, with_source_head

        mp = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(params_json).items()}
        with torch.device("meta"):
            model = build_model(name, 2, **mp)
            if source:
                with_source_head(model, 2)
        return model
    except Exception:  # noqa: BLE001 - best effort: train() checks the names anyway
        return None


def check_taps(
    s: Mapping, teacher: Mapping | None, resolved: Sequence[Mapping], base: list, fail
) -> None:
    """The taps each term reads (and the analysis' ``trace_taps``) name layers of the stage's
    model, and of its teacher's model for terms that read the teacher: checked on the meta
    device now, not when the job starts."""
    from harness.transfer.regularizers import get_regularizer
    from harness.transfer.taps import tap_paths

    def model_of(st):
        return meta_model(st.get("model"), st.get("model_params"))

    student, ref = model_of(s), model_of(teacher) if teacher is not None else None
    for i, terms in enumerate(resolved):
        for term, p in terms.items():
            nets = [student] + ([ref] if get_regularizer(term).needs_teacher else [])
            for net in (n for n in nets if n is not None and p.get("taps")):
                try:
                    tap_paths(net, p["taps"])
                except ValueError as exc:
                    side = "teacher's " if net is ref and net is not student else ""
                    fail(base + ["regularizers", i], f"{term}.taps: {side}{exc}"[:600])
    for net in (student, ref):
        taps = (s.get("analysis") or {}).get("trace_taps") or ()
        if net is not None and taps:
            try:
                tap_paths(net, [str(t) for t in taps])
            except ValueError as exc:
                fail(base + ["analysis", "trace_taps"], str(exc)[:600])


#: Model and dataset parameters (float defaults) that must be > 0, not merely >= 0.
_POSITIVE = ("width", "widen")


def check_known(
    accepted: Mapping[str, Any], given: Any, what: str, path, fail, lowest: int = 1
) -> None:
    """Every key of ``given`` (model or dataset parameters) is one ``accepted`` names, and its
    value of the kind of the default there (an integer >= ``lowest``, a finite number >= 0,
    below 1 for a fraction or a dropout rate, true or false): a typo or a nonsense value fails
    at load, not when the job builds its model or loads its data."""
    if not isinstance(given, dict):
        return  # reported by the type check of the stage's keys
    for key, v in given.items():
        if key not in accepted:
            from solvers.registry import did_you_mean

            hint = did_you_mean(key, accepted)
            fail(
                path + [key],
                f"unknown parameter {key!r} of {what}{hint} (it takes: "
                f"{', '.join(accepted) or 'none'})",
            )
        default, problem = accepted[key], None
        if isinstance(default, bool):
            problem = None if isinstance(v, bool) else f"{key} must be true or false; got {v!r}"
        elif isinstance(default, int):
            problem = _bound_problem(key, v, "int", lowest, True, None, True)
        elif isinstance(default, float):
            below_one = key == "dropout" or key.endswith("fraction")
            problem = _bound_problem(
                key, v, "num", 0.0, key not in _POSITIVE, 1.0 if below_one else None, False
            )
        if problem:
            fail(path + [key], f"{problem} ({what})")
