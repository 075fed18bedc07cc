"""``otransfer tune``: the ``search:`` block of a suite, the Optuna search on validation with
pruning, the re-runs of the best point on test, the plots and the report."""

from __future__ import annotations

import json
import math
import textwrap

import pytest

from harness.experiments.suite import SuiteError, config_key, expand, load_suite, parse_suite

SUITE = textwrap.dedent("""\
    name: tinytune
    seeds: [0, 1]
    stages:
      teacher:
        model: mlp
        model_params: {widths: [16]}
        dataset: digits
        train: {epochs: 2, batch_size: 64, lr: 0.05}
      students:
        table: compression
        model: mlp
        model_params: {widths: [4]}
        dataset: digits
        dataset_params: {n_per_class: 5}
        teacher: teacher
        train: {epochs: 3, batch_size: 25, lr: 0.05}
        regularizers:
          - none
          - omega_p+kd: {kd.tau: 4}
    search:
      stage: students
      regularizer: omega_p+kd
      trials: 3
      sampler: {name: random, seed: 0}
      pruner: {name: median, n_startup_trials: 1}
      space:
        omega_p.alpha: {low: 1.0e-3, high: 1.0, log: true}
        kd.tau: {choices: [2, 4]}
        train.lr: {low: 0.01, high: 0.1, log: true}
    """)
TUNED_ROW = "omega_p+kd (tuned)"


# --------------------------------------------------------------------------- the search block


def test_search_block_parses_and_changes_no_key():
    suite = parse_suite(SUITE, "t.yaml")
    (s,) = suite.searches
    assert (s.stage, s.regularizer, s.row, s.dataset, s.trials, s.seed) == (
        "students",
        "omega_p+kd",
        "omega_p+kd",
        "digits",
        3,
        0,
    )
    assert s.params == {"kd.tau": 4}
    assert s.space["omega_p.alpha"] == {
        "low": 1e-3,
        "high": 1.0,
        "log": True,
        "step": None,
        "type": "float",
    }
    assert s.space["kd.tau"] == {"choices": [2, 4]}
    assert s.pruner == {"name": "median", "n_startup_trials": 1}
    bare = parse_suite(SUITE.split("search:")[0], "t.yaml")
    assert bare.searches == ()
    assert [j.key for j in expand(suite)] == [j.key for j in expand(bare)]
    # mini's own search block leaves every job of `otransfer run mini` as it was
    mini = load_suite("mini")
    assert mini.searches and mini.searches[0].stage == "students"


@pytest.mark.parametrize(
    "old,new,target,what",
    [
        (
            "  stage: students\n",
            "  stage: pupils\n",
            "  stage: pupils",
            "search stage 'pupils' is not a stage",
        ),
        (
            "  regularizer: omega_p+kd\n",
            "  regularizer: kd\n",
            "  regularizer: kd",
            "has no regularizer 'kd'",
        ),
        (
            "{low: 1.0e-3, high: 1.0, log: true}",
            "{low: 1e-3, high: 1.0, log: true}",
            "    omega_p.alpha:",
            "write 1.0e-4",
        ),
        (
            "{low: 0.01, high: 0.1, log: true}",
            "{low: 0.5, high: 0.1}",
            "    train.lr:",
            "low (0.5) > high (0.1)",
        ),
        (
            "{low: 1.0e-3, high: 1.0, log: true}",
            "{low: 0.0, high: 1.0, log: true}",
            "    omega_p.alpha:",
            "needs low > 0",
        ),
        (
            "    kd.tau: {choices: [2, 4]}\n",
            "    kd.temperature: {choices: [2, 4]}\n",
            "    kd.temperature:",
            "no term of regularizer 'omega_p+kd' takes 'kd.temperature'",
        ),
        (
            "    kd.tau: {choices: [2, 4]}\n",
            "    alpha: {choices: [0.1, 1.0]}\n",
            "    alpha:",
            "taken by several terms",
        ),
        ("    train.lr:", "    train.seed:", "    train.seed:", "TrainConfig field other than"),
        (
            "    kd.tau: {choices: [2, 4]}\n",
            "    kd.tau: {choices: [2, 4], low: 1}\n",
            "    kd.tau:",
            "exclude each other",
        ),
        (
            "{name: median, n_startup_trials: 1}",
            "{name: medain}",
            "  pruner:",
            "did you mean 'median'",
        ),
        (
            "{name: median, n_startup_trials: 1}",
            "{name: median, patience: 3}",
            "  pruner:",
            "takes no 'patience'",
        ),
        ("  trials: 3\n", "  trails: 3\n", "  trails:", "unknown search key 'trails'"),
        (
            "    teacher: teacher\n",
            "    teacher: teacher\n    splits: {val: null}\n",
            "  stage: students",
            "scores its trials on a validation split",
        ),
    ],
)
def test_malformed_search_names_key_and_line(old, new, target, what):
    assert old in SUITE
    text = SUITE.replace(old, new, 1)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith(target))
    with pytest.raises(SuiteError) as info:
        parse_suite(text, "bad.yaml")
    msg = str(info.value)
    assert "bad.yaml" in msg and f"line {line}," in msg and what in msg, msg


def test_select_search_by_stage_and_regularizer():
    from harness.experiments.search import select_search

    suite = parse_suite(SUITE, "t.yaml")
    assert select_search(suite).stage == "students"
    assert select_search(suite, "students", "omega_p+kd").row == "omega_p+kd"
    with pytest.raises(SuiteError, match="no search block for stage 'teacher'"):
        select_search(suite, "teacher")
    with pytest.raises(SuiteError, match="has no 'search:' block"):
        select_search(parse_suite(SUITE.split("search:")[0], "t.yaml"))


# --------------------------------------------------------------------------- a tiny search


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """The tiny suite run (grid rows), then searched with 3 trials; shared by the tests below."""
    from harness.experiments.runner import run_suite
    from harness.experiments.search import tune

    tmp = tmp_path_factory.mktemp("tune")
    path = tmp / "tinytune.yaml"
    path.write_text(SUITE)
    storage = f"sqlite:///{tmp / 'runs.sqlite3'}"
    run = run_suite(path, storage=storage, progress=False, results_root=tmp / "results", log=None)
    assert run.failed == 0
    lines: list[str] = []
    summary = tune(path, storage=storage, results_root=tmp / "results", log=lines.append)
    return {
        "tmp": tmp,
        "path": path,
        "storage": storage,
        "summary": summary,
        "lines": lines,
        "keys": run.keys,
    }


def _study(searched):
    import optuna

    return optuna.load_study(study_name=searched["summary"].study, storage=searched["storage"])


def test_trials_are_recorded_in_the_search_study(searched):
    s = searched["summary"]
    assert s.study.startswith("tinytune:tune:students:omega_p+kd:")
    assert (s.trials, s.total) == (3, 3) and s.completed + s.pruned + s.failed == 3
    deps = [line for line in searched["lines"] if line.startswith("[") and "teacher" in line]
    assert len(deps) == 2 and all("skipped" in line for line in deps)  # `run` trained them
    trials = _study(searched).get_trials()
    assert len(trials) == 3
    for t in trials:
        a = t.user_attrs
        point = json.loads(a["point"])
        assert set(point) == {"omega_p.alpha", "kd.tau", "train.lr"}
        cfg = json.loads(a["config"])
        assert a["key"] == config_key(cfg)
        # the point is applied as a grid point is: to the regularizer's params and train
        assert cfg["regularizer_params"]["omega_p.alpha"] == point["omega_p.alpha"]
        assert cfg["regularizer_params"]["kd.tau"] == point["kd.tau"]
        assert cfg["train"]["lr"] == point["train.lr"] and cfg["seed"] == 0
        assert "test_accuracy" not in a  # the search never looks at the test split
        if t.state.name == "COMPLETE":
            assert a["status"] == "completed" and t.value == a["val_accuracy"]
            assert sorted(t.intermediate_values) == [0, 1, 2]  # one report per epoch


def test_best_point_is_chosen_on_validation(searched):
    s = searched["summary"]
    done = [t for t in _study(searched).get_trials() if t.state.name == "COMPLETE"]
    best = max(done, key=lambda t: t.value)
    assert s.best_number == best.number and s.best_value == best.value
    assert s.best_point == json.loads(best.user_attrs["point"])


def test_best_point_is_rerun_on_test_in_the_suite_study(searched):
    from harness.experiments.records import records_frame

    s = searched["summary"]
    df = records_frame(searched["storage"], "tinytune")
    tuned = df[df["method"] == TUNED_ROW]
    assert sorted(tuned["seed"]) == [0, 1]
    assert tuned["table"].eq("compression").all() and tuned["tuned"].eq(True).all()
    assert tuned["tune_trial"].eq(s.best_number).all()
    assert tuned["test_accuracy"].notna().all()
    for cfg in tuned["config"]:
        assert cfg["regularizer_params"]["omega_p.alpha"] == s.best_point["omega_p.alpha"]
        assert cfg["train"]["lr"] == s.best_point["train.lr"]
    assert set(tuned["key"]).isdisjoint(searched["keys"])  # never a grid job's key
    assert set(tuned["anchor"]) <= set(searched["keys"])
    accs = list(tuned["test_accuracy"])
    assert s.test_mean == pytest.approx(sum(accs) / 2)
    assert s.test_std == pytest.approx(math.sqrt(sum((a - s.test_mean) ** 2 for a in accs) / 2))


def test_plots_table_and_report(searched):
    from harness.reports.tables import write_report

    s, out = searched["summary"], searched["tmp"] / "results" / "tinytune"
    for what in ("history", "intermediate", "md"):
        assert s.paths[what].parent == out and s.paths[what].stat().st_size > 0, what
    md = s.paths["md"].read_text()
    assert f"trial {s.best_number}" in md and "Re-runs of the best point" in md
    table = md.split("## Trials")[1]
    assert "trial" in table and "val acc. (%)" in table and "omega_p.alpha" in table
    if s.completed >= 2:
        assert s.paths["importance"].stat().st_size > 0
    else:
        assert "importances: not drawn" in md
    board = write_report("tinytune", searched["storage"], out, keys=searched["keys"])
    text = board["md"].read_text()
    rows = [
        line.split("|")[1].strip()
        for line in text.splitlines()
        if line.startswith("| ") and "±" in line
    ]
    assert rows == ["none", "omega_p+kd", TUNED_ROW]  # the tuned row beside the grid rows
    assert s.paths["md"].name in text


def test_a_second_call_adds_trials_and_pruning_stops_them(searched):
    """Same storage, same space: the study goes on. A pruner that always prunes (validation
    accuracy is below 1.01) stops every new trial after its first epoch."""
    from harness.experiments.records import records_frame
    from harness.experiments.search import tune

    before = records_frame(searched["storage"], "tinytune")
    s = tune(
        searched["path"],
        storage=searched["storage"],
        trials=2,
        results_root=searched["tmp"] / "results",
        log=None,
        overrides=["search.pruner={name: threshold, lower: 1.01}"],
    )
    assert s.study == searched["summary"].study
    assert (s.trials, s.pruned, s.total) == (2, 2, 5)
    pruned = [t for t in _study(searched).get_trials() if t.state.name == "PRUNED"]
    assert len(pruned) >= 2
    for t in pruned[-2:]:
        assert list(t.intermediate_values) == [0] and t.user_attrs["status"] == "pruned"
    # the best trial is unchanged, so its re-runs are found recorded, not run again
    assert s.best_number == searched["summary"].best_number
    assert s.test_mean == pytest.approx(searched["summary"].test_mean)
    assert len(records_frame(searched["storage"], "tinytune")) == len(before)


def test_cli_tune(searched, capsys):
    from harness.cli import main

    code = main(
        [
            "tune",
            str(searched["path"]),
            "--trials",
            "1",
            "--storage",
            searched["storage"],
            "--results",
            str(searched["tmp"] / "results"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "1 trial(s) added" in out and "6 in the study" in out
    assert "best: trial" in out and "re-runs on test:" in out and "leaderboard.md" in out
    assert main(["tune", str(searched["path"]), "--stage", "teacher"]) == 1
    assert "no search block for stage 'teacher'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tune", str(searched["path"]), "--trials", "0"])


def test_a_broken_setup_stops_the_search(searched):
    """A choice no model has (a tap that does not exist) fails each trial with the same error:
    the search stops after three instead of burning every trial."""
    from harness.experiments.search import tune

    text = SUITE.replace(
        "    kd.tau: {choices: [2, 4]}\n", "    omega_p.taps: {choices: [[nowhere]]}\n"
    )
    path = searched["tmp"] / "broken.yaml"
    path.write_text(text)
    lines: list[str] = []
    s = tune(
        path,
        storage=searched["storage"],
        trials=10,
        reruns=False,
        plots=False,
        results_root=searched["tmp"] / "results",
        log=lines.append,
    )
    assert (s.trials, s.failed, s.best_number) == (3, 3, None)
    trials = [line for line in lines if line.startswith("[tune")]
    assert len(trials) == 3 and all("FAILED" in t and "nowhere" in t for t in trials), trials
    assert lines[-1].startswith("stopping: 3 trials in a row")
    assert "no trial completed" in s.paths["md"].read_text()


def test_a_trial_over_several_seeds_scores_their_mean(tmp_path):
    """``seeds: [0, 1]``: each trial trains once per seed; its value is the mean validation
    accuracy, and the pruner sees every epoch of every seed as one step."""
    import optuna

    from harness.experiments.search import tune

    text = SUITE.replace("  trials: 3\n", "  trials: 2\n  seeds: [0, 1]\n")
    assert parse_suite(text, "t.yaml").searches[0].seeds == (0, 1)
    with pytest.raises(SuiteError, match="give 'seed' or 'seeds', not both"):
        parse_suite(text.replace("  seeds: [0, 1]\n", "  seeds: [0, 1]\n  seed: 0\n"), "t.yaml")
    with pytest.raises(SuiteError, match="distinct integers|listed twice"):
        parse_suite(text.replace("seeds: [0, 1]", "seeds: [0, 0]"), "t.yaml")
    path = tmp_path / "t.yaml"
    path.write_text(text.replace("{name: median, n_startup_trials: 1}", "{name: none}"))
    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    s = tune(
        path, storage=storage, results_root=tmp_path / "r", log=None, plots=False, reruns=False
    )
    assert s.completed == 2
    for t in optuna.load_study(study_name=s.study, storage=storage).get_trials():
        accs = t.user_attrs["val_accuracies"]
        assert len(accs) == 2 and t.value == pytest.approx(sum(accs) / 2)
        assert sorted(t.intermediate_values) == list(range(6))  # 2 seeds x 3 epochs
        assert len(t.user_attrs["keys"]) == 2
