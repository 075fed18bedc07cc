"""The CPU twins fit to test the papers' claims: the shared-subspace task `latent`,
equal-width deeper -> shallower pairs without embeddings, selection on the validation split
only, the chosen point beside each cell, and the verdicts printed first."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from harness.experiments.suite import expand, load_suite
from harness.reports.tables import _with_choices, select_by_val
from harness.reports.verdict_text import verdict_summary
from harness.zoo.data import load_dataset
from harness.zoo.models import build_model

SUITES = [
    "mini",
    "li2020_table1-cpu",
    "li2020_table2-cpu",
    "li2020_table3-cpu",
    "li2020_table4-cpu",
    "li2020_fig2-cpu",
    "li2020_fig3-cpu",
    "ablation_layers-cpu",
    "ablation_plan-cpu",
    "ablation_view-cpu",
    "lu2017_table2-cpu",
    "lohit2020_table1-cpu",
    "lohit2020_table2-cpu",
    "lohit2020_table3-cpu",
    "lohit2020_table4-cpu",
    "lohit2020_table5-cpu",
]


# --------------------------------------------------------------------------- latent


def test_latent_splits_are_disjoint_seeded_and_classes_select_and_relabel():
    kw = dict(n_samples=600, num_classes=6, dims=16, latent=3)
    parts = {s: load_dataset("latent", split=s, seed=1, **kw) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [420, 90, 90]
    rows = [{tuple(r.tolist()) for r in parts[s].data} for s in parts]
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    again = load_dataset("latent", split="train", seed=1, **kw)
    assert torch.equal(again.data, parts["train"].data)
    other = load_dataset("latent", split="train", seed=2, **kw)
    assert not torch.equal(other.data, parts["train"].data)  # the split moves with the seed
    tgt = load_dataset("latent", split="train", seed=1, classes=[4, 5], n_per_class=3, **kw)
    assert tgt.classes == ["4", "5"] and sorted(tgt.targets.tolist()) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="fewer than n_per_class"):
        load_dataset("latent", split="val", seed=1, classes=[4], n_per_class=100, **kw)


def test_latent_classes_share_one_subspace_so_source_and_target_have_one_structure():
    """Every class mean lies in one `latent`-dimensional subspace: the top principal directions
    of the source classes' means span the target classes' means too (what transfers)."""
    kw = dict(n_samples=6000, num_classes=30, dims=64, latent=8, noise=0.0)
    src = load_dataset("latent", split="train", seed=0, classes=list(range(20)), **kw)
    tgt = load_dataset("latent", split="train", seed=0, classes=list(range(20, 30)), **kw)
    mean = lambda ds, k: ds.data[ds.targets == k].mean(0)  # noqa: E731
    m_src = torch.stack([mean(src, k) for k in range(20)])
    m_tgt = torch.stack([mean(tgt, k) for k in range(10)])
    basis = torch.linalg.svd(m_src, full_matrices=False).Vh[:8]  # 8 directions of the source
    resid = m_tgt - m_tgt @ basis.T @ basis
    assert resid.norm() / m_tgt.norm() < 1e-4
    assert torch.linalg.matrix_rank(m_src, atol=1e-3) == 8  # 8-d, not all of R^64


def test_latent_coarse_labels_are_the_same_images_under_super_classes():
    fine = load_dataset("latent", split="train", seed=0, n_samples=3000)
    coarse = load_dataset("latent", split="train", seed=0, n_samples=3000, coarse=10)
    assert torch.equal(fine.data, coarse.data)
    assert torch.equal(coarse.targets, fine.targets % 10)
    assert coarse.classes == [f"super{c}" for c in range(10)]
    with pytest.raises(ValueError, match="coarse must be an integer"):
        load_dataset("latent", split="train", seed=0, n_samples=3000, coarse=30)


# --------------------------------------------------------------------------- models


def test_mlp_stages_tap_deep_and_shallow_nets_at_matching_depths():
    deep = build_model("mlp", 10, widths=[32] * 8, stages=4)
    shallow = build_model("mlp", 10, widths=[32] * 4)
    assert [deep.tap_points[f"stage{k}"] for k in (1, 2, 3, 4)] == [
        "features.4",
        "features.8",
        "features.12",
        "features.16",
    ]  # after ReLUs 2, 4, 6, 8
    assert [shallow.tap_points[f"stage{k}"] for k in (1, 2, 3, 4)] == [
        "features.2",
        "features.4",
        "features.6",
        "features.8",
    ]
    assert deep.tap_points["penultimate"] == deep.tap_points["stage4"]
    with pytest.raises(ValueError, match="do not split into 3 stages"):
        build_model("mlp", 10, widths=[32] * 8, stages=3)


def test_cnn_depth_adds_layers_per_stage_and_depth_one_keeps_the_old_layout():
    one = build_model("cnn", 10)
    assert [k for k in one.state_dict() if k.startswith("layer1")][:2] == [
        "layer1.0.weight",
        "layer1.1.weight",
    ]  # conv, BN: the committed weights still load
    three = build_model("cnn", 10, depth=3)
    convs = [m for m in three.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 9 and three(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert sum(p.numel() for p in three.parameters()) > sum(p.numel() for p in one.parameters())
    with pytest.raises(ValueError, match="depth must be >= 1"):
        build_model("cnn", 10, depth=0)


@pytest.mark.parametrize("suite", [s for s in SUITES if s.startswith("lohit")])
def test_lohit_twins_pair_equal_widths_at_every_tapped_stage_with_no_embedding(suite):
    """lohit2020's pairs keep the widths and change the depth; so do the twins: each tap of the
    teacher and the student has the same width, and the OT terms say `embed: none` (which
    raises on a width mismatch), so no learned map stands between them."""
    from harness.transfer.taps import Taps

    s = load_suite(suite)
    stages = {st.name: st for st in s.stages}
    checked = 0
    for st in s.stages:
        if not st.teacher or not st.regularizers:
            continue
        t = stages[st.teacher]
        x = (
            torch.rand(4, 1, 8, 8)
            if st.model == "cnn"
            else torch.rand(4, int(st.model_params.get("in_features", 64)))
        )
        nets = [build_model(m.model, 10, **dict(m.model_params)) for m in (t, st)]
        assert nets[0].__class__ is nets[1].__class__
        assert sum(p.numel() for p in nets[0].parameters()) > sum(
            p.numel() for p in nets[1].parameters()
        )  # deeper teacher
        for spec, params in st.regularizers:
            if "ot_samples" not in spec:
                continue
            embed = {k: v for k, v in params.items() if k.endswith("embed")}
            assert embed and set(embed.values()) == {"none"}, (st.name, spec, params)
            taps = next(v for k, v in params.items() if k.endswith("taps"))
            widths = []
            for net in nets:
                with Taps(net, list(taps), pool=False) as tp:
                    net.eval()(x)
                    widths.append([tuple(tp.features[k].shape[1:]) for k in taps])
            assert widths[0] == widths[1], (st.name, taps, widths)
            checked += 1
    assert checked


# --------------------------------------------------------------------------- protocol


@pytest.mark.parametrize("suite", SUITES)
def test_twins_run_ten_seeds_and_select_every_grid_on_validation(suite):
    s = load_suite(suite)
    # 5 seeds where a job costs 10-50 s here (deep MLPs under IPOT); the suites say so
    few = {"lohit2020_table2-cpu", "lohit2020_table5-cpu"}
    n = 5 if suite in few else 10
    assert len(s.seeds) >= n and ("5 seeds" in s.description) == (suite in few)
    jobs = expand(s)
    for st in s.stages:
        if st.grid:
            assert st.select == "val", f"{suite}: stage {st.name} has a grid but no select: val"
    assert {j.config["seed"] for j in jobs} >= set(range(n))


def test_selection_on_validation_never_reads_the_test_split():
    """Grid point A is best on validation, B on test: `select: val` keeps A, whatever the test
    accuracies are (it would keep B, or fail on the NaNs, if it read them)."""
    rows = []
    for seed in range(3):
        rows += [
            dict(
                row="omega_p",
                method="omega_p (alpha=0.1)",
                dataset="t",
                seed=seed,
                select="val",
                val_accuracy=0.90,
                test_accuracy=0.50 + seed / 100,
            ),
            dict(
                row="omega_p",
                method="omega_p (alpha=1.0)",
                dataset="t",
                seed=seed,
                select="val",
                val_accuracy=0.80,
                test_accuracy=0.99,
            ),
        ]
    d = pd.DataFrame(rows)
    sel, choices = select_by_val(d)
    assert choices == [("omega_p", "t", "omega_p (alpha=0.1)", pytest.approx(0.90))]
    assert sorted(sel["test_accuracy"]) == [0.50, 0.51, 0.52]
    poisoned = d.assign(test_accuracy=[float("nan"), 1.0] * 3)  # test says nothing / says B
    assert select_by_val(poisoned)[1] == choices
    with pytest.raises(ValueError, match="needs validation accuracies"):
        select_by_val(d.assign(val_accuracy=float("nan")))


def test_the_chosen_point_is_printed_beside_each_cell():
    table = pd.DataFrame({"t": ["70.0 ± 1.0", "71.0 ± 2.0", "-"]}, index=["none", "omega_p", "kd"])
    choices = [
        ("none", "t", "none", 0.7),
        ("omega_p", "t", "omega_p (omega_p.alpha=0.1)", 0.8),
        ("kd", "t", "kd (alpha=1.0)", 0.5),
    ]
    out = _with_choices(table, choices)
    assert out.at["none", "t"] == "70.0 ± 1.0"  # no grid: nothing to add
    assert out.at["omega_p", "t"] == "71.0 ± 2.0 · alpha=0.1"
    assert out.at["kd", "t"] == "-"


def test_the_printed_summary_leads_with_counts_and_intervals(tmp_path):
    v = pd.DataFrame(
        [
            dict(
                table="c",
                kind="premise",
                claim="kd > none",
                task="a",
                family="p.T1",
                method="sign-flip",
                mean_diff=6.7,
                ci_low=5.4,
                ci_high=8.1,
                verdict="holds",
                paper_holds=True,
            ),
            dict(
                table="c",
                kind="claim",
                claim="omega_p > kd",
                task="a",
                family="p.T1",
                method="sign-flip",
                mean_diff=-4.4,
                ci_low=-5.4,
                ci_high=-3.3,
                verdict="reversed",
                paper_holds=True,
            ),
            dict(
                table="c",
                kind="claim",
                claim="omega_p > kd",
                task="b",
                family="p.T1",
                method="sign-flip",
                mean_diff=0.1,
                ci_low=-1.0,
                ci_high=1.2,
                verdict="not tested",
                paper_holds=False,
            ),
        ]
    )
    path = tmp_path / "verdicts.csv"
    v.to_csv(path, index=False)
    text = verdict_summary(path).splitlines()
    assert text[0].startswith("Verdicts") and "sign-flip" in text[0] and "Holm" in text[0]
    assert text[1] == (
        "  c · premise kd > none [p.T1]: 1 holds / 0 reversed / 0 equivalent / "
        "0 inconclusive / 0 vacuous / 0 not tested of 1 (paper 1 of 1)  — "
        "a: +6.7 [+5.4, +8.1]"
    )
    assert text[2].startswith(
        "  c · claim omega_p > kd [p.T1]: 0 holds / 1 reversed / "
        "0 equivalent / 0 inconclusive / 0 vacuous / 1 not tested of 2 "
        "(paper 1 of 2)"
    )


def test_a_row_the_paper_lacks_gets_no_paper_number():
    """`rows: {scratch: null}`: the target trained from random weights has spec `none` like
    the paper's fine-tuning baseline, but no counterpart in the paper."""
    from harness.experiments.reference import paper_numbers, reference_from_config

    ref = reference_from_config(
        {
            "paper": "li2020",
            "table": "1",
            "columns": {"A": "Aircraft100"},
            "rows": {"scratch": None},
        }
    )
    values, text = paper_numbers(ref, [("scratch", "none"), ("none", "none")], ["A"])
    assert text.at["scratch", "A"] == "-" and pd.isna(values.at["scratch", "A"])
    assert values.at["none", "A"] == pytest.approx(83.95)


def test_in_memory_batches_are_the_batches_default_collate_stacks():
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    from harness.training.loop import TrainConfig, _epoch_loader

    ds = load_dataset("digits", split="train", seed=0, image=True)
    cfg = TrainConfig(batch_size=50, seed=3)
    fast = list(_epoch_loader(ds, cfg, 2))
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 2)
    slow = list(
        DataLoader(
            ds, batch_sampler=BatchSampler(RandomSampler(ds, generator=g), 50, True), generator=g
        )
    )
    assert len(fast) == len(slow) == 24
    for (xa, ya), (xb, yb) in zip(fast, slow, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and ya.dtype == yb.dtype


def test_quick_smoke_runs_take_the_first_grid_value_only():
    from harness.experiments.suite import quick_suite

    s = load_suite("li2020_table2-cpu")
    q = quick_suite(s)
    assert q.name == "li2020_table2-cpu-quick" and q.seeds == (0,)
    assert all(len(v) == 1 for st in q.stages for v in st.grid.values())
    assert len(expand(q)) == 6 + 12 * 4  # teachers, then none / Omega_U / KD / Omega_P a column
