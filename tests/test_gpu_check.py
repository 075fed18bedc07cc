"""scripts/gpu_check.py's own logic, on the CPU (``--device cpu``): sections run in child
processes, exact methods match POT's exact value, a crashed section becomes a row."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_on_cpu_writes_the_tables(tmp_path):
    mod = _module()
    rc = mod.main(
        [
            "--device",
            "cpu",
            "--sections",
            "env",
            "solvers",
            "--widths",
            "16",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    results = json.loads((tmp_path / "gpu-check.json").read_text())
    rows = {
        r["method"]: r for r in results["solvers"]["rows"] if r["problem"].startswith("neurons")
    }
    for method in ("emd", "assignment", "exact"):  # exact OT: POT's value to round-off
        assert abs(rows[method]["rel_error"]) < 1e-6, rows[method]
    assert rows["sinkhorn"]["converged"] and abs(rows["sinkhorn"]["rel_error"]) < 1e-3
    assert "keops" not in rows  # keops has its own section (it may crash while compiling)
    assert "| emd " in (tmp_path / "gpu-check.md").read_text()


def test_a_crashing_section_is_a_row(tmp_path, monkeypatch):
    mod = _module()
    monkeypatch.setattr(sys, "executable", sys.executable)  # the child runs this interpreter
    got = mod._run_section("env", ["--device", "cpu", "--bogus-flag"], timeout=60)
    assert got["rows"] == [] and got["error"].startswith("exit 2")


def test_no_cuda_is_one_line(capsys):
    mod = _module()
    if mod.torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert mod.main(["--sections", "env"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
