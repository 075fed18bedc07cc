"""Experiment suites: schema, expansion and keys, records, resume, leaderboard."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest

from harness.experiments.suite import SuiteError, expand, load_suite

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
    with pytest.raises(AttributeError):
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
    assert sorted({j.config["regularizer_params"].get("kd.tau") for j in grid[2:]}, key=str) == [
        2,
        8,
        None,
    ]
    # the grid's kd.tau replaces the spec's own tau (written unqualified)
    assert [j.config["regularizer_params"] for j in grid[4:6]] == [{"kd.tau": 2}] * 2
    assert [j.label for j in grid[2:]] == ["none"] * 2 + ["kd (kd.tau=2)"] * 2 + [
        "kd (kd.tau=8)"
    ] * 2


@pytest.mark.parametrize(
    "old,new,line,what",
    [
        ("seeds: [0, 1]\n", "seeds: [0, 1]\ncolour: blue\n", 4, "colour"),
        (
            "    model_params: {widths: [4]}\n",
            "    model_params: {widths: [4]}\n    epochz: 3\n",
            13,
            "epochz",
        ),
        (
            "    train: {epochs: 1, batch_size: 25, lr: 0.05}\n",
            "    train: {epochs: 1, batch_size: 25, lr: 0.05, momentun: 0.9}\n",
            16,
            "momentun",
        ),
        ("seeds: [0, 1]\n", "seeds: 3\n", 3, "seeds"),
        (
            "    dataset: digits\n    dataset_params",
            "    dataset: 7\n    dataset_params",
            13,
            "dataset",
        ),
        ("    teacher: teacher\n", "    teacher: nobody\n", 15, "nobody"),
        ("  - kd: {tau: 4}\n", "  - kd: {tau: 4\n", 20, "invalid YAML"),
    ],
)
def test_malformed_suite_names_file_key_and_line(tmp_path, old, new, line, what):
    assert old in TINY
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.replace(old, new, 1))
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    msg = str(info.value)
    assert "bad.yaml" in msg and f"line {line}" in msg and what in msg, msg


def test_run_skip_and_resume(tiny, tmp_path):
    from harness.experiments.records import done_keys, records_frame
    from harness.experiments.runner import run_suite

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

    from harness.reports.tables import write_report

    paths = write_report("tiny", storage, tmp_path / "out")
    md = paths["md"].read_text()
    assert "| none" in md and "| kd" in md and "±" in md
    assert r"\pm" in paths["tex"].read_text()
    assert len(pd.read_csv(paths["csv"])) == 2


def test_failed_job_is_recorded_with_reason(tiny, tmp_path):
    from harness.experiments.records import open_study
    from harness.experiments.runner import run_suite

    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    s = run_suite(
        tiny,
        storage=storage,
        progress=False,
        results_root=tmp_path / "r",
        log=None,
        overrides=["seeds=[0]", "stages.students.regularizers=[{omega_i: {taps: [penultimate]}}]"],
    )
    assert s.failed == 1 and s.completed == 1
    failed = [
        t
        for t in open_study(storage, "tiny").get_trials()
        if t.user_attrs.get("status") == "failed"
    ]
    assert len(failed) == 1 and "d != d'" in failed[0].user_attrs["reason"]  # 4 vs 16 neurons


@pytest.mark.parametrize(
    "entry, what",
    [
        ("{kd: {tau: 4, nope: 1}}", "unknown parameter 'nope'"),
        ("{omega_p: {plan: nosuch}}", "unknown OT method 'nosuch'"),
        ("nosuch_term", "nosuch_term"),
    ],
)
def test_bad_regularizer_is_a_schema_error_before_any_job(tiny, tmp_path, entry, what):
    from harness.experiments.runner import run_suite

    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    with pytest.raises(SuiteError) as info:
        run_suite(
            tiny,
            storage=storage,
            progress=False,
            results_root=tmp_path / "r",
            log=None,
            overrides=[f"stages.students.regularizers=[{entry}]"],
        )
    assert "stages.students.regularizers.0" in str(info.value) and what in str(info.value)
    assert not (tmp_path / "r").exists()  # nothing ran


def test_leaderboard_golden():
    from harness.reports.tables import leaderboard

    df = pd.DataFrame(
        {
            "stage": ["students"] * 6 + ["teacher"],
            "regularizer": ["none", "none", "kd", "kd", "none", "kd", "none"],
            "dataset": ["a", "a", "a", "a", "b", "b", "a"],
            "seed": [0, 1, 0, 1, 0, 0, 0],
            "test_accuracy": [0.50, 0.60, 0.80, 0.70, 0.90, 0.40, 0.99],
            "status": ["completed"] * 7,
        }
    )
    expected = pd.DataFrame(
        {"a": ["55.0 ± 5.0", "**75.0 ± 5.0**"], "b": ["**90.0 ± 0.0**", "40.0 ± 0.0"]},
        index=pd.Index(["none", "kd"], name="regularizer"),
    )
    got = leaderboard(df)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_names=False)
    assert got.index.name == "regularizer"
    # a grid splits a spec into one row per grid point ("method")
    df2 = df.assign(
        method=["none", "none", "kd (kd.tau=2)", "kd (kd.tau=8)", "none", "kd (kd.tau=2)", "none"]
    )
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


TRANSFER = textwrap.dedent("""\
    name: xfer
    seeds: [0]
    stages:
      source:
        model: mlp
        model_params: {widths: [16]}
        dataset: digits
        dataset_params: {classes: [0, 1, 2, 3, 4]}
        train: {epochs: 1, batch_size: 64, lr: 0.05}
      finetune:
        table: fine-tuning
        task: 0-4 to 5-9
        model: mlp
        model_params: {widths: [16]}
        dataset: digits
        dataset_params: {classes: [5, 6, 7, 8, 9], n_per_class: 5}
        init: source
        teacher: source
        train: {epochs: 2, batch_size: 25, lr: 0.05}
        regularizers:
          - none
          - l2sp
          - omega_p: {taps: [penultimate], plan: assignment}
      joint:
        table: JTLN
        task: 0-4 to 5-9
        model: mlp
        model_params: {widths: [16]}
        dataset: digits
        dataset_params: {classes: [5, 6, 7, 8, 9], n_per_class: 5}
        source: {dataset: digits, dataset_params: {classes: [0, 1, 2, 3, 4]}, weight: 0.5}
        teacher: source
        train: {epochs: 1, batch_size: 25, lr: 0.05}
        regularizers:
          - none: {row: joint}
          - jtln: {label_cost: mkmmd, row: JTLN (MK-MMD)}
    """)


@pytest.fixture
def xfer(tmp_path):
    path = tmp_path / "xfer.yaml"
    path.write_text(TRANSFER)
    return path


def test_transfer_stages_expand(xfer):
    jobs = expand(load_suite(xfer))
    src, ft, joint = jobs[0], jobs[1:4], jobs[4:]
    assert not src.report and all(j.report for j in jobs[1:])
    assert all(j.config["init"] == src.key and j.config["teacher"] == src.key for j in ft)
    assert "init" not in src.config and "source" not in ft[0].config  # old keys unchanged
    assert joint[0].config["source"] == {
        "dataset": "digits",
        "weight": 0.5,
        "dataset_params": {"classes": [0, 1, 2, 3, 4]},
    }
    assert [j.label for j in joint] == ["joint", "JTLN (MK-MMD)"]
    assert "row" not in joint[1].config["regularizer_params"]  # a name, not a parameter
    assert [(j.table, j.task) for j in ft] == [("fine-tuning", "0-4 to 5-9")] * 3
    bad = TRANSFER.replace("    init: source\n", "    init: nowhere\n")
    with pytest.raises(SuiteError, match=r"line 17, key 'stages.finetune.init'.*nowhere"):
        from harness.experiments.suite import parse_suite

        parse_suite(bad, "bad.yaml")
    with pytest.raises(SuiteError, match="unknown source key 'wieght'"):
        parse_suite(TRANSFER.replace("weight: 0.5", "wieght: 0.5"), "bad.yaml")


def test_transfer_suite_runs_and_reports_each_table(xfer, tmp_path):
    from harness.experiments.records import records_frame
    from harness.experiments.runner import run_suite
    from harness.reports.tables import write_report

    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    s = run_suite(xfer, storage=storage, progress=False, results_root=tmp_path / "r", log=None)
    assert (s.completed, s.failed) == (6, 0), s.failures
    df = records_frame(storage, "xfer")
    ft = df[df["stage"] == "finetune"]
    assert set(ft["table"]) == {"fine-tuning"} and set(ft["task"]) == {"0-4 to 5-9"}
    # omega_p logged the plan's trace every epoch (li2020 Fig. 3); fine-tuning starts at ~1
    op = ft[ft["regularizer"] == "omega_p"].iloc[0]
    trace = [e["omega_p/penultimate/matched"] for e in op["epochs"]]
    assert len(trace) == 2 and all(0.5 < t <= 1 + 1e-9 for t in trace)
    jt = df[df["method"] == "JTLN (MK-MMD)"].iloc[0]
    assert "jtln" in jt["final_losses"] and "source_ce" in jt["final_losses"]
    paths = write_report("xfer", storage, tmp_path / "out", keys=s.keys)
    md = paths["md"].read_text()
    assert md.index("## fine-tuning") < md.index("## JTLN") and "## source" not in md
    assert "| joint" in md and "| l2sp" in md and "s / job" in md
    for key in ("png:fine-tuning", "png:JTLN", "trace:fine-tuning"):
        assert paths[key].is_file() and paths[key].stat().st_size > 5000, key
    assert "trace:JTLN" not in paths  # no square plan logged there
    csv = pd.read_csv(paths["csv"])
    assert set(csv["table"]) == {"fine-tuning", "JTLN"} and len(csv) == 5
    assert list(csv.columns[:3]) == ["table", "method", "task"]


def test_a_job_killed_mid_training_resumes_from_its_checkpoint(tiny, tmp_path, monkeypatch):
    """Ctrl-C in epoch 2 of a job: the next run resumes it at epoch 2 and ends exactly where
    the uninterrupted run does; the checkpoint is removed once the job is recorded."""
    import harness.training.loop as train_mod
    from harness.experiments.records import records_frame
    from harness.experiments.runner import run_suite

    over = ["seeds=[0]", "stages.students.train.epochs=3", "stages.students.regularizers=[kd]"]
    ref_storage = f"sqlite:///{tmp_path / 'ref.sqlite3'}"
    run_suite(
        tiny,
        storage=ref_storage,
        overrides=over,
        progress=False,
        results_root=tmp_path / "ref",
        log=None,
    )
    ref = records_frame(ref_storage, "tiny").set_index("stage")

    real, starts = train_mod.train, []

    def interrupted(*args, on_epoch=None, **kw):
        path = kw.get("checkpoint_path")
        starts.append(path is not None and path.exists())

        def hook(epoch, record):
            if args[0].fc.out_features == 10 and epoch == 1 and len(starts) == 2:
                raise KeyboardInterrupt  # the student, in its second epoch, the first time

        return real(*args, on_epoch=hook, **kw)

    monkeypatch.setattr(train_mod, "train", interrupted)
    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    kw = dict(
        storage=storage, overrides=over, progress=False, results_root=tmp_path / "r", log=None
    )
    with pytest.raises(KeyboardInterrupt):
        run_suite(tiny, **kw)
    ckpts = list((tmp_path / "r" / "tiny" / "artefacts").glob("*.ckpt"))
    assert len(ckpts) == 1  # the student's, after its 2nd epoch
    summary = run_suite(tiny, **kw)
    assert (summary.skipped, summary.completed) == (1, 1) and starts == [False, False, True]
    assert not list((tmp_path / "r" / "tiny" / "artefacts").glob("*.ckpt"))
    got = records_frame(storage, "tiny").set_index("stage")
    assert got.at["students", "test_accuracy"] == ref.at["students", "test_accuracy"]
    assert got.at["students", "epochs"] == ref.at["students", "epochs"]
    failed = [t for t in _all_trials(storage) if t.user_attrs.get("reason") == "interrupted"]
    assert len(failed) == 1


def _all_trials(storage):
    import optuna

    return optuna.load_study(study_name="tiny", storage=storage).get_trials()


def test_report_puts_the_papers_numbers_beside_ours_and_checks_claims(tmp_path):
    """A stage's `reference` maps its table to a paper table (results/reference/)."""
    from harness.experiments.reference import load_reference, paper_numbers, reference_from_config
    from harness.experiments.runner import run_suite
    from harness.reports.tables import write_index, write_report
    from harness.reports.verdicts import evaluate_claims

    text = TRANSFER.replace(
        "    regularizers:\n      - none\n      - l2sp\n",
        '    reference:\n      paper: li2020\n      table: "1"\n'
        "      columns: {0-4 to 5-9: Aircraft100}\n"
        '      claims: ["omega_p > l2sp", "l2sp > omega_p"]\n'
        "    regularizers:\n      - none\n      - l2sp\n",
    )
    assert "reference:" in text
    path = tmp_path / "xfer.yaml"
    path.write_text(text)
    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    s = run_suite(
        path,
        storage=storage,
        progress=False,
        results_root=tmp_path / "r",
        log=None,
        overrides=["stages.joint.regularizers=[none]"],
    )
    assert s.failed == 0, s.failures
    paths = write_report("xfer", storage, tmp_path / "r" / "xfer", keys=s.keys)
    md = paths["md"].read_text()
    # li2020 Table 1, Aircraft100: none 83.95 ± 0.37, L2-SP 83.94 ± 0.39, Omega_P 85.19 ± 0.36
    assert "paper: Aircraft100" in md
    for cell in ("83.95 ± 0.37", "83.94 ± 0.39", "85.19 ± 0.36"):
        assert cell in md, cell
    # suite "xfer" is no location of the register's entry: the claim is its own (unregistered)
    assert "- claim `omega_p > l2sp` (unregistered, superiority): " in md and "paper 1 of 1" in md
    # a claim naming no row of the table ("omega_p > kd" here) is refused when the suite
    # loads (tests/test_suite_input.py), no longer reported as "not measurable"
    assert "does not hold" not in md and "Holm" in md
    csv = pd.read_csv(paths["csv"])
    ft = csv[csv["table"] == "fine-tuning"].set_index("method")
    assert ft.at["omega_p", "paper"] == 85.19 and ft.at["l2sp", "paper_column"] == "Aircraft100"
    # the claims are a pure function of the two frames (ours: per seed, rows x (task, seed))
    ours = pd.DataFrame(
        [[80.0, 80.5, 79.0], [81.0, 82.0, 80.5]],
        index=["l2sp", "omega_p"],
        columns=pd.MultiIndex.from_product([["t"], [0, 1, 2]]),
    )
    ref = reference_from_config(
        {"paper": "li2020", "table": "1", "columns": {"t": "Dogs120"}, "claims": ["omega_p > l2sp"]}
    )
    paper, _ = paper_numbers(ref, [("l2sp", "l2sp"), ("omega_p", "omega_p")], ["t"])
    assert paper.loc["omega_p", "t"] == 77.43
    [c] = evaluate_claims(ref.claims, ours, paper, {"l2sp": "l2sp", "omega_p": "omega_p"})
    assert (c["ours"], c["ours_of"], c["paper"], c["paper_of"], c["verdict"]) == (
        1,
        1,
        1,
        1,
        "holds",
    )  # differences 1.0, 1.5, 1.5: t interval [0.62, 2.05]
    assert len(load_reference("lu2017", "2")) == 10
    index = write_index(tmp_path / "r", {"xfer": "a transfer suite"})
    assert "[leaderboard](xfer/leaderboard.md)" in index.read_text()
    assert "a transfer suite" in index.read_text()


@pytest.mark.parametrize(
    "old, new, what",
    [
        (
            "    init: source\n    teacher: source\n",
            "    init: pretrained\n    teacher: source\n",
            "pretrained: PATH",
        ),
        ("      paper: li2020\n", "      paper: li2021\n", "no reference numbers for paper"),
        ("{0-4 to 5-9: Aircraft100}", "{0-4 to 5-9: Aircraft1000}", "has no column 'Aircraft1000'"),
        ('claims: ["omega_p > l2sp"]', 'claims: ["omega_p beats l2sp"]', "expected 'ROW > ROW'"),
        (
            'claims: ["omega_p > l2sp"]',
            'premises: ["l2sp beats none"]\n      claims: []',
            r"line 24, key 'stages.finetune.reference.premises.0'.*expected 'ROW > ROW'",
        ),
        ('claims: ["omega_p > l2sp"]', 'premises: "l2sp > none"', "premises.*must be a list"),
    ],
)
def test_bad_reference_and_pretrained_keys_are_named(tmp_path, old, new, what):
    from harness.experiments.suite import parse_suite

    text = TRANSFER.replace(
        "    regularizers:\n      - none\n      - l2sp\n",
        '    reference:\n      paper: li2020\n      table: "1"\n'
        "      columns: {0-4 to 5-9: Aircraft100}\n"
        '      claims: ["omega_p > l2sp"]\n'
        "    regularizers:\n      - none\n      - l2sp\n",
    )
    assert old in text
    with pytest.raises(SuiteError, match=what):
        parse_suite(text.replace(old, new), "bad.yaml")


def test_pretrained_init_and_teacher_from_a_local_file(tmp_path, monkeypatch):
    """`pretrained: $VAR/file` + `init: pretrained` / `teacher: pretrained` (li2020 Table 1)."""
    import torch

    from harness.experiments.records import records_frame
    from harness.experiments.runner import run_suite
    from harness.zoo.models import build_model

    torch.manual_seed(3)
    torch.save(build_model("mlp", 7, widths=(16,)).state_dict(), tmp_path / "w.pth")
    monkeypatch.setenv("OTR_TEST_WEIGHTS", str(tmp_path))
    text = textwrap.dedent("""\
        name: pre
        seeds: [0]
        stages:
          finetune:
            model: mlp
            model_params: {widths: [16]}
            dataset: digits
            dataset_params: {classes: [5, 6, 7, 8, 9], n_per_class: 5}
            pretrained: $OTR_TEST_WEIGHTS/w.pth
            init: pretrained
            teacher: pretrained
            splits: {test: val}
            train: {epochs: 1, batch_size: 25, lr: 0.05}
            regularizers: [l2sp, omega_i]
        """)
    path = tmp_path / "pre.yaml"
    path.write_text(text)
    jobs = expand(load_suite(path))
    assert jobs[0].config["pretrained"] == "$OTR_TEST_WEIGHTS/w.pth"  # portable key
    assert jobs[0].config["init"] == jobs[0].config["teacher"] == "pretrained"
    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    s = run_suite(path, storage=storage, progress=False, results_root=tmp_path / "r", log=None)
    assert (s.completed, s.failed) == (2, 0), s.failures
    df = records_frame(storage, "pre")
    # l2sp starts at w0 = the file's weights: its first logged value is 0 + beta/2 |new head|^2
    assert set(df["regularizer"]) == {"l2sp", "omega_i"}
    monkeypatch.setenv("OTR_TEST_WEIGHTS", str(tmp_path / "nowhere"))
    s = run_suite(
        path,
        storage=f"sqlite:///{tmp_path / 'b.sqlite3'}",
        progress=False,
        results_root=tmp_path / "r2",
        log=None,
    )
    assert s.failed == 2 and "pretrained weights" in s.failures[0][1]


def test_a_grid_key_no_regularizer_takes_is_an_error(tmp_path):
    from harness.experiments.suite import parse_suite

    with pytest.raises(SuiteError, match=r"key 'stages.students.grid.train.lr'.*no regularizer"):
        parse_suite(TINY + "    grid: {train.lr: [0.1, 0.2]}\n", "bad.yaml")
    # a solver key counts with the plan the spec sets
    ok = (
        TINY.replace("      - kd: {tau: 4}\n", "      - omega_p: {plan: sinkhorn}\n")
        + "    grid: {reg: [0.01, 0.1]}\n"
    )
    jobs = expand(parse_suite(ok, "ok.yaml"))
    assert sorted(
        j.config["regularizer_params"].get("reg", 0) for j in jobs if j.regularizer == "omega_p"
    ) == [0.01, 0.01, 0.1, 0.1]


def test_select_val_keeps_the_grid_point_best_on_validation(tiny, tmp_path):
    """`select: val`: one row per spec, its grid point chosen on validation (li2020 A.2)."""
    from harness.experiments.records import records_frame
    from harness.experiments.runner import run_suite
    from harness.reports.tables import select_by_val, write_report

    over = ["seeds=[0, 1]", "stages.students.grid.kd.tau=[1, 16]", "stages.students.select=val"]
    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    s = run_suite(
        tiny, storage=storage, overrides=over, progress=False, results_root=tmp_path / "r", log=None
    )
    assert s.failed == 0
    df = records_frame(storage, "tiny")
    kd = df[df["regularizer"] == "kd"]
    val = kd.groupby("method")["val_accuracy"].mean()
    best = val.idxmax()
    sel, choices = select_by_val(kd.assign(dataset="digits"))
    assert set(sel["method"]) == {"kd"} and len(sel) == 2  # two seeds of the chosen point
    assert choices == [("kd", "digits", best, pytest.approx(val[best]))]
    md = write_report("tiny", storage, tmp_path / "out", keys=s.keys)["md"].read_text()
    assert "| kd " in md and "kd.tau=" not in md.split("Hyper-parameters")[0]
    assert f"- kd · digits: `{best}`" in md
    with pytest.raises(SuiteError, match="select must be 'val'"):
        load_suite(tiny, ["stages.students.select=test"])


def test_a_teacher_stage_of_one_seed_serves_every_seed(tiny):
    """``seeds: [0]`` on the teacher stage: one teacher, distilled into the students of every
    seed (papers that use a released teacher); the other suites' keys do not move."""
    base = expand(load_suite(tiny))
    one = expand(load_suite(tiny, ["stages.teacher.seeds=[0]"]))
    teachers = [j for j in one if j.stage == "teacher"]
    assert len(teachers) == 1 and teachers[0].key == base[0].key
    students = [j for j in one if j.stage == "students"]
    assert len(students) == 4 and {j.config["teacher"] for j in students} == {teachers[0].key}
    assert {j.seed for j in students} == {0, 1}
    # seed 0's students are unchanged; seed 1's now name teacher seed 0
    same = {j.key for j in base if j.stage == "students" and j.seed == 0}
    assert same == {j.key for j in students if j.seed == 0}


def test_training_and_source_splits_are_chosen_and_checked(tiny, tmp_path):
    """``splits: {train: ...}`` and ``source: {split: ...}`` pick the training splits
    (Aircraft's trainval, lu2017's whole source set); a split the dataset lacks is an error
    naming it; keys of suites that set neither do not move."""
    import harness.experiments.train_job as train_job

    base = expand(load_suite(tiny))
    picked = expand(load_suite(tiny, ["stages.students.splits={train: val}"]))
    assert picked[:2] == base[:2] and picked[2].config["splits"] == {"train": "val"}
    assert picked[2].key != base[2].key
    train_set, _, _, _ = train_job.load_datasets(picked[2].config)
    assert len(train_set) == 10 * 5  # 5 per class from digits' val split (n_per_class)
    with pytest.raises(SuiteError, match="dataset 'digits' has no split 'trainval'"):
        load_suite(tiny, ["stages.students.splits={train: trainval}"])
    with pytest.raises(SuiteError, match="has no split 'all'"):
        load_suite(tiny, ["stages.students.source={dataset: digits, split: all}"])
    src = expand(load_suite(tiny, ["stages.students.source={dataset: digits, split: val}"]))
    assert src[2].config["source"] == {
        "dataset": "digits",
        "dataset_params": {},
        "weight": 1.0,
        "split": "val",
    }
    nosplit = expand(load_suite(tiny, ["stages.students.source={dataset: digits}"]))
    assert "split" not in nosplit[2].config["source"]


def test_splits_per_dataset(tmp_path):
    """``splits: {train: {digits: val}}`` in a stage of two datasets: that dataset trains on
    the named split, the other on its default; a dataset not of the stage is an error."""
    import harness.experiments.train_job as train_job

    path = tmp_path / "two.yaml"
    path.write_text(
        TINY.replace("name: tiny", "name: two")
        .split("  students:")[0]
        .replace(
            "    dataset: digits\n",
            "    dataset: [digits, synthetic]\n    splits: {train: {digits: "
            "val}, val: {digits: null}}\n",
        )
    )
    jobs = expand(load_suite(path))
    by_ds = {j.dataset: j for j in jobs if j.seed == 0}
    tr, val, _, _ = train_job.load_datasets(by_ds["digits"].config)
    assert val is None and len(tr) == len(
        train_job.load_datasets({**by_ds["digits"].config, "splits": {}})[1]
    )  # digits trains on its val split
    tr2, val2, _, _ = train_job.load_datasets(by_ds["synthetic"].config)
    assert val2 is not None  # synthetic keeps train / val
    with pytest.raises(SuiteError, match="'cifar11' is not a registered dataset"):
        load_suite(path, ["stages.teacher.splits={train: {cifar11: train}}"])
    load_suite(path, ["stages.teacher.splits={train: {cifar10: train}}"])  # another stage's


@pytest.mark.parametrize(
    "new,line,what",
    [
        ("        - {match: features.1, lr_mult: -1}\n", 20, "lr_mult"),
        ("        - {match: features.9, lr_mult: 0}\n", 20, "'features.9' matches no parameter"),
        ("        - {match: [features.1, fc.bias, fetaures.2], lr_mult: 0}\n", 20, "'fetaures.2'"),
        ("        - {match: features.1, lr: 0}\n", 20, "unknown param_groups key 'lr'"),
        ("        - features.1\n", 20, "a mapping"),
        (
            "        - {match: 'features.*', lr_mult: 0.1}\n"
            "        - {match: features.1, lr_mult: 0}\n",
            21,
            "earlier group",
        ),
    ],
)
def test_bad_param_groups_are_named_with_their_line(tmp_path, new, line, what):
    """train.param_groups: each entry's error on its line; patterns checked against the
    model's parameter names when the suite loads (the model built on the meta device)."""
    old = "    train: {epochs: 1, batch_size: 25, lr: 0.05}\n"
    good = (
        "    train:\n      epochs: 1\n      batch_size: 25\n      param_groups:\n"
        "        - {match: features.1, lr_mult: 0}\n"
    )
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.replace(old, good, 1))
    job = expand(load_suite(path))[2]
    assert job.config["train"]["param_groups"] == [{"match": ["features.1"], "lr_mult": 0.0}]
    path.write_text(TINY.replace(old, good.replace(good.splitlines(True)[-1], new), 1))
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    msg = str(info.value)
    assert "bad.yaml" in msg and f"line {line}" in msg and what in msg, msg


def test_teacher_mode_is_checked_on_its_line_and_keyed_only_when_set(tiny, tmp_path):
    base = expand(load_suite(tiny))
    assert all("teacher_mode" not in j.config["train"] for j in base)  # old keys kept
    paper = expand(load_suite(tiny, ["stages.students.train.teacher_mode=train"]))
    assert paper[2].config["train"]["teacher_mode"] == "train"
    assert {j.key for j in paper[2:]}.isdisjoint(j.key for j in base[2:])
    path = tmp_path / "bad.yaml"
    path.write_text(
        TINY.replace(
            "    train: {epochs: 1, batch_size: 25, lr: 0.05}\n",
            "    train:\n      epochs: 1\n      teacher_mode: batch\n",
            1,
        )
    )
    with pytest.raises(
        SuiteError,
        match=r"line 18, key 'stages.students.train.teacher_mode'"
        r".*teacher_mode must be one of",
    ):
        load_suite(path)


def test_lu2017_suite_freezes_conv1_3_and_slows_conv4_5_of_alexnet():
    """lu2017 §4 on torchvision's AlexNet (the joint stages' two classifiers included): conv1-3
    frozen, conv4-5 at 0.1 x lr, fc6-7 at lr, the new fc8 classifiers at the base lr."""
    import torch

    from harness.training.loop import TrainConfig, assign_param_groups
    from harness.zoo.models import build_model, with_source_head

    suite = load_suite("lu2017_table2")
    joint = next(j for j in expand(suite) if j.stage == "boeing_joint")
    cfg = TrainConfig(**{**joint.config["train"], "milestones": ()})
    with torch.device("meta"):
        model = with_source_head(build_model("alexnet", 22), 78)
    names = [n for n, _ in model.named_parameters()]
    mults = {
        n: cfg.param_groups[g].lr_mult if g is not None else 1.0
        for n, g in zip(names, assign_param_groups(names, cfg.param_groups), strict=False)
    }
    by_layer = {n.rsplit(".", 1)[0]: m for n, m in mults.items()}
    assert by_layer == {
        "features.0": 0.0,
        "features.3": 0.0,
        "features.6": 0.0,
        "features.8": 0.1,
        "features.10": 0.1,
        "classifier.1": 1.0,
        "classifier.4": 1.0,
        "classifier.6.target": 1.0,
        "classifier.6.source": 1.0,
    }
    assert all(
        j.config["train"]["param_groups"] == joint.config["train"]["param_groups"]
        for j in expand(suite)
    )  # every stage fine-tunes that way


def test_li2020_suites_say_and_set_their_teacher_mode():
    """li2020 §3: T = A^(0). A full-scale stage whose teacher is its initial network runs the
    teacher's batch norm on batch statistics (teacher_mode: train); a separately trained
    teacher (compression) stays in eval mode; every li2020 suite's header names its mode."""
    from harness.experiments.suite import SUITES_DIR

    files = sorted([*SUITES_DIR.glob("li2020_*.yaml"), *SUITES_DIR.glob("ablation_*.yaml")])
    assert len(files) == 18
    for f in files:
        header = f.read_text().split("\nname:")[0]
        assert "# Teacher mode:" in header, f.name
        for st in load_suite(f).stages:
            if st.teacher is None:
                continue
            initial = st.teacher in ("pretrained", st.init)
            cpu = f.stem.endswith("-cpu")
            # the CPU twins fine-tune MLPs, without batch norm: both modes compute the same
            assert not (initial and cpu) or st.model == "mlp", (f.name, st.name)
            want = "train" if initial and not cpu else "eval"
            assert st.train.get("teacher_mode", "eval") == want, (f.name, st.name)
