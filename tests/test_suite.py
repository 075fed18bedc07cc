"""Experiment suites: schema, expansion and keys, records, resume, leaderboard (design.md)."""
from __future__ import annotations

import textwrap

import pandas as pd
import pytest

from harness.suite import SuiteError, expand, load_suite

TINY = textwrap.dedent("""\
    name: tiny
    description: two-stage smoke suite
    seeds: [0, 1]
    stages:
      teacher:
        model: mlp
        model_params: {widths: [16]}
        dataset: digits
        train: {epochs: 1, batch_size: 64, lr: 0.05}
      students:
        model: mlp
        model_params: {widths: [4]}
        dataset: digits
        dataset_params: {n_per_class: 5}
        teacher: teacher
        train: {epochs: 1, batch_size: 25, lr: 0.05}
        regularizers:
          - none
          - kd: {tau: 4}
    """)


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def _trials(storage):
    import optuna

    study = optuna.load_study(study_name="tiny", storage=storage)
    return [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]


def test_expand_counts_and_stable_keys(tiny):
    jobs = expand(load_suite(tiny))
    assert len(jobs) == 2 + 2 * 2  # teacher x 2 seeds, students x 2 specs x 2 seeds
    assert [j.stage for j in jobs] == ["teacher"] * 2 + ["students"] * 4
    assert len({j.key for j in jobs}) == len(jobs)
    assert all(len(j.key) == 16 for j in jobs)
    assert [j.key for j in expand(load_suite(tiny))] == [j.key for j in jobs]
    teachers = {j.seed: j.key for j in jobs if j.stage == "teacher"}
    for j in jobs[2:]:
        assert j.config["teacher"] == teachers[j.seed]
    with pytest.raises(Exception):
        jobs[0].key = "x"  # frozen


def test_set_overrides_change_the_key(tiny):
    base = expand(load_suite(tiny))
    more = expand(load_suite(tiny, ["stages.students.train.epochs=2"]))
    assert [j.key for j in more[:2]] == [j.key for j in base[:2]]  # teachers unchanged
    assert {j.key for j in more[2:]}.isdisjoint(j.key for j in base[2:])
    assert more[2].config["train"]["epochs"] == 2
    # a teacher change propagates to the students' keys (their config holds the teacher key)
    t = expand(load_suite(tiny, ["stages.teacher.train.lr=0.1"]))
    assert {j.key for j in t}.isdisjoint(j.key for j in base)
    one = expand(load_suite(tiny, ["seeds=[0]"]))
    assert len(one) == 3
    grid = expand(load_suite(tiny, ["stages.students.grid.kd.tau=[2, 8]"]))
    assert len(grid) == 2 + 2 * (1 + 2)  # the grid applies to kd only
    assert sorted({j.config["regularizer_params"].get("kd.tau") for j in grid[2:]},
                  key=str) == [2, 8, None]
    # the grid's kd.tau replaces the spec's own tau (written unqualified)
    assert [j.config["regularizer_params"] for j in grid[4:6]] == [{"kd.tau": 2}] * 2
    assert [j.label for j in grid[2:]] == ["none"] * 2 + ["kd (kd.tau=2)"] * 2 + \
        ["kd (kd.tau=8)"] * 2


@pytest.mark.parametrize("old,new,line,what", [
    ("seeds: [0, 1]\n", "seeds: [0, 1]\ncolour: blue\n", 4, "colour"),
    ("    model_params: {widths: [4]}\n", "    model_params: {widths: [4]}\n"
     "    epochz: 3\n", 13, "epochz"),
    ("    train: {epochs: 1, batch_size: 25, lr: 0.05}\n",
     "    train: {epochs: 1, batch_size: 25, lr: 0.05, momentun: 0.9}\n", 16, "momentun"),
    ("seeds: [0, 1]\n", "seeds: 3\n", 3, "seeds"),
    ("    dataset: digits\n    dataset_params", "    dataset: 7\n    dataset_params",
     13, "dataset"),
    ("    teacher: teacher\n", "    teacher: nobody\n", 15, "nobody"),
    ("  - kd: {tau: 4}\n", "  - kd: {tau: 4\n", 20, "invalid YAML"),
])
def test_malformed_suite_names_file_key_and_line(tmp_path, old, new, line, what):
    assert old in TINY
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.replace(old, new, 1))
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    msg = str(info.value)
    assert "bad.yaml" in msg and f"line {line}" in msg and what in msg, msg


def test_run_skip_and_resume(tiny, tmp_path):
    from harness.records import done_keys, records_frame
    from harness.runner import run_suite

    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    kw = dict(storage=storage, progress=False, results_root=tmp_path / "results", log=None)

    class Stop(Exception):
        pass

    seen = []

    def stop_after_3(job, metrics):
        seen.append(job.key)
        if len(seen) == 3:
            raise Stop

    with pytest.raises(Stop):
        run_suite(tiny, on_job=stop_after_3, **kw)
    assert len(done_keys(storage, "tiny")) == 3
    summary = run_suite(tiny, **kw)  # resume
    assert (summary.skipped, summary.completed, summary.failed) == (3, 3, 0)
    keys = [t.user_attrs["key"] for t in _trials(storage)]
    jobs = expand(load_suite(tiny))
    assert sorted(keys) == sorted(j.key for j in jobs)  # every job exactly once
    again = run_suite(tiny, **kw)
    assert (again.skipped, again.completed) == (6, 0)
    assert len(_trials(storage)) == 6  # no duplicate trials

    df = records_frame(storage, "tiny")
    assert len(df) == 6 and set(df["key"]) == {j.key for j in jobs}
    row = df[df["regularizer"] == "kd"].iloc[0]
    assert 0 <= row["test_accuracy"] <= 1 and "kd" in row["final_losses"]
    assert row["config"]["teacher"] and row["git_sha"]
    for j in jobs[:2]:
        assert (tmp_path / "results" / "tiny" / "artefacts" / f"{j.key}.pt").is_file()

    from harness.report import write_report

    paths = write_report("tiny", storage, tmp_path / "out")
    md = paths["md"].read_text()
    assert "| none" in md and "| kd" in md and "±" in md
    assert r"\pm" in paths["tex"].read_text()
    assert len(pd.read_csv(paths["csv"])) == 2


def test_failed_job_is_recorded_with_reason(tiny, tmp_path):
    from harness.records import open_study
    from harness.runner import run_suite

    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    s = run_suite(tiny, storage=storage, progress=False, results_root=tmp_path / "r", log=None,
                  overrides=["seeds=[0]", "stages.students.regularizers=[{kd: {tau: -1, nope: 1}}]"])
    assert s.failed == 1 and s.completed == 1
    failed = [t for t in open_study(storage, "tiny").get_trials()
              if t.user_attrs.get("status") == "failed"]
    assert len(failed) == 1 and "nope" in failed[0].user_attrs["reason"]


def test_leaderboard_golden():
    from harness.report import leaderboard

    df = pd.DataFrame({
        "stage": ["students"] * 6 + ["teacher"],
        "regularizer": ["none", "none", "kd", "kd", "none", "kd", "none"],
        "dataset": ["a", "a", "a", "a", "b", "b", "a"],
        "seed": [0, 1, 0, 1, 0, 0, 0],
        "test_accuracy": [0.50, 0.60, 0.80, 0.70, 0.90, 0.40, 0.99],
        "status": ["completed"] * 7,
    })
    expected = pd.DataFrame({"a": ["55.0 ± 5.0", "**75.0 ± 5.0**"],
                             "b": ["**90.0 ± 0.0**", "40.0 ± 0.0"]},
                            index=pd.Index(["none", "kd"], name="regularizer"))
    got = leaderboard(df)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_names=False)
    assert got.index.name == "regularizer"
    # a grid splits a spec into one row per grid point ("method")
    df2 = df.assign(method=["none", "none", "kd (kd.tau=2)", "kd (kd.tau=8)", "none",
                            "kd (kd.tau=2)", "none"])
    got2 = leaderboard(df2)
    assert list(got2.index) == ["none", "kd (kd.tau=2)", "kd (kd.tau=8)"]
    assert list(got2["a"]) == ["55.0 ± 5.0", "**80.0 ± 0.0**", "70.0 ± 0.0"]
    assert list(got2["b"]) == ["**90.0 ± 0.0**", "40.0 ± 0.0", "-"]


def test_cli_run_list_report(tiny, tmp_path, capsys, monkeypatch):
    from harness.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["run", str(tiny), "--quick", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 run" in out  # 1 seed: teacher + 2 students
    assert (tmp_path / "results" / "tiny-quick" / "leaderboard.md").is_file()
    assert main(["resume", str(tiny), "--quick", "--no-progress"]) == 0
    assert "3 already done" in capsys.readouterr().out
    assert main(["report", str(tiny), "--quick"]) == 0
    assert "| kd" in capsys.readouterr().out
    # the smoke run's records are not the suite's: its report has nothing yet
    assert main(["report", str(tiny)]) == 1
    assert "no completed runs" in capsys.readouterr().err
    assert main(["list", "suites"]) == 0
    assert "| mini" in capsys.readouterr().out
    assert main(["run", str(tmp_path / "missing.yaml")]) == 1
    assert "not found" in capsys.readouterr().err
