"""The claims a suite's table decides, read from the register (issue 22, item 1).

A suite's ``reference:`` block names the paper table its leaderboard reproduces and how its rows
and columns map; the register (``claims/<paper>.yaml``) says which premises and claims of that
table are tested where. :func:`registered_claims` lists the entries whose ``cpu_twin`` or
``full_scale`` location names the suite (and, when the location gives one, the leaderboard
table), in the suite's spelling (the location's ``as:``), with the tasks they are made on;
:func:`with_register` returns the reference block with those premises and claims in place of
the suite's own list, so the report decides exactly what the register froze.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = ["SuiteClaim", "registered_claims", "with_register", "located_claims"]


@dataclass(frozen=True)
class SuiteClaim:
    """One register entry as a suite table decides it: ``text`` in the suite's row names;
    ``tasks``: the suite's task columns it is made on (None: all of them)."""

    entry_id: str
    family: str
    kind: str
    text: str
    test: str
    margin: float
    min_effect: float
    tasks: tuple[str, ...] | None


def _tasks(entry, reference: Mapping[str, Any]) -> tuple[str, ...] | None:
    if not entry.columns:
        return None
    mapping = dict(reference.get("columns") or {})  # our task -> the paper's column
    return tuple(t for t, col in mapping.items() if col in entry.columns)


def registered_claims(
    suite: str, table: str, reference: Mapping[str, Any], regs: Mapping[str, Any] | None = None
) -> list[SuiteClaim]:
    """The register's premises then claims for leaderboard ``table`` of ``suite`` whose
    ``reference`` block names (paper, paper table); [] when the register has none."""
    from harness.experiments.register import entries, load_registers

    regs = load_registers() if regs is None else regs
    reg = regs.get(str(reference.get("paper")))
    if reg is None:
        return []
    out = []
    for fam, kind, e in entries(reg):
        if e is None or fam.table != str(reference.get("table")):
            continue
        for loc in e.cpu_twin + e.full_scale:
            if loc.suite == suite and loc.table in (None, table):
                out.append(
                    SuiteClaim(
                        e.id,
                        fam.id,
                        kind,
                        loc.as_ or e.comparison,
                        e.kind_of_test,
                        e.margin,
                        e.min_effect,
                        _tasks(e, reference),
                    )
                )
                break
    return sorted(out, key=lambda c: c.kind != "premise")


def with_register(reference: Mapping[str, Any], claims: Sequence[SuiteClaim]) -> dict[str, Any]:
    """``reference`` with the register's premises and claims (unchanged when there are
    none: a suite of one's own, or a table the register does not cover)."""
    if not claims:
        return dict(reference)
    return {
        **reference,
        "premises": list(dict.fromkeys(c.text for c in claims if c.kind == "premise")),
        "claims": list(dict.fromkeys(c.text for c in claims if c.kind == "claim")),
    }


def located_claims(
    suite: str, table: str, regs: Mapping[str, Any] | None = None
) -> dict[tuple[str, str], list[SuiteClaim]]:
    """For a suite table with no ``reference:`` block (an ablation): ``{(paper, paper table):
    [premises then claims]}`` of every entry whose location names ``suite`` and ``table``
    explicitly or by default, in the suite's spelling; on all of its tasks (an ablation's tasks
    are not the paper's columns)."""
    from harness.experiments.register import entries, load_registers

    regs = load_registers() if regs is None else regs
    out: dict[tuple[str, str], list[SuiteClaim]] = {}
    for reg in regs.values():
        for fam, kind, e in entries(reg):
            for loc in (e.cpu_twin + e.full_scale) if e is not None else ():
                if loc.suite == suite and loc.table in (None, table):
                    out.setdefault((reg.paper, fam.table), []).append(
                        SuiteClaim(
                            e.id,
                            fam.id,
                            kind,
                            loc.as_ or e.comparison,
                            e.kind_of_test,
                            e.margin,
                            e.min_effect,
                            None,
                        )
                    )
    return {k: sorted(v, key=lambda c: c.kind != "premise") for k, v in out.items()}
