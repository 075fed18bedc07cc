"""The confirmatory run: the register's ``confirmatory:`` block
(harness.experiments.confirm_plan), ``otransfer confirm`` (harness.experiments.confirm): fresh
seeds only, the fixed test pool, one commit, one-line errors."""

from __future__ import annotations

import copy

import pytest
import yaml
from test_register import GOOD, _write  # noqa: E402 (tests/ is on sys.path under pytest)

from harness.experiments import confirm as C
from harness.experiments import confirm_plan as P
from harness.experiments import register as R

RUN = {
    "suite": "li2020_table4-cpu",
    "seeds": {"first": 1000, "count": 3},
    "set": {"stages.batch_16.grid.alpha": [0.001, 1.0]},
    "why": "w",
}
BLOCK = {
    "decided": "2026-12-05",
    "primary_test": "sign-flip",
    "level": 0.05,
    "correction": "holm",
    "power": "power.md",
    "runs": [RUN],
}


def _with_block(**changes):
    data = copy.deepcopy(GOOD)
    data["confirmatory"] = {**copy.deepcopy(BLOCK), **changes}
    return data


def test_a_block_loads_and_gives_the_run_its_overrides(tmp_path):
    reg = R.load_register(_write(tmp_path, _with_block()))
    run = reg.confirmatory.runs[0]
    assert run.seeds.values() == [1000, 1001, 1002] and run.test_pool == "fixed"
    sets = P.run_overrides(run)
    assert sets == [
        "seeds=[1000, 1001, 1002]",
        "test_pool=fixed",
        "stages.batch_16.grid.alpha=[0.001, 1.0]",
    ]
    # the strings are what `otransfer run --set` reads back (YAML values)
    assert [yaml.safe_load(s.partition("=")[2]) for s in sets][0] == [1000, 1001, 1002]


@pytest.mark.parametrize(
    "change, words",
    [
        ({"runs": [{**RUN, "seeds": {"first": 5, "count": 3}}]}, ["confirmatory", "1000"]),
        ({"runs": [{**RUN, "set": {"seeds": [1]}}]}, ["'seeds'", "own field"]),
        ({"runs": [RUN, RUN]}, ["two runs"]),
        ({"correction": "bonferroni"}, ["correction"]),
        ({"runs": [{**RUN, "test_pool": "resampled"}]}, ["test_pool"]),
    ],
)
def test_a_bad_block_is_one_line(tmp_path, change, words):
    path = _write(tmp_path, _with_block(**change))
    with pytest.raises(R.RegisterError) as info:
        R.load_register(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    for w in words:
        assert w in msg, msg


def test_a_seed_of_the_exploratory_runs_is_refused():
    run = P.ConfirmRun.model_validate({**RUN, "seeds": {"first": 1000, "count": 2}})
    assert P.check_fresh(run, [0, 1, 2]) is None
    msg = P.check_fresh(run, [0, 1001])
    assert "1001" in msg and "exploratory" in msg and "above 1001" in msg


def test_the_shipped_plan_is_fresh_and_loads(tmp_path):
    regs = R.load_registers()
    planned = P.plans(regs)
    assert {
        "li2020_table1-cpu",
        "li2020_table2-cpu",
        "lohit2020_table1-cpu",
        "lu2017_table2-cpu",
    } <= set(planned)
    # redesigned on exploratory seeds, then added with its own changelog entry
    assert planned["li2020_table3-cpu"][2].seeds.count == 40
    for _suite, (_paper, block, run) in planned.items():
        assert run.seeds.first >= P.FIRST_FRESH_SEED and block.correction == "holm"
    reg = regs["lu2017"]
    assert P.check_block(reg, {"lu2017_table2-cpu"}) == []
    assert P.check_block(reg, set())[0].startswith("confirmatory: no suite 'lu2017_table2-cpu'")


def test_a_dirty_checkout_or_another_commit_is_refused(monkeypatch):
    monkeypatch.setattr(
        C, "_git", lambda *a: " M harness/cli.py\n M x.py\n" if a[0] == "status" else "abc\n"
    )
    with pytest.raises(C.ConfirmError, match="uncommitted changes to harness/cli.py and 1 more"):
        C.check_clean()
    monkeypatch.setattr(C, "_git", lambda *a: "" if a[0] == "status" else "f" * 40 + "\n")
    assert C.check_clean() == "f" * 40

    import pandas as pd

    from harness.experiments import records

    monkeypatch.setattr(C, "_has_records", lambda storage, suite: True)
    monkeypatch.setattr(
        records, "records_frame", lambda storage, suite: pd.DataFrame({"git_sha": ["e" * 40]})
    )
    with pytest.raises(C.ConfirmError, match="made at commit eeeeeeeeeeee.*git worktree add"):
        C.check_commit("s", "sqlite:///x", "f" * 40)
    C.check_commit("s", "sqlite:///x", "e" * 40)  # the same commit: resumes


def test_the_cli_lists_the_plan_and_refuses_an_unplanned_suite(capsys):
    from harness.cli import main

    assert main(["confirm", "--list", "lu2017_table2-cpu"]) == 0
    out = capsys.readouterr().out
    assert "lu2017_table2-cpu (lu2017): round 1, 31 seeds 1000..1030" in out
    assert "--results results/confirmatory " in out and "test_pool=fixed" in out
    assert main(["confirm", "--list", "--round", "2", "lu2017_table2-cpu"]) == 0
    out = capsys.readouterr().out
    # where the suite stands is the checkout's (finished once its round-2 results landed)
    assert "round 2, 31 seeds 2000..2030" in out
    assert f"; {C.where('lu2017_table2-cpu', C.round_root(2))}\n" in out
    assert "--results results/confirmatory-round2 " in out
    assert main(["confirm", "mini"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("otransfer confirm: 'mini' has no confirmatory run") and "\n" not in err


def test_run_and_report_arguments(tmp_path):
    run = P.ConfirmRun.model_validate(RUN)
    args = C.run_args("li2020_table4-cpu", run, workers=2, root=tmp_path)
    assert args[:2] == ["run", "li2020_table4-cpu"] and args[-4:] == [
        "--results",
        str(tmp_path),
        "--workers",
        "2",
    ]
    rep = C.report_args("li2020_table4-cpu", run, root=tmp_path)
    assert rep[rep.index("--from-csv") + 1] == str(tmp_path / "li2020_table4-cpu" / "runs.csv")
    (tmp_path / "li2020_table4-cpu").mkdir()
    (tmp_path / "li2020_table4-cpu" / "runs.sqlite3").write_bytes(b"")
    rep = C.report_args("li2020_table4-cpu", run, root=tmp_path)
    assert "--storage" in rep and rep[-2:] == ["--out", str(tmp_path / "li2020_table4-cpu")]


def test_a_suite_table_decides_the_registers_claims_in_its_own_spelling():
    from harness.experiments.register_claims import registered_claims, with_register

    ref = {
        "paper": "li2020",
        "table": "2",
        "claims": ["kd > none"],
        "premises": [],
        "columns": {"digits/L->M": "CIFAR-10/L->M", "latent30/L->S": "CIFAR-100/L->S"},
    }
    got = registered_claims("li2020_table2-cpu", "compression", ref)
    assert got[0].kind == "premise" and got[0].text == "kd > none"
    assert all(c.kind == "claim" for c in got[1:])  # premises first, never repeated as claims
    texts = {c.text for c in got[1:]}
    assert {"omega_p > kd", "omega_p > none", "omega_p > omega_u"} <= texts
    assert "kd > none" not in texts
    # an entry made on some of the paper's columns is decided on those tasks only
    assert {c.tasks for c in got if c.text == "kd > omega_p"} == {("latent30/L->S",)}
    new = with_register(ref, got)
    assert new["premises"] == ["kd > none"] and "kd > none" not in new["claims"]
    assert registered_claims("mini", "compression", {**ref}) == []
    assert with_register(ref, []) == ref  # a suite of one's own keeps its claims


def test_an_ablation_table_decides_the_entries_located_in_it():
    from harness.experiments.register_claims import located_claims

    got = located_claims("ablation_view-cpu", "view")
    assert set(got) == {("lohit2020", "3")}
    texts = {c.text for c in got[("lohit2020", "3")]}
    assert "samples (ipot) @ 4 stages > samples (ipot) @ penultimate" in texts
    assert all(c.tasks is None for cs in got.values() for c in cs)
    assert located_claims("mini", "compression") == {}


def test_commit_check_reads_the_store_and_never_swallows_a_damaged_one(tmp_path):
    """No database yet: nothing recorded, and no file made; a file that is not a database is
    the storage's one-line error, not "no records" (which would skip the one-commit check)."""
    from harness.experiments.records import StorageError

    missing = tmp_path / "runs.sqlite3"
    C.check_commit("s", f"sqlite:///{missing}", "f" * 40)
    assert not missing.exists()
    missing.write_bytes(b"not a database, " * 64)
    with pytest.raises(StorageError):
        C.check_commit("s", f"sqlite:///{missing}", "f" * 40)


ROUND = {"number": 2, "decided": "2026-12-06", "first_seed": 2000, "cpu_capability": "AVX2"}


def test_a_round_runs_the_same_plan_on_its_own_fresh_seeds(tmp_path):
    reg = R.load_register(_write(tmp_path, _with_block(rounds=[{**ROUND, "why": "w"}])))
    block = reg.confirmatory
    assert block.round(1) is None and block.round(2).first_seed == 2000
    with pytest.raises(ValueError, match="no round 3"):
        block.round(3)
    run = P.in_round(block.runs[0], block.round(2))
    assert run.seeds.values() == [2000, 2001, 2002]  # the count of round 1, fresh seeds
    assert run.set == block.runs[0].set and run.why == block.runs[0].why
    assert P.in_round(block.runs[0], None) is block.runs[0]
    planned = P.plans({"li2020": reg}, 2)
    assert planned["li2020_table4-cpu"][2].seeds.first == 2000
    with pytest.raises(ValueError, match="claims/li2020.yaml plans no round 3"):
        P.plans({"li2020": reg}, 3)
    with pytest.raises(C.ConfirmError, match="plans no round 3"):
        C.selected({"li2020": reg}, [], 3)
    assert C.round_root(1) == C.CONFIRM_ROOT
    assert str(C.round_root(2)).endswith("confirmatory-round2")


@pytest.mark.parametrize(
    "rounds, words",
    [
        ([{**ROUND, "first_seed": 1002, "why": "w"}], ["seed 1002", "above 1002"]),
        ([{**ROUND, "number": 3, "why": "w"}], ["round 3", "round 2 belongs"]),
        (
            [{**ROUND, "why": "w"}, {**ROUND, "number": 3, "first_seed": 2001, "why": "w"}],
            ["round 3", "seed 2001", "above 2002"],
        ),
        ([{**ROUND, "cpu_capability": "SSE", "why": "w"}], ["cpu_capability"]),
        ([ROUND], ["why"]),
    ],
)
def test_a_bad_round_is_one_line(tmp_path, rounds, words):
    path = _write(tmp_path, _with_block(rounds=rounds))
    with pytest.raises(R.RegisterError) as info:
        R.load_register(path)
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_the_shipped_round_2_is_fresh_and_covers_every_planned_suite():
    regs = R.load_registers()
    one, two = P.plans(regs, 1), P.plans(regs, 2)
    assert one.keys() == two.keys()
    last = max(r.seeds.first + r.seeds.count - 1 for _, _, r in one.values())
    for suite, (_paper, block, run) in two.items():
        assert run.seeds.count == one[suite][2].seeds.count  # same power-rule counts
        assert run.set == one[suite][2].set  # same grids
        assert run.seeds.first > last and block.round(2).cpu_capability == "AVX2"


def test_a_round_is_made_at_one_commit_and_with_its_kernels(tmp_path, monkeypatch):
    import torch

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "runs.csv").write_text("key,git_sha\nk1," + "e" * 40 + "\n")
    C.check_round_commit(tmp_path, ["a", "b"], "e" * 40)  # b has no records yet
    with pytest.raises(C.ConfirmError, match="made at commit eeeeeeeeeeee.*git worktree add"):
        C.check_round_commit(tmp_path, ["a"], "f" * 40)
    (tmp_path / "a" / "runs.csv").write_text("no,such,columns\n1,2,3\n")
    with pytest.raises(C.ConfirmError, match="not a runs.csv of this project"):
        C.check_round_commit(tmp_path, ["a"], "f" * 40)

    rnd = P.Round.model_validate({**ROUND, "why": "w"})
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    with pytest.raises(C.ConfirmError, match="has AVX512: start it with ATEN_CPU_CAPABILITY=avx2"):
        C.check_capability(rnd)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    C.check_capability(rnd)
    C.check_capability(P.Round.model_validate({**ROUND, "cpu_capability": None, "why": "w"}))


def test_confirm_skips_a_finished_suite_and_runs_the_rest_of_the_round(
    tmp_path, monkeypatch, capsys
):
    import argparse

    sha = "a" * 40
    monkeypatch.setattr(C, "check_clean", lambda: sha)
    monkeypatch.setattr(C, "check_capability", lambda rnd: None)
    monkeypatch.setattr(C, "round_root", lambda number: tmp_path / f"r{number}")
    done = tmp_path / "r2" / "lu2017_table2-cpu"
    done.mkdir(parents=True)
    (done / "runs.csv").write_text(f"key,git_sha\nk,{sha}\n")
    assert C.finished("lu2017_table2-cpu", tmp_path / "r2")
    assert C.where("lu2017_table2-cpu", tmp_path / "r2") == f"finished at {sha[:12]}"
    calls = []
    args = argparse.Namespace(
        suites=["lu2017_table2-cpu", "lohit2020_table5-cpu"],
        list=False,
        report=False,
        round=2,
        workers=2,
        no_progress=True,
    )
    assert C.command(args, lambda a: calls.append(a) or 0) == 0
    out = capsys.readouterr().out
    assert "lu2017_table2-cpu is finished" in out and "skipped" in out
    assert [a[1] for a in calls] == ["lohit2020_table5-cpu"]
    run = calls[0]
    assert run[run.index("--results") + 1] == str(tmp_path / "r2")
    assert any(s.startswith("seeds=[2000, 2001") for s in run)
    # a finished suite of the round made at another commit stops the round before it trains
    (done / "runs.csv").write_text("key,git_sha\nk," + "b" * 40 + "\n")
    calls.clear()
    with pytest.raises(C.ConfirmError, match="made at commit bbbbbbbbbbbb"):
        C.command(args, lambda a: calls.append(a) or 0)
    assert calls == []
    # a storage left to resume: the suite is not finished, it resumes
    (done / "runs.sqlite3").write_bytes(b"")
    assert not C.finished("lu2017_table2-cpu", tmp_path / "r2")
    assert C.where("lu2017_table2-cpu", tmp_path / "r2").startswith("started")


def test_confirm_checks_the_kernels_of_every_chosen_register(tmp_path, monkeypatch):
    import argparse

    monkeypatch.setattr(C, "check_clean", lambda: "a" * 40)
    monkeypatch.setattr(C, "round_root", lambda number: tmp_path / f"r{number}")
    seen = []
    monkeypatch.setattr(C, "check_capability", lambda rnd: seen.append(rnd.number))
    args = argparse.Namespace(
        suites=["lu2017_table2-cpu", "lohit2020_table5-cpu", "lohit2020_table4-cpu"],
        list=False,
        report=False,
        round=2,
        workers=1,
        no_progress=True,
    )
    assert C.command(args, lambda a: 0) == 0
    assert seen == [2, 2]  # one check per register (lu2017, lohit2020), not the first only
