"""The thread policy (harness/training/threads.py): workers x threads <= the usable cores."""

import os

import pytest
import torch

from harness.training import threads as th


def test_small_model_gets_one_thread_whatever_the_cores():
    assert th.choose_threads(10_000, environ={}) == 1
    assert th.choose_threads(th.SMALL_MODEL - 1, environ={"OTRANSFER_WORKERS": "1"}) == 1


def test_large_model_shares_the_budget_among_workers(monkeypatch):
    monkeypatch.setattr(th, "cpu_budget", lambda env=None: 16)
    big = th.SMALL_MODEL * 10
    assert th.choose_threads(big, environ={}) == 16
    assert th.choose_threads(big, environ={"OTRANSFER_WORKERS": "4"}) == 4
    assert th.choose_threads(big, environ={"OTRANSFER_WORKERS": "32"}) == 1  # never 0


def test_explicit_choice_wins_in_order():
    big = th.SMALL_MODEL * 10
    assert th.choose_threads(big, threads=3, environ={"OTRANSFER_THREADS": "5"}) == 3
    assert th.choose_threads(10, environ={"OTRANSFER_THREADS": "5", "OMP_NUM_THREADS": "2"}) == 5
    assert th.choose_threads(10, environ={"OMP_NUM_THREADS": "2"}) == 2


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_bad_thread_count_is_one_line(bad):
    with pytest.raises(ValueError, match="OTRANSFER_THREADS=.*positive integer"):
        th.choose_threads(10, environ={"OTRANSFER_THREADS": bad})
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        th.choose_threads(10, threads=0)


def test_budget_is_capped_by_slurm_and_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(th, "_cgroup_quota", lambda: None)
    assert th.cpu_budget({}) == 8
    assert th.cpu_budget({"SLURM_CPUS_PER_TASK": "3"}) == 3
    monkeypatch.setattr(th, "_cgroup_quota", lambda: 2)
    assert th.cpu_budget({"SLURM_CPUS_PER_TASK": "3"}) == 2


def test_cgroup_quota_parsed(tmp_path):
    f = tmp_path / "cpu.max"
    f.write_text("max 100000\n")
    assert th._cgroup_quota(f) is None
    f.write_text("250000 100000\n")  # 2.5 cores -> 2 threads
    assert th._cgroup_quota(f) == 2
    f.write_text("50000 100000\n")
    assert th._cgroup_quota(f) == 1
    assert th._cgroup_quota(tmp_path / "absent") is None


def test_apply_sets_torch_and_blas(monkeypatch):
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    monkeypatch.delenv("OTRANSFER_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert th.apply_threads(10) == 1
        assert torch.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
    finally:
        torch.set_num_threads(before)


def test_spawned_workers_know_how_many_share_the_cores(monkeypatch, tmp_path):
    import subprocess

    from harness.experiments import cluster

    seen = []

    class FakePopen:
        def __init__(self, cmd, env=None, **kw):
            seen.append(env)
            self.stdout = iter(())  # the lines teed to the worker's log

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    codes, _, errors = cluster.spawn_workers("mini", 3, results=tmp_path)
    assert errors == []
    assert codes == [0, 0, 0]
    assert [e["OTRANSFER_WORKERS"] for e in seen] == ["3", "3", "3"]


def test_cli_threads_flag(monkeypatch):
    from harness import cli

    monkeypatch.delenv("OTRANSFER_THREADS", raising=False)
    with pytest.raises(SystemExit):
        cli.main(["run", "mini", "--threads", "0"])


def test_spawned_workers_get_threads_and_no_batch_as_flags(monkeypatch, tmp_path):
    """``run --workers N --threads T --no-batch`` hands both to its workers on their command
    lines; nothing is written to this process's environment."""
    import os
    import subprocess

    from harness.experiments import cluster

    seen = []

    class FakePopen:
        def __init__(self, cmd, env=None, **kw):
            seen.append(cmd)
            self.stdout = iter(())

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    before = dict(os.environ)
    cluster.spawn_workers("mini", 2, results=tmp_path, threads=3, batch=False)
    cluster.spawn_workers("mini", 1, results=tmp_path)
    assert [cmd[cmd.index("--threads") + 1] for cmd in seen[:2]] == ["3", "3"]
    assert all("--no-batch" in cmd for cmd in seen[:2])
    assert "--threads" not in seen[2] and "--no-batch" not in seen[2]
    assert dict(os.environ) == before


def test_run_threads_reach_each_job_without_the_environment(monkeypatch, tmp_path):
    """``run_suite(threads=T)`` (``--threads T``) sets each job's threads, batched or not."""
    import os

    from harness.experiments.runner import run_suite

    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: threads-flag\nseeds: [0, 1]\nstages:\n  solo:\n    model: mlp\n"
        "    model_params: {widths: [8]}\n    dataset: digits\n"
        "    dataset_params: {n_per_class: 10}\n    train: {epochs: 1, batch_size: 25}\n"
    )
    calls = []
    monkeypatch.setattr(th, "apply_threads", lambda n, threads=None: calls.append(threads))
    ours = lambda: {k: v for k, v in os.environ.items() if k.startswith(("OTRANSFER", "OMP"))}  # noqa: E731
    before = ours()  # (importing torch sets KMP_* variables of its own)
    for batch in (False, True):
        s = run_suite(
            suite,
            progress=False,
            log=None,
            results_root=tmp_path / str(batch),
            threads=2,
            batch=batch,
        )
        assert s.completed == 2
    assert calls == [2, 2, 2, 2]  # one per job: two alone, two as the members of one batch
    assert ours() == before
