"""The six verdicts of a suite's premises and claims, per task column:
``verdicts.csv``.

For each premise / claim ``A > B`` of a leaderboard's ``reference`` block and each task column,
the per-seed differences ``d_s = A(s) - B(s)`` go through
:func:`harness.reports.verdict_rules.column_tests` with the register entry's kind of test,
margin and minimum effect (``claims/*.yaml``, :mod:`harness.experiments.register`). The primary
test is the exact sign-flip test when no seed trains on another seed's test examples
(``test_pool: fixed``, or a dataset with its own test split), else the Nadeau-Bengio corrected
t test with the split's sizes (:func:`test_design`). Premises are decided first, unadjusted;
a column whose premise fails has its claims **not tested**. Holm's correction
(:func:`~harness.reports.verdict_rules.holm_family`) runs over every claim x column of one
register family within the suite report (:func:`finish`), then
:func:`~harness.reports.verdict_rules.classify` gives the verdict. ``docs/statistics.md``
states the rules.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from harness.reports import verdict_rules as vr

__all__ = [
    "Design",
    "COLUMNS",
    "WEIGHT_AXES",
    "test_design",
    "designs",
    "lower_edges",
    "match_entry",
    "table_rows",
    "finish",
    "verdicts_frame",
    "load_index",
]

#: Grid axes that weigh a regularization term (the last dotted part of the axis name): a
#: choice at the smallest value of such an axis switches the term (nearly) off.
WEIGHT_AXES = ("alpha", "lambda", "weight", "beta")
#: The margin and minimum effect of a claim that the register does not hold.
UNREGISTERED_MARGIN = 0.5

COLUMNS = [
    "paper",
    "paper_table",
    "table",
    "kind",
    "claim",
    "task",
    "family",
    "entry_id",
    "test_kind",
    "margin",
    "min_effect",
    "n",
    "mean_diff",
    "method",
    "ci_low",
    "ci_high",
    "p",
    "p_holds",
    "p_reversed",
    "p_equivalent",
    "p_adj",
    "p_equiv_adj",
    "zeros",
    "mde",
    "verdict",
    "reason",
    "paper_holds",
    "paper_diff",
    "at_lower_edge",
    "test_note",
    "dropped_seeds",
    "diffs",
    "values_a",
    "values_b",
]


@dataclass(frozen=True)
class Design:
    """The primary test of one task column: ``split`` ``(n_train, n_test)`` for the
    Nadeau-Bengio test (seeds re-draw their split from one pool), None for the sign-flip
    test; ``method`` its name in verdicts.csv; ``note``: why, one line."""

    split: tuple[int, int] | None
    method: str
    note: str


SIGN_FLIP, NADEAU_BENGIO = "sign-flip", "nadeau-bengio"
_UNKNOWN = Design(
    None,
    SIGN_FLIP,
    "the records carry no dataset config: sign-flip test, "
    "valid only if no seed trains on another's test examples",
)


@functools.lru_cache(maxsize=64)
def _design(config_json: str) -> Design:
    from harness.zoo.data import get_dataset, load_dataset

    cfg = json.loads(config_json)
    name, params = str(cfg.get("dataset")), dict(cfg.get("dataset_params") or {})
    try:
        info = get_dataset(name)
    except (KeyError, ValueError):
        return _UNKNOWN
    if info.needs_root:
        return Design(
            None, SIGN_FLIP, f"{name}: the dataset's own test split, the same for every seed"
        )
    if params.get("test_pool") == "fixed":
        return Design(None, SIGN_FLIP, "test_pool: fixed: one test set that no seed trains on")
    try:
        n_train = len(load_dataset(name, split="train", seed=0, **params))
        n_test = len(load_dataset(name, split="test", seed=0, **params))
    except (ValueError, TypeError, KeyError, OSError):
        return Design(
            None,
            SIGN_FLIP,
            f"{name}: the seeds share a pool (sizes unknown): sign-flip test, anti-conservative",
        )
    return Design(
        (n_train, n_test),
        NADEAU_BENGIO,
        f"{name}: each seed re-draws train {n_train} / test {n_test} from one pool: "
        "Nadeau-Bengio corrected t test (normal differences assumed)",
    )


def test_design(config: Mapping[str, Any] | None) -> Design:
    """The primary test of a column whose jobs have ``config`` (a job's resolved config:
    ``dataset``, ``dataset_params``). Sizes come from loading the dataset at seed 0."""
    if not isinstance(config, Mapping) or "dataset" not in config:
        return _UNKNOWN
    keep = {"dataset": config["dataset"], "dataset_params": config.get("dataset_params") or {}}
    return _design(json.dumps(keep, sort_keys=True, default=str))


def designs(d) -> dict[str, Design]:
    """``{task: Design}`` of one table's records (column ``config`` when present)."""
    out = {}
    for task, g in d.groupby("dataset", sort=False):
        cfg = g["config"].iloc[0] if "config" in g else None
        out[task] = test_design(cfg if isinstance(cfg, Mapping) else None)
    return out


def _lower(position: str, axes: str) -> bool:
    parts = str(position).split(", ")
    return any(
        ax.split(".")[-1] in WEIGHT_AXES and f"{ax}=lower" in parts for ax in str(axes).split()
    )


def lower_edges(choices) -> set[tuple[str, str]]:
    """``{(row, task)}`` selected at the lower edge of a weight axis (:data:`WEIGHT_AXES`) of at
    least ``EDGE_MIN`` values on more than half of the seeds (``selection.select_by_val``'s
    choices)."""
    if choices is None or not len(choices):
        return set()
    out = set()
    for (row, task), g in choices.groupby(["row", "task"], sort=False):
        low = sum(
            bool(e) and _lower(p, a)
            for e, p, a in zip(g["edge"], g["position"], g["edge_axes"].fillna(""), strict=True)
        )
        if 2 * low > len(g):
            out.add((row, task))
    return out


# --------------------------------------------------------------------------- the register


def load_index(regs=None):
    """``(paper, table, canonical comparison) -> [(family, kind, entry)]`` of the register
    (default ``claims/``), and ``(paper, table) -> [family id]``; empty when it cannot be read
    (the claims are then unregistered)."""
    from harness.experiments.register import RegisterError, entries, load_registers

    try:
        regs = load_registers() if regs is None else regs
    except RegisterError:
        return {}, {}
    index, fams = {}, {}
    for reg in regs.values():
        for fam, kind, e in entries(reg):
            if e is None:
                fams.setdefault((reg.paper, fam.table), []).append(fam.id)
                continue
            for form in e.forms():
                index.setdefault((reg.paper, fam.table, form), []).append((fam, kind, e))
    return index, fams


def match_entry(
    index,
    fams,
    paper: str,
    table: str,
    form: str,
    kind: str,
    suite: str,
    board: str,
    column: str | None = None,
):
    """``(family id, entry or None, elsewhere)`` of a suite's premise / claim ``form``
    (canonical) of ``paper`` table ``table``, written in leaderboard ``board`` of ``suite``,
    on the paper's ``column``. Only entries whose location names that suite (and table) in
    that spelling count: of those made on ``column`` (all columns when the entry names none),
    one of the same kind first. ``elsewhere``: the register has the comparison for this suite
    on the paper's other columns only (the column is not decided). A comparison no entry
    locates here is the suite's own (entry None): it joins the table's family, unregistered."""
    from harness.experiments.register import canonical

    def here(e):
        return any(
            loc.suite == suite
            and loc.table in (None, board)
            and canonical(loc.as_ or e.comparison) == form
            for loc in e.cpu_twin + e.full_scale
        )

    mine = [(f, k, e) for f, k, e in index.get((paper, str(table), form), []) if here(e)]
    on = [(f, k, e) for f, k, e in mine if column is None or column in (e.columns or f.columns)]
    for ok in (lambda k: k == kind, lambda k: True):
        got = [(f, e) for f, k, e in on if ok(k)]
        if got:
            return got[0][0].id, got[0][1], False
    if mine:
        return mine[0][0].id, None, True
    ids = fams.get((paper, str(table)), [])
    own = f"{paper}.{table}" if paper else f"{suite}.{board}"  # no paper: the suite's table
    return (ids[0] if ids else own), None, False


# --------------------------------------------------------------------------- one table


def _clean(x) -> dict:
    return {int(k): float(v) for k, v in x.items() if v is not None and v == v}


def _seeds(x: Mapping) -> str:
    return " ".join(f"{s}:{v:.4f}" for s, v in x.items())


def _paper_diff(paper, a: str | None, b: str | None, task) -> float:
    if (
        paper is None
        or a is None
        or b is None
        or task not in getattr(paper, "columns", ())
        or a not in paper.index
        or b not in paper.index
    ):
        return math.nan
    x, y = paper.at[a, task], paper.at[b, task]
    return float(x) - float(y) if x == x and y == y else math.nan


def _entry_fields(entry, op: str) -> dict:
    if entry is None:
        return {
            "entry_id": "",
            "test_kind": "non_inferiority" if op == ">=" else "superiority",
            "margin": UNREGISTERED_MARGIN,
            "min_effect": math.nan,
        }
    return {
        "entry_id": entry.id,
        "test_kind": entry.kind_of_test,
        "margin": entry.margin,
        "min_effect": entry.min_effect,
    }


def _column(base: dict, ours, a, b, task, design: Design, edge: bool) -> dict:
    """One premise / claim on one column: the tests (``_tests``; None without numbers)."""
    row = dict(
        base,
        task=task,
        n=0,
        at_lower_edge=edge,
        test_note=design.note,
        method=design.method,
        dropped_seeds="",
        diffs="",
        values_a="",
        values_b="",
        _tests=None,
    )
    if a is None or b is None:
        return dict(row, _missing=f"no row {base['_left'] if a is None else base['_right']!r}")
    va, vb = _clean(ours.loc[a, task]), _clean(ours.loc[b, task])
    if not va or not vb:
        return dict(row, _missing=f"row {a if not va else b!r} has no result on this column")
    seeds = [s for s in va if s in vb]
    diffs = {s: va[s] - vb[s] for s in seeds}
    split = design.split if len(diffs) >= 2 else None
    t = vr.column_tests(list(diffs.values()), row["test_kind"], row["margin"], split=split)
    return dict(
        row,
        n=t.n,
        _tests=t,
        method=SIGN_FLIP if split is None else design.method,
        dropped_seeds=" ".join(map(str, sorted(set(va) ^ set(vb)))),
        diffs=_seeds(diffs),
        values_a=_seeds({s: va[s] for s in seeds}),
        values_b=_seeds({s: vb[s] for s in seeds}),
    )


def table_rows(
    ref,
    ours,
    paper,
    specs: Mapping[str, str],
    board: str,
    design: Mapping,
    edges: set,
    suite: str = "",
    index=None,
) -> list[dict]:
    """Premises then claims of ``ref`` (a :class:`~harness.experiments.reference.Reference`)
    on every task column of ``ours`` (per-seed accuracies, %: rows x ``(task, seed)``), not yet
    adjusted: premises decided here (unadjusted), claims marked ``_premise_ok``. ``paper``:
    the paper's means laid out like ours; ``design``: ``{task: Design}``; ``edges``:
    :func:`lower_edges`; ``index``: :func:`load_index`."""
    from harness.experiments.reference import parse_claim
    from harness.experiments.register import canonical
    from harness.reports.verdicts import paper_holds as _paper_holds
    from harness.reports.verdicts import row_of as _row

    index, fams = load_index() if index is None else index
    tasks = list(dict.fromkeys(ours.columns.get_level_values(0))) if len(ours.columns) else []
    failed: dict[str, str | None] = {t: None for t in tasks}
    out = []
    for kind, texts in (("premise", ref.premises), ("claim", ref.claims)):
        for text in texts:
            form = canonical(text)
            c = parse_claim(form)
            a, b = _row(ours.index, c.left, specs), _row(ours.index, c.right, specs)
            base = {
                "paper": ref.paper,
                "paper_table": ref.table,
                "table": board,
                "kind": kind,
                "claim": form,
                "_left": c.left,
                "_right": c.right,
            }
            pa, pb = (
                _row(getattr(paper, "index", ()), c.left, specs),
                _row(getattr(paper, "index", ()), c.right, specs),
            )
            for task in tasks:
                fam, entry, elsewhere = match_entry(
                    index,
                    fams,
                    ref.paper,
                    ref.table,
                    form,
                    kind,
                    suite,
                    board,
                    ref.columns.get(task),
                )
                if elsewhere:  # registered for this suite on the paper's other columns only
                    continue
                here = dict(base, family=fam, **_entry_fields(entry, c.op))
                col = _column(
                    here, ours, a, b, task, design.get(task, _UNKNOWN), (a, task) in edges
                )
                col["paper_holds"] = _paper_holds(c, paper, specs, task)
                col["paper_diff"] = _paper_diff(paper, pa, pb, task)
                col["_premise_ok"] = kind == "premise" or failed[task] is None
                if kind == "premise":
                    _decide(col, None, None)
                    if col["verdict"] != vr.HOLDS and failed[task] is None:
                        failed[task] = f"{form}: {col['verdict']}"
                else:
                    col["_failed"] = failed[task]
                out.append(col)
    return out


def _decide(col: dict, p_adj, p_equiv_adj) -> None:
    t = col["_tests"]
    if t is None:
        v = (
            vr.Verdict(vr.NOT_TESTED, f"a premise failed ({col['_failed']})")
            if not col["_premise_ok"]
            else vr.Verdict(vr.INCONCLUSIVE, col["_missing"])
        )
    else:
        v = vr.classify(
            t,
            p_adj,
            p_equiv_adj,
            premise_ok=col["_premise_ok"],
            at_lower_edge=bool(col["at_lower_edge"]),
            min_effect=None if col["min_effect"] != col["min_effect"] else col["min_effect"],
        )
        if v.verdict == vr.NOT_TESTED:
            v = vr.Verdict(vr.NOT_TESTED, f"a premise failed ({col['_failed']})")
        col.update(
            mean_diff=t.test.mean,
            ci_low=t.test.lo,
            ci_high=t.test.hi,
            p=t.p_primary,
            p_holds=t.p_holds,
            p_reversed=t.p_reversed,
            p_equivalent=t.p_equivalent,
            zeros=t.zeros,
            mde=t.mde,
        )
    col.update(
        verdict=v.verdict,
        reason=v.reason,
        p_adj=math.nan if p_adj is None else p_adj,
        p_equiv_adj=math.nan if p_equiv_adj is None else p_equiv_adj,
    )


def finish(rows: Sequence[dict]) -> list[dict]:
    """Holm inside each register family over the suite's claim x column tests (premises,
    columns whose premise failed and columns with fewer than 2 seeds left out), then the
    verdict of every claim column (premises were decided by :func:`table_rows`)."""
    rows = [dict(r) for r in rows]
    tests: dict[str, dict] = {}
    for i, r in enumerate(rows):
        if (
            r["kind"] == "claim"
            and r["_premise_ok"]
            and r["_tests"] is not None
            and r["_tests"].n >= 2
        ):
            tests.setdefault(r["family"], {})[i] = r["_tests"]
    adjusted = {i: p for fam in tests.values() for i, p in vr.holm_family(fam).items()}
    for i, r in enumerate(rows):
        if r["kind"] == "claim":
            _decide(r, *adjusted.get(i, (None, None)))
    return rows


def verdicts_frame(rows: Sequence[dict]):
    """``verdicts.csv`` of :func:`finish`'s rows: :data:`COLUMNS`."""
    import pandas as pd

    return pd.DataFrame([{k: r.get(k, math.nan) for k in COLUMNS} for r in rows], columns=COLUMNS)
