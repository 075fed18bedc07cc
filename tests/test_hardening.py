"""Runtime hardening: checkpoints that cannot run code or block a job, stale
temporary files, one-line errors."""

from __future__ import annotations

import math
import os
import pickle

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from harness.training.loop import CheckpointError, TrainConfig, load_checkpoint, train


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))


class _Evil:
    """Unpickling it would run ``open(marker, 'w')``: what a crafted checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


CFG = TrainConfig(epochs=2, batch_size=16, lr=0.05, seed=0)


@pytest.mark.parametrize("content", ["evil", "empty", "truncated", "foreign"])
def test_a_bad_checkpoint_runs_no_code_and_the_job_restarts_from_scratch(tmp_path, content):
    path, marker = tmp_path / "job.ckpt", tmp_path / "pwned"
    if content == "evil":
        torch.save({"model": _Evil(str(marker))}, path)
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "truncated":
        train(_net(), _data(), _data(seed=1), config=CFG, checkpoint_path=path, progress=False)
        path.write_bytes(path.read_bytes()[:200])
    else:
        with open(path, "wb") as f:
            pickle.dump({"not": "a checkpoint"}, f)
    with pytest.raises(CheckpointError, match=f"checkpoint {path}"):
        load_checkpoint(path)
    assert not marker.exists()
    with pytest.warns(UserWarning, match="training from scratch"):
        res = train(
            _net(), _data(), _data(seed=1), config=CFG, checkpoint_path=path, progress=False
        )
    assert not marker.exists()  # nothing ran
    assert res.status == "completed" and res.resumed_from_epoch == 0
    assert (tmp_path / "job.ckpt.bad").is_file()  # kept for a look, out of the way
    clean = train(_net(), _data(), _data(seed=1), config=CFG, progress=False)
    assert res.final_val_accuracy == clean.final_val_accuracy  # a fresh run, not a partial one


def test_a_checkpoint_holds_only_tensors_and_plain_data(tmp_path):
    path = tmp_path / "job.ckpt"
    train(_net(), _data(), _data(seed=1), config=CFG, checkpoint_path=path, progress=False)
    ckpt = torch.load(path, weights_only=True)  # would raise on any pickled object
    assert ckpt["epoch"] == 2 and isinstance(ckpt["rng"]["numpy"][1], torch.Tensor)


def test_stale_temporary_checkpoints_are_removed_and_live_ones_kept(tmp_path):
    from harness.experiments.artefacts import remove_stale_tmp

    ckpt = tmp_path / "abc.ckpt"
    dead = tmp_path / "abc.ckpt.tmp.999999999"  # no such process
    live = tmp_path / f"abc.ckpt.tmp.{os.getpid()}"
    other = tmp_path / "def.ckpt.tmp.999999999"  # another job's: not ours to touch
    for f in (dead, live, other):
        f.write_bytes(b"x")
    remove_stale_tmp(ckpt)
    assert not dead.exists() and live.exists() and other.exists()


def test_the_storage_password_is_never_printed_nor_on_a_command_line(monkeypatch, capsys, tmp_path):
    """`run --workers N` hands the URL to its workers through OTRANSFER_STORAGE (not argv,
    which `ps` shows), and the summary line prints it redacted."""
    import subprocess
    import types

    from harness import cli
    from harness.cli import running
    from harness.experiments.records import redact

    url = "postgresql+psycopg2://otransfer:s3cret@db.example:5432/runs"
    assert redact(url) == "postgresql+psycopg2://otransfer:***@db.example:5432/runs"
    seen = []

    class FakePopen:
        def __init__(self, cmd, env=None, **kw):
            seen.append((cmd, env))
            self.stdout = iter(())  # the lines teed to the worker's log

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    args = types.SimpleNamespace(
        suite="mini",
        set=(),
        quick=False,
        storage=url,
        results=tmp_path,
        stale_after=120,
        heartbeat=10,
        device=None,
        workers=2,
        no_progress=True,
        only=None,
        threads=None,
        no_batch=False,
    )
    assert running.spawn_local_workers(args) == 0
    assert len(seen) == 2
    for cmd, env in seen:
        assert not any("s3cret" in part for part in cmd)
        assert env[cli.STORAGE_ENV] == url
    summary = types.SimpleNamespace(
        suite="tiny",
        jobs=1,
        completed=0,
        skipped=1,
        by_others=0,
        failed=0,
        wall_time=0.1,
        storage=url,
        failures=[],
        keys=[],
    )
    monkeypatch.setattr("harness.experiments.runner.run_suite", lambda *a, **k: summary)
    monkeypatch.setattr(
        "harness.reports.tables.write_report",
        lambda *a, **k: (_ for _ in ()).throw(ValueError("no records")),
    )
    monkeypatch.setenv(cli.STORAGE_ENV, url)  # read when --storage is not given
    assert cli.main(["run", "mini", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "otransfer:***@db.example" in out


def test_report_on_a_storage_that_cannot_be_opened_is_one_line(capsys, tmp_path):
    from harness.cli import main

    bad = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'runs.sqlite3'}"
    assert main(["report", "mini", "--storage", bad]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be opened" in err[0] and "Traceback" not in err[0]


def test_a_missing_extra_is_one_line_naming_what_to_install(monkeypatch):
    import optuna

    from harness.experiments.records import StorageError, open_rdb
    from harness.zoo.models import optional_import

    with pytest.raises(
        ModuleNotFoundError,
        match=r"^model 'x' needs nosuchmod: "
        r"pip install 'otransfer\[vision\]'$",
    ):
        optional_import("nosuchmod.models", "vision", "model 'x'")

    def no_driver(*a, **k):
        raise ModuleNotFoundError("No module named 'psycopg2'")

    monkeypatch.setattr(optuna.storages, "RDBStorage", no_driver)
    with pytest.raises(
        StorageError, match=r"otransfer:\*\*\*@.*pip install 'otransfer\[postgres\]'"
    ):
        open_rdb("postgresql+psycopg2://otransfer:pw@localhost/x")


def test_the_base_install_has_what_the_default_command_needs():
    """`pip install otransfer` (no extras) runs `otransfer` (= run mini): its records need Optuna,
    its data scikit-learn; both are core dependencies, the rest are extras."""
    from pathlib import Path

    import tomllib

    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    core = {d.split(">")[0].split("=")[0].split("<")[0] for d in meta["dependencies"]}
    assert {"optuna", "scikit-learn", "torch", "pot", "pyyaml"} <= core
    extras = meta["optional-dependencies"]
    assert {"vision", "geomloss", "postgres", "timing", "cluster", "stats", "full", "test"} <= set(
        extras
    )
    flat = lambda names: {d.split(">")[0] for n in names for d in extras[n]}  # noqa: E731
    assert flat(["vision", "geomloss", "postgres", "timing", "cluster", "stats"]) == flat(["full"])


# --------------------------------------------------------------------------- suite input

from harness.experiments.suite import SuiteError, parse_suite  # noqa: E402

TINY = """\
name: tiny
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
"""


@pytest.mark.parametrize(
    "old,new,line,key,what",
    [
        ("name: tiny", "name: ../../escape", 1, "name", "plain name"),
        ("name: tiny", "name: /tmp/abs", 1, "name", "plain name"),
        ("name: tiny", 'name: ""', 1, "name", "plain name"),
        ("name: tiny", "name: " + "a" * 5000, 1, "name", "plain name"),
        ("name: tiny", 'name: "a\\0b"', 1, "name", "plain name"),
        ("seeds: [0, 1]", "seeds: [0, 0]", 2, "seeds", "listed twice"),
        ("seeds: [0, 1]", "seeds: [-1]", 2, "seeds", "[0, 2^31)"),
        ("seeds: [0, 1]", "seeds: [99999999999999999999]", 2, "seeds", "[0, 2^31)"),
        (
            "{epochs: 1, batch_size: 25",
            "{epochs: 2.5, batch_size: 25",
            15,
            "stages.students.train.epochs",
            "must be an integer",
        ),
        (
            "{epochs: 1, batch_size: 25",
            "{epochs: true, batch_size: 25",
            15,
            "stages.students.train.epochs",
            "must be an integer",
        ),
        (
            "batch_size: 25, lr: 0.05}",
            "batch_size: 25, lr: 1.0e30}",
            15,
            "stages.students.train.lr",
            "YAML reads '1.0e30' as a string",
        ),
        (
            "dataset_params: {n_per_class: 5}",
            "dataset_params: {classes: [11]}",
            13,
            "stages.students.dataset_params.classes",
            "at least 2 classes",
        ),
        (
            "dataset_params: {n_per_class: 5}",
            "dataset_params: {classes: [3, 11]}",
            13,
            "stages.students.dataset_params.classes",
            "has classes 0..9; got 11",
        ),
        (
            "dataset_params: {n_per_class: 5}",
            "dataset_params: {classes: []}",
            13,
            "stages.students.dataset_params.classes",
            "at least 2 classes",
        ),
        (
            "dataset_params: {n_per_class: 5}",
            "dataset_params: {classes: [1, 1, 2]}",
            13,
            "stages.students.dataset_params.classes",
            "lists a class twice",
        ),
        (
            "dataset_params: {n_per_class: 5}",
            'dataset_params: {classes: "0-4"}',
            13,
            "stages.students.dataset_params.classes",
            "list of class indices",
        ),
        (
            "dataset_params: {n_per_class: 5}",
            "dataset_params: {classes: [3]}",
            13,
            "stages.students.dataset_params.classes",
            "at least 2 classes",
        ),
        (
            "dataset_params: {n_per_class: 5}",
            "dataset_params: {n_per_class: 0}",
            13,
            "stages.students.dataset_params.n_per_class",
            "positive integer",
        ),
        (
            "dataset_params: {n_per_class: 5}",
            "dataset_params: {n_per_class: -5}",
            13,
            "stages.students.dataset_params.n_per_class",
            "positive integer",
        ),
        (
            "dataset_params: {n_per_class: 5}",
            "dataset_params: {n_per_class: 2.5}",
            13,
            "stages.students.dataset_params.n_per_class",
            "positive integer",
        ),
        (
            "model_params: {widths: [4]}",
            "model_params: {widths: [0]}",
            11,
            "stages.students.model_params.widths",
            "positive integers",
        ),
        (
            "model_params: {widths: [4]}",
            "model_params: {widths: eight}",
            11,
            "stages.students.model_params.widths",
            "positive integers",
        ),
        (
            "      - kd: {tau: 4}\n",
            "      - kd: {tau: 4}\n    grid: {kd.tau: [4, 4]}\n",
            19,
            "stages.students.grid.kd.tau",
            "lists a value twice",
        ),
    ],
)
def test_bad_suite_input_is_refused_at_load_with_file_line_and_key(old, new, line, key, what):
    assert old in TINY
    with pytest.raises(SuiteError) as info:
        parse_suite(TINY.replace(old, new), "t.yaml")
    msg = str(info.value)
    assert msg.startswith(f"t.yaml, line {line}, key {key!r}:"), msg
    assert what in msg and "\n" not in msg


def test_a_suite_name_from_the_command_line_is_checked_too():
    with pytest.raises(SuiteError, match="plain name"):
        parse_suite(TINY, "t.yaml", ["name=../x"])
    assert parse_suite(TINY, "t.yaml", ["name=tiny-2.b_c"]).name == "tiny-2.b_c"


# --------------------------------------------------------------------------- storage outages


def _outage(n):
    """A callable that fails like a database that is down, ``n`` times, then works."""
    import sqlalchemy.exc as sa

    state = {"left": n}

    def fn():
        if state["left"] > 0:
            state["left"] -= 1
            raise sa.OperationalError("INSERT ...", {}, Exception("connection refused"))
        return "ok"

    return fn


def test_storage_operations_are_retried_with_backoff_for_a_bounded_time():
    from harness.experiments.records import StorageError, retrying

    slept, now = [], [0.0]

    def sleep(s):
        slept.append(s)
        now[0] += s

    assert (
        retrying(
            _outage(3), "recording", "sqlite:///x", budget=60, sleep=sleep, clock=lambda: now[0]
        )
        == "ok"
    )
    assert slept == [0.5, 1.0, 2.0]  # exponential backoff
    slept.clear()
    with pytest.raises(StorageError) as info:
        retrying(
            _outage(10**6),
            "recording the result of abc",
            "postgresql://u:pw@h/db",
            budget=60,
            sleep=sleep,
            clock=lambda: now[0],
        )
    msg = str(info.value)
    assert "unreachable for 6" in msg and "recording the result of abc" in msg
    assert "pw" not in msg and "\n" not in msg
    assert slept == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 28.5]  # capped by the budget left
    with pytest.raises(KeyError):  # not a storage outage: no retry
        retrying(lambda: {}["x"], "x", "sqlite:///x", budget=60, sleep=sleep)


def _tiny_suite(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.replace("seeds: [0, 1]", "seeds: [0]"))
    return path


def test_a_short_outage_while_recording_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    import harness.experiments.records as records
    from harness.experiments.runner import run_suite

    real = records.finish_record
    down = _outage(2)

    def flaky(study, trial, metrics):
        down()  # the first two calls meet a storage that is down
        return real(study, trial, metrics)

    monkeypatch.setattr(records, "finish_record", flaky)
    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    s = run_suite(
        _tiny_suite(tmp_path),
        storage=storage,
        progress=False,
        results_root=tmp_path / "r",
        log=None,
    )
    assert s.completed == 3 and s.failed == 0
    df = records.records_frame(storage, "tiny")
    assert len(df) == 3 and df["key"].is_unique
    assert not list((tmp_path / "r" / "tiny" / "artefacts").glob("*.result.json"))


def test_a_result_trained_before_an_outage_is_recorded_without_training_again(
    tmp_path, monkeypatch
):
    import harness.experiments.runner as runner
    from harness.experiments.artefacts import save_pending
    from harness.experiments.records import records_frame
    from harness.experiments.suite import expand, load_suite

    suite = _tiny_suite(tmp_path)
    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    jobs = expand(load_suite(suite))
    student = jobs[1]
    art = tmp_path / "r" / "tiny" / "artefacts"
    art.mkdir(parents=True)
    kept = {
        "status": "completed",
        "reason": "",
        "test_accuracy": 0.4321,
        "val_accuracy": 0.4,
        "best_val_accuracy": 0.4,
        "wall_time": 1.0,
    }
    # written as a worker stopped by the outage wrote it (with its proof)
    assert save_pending(art / f"{student.key}.result.json", student, kept) is None
    real = runner.run_job

    def run_job(job, *a, **k):
        assert job.key != student.key, "trained again"
        return real(job, *a, **k)

    monkeypatch.setattr(runner, "run_job", run_job)
    s = runner.run_suite(
        suite, storage=storage, progress=False, results_root=tmp_path / "r", log=None
    )
    assert s.completed == 3 and s.failed == 0
    df = records_frame(storage, "tiny")
    assert df.set_index("key").at[student.key, "test_accuracy"] == pytest.approx(0.4321)
    assert not (art / f"{student.key}.result.json").exists()


def test_yaml_alias_bombs_and_keys_written_twice_are_refused_with_the_line():
    import time

    rows = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]"
        for i in range(8)
    ]
    bomb = "\n".join(rows) + "\nname: t\nstages: {}\n"
    t0 = time.perf_counter()
    with pytest.raises(
        SuiteError,
        match=r"b.yaml, line \d+: invalid YAML: the document "
        r"expands to more than 200,000 nodes",
    ):
        parse_suite(bomb, "b.yaml")
    assert time.perf_counter() - t0 < 5
    with pytest.raises(
        SuiteError,
        match=r"d.yaml, line 8: invalid YAML: key 'model' is written "
        r"twice in this mapping \(first on line 5",
    ):
        parse_suite(
            TINY.replace(
                "    dataset: digits\n    train: {epochs: 1, batch_size: 64",
                "    dataset: digits\n    model: cnn\n    train: {epochs: 1, batch_size: 64",
                1,
            ),
            "d.yaml",
        )
    merged = (
        TINY.replace("  students:\n    model: mlp", "  students: &s\n    model: mlp")
        + "  other:\n    <<: *s\n    model: cnn\n    model_params: {width: 4}\n"
    )  # a merge key
    # may still be overridden (model_params too: cnn takes no 'widths')
    assert [st.model for st in parse_suite(merged, "m.yaml").stages] == ["mlp", "mlp", "cnn"]


@pytest.mark.parametrize(
    "override,what",
    [
        ("seeds=[0", "--set 'seeds=[0': the value is not valid YAML"),
        ("stages.nosuch.model=mlp", "no stage 'nosuch' (stages: teacher, students)"),
        ("stages.students.regularizers=[{kd: {tau: -1}}]", "kd.tau must be a finite number > 0"),
        ("stages.students.regularizers=[{kd: {alpha: .nan}}]", "kd.alpha must be a finite number"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, what):
    with pytest.raises(SuiteError) as info:
        parse_suite(TINY, "t.yaml", [override])
    assert what in str(info.value) and "\n" not in str(info.value)


def test_a_pretrained_file_that_is_not_a_state_dict_is_named(tmp_path):
    from harness.zoo.models import read_state

    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(ValueError, match=f"weights file '{text}' is not a torch state_dict"):
        read_state(text)
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(ValueError, match="holds no state_dict"):
        read_state(tmp_path / "meta.pt")


# --------------------------------------------------------------------------- solver API


@pytest.mark.parametrize("method", ["sinkhorn", "ipot", "emd", "exact"])
def test_tiny_and_huge_masses_are_solved_at_unit_mass_and_scaled_back(method):
    from solvers import solve

    C = torch.rand(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = solve(C, method="emd")  # unit mass, exact
    for mass in (1e-30, 1e20):
        w = torch.full((6,), mass / 6, dtype=torch.float64)
        r = solve(C, w, w, method=method)
        assert r.converged, (method, mass)
        assert float(r.plan.sum()) == pytest.approx(mass, rel=1e-9)
        assert float(r.value) / mass == pytest.approx(float(ref.value), rel=1e-2)


def test_mass_gradients_need_potentials_and_meta_tensors_are_refused():
    from solvers import solve

    C = torch.rand(4, 4)
    a = torch.full((4,), 0.25, requires_grad=True)
    with pytest.raises(ValueError, match="no gradient with respect to the masses"):
        solve(C, a, method="assignment")
    r = solve(C, a, method="exact")  # the LP duals (network simplex): d value / d a
    r.value.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()
    assert float(r.value) == pytest.approx(float(solve(C, method="assignment").value))
    with pytest.raises(ValueError, match="meta tensor"):
        solve(torch.empty(3, 3, device="meta"), method="exact")


def test_an_uncertified_sinkhorn_says_why_and_a_smaller_reg_certifies_it():
    """Uniform random costs: the OT value (~range/n) is far below the range, so the entropic
    bias at the default reg exceeds the gap the certificate asks for."""
    from solvers import solve

    C = torch.rand(200, 200, generator=torch.Generator().manual_seed(0))
    # exact_finish=False: the entropic result itself (the default finishes it exactly)
    r = solve(C, method="sinkhorn", exact_finish=False)
    assert not r.converged and "lower reg" in r.extras["reason"]
    fine = solve(C, method="sinkhorn", reg=1e-5)
    assert fine.converged and fine.extras["reason"] == ""
    ref = float(solve(C.double(), method="exact").value)
    assert float(fine.value) == pytest.approx(ref, rel=2e-3)


def test_a_full_disk_fails_the_job_in_one_line_and_the_next_run_finishes_it(tmp_path, monkeypatch):
    import errno

    import harness.training.loop as tr
    from harness.experiments.records import records_frame
    from harness.experiments.runner import run_suite

    real = tr._save_atomic

    def full(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(tr, "_save_atomic", full)
    storage = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    kw = dict(storage=storage, progress=False, results_root=tmp_path / "r", log=None)
    s = run_suite(_tiny_suite(tmp_path), **kw)
    assert s.failed >= 1 and s.completed == 0
    reasons = [r for _, r in s.failures]
    assert "No space left on device" in reasons[0]  # the teacher; its students then wait on it
    assert all("\n" not in r for r in reasons)
    monkeypatch.setattr(tr, "_save_atomic", real)
    again = run_suite(_tiny_suite(tmp_path), **kw)  # `run` retries failed jobs
    assert again.failed == 0
    df = records_frame(storage, "tiny")
    assert len(df) == 3 and df["key"].is_unique


def test_points_whose_cost_overflows_are_named_and_odd_points_work():
    from solvers import solve_sample

    big = torch.rand(6, 3, generator=torch.Generator().manual_seed(0)) * 1e20
    with pytest.raises(
        ValueError, match="overflowed torch.float32 to non-finite.*rescale the points"
    ):
        solve_sample(big, big.flip(0), method="sinkhorn")
    assert solve_sample(big.double(), big.double().flip(0), method="exact").converged
    ints = torch.randint(0, 5, (6, 3), generator=torch.Generator().manual_seed(1))
    assert solve_sample(ints, ints.flip(0), method="sinkhorn").converged  # cast to float
    same = torch.ones(6, 3)
    r = solve_sample(same, same, method="sinkhorn", cost="cosine")  # every cost 0
    assert r.converged and abs(float(r.value)) < 1e-6


@pytest.mark.parametrize(
    "scale,dtype", [(1e-310, torch.float64), (1e-40, torch.float32), (1e35, torch.float32)]
)
@pytest.mark.parametrize("method", ["sinkhorn", "ipot", "exact"])
def test_subnormal_and_huge_costs_are_solved_at_unit_scale(scale, dtype, method):
    from solvers import solve

    C0 = torch.rand(5, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    C = (C0 * scale).to(dtype)
    ref = float(solve(C0, method="emd").value) * float(C.abs().max()) / float(C0.abs().max())
    r = solve(C, method=method)
    assert r.converged and math.isfinite(float(r.value))
    assert float(r.value) == pytest.approx(ref, rel=2e-3)
