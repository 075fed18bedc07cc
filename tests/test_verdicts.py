"""Verdicts from paired per-seed differences (harness/reports/verdicts.py, docs/statistics.md):
the rule, premises before claims, unmatched seeds, the interval against scipy.stats.t, and the
reports (leaderboard.csv's per-seed values, VERDICTS.md)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from harness.reports.verdicts import FEW, HOLDS, INCONCLUSIVE, REVERSED, evaluate, paired


def seeds_frame(cells: dict) -> pd.DataFrame:
    """``{(row, task): {seed: accuracy %}}`` -> rows x (task, seed), as leaderboard_seeds."""
    rows = list(dict.fromkeys(r for r, _ in cells))
    cols = sorted(
        {(t, s) for (_, t), v in cells.items() for s in v},
        key=lambda c: (list(dict.fromkeys(t for _, t in cells)).index(c[0]), c[1]),
    )
    out = pd.DataFrame(
        float("nan"), index=rows, columns=pd.MultiIndex.from_tuples(cols, names=["task", "seed"])
    )
    for (r, t), v in cells.items():
        for s, x in v.items():
            out.loc[r, (t, s)] = x
    return out


def test_interval_is_the_t_interval_by_hand():
    from scipy import stats

    a = {0: 81.0, 1: 84.5, 2: 79.0, 3: 83.0}
    b = {0: 80.0, 1: 82.0, 2: 77.5, 3: 81.0}
    d = [a[s] - b[s] for s in a]  # 1.0, 2.5, 1.5, 2.0
    n, mean = len(d), sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    r = paired(a, b)
    assert (r.n, r.level) == (4, 0.95)
    assert r.mean == pytest.approx(mean)
    assert (r.lo, r.hi) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert r.p == pytest.approx(stats.wilcoxon(d).pvalue)
    assert half == pytest.approx(1.0271, abs=1e-4)  # t_{0.975,3} = 3.1824, s_d = 0.6455
    assert r.verdict == HOLDS  # 1.75 ± 1.03: the interval is above 0
    r90 = paired(a, b, level=0.90)
    assert r90.hi - r90.lo < r.hi - r.lo
    assert r.interval() == f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}]"


def test_win_loss_tie_and_few_pairs():
    win = paired({0: 90, 1: 91, 2: 92}, {0: 80, 1: 80.5, 2: 81})
    loss = paired({0: 80, 1: 80.5, 2: 81}, {0: 90, 1: 91, 2: 92})
    tie = paired({0: 80, 1: 82, 2: 81}, {0: 80.5, 1: 81, 2: 82})
    assert (win.verdict, loss.verdict, tie.verdict) == (HOLDS, REVERSED, INCONCLUSIVE)
    assert win.lo > 0 and loss.hi < 0 and tie.lo < 0 < tie.hi
    assert paired({0: 90}, {0: 80}).verdict == FEW == "inconclusive (n < 2)"
    assert paired({}, {}).verdict == FEW
    same = paired({0: 80, 1: 81}, {0: 80, 1: 81})  # every difference 0: no evidence either way
    assert same.verdict == INCONCLUSIVE and same.p == 1.0


def test_unmatched_seeds_are_dropped_and_listed():
    r = paired({0: 90, 1: 91, 2: 92, 5: 10}, {0: 80, 1: 80.5, 2: 81, 3: 99})
    assert r.n == 3 and set(r.diffs) == {0, 1, 2} and r.dropped == (3, 5)
    assert r.verdict == HOLDS  # seeds 3 and 5 (one side each) do not enter the pairs
    assert paired({0: 90, 1: float("nan")}, {0: 80, 1: 70}).dropped == (1,)
    ours = seeds_frame({("kd", "t"): {0: 90, 1: 91, 2: 92}, ("none", "t"): {0: 80, 1: 81, 3: 82}})
    [c] = evaluate(["kd > none"], ours)
    col = c["columns"][0]
    assert col["n"] == 2 and col["dropped"] == (2, 3)


def test_claims_per_column_and_counts_beside_the_paper():
    ours = seeds_frame(
        {
            ("omega_p", "win"): {0: 90, 1: 91, 2: 92},
            ("l2sp", "win"): {0: 80, 1: 80.5, 2: 81},
            ("omega_p", "loss"): {0: 80, 1: 80.5, 2: 81},
            ("l2sp", "loss"): {0: 90, 1: 91, 2: 92},
            ("omega_p", "tie"): {0: 80, 1: 82, 2: 81},
            ("l2sp", "tie"): {0: 80.5, 1: 81, 2: 82},
            ("omega_p", "one"): {0: 80},
            ("l2sp", "one"): {0: 70},
        }
    )
    paper = pd.DataFrame(
        {
            "win": [85.0, 84.0],
            "loss": [85.0, 84.0],
            "tie": [83.0, 84.0],
            "one": [float("nan"), 1.0],
        },
        index=["omega_p", "l2sp"],
    )
    [c] = evaluate(["omega_p > l2sp"], ours, paper, {"omega_p": "omega_p", "l2sp": "l2sp"})
    assert [x["verdict"] for x in c["columns"]] == [HOLDS, REVERSED, INCONCLUSIVE, FEW]
    assert (c["holds"], c["reversed"], c["inconclusive"], c["not_tested"]) == (1, 1, 2, 0)
    assert (c["paper"], c["paper_of"]) == (2, 3)  # "one": the paper has no omega_p number
    assert c["verdict"] == INCONCLUSIVE and c["kind"] == "claim"
    # "<" is the same test with the sides swapped
    [lt] = evaluate(["l2sp < omega_p"], ours)
    assert [x["verdict"] for x in lt["columns"]] == [HOLDS, REVERSED, INCONCLUSIVE, FEW]
    # a row by its spec; a missing row is not measurable, never "does not hold"
    [m] = evaluate(["omega_p > kd"], ours)
    assert m["verdict"] == "not measurable" and m["missing"] == 4


def test_a_failed_premise_leaves_its_columns_claims_not_tested():
    ours = seeds_frame(
        {
            ("kd", "a"): {0: 90, 1: 91, 2: 92},
            ("none", "a"): {0: 80, 1: 80.5, 2: 81},
            ("omega_p", "a"): {0: 95, 1: 96, 2: 97},
            ("kd", "b"): {0: 80, 1: 82, 2: 81},
            ("none", "b"): {0: 80.5, 1: 81, 2: 82},
            ("omega_p", "b"): {0: 95, 1: 96, 2: 97},
        }
    )
    premise, claim = evaluate(["omega_p > kd"], ours, premises=["kd > none"])
    assert premise["kind"] == "premise" and [x["verdict"] for x in premise["columns"]] == [
        HOLDS,
        INCONCLUSIVE,
    ]
    a, b = claim["columns"]
    assert a["verdict"] == HOLDS and a["premise"] is None
    assert b["verdict"].startswith("not tested (premise failed: kd > none, ")
    assert b["premise"].startswith("kd > none, -0.2 [")  # the premise's interval is named
    assert b["mean"] > 0  # measured, but counted neither way
    assert (claim["holds"], claim["reversed"], claim["inconclusive"], claim["not_tested"]) == (
        1,
        0,
        0,
        1,
    )
    assert claim["verdict"] == HOLDS and (claim["ours"], claim["ours_of"]) == (1, 1)
    [_, only] = evaluate(
        ["omega_p > kd"], ours.drop(columns="a", level="task"), premises=["kd > none"]
    )
    assert only["verdict"] == "not tested"


def _records(seeds=(0, 1, 2)):
    rows = []
    for task, gap in (("win", 10.0), ("tie", 0.0)):
        for s in seeds:
            for reg, acc in (("none", 80.0 + s), ("kd", 80.0 + s + gap + 0.5 * (s % 2))):
                rows.append(
                    {
                        "key": f"{task}{reg}{s}",
                        "stage": "students",
                        "table": "t",
                        "task": task,
                        "dataset": "digits",
                        "regularizer": reg,
                        "method": reg,
                        "seed": s,
                        "test_accuracy": acc / 100,
                        "val_accuracy": 0.5,
                        "wall_time": 1.0,
                        "status": "completed",
                        "reference": {
                            "paper": "li2020",
                            "table": "2",
                            "columns": {"win": "CIFAR-10/L->M"},
                            "claims": ["kd > none"],
                        },
                    }
                )
    return pd.DataFrame(rows)


def test_leaderboard_csv_carries_the_per_seed_values_and_verdicts(tmp_path):
    from harness.reports.tables import leaderboard_seeds, split_tables, write_report

    df = _records()
    wide = leaderboard_seeds(split_tables(df)["t"])
    assert list(wide.columns) == [
        ("win", 0),
        ("win", 1),
        ("win", 2),
        ("tie", 0),
        ("tie", 1),
        ("tie", 2),
    ]
    assert wide.loc["kd", ("win", 1)] == pytest.approx(91.5)
    ref = {
        "paper": "li2020",
        "table": "2",
        "columns": {"win": "CIFAR-10/L->M"},
        "premises": ["kd > none"],
        "claims": ["kd > none"],
    }
    paths = write_report(
        "toy", out_dir=tmp_path / "toy", records_df=df, plots=False, references={"t": ref}
    )
    csv = pd.read_csv(paths["csv"]).set_index(["method", "task"])
    for s in (0, 1, 2):  # anyone can redo the test from the CSV
        assert csv.at[("kd", "win"), f"seed_{s}"] == pytest.approx(wide.loc["kd", ("win", s)])
        assert csv.at[("none", "tie"), f"seed_{s}"] == pytest.approx(80.0 + s)
    assert csv.at[("kd", "win"), "paper"] == 94.0  # li2020 Table 2, CIFAR-10/L->M, Omega_KD
    v = pd.read_csv(paths["verdicts"])
    assert list(v["kind"]) == ["premise", "premise", "claim", "claim"]
    # no dataset config in these records: the sign-flip test (3 seeds: p >= 0.25)
    assert list(v["method"]) == ["sign-flip"] * 4 and v["p"][0] == pytest.approx(0.25)
    # 3 seeds cannot reach p <= 0.05: the premise is inconclusive, so no claim is tested
    assert list(v["verdict"]) == ["inconclusive", "vacuous", "not tested", "not tested"]
    assert v["reason"][0].startswith("p = 0.25; MDE inf pt")
    assert v["reason"][1] == "identical to the baseline on 2 of 3 seeds"
    assert v["reason"][2] == "a premise failed (kd > none: inconclusive)"
    assert v["reason"][3] == "a premise failed (kd > none: vacuous)"
    assert v["diffs"][0] == "0:10.0000 1:10.5000 2:10.0000"
    md = paths["md"].read_text()
    # suite "toy" is no location of the register's entry: its premise is its own (unregistered)
    assert (
        "- premise `kd > none` (unregistered, superiority): 0 holds / 0 reversed / "
        "0 equivalent / 1 inconclusive / 1 vacuous / 0 not tested of 2 column(s); paper 1 of 1"
        in md
    )
    assert "Holm" in md and "Wilcoxon" not in md and "t interval" not in md


def test_report_all_writes_verdicts_md_from_committed_csv(tmp_path, monkeypatch):
    """`otransfer report --all` on a results/ with a runs.csv and no runs.sqlite3 (what a clone
    has): VERDICTS.md, the forest plot, and the index linking VERDICTS.md first."""
    import shutil

    from harness.cli import main
    from harness.experiments.suite import SUITES_DIR

    root = tmp_path / "repo"
    (root / "suites").mkdir(parents=True)
    shutil.copy(SUITES_DIR / "lohit2020_table1-cpu.yaml", root / "suites")
    src = SUITES_DIR.parent / "results" / "lohit2020_table1-cpu" / "runs.csv"
    (root / "results" / "lohit2020_table1-cpu").mkdir(parents=True)
    shutil.copy(src, root / "results" / "lohit2020_table1-cpu" / "runs.csv")
    monkeypatch.chdir(root)
    monkeypatch.setattr("harness.experiments.suite.SUITES_DIR", root / "suites")
    assert main(["report", "--all"]) == 0
    verdicts = (root / "results" / "VERDICTS.md").read_text()
    assert "(EXPLORATORY)" in verdicts.splitlines()[0]
    assert "[lohit2020_table1-cpu](lohit2020_table1-cpu/leaderboard.md)" in verdicts
    assert "### lohit2020.T1" in verdicts and "| premise | `kd > none` |" in verdicts
    assert "[verdicts_lohit2020.png](verdicts_lohit2020.png)" in verdicts
    assert (root / "results" / "verdicts_lohit2020.png").stat().st_size > 5000
    assert "does not hold" not in verdicts
    index = (root / "results" / "README.md").read_text()
    assert index.index("VERDICTS.md") < index.index("leaderboard.md")
    page = (root / "results" / "index.html").read_text()  # the HTML index, VERDICTS rendered
    assert '<a href="lohit2020_table1-cpu/index.html"><strong>lohit2020_table1-cpu' in page
    assert '<h2 id="verdicts">Verdicts</h2>' in page and "<code>kd &gt; none</code>" in page
    suite_page = (root / "results" / "lohit2020_table1-cpu" / "index.html").read_text()
    assert "otransfer report lohit2020_table1-cpu --from-csv" in suite_page
    assert '<img src="compression.png"' in suite_page and "<h2>Suite file</h2>" in suite_page
    v = pd.read_csv(root / "results" / "lohit2020_table1-cpu" / "verdicts.csv")
    assert set(v["kind"]) == {"premise", "claim"} and (v["n"] == 10).all()


def test_term_strength_averages_the_logged_ratios_over_epochs_and_seeds():
    import pandas as pd

    from harness.reports.tables import term_strength

    def rec(reg, seed, v, g):
        return {
            "regularizer": reg,
            "dataset": "task A",
            "seed": seed,
            "epochs": [
                {"epoch": 0, f"diag/{reg}/value_ratio": v, f"diag/{reg}/grad_ratio": g},
                {"epoch": 1, f"diag/{reg}/value_ratio": 3 * v, f"diag/{reg}/grad_ratio": 3 * g},
            ],
        }

    df = pd.DataFrame(
        [
            rec("kd", 0, 0.1, 0.01),
            rec("kd", 1, 0.3, 0.03),
            {"regularizer": "none", "dataset": "task A", "seed": 0, "epochs": [{"epoch": 0}]},
        ]
    )
    t = term_strength(df)
    # kd: value (0.1 + 0.3 + 0.3 + 0.9) / 4 = 0.4, gradient 0.04; 'none' logs no term
    assert list(t.index) == [("kd", "kd")]
    assert t.loc[("kd", "kd"), "task A"] == "0.4 · 0.04"
    assert term_strength(df.drop(columns="epochs")) is None
    # the same from a runs.csv's diagnostics column (reports regenerated from committed CSVs)
    from harness.reports.tables import diagnostics_of

    flat = df.assign(diagnostics=[json.dumps(diagnostics_of(r)) for _, r in df.iterrows()])
    t2 = term_strength(flat.drop(columns="epochs"))
    assert t2.loc[("kd", "kd"), "task A"] == "0.4 · 0.04"
