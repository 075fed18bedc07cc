"""The ``otransfer`` command line and the solver benchmark's tables (small, seconds)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

import solvers
from harness.cli import main
from harness.reports import bench


def test_list_solvers_names_every_available_method(capsys):
    assert main(["list", "solvers"]) == 0
    out = capsys.readouterr().out
    for name in solvers.available():
        assert f"| {name} " in out
    for column in ("input", "exact", "approx", "plan", "batched", "requires", "installed"):
        assert column in out.splitlines()[0]


def test_solvers_bench_writes_outputs(tmp_path, capsys):
    code = main(
        [
            "solvers",
            "bench",
            "--sizes",
            "16",
            "--methods",
            "emd,sinkhorn,uniform",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 0
    for name in ("bench.csv", "bench.md", "bench_time.png", "bench_accuracy.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    df = pd.read_csv(tmp_path / "bench.csv")
    assert list(df.columns) == bench.COLUMNS
    assert set(df["view"]) == set(bench.VIEWS)
    assert set(df["method"]) == {"emd", "sinkhorn", "uniform"}
    assert (df["status"] == "ok").all()
    assert (df["size"] == 16).all()
    emd = df[df["method"] == "emd"]
    assert emd["rel_error"].abs().max() < 1e-6
    assert (df["time_ms"] > 0).all() and (df["time_backward_ms"] > 0).all()
    md = (tmp_path / "bench.md").read_text()
    assert "Command: `otransfer solvers bench --sizes 16" in md
    assert "Torch:" in md and "## neurons" in md and "## samples" in md


def test_unknown_method_exits_with_close_matches(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["solvers", "bench", "--methods", "sinkorn", "--out", str(tmp_path)])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "unknown OT method 'sinkorn'" in err and "did you mean 'sinkhorn'" in err
    assert not (tmp_path / "bench.csv").exists()


def test_report_solvers_without_results_says_how(tmp_path, capsys):
    code = main(
        ["report", "solvers", "--asv-results", str(tmp_path / "none"), "--out", str(tmp_path)]
    )
    assert code == 1
    assert "--set-commit-hash" in capsys.readouterr().err


def _frame() -> pd.DataFrame:
    """Two methods at two sizes of one view: one cell skipped, the reference is 'emd'."""
    rows = [
        ("emd", 64, "ok", 2.0, 3.0, 0.0, ""),
        ("emd", 256, "ok", 40.0, 45.0, 0.0, ""),
        ("sinkhorn", 64, "ok", 1.0, 1.5, 1.23e-4, ""),
        ("sinkhorn", 256, "skipped", math.nan, math.nan, math.nan, "over budget"),
    ]
    df = pd.DataFrame(
        rows,
        columns=["method", "size", "status", "time_ms", "time_backward_ms", "rel_error", "reason"],
    )
    df["view"], df["size_name"], df["ref_method"] = "neurons", "d", "emd"
    return df


def test_tables_golden():
    df = _frame()
    idx = pd.Index(["emd", "sinkhorn"], name="method")
    expected = pd.DataFrame(
        {"d=64": ["2.00 (0)", "1.00 (1.2e-04)"], "d=256": ["40.0 (0)", "—"]},
        index=idx,
        dtype=object,
    )
    pd.testing.assert_frame_equal(bench.time_table(df, "neurons"), expected)
    expected = pd.DataFrame({"d=64": ["1", "0.5"], "d=256": ["1", "—"]}, index=idx, dtype=object)
    pd.testing.assert_frame_equal(bench.ratio_table(df, "neurons"), expected)
    expected = pd.DataFrame(
        {"d=64": ["3.00", "1.50"], "d=256": ["45.0", "—"]}, index=idx, dtype=object
    )
    pd.testing.assert_frame_equal(bench.backward_table(df, "neurons"), expected)
    assert bench.skip_notes(df, "neurons") == ["sinkhorn (d = 256): skipped, over budget"]
    # Pure: the input frame is untouched.
    pd.testing.assert_frame_equal(df, _frame())


def test_no_arguments_runs_the_mini_suite(monkeypatch):
    from harness.cli import running

    seen = {}

    def fake(args, parser):
        seen.update(vars(args))
        return 0

    monkeypatch.setattr(running, "cmd_run", fake)
    # the parser binds func at build time: rebuild it after patching
    assert main([]) == 0
    assert seen["suite"] == "mini"
    # into a git-ignored folder: a fresh clone's committed results/mini/ is not rewritten
    assert seen["results"] == "results/local"
    assert seen["command_line"] == "otransfer (= otransfer run mini --results results/local)"
    ignored = (Path(__file__).resolve().parents[1] / ".gitignore").read_text().split()
    assert "results/local/" in ignored


@pytest.mark.parametrize("what", ["regularizers", "models", "datasets"])
def test_list_registries(what, capsys):
    """``otransfer list WHAT`` prints a table with every registered name."""
    from harness.cli import main

    assert main(["list", what]) == 0
    out = capsys.readouterr().out
    if what == "regularizers":
        from harness.transfer.regularizers import all_regularizers as names
    elif what == "models":
        from harness.zoo.models import all_models as names
    else:
        from harness.zoo.data import all_datasets as names
    for name in names():
        assert f"| {name} " in out


def test_regularizers_bench_writes_ratios(tmp_path, capsys):
    """`otransfer regularizers bench`: step time of each row over the L2-SP step, measured."""
    import pandas as pd

    out = tmp_path / "reg"
    assert (
        main(
            [
                "regularizers",
                "bench",
                "--models",
                "mlp",
                "--methods",
                "omega_p",
                "omega_p (ipot)",
                "--steps",
                "2",
                "--repeats",
                "1",
                "--batch",
                "16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    df = pd.read_csv(out / "step_time.csv")
    assert list(df["method"]) == ["l2sp", "omega_p", "omega_p (ipot)"]
    assert (df["step_ms"] > 0).all()
    assert df.loc[df["method"] == "l2sp", "ratio_to_l2sp"].item() == 1.0
    ratios = df["step_ms"] / df.loc[df["method"] == "l2sp", "step_ms"].item()
    assert df["ratio_to_l2sp"].tolist() == pytest.approx(ratios.tolist())
    assert df.loc[df["method"] == "omega_p (ipot)", "solver_iters"].item() >= 1
    md = (out / "step_time.md").read_text()
    assert "omega_p (ipot)" in md and "x (" in md and "otransfer regularizers bench" in md
    with pytest.raises(SystemExit):
        main(["regularizers", "bench", "--models", "resnet5"])
    assert "unknown model case" in capsys.readouterr().err
