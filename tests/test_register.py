"""The claims register (claims/*.yaml, harness.experiments.register): the
shipped files load and agree with the papers' numbers and the suites; a malformed entry is one
line naming the file and the id; the not-run list of a small hand-made register."""

from __future__ import annotations

import copy

import pytest
import yaml

from harness.experiments import register as R  # needs pydantic (a dependency, pyproject.toml)

RULES = {"min_effect": "the rule", "margin": "0.5"}
#: A one-claim register of li2020 Table 1 that passes every check.
GOOD = {
    "paper": "li2020",
    "title": "t",
    "frozen": "2026-12-04",
    "status": "frozen",
    "rules": RULES,
    "families": [
        {
            "id": "t.T1",
            "table": "1",
            "where": "Table 1",
            "columns": ["Aircraft100", "Birds200", "Cars196", "Dogs120", "Foods101"],
            "premises": [
                {
                    "id": "t.T1.p",
                    "comparison": "l2sp > none",
                    "where": "§4.2",
                    "quote": "q",
                    "paper_count": "4 of 5",
                    "min_effect": 0.5,
                    "margin": 0.5,
                    "cpu_twin": "li2020_table1-cpu",
                }
            ],
            "claims": [
                {
                    "id": "t.T1.c",
                    "comparison": "omega_p > l2sp",
                    "where": "§4.2",
                    "quote": "q",
                    "paper_count": "4 of 5",
                    "min_effect": 0.6,
                    "margin": 0.5,
                    "cpu_twin": "li2020_table1-cpu",
                    "full_scale": "li2020_table1",
                }
            ],
        }
    ],
}


def _write(tmp_path, data, name="li2020"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _claim(data, **changes):
    data = copy.deepcopy(data)
    data["families"][0]["claims"][0].update(changes)
    return data


def _one_line_error(path, ident, *words):
    with pytest.raises(R.RegisterError) as info:
        R.load_register(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and ident in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


# ------------------------------------------------------------------ the shipped register


@pytest.fixture(scope="module")
def shipped():
    return R.load_registers()


def test_the_shipped_register_loads_one_file_per_paper(shipped):
    assert set(shipped) == {"li2020", "lohit2020", "lu2017"}
    for reg in shipped.values():
        assert reg.frozen.isoformat() == "2026-12-04"
        # after the freeze: only the confirmatory plan was added (li2020: and its redesigned
        # Table 3 twin), each change dated and explained
        assert {tuple(c.ids) for c in reg.changelog} == {("confirmatory",)}
        assert all(c.date > reg.frozen and c.reason for c in reg.changelog)
        assert {"min_effect", "margin", "premises", "paper_count"} <= set(reg.rules)


def test_the_shipped_register_agrees_with_the_papers_numbers_and_the_suites(shipped):
    """Every count and minimum effect follows the rule, every row named exists in its suite."""
    assert R.check_register(shipped) == []


def test_every_suite_claim_and_premise_is_registered(shipped):
    got = R.compare_with_suites(shipped)
    assert got.unregistered == ()
    # what differs is only the suites' premises repeated as claims, never the reverse
    assert got.kind and all("is registered as a premise" in line for line in got.kind)
    assert any("li2020_table2-cpu: li2020 table 2: claim 'kd > none'" in line for line in got.kind)
    # the claims found missing from the twins are registered for them
    for line in (
        "li2020_table1-cpu: li2020 table 1: claim 'omega_p > none'",
        "li2020_table1-cpu: li2020 table 1: claim 'l2sp > l2'",
        "li2020_table4-cpu: li2020 table 4: claim 'omega_p > l2'",
        "lohit2020_table3-cpu: lohit2020 table 3: claim 'ot_samples_ipot+kd > ot_samples_ipot'",
        "lohit2020_table4-cpu: lohit2020 table 4: claim 'ot_samples_ipot+kd > kd'",
    ):
        assert any(x.startswith(line) for x in got.not_written), line


def test_the_papers_counts_are_computed_from_the_reference_numbers(shipped):
    reg = shipped["li2020"]
    fam = next(f for f in reg.families if f.id == "li2020.T1")
    e = next(c for c in fam.claims if c.id == "li2020.T1.omega_p-vs-l2sp")
    ev = R.paper_evidence(reg, fam, e)
    # 85.19-83.94, 82.37-81.10, 91.29-90.73, 77.43-77.05, 87.06-87.15 (Table 1)
    assert [str(d) for d in ev.diffs.values()] == ["1.25", "1.27", "0.56", "0.38", "-0.09"]
    assert ev.count == "4 of 5" and str(ev.min_effect) == "0.6"  # median 0.56, half up
    lohit = shipped["lohit2020"]
    t4 = next(f for f in lohit.families if f.id == "lohit2020.T4")
    e4 = next(c for c in t4.claims if c.id == "lohit2020.T4.ipot+kd-vs-kd")
    ev4 = R.paper_evidence(lohit, t4, e4)  # errors: 29.34 - 28.88 = 0.46 points better
    assert [str(d) for d in ev4.diffs.values()] == ["0.46", "0.46"] and ev4.count == "2 of 2"


def test_canonical_spells_each_comparison_one_way():
    assert R.canonical("none < kd") == "kd > none"
    assert R.canonical(" a <= b ") == "b >= a"
    assert (
        R.canonical("IPOT (alpha=0.9) > REMD (alpha=0.9)") == "IPOT (alpha=0.9) > REMD (alpha=0.9)"
    )


# ------------------------------------------------------------------ malformed entries


def test_a_good_hand_made_register_checks_clean(tmp_path):
    reg = R.load_register(_write(tmp_path, GOOD))
    assert R.check_register({"li2020": reg}) == []


def test_an_unknown_row_is_one_line_naming_file_id_and_row(tmp_path):
    data = _claim(
        GOOD,
        comparison="omega_q > l2sp",
        paper_count="not printed",
        min_effect=1.0,
        full_scale=None,
    )
    (line,) = R.check_register({"li2020": R.load_register(_write(tmp_path, data))})
    assert str(tmp_path / "li2020.yaml") in line and "t.T1.c" in line
    assert "li2020_table1-cpu" in line and "no row 'omega_q'" in line and "\n" not in line


def test_an_unknown_row_in_a_suites_spelling_is_found(tmp_path):
    data = _claim(GOOD, full_scale={"suite": "li2020_table1", "as": "omega_p > L2-SP"})
    lines = R.check_register({"li2020": R.load_register(_write(tmp_path, data))})
    assert len(lines) == 1 and "li2020_table1" in lines[0] and "no row 'L2-SP'" in lines[0]


def test_an_unknown_suite_is_one_line(tmp_path):
    data = _claim(GOOD, cpu_twin="li2020_table9-cpu")
    (line,) = R.check_register({"li2020": R.load_register(_write(tmp_path, data))})
    assert "t.T1.c" in line and "no suite 'li2020_table9-cpu'" in line


def test_a_duplicate_id_is_one_line_naming_file_and_id(tmp_path):
    data = copy.deepcopy(GOOD)
    data["families"][0]["claims"].append(copy.deepcopy(data["families"][0]["claims"][0]))
    _one_line_error(_write(tmp_path, data), "t.T1.c", "id given twice")


def test_a_duplicate_id_across_files_names_both(tmp_path):
    _write(tmp_path, GOOD)
    other = copy.deepcopy(GOOD)
    other["paper"] = "lu2017"
    other["families"][0]["id"] = "t.other"
    other["families"][0]["premises"] = []
    _write(tmp_path, other, "lu2017")
    with pytest.raises(R.RegisterError) as info:
        R.load_registers(tmp_path)
    msg = str(info.value)
    assert "t.T1.c" in msg and "li2020.yaml" in msg and "lu2017.yaml" in msg and "\n" not in msg


@pytest.mark.parametrize("text", ["kd >> none", "kd => none", "kd", "> none", "kd ~ none"])
def test_an_unparsable_comparison_is_one_line(tmp_path, text):
    path = _write(tmp_path, _claim(GOOD, comparison=text))
    _one_line_error(path, "t.T1.c", "comparison", "ROW > ROW")


def test_an_unparsable_suite_spelling_is_one_line(tmp_path):
    path = _write(tmp_path, _claim(GOOD, full_scale={"suite": "li2020_table1", "as": "a >> b"}))
    _one_line_error(path, "t.T1.c", "full_scale.as", "ROW > ROW")


def test_a_missing_minimum_effect_is_one_line(tmp_path):
    data = copy.deepcopy(GOOD)
    del data["families"][0]["claims"][0]["min_effect"]
    _one_line_error(_write(tmp_path, data), "t.T1.c", "min_effect", "required")


@pytest.mark.parametrize("value", [0, -1, "large"])
def test_a_minimum_effect_that_is_no_positive_number_is_one_line(tmp_path, value):
    _one_line_error(_write(tmp_path, _claim(GOOD, min_effect=value)), "t.T1.c", "min_effect")


def test_an_unknown_field_is_one_line(tmp_path):
    _one_line_error(_write(tmp_path, _claim(GOOD, min_efect=1.0)), "t.T1.c", "min_efect")


def test_no_twin_and_no_reason_is_one_line(tmp_path):
    data = copy.deepcopy(GOOD)
    del data["families"][0]["claims"][0]["cpu_twin"]
    _one_line_error(_write(tmp_path, data), "t.T1.c", "not_run")


def test_a_key_given_twice_is_one_line_with_its_line(tmp_path):
    text = yaml.safe_dump(GOOD, sort_keys=False).replace("title: t\n", "title: t\ntitle: u\n")
    path = _write(tmp_path, text)
    msg = _one_line_error(path, "", "given twice", "line 3")
    assert "title" in msg


@pytest.mark.parametrize("content", [b"\xff\xfe paper: li2020", b"[" * 20000, b"- a\n- b\n"])
def test_a_file_that_is_no_register_is_one_line(tmp_path, content):
    path = tmp_path / "li2020.yaml"
    path.write_bytes(content)
    _one_line_error(path, "")


def test_a_missing_file_is_one_line(tmp_path):
    _one_line_error(tmp_path / "li2020.yaml", "", "cannot read")


def test_a_file_that_is_not_its_papers_is_refused(tmp_path):
    _one_line_error(_write(tmp_path, GOOD, "lu2017"), "(file)", "claims/P.yaml")


def test_a_count_off_the_papers_numbers_is_one_line(tmp_path):
    reg = R.load_register(_write(tmp_path, _claim(GOOD, paper_count="5 of 5")))
    (line,) = R.check_register({"li2020": reg}, suites=False)
    assert "t.T1.c" in line and "'4 of 5'" in line


def test_a_minimum_effect_off_the_rule_needs_a_reason(tmp_path):
    reg = R.load_register(_write(tmp_path, _claim(GOOD, min_effect=2.0)))
    (line,) = R.check_register({"li2020": reg}, suites=False)
    assert "t.T1.c" in line and "rule gives 0.6" in line and "min_effect_reason" in line
    reasoned = _claim(GOOD, min_effect=2.0, min_effect_reason="the full-scale effect")
    assert (
        R.check_register({"li2020": R.load_register(_write(tmp_path, reasoned))}, suites=False)
        == []
    )


def test_a_premise_repeated_as_a_claim_is_refused(tmp_path):
    reg = R.load_register(
        _write(
            tmp_path, _claim(GOOD, comparison="none < l2sp", paper_count="4 of 5", min_effect=0.5)
        )
    )
    (line,) = R.check_register({"li2020": reg}, suites=False)
    assert "t.T1.c" in line and "never repeated as a claim" in line


def test_a_column_the_papers_table_lacks_is_one_line(tmp_path):
    reg = R.load_register(_write(tmp_path, _claim(GOOD, columns=["Aircraft101"])))
    (line,) = R.check_register({"li2020": reg}, suites=False)
    assert "t.T1.c" in line and "'Aircraft101' is not a column of family t.T1" in line


def test_a_family_column_the_papers_table_lacks_is_one_line(tmp_path):
    data = copy.deepcopy(GOOD)
    data["families"][0]["columns"].append("Aircraft101")
    (line,) = R.check_register({"li2020": R.load_register(_write(tmp_path, data))}, suites=False)
    assert "t.T1" in line and "li2020 table 1 has no column 'Aircraft101'" in line


def test_a_claim_registered_twice_on_a_column_is_refused(tmp_path):
    data = copy.deepcopy(GOOD)
    twin = dict(
        data["families"][0]["claims"][0],
        id="t.T1.again",
        comparison="l2sp < omega_p",
        columns=["Foods101"],
        paper_count="0 of 1",
        min_effect=0.5,
    )
    data["families"][0]["claims"].append(twin)
    (line,) = R.check_register({"li2020": R.load_register(_write(tmp_path, data))}, suites=False)
    assert "t.T1.again" in line and "'Foods101' is registered twice (also t.T1.c)" in line


def test_a_register_without_its_rules_is_one_line(tmp_path):
    data = copy.deepcopy(GOOD)
    data["rules"] = {"margin": "0.5"}
    _one_line_error(_write(tmp_path, data), "(file)", "rules", "min_effect")


# ------------------------------------------------------------------ not run


def _small():
    """A hand-made register: one claim on a twin, one at full scale only, one in no suite."""
    data = copy.deepcopy(GOOD)
    c = data["families"][0]["claims"]
    c.append(
        {
            "id": "t.T1.full",
            "comparison": "l2sp > l2",
            "where": "§4.2",
            "quote": "q",
            "paper_count": "5 of 5",
            "min_effect": 0.5,
            "margin": 0.5,
            "full_scale": "li2020_table1",
            "not_run": "the twin lacks it",
        }
    )
    c.append(
        {
            "id": "t.T1.none",
            "comparison": "CRD > omega_p",
            "where": "§4.2",
            "quote": "q",
            "paper_count": "not printed",
            "min_effect": 1.0,
            "margin": 0.5,
            "not_run": "CRD is not implemented",
        }
    )
    return data


def test_the_not_run_list_of_a_small_register(tmp_path):
    regs = {"li2020": R.load_register(_write(tmp_path, _small()))}
    twin = R.claims_not_run(regs)
    assert [(x.id, x.reason) for x in twin["li2020"]] == [
        ("t.T1.full", "the twin lacks it"),
        ("t.T1.none", "CRD is not implemented"),
    ]
    assert [x.id for x in R.claims_not_run(regs, scale="any")["li2020"]] == ["t.T1.none"]
    # premises are left out unless asked; a premise on a twin is run
    assert [x.id for x in R.claims_not_run(regs, premises=True)["li2020"]] == [
        "t.T1.full",
        "t.T1.none",
    ]


def test_a_claim_its_twin_does_not_write_is_not_run(tmp_path):
    regs = {"li2020": R.load_register(_write(tmp_path, _small()))}
    done = {
        "li2020_table1-cpu": {("li2020", "1", "premise", "l2sp > none")},
        "li2020_table1": {("li2020", "1", "claim", "l2sp > l2")},
    }
    got = R.claims_not_run(regs, done=done)["li2020"]
    assert [x.id for x in got] == ["t.T1.c", "t.T1.full", "t.T1.none"]
    assert "li2020_table1-cpu" in got[0].reason
    done["li2020_table1-cpu"].add(("li2020", "1", "claim", "omega_p > l2sp"))
    assert [x.id for x in R.claims_not_run(regs, done=done)["li2020"]] == ["t.T1.full", "t.T1.none"]
    assert [x.id for x in R.claims_not_run(regs, scale="any", done=done)["li2020"]] == ["t.T1.none"]


def test_the_shipped_not_run_list_names_the_baselines_the_project_lacks(shipped):
    got = R.claims_not_run(shipped, scale="any")
    assert got["lu2017"] == [] and got["li2020"] == []
    ids = {x.id for x in got["lohit2020"]}
    assert "lohit2020.T2.ipot+kd-vs-crd+kd" in ids and "lohit2020.T1.ipot-vs-remd" not in ids
    assert all("not implemented" in x.reason or "row" in x.reason for x in got["lohit2020"])
    with pytest.raises(ValueError, match="scale"):
        R.claims_not_run(shipped, scale="gpu")


def test_the_checker_command_reports_and_exits(tmp_path, capsys, shipped):
    assert R.main([]) == 0
    out = capsys.readouterr().out
    assert "written in a suite, not registered: 0" in out and "lohit2020: 90 claims" in out
    _write(tmp_path, _claim(GOOD, comparison="kd >> none"))
    assert R.main(["--directory", str(tmp_path)]) == 1
    out = capsys.readouterr().out.strip()
    assert out.startswith("error: ") and "t.T1.c" in out and "\n" not in out


def test_the_readme_counts_are_the_registers(shipped):
    from pathlib import Path

    text = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    kinds = [(kind, e) for reg in shipped.values() for _, kind, e in R.entries(reg) if e]
    claims = [e for kind, e in kinds if kind == "claim"]
    twin = sum(bool(e.cpu_twin) for e in claims)
    full = sum(bool(e.full_scale and not e.cpu_twin) for e in claims)
    expect = (
        f"hold {len(claims)} claims and {len(kinds) - len(claims)} premises: {twin} "
        f"claims are on a CPU twin, {full} are at full scale only, and "
        f"{len(claims) - twin - full} are not run"
    )
    assert expect in text


def test_an_empty_register_folder_is_one_line(tmp_path):
    with pytest.raises(R.RegisterError, match="no register files") as info:
        R.load_registers(tmp_path)
    assert "\n" not in str(info.value)
