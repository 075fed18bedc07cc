"""The papers' reference numbers in results/reference/*.csv: format, cells read from the papers."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

REF = Path(__file__).resolve().parent.parent / "results" / "reference"
HEADER = [
    "paper",
    "table",
    "row",
    "spec",
    "column",
    "value",
    "pm",
    "metric",
    "higher_is_better",
    "source",
]
PAPERS = ("li2020", "lohit2020", "lu2017")
SPECS = {
    "",
    "none",
    "l2",
    "l2sp",
    "kd",
    "omega_i",
    "omega_u",
    "omega_p",
    "ot_samples_ipot",
    "ot_samples_remd",
    "jtln",
    "omega_p+kd",
    "ot_samples_ipot+kd",
    "ot_samples_remd+kd",
}
SCORE_METRICS = {
    "accuracy_pct": "true",
    "accuracy_frac": "true",
    "top1_error_pct": "false",
    "top5_error_pct": "false",
}
DESCRIPTIVE_METRICS = {"count", "params_millions", "weight_reduction_pct"}


def load(paper: str) -> tuple[list[str], list[dict[str, str]]]:
    with open(REF / f"{paper}.csv", newline="", encoding="ascii") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [dict(zip(header, r, strict=True)) for r in reader]
    return header, rows


def cell(paper: str, table: str, row: str, column: str) -> dict[str, str]:
    found = [
        r for r in load(paper)[1] if (r["table"], r["row"], r["column"]) == (table, row, column)
    ]
    assert len(found) == 1, (paper, table, row, column, found)
    return found[0]


@pytest.mark.parametrize("paper", PAPERS)
def test_format(paper):
    header, rows = load(paper)
    assert header == HEADER
    assert rows
    keys = [(r["paper"], r["table"], r["row"], r["column"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate (paper, table, row, column)"
    for r in rows:
        assert r["paper"] == paper
        assert r["table"] and r["row"] and r["column"] and r["source"]
        v = float(r["value"])
        assert math.isfinite(v) and v >= 0
        if r["pm"]:
            assert math.isfinite(float(r["pm"])) and float(r["pm"]) >= 0
        assert r["spec"] in SPECS, r
        if r["metric"] in SCORE_METRICS:
            assert r["higher_is_better"] == SCORE_METRICS[r["metric"]], r
        else:
            assert r["metric"] in DESCRIPTIVE_METRICS, r
            assert r["higher_is_better"] == "" and r["spec"] == "", r
        if r["metric"].endswith("_pct"):
            assert v <= 100
        if r["metric"] == "accuracy_frac":
            assert v <= 1


def test_row_counts():
    counts = {p: {} for p in PAPERS}
    for p in PAPERS:
        for r in load(p)[1]:
            counts[p][r["table"]] = counts[p].get(r["table"], 0) + 1
    assert counts["li2020"] == {"1": 36, "2": 48, "3": 12, "S1": 21, "4": 25}
    # lohit2020 Table 1: 20 rows x 7 pairs minus 2 "n/a" (FSP); Table 6: one blank merged cell
    assert counts["lohit2020"] == {"1": 138, "2": 90, "3": 10, "4": 22, "5": 30, "6": 17, "7": 28}
    assert counts["lu2017"] == {"1": 10, "2": 10}


@pytest.mark.parametrize(
    "paper,table,row,column,value,pm",
    [
        # li2020 Table 1 (ResNet-101 fine-tuning)
        ("li2020", "1", "Omega_P", "Aircraft100", "85.19", "0.36"),
        ("li2020", "1", "L2-SP", "Foods101", "87.15", "0.14"),
        ("li2020", "1", "Omega_U", "Dogs120", "71.40", "0.28"),
        ("li2020", "1", "none", "mean", "82.18", ""),
        # li2020 Table 2 (CIFAR compression)
        ("li2020", "2", "Omega_KD", "CIFAR-100/W->M", "75.6", "0.2"),
        ("li2020", "2", "Omega_P", "CIFAR-20/W->M", "84.2", "0.1"),
        ("li2020", "2", "Omega_U", "CIFAR-10/W->S", "91.8", "0.3"),
        # li2020 Tables 3, S1 (MobileNet-V2)
        ("li2020", "3", "Omega_P", "Birds200/pretrain=10%", "75.17", "0.20"),
        ("li2020", "S1", "Omega_U", "Cars196/pretrain=10%", "85.76", "0.24"),
        ("li2020", "S1", "none", "Aircraft100/pretrain=100%", "84.96", "0.35"),
        ("li2020", "S1", "Omega_P", "Birds200/pretrain=0%", "57.90", "0.88"),
        # li2020 Table 4 (batch size)
        ("li2020", "4", "L2", "Aircraft100/batch=16", "79.20", "1.39"),
        ("li2020", "4", "L2-SP", "Aircraft100/batch=32", "83.65", "1.19"),
        ("li2020", "4", "Omega_P", "Aircraft100/batch=128", "83.55", "0.10"),
        # lohit2020
        ("lohit2020", "1", "IPOT", "CIFAR-100/resnet32x4->resnet8x4", "74.19", ""),
        ("lohit2020", "1", "REMD", "CIFAR-100/resnet110->resnet32", "72.96", ""),
        ("lohit2020", "1", "Teacher", "CIFAR-100/resnet56->resnet20", "72.34", ""),
        ("lohit2020", "1", "FSP", "CIFAR-100/vgg13->vgg8", "70.23", ""),
        ("lohit2020", "2", "IPOT+CRD+KD", "CIFAR-100/WRN-40-2->WRN-16-2", "76.22", ""),
        ("lohit2020", "2", "AB+KD", "CIFAR-100/WRN-40-2->WRN-16-2", "70.27", ""),
        ("lohit2020", "2", "REMD+KD", "CIFAR-100/resnet32x4->ShuffleNetV2", "76.66", ""),
        (
            "lohit2020",
            "3",
            "IPOT+KD",
            "CIFAR-100/resnet32x4->resnet8x4/features=stage4",
            "75.66",
            "",
        ),
        ("lohit2020", "3", "IPOT", "CIFAR-100/resnet32x4->resnet8x4/features=stage1", "73.59", ""),
        ("lohit2020", "4", "IPOT+KD", "ImageNet/ResNet-34->ResNet-18/top-1", "28.88", ""),
        ("lohit2020", "4", "Online KD*", "ImageNet/ResNet-34->ResNet-18/top-5", "10.41", ""),
        ("lohit2020", "5", "RKD", "SVHN/WRN-40-2->WRN-16-2", "95.23", ""),
        ("lohit2020", "5", "REMD", "SVHN/resnet32x4->resnet8x4", "89.66", ""),
        ("lohit2020", "6", "resnet56->resnet20", "CIFAR-100+SVHN/reduction_pct", "70.00", ""),
        (
            "lohit2020",
            "7",
            "alpha=1.0 gamma=1.0",
            "CIFAR-100/resnet32x4->ShuffleNetV2",
            "76.37",
            "0.51",
        ),
        ("lohit2020", "7", "alpha=0.9 gamma=0.0", "CIFAR-100/vgg13->vgg8", "72.75", "0.15"),
        # lu2017
        ("lu2017", "2", "Consecutive finetuning on source+target", "ITL-Airbus", "0.545", ""),
        ("lu2017", "2", "Consecutive finetuning on source+target", "ITL-Boeing", "0.5286", ""),
        ("lu2017", "2", "JTLN (fc7MKMMD)", "ITL-Airbus", "0.5982", ""),
        ("lu2017", "2", "JTLN (fc7OT)", "ITL-Boeing", "0.5436", ""),
        ("lu2017", "2", "Finetuning on target", "ITL-Boeing", "0.4796", ""),
        ("lu2017", "1", "No. of target training images", "ITL-Boeing", "1466", ""),
        ("lu2017", "1", "No. of source images", "ITL-Airbus", "8700", ""),
    ],
)
def test_spot_cells(paper, table, row, column, value, pm):
    r = cell(paper, table, row, column)
    assert (r["value"], r["pm"]) == (value, pm)


def test_skipped_cells_absent():
    """Printed "n/a" (lohit2020 Table 1, FSP) and the blank merged cell (Table 6) are not rows."""
    rows = load("lohit2020")[1]
    keys = {(r["table"], r["row"], r["column"]) for r in rows}
    assert ("1", "FSP", "CIFAR-100/resnet56->resnet20") not in keys
    assert ("1", "FSP", "CIFAR-100/resnet32x4->ShuffleNetV2") not in keys
    assert ("6", "resnet56->resnet20", "CIFAR-100+SVHN/student_params_1e6") not in keys


@pytest.mark.parametrize(
    "paper,table,row,spec",
    [
        ("li2020", "1", "L2-SP", "l2sp"),
        ("li2020", "2", "Omega_KD", "kd"),
        ("lohit2020", "1", "REMD+KD", "ot_samples_remd+kd"),
        ("lohit2020", "7", "alpha=0.9 gamma=1.0", "ot_samples_ipot+kd"),
        ("lohit2020", "1", "Teacher", ""),
        ("lu2017", "2", "JTLN (fc7OT)", "jtln"),
    ],
)
def test_specs(paper, table, row, spec):
    assert {r["spec"] for r in load(paper)[1] if (r["table"], r["row"]) == (table, row)} == {spec}


def test_cross_table_consistency():
    """Numbers printed twice in a paper agree (li2020 Table 1 vs Table 4 at batch 64, Table 3 vs
    S1; lohit2020 Table 1 vs Table 2, and Table 3 "all 4 stages" vs Table 1)."""
    li = {(r["table"], r["row"], r["column"]): (r["value"], r["pm"]) for r in load("li2020")[1]}
    for row in ("L2", "L2-SP", "Omega_I", "Omega_U", "Omega_P"):
        assert li[("1", row, "Aircraft100")] == li[("4", row, "Aircraft100/batch=64")]
    for (t, row, col), v in li.items():
        if t == "3":
            assert li[("S1", row, col)] == v
    lo = {(r["table"], r["row"], r["column"]): r["value"] for r in load("lohit2020")[1]}
    for (t, row, col), v in lo.items():
        if t == "2" and ("1", row, col) in lo:
            assert lo[("1", row, col)] == v, (row, col)
    for row in ("IPOT", "IPOT+KD"):
        assert (
            lo[("3", row, "CIFAR-100/resnet32x4->resnet8x4/features=all4stages")]
            == lo[("1", row, "CIFAR-100/resnet32x4->resnet8x4")]
        )
