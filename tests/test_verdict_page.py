"""The six verdicts of a suite's claims (harness/reports/claim_verdicts.py) and the verdict page
(harness/reports/verdict_page.py): a synthetic table where each verdict is known by
construction, Holm checked against the step-down procedure done by hand, and the page's
not-run, exploratory and confirmatory labels."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from harness.reports import claim_verdicts as cv

SEEDS = range(10)
TASKS = ("c1", "c2", "c3", "c4")
# alternating +-1 noise: mean 0 over the 10 seeds, no seed at 0
SIGN = np.array([1.0, -1.0] * 5)


def _ours():
    """Per-seed accuracies (%): rows x (task, seed). ``kd > none`` (the premise) holds on
    c1-c3 and fails on c4 (kd identical to none there)."""
    base = {t: 70.0 + np.arange(10) * 0.3 + i for i, t in enumerate(TASKS)}
    rows = {}
    for t in TASKS:
        b = base[t]
        rows[("none", t)] = b
        rows[("kd", t)] = b + (3.0 + 0.1 * np.arange(10) if t != "c4" else 0.0)
        rows[("big", t)] = b + 5.0 + 0.2 * np.arange(10)  # +5 to +6.8 on every seed
        rows[("same", t)] = b.copy()  # the baseline in disguise
        rows[("small", t)] = b + 0.1 + 2.0 * SIGN * (1 + 0.1 * np.arange(10))  # noise
        rows[("eq", t)] = b + 0.01 * SIGN  # inside +-0.5 on every seed
    names = ["none", "kd", "big", "same", "small", "eq"]
    cols = pd.MultiIndex.from_tuples([(t, s) for t in TASKS for s in SEEDS], names=["task", "seed"])
    return pd.DataFrame(
        [np.concatenate([rows[(r, t)] for t in TASKS]) for r in names], index=names, columns=cols
    )


REF = SimpleNamespace(
    paper="toy",
    table="9",
    columns={t: t for t in TASKS},
    premises=["kd > none"],
    claims=["big > none", "same > none", "small > none", "eq > none"],
)


@pytest.fixture(scope="module")
def frame():
    design = {t: cv.Design(None, cv.SIGN_FLIP, "fixed pool") for t in TASKS}
    rows = cv.table_rows(REF, _ours(), None, {}, "t", design, set(), "toy-suite", index=({}, {}))
    return cv.verdicts_frame(cv.finish(rows))


def _v(frame, claim, task):
    r = frame[(frame["claim"] == claim) & (frame["task"] == task)]
    assert len(r) == 1
    return r.iloc[0]


def test_each_verdict_by_construction(frame):
    for t in TASKS[:3]:
        assert _v(frame, "kd > none", t)["verdict"] == "holds"
        big = _v(frame, "big > none", t)
        assert big["verdict"] == "holds" and big["reason"].startswith("p = ")
        assert big["p"] == pytest.approx(2 / 1024)  # exact sign-flip: every seed positive
        same = _v(frame, "same > none", t)
        assert (same["verdict"], same["reason"]) == (
            "vacuous",
            "identical to the baseline on 10 of 10 seeds",
        )
        small = _v(frame, "small > none", t)
        assert small["verdict"] == "inconclusive" and np.isfinite(small["mde"])
        assert f"MDE {small['mde']:.2g} pt at 80 % power" in small["reason"]
        eq = _v(frame, "eq > none", t)
        assert eq["verdict"] == "equivalent" and "TOST" in eq["reason"]
    assert _v(frame, "kd > none", "c4")["verdict"] == "vacuous"  # the premise fails on c4
    for claim in REF.claims:
        r = _v(frame, claim, "c4")
        assert (r["verdict"], r["reason"]) == (
            "not tested",
            "a premise failed (kd > none: vacuous)",
        )
        assert np.isnan(r["p_adj"])
    assert set(frame["verdict"]) <= {
        "holds",
        "reversed",
        "equivalent",
        "inconclusive",
        "vacuous",
        "not tested",
    }
    big = _v(frame, "big > none", "c1")
    assert big["diffs"].split()[0] == "0:5.0000" and big["method"] == "sign-flip"
    assert big["entry_id"] == "" and big["family"] == "toy.9" and big["margin"] == 0.5


def test_holm_matches_the_step_down_procedure_by_hand(frame):
    """Holm over the 12 claim x column tests where the premise held (c1-c3), premises and c4
    left out: sort, multiply the i-th smallest by (m - i), running maximum, at most 1."""
    fam = frame[(frame["kind"] == "claim") & (frame["task"] != "c4")]
    raw = fam["p"].to_numpy(float)
    m = len(raw)
    assert m == 12
    order = np.argsort(raw, kind="stable")
    adj, run = np.empty(m), 0.0
    for i, j in enumerate(order):
        run = max(run, min(1.0, (m - i) * raw[j]))
        adj[j] = run
    np.testing.assert_allclose(fam["p_adj"].to_numpy(float), adj, rtol=1e-12)
    big = _v(frame, "big > none", "c1")
    # three p = 2/1024 are the smallest: Holm multiplies them by 12, 11, 10 -> max 12/512
    assert big["p_adj"] == pytest.approx(12 * 2 / 1024) and big["p_adj"] != big["p"]
    assert (frame.loc[frame["kind"] == "premise", "p_adj"].isna()).all()


def _suite_dir(root, frame, entry="li2020.T2.omega_p-vs-none"):
    f = frame.copy()
    f.loc[f["claim"] == "big > none", "entry_id"] = entry
    f.loc[f["claim"] == "big > none", "family"] = "li2020.T2"
    root.mkdir(parents=True, exist_ok=True)
    f.to_csv(root / "verdicts.csv", index=False)


def test_the_page_lists_not_run_claims_and_labels_exploratory_then_confirmatory(tmp_path, frame):
    from harness.reports.verdict_page import write_verdicts

    res = tmp_path / "results"
    _suite_dir(res / "toy-suite", frame)
    page = write_verdicts(res, plots=False).read_text()
    assert page.splitlines()[0].endswith("(EXPLORATORY)")
    assert (
        "exploratory: seeds were looked at while the protocol was designed; not a "
        "confirmatory result" in page
    )
    # a register claim no suite runs: its line says so, with the register's reason
    line = next(x for x in page.splitlines() if "`li2020.A-unit19.vs-unit9`" in x)
    assert "not run: The CPU twins' MLPs have no residual units" in line
    line = next(x for x in page.splitlines() if "`li2020.T2.omega_p-vs-none`" in x)
    assert "holds on ≥ 3 of 3" in line and "**holds**" in line and "EXPLORATORY" in line
    assert "toy-suite" in line and "min 1.1" in line
    _suite_dir(res / "confirmatory" / "toy-suite", frame)
    page = write_verdicts(res, plots=False).read_text()
    assert "EXPLORATORY" not in page
    line = next(x for x in page.splitlines() if "`li2020.T2.omega_p-vs-none`" in x)
    assert "(confirmatory)" in line
    assert "(confirmatory/toy-suite/leaderboard.md)" in line  # the confirmatory tables


def test_claim_verdict_rule():
    from harness.reports.verdict_page import claim_verdict

    agg = SimpleNamespace(lo=0.2, hi=1.0)
    assert claim_verdict(1, 0, agg, "superiority", 0.5, ["holds"]) == "holds"
    assert claim_verdict(0, 0, agg, "superiority", 0.5, ["inconclusive"]) == "inconclusive"
    neg = SimpleNamespace(lo=-2.0, hi=-1.0)
    assert claim_verdict(0, 2, neg, "superiority", 0.5, ["reversed"] * 2) == "reversed"
    assert claim_verdict(0, 0, neg, "superiority", 0.5, ["equivalent"] * 2) == "equivalent"
    assert (
        claim_verdict(0, 0, agg, "superiority", 0.5, ["vacuous", "vacuous", "holds"]) == "vacuous"
    )
    assert claim_verdict(0, 0, None, "superiority", 0.5, []) == "not tested"


def test_lower_edge_of_a_weight_axis_on_most_seeds_is_flagged():
    ch = pd.DataFrame(
        {
            "row": ["kd"] * 3 + ["omega_p"] * 3,
            "task": ["a"] * 6,
            "edge": [True, True, False, True, True, True],
            "position": ["alpha=lower, kd.tau=interior"] * 2
            + ["alpha=interior"]
            + ["omega_p.alpha=upper"] * 2
            + ["kd.tau=lower"],
            "edge_axes": ["alpha", "alpha", "", "omega_p.alpha", "omega_p.alpha", "kd.tau"],
        }
    )
    assert cv.lower_edges(ch) == {("kd", "a")}


def test_the_design_follows_the_test_pool():
    fixed = cv.test_design({"dataset": "digits", "dataset_params": {"test_pool": "fixed"}})
    assert fixed.split is None and fixed.method == "sign-flip"
    pooled = cv.test_design({"dataset": "digits", "dataset_params": {}})
    assert pooled.split == (1200, 300) and pooled.method == "nadeau-bengio"
    assert cv.test_design(None).method == "sign-flip"


def test_only_the_registers_locations_feed_an_entry():
    """A suite the register does not name for an entry (mini) keeps its claim as its own;
    an entry made on some columns is not decided on the others."""
    from harness.reports.claim_verdicts import load_index, match_entry

    index, fams = load_index()
    args = ("li2020", "2", "omega_p > kd", "claim")
    fam, entry, elsewhere = match_entry(index, fams, *args, "mini", "compression", "CIFAR-10/L->M")
    assert entry is None and not elsewhere and fam.startswith("li2020.T2")
    _, entry, _ = match_entry(
        index, fams, *args, "li2020_table2-cpu", "compression", "CIFAR-10/L->M"
    )
    assert entry.id == "li2020.T2.omega_p-vs-kd.cifar10"
    _, entry, elsewhere = match_entry(
        index, fams, *args, "li2020_table2-cpu", "compression", "CIFAR-100/L->S"
    )
    assert entry is None and elsewhere  # the register has kd > omega_p there


def test_a_later_round_is_reported_once_it_has_every_suite(tmp_path, frame):
    from harness.reports.verdict_page import reported_round, suite_frames, write_verdicts

    res = tmp_path / "results"
    assert reported_round(res) == ("confirmatory", "")
    for name in ("toy-a", "toy-b"):
        _suite_dir(res / "confirmatory" / name, frame)
    _suite_dir(res / "confirmatory-round2" / "toy-a", frame)
    folder, line = reported_round(res)
    assert folder == "confirmatory"
    assert "round 2 (`confirmatory-round2/`) has reported 1 of 2 suites" in line
    page = write_verdicts(res, plots=False).read_text()
    assert "- **Rounds**: Confirmatory suites: round 1" in page
    assert "(confirmatory/toy-a/leaderboard.md)" in page
    assert "confirmatory-round2/toy-a" not in page  # a round half done is not reported
    _suite_dir(res / "confirmatory-round2" / "toy-b", frame)
    folder, line = reported_round(res)
    assert folder == "confirmatory-round2" and line.startswith("Confirmatory suites: round 2")
    frames = suite_frames(res)
    assert {f["folder"].iloc[0] for _, f in frames.values()} == {
        "confirmatory-round2/toy-a",
        "confirmatory-round2/toy-b",
    }
    page = write_verdicts(res, plots=False).read_text()
    assert "(confirmatory-round2/toy-a/leaderboard.md)" in page
    assert "(confirmatory/toy-a/" not in page
