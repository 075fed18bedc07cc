"""The papers' own numbers (``results/reference/*.csv``) beside ours, and their claims checked.

A suite stage points at the table it reproduces::

    reference:
      paper: li2020
      table: "1"
      columns: {"digits 0-4 → 5-9": Aircraft100}   # our task -> the paper's column
      rows: {target only: Finetuning on target}     # optional: our row -> the paper's row
      premises: ["l2sp > none"]                    # optional: checked first, same syntax
      claims: ["omega_p > l2sp", "omega_p > omega_i"]

Rows are matched by the paper row's ``spec`` (the regularizer spec of our row) unless ``rows``
names the paper's row. A claim ``"a > b"`` (rows by our row name or spec) is decided per column
from the paired per-seed differences (:mod:`harness.reports.claim_verdicts`: the sign-flip or
Nadeau-Bengio test, Holm within the register family): one of six verdicts (holds, reversed,
equivalent, inconclusive, vacuous, not tested; docs/statistics.md); in a column where a premise
does not hold, the claims are *not tested*. The paper's count (its means) stands beside ours.
Every premise and claim a suite writes is registered in ``claims/<paper>.yaml`` (the claims
register, :mod:`harness.experiments.register`, frozen before the confirmatory run).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = [
    "REFERENCE_DIR",
    "load_reference",
    "Reference",
    "reference_from_config",
    "paper_numbers",
    "Claim",
    "parse_claim",
]

#: ``results/reference/`` at the repository root.
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "results" / "reference"
_CLAIM = re.compile(r"^\s*(.+?)\s*(>=|<=|>|<)\s*(.+?)\s*$")


@functools.lru_cache(maxsize=4)
def _load(directory: str):
    import pandas as pd

    files = sorted(Path(directory).glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no reference CSVs in {directory}")
    df = pd.concat(
        [pd.read_csv(f, dtype={"table": str, "spec": str, "pm": str, "value": str}) for f in files],
        ignore_index=True,
    )
    df["spec"] = df["spec"].fillna("")
    return df


def load_reference(
    paper: str | None = None, table: str | None = None, directory: str | Path = REFERENCE_DIR
):
    """The reference numbers (one row per cell) of ``paper`` / ``table`` (all when None)."""
    df = _load(str(directory))
    if paper is not None:
        if paper not in set(df["paper"]):
            raise ValueError(
                f"no reference numbers for paper {paper!r}; known: "
                f"{', '.join(sorted(set(df['paper'])))}"
            )
        df = df[df["paper"] == paper]
    if table is not None:
        if str(table) not in set(df["table"]):
            raise ValueError(
                f"{paper or 'the papers'} has no table {table!r} in the reference "
                f"CSVs; known: {', '.join(sorted(set(df['table'])))}"
            )
        df = df[df["table"] == str(table)]
    return df.reset_index(drop=True)


@dataclass(frozen=True)
class Reference:
    """Which paper table a leaderboard reproduces, and how its rows and columns map."""

    paper: str
    table: str
    columns: Mapping[str, str]
    rows: Mapping[str, str]
    claims: tuple[str, ...] = ()
    premises: tuple[str, ...] = ()


def reference_from_config(cfg: Mapping[str, Any] | None) -> Reference | None:
    if not cfg:
        return None
    return Reference(
        paper=str(cfg["paper"]),
        table=str(cfg["table"]),
        columns=dict(cfg.get("columns", {})),
        rows=dict(cfg.get("rows", {})),
        claims=tuple(cfg.get("claims", ())),
        premises=tuple(cfg.get("premises", ())),
    )


def paper_numbers(
    ref: Reference,
    our_rows: Sequence[tuple[str, str]],
    our_columns: Sequence[str],
    directory: str | Path = REFERENCE_DIR,
):
    """The paper's values laid out like our table: rows = our row names, columns = our tasks.

    ``our_rows``: ``(row name, regularizer spec)`` pairs. Returns ``(values, text)``: floats
    (NaN where the paper has no number, or where our row has no counterpart: a spec matching
    several paper rows needs a ``rows`` entry) and the printed cells (``"85.19 ± 0.36"``).
    """
    import numpy as np
    import pandas as pd

    ref_df = load_reference(ref.paper, ref.table, directory)
    out = pd.DataFrame(np.nan, index=[r for r, _ in our_rows], columns=list(our_columns))
    text = pd.DataFrame("-", index=out.index, columns=out.columns, dtype=object)
    for name, spec in our_rows:
        if name in ref.rows and ref.rows[name] is None:
            continue  # `rows: {scratch: null}`: a row of ours the paper does not have
        if name in ref.rows:
            cand = ref_df[ref_df["row"] == ref.rows[name]]
        else:
            cand = ref_df[ref_df["spec"] == spec]
            if cand["row"].nunique() > 1:
                continue  # ambiguous without a rows mapping
        for col in our_columns:
            paper_col = ref.columns.get(col)
            cell = cand[cand["column"] == paper_col]
            if len(cell) == 1:
                printed, pm = str(cell["value"].iloc[0]), cell["pm"].iloc[0]
                value = float(printed)
                metric = str(cell["metric"].iloc[0])
                if metric == "accuracy_frac":  # lu2017 prints fractions
                    value = round(100 * value, 10)
                    printed = f"{value:g}"
                    pm = f"{100 * float(pm):g}" if isinstance(pm, str) and pm else pm
                elif metric.endswith("_error_pct"):  # lohit2020 Table 4 prints error rates
                    value = round(100 - value, 10)  # accuracy = 100 - error, as ours
                    printed = f"{value:g} (error {printed})"
                out.at[name, col] = value
                text.at[name, col] = printed + (f" ± {pm}" if isinstance(pm, str) and pm else "")
    return out, text


@dataclass(frozen=True)
class Claim:
    left: str
    op: str
    right: str

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"

    def test(self, a: float, b: float) -> bool:
        return {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[self.op]


def parse_claim(text: str) -> Claim:
    """``"ROW OP ROW"``: two row names (or specs) and one of ``>``, ``<``, ``>=``, ``<=``; a
    name holds no ``<`` or ``>`` (``"kd >> none"`` is refused, not read as row ``"> none"``)."""
    m = _CLAIM.match(str(text))
    if (
        not m
        or any(c in side for side in (m.group(1), m.group(3)) for c in "<>")
        or not (m.group(1).strip() and m.group(3).strip())
    ):
        raise ValueError(
            f"claim {text!r}: expected 'ROW > ROW' (or <, >=, <=): two row names "
            "and one operator between them, e.g. 'omega_p > kd'"
        )
    return Claim(m.group(1), m.group(2), m.group(3))
