"""Suite input that was accepted, expanded without bounds or answered with a traceback: each
is refused with one line naming the file, the line and the key (or the file and what
to do), before any job runs; and a run whose finite loss exploded is failed, not recorded."""

from __future__ import annotations

import csv
import sqlite3
import time
from pathlib import Path

import pytest

from harness.experiments.suite import SuiteError, expand, load_suite, parse_suite

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
KD = "      - kd: {tau: 4}\n"
REF = "    reference: {paper: li2020, table: '2', columns: {digits: CIFAR-100/L->M}, %s: [%s]}\n"


def _refused(text: str, line: int, key: str, *what: str, overrides=()) -> str:
    with pytest.raises(SuiteError) as info:
        parse_suite(text, "t.yaml", overrides)
    msg = str(info.value)
    assert msg.startswith(f"t.yaml, line {line}, key {key!r}:"), msg
    assert all(w in msg for w in what) and "\n" not in msg, msg
    return msg


def _edit(old: str, new: str) -> str:
    assert old in TINY, old
    return TINY.replace(old, new, 1)


# --------------------------------------------------------------------------- 1. pooled rows


@pytest.mark.parametrize(
    "new, key, what",
    [
        (
            KD + "      - kd: {tau: 2, row: kd}\n",
            "stages.students.regularizers.2",
            "row 'kd' of table 'students', column 'digits' is also stages.students.regularizers.1",
        ),
        (KD + "      - kd: {tau: 2}\n", "stages.students.regularizers.2", "pooled into one"),
        (
            KD + "      - kd: {tau: 4.0, row: KD at 4}\n",
            "stages.students.regularizers.2",
            "trains the same jobs as regularizers.1",
        ),  # the same job (a key apart), two rows
        (
            KD + "      - kd: {row: default tau}\n",
            "stages.students.regularizers.2",
            "trains the same jobs as regularizers.1",
        ),  # tau's default is 4.0
        (
            "      - kd: {tau: 2, row: a}\n      - kd: {tau: 4, row: b}\n"
            "    grid: {kd.tau: [2, 8]}\n",
            "stages.students.regularizers.2",
            "trains the same jobs as regularizers.1",
        ),
    ],
)
def test_two_configs_pooled_into_one_row_are_refused(new, key, what):
    _refused(_edit(KD, new), 19 if key.endswith("2") else 18, key, what)


def test_a_row_shared_by_two_stages_of_one_table_and_column_is_refused():
    text = _edit("    teacher: teacher\n", "    teacher: teacher\n    table: t\n") + (
        "  more:\n    model: mlp\n    model_params: {widths: [8]}\n    dataset: digits\n"
        "    table: t\n    regularizers: [none]\n"
    )
    _refused(
        text,
        25,
        "stages.more.regularizers.0",
        "row 'none' of table 't', column 'digits' is also stages.students.regularizers.0",
    )
    ok = text.replace("regularizers: [none]", "regularizers: [{none: {row: width 8}}]")
    assert len(expand(parse_suite(ok, "t.yaml"))) == 2 + 4 + 2


def test_a_fixed_task_over_several_datasets_is_refused():
    _refused(
        TINY,
        9,
        "stages.students.task",
        "pooled into one cell",
        "{dataset}",
        overrides=[
            "stages.students.dataset=[digits, latent]",
            "stages.students.task=foo",
            "stages.students.dataset_params={}",
        ],
    )
    parse_suite(
        TINY,
        "t.yaml",
        [
            "stages.students.dataset=[digits, latent]",
            "stages.students.task='{dataset} (few)'",
            "stages.students.dataset_params={}",
        ],
    )


# --------------------------------------------------------------------------- 2. claims


@pytest.mark.parametrize(
    "key, claim, what",
    [
        (
            "claims",
            '"kd > nosuch"',
            "'nosuch' is not a row of table 'students' (its rows: 'kd', 'none')",
        ),
        ("premises", '"x > none"', "premise 'x > none': 'x' is not a row"),
        ("claims", '"kd >> none"', "expected 'ROW > ROW'"),
        ("claims", '"kd > none > kd"', "expected 'ROW > ROW'"),
        ("claims", '"kd => none"', "'kd =' is not a row"),
        ("claims", '"kd > kd"', "compares a row with itself"),
    ],
)
def test_claims_and_premises_naming_no_row_or_not_parsing_are_refused(key, claim, what):
    _refused(_edit(KD, KD + REF % (key, claim)), 19, f"stages.students.reference.{key}.0", what)


def test_a_claim_by_spec_and_the_row_and_column_maps_are_checked():
    ok = _edit(KD, KD.replace("}", ", row: KD (tau 4)}") + REF % ("claims", '"kd > none"'))
    parse_suite(ok, "t.yaml")  # 'kd' is the spec of one row
    _refused(
        ok.replace("columns: {digits:", "columns: {digitz:"),
        19,
        "stages.students.reference.columns.digitz",
        "not a column of table 'students'",
    )
    bad_row = ok.replace("table: '2',", "table: '2', rows: {kd: null},")
    _refused(bad_row, 19, "stages.students.reference.rows.kd", "'kd' is not a row")


def test_a_reference_on_a_stage_that_is_not_reported_is_refused():
    text = _edit(
        "    train: {epochs: 1, batch_size: 64, lr: 0.05}\n",
        "    train: {epochs: 1, batch_size: 64, lr: 0.05}\n" + REF % ("claims", ""),
    )
    _refused(text, 9, "stages.teacher.reference", "stage 'teacher' is not reported")


def test_parse_claim_refuses_a_doubled_operator():
    from harness.experiments.reference import parse_claim

    assert str(parse_claim("sinkhorn eps=0.01 >= kd")) == "sinkhorn eps=0.01 >= kd"
    for text in ("kd >> none", "kd <> none", "kd > ", "kd none"):
        with pytest.raises(ValueError, match="expected 'ROW > ROW'"):
            parse_claim(text)


# --------------------------------------------------------------------------- 3. grids


@pytest.mark.parametrize(
    "axis, what",
    [
        ("kd.tau: [4, 4.0]", "4 and 4.0 are equal"),
        ("kd.tau: [1.0e-3, 0.001, 2]", "0.001 and 0.001 are equal"),
        ("kd.tau: [1e-3, 0.001]", "YAML reads '1e-3' as a string"),
        ("kd.alpha: [true, 1]", "kd.alpha = True"),
        ("kd.tau: [-1, 4]", "kd.tau = -1: kd.tau must be a finite number > 0"),
    ],
)
def test_grid_values_equal_as_numbers_or_nonsense_are_refused(axis, what):
    _refused(
        _edit(KD, KD + f"    grid: {{{axis}}}\n"),
        19,
        f"stages.students.grid.{axis[: axis.index(':')]}",
        what,
    )


# --------------------------------------------------------------------------- 4. spelling


@pytest.mark.parametrize(
    "old, new, line, key, what",
    [
        (KD, "      - KD: {tau: 4}\n", 18, "stages.students.regularizers.1", "did you mean 'kd'?"),
        (
            KD,
            "      - 'kd ': {tau: 4}\n",
            18,
            "stages.students.regularizers.1",
            "did you mean 'kd'?",
        ),
        (KD, "      - KD\n", 18, "stages.students.regularizers.1", "did you mean 'kd'?"),
        (
            "      - none\n",
            "      - ' none'\n",
            17,
            "stages.students.regularizers.0",
            "did you mean 'none'?",
        ),
        (
            KD,
            "      - 'omega_p + kd'\n",
            18,
            "stages.students.regularizers.1",
            "did you mean 'omega_p+kd'?",
        ),
        (KD, "      - kd+none\n", 18, "stages.students.regularizers.1", "write 'kd'"),
        (
            "    model: mlp\n    model_params: {widths: [4]}",
            "    model: MLP\n    model_params: {widths: [4]}",
            10,
            "stages.students.model",
            "did you mean 'mlp'?",
        ),
        (
            "    dataset: digits\n    dataset_params",
            "    dataset: Digits\n    dataset_params",
            12,
            "stages.students.dataset",
            "did you mean 'digits'?",
        ),
        (
            KD,
            "      - omega_p: {cost: Euclidean}\n",
            18,
            "stages.students.regularizers.1",
            "omega_p.cost must be one of euclidean, sqeuclidean, cosine",
        ),
        (
            KD,
            "      - omega_p: {taps: [Penultimate]}\n",
            18,
            "stages.students.regularizers.1",
            "did you mean 'penultimate'?",
        ),
    ],
)
def test_names_spelt_otherwise_than_registered_are_refused(old, new, line, key, what):
    _refused(_edit(old, new), line, key, what)


def test_aliases_stay_names():
    text = _edit(KD, "      - ipot: {taps: [penultimate]}\n")
    assert [j.regularizer for j in expand(parse_suite(text, "t.yaml"))][-1] == "ipot"


# --------------------------------------------------------------------------- 5. blank names


@pytest.mark.parametrize(
    "old, new, line, key, what",
    [
        ("  students:", "  '':", 9, "stages.", "a stage name is blank"),
        ("  students:", "  '  ':", 9, "stages.  ", "a stage name is blank"),
        ("  students:", "  ' students':", 9, "stages. students", "starts or ends with spaces"),
        ("  students:", "  7:", 9, "stages.7", "must be a string"),
        ("  students:", "  a.b:", 9, "stages.a.b", "holds no '.'"),
        (
            KD,
            "      - kd: {tau: 4, row: ''}\n",
            18,
            "stages.students.regularizers.1",
            "'row' (the row name) is blank",
        ),
        (
            KD,
            "      - kd: {tau: 4, row: '  '}\n",
            18,
            "stages.students.regularizers.1",
            "'row' (the row name) is blank",
        ),
        (
            "    teacher: teacher\n",
            "    teacher: teacher\n    table: ' '\n",
            15,
            "stages.students.table",
            "table is blank",
        ),
        (
            "    teacher: teacher\n",
            "    teacher: teacher\n    task: ''\n",
            15,
            "stages.students.task",
            "task is blank",
        ),
    ],
)
def test_blank_names_are_refused(old, new, line, key, what):
    _refused(_edit(old, new), line, key, what)


# --------------------------------------------------------------------------- 6. values


@pytest.mark.parametrize(
    "entry, what",
    [
        ("omega_p: {plan: sinkhorn, max_iter: -5}", "omega_p.max_iter must be >= 1; got -5"),
        ("omega_p: {plan: emd, max_iter: -5}", "omega_p.max_iter must be >= 1"),
        ("omega_p: {plan: sinkhorn, reg: '0.1'}", "omega_p.reg must be a number; got '0.1' (YAML"),
        ("omega_p: {plan: sinkhorn, reg: -1}", "omega_p.reg must be > 0"),
        ("omega_p: {plan: sinkhorn, reg: .nan}", "omega_p.reg must be finite"),
        ("omega_p: {plan: sinkhorn, scaling: 2}", "omega_p.scaling must be < 1"),
        ("omega_p: {plan: sinkhorn, sparse: 'yes'}", "omega_p.sparse must be true or false"),
        ("omega_p: {plan: ipot, beta: 0}", "omega_p.beta must be > 0"),
        ("ipot: {max_iter: 2.5}", "ot_samples_ipot.max_iter must be an integer"),
        ("ipot: {embed_dim: 2.5}", "embed_dim must be a positive integer"),
        ("kd: {scale: tau3}", "kd.scale must be one of tau2, none"),
        ("omega_p: {taps: [nosuch]}", "omega_p.taps: unknown tap 'nosuch'"),
    ],
)
def test_regularizer_and_solver_values_are_refused_at_load(entry, what):
    _refused(_edit(KD, f"      - {entry}\n"), 18, "stages.students.regularizers.1", what)


@pytest.mark.parametrize(
    "new, key, what",
    [
        (
            "    grid: {tau: [2, 3], kd.tau: [4]}\n",
            "stages.students.grid.kd.tau",
            "axes 'tau' and 'kd.tau' both set kd.tau",
        ),
        (
            "    grid: {omega_p.plan: [ipot, sinkhorn], omega_p.beta: [0.5]}\n",
            "stages.students.grid.omega_p.beta",
            "omega_p.plan = 'sinkhorn', omega_p.beta = 0.5: unknown parameter 'omega_p.beta'",
        ),
    ],
)
def test_grid_axes_that_overwrite_or_cannot_combine_are_refused(new, key, what):
    _refused(_edit(KD, KD + "      - omega_p: {taps: [penultimate]}\n" + new), 20, key, what)
    ok = _edit(
        KD,
        "      - omega_p: {taps: [penultimate]}\n    grid: {omega_p.plan: [sinkhorn, "
        "pot_sinkhorn], omega_p.reg: [0.1, 0.01]}\n",
    )
    assert len(expand(parse_suite(ok, "t.yaml"))) == 2 + 2 * (1 + 4)


@pytest.mark.parametrize(
    "space, key, what",
    [
        (
            "{kd.tau: {low: -3.0, high: 2.0}}",
            "search.space.kd.tau",
            "kd.tau = -3.0: kd.tau must be",
        ),
        ("{kd.tau: {choices: [4, 4.0]}}", "search.space.kd.tau.choices", "lists a choice twice"),
        ("{kd.alpha: {choices: ['1.0e-3', 1.0]}}", "search.space.kd.alpha", "YAML reads"),
    ],
)
def test_search_dimensions_are_checked_as_the_grid_is(space, key, what):
    with pytest.raises(SuiteError) as info:
        parse_suite(
            TINY, "t.yaml", [f"search={{stage: students, regularizer: kd, space: {space}}}"]
        )
    msg = str(info.value)
    assert f"key {key!r}:" in msg and what in msg and "\n" not in msg, msg
    with pytest.raises(SuiteError, match=r"key 'search.seeds': a seed is an integer in \[0"):
        parse_suite(
            TINY,
            "t.yaml",
            [
                "search={stage: students, regularizer: kd, seeds: [-1], "
                "space: {kd.tau: {low: 1.0, high: 2.0}}}"
            ],
        )


def test_a_grid_of_solver_values_is_checked_value_by_value():
    _refused(
        _edit(KD, "      - omega_p: {plan: sinkhorn}\n    grid: {omega_p.max_iter: [10, -5]}\n"),
        19,
        "stages.students.grid.omega_p.max_iter",
        "omega_p.max_iter = -5",
    )


@pytest.mark.parametrize(
    "override, key, what",
    [
        ("stages.students.train.lr=-1", "stages.students.train.lr", "lr must be > 0; got -1"),
        (
            "stages.students.train.momentum=-1",
            "stages.students.train.momentum",
            "momentum must be >=",
        ),
        ("stages.students.train.gamma=0", "stages.students.train.gamma", "gamma must be > 0"),
        (
            "stages.students.train.milestones=[-3]",
            "stages.students.train.milestones",
            "non-negative integers",
        ),
        (
            "stages.students.train.milestones=[abc]",
            "stages.students.train.milestones",
            "non-negative integers",
        ),
        (
            "stages.students.train.drop_last=maybe",
            "stages.students.train.drop_last",
            "true or false",
        ),
        ("stages.students.train.device=gpu", "stages.students.train.device", "torch device"),
        (
            "stages.students.source={dataset: digits, weight: -1}",
            "stages.students.source.weight",
            "finite number >= 0",
        ),
        (
            "stages.students.source={dataset: digits, weight: .nan}",
            "stages.students.source.weight",
            "finite number >= 0",
        ),
        (
            "stages.students.analysis={trace_taps: [penultimate], max_examples: -1}",
            "stages.students.analysis.max_examples",
            "max_examples must be >= 1",
        ),
        (
            "stages.students.analysis={trace_taps: [penultimate], split: nosuch}",
            "stages.students.analysis.split",
            "no split 'nosuch'",
        ),
        (
            "stages.students.analysis={trace_taps: [nosuch]}",
            "stages.students.analysis.trace_taps",
            "unknown tap 'nosuch'",
        ),
        (
            "stages.students.model_params={widthz: [4]}",
            "stages.students.model_params.widthz",
            "did you mean 'widths'?",
        ),
        (
            "stages.students.dataset_params={n_per_clas: 5}",
            "stages.students.dataset_params.n_per_clas",
            "did you mean 'n_per_class'?",
        ),
        ("stages.students.dataset=[digits, digits]", "stages.students.dataset", "twice"),
        ("stages.students.pretrained=' '", "stages.students.pretrained", "blank"),
        (
            "stages.students.regularizers=[none, KD]",
            "stages.students.regularizers.1",
            "did you mean 'kd'?",
        ),
        ("stages.students.grid={kd.tau: [4, 4.0]}", "stages.students.grid.kd.tau", "are equal"),
        (
            "stages.students.splits={train: {Digits: train}}",
            "stages.students.splits.train.Digits",
            "did you mean 'digits'?",
        ),
        (
            "stages.students.model_params={widths: [4], in_features: 0}",
            "stages.students.model_params.in_features",
            "in_features must be >= 1",
        ),
        (
            "stages.students.dataset_params={n_per_class: 5, relabel: 'no'}",
            "stages.students.dataset_params.relabel",
            "relabel must be true or false",
        ),
    ],
)
def test_nonsense_from_set_overrides_is_refused_on_its_key(override, key, what):
    with pytest.raises(SuiteError) as info:
        parse_suite(TINY, "t.yaml", [override])
    msg = str(info.value)
    assert f"key {key!r}:" in msg and what in msg and "\n" not in msg, msg


# --------------------------------------------------------------------------- 7. size


def _grid(n: int, lo: float) -> str:
    return "[" + ", ".join(f"{lo + i / n:.6f}" for i in range(n)) + "]"


def test_a_huge_grid_is_counted_not_expanded_and_refused_in_well_under_a_second():
    text = _edit(
        KD, KD + f"    grid: {{kd.tau: {_grid(1000, 1.0)}, kd.alpha: {_grid(1000, 0.0)}}}\n"
    )
    t0 = time.perf_counter()
    suite = parse_suite(text, "t.yaml")
    loaded = time.perf_counter() - t0
    t0 = time.perf_counter()
    with pytest.raises(SuiteError) as info:
        expand(suite)
    took = time.perf_counter() - t0
    msg = str(info.value)
    assert "expands to 2,000,004 jobs, more than the limit of 100,000" in msg, msg
    assert "1,000,001 regularizer grid point" in msg and "OTRANSFER_MAX_JOBS=" in msg
    assert took < 0.1, took  # counted: nothing built (it was still expanding after 306 s)
    assert loaded < 10, loaded
    # --quick keeps the first value of each axis: a smoke run of such a suite expands
    from harness.experiments.suite import quick_suite

    assert len(expand(quick_suite(suite))) == 1 + 2


def test_a_hundred_thousand_seeds_are_refused_within_seconds():
    t0 = time.perf_counter()
    suite = parse_suite(TINY, "t.yaml", ["seeds=[%s]" % ", ".join(map(str, range(100_000)))])
    with pytest.raises(SuiteError, match="expands to 300,000 jobs"):
        expand(suite)
    assert time.perf_counter() - t0 < 15  # 3 minutes before (a quadratic duplicate check)


def test_the_job_limit_is_an_environment_variable(monkeypatch):
    suite = parse_suite(TINY, "t.yaml")
    monkeypatch.setenv("OTRANSFER_MAX_JOBS", "5")
    with pytest.raises(SuiteError, match="expands to 6 jobs, more than the limit of 5"):
        expand(suite)
    monkeypatch.setenv("OTRANSFER_MAX_JOBS", "6")
    assert len(expand(suite)) == 6
    monkeypatch.setenv("OTRANSFER_MAX_JOBS", "many")
    with pytest.raises(ValueError, match="OTRANSFER_MAX_JOBS='many' is not a whole number"):
        expand(suite)


# --------------------------------------------------------------------------- 8. the file


def test_yaml_nested_twenty_thousand_deep_is_one_line():
    for deep in ("a: " + "[" * 20000 + "]" * 20000, "a: " + "{x: " * 20000 + "1" + "}" * 20000):
        with pytest.raises(SuiteError) as info:
            parse_suite(deep, "d.yaml")
        msg = str(info.value)
        assert msg.startswith("d.yaml, line 1: invalid YAML:") and "nesting" in msg, msg
        assert "\n" not in msg
    with pytest.raises(SuiteError, match=r"d.yaml, line 1: invalid YAML: nested more than 50 "):
        parse_suite("a: " + "[" * 60 + "]" * 60, "d.yaml")


def test_a_control_character_and_a_deep_set_value_are_one_line():
    with pytest.raises(SuiteError) as info:
        parse_suite("name: t\nstages: {}\nx: a\x00b\n", "n.yaml")
    msg = str(info.value)
    assert (
        msg.startswith("n.yaml, line 3: invalid YAML: unacceptable character #x0000")
        and "\n" not in msg
    ), msg
    with pytest.raises(SuiteError) as info:
        parse_suite(TINY, "t.yaml", ["seeds=" + "[" * 3000 + "]" * 3000])
    msg = str(info.value)
    assert "the value is not valid YAML" in msg and "\n" not in msg and len(msg) < 400, msg


def test_suite_files_that_are_not_suites_are_one_line(tmp_path):
    cases = {"bin.yaml": b"\xff\xfe\x00binary\x01", "big.yaml": b"name: t\n#" + b"x" * (1 << 20)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    for name, what in [
        ("bin.yaml", "not UTF-8 text (byte 0xff at offset 0)"),
        ("big.yaml", "more than a suite file's 1,048,576"),
        ("dir.yaml", "is a directory"),
        ("a.yaml", "a loop of links"),
    ]:
        with pytest.raises((SuiteError, FileNotFoundError)) as info:
            load_suite(tmp_path / name)
        assert what in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_suite_path_that_cannot_be_read_is_one_line_from_the_cli(tmp_path, capsys):
    from harness.cli import main

    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    assert main(["run", str(tmp_path / "a.yaml"), "--results", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("otransfer run: suite file") and "\n" not in err, err


# --------------------------------------------------------------------------- 9, 10. storage


def _one_stage(tmp_path, lr="0.05") -> Path:
    path = tmp_path / "one.yaml"
    path.write_text(
        "name: one\nseeds: [0]\nstages:\n  s:\n    model: mlp\n"
        "    model_params: {widths: [8]}\n    dataset: digits\n"
        f"    dataset_params: {{n_per_class: 10}}\n"
        f"    train: {{epochs: 4, batch_size: 25, lr: {lr}}}\n"
    )
    return path


@pytest.mark.parametrize(
    "schema, what",
    [
        (
            "create table studies(id int, name text)",
            "holds a table 'studies' without the columns of Optuna's records (no study_id",
        ),
        ("create table trials(x int)", "holds a table 'trials' without the columns"),
        (
            "create table otransfer_claims(x int)",
            "'otransfer_claims' without the columns of otransfer's claims",
        ),
    ],
)
def test_a_database_of_another_schema_is_one_line_and_left_as_it_was(
    tmp_path, capsys, schema, what
):
    from harness.cli import main

    db = tmp_path / "r" / "one" / "runs.sqlite3"
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as con:
        con.executescript(schema)
    before = db.read_bytes()
    assert (
        main(["run", str(_one_stage(tmp_path)), "--results", str(tmp_path / "r"), "--no-progress"])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("otransfer run: storage") and what in err and "\n" not in err, err
    if "otransfer_claims" not in schema:  # refused before Optuna added its tables to it
        assert db.read_bytes() == before


def test_a_storage_file_that_is_not_sqlite_is_one_line(tmp_path, capsys):
    from harness.cli import main

    db = tmp_path / "r" / "one" / "runs.sqlite3"
    db.parent.mkdir(parents=True)
    db.write_text("not a database\n")
    assert main(["run", str(_one_stage(tmp_path)), "--results", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert "not an SQLite file" in err and "\n" not in err, err


@pytest.mark.parametrize("make", ["file", "loop"])
@pytest.mark.parametrize("storage", [False, True])
def test_results_that_is_a_file_or_a_loop_is_one_line(tmp_path, capsys, make, storage):
    from harness.cli import main

    results = tmp_path / "results"
    if make == "file":
        results.write_text("x")
    else:
        (tmp_path / "other").symlink_to(results)
        results.symlink_to(tmp_path / "other")
    extra = ["--storage", f"sqlite:///{tmp_path / 'x.sqlite3'}"] if storage else []
    assert (
        main(["run", str(_one_stage(tmp_path)), "--results", str(results), "--no-progress", *extra])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("otransfer run: ") and str(results) in err and "\n" not in err, err
    assert ("is a file, not a folder" if make == "file" else "symbolic link") in err


# --------------------------------------------------------------------------- divergence


def test_a_run_whose_loss_explodes_is_failed_with_the_reason(tmp_path):
    from harness.experiments.runner import run_suite

    s = run_suite(
        _one_stage(tmp_path, lr="1.0e+6"),
        storage=f"sqlite:///{tmp_path / 'r.db'}",
        progress=False,
        results_root=tmp_path / "r",
        log=None,
    )
    assert (s.completed, s.failed) == (0, 1), s
    reason = s.failures[0][1]
    assert reason.startswith("training diverged: the loss exploded") and "lr 1e+06" in reason
    ok = run_suite(
        _one_stage(tmp_path, lr="0.05"),
        storage=f"sqlite:///{tmp_path / 'r2.db'}",
        progress=False,
        results_root=tmp_path / "r2",
        log=None,
    )
    assert (ok.completed, ok.failed) == (1, 0), ok.failures


def _history(ce, accs=(), ce0=2.3):
    epochs = [{"epoch": i, "train/ce": c} for i, c in enumerate(ce)]
    for e, a in zip(epochs[len(epochs) - len(accs) :], accs, strict=True):
        e["val/accuracy"] = a
    return {"epochs": epochs, "steps": {"train/ce": [ce0]}}


@pytest.mark.parametrize(
    "history, flagged",
    [
        (_history([2.2, 1.0, 0.4], [0.5, 0.8, 0.9]), None),  # learnt
        (_history([2.3, 2.3, 2.3], [0.1, 0.1, 0.1]), None),  # learnt nothing: not a divergence
        # a large weight decay shrinks the weights to zero: accuracy to chance, CE to log K
        # (li2020_table1-cpu's l2 at alpha=1: best 60-79 %, last 10 %, CE 2.30256)
        (_history([1.5, 2.2, 2.30256], [0.7, 0.3, 0.1]), None),
        (_history([2.3, 1e6, 2.5e6]), "the loss exploded"),
        (_history([1.0, 0.5, 6.0], ce0=2.3), None),  # below 3 x log 10
        (_history([1.0, 0.5, 7.5], ce0=2.3), "the loss exploded"),
        (_history([0.5, 0.4, 4.0], [0.9, 0.9, 0.1]), "the validation accuracy fell to chance"),
        (_history([0.5, 0.4, 4.0], [0.2, 0.2, 0.1]), None),  # never clearly above chance
        (_history([float("nan")]), None),  # reported as a non-finite loss, not here
    ],
)
def test_divergence_rules(history, flagged):
    from harness.training.divergence import diverged

    reason = diverged(history, 10, lr=0.1)
    assert (reason is None) if flagged is None else (flagged in reason), reason


# --------------------------------------------------------------------------- shipped suites


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "results", sorted(p.parent.name for p in (ROOT / "results").glob("*/runs.csv"))
)
def test_the_shipped_suites_expand_to_their_committed_keys(results):
    """Every committed record's key is still a job of its suite (keys hash the configs: a
    changed key would orphan the result); tune's re-runs are the search's, not the suite's."""
    with open(ROOT / "results" / results / "runs.csv") as f:
        rows = [r for r in csv.DictReader(f) if not r["method"].endswith("(tuned)")]
    keys = {j.key for j in expand(load_suite(results))}
    missing = [r["key"] for r in rows if r["key"] not in keys]
    assert rows and not missing, missing[:5]
