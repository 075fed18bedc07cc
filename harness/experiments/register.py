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

import datetime
import functools
import statistics
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.experiments.confirm_plan import Confirmatory

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

#: ``claims/`` at the repository root.
REGISTER_DIR = Path(__file__).resolve().parents[2] / "claims"
#: The rule of every register file: superiority claims need at least this effect (points) ...
MIN_EFFECT_FLOOR = Decimal("0.5")
#: ... and a claim whose rows the paper does not print gets this one.
MIN_EFFECT_DEFAULT = Decimal("1.0")
#: The TOST equivalence margin (points) of every entry, and the non-inferiority margin.
MARGIN = Decimal("0.5")
_ID = r"^[A-Za-z0-9_.+-]+$"


class RegisterError(ValueError):
    """A malformed register file; the message names the file and the entry's id."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Location(_Strict):
    """A suite that tests an entry; ``as``: the comparison in that suite's row names (default:
    the entry's ``comparison``); ``table``: the suite's leaderboard table, where several could
    hold the rows."""

    suite: str = Field(min_length=1)
    as_: str | None = Field(default=None, alias="as")
    table: str | None = None

    @field_validator("as_")
    @classmethod
    def _parses(cls, v):
        return _parsed(v)


class Entry(_Strict):
    """One premise or claim (see ``docs/claims.md`` for the fields)."""

    id: str = Field(pattern=_ID)
    comparison: str
    test: Literal["superiority", "non_inferiority", "equivalence"] | None = None
    where: str = Field(min_length=1)
    quote: str = Field(min_length=1)
    columns: list[str] | None = None
    paper_count: str = Field(min_length=1)
    min_effect: float = Field(gt=0)
    min_effect_reason: str | None = None
    margin: float = Field(gt=0)
    cpu_twin: list[Location] = []
    full_scale: list[Location] = []
    not_run: str | None = None
    note: str | None = None

    @field_validator("cpu_twin", "full_scale", mode="before")
    @classmethod
    def _locations(cls, v):  # SUITE, {suite, as, table}, or a list of them
        items = [] if v is None else v if isinstance(v, list) else [v]
        return [{"suite": x} if isinstance(x, str) else x for x in items]

    @field_validator("comparison")
    @classmethod
    def _parses(cls, v):
        return _parsed(v)

    @model_validator(mode="after")
    def _where_tested(self):
        if not self.cpu_twin and not self.not_run:
            raise ValueError("no cpu_twin: say why in 'not_run'")
        if self.cpu_twin and self.not_run:
            raise ValueError("'not_run' beside a cpu_twin: keep one")
        return self

    @property
    def kind_of_test(self) -> str:
        """``test``, or superiority for ``>`` / non-inferiority for ``>=``."""
        from harness.experiments.reference import parse_claim

        if self.test:
            return self.test
        op = parse_claim(canonical(self.comparison)).op
        return "non_inferiority" if op == ">=" else "superiority"

    def forms(self) -> set[str]:
        """The entry's comparison in every spelling a suite may write it (canonical)."""
        return {
            canonical(t)
            for t in [self.comparison]
            + [loc.as_ for loc in self.cpu_twin + self.full_scale if loc.as_]
        }


class Family(_Strict):
    """The claims tested together (Holm within): one paper table, or one ablation."""

    id: str = Field(pattern=_ID)
    table: str
    where: str
    columns: list[str] = Field(min_length=1)
    paper_rows: dict[str, str] = {}
    note: str | None = None
    premises: list[Entry] = []
    claims: list[Entry] = Field(min_length=1)


class Observation(_Strict):
    """A statement of the paper that compares no two rows (a trend, a ratio, a timing)."""

    id: str = Field(pattern=_ID)
    where: str
    quote: str
    why: str


class Change(_Strict):
    """A change after the freeze date, with its reason."""

    date: datetime.date
    ids: list[str] = Field(min_length=1)
    change: str
    reason: str = Field(min_length=1)


class Register(_Strict):
    """One paper's register file."""

    paper: str
    title: str
    frozen: datetime.date
    status: str
    rules: dict[str, str]
    families: list[Family] = Field(min_length=1)
    observations: list[Observation] = []
    changelog: list[Change] = []
    confirmatory: "Confirmatory | None" = None
    path: str = ""

    @field_validator("rules")
    @classmethod
    def _rules(cls, v):
        missing = [k for k in ("min_effect", "margin") if not v.get(k)]
        if missing:
            raise ValueError(f"the register states its rule for {missing[0]!r} here")
        return v


def _parsed(text: str | None) -> str | None:
    from harness.experiments.reference import parse_claim

    if text is None:
        return None
    c = parse_claim(text)  # ValueError: "expected 'ROW > ROW' (or <, >=, <=)"
    for side in (c.left, c.right):  # "kd >> none", "kd => none": not two rows
        if any(ch in side for ch in "<>") or side.startswith("=") or side.endswith("="):
            raise ValueError(
                f"claim {text!r}: expected 'ROW > ROW' (or <, >=, <=); {side!r} is not a row name"
            )
    return text


def canonical(text: str) -> str:
    """``"a < b"`` -> ``"b > a"``: one spelling per comparison (``>`` or ``>=``)."""
    from harness.experiments.reference import parse_claim

    c = parse_claim(text)
    left, right = (c.left, c.right) if c.op in (">", ">=") else (c.right, c.left)
    return f"{left} {'>=' if '=' in c.op else '>'} {right}"


class _NoDuplicates(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping."""


def _mapping(loader: _NoDuplicates, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_NoDuplicates.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _where_in(raw: Any, loc: Sequence[Any]) -> tuple[str, str]:
    """The id of the innermost entry (or family) on the path ``loc`` of a pydantic error, and
    the field below it (``"min_effect"``, ``"cpu_twin.as"``; ``"(entry)"`` for the entry)."""
    found, below, node = "(file)", list(loc), raw
    for i, part in enumerate(loc):
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(node, dict) and isinstance(node.get("id"), str):
            found, below = node["id"], list(loc[i + 1 :])
    field = ".".join(str(p) for p in below if not isinstance(p, int))
    return found, field or "(entry)"


def load_register(path: str | Path):
    """Read and validate one register file; :class:`RegisterError` (one line) if malformed."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_NoDuplicates)
    except OSError as exc:
        raise RegisterError(f"{path}: cannot read the register: {exc.strerror}") from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise RegisterError(
            f"{path}: not a register file (UTF-8 YAML): {type(exc).__name__}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise RegisterError(
            f"{path}:{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"
        ) from None
    if not isinstance(raw, dict):
        raise RegisterError(f"{path}: a register is a mapping (paper, title, families, ...)")
    try:
        reg = Register.model_validate({**raw, "path": str(path)})
    except ValidationError as exc:
        err = exc.errors()[0]
        ident, field = _where_in(raw, err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise RegisterError(f"{path}: {ident}: {field}: {msg}{more}") from None
    if reg.paper != path.stem:
        raise RegisterError(
            f"{path}: (file): paper: {reg.paper!r}; the register of paper P is claims/P.yaml"
        )
    _unique_ids(reg, {})
    return reg


def _unique_ids(reg, seen: dict[str, str]) -> None:
    """Family, entry and observation ids, unique within and across the files (``seen``: id ->
    the file that has it)."""
    ids = [x.id for fam in reg.families for x in [fam, *fam.premises, *fam.claims]] + [
        o.id for o in reg.observations
    ]
    for ident in ids:
        if ident in seen:
            also = "" if seen[ident] == reg.path else f" (also in {seen[ident]})"
            raise RegisterError(f"{reg.path}: {ident}: id given twice{also}; ids must be unique")
        seen[ident] = reg.path


def load_registers(directory: str | Path = REGISTER_DIR) -> dict[str, Any]:
    """Every ``*.yaml`` of ``directory``: paper -> register; ids unique across the files."""
    files = sorted(Path(directory).glob("*.yaml"))
    if not files:
        raise RegisterError(f"{directory}: no register files (claims/<paper>.yaml)")
    regs = {f.stem: load_register(f) for f in files}
    seen: dict[str, str] = {}
    for reg in regs.values():
        _unique_ids(reg, seen)
    return regs


def entries(reg) -> Iterable[tuple[Any, str, Any]]:
    """``(family, kind, entry)`` of every premise and claim (and ``(family, "family", None)``
    first for each family)."""
    for fam in reg.families:
        yield fam, "family", None
        for e in fam.premises:
            yield fam, "premise", e
        for e in fam.claims:
            yield fam, "claim", e


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
        for col, h, m in zip(cells["column"], cells["higher_is_better"], cells["metric"])
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
