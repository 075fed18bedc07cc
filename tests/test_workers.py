"""Many workers, one storage: claims, take-over of a dead worker's job, every job
recorded exactly once, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from harness.experiments.claims import DONE, FAILED, RECORDING, RUNNING, Claims

ROOT = Path(__file__).resolve().parents[1]

SUITE = textwrap.dedent("""\
    name: {name}
    seeds: [0, 1, 2]
    stages:
      teacher:
        model: mlp
        model_params: {{widths: [32]}}
        dataset: digits
        train: {{epochs: 3, batch_size: 64, lr: 0.05}}
      students:
        model: mlp
        model_params: {{widths: [8]}}
        dataset: digits
        dataset_params: {{n_per_class: 10}}
        teacher: teacher
        train: {{epochs: {epochs}, batch_size: 25, lr: 0.05}}
        regularizers:
          - none
          - kd: {{tau: 4}}
          - omega_p: {{alpha: 0.01}}
    """)


def _storages(tmp_path, pg_url):
    return {"sqlite": f"sqlite:///{tmp_path / 'claims.sqlite3'}", "postgresql": pg_url}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_claims_are_exclusive_and_taken_over_when_stale(backend, tmp_path, request):
    url = (
        f"sqlite:///{tmp_path / 'claims.sqlite3'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    suite = f"claims-{uuid.uuid4().hex[:8]}"
    a = Claims(url, suite, stale_after=1.5, heartbeat=0.5, worker="host-a:1:a")
    b = Claims(url, suite, stale_after=1.5, heartbeat=0.5, worker="host-b:2:b")
    try:
        assert a.try_claim("k1").claim is not None
        assert b.try_claim("k1").claim is None  # held, heartbeat fresh
        assert a.states()["k1"].state == RUNNING
        time.sleep(2.0)  # a's heartbeat keeps the claim alive
        assert b.try_claim("k1").claim is None
        assert a.begin_record("k1") and a.states()["k1"].state == RECORDING
        assert a.finish("k1", ok=True) and b.try_claim("k1").claim is None  # done: never again
        assert b.states()["k1"].state == DONE

        assert b.try_claim("k2").claim is not None
        b._stop.set()  # b hangs: no more heartbeats
        time.sleep(2.0)
        got = a.try_claim("k2")
        assert got.claim is not None and got.claim.attempts == 2 and got.previous == "host-b:2:b"
        assert not b.begin_record("k2")  # b wakes up: it may not record
        assert a.begin_record("k2") and a.finish("k2", ok=True)

        assert a.try_claim("k3").claim is not None and a.finish("k3", ok=False)
        assert b.try_claim("k3").claim is None and a.states()["k3"].state == FAILED
        assert a.reset_failed() == 1 and b.try_claim("k3").claim is not None
        assert a.try_claim("k2", retake_done=True).claim is not None  # a deleted teacher artefact
    finally:
        a.close()
        b.close()


def test_claim_of_a_dead_process_is_taken_over_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'claims.sqlite3'}"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with Claims(url, "s", stale_after=3600, heartbeat=1, worker="ghost") as ghost:
        ghost.pid = dead.pid  # the claim of a process that is gone (SIGKILL: nothing released)
        assert ghost.try_claim("k").claim is not None
        ghost._held.clear()
    with Claims(url, "s", stale_after=3600, heartbeat=1) as c:
        got = c.try_claim("k")  # no waiting for stale_after
        assert got.claim is not None and got.claim.attempts == 2 and got.previous == "ghost"


def _worker(
    suite: Path, storage: str, results: Path, log: Path, env: dict | None = None
) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "worker",
            str(suite),
            "--storage",
            storage,
            "--results",
            str(results),
            "--no-progress",
            "--heartbeat",
            "1",
            "--stale-after",
            "30",
        ],
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=None if env is None else {**os.environ, **env},
    )


def _records(storage: str, name: str):
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    return study.get_trials(deepcopy=False)


@pytest.mark.parametrize("batched", [False, True], ids=["one-model", "batched"])
def test_three_workers_one_killed_every_job_recorded_once(pg_url, tmp_path, batched):
    """Three ``otransfer worker`` processes on PostgreSQL; one is SIGKILLed in the middle of
    a job. The other two take its job over (same host: at once) and finish the suite: every
    job has exactly one completed record, the killed attempt a failed one. One model at a
    time, the victim dies past its job's first checkpoint and the job resumes from it. Batched
    (teachers trained first, so that every student has siblings), the victim is the first
    worker seen holding two student claims, the job it runs and a sibling claimed for its
    batch: they are trained again by the others, each recorded once, and no batch is trained
    by two workers."""
    import sqlalchemy as sa

    from harness.experiments.runner import run_suite
    from harness.experiments.suite import expand, load_suite

    name = f"workers-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(name=name, epochs=200 if batched else 40))
    jobs = expand(load_suite(path))
    keys = {j.key for j in jobs}
    results = tmp_path / "results"
    if batched:
        teachers = [j for j in jobs if j.stage == "teacher"]
        run_suite(
            path, storage=pg_url, progress=False, results_root=results, log=None, jobs=teachers
        )
    # one model at a time: a batched group writes no per-job checkpoint to resume from
    env = {"OTRANSFER_NO_BATCH": "0" if batched else "1"}
    procs = [_worker(path, pg_url, results, tmp_path / f"w{i}.log", env) for i in range(3)]
    by_pid = {p.pid: p for p in procs}
    engine = sa.create_engine(pg_url)
    deadline = time.time() + 120
    killed_key = victim = None
    try:
        while time.time() < deadline and killed_key is None:
            try:
                with engine.connect() as c:
                    rows = c.execute(
                        sa.text("select key, pid, state from otransfer_claims where suite = :s"),
                        {"s": name},
                    ).all()
            except (sa.exc.ProgrammingError, sa.exc.OperationalError):
                rows = []  # a fresh database: no worker has created the table yet
            held = collections.defaultdict(list)
            for k, pid, st in rows:
                if st == RUNNING and pid in by_pid:
                    held[pid].append(k)
            for pid, ks in held.items():
                art = results / name / "artefacts"
                if len(ks) >= 2 if batched else (art / f"{ks[0]}.ckpt").is_file():
                    victim = by_pid[pid]  # training a batch / past its first checkpoint
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    killed_key = ks
                    break
            else:
                time.sleep(0.1)
        assert killed_key is not None, "no worker was seen inside a job"
        codes = [p.wait(timeout=300) for p in procs if p is not victim]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        engine.dispose()
    logs = "\n".join((tmp_path / f"w{i}.log").read_text() for i in range(3))
    assert codes == [0, 0], logs
    trials = _records(pg_url, name)
    completed = [
        t.user_attrs["key"]
        for t in trials
        if t.state.name == "COMPLETE" and t.user_attrs.get("status") == "completed"
    ]
    assert collections.Counter(completed) == collections.Counter(keys), logs  # each once
    # the job the victim was running has its attempt marked lost (its batch siblings had no
    # record yet; killed between two siblings' records, none has), completed by another worker
    lost = [t for t in trials if t.user_attrs.get("key") in killed_key and t.state.name == "FAIL"]
    assert [t.user_attrs["reason"] for t in lost] == ["worker lost"] or (batched and not lost)
    for t in lost:
        (taken,) = [
            u
            for u in trials
            if u.user_attrs.get("key") == t.user_attrs["key"] and u.state.name == "COMPLETE"
        ]
        if not batched:  # from the checkpoint, not from scratch
            assert taken.user_attrs["resumed_from_epoch"] >= 1
        assert taken.user_attrs["worker"] != t.user_attrs["worker"]
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert "taken over from" in logs
    trained = re.findall(r"^students (\w+): \d+ jobs \(seeds (.*)\) trained as one", logs, re.M)
    assert len(trained) == len(set(trained)), logs  # no batch trained by two workers
    # nothing left to do: a resume runs nothing and rewrites nothing
    from harness.experiments.runner import run_suite

    s = run_suite(path, storage=pg_url, progress=False, results_root=results, log=None)
    assert (s.completed, s.failed, s.skipped) == (0, 0, len(keys))
    assert len(_records(pg_url, name)) == len(trials)
    assert not list((results / name / "artefacts").glob("*.ckpt"))


def test_run_with_workers_on_sqlite(tmp_path):
    """``otransfer run --workers 2`` on the default SQLite storage: two processes, every job
    once, then the leaderboard."""
    name = f"local-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(name=name, epochs=2))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(path),
            "--workers",
            "2",
            "--results",
            str(tmp_path / "results"),
            "--no-progress",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    storage = f"sqlite:///{tmp_path / 'results' / name / 'runs.sqlite3'}"
    completed = [t.user_attrs["key"] for t in _records(storage, name) if t.state.name == "COMPLETE"]
    assert len(completed) == len(set(completed)) == 12
    assert "2 workers exited with [0, 0]" in out.stdout
    assert "12 already done" in out.stdout  # the parent's own pass finds nothing left
    assert (tmp_path / "results" / name / "leaderboard.md").is_file()


def test_unreachable_storage_is_a_clear_error(tmp_path, capsys):
    from harness.cli import main

    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(name="unreachable", epochs=1))
    code = main(
        [
            "run",
            str(path),
            "--storage",
            "postgresql+psycopg2://nobody:secret@127.0.0.1:1/none",
            "--results",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "storage 'postgresql+psycopg2://nobody:***@127.0.0.1:1/none' cannot be opened" in err
    assert "secret" not in err


def test_suite_under_torchrun_matches_one_process(tmp_path):
    """``torchrun --nproc_per_node 2 -m harness.cli run SUITE``: rank 0 claims and records,
    both ranks train each job (DDP, global batch); the records equal one process's run."""
    import socket

    name = f"ddp-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "suite.yaml"
    path.write_text(
        SUITE.format(name=name, epochs=3)
        .replace("seeds: [0, 1, 2]", "seeds: [0]")
        .replace("batch_size: 25", "batch_size: 24")
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(port),
            "-m",
            "harness.cli",
            "run",
            str(path),
            "--results",
            str(tmp_path / "ddp"),
            "--no-progress",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("4 jobs, 4 run") == 1  # one report: rank 0's

    from harness.experiments.records import records_frame
    from harness.experiments.runner import run_suite

    single = f"sqlite:///{tmp_path / 'single.sqlite3'}"
    run_suite(path, storage=single, progress=False, results_root=tmp_path / "one", log=None)
    ddp = f"sqlite:///{tmp_path / 'ddp' / name / 'runs.sqlite3'}"
    a = records_frame(ddp, name).set_index("key")["test_accuracy"].sort_index()
    b = records_frame(single, name).set_index("key")["test_accuracy"].sort_index()
    assert len(a) == 4 and list(a.index) == list(b.index)
    assert (a - b).abs().max() < 0.01  # same batches, same gradients: the same accuracies


def test_two_tune_processes_share_one_search_on_postgresql(pg_url, tmp_path):
    """Two ``otransfer tune`` processes on one PostgreSQL storage add their trials to the same
    search study; the teachers are trained once and no re-run is recorded twice."""
    import optuna
    from test_tune import SUITE as TUNE_SUITE

    name = f"tune-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "suite.yaml"
    path.write_text(TUNE_SUITE.replace("name: tinytune", f"name: {name}"))
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "tune",
        str(path),
        "--storage",
        pg_url,
        "--trials",
        "2",
        "--results",
        str(tmp_path / "results"),
    ]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    searches = [
        s
        for s in optuna.get_all_study_summaries(pg_url)
        if s.study_name.startswith(f"{name}:tune:")
    ]
    assert len(searches) == 1 and searches[0].n_trials == 4  # one study, both calls' trials
    trials = optuna.load_study(study_name=name, storage=pg_url).get_trials()
    done = collections.Counter(t.user_attrs["key"] for t in trials if t.state.name == "COMPLETE")
    assert done and max(done.values()) == 1  # teachers and re-runs: each recorded once
    teachers = [t for t in trials if t.user_attrs.get("stage") == "teacher"]
    assert len([t for t in teachers if t.state.name == "COMPLETE"]) == 2  # 2 seeds, once each


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_workers_starting_together_on_a_fresh_database(backend, tmp_path, request):
    """Six workers open a new, empty database at the same moment: each creates the Optuna
    schema and the claims table if missing. PostgreSQL's CREATE ... IF NOT EXISTS is not
    atomic across sessions (measured: 10 of 18 openings failed before the retry); SQLite
    reports the same race as a unique constraint on the schema version (seen in CI)."""
    import sqlalchemy as sa

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    else:
        pg_url = request.getfixturevalue("pg_url")
        db = f"fresh_{uuid.uuid4().hex[:8]}"
        engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as c:
            c.execute(sa.text(f"CREATE DATABASE {db}"))
        engine.dispose()
        url = pg_url.rsplit("/", 1)[0] + "/" + db
    code = (
        "import sys; from harness.experiments import records; "
        "from harness.experiments.claims import Claims; "
        "records.open_study(sys.argv[1], 's'); Claims(sys.argv[1], 's').close(); "
        "print('opened')"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(6)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(o.strip().endswith("opened") for o in outs), "\n".join(outs)


def test_a_worker_killed_after_recording_is_not_run_again(tmp_path):
    """A worker killed between writing its record and marking its claim done leaves a
    'recording' claim: the next worker takes it over, finds the record, and runs nothing."""
    import sqlalchemy as sa

    from harness.experiments.runner import run_suite

    name = f"rec-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(name=name, epochs=1).replace("seeds: [0, 1, 2]", "seeds: [0]"))
    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    kw = dict(storage=storage, progress=False, results_root=tmp_path / "r", log=None)
    first = run_suite(path, **kw)
    n = len(_records(storage, name))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    engine = sa.create_engine(storage)
    with engine.begin() as c:  # the last student's claim, as its killed worker left it
        key = first.keys[-1]
        c.execute(
            sa.text(
                "update otransfer_claims set state = 'recording', pid = :p, "
                "worker = 'gone' where key = :k"
            ),
            {"p": dead.pid, "k": key},
        )
    lines = []
    again = run_suite(path, **{**kw, "log": lines.append})
    assert (again.completed, again.failed) == (0, 0)
    assert len(_records(storage, name)) == n  # nothing run, nothing rewritten
    engine.dispose()
    assert any(key in line and "skipped" in line for line in lines)  # its record counts


def test_the_storage_url_can_come_from_the_environment(pg_url, tmp_path, monkeypatch, capsys):
    """OTRANSFER_STORAGE stands for --storage (a password stays off the command line; libpq
    adds PGPASSWORD or ~/.pgpass to a URL without one): run and report find the records."""
    from harness.cli import STORAGE_ENV, main

    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(name="from_env", epochs=1))
    monkeypatch.setenv(STORAGE_ENV, pg_url)
    args = ["--results", str(tmp_path / "r")]
    assert main(["run", str(path), "--no-progress", "--set", "seeds=[0]", *args]) == 0
    out = capsys.readouterr().out
    assert "records in postgresql" in out
    assert main(["report", str(path), "--set", "seeds=[0]", "--out", str(tmp_path / "o")]) == 0
    assert "| none" in capsys.readouterr().out
