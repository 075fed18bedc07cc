"""The one registry class (solvers/registry.py) that solvers, regularizers, models and datasets
use: registering, refusing a duplicate, looking up with suggestions, filtering by capability,
and the plugin hook run once at the first lookup."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from solvers.registry import Registry, close_matches, did_you_mean


@dataclass(frozen=True)
class Info:
    name: str
    fn: object
    fast: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def slow(self) -> bool:
        return not self.fast


def _registry(**options) -> Registry:
    return Registry(
        "widget", make=lambda name, fn, **caps: Info(name=name, fn=fn, **caps), **options
    )


def test_register_direct_and_as_decorator():
    reg = _registry()

    def plain():
        return 1

    assert reg.register("plain", plain) is plain  # the object comes back unchanged

    @reg.register("quick", fast=True)
    def quick():
        return 2

    assert quick() == 2
    assert reg.get("plain") == Info("plain", plain)
    assert reg.get("quick").fast and reg.get("quick").fn is quick
    assert reg.items() == [("plain", Info("plain", plain)), ("quick", Info("quick", quick, True))]
    assert "quick" in reg and "slow" not in reg


def test_duplicate_name_or_alias_is_refused_in_one_line():
    reg = _registry()
    reg.register("plain", print, aliases=("p",))
    for name, aliases in (("plain", ()), ("other", ("p",)), ("p", ())):
        with pytest.raises(ValueError) as exc:
            reg.register(name, len, aliases=aliases)
        msg = str(exc.value)
        assert msg == f"widget name {aliases[0] if aliases else name!r} is already registered"
        assert "\n" not in msg
    assert reg.names() == ["plain"] and reg.get("plain").fn is print  # untouched


def test_unknown_name_suggests_close_matches_and_lists_the_names():
    reg = _registry(plural="widgets")
    for name in ("sinkhorn", "ipot", "emd"):
        reg.register(name, None)
    with pytest.raises(ValueError) as exc:
        reg.get("sinkorn")
    assert str(exc.value) == (
        "unknown widget 'sinkorn'; did you mean 'sinkhorn'? Known widgets: emd, ipot, sinkhorn"
    )
    with pytest.raises(ValueError) as exc:
        reg.get("zzzz")
    assert "did you mean" not in str(exc.value) and "Known widgets: emd" in str(exc.value)
    with pytest.raises(ValueError, match="unknown widget"):
        reg.get(["unhashable"])


def test_case_blanks_and_aliases_forgiven_unless_exact():
    loose, exact = _registry(), _registry(exact=True)
    for reg in (loose, exact):
        reg.register("remd", None, aliases=("relaxed",))
    assert loose.get(" REMD ").name == "remd" and loose.get("Relaxed").name == "remd"
    assert exact.get("relaxed").name == "remd"  # an alias is an exact name
    with pytest.raises(ValueError, match=r"unknown widget 'REMD'; did you mean 'remd'"):
        exact.get("REMD")  # suggested case-insensitively, never found


def test_names_filters_by_capability_and_rejects_an_unknown_flag():
    reg = _registry()
    reg.register("a", None, fast=True)
    reg.register("b", None)
    reg.register("c", None, fast=True)
    assert reg.names() == ["a", "b", "c"]
    assert reg.names(fast=True) == ["a", "c"]
    assert reg.names(slow=True) == ["b"]  # properties are capabilities too
    with pytest.raises(ValueError, match=r"unknown capability flag\(s\) \['speed'\]; known: "):
        reg.names(speed=1)


def test_without_make_the_object_is_the_entry():
    reg = Registry("thing")
    reg.register("x", 42)
    assert reg.get("x") == 42
    with pytest.raises(TypeError, match="takes no capabilities"):
        reg.register("y", 1, fast=True)


def test_plugin_hook_runs_once_at_the_first_lookup(monkeypatch):
    calls = []
    reg = _registry(
        preload=lambda: (calls.append("preload"), reg.register("built_in", None)),
        entry_points="otransfer.test_group_none",
    )
    import solvers.registry as R

    monkeypatch.setattr(R, "load_entry_points", lambda group: calls.append(group))
    reg.register("early", None)
    assert calls == []  # registering is no lookup
    assert reg.names() == ["early", "built_in"]
    reg.get("built_in"), reg.items(), "x" in reg, reg.names(fast=False)
    assert calls == ["preload", "otransfer.test_group_none"]


def test_a_failing_preload_fails_every_lookup():
    def broken():
        raise ImportError("a built-in module is broken")

    reg = _registry(preload=broken)
    for _ in range(2):
        with pytest.raises(ImportError, match="broken"):
            reg.get("x")


def test_a_lookup_inside_the_hook_does_not_recurse():
    reg = _registry(preload=lambda: reg.names())
    assert reg.names() == []


def test_restoring_undoes_registrations():
    reg = _registry()
    reg.register("kept", None)
    with reg.restoring():
        reg.register("scratch", None, aliases=("s",))
        assert reg.get("s").name == "scratch"
    assert reg.names() == ["kept"] and "s" not in reg


def test_suggestion_helpers():
    known = ["penultimate", "stage1", "Stage2"]
    assert close_matches("penultimat", known) == ["penultimate"]
    assert close_matches("STAGE2", known) == []  # case counts unless folded
    assert close_matches("STAGE2", known, fold_case=True, n=1) == ["Stage2"]
    assert did_you_mean("stage", known, n=2) == "; did you mean 'stage1', 'Stage2'?"
    assert did_you_mean("zzz", known) == ""


def test_every_registry_of_the_project_is_one_of_these():
    from harness.transfer.regularizers import REGULARIZERS
    from harness.zoo.data import DATASETS
    from harness.zoo.models import MODELS, TAPS
    from solvers._registry import METHODS

    for reg, name in (
        (METHODS, "emd"),
        (REGULARIZERS, "kd"),
        (MODELS, "mlp"),
        (DATASETS, "digits"),
        (TAPS, "penultimate"),
    ):
        assert isinstance(reg, Registry) and reg.get(name).name == name


def test_the_split_regularizer_modules_register_in_the_old_order():
    """harness.transfer.regularizers imports its term modules in an order the listing, the
    schemas and the CLI choices read back."""
    from harness.transfer.regularizers import all_regularizers, available_regularizers

    assert list(all_regularizers()) == [
        "none",
        "l2",
        "l2sp",
        "kd",
        "omega_p",
        "omega_i",
        "omega_u",
        "ot_samples_ipot",
        "ot_samples_remd",
        "jtln",
    ]
    assert available_regularizers(needs_teacher=False) == ["none", "l2", "l2sp", "jtln"]


def test_an_unknown_tap_is_answered_with_the_close_names():
    """Tap names are a registry too: a misspelt one is answered with its close matches, and a
    model that declares an unknown tap fails where it registers."""
    from harness.zoo.models import MODELS, get_model, get_tap, register_model

    assert get_tap(" Penultimate ").name == "penultimate"
    with pytest.raises(ValueError, match=r"unknown tap 'stgae1'; did you mean 'stage1'") as err:
        get_tap("stgae1")
    assert "Known taps: fc6, fc7, head, penultimate, source_head, stage1" in str(err.value)
    assert get_model("alexnet").taps[:3] == ("penultimate", "fc7", "fc6")
    with MODELS.restoring():
        register_model("tapped", taps=("Stage1", "head"))(lambda num_classes: None)
        assert get_model("tapped").taps == ("stage1", "head")
        with pytest.raises(ValueError, match="unknown tap 'penultimat'; did you mean 'penult"):
            register_model("mistapped", taps=("penultimat",))(lambda num_classes: None)
    assert "tapped" not in MODELS


def test_the_split_zoo_modules_register_in_the_old_order():
    """harness.zoo.data and harness.zoo.models import their pieces in an order the listings
    and the CLI choices read back."""
    from harness.zoo.data import all_datasets
    from harness.zoo.models import all_models

    assert list(all_datasets()) == [
        "digits",
        "synthetic",
        "latent",
        "cifar10",
        "cifar100",
        "cifar20",
        "svhn",
        "aircraft",
        "cub200",
        "food101",
        "cars196",
        "dogs120",
        "imagenet",
        "glyphs",
    ]
    assert list(all_models()) == [
        "mlp",
        "cnn",
        "resnet20",
        "resnet32",
        "resnet56",
        "resnet110",
        "resnet56_slim",
        "resnet8x4",
        "resnet32x4",
        "preact_resnet1001",
        "preact_resnet56",
        "preact_resnet56_slim",
        "wrn",
        "wrn_16_2",
        "wrn_40_2",
        "wrn_28_10",
        "vgg8",
        "vgg13",
        "shufflenet_v2",
        "resnet18",
        "resnet34",
        "resnet101",
        "mobilenet_v2",
        "alexnet",
    ]
