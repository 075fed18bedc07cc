"""Past one machine: heartbeats on the database's clock, the submitit launcher,
``otransfer status``, the suite schema and the progress view."""

from __future__ import annotations

import time
import uuid

import pytest
from test_workers import SUITE  # the suite of the many-workers tests

from harness.experiments import claims as claims_mod
from harness.experiments.claims import RUNNING, Claims


class _SkewedTime:
    """A ``time`` module whose wall clock is ``offset`` seconds off (sleep and the monotonic
    clocks are the real ones)."""

    def __init__(self, offset: float):
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset

    def __getattr__(self, name):
        return getattr(time, name)


def _url(backend, tmp_path, request):
    return (
        f"sqlite:///{tmp_path / 'claims.sqlite3'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("offset", [-5 * 3600.0, 5 * 3600.0])
def test_a_worker_with_a_clock_hours_off_neither_steals_nor_loses_claims(
    backend, offset, tmp_path, request, monkeypatch
):
    """Two workers on two hosts, one whose clock is five hours off (either way): neither takes
    the other's live claim, and a claim whose heartbeat stops is still taken over after
    ``stale_after`` seconds of the database's clock."""
    url = _url(backend, tmp_path, request)
    suite = f"skew-{uuid.uuid4().hex[:8]}"
    skewed = _SkewedTime(offset)
    monkeypatch.setattr(claims_mod, "time", skewed)  # every wall-clock read of claims.py
    a = Claims(url, suite, stale_after=2.0, heartbeat=0.4, worker="host-a:1:a")  # skewed
    b = Claims(url, suite, stale_after=2.0, heartbeat=0.4, worker="host-b:2:b")
    a.host, b.host = "host-a", "host-b"  # two machines: only heartbeats tell liveness
    try:
        db = b.db_now()
        assert abs(db - time.time()) < 5.0  # the database's clock, not the skewed one
        assert a.try_claim("mine").claim is not None and b.try_claim("theirs").claim is not None
        stamp = a.states()["mine"].heartbeat
        assert abs(stamp - db) < 5.0, "the skewed worker stamped its own clock"
        for _ in range(3):  # several stale_after/2 periods: the heartbeats keep both alive
            time.sleep(1.2)
            assert b.try_claim("mine").claim is None, "the skewed worker's live claim was stolen"
            assert a.try_claim("theirs").claim is None, "the skewed worker stole a live claim"
        assert a.begin_record("mine") and a.finish("mine", ok=True)
        b._stop.set()  # b hangs: its heartbeat stops
        time.sleep(2.6)
        got = a.try_claim("theirs")  # stale on the database's clock: taken over
        assert got.claim is not None and got.claim.attempts == 2 and got.previous == "host-b:2:b"
        assert a.states()["theirs"].state == RUNNING
    finally:
        a.close()
        b.close()


# --------------------------------------------------------------------------- launch


def test_launch_local_two_workers_one_killed_every_job_recorded_once(tmp_path):
    """``otransfer launch --local --array 2 --wait`` (submitit's LocalExecutor, the code path
    of a SLURM array): one worker is SIGKILLed inside a job, past its first checkpoint; the
    other takes the job over and the suite completes with every job recorded once."""
    import collections
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import optuna
    import sqlalchemy as sa

    from harness.experiments.batching import NO_BATCH_ENV
    from harness.experiments.suite import expand, load_suite

    pytest.importorskip("submitit")
    root = Path(__file__).resolve().parents[1]
    name = f"launch-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "suite.yaml"
    path.write_text(
        SUITE.format(name=name, epochs=40).replace("      - omega_p: {alpha: 0.01}\n", "")
    )  # the workers tests' suite, 9 jobs
    keys = {j.key for j in expand(load_suite(path))}
    results = tmp_path / "results"
    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    env = {k: v for k, v in os.environ.items() if k != "OTRANSFER_STORAGE"}
    env["OMP_NUM_THREADS"] = "1"
    env[NO_BATCH_ENV] = "1"  # one job at a time, each with its checkpoint (a seed batch has none)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "launch",
            str(path),
            "--local",
            "--array",
            "2",
            "--wait",
            "--results",
            str(results),
            "--storage",
            storage,
            "--heartbeat",
            "1",
            "--stale-after",
            "30",
        ],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline, killed = time.time() + 240, None
    engine = sa.create_engine(storage)
    try:
        while time.time() < deadline and killed is None and proc.poll() is None:
            try:
                with engine.connect() as c:
                    rows = c.execute(
                        sa.text("select key, pid, state from otransfer_claims where suite = :s"),
                        {"s": name},
                    ).all()
            except sa.exc.OperationalError:  # no table yet
                rows = []
            for key, pid, state in rows:
                art = results / name / "artefacts"
                ckpt, pending = art / f"{key}.ckpt", art / f"{key}.result.json"
                # mid-training: a checkpoint and no result trained yet (once the result is
                # pending, the next worker records it as trained and nothing resumes)
                if state == RUNNING and key in keys and ckpt.is_file() and not pending.exists():
                    os.kill(pid, signal.SIGKILL)  # a lost node: nothing is released
                    killed = key
                    break
            time.sleep(0.2)
        out, _ = proc.communicate(timeout=max(10, deadline - time.time()))
    finally:
        if proc.poll() is None:
            proc.kill()
        engine.dispose()
    assert killed is not None, out
    assert "2 workers submitted (local): job ids" in out, out
    assert f"{name}: {len(keys)} jobs: {len(keys)} done, 0 running, 0 failed, 0 waiting" in out, out
    assert proc.returncode == 0, out
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    completed = collections.Counter(
        t.user_attrs["key"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE
    )
    assert set(completed) == keys and set(completed.values()) == {1}, completed
    resumed = [
        t
        for t in trials
        if t.user_attrs["key"] == killed and t.state == optuna.trial.TrialState.COMPLETE
    ]
    assert resumed[0].user_attrs.get("resumed_from_epoch", 0) >= 1  # from the checkpoint
    assert any(f.suffix == ".out" for f in (results / name / "submitit").iterdir())


class _FakeExecutor:
    """submitit's AutoExecutor as the launch tests see it: what it is given, nothing run."""

    seen: dict = {}

    def __init__(self, folder, cluster, **at_init):
        self.seen.update(folder=folder, cluster=cluster, at_init=at_init, tasks=[])

    def update_parameters(self, **params):
        self.seen["params"] = params

    def batch(self):
        import contextlib

        return contextlib.nullcontext()

    def submit(self, task):
        import types

        self.seen["tasks"].append(task)
        return types.SimpleNamespace(job_id=f"42_{len(self.seen['tasks']) - 1}")


def test_launch_slurm_config_reaches_update_parameters_under_the_flags(
    tmp_path, monkeypatch, capsys
):
    """``launch --slurm-config FILE``: the file's mapping goes to submitit's
    ``update_parameters`` as it is, over launch's defaults and under the flags given; nothing is
    written to os.environ, and a URL given with --storage reaches the tasks as an argument."""
    import os

    submitit = pytest.importorskip("submitit")
    from harness.cli import STORAGE_ENV, main

    monkeypatch.setattr(submitit, "AutoExecutor", _FakeExecutor)
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    config = tmp_path / "slurm.yaml"
    config.write_text(
        "slurm_partition: gpu\ntimeout_min: 60\nslurm_qos: high\n"
        "slurm_additional_parameters: {exclusive: true}\n"
    )
    url = "postgresql+psycopg2://u:s3cret@db.example/runs"
    argv = ["launch", "mini", "--slurm", "--slurm-config", str(config), "--array", "3"]
    argv += ["--partition", "cpu", "--storage", url, "--results", str(tmp_path / "r")]
    env_before = dict(os.environ)
    assert main(argv) == 0
    assert dict(os.environ) == env_before
    seen = _FakeExecutor.seen
    assert seen["cluster"] == "slurm" and seen["at_init"] == {"slurm_max_num_timeout": 3}
    assert seen["params"] == {
        "timeout_min": 60,
        "tasks_per_node": 1,
        "nodes": 1,
        "slurm_signal_delay_s": 120,
        "name": "otransfer-mini",
        "slurm_array_parallelism": 3,
        "slurm_partition": "cpu",
        "slurm_qos": "high",
        "slurm_additional_parameters": {"exclusive": True},
    }
    assert len(seen["tasks"]) == 3 and seen["tasks"][0].storage == url
    out = capsys.readouterr().out
    assert "3 workers submitted (slurm): job ids 42_0 42_1 42_2" in out and "s3cret" not in out
    # a URL of the environment stays there: the tasks inherit it, no pickle holds it
    monkeypatch.setenv(STORAGE_ENV, url)
    assert main(argv[:-4] + ["--results", str(tmp_path / "r"), "--time", "30"]) == 0
    assert seen["tasks"][0].storage is None and seen["params"]["timeout_min"] == 30


@pytest.mark.parametrize(
    "text, why",
    [
        ("- slurm_partition\n- gpu\n", "must be a mapping of submitit parameters"),
        ("1: gpu\n", "keys must be submitit parameter names (strings); got 1"),
        ("slurm_partition: [gpu\n", "not valid YAML at line 2"),
        (None, "cannot be read (No such file or directory)"),
        ("slurm_partiton: gpu\n", "submitit refuses the SLURM parameters: Unknown argument"),
    ],
)
def test_launch_with_a_bad_slurm_config_is_one_line_naming_the_file(
    text, why, tmp_path, monkeypatch, capsys
):
    pytest.importorskip("submitit")
    from harness.cli import main

    config = tmp_path / "slurm.yaml"
    if text is not None:
        config.write_text(text)
    # --local: submitit's own check of the parameters runs here too (no srun needed)
    argv = ["launch", "mini", "--local", "--slurm-config", str(config)]
    argv += ["--results", str(tmp_path / "r")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("otransfer launch: "), err
    assert why in err[0], err
    if "submitit" not in why:
        assert f"SLURM config {config}: " in err[0], err


def test_launch_slurm_without_slurm_is_one_line(tmp_path, monkeypatch, capsys):
    """On a machine without SLURM, submitit raises "Could not detect srun": one line that
    says so and names --local, not a traceback."""
    submitit = pytest.importorskip("submitit")
    from harness.cli import main

    def no_srun(*args, **kwargs):
        raise RuntimeError('Could not detect "srun", are you indeed on a slurm cluster?')

    monkeypatch.setattr(submitit, "AutoExecutor", no_srun)
    argv = ["launch", "mini", "--slurm", "--storage", "postgresql+psycopg2://u@h/db"]
    assert main(argv + ["--results", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("otransfer launch: no SLURM here"), err
    assert "--local" in err[0]


# --------------------------------------------------------------------------- schema

_BAD = {  # a malformed suite for each kind of declaration the schema carries
    "unknown top key": {
        "name": "x",
        "stages": {"a": {"model": "mlp", "dataset": "digits"}},
        "stagse": {},
    },
    "unknown stage key": {
        "name": "x",
        "stages": {"a": {"model": "mlp", "dataset": "digits", "epochs": 3}},
    },
    "unknown model": {"name": "x", "stages": {"a": {"model": "mlpp", "dataset": "digits"}}},
    "unknown dataset": {"name": "x", "stages": {"a": {"model": "mlp", "dataset": "digit"}}},
    "lr a string": {
        "name": "x",
        "stages": {"a": {"model": "mlp", "dataset": "digits", "train": {"lr": "fast"}}},
    },
    "unknown train key": {
        "name": "x",
        "stages": {"a": {"model": "mlp", "dataset": "digits", "train": {"epoch": 3}}},
    },
    "unknown schedule": {
        "name": "x",
        "stages": {"a": {"model": "mlp", "dataset": "digits", "train": {"schedule": "linear"}}},
    },
    "unknown regularizer": {
        "name": "x",
        "stages": {"a": {"model": "mlp", "dataset": "digits", "regularizers": ["omega_q"]}},
    },
    "negative seed": {
        "name": "x",
        "seeds": [-1],
        "stages": {"a": {"model": "mlp", "dataset": "digits"}},
    },
    "name with a slash": {"name": "../x", "stages": {"a": {"model": "mlp", "dataset": "digits"}}},
    "no model": {"name": "x", "stages": {"a": {"dataset": "digits"}}},
    "select other": {
        "name": "x",
        "stages": {"a": {"model": "mlp", "dataset": "digits", "select": "test"}},
    },
}


def test_schema_accepts_every_shipped_suite_and_rejects_what_the_checker_rejects(tmp_path):
    import glob

    import jsonschema
    import yaml

    from harness.experiments import suite as S
    from harness.experiments import suite_types as T
    from harness.experiments.schema import suite_schema
    from harness.training.loop import TrainConfig

    schema = suite_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    # generated from the checker's declarations: the same keys
    assert set(schema["properties"]) == set(T.TOP_KEYS)
    assert set(schema["$defs"]["stage"]["properties"]) == set(T.STAGE_KEYS)
    assert set(schema["$defs"]["reference"]["properties"]) == set(T.REFERENCE_KEYS)
    assert set(schema["$defs"]["train"]["properties"]) == {
        f.name for f in __import__("dataclasses").fields(TrainConfig)
    }
    files = sorted(glob.glob(str(S.SUITES_DIR / "*.yaml")))
    assert len(files) > 20
    for f in files:
        errors = [e.message for e in v.iter_errors(yaml.safe_load(open(f)))]
        assert not errors, (f, errors[:3])
    for what, doc in _BAD.items():
        assert list(v.iter_errors(doc)), f"the schema accepts a suite with {what}"
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(doc))
        with pytest.raises(S.SuiteError):  # and so does the checker: they agree
            S.load_suite(path)


def test_schema_command_prints_the_schema(capsys, tmp_path):
    import json

    from harness.cli import main
    from harness.experiments.schema import suite_schema

    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(suite_schema()))
    out = tmp_path / "suite.schema.json"
    assert main(["schema", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["title"] == "otransfer suite"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_choosing_a_job_reads_only_the_live_claims_and_learns_done_jobs_from_a_refusal(
    backend, tmp_path, request
):
    """The pick's read (``states(unfinished=True, done_since=...)``) leaves out the done claims
    older than ``done_since``, so its cost does not grow with the jobs done; a job done but not
    read is refused by ``try_claim``, whose result says ``refused == "done"``."""
    from harness.experiments.claims import DONE, FAILED

    url = _url(backend, tmp_path, request)
    suite = f"pick-{uuid.uuid4().hex[:6]}"
    with Claims(url, suite, worker="a") as a, Claims(url, suite, worker="b") as b:
        for k in ("d1", "d2", "r", "f"):
            assert a.try_claim(k).claim is not None
        for k in ("d1", "d2"):
            assert a.begin_record(k) and a.finish(k, ok=True)
        assert a.finish("f", ok=False)
        assert set(b.states()) == {"d1", "d2", "r", "f"}
        assert set(b.states(unfinished=True)) == {"r", "f"}
        now = b.db_now()
        assert set(b.states(unfinished=True, done_since=now - 60)) == {"d1", "d2", "r", "f"}
        assert set(b.states(unfinished=True, done_since=now + 60)) == {"r", "f"}
        for key, refused in (("d1", DONE), ("f", FAILED), ("r", RUNNING)):
            got = b.try_claim(key)
            assert got.claim is None and got.refused == refused
        got = b.try_claim("new")
        assert got.claim is not None and got.refused is None
        got = b.try_claim("d2", retake_done=True).claim  # a teacher whose weights are gone
        assert got is not None and got.attempts == 2


def test_a_record_is_started_and_finished_in_few_storage_writes(tmp_path):
    """``start_record`` creates the trial with every attribute in one transaction and
    ``finish_record`` writes the metrics, the value and the state in one more: the attributes
    read back as written; one commit and at most 5 SQL statements each, where Optuna's
    per-attribute writer made 82 statements and 6 commits a record (scripts/record_bench.py),
    and one attribute a commit made 28 commits."""
    import sqlalchemy as sa

    from harness.experiments import records
    from harness.experiments.suite import expand, load_suite

    url = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    p = tmp_path / "s.yaml"
    p.write_text(SUITE.format(name="records-writes", epochs=1))
    suite = load_suite(p)
    job = expand(suite)[0]
    study = records.open_study(url, suite.name)
    engine = records._rdb(url).engine
    commits, sql = [], []
    sa.event.listen(engine, "commit", lambda conn: commits.append(1))
    sa.event.listen(engine, "before_cursor_execute", lambda *a: sql.append(a[2]))
    trial = records.start_record(study, job, extra={"worker": "w"})
    n_start, sql_start = len(commits), len(sql)
    metrics = {
        "status": "completed",
        "reason": None,
        "val_accuracy": 0.5,
        "test_accuracy": 0.75,
        "wall_time": 1.0,
        "final_losses": {"ce": 0.1},
        "epochs": [{"epoch": 1, "val_accuracy": 0.5}],
    }
    records.finish_record(study, trial, metrics)
    n_finish, sql_finish = len(commits) - n_start, len(sql) - sql_start
    assert (n_start, n_finish) == (1, 1), (n_start, n_finish)
    assert sql_start <= 5 and sql_finish <= 5, sql
    t = study.get_trials()[-1]
    assert t.state.name == "COMPLETE" and t.value == 0.75
    assert t.user_attrs["key"] == job.key and t.user_attrs["worker"] == "w"
    assert t.user_attrs["final_losses"] == {"ce": 0.1} and t.user_attrs["reason"] is None
    assert records.done_keys(url, suite.name) == {job.key}
    df = records.records_frame(url, suite.name)
    assert list(df["key"]) == [job.key] and df["test_accuracy"].iloc[0] == 0.75


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "memory"])
def test_records_upsert_fail_and_refuse_a_finished_trial(tmp_path, request, backend):
    """The one-statement writes on SQLite and PostgreSQL, and Optuna's public calls on a
    storage without the RDB parts (in memory), record the same: a failed job is FAIL with
    its reason, a non-finite accuracy is FAIL (as ``study.tell`` makes it), a metric written
    twice keeps the last value, and a finished trial takes no more writes."""
    import math

    import optuna

    from harness.experiments import records
    from harness.experiments.suite import expand, load_suite

    p = tmp_path / "s.yaml"
    p.write_text(SUITE.format(name=f"records-{backend}-{uuid.uuid4().hex[:8]}", epochs=1))
    suite = load_suite(p)
    job = expand(suite)[0]
    if backend == "memory":
        study = optuna.create_study(study_name=suite.name, direction="maximize")
        assert records._rdb_parts(study) is None
    else:
        url = (
            f"sqlite:///{tmp_path / 'runs.sqlite3'}"
            if backend == "sqlite"
            else request.getfixturevalue("pg_url")
        )
        study = records.open_study(url, suite.name)
        assert records._rdb_parts(study) is not None
    failed = records.start_record(study, job, extra={"worker": "w"})
    records.finish_record(study, failed, {"status": "failed", "reason": "ValueError: x"})
    nan = records.start_record(study, job)
    records.finish_record(study, nan, {"status": "completed", "test_accuracy": math.nan})
    ok = records.start_record(study, job, extra={"worker": "w"})
    records._set_user_attrs(study, ok._trial_id, {"worker": "w2", "note": [1, 2]})
    records.finish_record(study, ok, {"status": "completed", "test_accuracy": 0.5})
    with pytest.raises(RuntimeError, match="finished"):  # Optuna's UpdateFinishedTrialError
        records.finish_record(study, ok, {"status": "completed", "test_accuracy": 0.9})
    got = {t.number: t for t in study.get_trials()}
    assert [got[t.number].state.name for t in (failed, nan, ok)] == ["FAIL", "FAIL", "COMPLETE"]
    assert got[failed.number].user_attrs["reason"] == "ValueError: x"
    assert got[ok.number].value == 0.5 and got[ok.number].user_attrs["worker"] == "w2"
    assert got[ok.number].user_attrs["note"] == [1, 2]
    assert got[ok.number].user_attrs["key"] == job.key
    assert got[ok.number].datetime_complete is not None
