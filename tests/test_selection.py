"""Selection that cannot leak: leave-one-seed-out, edges, budgets, Dodge."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from harness.reports import selection as sel

ROOT = Path(__file__).resolve().parents[1]


def _frame(val: dict, test: dict | None = None, row="omega_p", task="t"):
    """Records of one ``select: val`` cell: ``val[(alpha, seed)]`` validation accuracies."""
    return pd.DataFrame(
        [
            dict(
                row=row,
                method=f"{row} (alpha={a})",
                regularizer=row,
                dataset=task,
                seed=s,
                select="val",
                val_accuracy=v,
                test_accuracy=(test or {}).get((a, s), 0.5 + s / 100),
            )
            for (a, s), v in val.items()
        ]
    )


# seed 0 loves alpha=1.0 on its own validation split; the other two seeds prefer 0.1
VAL = {
    (0.01, 0): 0.70,
    (0.1, 0): 0.70,
    (1.0, 0): 0.99,
    (0.01, 1): 0.70,
    (0.1, 1): 0.80,
    (1.0, 1): 0.75,
    (0.01, 2): 0.70,
    (0.1, 2): 0.80,
    (1.0, 2): 0.75,
}
TEST = {(a, s): 0.1 * (i + 1) + s / 100 for i, a in enumerate((0.01, 0.1, 1.0)) for s in range(3)}


def test_loso_chooses_each_seed_on_the_other_seeds():
    """By hand: seed 0 on seeds 1, 2 -> 0.1 (0.80 vs 0.75); seed 1 on seeds 0, 2 -> 1.0
    (mean 0.87 vs 0.75); seed 2 on 0, 1 -> 1.0 (0.87 vs 0.75). Pooled: 1.0 (0.83 vs 0.77)."""
    d = _frame(VAL, TEST)
    out, ch = sel.select_by_val(d)  # loso is the default
    assert list(ch["point"]) == [
        "omega_p (alpha=0.1)",
        "omega_p (alpha=1.0)",
        "omega_p (alpha=1.0)",
    ]
    assert list(ch["rule"]) == ["loso"] * 3
    assert ch["val_score"].tolist() == pytest.approx([0.80, (0.99 + 0.75) / 2, 0.87])
    assert sorted(out["test_accuracy"]) == pytest.approx([0.20, 0.31, 0.32])  # each seed's own
    assert set(out["method"]) == {"omega_p"}
    _, pooled = sel.select_by_val(d, "pooled")
    assert set(pooled["point"]) == {"omega_p (alpha=1.0)"}
    assert pooled["val_score"].iloc[0] == pytest.approx((0.99 + 0.75 + 0.75) / 3)


def test_loso_never_reads_the_seeds_own_validation_or_any_test():
    d = _frame(VAL, TEST)
    _, ch = sel.select_by_val(d)
    mine = d.assign(
        val_accuracy=[
            0.0 if s == 0 else v for s, v in zip(d["seed"], d["val_accuracy"], strict=True)
        ]
    )
    assert sel.select_by_val(mine)[1].loc[0, "point"] == ch.loc[0, "point"]  # seed 0: same
    poisoned = d.assign(test_accuracy=float("nan"))
    assert list(sel.select_by_val(poisoned)[1]["point"]) == list(ch["point"])


def test_ties_go_to_the_point_listed_first():
    val = {(a, s): 0.8 for a in (1.0, 0.1, 0.01) for s in range(2)}  # listed 1.0 first
    _, ch = sel.select_by_val(_frame(val))
    assert set(ch["point"]) == {"omega_p (alpha=1.0)"}


def test_one_seed_falls_back_to_pooled_and_says_so():
    _, ch = sel.select_by_val(_frame({(0.1, 0): 0.7, (1.0, 0): 0.9}))
    assert ch["rule"].tolist() == ["pooled (no other seed)"]
    assert ch["point"].tolist() == ["omega_p (alpha=1.0)"]
    assert sel.edge_summary(ch)["fallback"] == 1
    assert "fall back to the pooled rule" in sel.selection_markdown(ch, "loso")


def test_bad_selection_and_no_validation_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown selection 'nested'.*loso, pooled"):
        sel.select_by_val(_frame(VAL), "nested")
    with pytest.raises(ValueError, match="needs validation accuracies"):
        sel.select_by_val(_frame(VAL).assign(val_accuracy=float("nan")))


def test_parse_point_reads_the_labels_the_suite_writes():
    assert sel.parse_point("kd (alpha=0.001, kd.tau=4)", "kd") == {"alpha": 0.001, "kd.tau": 4}
    assert sel.parse_point('omega_p (plan="sinkhorn", reg=[1, 2])', "omega_p") == {
        "plan": "sinkhorn",
        "reg": [1, 2],
    }
    assert sel.parse_point("none", "none") == {}


def test_edges_per_numeric_axis_of_three_values_or_more():
    points = [
        {"alpha": a, "tau": t, "plan": p}
        for a in (0.01, 0.1, 1.0)
        for t in (4, 10)
        for p in ("exact", "sinkhorn")
    ]
    pos = sel.axis_positions(points, {"alpha": 1.0, "tau": 4, "plan": "exact"})
    assert pos == {"alpha": ("upper", 3), "tau": ("lower", 2)}  # a plan has no edge
    assert sel.axis_positions(points, {"alpha": 0.1, "tau": 10, "plan": "x"})["alpha"] == (
        "interior",
        3,
    )
    _, ch = sel.select_by_val(_frame(VAL, TEST))
    assert ch["position"].tolist() == ["alpha=interior", "alpha=upper", "alpha=upper"]
    assert ch["edge"].tolist() == [False, True, True]
    s = sel.edge_summary(ch)
    assert (s["eligible"], s["edge"], s["cells_eligible"], s["cells_edge"]) == (3, 2, 1, 1)
    two = {(a, s): v for (a, s), v in VAL.items() if a != 0.01}  # 2 values: never an edge
    assert not sel.select_by_val(_frame(two))[1]["edge"].any()


def test_budgets_and_the_grid_column():
    d = pd.concat(
        [
            _frame(VAL),
            _frame({(1.0, 0): 0.5, (1.0, 1): 0.6}, row="kd"),
            pd.DataFrame(
                [
                    dict(
                        row="none",
                        method="none",
                        regularizer="none",
                        dataset="t",
                        seed=0,
                        select=None,
                        val_accuracy=0.6,
                        test_accuracy=0.6,
                    )
                ]
            ),
        ]
    )
    b = sel.budgets(d)
    assert b.to_dict() == {("omega_p", "t"): 3, ("kd", "t"): 1, ("none", "t"): 1}
    assert sel.budgets_differ(b) and not sel.budgets_differ(b.drop(("omega_p", "t")))
    table = pd.DataFrame({"t": ["1", "2", "3"]}, index=["none", "omega_p", "kd"])
    assert sel.with_budget(table, b)["grid"].tolist() == ["1", "3", "1"]


def test_dodge_expected_max_by_hand():
    """E[max_n] = Σ_i v_(i) ((i/N)^n − ((i−1)/N)^n): values 1, 2, 4 (N = 3)."""
    v = [4.0, 1.0, 2.0]
    assert sel.expected_max(v, 1) == pytest.approx(7 / 3)  # the mean
    # n = 2: 1·(1/9) + 2·(4/9 − 1/9) + 4·(1 − 4/9) = (1 + 6 + 20) / 9
    assert sel.expected_max(v, 2) == pytest.approx(27 / 9)
    # n = 3: 1·(1/27) + 2·(8/27 − 1/27) + 4·(1 − 8/27) = (1 + 14 + 76) / 27
    assert sel.expected_max(v, 3) == pytest.approx(91 / 27)
    # against enumeration of all 3^2 draws with replacement
    import itertools

    assert sel.expected_max(v, 2) == pytest.approx(
        sum(max(p) for p in itertools.product(v, repeat=2)) / 9
    )
    f = sel.expected_max_frame(_frame(VAL), "tab")
    assert f["n"].tolist() == [1, 2, 3] and set(f["budget"]) == {3}
    means = [70.0, 100 * (0.70 + 0.80 + 0.80) / 3, 100 * (0.99 + 0.75 + 0.75) / 3]
    assert f["expected_max_val"].tolist() == pytest.approx(
        [sel.expected_max(means, n) for n in (1, 2, 3)]
    )
    with pytest.raises(ValueError, match="at least one value"):
        sel.expected_max([], 1)


def test_annotate_marks_the_modal_point_and_edges():
    _, ch = sel.select_by_val(_frame(VAL, TEST, row="kd"))
    table = pd.DataFrame({"t": ["70.0 ± 1.0"]}, index=["kd"])
    assert sel.annotate(table, ch).at["kd", "t"] == "70.0 ± 1.0 · alpha=1.0 (2/3) †"


def test_tables_select_by_val_keeps_the_pooled_rule():
    from harness.reports.tables import select_by_val

    _, choices = select_by_val(_frame(VAL, TEST))
    assert choices == [
        ("omega_p", "t", "omega_p (alpha=1.0)", pytest.approx((0.99 + 0.75 + 0.75) / 3))
    ]


@pytest.mark.parametrize("selection", ["loso", "pooled"])
def test_report_from_a_committed_runs_csv(tmp_path, selection):
    """`otransfer report SUITE --from-csv results/SUITE/runs.csv` still works, and writes every
    seed's choice to selection.csv."""
    from harness.cli import main

    suite = "lu2017_table2-cpu"
    code = main(
        [
            "report",
            suite,
            "--from-csv",
            str(ROOT / "results" / suite / "runs.csv"),
            "--out",
            str(tmp_path),
            "--selection",
            selection,
        ]
    )
    assert code == 0
    ch = pd.read_csv(tmp_path / "selection.csv")
    assert {"suite", "table", "row", "task", "seed", "point", "budget", "position", "edge"} <= set(
        ch.columns
    )
    assert set(ch["rule"]) == {selection}
    md = (tmp_path / "leaderboard.md").read_text()
    assert re.search(r"\|\s+grid\s+\|", md) and "Hyper-parameters chosen" in md
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert "budget" in board and (tmp_path / "verdicts.csv").is_file()
    if ch["budget"].nunique() > 1:  # JTLN 3 points against 1
        assert (tmp_path / "expected_max_val.csv").is_file()
