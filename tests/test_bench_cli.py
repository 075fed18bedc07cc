"""`otransfer bench throughput` and `otransfer bench agreement`:
their input errors, their tables, and the paired comparison against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.reports import agreement, throughput


def test_throughput_refuses_unknown_suite_and_one_seed(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "throughput", "--suites", "nope"])
    assert e.value.code == 2
    assert "no throughput slice for nope: choose among li2020_table2-cpu" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "throughput", "--seeds", "1"])
    assert "--seeds 1: batching needs at least 2 seeds" in capsys.readouterr().err


def test_throughput_run_writes_ratio(monkeypatch, tmp_path):
    """run() divides the jobs by each way's CPU seconds; the page carries the command."""

    def fake(suite, seeds, tmp):
        return {"suite": suite, "jobs": 40, "one at a time": 20.0, "batched": 4.0, "ratio": 5.0}

    monkeypatch.setattr(throughput, "bench", fake)
    lines = []
    out = tmp_path / "t.md"
    throughput.run(["li2020_table4-cpu"], 8, out, say=lines.append)
    assert lines == [
        "li2020_table4-cpu: 40 jobs: one at a time 2.000 jobs/CPU-s, batched "
        "10.000 jobs/CPU-s, ratio 5.0x"
    ]
    text = out.read_text()
    assert "otransfer bench throughput --seeds 8" in text
    assert "| 40 | 2.000 | 10.000 | 5.0x |" in text


def _folder(path, accs, verdicts):
    path.mkdir(parents=True)
    rows = [
        {
            "key": f"k{i}",
            "stage": "s",
            "table": "t",
            "task": "c",
            "method": m,
            "regularizer": m,
            "seed": i % 3,
            "test_accuracy": a,
        }
        for i, (m, a) in enumerate(accs)
    ]
    pd.DataFrame(rows).to_csv(path / "runs.csv", index=False)
    pd.DataFrame(
        [
            {"table": "t", "kind": "claim", "claim": "a > b", "task": c, "verdict": v}
            for c, v in verdicts
        ]
    ).to_csv(path / "verdicts.csv", index=False)
    return path


def test_agreement_pairs_jobs_by_key(tmp_path):
    """Differences by hand: +1, -1, +2, 0, 0, +1 points -> mean 0.5; one verdict differs."""
    single = [("a", 0.80), ("a", 0.81), ("a", 0.79), ("b", 0.70), ("b", 0.72), ("b", 0.74)]
    batched = [("a", 0.81), ("a", 0.80), ("a", 0.81), ("b", 0.70), ("b", 0.72), ("b", 0.75)]
    a = _folder(tmp_path / "one", single, [("c", "holds"), ("d", "inconclusive")])
    b = _folder(tmp_path / "two", batched, [("c", "holds"), ("d", "holds")])
    res = agreement.compare(a, b)
    d = np.array([1, -1, 2, 0, 0, 1.0])
    assert res["n"] == 6 and res["identical"] == 2
    assert res["mean"] == pytest.approx(d.mean())
    assert res["sd"] == pytest.approx(d.std(ddof=1))
    # seed-to-seed sd of the one-model runs, per cell (method a: .80 .81 .79; b: .70 .72 .74)
    assert res["seed_sd"] == pytest.approx(np.median([1.0, 2.0]))
    assert res["lo"] <= res["mean"] <= res["hi"]
    # exact sign-flip p (2^6 = 64 <= 10,000 resamples: scipy enumerates them all): the sums of
    # +-1 +-1 +-2 +-1 with |sum| >= 3 are 5, -5 and the three ways each of 3 and -3: 8 of 16
    assert res["p"] == pytest.approx(0.5)
    assert (res["verdicts"], res["verdicts_equal"]) == (2, 1)
    assert res["agrees"] is (-agreement.MARGIN < res["lo"] and res["hi"] < agreement.MARGIN)
    page = agreement.markdown(
        "x",
        {"single": {"wall": 10, "cpu": 9}, "batched": {"wall": 2, "cpu": 3}},
        res,
        "otransfer bench",
    )
    assert "| ratio | 5.00x | 3.00x |" in page and "1 of 2 claim x column verdicts" in page


def test_agreement_refuses_unrelated_folders(tmp_path):
    a = _folder(tmp_path / "one", [("a", 0.8), ("a", 0.7)], [("c", "holds")])
    b = tmp_path / "two"
    b.mkdir()
    pd.DataFrame([{"key": "other", "test_accuracy": 0.5}]).to_csv(b / "runs.csv", index=False)
    with pytest.raises(ValueError, match="share 0 jobs: nothing to pair"):
        agreement.compare(a, b)
