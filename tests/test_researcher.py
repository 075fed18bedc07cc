"""A researcher's own suite: claims of one's own on any stage (item 2), decided and
printed exactly as the papers' claims are, bad ones one line naming file, line and key; plain
output that says how much work is left (item 6); a missing dataset folder found before the first
job (item 7)."""

from __future__ import annotations

import pytest

SUITE = """\
name: own
seeds: [0, 1, 2, 3, 4, 5]
stages:
  teacher:
    model: mlp
    model_params: {widths: [32]}
    dataset: digits
    dataset_params: {n_per_class: 10}
    train: {epochs: 2, batch_size: 50, lr: 0.05}
  students:
    table: mine
    model: mlp
    model_params: {widths: [8]}
    dataset: digits
    dataset_params: {n_per_class: 5, test_pool: fixed}
    teacher: teacher
    train: {epochs: 1, batch_size: 25, lr: 0.05}
    regularizers: [none, kd]
    premises: ["kd >= none"]
    claims: ["kd > none"]
"""


def _write(tmp_path, text):
    path = tmp_path / "own.yaml"
    path.write_text(text)
    return path


def test_own_claims_become_the_stage_reference(tmp_path):
    from harness.experiments.suite import expand, load_suite

    jobs = [j for j in expand(load_suite(str(_write(tmp_path, SUITE)))) if j.report]
    ref = jobs[0].reference
    assert ref["paper"] == "" and ref["claims"] == ["kd > none"]
    assert ref["premises"] == ["kd >= none"]


@pytest.mark.parametrize(
    "change, key, words",
    [
        ('claims: ["kd >> none"]', "stages.students.claims.0", "ROW > ROW"),
        ('claims: ["kd > nobody"]', "stages.students.reference.claims.0", "nobody"),
    ],
)
def test_a_bad_own_claim_is_one_line(tmp_path, change, key, words):
    from harness.experiments.suite import SuiteError, load_suite

    path = _write(tmp_path, SUITE.replace('claims: ["kd > none"]', change))
    with pytest.raises(SuiteError) as info:
        load_suite(str(path))
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and words in msg, msg


def test_own_claims_are_decided_like_the_papers(tmp_path, capsys):
    """Run the suite for real (tiny), then its verdicts: the same columns, the six verdicts,
    Holm within the suite table's family, the sign-flip test on the fixed test pool."""
    import pandas as pd

    from harness.cli import main

    path = _write(tmp_path, SUITE)
    code = main(["run", str(path), "--results", str(tmp_path / "r"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    # plain output says how much work there is before the first job, and what is left after each
    lines = out.splitlines()
    assert lines[0].startswith("own: 18 jobs, 0 already done, 18 to run; records in sqlite:")
    assert any(line.endswith("18 of 18 done") for line in lines)
    assert any(" of 18 done, ~" in line and line.endswith(" left") for line in lines)
    assert "own.mine" in out or "kd > none" in out  # verdict summary printed first
    v = pd.read_csv(tmp_path / "r" / "own" / "verdicts.csv")
    assert list(v["kind"]) == ["premise", "claim"] and set(v["family"]) == {"own.mine"}
    assert list(v["method"]) == ["sign-flip", "sign-flip"] and (v["n"] == 6).all()
    assert v["entry_id"].isna().all() and v["paper"].isna().all()
    assert set(v["verdict"]) <= {
        "holds",
        "reversed",
        "equivalent",
        "inconclusive",
        "vacuous",
        "not tested",
    }
    md = (tmp_path / "r" / "own" / "leaderboard.md").read_text()
    assert "this suite (its own claims, no paper)" in md and "paper:" not in md


def test_a_missing_dataset_folder_is_one_line_before_any_job(tmp_path, monkeypatch, capsys):
    """The folder a run needs is checked before its first job, not found
    when each job fails."""
    from harness.cli import main

    monkeypatch.setenv("OTRANSFER_DATA", str(tmp_path / "data"))
    suite = tmp_path / "c10.yaml"
    suite.write_text(
        "name: c10\nseeds: [0, 1]\nstages:\n  s:\n    model: mlp\n"
        "    model_params: {in_features: 3072}\n    dataset: cifar10\n"
        "    train: {epochs: 1, batch_size: 8}\n"
    )
    code = main(["run", str(suite), "--results", str(tmp_path / "r"), "--no-progress"])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 1 and "\n" not in err, err
    assert f"no folder {str(tmp_path / 'data' / 'cifar10')!r} (2 job(s) to run need it)" in err
    assert "FAILED" not in captured.out  # no job was started, none recorded as failed


def test_job_labels_show_the_grid_point_and_backends_warm_before_the_bars(tmp_path, monkeypatch):
    """The job's label carries its grid point; the backends a suite
    uses are imported before the bars are drawn (their import-time warnings print above)."""
    import types

    from harness.experiments import runner
    from harness.experiments.suite import expand, load_suite

    path = _write(
        tmp_path,
        SUITE.replace(
            "    regularizers: [none, kd]\n",
            "    regularizers: [none, kd]\n    grid: {alpha: [0.5, 1.0]}\n",
        ),
    )
    jobs = [j for j in expand(load_suite(str(path))) if j.regularizer == "kd"]
    fake = types.SimpleNamespace(number={j.key: i for i, j in enumerate(jobs, 1)}, jobs=jobs)
    tags = {runner._SuiteRun.tag(fake, j) for j in jobs}
    assert any("kd (alpha=0.5)" in t for t in tags) and any("kd (alpha=1.0)" in t for t in tags)

    imported = []
    monkeypatch.setattr("importlib.import_module", lambda name: imported.append(name))
    runner._warm_backends(jobs)
    assert imported == []  # no KeOps method in this suite: nothing imported
    keops = [types.SimpleNamespace(config_json=lambda: '{"method": "keops"}')]
    runner._warm_backends(keops)
    assert imported == ["pykeops"]
