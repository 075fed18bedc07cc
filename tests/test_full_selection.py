"""Full-scale suites select their grids' points on a validation split held out of the training
data, as their CPU twins do (docs/selection.md), instead of reporting every grid point as a
row; the held-out size is stated (10 % of the training images)."""

from __future__ import annotations

import math

import pytest

from harness.experiments.suite import available_suites, load_suite, resolve_split
from harness.reports.plan import TRAIN_IMAGES
from harness.zoo.data import held_splits

#: Not paper tables: smoke / load / tuning suites.
NOT_PAPER = {"mini", "load-40", "tune-cpu"}
#: Ablations whose grid is the ablated quantity, reported one row per point by design (the
#: Sinkhorn epsilon of ablation_plan); their CPU twins have no ``select`` either.
ROWS_BY_DESIGN = {"ablation_plan"}
FULL = sorted(s for s in available_suites() if not s.endswith("-cpu") and s not in NOT_PAPER)
#: Splits that contain another split: training on one while validating on the other leaks.
_CONTAINS = {"trainval": {"train", "val"}, "all": {"train", "val", "trainval", "test"}}


def _grid_points(stage) -> int:
    return math.prod(len(v) for v in stage.grid.values()) if stage.grid else 1


def _gridded(name):
    return [st for st in load_suite(name).stages if _grid_points(st) >= 2]


@pytest.mark.parametrize("name", FULL)
def test_every_full_grid_selects_on_a_held_out_validation_split(name):
    stages = _gridded(name)
    if name in ROWS_BY_DESIGN:
        assert stages and all(st.select is None for st in stages), name
        return
    for st in stages:
        assert st.select == "val", (name, st.name)
        for d in st.datasets:
            val = resolve_split(st.splits, "val", d)
            train = resolve_split(st.splits, "train", d)
            assert val is not None and val in held_splits(d, st.dataset_params), (name, st.name, d)
            assert val != train and val not in _CONTAINS.get(train, ()), (name, st.name, d)
            size = st.dataset_params.get("val_size")
            if size is not None:  # held out of train: 10 % of the training images
                assert size == round(TRAIN_IMAGES[d] / 10), (name, st.name, d, size)


def test_the_full_suites_with_grids_are_the_expected_ones():
    """A new full suite with a grid is checked above; this list says which ones are."""
    with_grids = {n for n in FULL if _gridded(n)}
    assert with_grids == {
        "li2020_table1",
        "li2020_table2",
        "li2020_table3",
        "li2020_table4",
        "li2020_fig3",
        "ablation_plan",
    }


def test_smoke_fails_a_select_val_template_without_a_validation_split():
    """`otransfer run --smoke` checks what the report will select on: a ``select: val``
    template whose stage has no validation split fails, with the reason."""
    from harness.experiments.smoke import NO_VAL, run_smoke

    def pick(jobs, _by_key):  # mini's `none` fine-tuning and its source network
        job = next(j for j in jobs if j.stage == "finetune" and j.row == "none")
        return [j for j in jobs if j.key in (job.key, job.config["teacher"])]

    ok = run_smoke("mini", sample=pick, say=None)
    assert [r.status for r in ok] == ["ok", "ok"], [r.reason for r in ok]
    bad = run_smoke("mini", ["stages.finetune.splits={val: null}"], sample=pick, say=None)
    assert [(r.status, r.reason) for r in bad][-1] == ("failed", NO_VAL)
