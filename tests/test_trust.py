"""What the runner reads back from a results folder, and writes into it.

Nothing read back is trusted unless it is provably this project's own output for that job: a
pending result carries an HMAC proof under a secret kept outside the results folder, a
teacher's weights the SHA-256 its record keeps, a checkpoint a proof beside it. Writes never
leave the results folder through a link and are atomic; a full disk is one line. In every case
the storage's COMPLETE records are counted before and after: none is lost, changed or
duplicated."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import sqlite3
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

from harness.experiments.suite import expand, load_suite

SUITE = textwrap.dedent("""\
    name: {name}
    seeds: [0]
    stages:
      teacher:
        model: mlp
        model_params: {{widths: [16]}}
        dataset: digits
        train: {{epochs: 1, batch_size: 64, lr: 0.05}}
      students:
        model: mlp
        model_params: {{widths: [4]}}
        dataset: digits
        dataset_params: {{n_per_class: 5}}
        teacher: teacher
        train: {{epochs: 2, batch_size: 25, lr: 0.05}}
        regularizers:
          - none
          - kd: {{tau: 4}}
    """)


@pytest.fixture(autouse=True)
def _secret_home(tmp_path_factory, monkeypatch):
    """This user's secret in a folder of the test's own (never ~/.config)."""
    home = tmp_path_factory.getbasetemp() / "xdg-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))


def _suite(tmp_path, name="tiny") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SUITE.format(name=name))
    return path


def _jobs(suite):
    jobs = expand(load_suite(suite))
    return [j for j in jobs if j.stage == "teacher"], [j for j in jobs if j.stage != "teacher"]


def _complete(storage: str, suite: str = "tiny") -> list[tuple[str, float]]:
    """Every COMPLETE record of ``suite``: (key, value), duplicates kept."""
    import optuna

    try:
        study = optuna.load_study(study_name=suite, storage=storage)
    except KeyError:  # no study yet
        return []
    return sorted(
        (t.user_attrs["key"], t.value)
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    )


def _run(suite, results, storage=None, **kw):
    from harness.experiments.runner import run_suite

    lines: list[str] = []
    kw.setdefault("log", lines.append)
    s = run_suite(suite, storage=storage, progress=False, results_root=results, **kw)
    return s, lines


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One finished run of the tiny suite (its storage inside the results folder), copied by
    the tests that need records but no training."""
    tmp = tmp_path_factory.mktemp("base")
    os.environ.setdefault("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "xdg-config"))
    suite = _suite(tmp)
    s, _ = _run(suite, tmp / "R")
    assert s.completed == 3 and s.failed == 0
    from harness.reports.tables import write_report

    write_report("tiny", results_root=tmp / "R")  # runs.csv, leaderboard.*, students.png
    return tmp


def _copy(base, tmp_path) -> tuple[Path, Path, str]:
    shutil.copytree(base / "R", tmp_path / "R", symlinks=True)
    suite = _suite(tmp_path)
    return suite, tmp_path / "R", f"sqlite:///{tmp_path / 'R' / 'tiny' / 'runs.sqlite3'}"


# --------------------------------------------------------------------------- 1. planted results


def test_a_planted_result_file_is_ignored_and_its_job_trained(tmp_path):
    """The reported case: `artefacts/<key>.result.json` saying completed at 100 % was recorded
    COMPLETE without training, then `run` died on KeyError 'wall_time'."""
    suite = _suite(tmp_path)
    teachers, students = _jobs(suite)
    art = tmp_path / "R" / "tiny" / "artefacts"
    art.mkdir(parents=True)
    for job in teachers + students:
        (art / f"{job.key}.result.json").write_text(
            json.dumps({"status": "completed", "test_accuracy": 1.0, "val_accuracy": 1.0})
        )
    s, lines = _run(suite, tmp_path / "R")
    assert s.completed == 3 and s.failed == 0
    done = _complete(f"sqlite:///{tmp_path / 'R' / 'tiny' / 'runs.sqlite3'}")
    assert len(done) == 3 and len(dict(done)) == 3  # each job trained and recorded once
    assert all(v < 1.0 for _, v in done)
    assert sum("ignored" in line and "no proof" in line for line in lines) == 3
    assert not list(art.glob("*.result.json"))


def _forge(kind: str, path: Path, job, other, monkeypatch) -> None:
    from harness.experiments import records
    from harness.experiments.artefacts import save_pending

    good = {
        "status": "completed",
        "reason": None,
        "test_accuracy": 0.99,
        "val_accuracy": 0.9,
        "best_val_accuracy": 0.9,
        "wall_time": 1.0,
        "epochs_completed": 2,
    }
    if kind == "another job's":  # a genuine file of another job, renamed
        save_pending(path, other, good)
    elif kind == "edited":  # a genuine file whose accuracy was raised after it was signed
        save_pending(path, job, good)
        kept = json.loads(path.read_text())
        kept["metrics"]["test_accuracy"] = 1.0
        path.write_text(json.dumps(kept))
    elif kind == "random proof":
        save_pending(path, job, good)
        path.write_text(json.dumps({**json.loads(path.read_text()), "proof": "0" * 64}))
    elif kind == "another code version":
        with monkeypatch.context() as m:
            m.setattr(records, "git_sha", lambda: "0" * 40)
            save_pending(path, job, good)
    elif kind == "bad metrics":  # signed, but no job's metrics: accuracy 1.5, no wall time
        save_pending(path, job, {**good, "test_accuracy": 1.5, "wall_time": None})
    elif kind == "huge":
        with open(path, "wb") as fh:
            fh.truncate(64 * 2**20)  # sparse
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "link":  # to a genuine result of another job, outside the folder
        elsewhere = path.parent.parent.parent.parent / "elsewhere.json"
        save_pending(elsewhere, other, good)
        path.symlink_to(elsewhere)


@pytest.mark.parametrize(
    "kind",
    [
        "another job's",
        "edited",
        "random proof",
        "another code version",
        "bad metrics",
        "huge",
        "fifo",
        "folder",
        "link",
    ],
)
def test_a_result_file_that_is_not_ours_for_this_job_is_ignored(kind, base, tmp_path, monkeypatch):
    """Proof (HMAC over key, config hash, code version, metrics) and schema both checked."""
    suite, results, storage = _copy(base, tmp_path)
    before = _complete(storage)
    teachers, students = _jobs(suite)
    job = dataclasses_replace_key(students[0])
    art = results / "tiny" / "artefacts"
    _forge(kind, art / f"{job.key}.result.json", job, students[1], monkeypatch)
    s, lines = _run(suite, results, jobs=[job])
    assert s.completed == 1 and s.failed == 0, s.failures
    after = _complete(storage)
    assert set(before) <= set(after) and len(after) == len(before) + 1
    value = dict(after)[job.key]
    assert value not in (0.99, 1.0, 1.5)  # trained, not the file's number
    assert any("ignored" in line and job.key in line for line in lines), lines


def dataclasses_replace_key(job):
    """``job`` under a key of its own (a job not yet recorded in the copied storage)."""
    import dataclasses

    return dataclasses.replace(job, key=f"{job.key}x")


def test_a_result_kept_through_an_outage_is_recorded_once_its_proof_verifies(
    base, tmp_path, monkeypatch
):
    """The pending file's purpose still holds: trained before an outage, recorded after."""
    import harness.experiments.runner as runner
    from harness.experiments.artefacts import save_pending

    suite, results, storage = _copy(base, tmp_path)
    before = _complete(storage)
    job = dataclasses_replace_key(_jobs(suite)[1][0])
    kept = {
        "status": "completed",
        "reason": None,
        "test_accuracy": 0.4321,
        "val_accuracy": 0.4,
        "best_val_accuracy": 0.4,
        "wall_time": 1.0,
        "epochs_completed": 2,
        "final_losses": {"ce": 1.0},
        "epochs": [{"epoch": 1}],
    }
    assert (
        save_pending(results / "tiny" / "artefacts" / f"{job.key}.result.json", job, kept) is None
    )
    monkeypatch.setattr(runner, "run_job", lambda *a, **k: pytest.fail("trained again"))
    s, _ = _run(suite, results, jobs=[job])
    assert s.completed == 1
    assert _complete(storage) == sorted(before + [(job.key, 0.4321)])


# --------------------------------------------------------------------------- teacher weights


class _Evil:
    """Unpickling it would run ``open(marker, 'w')``: what a crafted weights file does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant_weights(kind: str, path: Path, tmp_path: Path) -> None:
    if kind == "other weights":  # a valid state_dict: the right shapes, other numbers
        state = torch.load(path, weights_only=True)
        torch.save({k: torch.zeros_like(v) for k, v in state.items()}, path)
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "pickle":  # would run code if unpickled without weights_only
        marker = tmp_path / "pwned"
        path.write_bytes(pickle.dumps(_Evil(str(marker))))
    elif kind == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif kind == "link to a device":
        path.unlink()
        path.symlink_to("/dev/zero")


@pytest.mark.parametrize(
    "kind", ["other weights", "truncated", "pickle", "fifo", "link to a device"]
)
def test_teacher_weights_that_do_not_match_their_record_are_never_loaded(kind, tmp_path):
    """A teacher recorded done keeps its weights' size and SHA-256 in its record; a file that
    does not match is not loaded: its students fail with one line, and the teacher is not
    trained (nor recorded) again."""
    suite = _suite(tmp_path)
    teachers, students = _jobs(suite)
    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    s, _ = _run(suite, tmp_path / "R", storage, jobs=teachers)
    assert s.completed == 1
    before = _complete(storage)
    _plant_weights(kind, tmp_path / "R" / "tiny" / "artefacts" / f"{teachers[0].key}.pt", tmp_path)
    s, _ = _run(suite, tmp_path / "R", storage)
    assert s.completed == 0 and s.failed == 2
    for _key, reason in s.failures:
        assert teachers[0].key in reason and "\n" not in reason
        assert "SHA-256" in reason or "not a regular file" in reason, reason
    assert _complete(storage) == before
    assert not (tmp_path / "pwned").exists()


# --------------------------------------------------------------------------- checkpoints


def _interrupted_checkpoint(tmp_path, name="job.ckpt"):
    """A checkpoint ``train`` wrote after epoch 1 of 3, and the run's arguments."""
    from torch import nn
    from torch.utils.data import TensorDataset

    from harness.training.loop import TrainConfig, train

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    data = TensorDataset(x, (x[:, 0] > 0).long())

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))

    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05, seed=0)
    path = tmp_path / name

    def stop(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(net(), data, data, config=cfg, checkpoint_path=path, progress=False, on_epoch=stop)
    return path, lambda p: train(net(), data, data, config=cfg, checkpoint_path=p, progress=False)


@pytest.mark.parametrize("kind", ["tampered", "another job's", "no proof"])
def test_a_checkpoint_is_resumed_only_with_a_proof_that_we_wrote_it_for_this_job(kind, tmp_path):
    from harness.training.checkpoints import proof_path

    path, run = _interrupted_checkpoint(tmp_path)
    clean = run(tmp_path / "fresh.ckpt")
    if kind == "tampered":  # the weights changed, the proof kept
        ckpt = torch.load(path, weights_only=True)
        ckpt["model"] = {k: torch.zeros_like(v) for k, v in ckpt["model"].items()}
        torch.save(ckpt, path)
    elif kind == "another job's":  # a genuine checkpoint and proof, under another name
        other, _ = _interrupted_checkpoint(tmp_path, "other.ckpt")
        shutil.copy(other, path)
        shutil.copy(proof_path(other), proof_path(path))
    else:
        os.unlink(proof_path(path))
    with pytest.warns(UserWarning, match="training from scratch"):
        res = run(path)
    assert res.status == "completed" and res.resumed_from_epoch == 0
    assert res.final_val_accuracy == clean.final_val_accuracy


def test_a_genuine_checkpoint_still_resumes(tmp_path):
    path, run = _interrupted_checkpoint(tmp_path)
    assert run(path).resumed_from_epoch == 1


def test_a_checkpoint_of_another_config_is_set_aside_and_the_job_trained(tmp_path):
    """The runner trains from scratch (it used to fail the job on every run until the file
    was removed by hand)."""
    from harness.training.checkpoints import save_atomic

    suite = _suite(tmp_path)
    teachers, _ = _jobs(suite)
    path, _ = _interrupted_checkpoint(tmp_path)
    ckpt = torch.load(path, weights_only=True)  # signed by us, but of another job's config
    save_atomic(ckpt, tmp_path / "R" / "tiny" / "artefacts" / f"{teachers[0].key}.ckpt")
    s, lines = _run(suite, tmp_path / "R", jobs=teachers)
    assert s.completed == 1 and s.failed == 0, s.failures
    assert any("another config" in line and "from scratch" in line for line in lines), lines
    assert len(_complete(f"sqlite:///{tmp_path / 'R' / 'tiny' / 'runs.sqlite3'}")) == 1


@pytest.mark.parametrize("planted", ["a folder as the checkpoint", "a proof alone, a link"])
def test_what_is_planted_where_a_checkpoint_goes_is_set_aside(planted, tmp_path):
    suite = _suite(tmp_path)
    teachers, _ = _jobs(suite)
    art = tmp_path / "R" / "tiny" / "artefacts"
    art.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    ckpt = art / f"{teachers[0].key}.ckpt"
    if planted == "a folder as the checkpoint":
        (ckpt / "inside").mkdir(parents=True)
    else:
        Path(f"{ckpt}.proof").symlink_to(victim)
    s, _ = _run(suite, tmp_path / "R", jobs=teachers)
    assert s.completed == 1 and s.failed == 0, s.failures
    assert victim.read_text() == "precious\n"
    assert len(_complete(f"sqlite:///{tmp_path / 'R' / 'tiny' / 'runs.sqlite3'}")) == 1


def test_a_teacher_recorded_without_a_digest_fails_its_students_in_one_line(tmp_path, monkeypatch):
    """A teacher recorded by an older otransfer (no SHA-256 in its record): its weights cannot
    be verified, and it is not trained again."""
    import harness.experiments.train_job as train_job

    suite = _suite(tmp_path)
    teachers, _ = _jobs(suite)
    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    real = train_job.save_state
    monkeypatch.setattr(
        train_job,
        "save_state",
        lambda model, path, root: {"artefact": real(model, path, root)["artefact"]},
    )
    _run(suite, tmp_path / "R", storage, jobs=teachers)
    before = _complete(storage)
    monkeypatch.setattr(train_job, "save_state", real)
    s, _ = _run(suite, tmp_path / "R", storage)
    assert s.completed == 0 and s.failed == 2 and _complete(storage) == before
    assert all(
        "without a digest of its weights" in r and "fresh storage" in r for _, r in s.failures
    )


# --------------------------------------------------------------------------- 2. links


@pytest.mark.parametrize("where", ["runs.csv", "leaderboard.md", "students.png", "verdicts.csv"])
def test_a_planted_link_never_redirects_a_report_write(where, base, tmp_path, capsys):
    """The reported case: `ln -s ../victim.txt R/SUITE/runs.csv` then `run` overwrote the
    victim. The report refuses, in one line naming the link, and writes nothing."""
    from harness.cli import main

    suite, results, storage = _copy(base, tmp_path)
    before = _complete(storage)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = results / "tiny" / where
    link.unlink(missing_ok=True)
    link.symlink_to(os.path.relpath(victim, link.parent))
    main(["run", str(suite), "--results", str(results), "--no-progress"])
    assert victim.read_text() == "precious\n"
    out = capsys.readouterr()
    assert f"{link} is a symbolic link to {victim}" in out.out + out.err
    assert _complete(storage) == before


@pytest.mark.parametrize("where", ["artefacts", "artefacts/TEACHER.pt"])
def test_a_planted_link_never_redirects_an_artefact_write(where, tmp_path):
    suite = _suite(tmp_path)
    teachers, _ = _jobs(suite)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim.pt"
    victim.write_text("precious\n")
    link = tmp_path / "R" / "tiny" / where.replace("TEACHER", teachers[0].key)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(elsewhere if where == "artefacts" else victim)
    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    s, _ = _run(suite, tmp_path / "R", storage)
    assert s.completed == 0 and s.failures
    assert (
        f"{link} is a symbolic link to {elsewhere if where == 'artefacts' else victim}"
        in s.failures[0][1]
    )
    assert sorted(p.name for p in elsewhere.iterdir()) == ["victim.pt"]
    assert victim.read_text() == "precious\n" and _complete(storage) == []


def test_artefacts_swapped_for_a_link_mid_training_redirect_no_checkpoint(tmp_path):
    """The training loop knows no results folder; the runner confines its writes to it."""
    from harness.experiments.runner import run_job
    from harness.training import safe_io

    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE.format(name="tiny").replace("epochs: 1,", "epochs: 2,"))
    teacher = _jobs(suite)[0][0]
    art = tmp_path / "R" / "tiny" / "artefacts"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def swap(epoch, record):  # after epoch 1's checkpoint
        shutil.rmtree(art)
        art.symlink_to(elsewhere)

    with pytest.raises(safe_io.UnsafePathError, match=f"{art} is a symbolic link to"):
        run_job(teacher, {teacher.key: teacher}, art, progress=False, save=True, on_epoch=swap)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("where", ["tiny", "tiny/runs.sqlite3", "tiny/runs.sqlite3-journal"])
def test_a_planted_link_never_redirects_the_default_storage(where, tmp_path, capsys):
    """SQLite follows links: the suite's folder, its database and journals are checked."""
    from harness.cli import main

    suite = _suite(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim"
    victim.write_bytes(b"")
    link = tmp_path / "R" / where
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(elsewhere if where == "tiny" else victim)
    assert main(["run", str(suite), "--results", str(tmp_path / "R"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"{link} is a symbolic link" in err and len(err.strip().splitlines()) == 1
    assert victim.read_bytes() == b"" and sorted(os.listdir(elsewhere)) == ["victim"]


def test_writes_are_atomic_and_replace_what_was_planted_where_the_file_goes(base, tmp_path):
    """A hard link, a FIFO and our own temporary name planted as a link: replaced, never
    written through (a FIFO would block a plain write forever)."""
    from harness.reports.tables import write_report

    suite, results, storage = _copy(base, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    folder = results / "tiny"
    for name in ("runs.csv", "leaderboard.csv"):
        (folder / name).unlink()
    os.link(victim, folder / "runs.csv")  # a hard link
    os.mkfifo(folder / "leaderboard.csv")
    (folder / f"leaderboard.md.tmp.{os.getpid()}").symlink_to(victim)
    before = _complete(storage)
    paths = write_report("tiny", storage, results_root=results)
    assert victim.read_text() == "precious\n" and _complete(storage) == before
    assert (folder / "runs.csv").read_text().startswith("key,")
    assert (folder / "leaderboard.csv").is_file() and paths["md"].is_file()
    assert not list(folder.glob("*.tmp.*"))


@pytest.mark.parametrize("planted", ["folder", "fifo"])
def test_a_folder_or_fifo_where_a_file_belongs_is_one_line(planted, base, tmp_path, capsys):
    from harness.cli import main

    suite, results, storage = _copy(base, tmp_path)
    name = "runs.csv" if planted == "folder" else "runs.sqlite3"
    path = results / "tiny" / name
    before = _complete(storage)
    kept = path.read_bytes()
    path.unlink()
    path.mkdir() if planted == "folder" else os.mkfifo(path)
    code = main(["run", str(suite), "--results", str(results), "--no-progress"])
    out = capsys.readouterr()
    if planted == "folder":
        assert f"{path} is a folder where a file is expected" in out.out
    else:
        assert code == 1 and f"{path} is not a regular file" in out.err
        assert len(out.err.strip().splitlines()) == 1
        path.unlink()
        path.write_bytes(kept)
    assert _complete(storage) == before


def test_a_fifo_given_as_a_runs_csv_to_report_is_one_line(tmp_path, capsys):
    """`report --from-csv` (and `report --all`) read committed CSVs: regular files only."""
    from harness.cli import main

    suite = _suite(tmp_path)
    fifo = tmp_path / "runs.csv"
    os.mkfifo(fifo)
    code = main(["report", str(suite), "--from-csv", str(fifo), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and f"{fifo} is not a regular file" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("results", ["a file", "a loop"])
def test_a_results_folder_that_is_a_file_or_a_link_loop_is_one_line(results, tmp_path, capsys):
    from harness.cli import main

    suite = _suite(tmp_path)
    path = tmp_path / "R"
    if results == "a file":
        path.write_text("")
    else:
        path.symlink_to(path)
    assert main(["run", str(suite), "--results", str(path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("where", ["tiny", "tiny/artefacts"])
def test_a_file_where_a_folder_belongs_is_one_line(where, tmp_path, capsys):
    from harness.cli import main

    suite = _suite(tmp_path)
    path = tmp_path / "R" / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    assert main(["run", str(suite), "--results", str(tmp_path / "R"), "--no-progress"]) == 1
    out = capsys.readouterr()
    assert f"{path} is not a folder" in (out.err if where == "tiny" else out.out)
    assert path.read_text() == ""
    if where != "tiny":  # the storage was made there: no record went into it
        assert _complete(f"sqlite:///{tmp_path / 'R' / 'tiny' / 'runs.sqlite3'}") == []


def test_a_storage_of_another_programs_schema_is_one_line(tmp_path, capsys):
    from harness.cli import main

    suite = _suite(tmp_path)
    db = tmp_path / "R" / "tiny" / "runs.sqlite3"
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as c:
        c.execute("create table studies (y int)")
    assert main(["run", str(suite), "--results", str(tmp_path / "R"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert ("not an otransfer (Optuna) database" in err or "another program" in err) and len(
        err.strip().splitlines()
    ) == 1


def test_a_results_folder_that_is_itself_a_link_is_followed(base, tmp_path):
    """The user names the results folder: a link there is theirs to make."""
    suite, results, storage = _copy(base, tmp_path)
    link = tmp_path / "link"
    link.symlink_to(results)
    before = _complete(storage)
    s, _ = _run(suite, link)
    assert s.skipped == 3 and _complete(storage) == before


def test_a_worker_log_is_never_appended_through_a_link(tmp_path):
    from harness.training import safe_io

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    log = tmp_path / "R" / "tiny" / "logs" / "worker-0.log"
    log.parent.mkdir(parents=True)
    log.symlink_to(victim)
    with pytest.raises(safe_io.UnsafePathError, match="symbolic link"):
        safe_io.open_append(log, tmp_path / "R")
    assert victim.read_text() == "precious\n"


def test_a_planted_storage_of_another_suite_lends_no_record(base, tmp_path):
    """Another suite's runs.sqlite3 planted as this suite's: its records stay its own, and
    this suite's jobs are trained."""
    import optuna

    optuna.copy_study(
        from_study_name="tiny",
        from_storage=f"sqlite:///{base / 'R' / 'tiny' / 'runs.sqlite3'}",
        to_storage=f"sqlite:///{tmp_path / 'other.sqlite3'}",
        to_study_name="other",
    )
    suite = _suite(tmp_path)
    (tmp_path / "R" / "tiny").mkdir(parents=True)
    shutil.copy(tmp_path / "other.sqlite3", tmp_path / "R" / "tiny" / "runs.sqlite3")
    storage = f"sqlite:///{tmp_path / 'R' / 'tiny' / 'runs.sqlite3'}"
    theirs = _complete(storage, "other")
    s, _ = _run(suite, tmp_path / "R")
    assert s.skipped == 0 and s.completed == 3
    assert _complete(storage, "other") == theirs and len(_complete(storage)) == 3


# --------------------------------------------------------------------------- 3. duplicates


def _two_folders(tmp_path, storage, drop_first: bool):
    """Teachers run with --results R1; then the suite with --results R2 (R1 moved away when
    ``drop_first``): nothing is trained, nor recorded COMPLETE, twice."""
    name = f"dup{uuid.uuid4().hex[:8]}"
    suite = _suite(tmp_path, name)
    teachers, students = _jobs(suite)
    s, _ = _run(suite, tmp_path / "R1", storage, jobs=teachers)
    assert s.completed == 1
    before = _complete(storage, name)
    if drop_first:
        (tmp_path / "R1").rename(tmp_path / "R1-away")
    s, lines = _run(suite, tmp_path / "R2", storage)
    after = _complete(storage, name)
    assert len(after) == len(dict(after))  # no key COMPLETE twice
    assert set(before) <= set(after)  # the teacher's record unchanged
    return s, after, teachers, students


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_job_recorded_done_is_done_whatever_the_results_folder(backend, tmp_path, request):
    """The reported case: a worker with --results R2 retrained the teachers a worker with R1
    recorded, and recorded them COMPLETE again. Now R2's students load R1's weights from the
    path the teacher's record keeps, once their SHA-256 matches."""
    storage = (
        f"sqlite:///{tmp_path / 'shared.sqlite3'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    s, after, teachers, students = _two_folders(tmp_path, storage, drop_first=False)
    assert s.completed == 2 and s.failed == 0 and s.skipped == 1, s.failures
    assert sorted(dict(after)) == sorted(j.key for j in teachers + students)
    assert not (tmp_path / "R2" / s.suite / "artefacts" / f"{teachers[0].key}.pt").exists()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_teacher_whose_weights_are_elsewhere_fails_its_students_in_one_line(
    backend, tmp_path, request
):
    storage = (
        f"sqlite:///{tmp_path / 'shared.sqlite3'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    s, after, teachers, students = _two_folders(tmp_path, storage, drop_first=True)
    assert s.completed == 0 and s.failed == 2 and len(after) == 1
    for _, reason in s.failures:
        assert "point --results at the folder that holds them" in reason
        assert str(tmp_path / "R1") in reason and "\n" not in reason


# --------------------------------------------------------------------------- 4. full disk


def test_a_full_disk_under_the_storage_is_said_at_once(tmp_path, monkeypatch):
    """It was 'storage unreachable' after 300 s of retries: waiting frees no space."""
    import sqlalchemy.exc as sa

    import harness.experiments.records as records
    from harness.experiments.records import StorageError

    monkeypatch.setenv("OTRANSFER_STORAGE_RETRY", "3")
    suite = _suite(tmp_path)
    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    real, calls = records.finish_record, []

    def full(study, trial, metrics):
        calls.append(metrics.get("status"))
        if len(calls) == 2:
            raise sa.OperationalError(
                "UPDATE ...", {}, sqlite3.OperationalError("database or disk is full")
            )
        return real(study, trial, metrics)

    monkeypatch.setattr(records, "finish_record", full)
    with pytest.raises(StorageError) as info:
        _run(suite, tmp_path / "R", storage)
    msg = str(info.value)
    assert msg.startswith("disk full") and "finished records are kept" in msg
    assert "\n" not in msg and len(calls) == 2  # said at the first failure, not retried
    before = _complete(storage)
    assert len(before) == 1  # the teacher's
    monkeypatch.setattr(records, "finish_record", real)
    s, _ = _run(suite, tmp_path / "R", storage)  # space freed: the run finishes
    after = _complete(storage)
    assert s.failed == 0 and len(after) == 3 and len(dict(after)) == 3
    assert set(before) <= set(after)


class _FillsUp:
    """A file object that writes ``room`` bytes, then meets a full disk."""

    def __init__(self, fh, room):
        self.fh, self.room = fh, room

    def write(self, data):
        if len(data) > self.room:
            self.fh.write(bytes(data[: self.room]))
            self.fh.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def test_a_disk_that_fills_mid_checkpoint_fails_the_job_in_one_line_and_leaves_no_tmp(
    tmp_path, monkeypatch
):
    import builtins

    from harness.training import safe_io

    suite = _suite(tmp_path)
    teachers, students = _jobs(suite)
    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    _run(suite, tmp_path / "R", storage, jobs=teachers)
    before = _complete(storage)
    monkeypatch.setattr(
        safe_io, "open", lambda *a, **k: _FillsUp(builtins.open(*a, **k), 100), raising=False
    )
    s, _ = _run(suite, tmp_path / "R", storage)
    assert s.completed == 0 and s.failed == 2
    art = tmp_path / "R" / "tiny" / "artefacts"
    for key, reason in s.failures:
        assert f"disk full writing {art / key}.ckpt" in reason  # the checkpoint or its proof
        assert "(No space left on device)" in reason and "\n" not in reason
    assert not list(art.glob("*.tmp.*")) and not list(art.glob("*.ckpt*"))
    assert _complete(storage) == before
    monkeypatch.setattr(safe_io, "open", builtins.open)  # space freed
    s, _ = _run(suite, tmp_path / "R", storage)
    assert s.completed == 2 and set(before) <= set(_complete(storage))


def test_a_result_that_cannot_be_kept_on_a_full_disk_is_recorded_all_the_same(
    tmp_path, monkeypatch
):
    from harness.training import safe_io

    suite = _suite(tmp_path)
    teachers, _ = _jobs(suite)
    real = safe_io.write_text

    def full(path, text, root=None):
        if str(path).endswith(".result.json"):
            raise safe_io.disk_full(path)
        return real(path, text, root)

    monkeypatch.setattr(safe_io, "write_text", full)
    s, lines = _run(suite, tmp_path / "R", jobs=teachers)
    assert s.completed == 1 and s.failed == 0
    assert any("not kept" in line and "disk full writing" in line for line in lines), lines
    assert len(_complete(f"sqlite:///{tmp_path / 'R' / 'tiny' / 'runs.sqlite3'}")) == 1


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (root only; skipped elsewhere)."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_real_disk_that_fills_after_the_database_exists_is_one_line(tiny_disk, tmp_path, capsys):
    """The reported case, on a real 1 MiB file system: the storage and the artefacts on it,
    filled once the database exists."""
    from harness.cli import main

    suite = _suite(tmp_path)
    teachers, _ = _jobs(suite)
    storage = f"sqlite:///{tiny_disk / 'R' / 'tiny' / 'runs.sqlite3'}"
    s, _ = _run(suite, tiny_disk / "R", jobs=teachers)
    assert s.completed == 1
    before = _complete(storage)
    with open(tiny_disk / "filler", "wb", buffering=0) as fh:
        try:
            while fh.write(b"\0" * 4096):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    code = main(["run", str(suite), "--results", str(tiny_disk / "R"), "--no-progress"])
    out = capsys.readouterr()
    assert code == 1 and "disk full" in out.out + out.err
    assert "unreachable" not in out.out + out.err
    assert not list((tiny_disk / "R").rglob("*.tmp.*"))
    (tiny_disk / "filler").unlink()
    assert _complete(storage) == before


# --------------------------------------------------------------------------- the secret


def test_a_secret_others_can_read_is_refused_in_one_line(tmp_path, monkeypatch):
    from harness.training import proof

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    tag = proof.sign("result", {"a": 1})
    path = proof.secret_path()
    assert path == tmp_path / "cfg" / "otransfer" / "secret"
    assert path.stat().st_mode & 0o777 == 0o600  # made on first use, for this user only
    assert proof.verify("result", {"a": 1}, tag) and not proof.verify("result", {"a": 2}, tag)
    assert not proof.verify("checkpoint", {"a": 1}, tag)  # one purpose's proof is not another's
    os.chmod(path, 0o644)
    proof._secret.cache_clear()
    with pytest.raises(proof.ProofError, match=f"chmod 600 {path}"):
        proof.sign("result", {"a": 1})
    assert not proof.verify("result", {"a": 1}, tag)
    os.chmod(path, 0o600)
