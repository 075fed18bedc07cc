"""The claims register (``claims/<paper>.yaml``): every claim the three papers make, frozen
before the confirmatory run, and its checks against the papers' numbers and the suites.

A register file lists, per paper table (a *family*: the claims tested together, Holm within
it), the *premises* (preconditions from the paper's logic, checked first, never repeated as
claims) and the *claims*; each entry holds the comparison in the suites' claim grammar
(:func:`harness.experiments.reference.parse_claim`: ``"ROW > ROW"``), the paper's sentence, the
columns it is made on and the paper's own count, the minimum effect of interest and the
equivalence margin (accuracy points), and where it is tested (``cpu_twin`` / ``full_scale``
suites, or ``not_run`` with the reason). ``docs/claims.md`` tells how to add one.

:func:`load_register` reads and validates the files (one line per error, naming the file and
the entry's id); :func:`check_register` checks them against ``results/reference/`` (the counts
and minimum effects follow the file's rule) and the suites (every row named exists);
:func:`compare_with_suites` lists the suites' premises and claims that are not registered, and
the registered ones a suite does not write; :func:`claims_not_run` lists, per paper, the claims no
suite runs (for the verdict page).
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterable, Mapping, Sequence

from harness.experiments.register_model import (
    MARGIN,
    MIN_EFFECT_DEFAULT,
    MIN_EFFECT_FLOOR,
    REGISTER_DIR,
    Entry,
    Family,
    Location,
    Register,
    RegisterError,
    canonical,
    entries,
    load_register,
    load_registers,
)

__all__ = [
    "REGISTER_DIR",
    "RegisterError",
    "Register",
    "Family",
    "Entry",
    "Location",
    "load_register",
    "load_registers",
    "check_register",
    "compare_with_suites",
    "SuiteComparison",
    "claims_not_run",
    "NotRun",
    "written",
    "entries",
    "canonical",
    "paper_evidence",
    "Evidence",
]


# --------------------------------------------------------------------------- paper's numbers


@dataclass(frozen=True)
class Evidence:
    """What the paper's printed means say about an entry: per column, the difference
    ``left - right`` in accuracy points (None: a number is not printed), the count of columns
    that agree with the entry's test, and the minimum effect the register's rule gives."""

    diffs: Mapping[str, Decimal | None]
    count: str | None
    min_effect: Decimal


def _paper_rows(reg, fam, names: Sequence[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    from harness.experiments.reference import load_reference

    known = set(load_reference(reg.paper, fam.table)["row"])
    rows = {n: fam.paper_rows.get(n, n) for n in names if n in fam.paper_rows or n in known}
    return rows, [(n, n) for n in names]  # a name that is no paper row is matched as a spec


def paper_evidence(reg, fam, e) -> Evidence:
    """The paper's own evidence for entry ``e`` of family ``fam`` (results/reference/)."""
    from harness.experiments.reference import Reference, load_reference, paper_numbers, parse_claim

    c = parse_claim(canonical(e.comparison))
    cols = list(e.columns or fam.columns)
    rows, ours = _paper_rows(reg, fam, [c.left, c.right])
    ref = Reference(reg.paper, fam.table, {col: col for col in cols}, rows)
    values, _ = paper_numbers(ref, ours, cols)
    cells = load_reference(reg.paper, fam.table)
    # paper_numbers turns error rates into accuracies (100 - error); other lower-is-better
    # metrics are negated here, so that A - B > 0 always means A is better
    higher = {
        col: str(h).lower() != "false" or str(m).endswith("_error_pct")
        for col, h, m in zip(
            cells["column"], cells["higher_is_better"], cells["metric"], strict=False
        )
    }
    diffs = {}
    for col in cols:
        a, b = values.at[c.left, col], values.at[c.right, col]
        d = None if a != a or b != b else Decimal(str(round(float(a) - float(b), 6)))
        diffs[col] = d if d is None or higher.get(col, True) else -d
    return Evidence(diffs, _count(e, diffs), _rule(e, diffs))


def _count(e, diffs: Mapping[str, Decimal | None]) -> str | None:
    known = [d for d in diffs.values() if d is not None]
    if not known:
        return None
    test = e.kind_of_test
    agree = sum(
        d > 0
        if test == "superiority"
        else d > -MARGIN
        if test == "non_inferiority"
        else abs(d) < MARGIN
        for d in known
    )
    return f"{agree} of {len(known)}"


def _rule(e, diffs: Mapping[str, Decimal | None]) -> Decimal:
    known = [d for d in diffs.values() if d is not None]
    if e.kind_of_test != "superiority":
        return MARGIN
    if not known:
        return MIN_EFFECT_DEFAULT
    median = Decimal(statistics.median(known)).quantize(Decimal("0.1"), ROUND_HALF_UP)
    return max(MIN_EFFECT_FLOOR, median)


def _check_numbers(reg, fam, e) -> list[str]:
    """The entry against the paper's numbers and the register's rule."""
    out = []
    bad = [c for c in (e.columns or []) if c not in fam.columns]
    if bad:
        return [
            f"{e.id}: columns: {bad[0]!r} is not a column of family {fam.id} "
            f"({reg.paper} table {fam.table}); its columns: {', '.join(fam.columns)}"
        ]
    ev = paper_evidence(reg, fam, e)
    if ev.count is not None and e.paper_count != ev.count:
        out.append(
            f"{e.id}: paper_count: {e.paper_count!r}, but the paper's means "
            f"(results/reference/) give {ev.count!r}"
        )
    if Decimal(str(e.min_effect)) != ev.min_effect and not e.min_effect_reason:
        out.append(
            f"{e.id}: min_effect: {e.min_effect}, but the register's rule gives "
            f"{ev.min_effect}; use it or say why in 'min_effect_reason'"
        )
    if Decimal(str(e.margin)) != MARGIN and not e.min_effect_reason:
        out.append(
            f"{e.id}: margin: {e.margin}, but the register's rule gives {MARGIN}; "
            f"use it or say why in 'min_effect_reason'"
        )
    return out


# --------------------------------------------------------------------------- suites


@dataclass(frozen=True)
class _Table:
    """A suite's leaderboard table: its rows (row -> spec) and its reference blocks."""

    rows: Mapping[str, str]
    refs: tuple[Mapping[str, Any], ...]


@functools.lru_cache(maxsize=64)
def _suite_tables(name: str) -> Mapping[str, _Table]:
    """The leaderboard tables of suite ``name`` as the reports build them: the reported jobs'
    ``table``, ``row`` and ``regularizer``, and their stage's ``reference`` block."""
    from harness.experiments.suite import expand, load_suite

    rows: dict[str, dict[str, str]] = {}
    refs: dict[str, list[Mapping[str, Any]]] = {}
    for job in expand(load_suite(name)):
        if not job.report:
            continue
        rows.setdefault(job.table, {})[job.row] = job.regularizer
        if job.reference and job.reference not in refs.setdefault(job.table, []):
            refs[job.table].append(job.reference)
    return {t: _Table(rows[t], tuple(refs.get(t, ()))) for t in rows}


def _has_row(table: _Table, name: str) -> bool:
    """As the verdicts find a row: by its name, or by its spec when one row has it."""
    return name in table.rows or sum(s == name for s in table.rows.values()) == 1


def _tables_for(name: str, reg, fam, loc) -> dict[str, _Table]:
    tables = _suite_tables(name)
    if loc.table is not None:
        return {loc.table: tables[loc.table]} if loc.table in tables else {}
    ref = {
        t: v
        for t, v in tables.items()
        if any(r.get("paper") == reg.paper and str(r.get("table")) == fam.table for r in v.refs)
    }
    return ref or dict(tables)


def _check_location(reg, fam, e, loc, suites: set[str]) -> list[str]:
    from harness.experiments.reference import parse_claim

    if loc.suite not in suites:
        return [f"{e.id}: no suite {loc.suite!r} in suites/"]
    try:
        tables = _tables_for(loc.suite, reg, fam, loc)
    except ValueError as exc:  # a suite that does not load (SuiteError)
        return [f"{e.id}: suite {loc.suite!r} does not load: {exc}"]
    if not tables:
        return [f"{e.id}: suite {loc.suite!r} has no leaderboard table {loc.table!r}"]
    c = parse_claim(loc.as_ or e.comparison)
    if any(_has_row(t, c.left) and _has_row(t, c.right) for t in tables.values()):
        return []
    missing = [n for n in (c.left, c.right) if not any(_has_row(t, n) for t in tables.values())]
    rows = sorted({r for t in tables.values() for r in t.rows})
    what = f"no row {missing[0]!r}" if missing else f"no table with both {c.left!r} and {c.right!r}"
    return [
        f"{e.id}: suite {loc.suite!r} has {what} in its leaderboard table(s) "
        f"{', '.join(map(repr, tables))}; its rows: {', '.join(rows)}"
    ]


def _check_family(reg, fam, suites: set[str] | None) -> list[str]:
    from harness.experiments.reference import load_reference

    try:
        known = set(load_reference(reg.paper, fam.table)["column"])
    except (ValueError, FileNotFoundError) as exc:
        return [f"{fam.id}: table: {exc}"]
    bad = [c for c in fam.columns if c not in known]
    if bad:
        return [
            f"{fam.id}: columns: {reg.paper} table {fam.table} has no column {bad[0]!r}; "
            f"its columns: {', '.join(sorted(known))}"
        ]
    out = _check_twice(fam)
    for e in fam.premises + fam.claims:
        out += _check_numbers(reg, fam, e)
        for loc in [] if suites is None else e.cpu_twin + e.full_scale:
            out += _check_location(reg, fam, e, loc, suites)
    return out


def _check_twice(fam) -> list[str]:
    """A comparison once per family and column: never a premise and a claim, nor two claims."""
    out = []
    premises = {f for p in fam.premises for f in p.forms()}
    seen: dict[str, list[tuple[str, set[str]]]] = {}
    for e in fam.claims:
        if e.forms() & premises:
            out.append(
                f"{e.id}: {e.comparison!r} is a premise of {fam.id}: a premise is "
                f"never repeated as a claim"
            )
        cols = set(e.columns or fam.columns)
        for form in sorted(e.forms()):
            for other, theirs in seen.get(form, []):
                if cols & theirs:
                    out.append(
                        f"{e.id}: {form!r} on {sorted(cols & theirs)[0]!r} is "
                        f"registered twice (also {other}); one entry per comparison "
                        f"and column"
                    )
            seen.setdefault(form, []).append((e.id, cols))
    return out


def check_register(regs: Mapping[str, Any] | None = None, suites: bool = True) -> list[str]:
    """Every problem of the registers (default: all of ``claims/``), one line each, naming the
    file and the entry's id: a column or row the paper's table lacks, a count or minimum
    effect off the rule, a premise repeated as a claim, a suite or a row that does not exist.
    ``suites=False`` skips the suites (faster)."""
    from harness.experiments.suite import available_suites

    regs = load_registers() if regs is None else regs
    names = set(available_suites()) if suites else None
    from harness.experiments.confirm_plan import check_block

    return [
        f"{reg.path}: {line}"
        for reg in regs.values()
        for line in [x for fam in reg.families for x in _check_family(reg, fam, names)]
        + check_block(reg, names)
    ]


# --------------------------------------------------------------------------- coverage


@dataclass(frozen=True)
class SuiteComparison:
    """The suites' ``reference:`` blocks against the register.

    ``unregistered``: a premise or claim a suite writes that no entry of its paper table
    registers; ``kind``: one the suite writes as a claim and the register as a premise, or
    the reverse; ``not_written``: an entry's cpu_twin / full_scale suite that does not write it.
    Each a line ``"SUITE: paper P table T: claim 'a > b' ..."``."""

    unregistered: tuple[str, ...]
    kind: tuple[str, ...]
    not_written: tuple[str, ...]


def _index(regs: Mapping[str, Any]) -> dict[tuple[str, str, str], list[tuple[str, Any]]]:
    """``(paper, table, canonical comparison)`` -> ``[(kind, entry), ...]``."""
    out: dict[tuple[str, str, str], list[tuple[str, Any]]] = {}
    for reg in regs.values():
        for fam, kind, e in entries(reg):
            for form in e.forms() if e is not None else ():
                out.setdefault((reg.paper, fam.table, form), []).append((kind, e))
    return out


def written(suite_names: Iterable[str]) -> dict[str, set[tuple[str, str, str, str]]]:
    """Suite -> ``{(paper, table, kind, canonical comparison)}`` its reference blocks write."""
    out = {}
    for name in suite_names:
        got = set()
        for table in _suite_tables(name).values():
            for ref in table.refs:
                for kind, key in (("premise", "premises"), ("claim", "claims")):
                    got |= {
                        (str(ref["paper"]), str(ref["table"]), kind, canonical(t))
                        for t in ref.get(key, ())
                    }
        out[name] = got
    return out


def compare_with_suites(
    regs: Mapping[str, Any] | None = None, suite_names: Iterable[str] | None = None
) -> SuiteComparison:
    """What the suites write against what the register holds (see :class:`SuiteComparison`)."""
    from harness.experiments.suite import available_suites

    regs = load_registers() if regs is None else regs
    done = written(available_suites() if suite_names is None else suite_names)
    index = _index(regs)
    unregistered, kind_off = [], []
    for name, items in sorted(done.items()):
        for paper, table, kind, form in sorted(items):
            hits = index.get((paper, table, form), [])
            what = f"{name}: {paper} table {table}: {kind} {form!r}"
            if not hits and paper in regs:
                unregistered.append(what + " is in no register entry")
            elif hits and kind not in {k for k, _ in hits}:
                ids = ", ".join(e.id for _, e in hits)
                kind_off.append(f"{what} is registered as a {hits[0][0]} ({ids})")
    return SuiteComparison(tuple(unregistered), tuple(kind_off), tuple(_not_written(regs, done)))


def _not_written(regs, done) -> list[str]:
    out = []
    for reg in regs.values():
        for fam, kind, e in entries(reg):
            for scale, loc in (
                []
                if e is None
                else [("cpu_twin", x) for x in e.cpu_twin]
                + [("full_scale", x) for x in e.full_scale]
            ):
                form = canonical(loc.as_ or e.comparison)
                if loc.suite in done and (reg.paper, fam.table, kind, form) not in done[loc.suite]:
                    out.append(
                        f"{loc.suite}: {reg.paper} table {fam.table}: {kind} "
                        f"{form!r} ({e.id}, {scale}) is not in its reference block"
                    )
    return out


@dataclass(frozen=True)
class NotRun:
    """A registered claim that no suite of the given scale runs, and why."""

    id: str
    family: str
    comparison: str
    reason: str


def claims_not_run(
    regs: Mapping[str, Any] | None = None,
    scale: str = "cpu_twin",
    done: Mapping[str, set] | None = None,
    premises: bool = False,
) -> dict[str, list[NotRun]]:
    """Per paper, the claims (and premises, if asked) that no suite runs, for the verdict page.

    ``scale``: ``"cpu_twin"`` (what runs on a CPU: an entry without a cpu_twin) or ``"any"``
    (an entry in no suite at all). ``done``: suite -> what its reference blocks write
    (:func:`written`); when given, an entry whose suites of that scale do not write it is not
    run either (the suites still carry their own claims)."""
    if scale not in ("cpu_twin", "any"):
        raise ValueError(f"scale {scale!r}: expected 'cpu_twin' or 'any'")
    regs = load_registers() if regs is None else regs
    out: dict[str, list[NotRun]] = {}
    for paper, reg in regs.items():
        rows = out.setdefault(paper, [])
        for fam, kind, e in entries(reg):
            if e is None or (kind == "premise" and not premises):
                continue
            locs = e.cpu_twin + (e.full_scale if scale == "any" else [])
            if done is not None:
                locs = [
                    x
                    for x in locs
                    if (paper, fam.table, kind, canonical(x.as_ or e.comparison))
                    in done.get(x.suite, ())
                ]
                why = (
                    e.not_run
                    or "registered for "
                    + ", ".join(dict.fromkeys(x.suite for x in e.cpu_twin + e.full_scale))
                    + ", not in its claims yet"
                )
            else:
                why = e.not_run or "full scale only"
            if not locs:
                rows.append(NotRun(e.id, fam.id, e.comparison, why))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.experiments.register``: check the register, then list what the
    suites write that it lacks, what it holds that they do not write, and the claims not run.
    Exit status 1 when a register entry is wrong or a suite's claim is not registered."""
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m harness.experiments.register", description=main.__doc__
    )
    ap.add_argument("--directory", default=str(REGISTER_DIR), help="the register's folder")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every line")
    args = ap.parse_args(argv)
    try:
        regs = load_registers(args.directory)
    except RegisterError as exc:
        print(f"error: {exc}")
        return 1
    problems = check_register(regs)
    got = compare_with_suites(regs)
    sections = [
        ("wrong in the register", problems),
        ("written in a suite, not registered", got.unregistered),
        ("a premise in one, a claim in the other", got.kind),
        ("registered for a suite that does not write it", got.not_written),
    ]
    for title, lines in sections:
        print(f"{title}: {len(lines)}")
        for line in lines if args.verbose or title.startswith(("wrong", "written")) else ():
            print(f"  {line}")
    for paper, rows in claims_not_run(regs).items():
        n = sum(1 for _, kind, e in entries(regs[paper]) if kind == "claim")
        print(f"{paper}: {n} claims, {len(rows)} with no CPU twin")
        for x in rows if args.verbose else ():
            print(f"  {x.id} ({x.comparison}): {x.reason}")
    return 1 if problems or got.unregistered else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
