"""Plugins: a suite's ``plugins:`` reach every process that loads the suite (run,
its workers, launch --local, status, schema), entry points reach the registries, a plugin that
fails is one line, a failing worker says why; and ``--only`` subsets keep the full run's keys.

The plugin is docs/plugins.md's worked example itself (its Python block), so the document
stays true."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SUITE = """\
name: {name}
plugins: [{plugins}]
seeds: [0, 1]
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
    dataset_params: {{n_per_class: 5}}
    teacher: teacher
    train: {{epochs: 1, batch_size: 25, lr: 0.05}}
    regularizers:
      - none
      - sliced_w: {{n_projections: 8}}
      - omega_p: {{plan: nw_corner, row: omega_p (nw corner)}}
"""


def _example() -> str:
    text = (ROOT / "docs" / "plugins.md").read_text()
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)[0]


@pytest.fixture
def study(tmp_path):
    """A folder with docs/plugins.md's plugin and a tiny suite using both of its components;
    the registries and modules are restored afterwards (other tests see no plugin)."""
    from harness.experiments import plugins as P
    from harness.transfer.regularizers import REGULARIZERS
    from solvers._registry import METHODS

    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "my_plugin.py").write_text(_example())
    suite = folder / "tiny.yaml"
    suite.write_text(SUITE.format(name=f"plugins-{tmp_path.name[-12:]}", plugins="my_plugin.py"))
    before = (dict(P._FILES), set(sys.modules))
    with REGULARIZERS.restoring(), METHODS.restoring():
        yield suite
    P._FILES.clear(), P._FILES.update(before[0])
    for name in set(sys.modules) - before[1]:
        if name.startswith("otransfer_plugin_"):
            del sys.modules[name]


def _cli(*argv, cwd=ROOT, env=None, timeout=300) -> subprocess.CompletedProcess:
    env = {
        **{k: v for k, v in os.environ.items() if k != "OTRANSFER_STORAGE"},
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *map(str, argv)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_sliced_w_matches_pot_and_nw_corner_is_feasible(study):
    """The example's terms against an independent reference: SW_2^2 against POT's
    ``ot.sliced_wasserstein_distance`` on the same directions (neurons of different counts),
    and the north-west corner plan's marginals."""
    import ot
    import torch

    import solvers
    from harness.experiments.suite import load_suite
    from harness.transfer.regularizers import RegContext, build_regularizer

    load_suite(study)  # imports the plugin
    g = torch.Generator().manual_seed(0)
    s = torch.randn(20, 7, dtype=torch.float64, generator=g)
    t = torch.randn(20, 11, dtype=torch.float64, generator=g) + 0.5
    reg = build_regularizer("sliced_w", n_projections=16, seed=3, alpha=1.0)
    ours = reg(RegContext(features={"penultimate": s}, teacher_features={"penultimate": t}))
    theta = torch.randn(20, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    ref = (
        ot.sliced_wasserstein_distance(s.T.numpy(), t.T.numpy(), projections=theta.numpy(), p=2)
        ** 2
    )
    assert float(ours["sliced_w"]) == pytest.approx(ref, rel=1e-6)
    a, b = torch.full((5,), 0.2, dtype=torch.float64), torch.full((6,), 1 / 6, dtype=torch.float64)
    C = torch.rand(5, 6, dtype=torch.float64, generator=g)
    res = solvers.solve(C, a, b, method="nw_corner")
    assert torch.allclose(res.plan.sum(1), a) and torch.allclose(res.plan.sum(0), b)
    assert float(res.value) == pytest.approx(float((res.plan * C).sum()))


def test_run_two_workers_then_status_and_schema(study, tmp_path, capsys):
    """``run --workers 2``: both worker processes import the plugin and record jobs; then
    ``status`` and ``schema SUITE`` (in this process) accept the plugin's names."""
    import optuna

    from harness.cli import main
    from harness.experiments.suite import expand, load_suite

    results = tmp_path / "results"
    out = _cli("run", study, "--workers", "2", "--results", results, "--no-progress")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 workers exited with [0, 0]" in out.stdout
    suite = load_suite(study)
    keys = {j.key for j in expand(suite)}
    storage = f"sqlite:///{results / suite.name / 'runs.sqlite3'}"
    trials = optuna.load_study(study_name=suite.name, storage=storage).get_trials()
    done = [t for t in trials if t.user_attrs.get("status") == "completed"]
    assert {t.user_attrs["key"] for t in done} == keys
    assert len({t.user_attrs["worker"] for t in done}) == 2, "jobs of two worker processes"
    assert "sliced_w" in out.stdout and "omega_p (nw corner)" in out.stdout

    assert main(["status", str(study), "--results", str(results)]) == 0
    assert f"{len(keys)} done" in capsys.readouterr().out
    assert main(["schema", str(study)]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert (
        "sliced_w"
        in schema["$defs"]["stage"]["properties"]["regularizers"]["items"]["anyOf"][0]["examples"]
    )
    assert schema["properties"]["plugins"]["type"] == "array"


def test_launch_local(study, tmp_path):
    """``launch --local --wait``: submitit's workers load the suite file, and its plugin."""
    pytest.importorskip("submitit")
    results = tmp_path / "results"
    storage = f"sqlite:///{tmp_path / 'launch.sqlite3'}"
    out = _cli(
        "launch",
        study,
        "--local",
        "--array",
        "2",
        "--wait",
        "--results",
        results,
        "--storage",
        storage,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "8 jobs: 8 done, 0 running, 0 failed, 0 waiting" in out.stdout, out.stdout


def test_missing_plugin_is_one_line(study, tmp_path, capsys):
    from harness.cli import main

    for entry, error in (
        ("no_such_lab.terms", "ModuleNotFoundError"),
        ("missing.py", "FileNotFoundError"),
    ):
        bad = study.with_name(f"bad-{error}.yaml")
        bad.write_text(study.read_text().replace("[my_plugin.py]", f"[{entry}]"))
        assert main(["run", str(bad), "--results", str(tmp_path / "r"), "--no-progress"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert str(bad) in err[0] and f"plugin {entry!r} failed to import" in err[0]
        assert error in err[0] and "line 2" in err[0]


def test_failing_workers_say_why(study, tmp_path):
    """Workers that cannot start make the parent print why, one line for the two of them
    (it said only ``2 workers exited with [1, 1]``)."""
    (study.parent / "license.py").write_text(
        "import os\nif os.environ.get('OTRANSFER_WORKERS'):\n"
        "    raise RuntimeError('no licence server on this node')\n"
    )
    study.write_text(study.read_text().replace("[my_plugin.py]", "[my_plugin.py, license.py]"))
    results = tmp_path / "results"
    out = _cli(
        "run",
        study,
        "--workers",
        "2",
        "--results",
        results,
        "--no-progress",
        "--only",
        "method=none",
        "--only",
        "seed=0",
    )
    lines = out.stdout.splitlines()
    at = lines.index("2 workers exited with [1, 1]; this process runs what they left")
    assert lines[at + 1].startswith("  workers 0, 1 (exit 1): otransfer worker: ")
    assert "plugin 'license.py' failed to import: RuntimeError: no licence server" in lines[at + 1]
    assert not lines[at + 2].startswith("  worker")  # one line for one distinct error
    assert len(list(results.glob("*/logs/worker-*.log"))) == 2  # each worker's whole output
    assert out.returncode == 1  # the parent ran the jobs, the workers' failure stays in the code


def test_entry_points_reach_the_registries(tmp_path):
    """An installed package's entry points (groups otransfer.regularizers, otransfer.solvers)
    are imported at the registries' first lookup, in any process."""
    (tmp_path / "my_plugin.py").write_text(_example())
    info = tmp_path / "mylab-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mylab\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[otransfer.regularizers]\nsliced_w = my_plugin\n\n"
        "[otransfer.solvers]\nnw_corner = my_plugin\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    regs = _cli("list", "regularizers", env=env)
    assert regs.returncode == 0 and "| sliced_w " in regs.stdout, regs.stderr
    sols = _cli("list", "solvers", env=env)
    assert sols.returncode == 0 and "| nw_corner " in sols.stdout, sols.stderr
    (tmp_path / "my_plugin.py").write_text("raise ImportError('broken on purpose')\n")
    broken = _cli("list", "regularizers", env=env)
    assert broken.returncode == 0  # the others still load
    assert (
        "plugin 'sliced_w' (my_plugin, entry point group otransfer.regularizers, "
        "package mylab) failed to import and is skipped: ImportError: broken on purpose"
        in broken.stderr
    )


# --------------------------------------------------------------------------- --only


def test_only_selects_by_name_with_teachers_and_same_keys():
    from harness.experiments.only import OnlyError, select_jobs
    from harness.experiments.suite import expand, load_suite

    jobs = expand(load_suite("mini"))
    picked = select_jobs(jobs, ["method=kd,omega_p", "task=digits (100 images)"])
    assert {j.key for j in picked} <= {j.key for j in jobs}  # the full run's keys
    students = [j for j in picked if j.stage == "students"]
    assert {j.row for j in students} == {"kd", "omega_p"}
    assert len(students) == len(
        [j for j in jobs if j.stage == "students" and j.row in ("kd", "omega_p")]
    )
    assert {j.stage for j in picked} == {"students", "teacher"}  # the teachers they load
    teachers = {j.config["teacher"] for j in students}
    assert teachers == {j.key for j in picked if j.stage == "teacher"}
    assert {j.seed for j in select_jobs(jobs, ["seed=3", "row=scratch"])} == {3}
    with pytest.raises(
        OnlyError,
        match=r"--only method=kdd matches no job of the suite; "
        r"valid method values: .*\bkd\b.*omega_p",
    ):
        select_jobs(jobs, ["method=kdd"])
    with pytest.raises(
        OnlyError, match="KEY one of stage, task, method, regularizer, dataset, seed, row"
    ):
        select_jobs(jobs, ["solver=emd"])
    with pytest.raises(OnlyError, match="valid seed values: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9$"):
        select_jobs(jobs, ["seed=10"])


def test_only_run_then_full_run_reuses(study, tmp_path, capsys):
    from harness.cli import main

    results = str(tmp_path / "results")
    assert (
        main(["run", str(study), "--only", "method=none", "--results", results, "--no-progress"])
        == 0
    )
    assert "4 jobs, 4 run, 0 already done" in capsys.readouterr().out
    assert main(["run", str(study), "--results", results, "--no-progress"]) == 0
    assert "8 jobs, 4 run, 4 already done" in capsys.readouterr().out
    board = next(Path(results).glob("*/leaderboard.md"))
    board.unlink()  # `report --results DIR` reads DIR/SUITE/runs.sqlite3, writes DIR/SUITE/
    assert main(["report", str(study), "--results", results, "--quiet"]) == 0
    assert board.is_file() and f"wrote {board}" in capsys.readouterr().out
    assert (
        main(["run", str(study), "--only", "task=cifar", "--results", results, "--no-progress"])
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "otransfer run: --only task=cifar matches no job of the suite; valid task values: digits"
    ]
