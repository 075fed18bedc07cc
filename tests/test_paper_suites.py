"""Every suite file parses and expands to its grid; each CPU-scale twin runs end to end in
--quick mode (the papers' experiments as suites)."""

from __future__ import annotations

import pytest

from harness.experiments.suite import available_suites, expand, load_suite

CPU = sorted(s for s in available_suites() if s.endswith("-cpu"))

#: Reported jobs of each CPU twin: rows x columns x seeds, the papers' grid shapes.
CPU_GRID = {  # reported jobs: rows (x grid points under select: val) x columns x seeds
    "li2020_table1-cpu": (2 + 5 * 5) * 5 * 10,  # scratch, none, 5-point L2/L2-SP/Omega_I/U/P x 5
    "li2020_table2-cpu": (1 + 5 + 5 * 3 + 5) * 12 * 10,  # none, Omega_U 5, KD 5 x 3 tau, Omega_P 5
    "li2020_table3-cpu": (1 + 2 * 6) * 3 * 10,  # none, 6-point Omega_U/P x 0/10/100 % pre-training
    "li2020_table4-cpu": 5 * 3 * 5 * 20,  # 3-point L2/L2-SP/Omega_I/U/P x batch 16..128
    "li2020_fig2-cpu": 1 * 5 * 10,  # L2-SP fine-tuning, traces per layer, five tasks
    "li2020_fig3-cpu": 1 * 5 * 10,  # Omega_P traces along training, five tasks
    "lohit2020_table1-cpu": (2 + 4 * 2) * 3 * 10,  # none, KD, 2-point REMD(+KD)/IPOT(+KD) x 3 pairs
    "lohit2020_table3-cpu": 2 * 2 * 5 * 10,  # 2-point IPOT(+KD) x stage 1..4, all
    "lohit2020_table5-cpu": (2 + 4 * 2) * 2 * 5,  # as Table 1 x two pairs, 5 seeds
    "lu2017_table2-cpu": (3 + 2 * 3) * 2 * 20,  # target only, consecutive, joint, 3-point JTLN x2
    "lohit2020_table2-cpu": (2 + 2 * 2) * 3 * 5,  # none, KD, 2-point REMD+KD / IPOT+KD, 5 seeds
    "lohit2020_table4-cpu": (2 + 2 * 2) * 1 * 10,  # none, KD, 2-point IPOT(+KD), largest task
    "ablation_plan-cpu": (9 + 8) * 10,  # Omega_P's plan by solver, two tasks
    "ablation_layers-cpu": 6 * 2 * 10,  # none, Omega_P at stage 1..4 / all, two tasks
    "ablation_view-cpu": 7 * 2 * 10,  # none, neurons vs samples views x 2 layer sets
    "tune-cpu": 2 * 1 * 3,  # none, Omega_P+KD (its search: otransfer tune)
}
#: Tables whose paper numbers are not comparable cell by cell (errors, not accuracies).
NO_REFERENCE = {"lohit2020_table4-cpu"}


def test_the_cpu_twins_are_all_listed():
    assert sorted(CPU_GRID) == CPU


@pytest.mark.parametrize("name", available_suites())
def test_every_suite_parses_and_expands(name):
    suite = load_suite(name)
    jobs = expand(suite)
    assert jobs and len({j.key for j in jobs}) == len(jobs)
    for j in jobs:  # every referenced teacher / init job exists in the suite
        for ref in ("teacher", "init"):
            key = j.config.get(ref)
            assert key in (None, "pretrained") or key in {x.key for x in jobs}, (j.stage, ref)
    if name in CPU_GRID:
        assert sum(j.report for j in jobs) == CPU_GRID[name]
        # >= 10 seeds a twin where a job costs seconds; 5 where it costs 10-50 s
        # 20 where 10 could not resolve a premise (li2020 Table 4, lu2017 split A)
        seeds = {
            "tune-cpu": range(3),
            "lohit2020_table2-cpu": range(5),
            "lohit2020_table5-cpu": range(5),
            "li2020_table4-cpu": range(20),
            "lu2017_table2-cpu": range(20),
        }.get(name, range(10))
        assert {j.config["seed"] for j in jobs} == set(seeds)
        # every CPU twin of a table names the paper table it mirrors
        if "_table" in name and name not in NO_REFERENCE:
            assert any(j.reference for j in jobs if j.report), name


@pytest.mark.parametrize("name", CPU)
def test_cpu_twin_runs_quick_end_to_end(name, tmp_path):
    from harness.experiments.runner import run_suite
    from harness.reports.tables import write_report

    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    s = run_suite(
        name,
        storage=storage,
        progress=False,
        quick=True,
        results_root=tmp_path / "results",
        log=None,
    )
    assert s.failed == 0, s.failures
    paths = write_report(s.suite, storage, tmp_path / "out", keys=s.keys)
    md = paths["md"].read_text()
    if "_table" in name and name not in NO_REFERENCE:
        assert "paper:" in md or "Claims of" in md
    if "fig2" in name:
        assert any(k.startswith("layers:") for k in paths) and "Fig. 2" in md
    if name == "li2020_table4-cpu":  # accuracy versus batch size, li2020 Table 4
        assert any(k.startswith("lines:") for k in paths)
    if "fig3" in name:
        assert any(k.startswith("trace:") for k in paths)
    assert any(k.startswith("png:") for k in paths)
