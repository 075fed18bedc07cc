"""The claims register's files (``claims/<paper>.yaml``): their schema (pydantic models),
the register's rule constants, and reading them (:func:`load_register`: one line per error,
naming the file and the entry's id)."""

from __future__ import annotations

import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.experiments.confirm_plan import Confirmatory

__all__ = [
    "REGISTER_DIR",
    "MIN_EFFECT_FLOOR",
    "MIN_EFFECT_DEFAULT",
    "MARGIN",
    "RegisterError",
    "Register",
    "Family",
    "Entry",
    "Location",
    "Observation",
    "Change",
    "load_register",
    "load_registers",
    "entries",
    "canonical",
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
