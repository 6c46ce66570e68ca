"""Feeders as utilities deliver them (issue 13): the quirks no IEEE master
has, on small feeders built here, and the shared public feeders that have them
(``../shared/feeders``: the IEEE European LV feeder, EPRI test circuit 7).

Each quirk is checked where it matters: the feeder compiles and solves as
OpenDSS would, every bus has a voltage base its voltage agrees with, the
notes say what was done, the user's folder is left as it was, and
(federation tests) ``new-scenario`` then ``dsosim run --hours 1`` completes.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest

from dsosim.federates.dso.feeder import Feeder, FeederError
from dsosim.runner.build.scenario import load_scenario
from dsosim.runner.feeders.inspect import inspect_feeder
from dsosim.runner.feeders.new_scenario import write_new_scenario
from tests.byof_fixtures import (
    QUIRKY_CUSTOMER_BUSES,
    broken_feeder,
    quirky_feeder,
    run_script_feeder,
    utility_feeder,
)
from tests.test_byof import _new_and_run, _shared


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))}


def _mirrors() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("dsosim-feeder-*")}


def test_quirky_feeder_compiles_solves_and_says_what_was_done(tmp_path: Path) -> None:
    master = quirky_feeder(tmp_path / "Q1")
    before, mirrors = _listing(tmp_path / "Q1"), _mirrors()
    feeder = Feeder(master, name="q1")
    notes = "\n".join(feeder.notes)
    assert "mode=Yearly: solved in snapshot mode" in notes
    assert "controlmode time: static instead" in notes
    assert "2 monitor(s) switched off" in notes
    assert "6 file name(s) differ in case" in notes and "Home.csv -> home.CSV" in notes
    assert "9 bus(es) had no voltage base or a wrong one" in notes and "0.208 kV" in notes
    dss = feeder.engine
    assert dss.Solution.Mode() == 0 and dss.Solution.ControlMode() == 0  # snapshot, static
    for monitor in ("head", "tail"):
        dss.Circuit.SetActiveElement(f"Monitor.{monitor}")
        assert not dss.CktElement.Enabled()
    # Every bus has a base its voltage agrees with: the 120/240 V secondaries too.
    state = feeder.solve()
    assert state.converged
    unwatched = {n.split(".")[0] for n, m in zip(state.node_names, state.monitored) if not m}
    assert unwatched == {"sub", "far"}  # the two sources' buses only
    assert 0.98 < state.v_pu.min() and state.v_pu.max() < 1.04
    for bus in QUIRKY_CUSTOMER_BUSES:
        assert feeder.bus_kv_base(bus) == pytest.approx(0.12, rel=1e-3)
        assert feeder.bus_phases(bus) == (1, 2)
    # The loads and shapes compiled (the shapes' files were found whatever their case).
    dss.LoadShape.Name("home")
    assert dss.LoadShape.Npts() == 24 and max(dss.LoadShape.PMult()) == pytest.approx(0.9)
    dss.LoadShape.Name("commercial")
    assert dss.LoadShape.PMult()[12] == pytest.approx(1.0)
    # Two sources: the head flow is their sum.
    powers = []
    i = dss.Vsources.First()
    while i:
        dss.Circuit.SetActiveElement(f"Vsource.{dss.Vsources.Name()}")
        powers.append(-dss.CktElement.TotalPowers()[0] / 1000.0)
        i = dss.Vsources.Next()
    assert len(powers) == 2 and abs(powers[1]) > 1e-4
    assert state.substation_p_mw == pytest.approx(sum(powers), abs=1e-9)
    assert state.substation_p_mw == pytest.approx(state.load_mw + state.losses_mw, abs=1e-6)
    # The open tie (enabled=no) is not a branch; the feeder's own DERs are found.
    assert "Line.open" not in feeder.branch_names and "Line.tie" in feeder.branch_names
    assert {d.kind for d in feeder.existing_ders} == {"pv", "storage", "generator"}
    # The user's folder is untouched and the case-insensitive view is gone.
    assert _listing(tmp_path / "Q1") == before
    assert _mirrors() == mirrors


def test_a_der_at_a_triplex_customer_connects_across_both_legs(tmp_path: Path) -> None:
    feeder = Feeder(quirky_feeder(tmp_path / "Q1"), name="q1")
    base = feeder.solve()
    feeder.attach_der("roof", "C2a")
    dss = feeder.engine
    dss.Circuit.SetActiveElement("Load.der_roof")
    assert dss.CktElement.BusNames() == ["c2a.1.2"] and dss.CktElement.NumPhases() == 1
    feeder.set_der_mw([-0.006])  # a 6 kW roof injecting
    state = feeder.solve()
    # Both legs rise alike (a 240 V injection), and the head delivers 6 kW less
    # (give or take the change in losses and in the voltage-dependent elements).
    legs = [feeder.node_names.index(f"c2a.{p}") for p in (1, 2)]
    rise = state.v_pu[legs] - base.v_pu[legs]
    assert (rise > 1e-4).all() and rise[0] == pytest.approx(rise[1], rel=0.05)
    change = base.substation_p_mw - state.substation_p_mw
    others = (base.losses_mw - state.losses_mw) + (base.load_mw - state.load_mw)
    assert change == pytest.approx(0.006 + others, abs=1e-7)
    assert abs(others) < 1e-4


def test_customers_of_split_phase_services_are_load_buses_for_the_aggregators(
    tmp_path: Path,
) -> None:
    report = inspect_feeder(quirky_feeder(tmp_path / "Q1"))
    assert set(QUIRKY_CUSTOMER_BUSES) <= set(report.load_buses)
    assert report.source.others == ("far",)
    assert any("more source(s) at far" in line for line in report.summary_lines())
    made = write_new_scenario([report.master], tmp_path / "q.toml")
    placed = {b for _, buses in made.attached[0].aggregators for b in buses}
    assert set(QUIRKY_CUSTOMER_BUSES) <= placed
    text = made.path.read_text()
    assert "# Feeder Master.DSS" in text and "differ in case" in text


def test_a_run_script_is_followed_to_the_master_it_compiles(tmp_path: Path) -> None:
    script = run_script_feeder(tmp_path / "U12F3")
    before = _listing(tmp_path / "U12F3")
    made = write_new_scenario([script], tmp_path / "s.toml")
    scenario, _ = load_scenario(made.path)
    assert Path(scenario.ldas[0].feeder).name == "Master.dss"
    assert "RunFeeder.dss is a run script: it compiles Master.dss" in made.path.read_text()
    # The script's plots, reports, exports and yearly run never ran.
    assert _listing(tmp_path / "U12F3") == before


def test_a_run_script_that_changes_the_circuit_says_what_is_left_out(tmp_path: Path) -> None:
    script = run_script_feeder(tmp_path / "U12F3")
    script.write_text(script.read_text() + "New Load.extra bus1=T3 kw=100\r\n")
    feeder = Feeder(script, name="u")
    assert "changes the circuit after compiling ('New Load.extra" in feeder.notes[0]


def test_iteration_limits_too_tight_are_raised_and_said(tmp_path: Path) -> None:
    master = utility_feeder(tmp_path / "U12F3")
    text = master.read_text().replace("Solve\n", "Set MaxIterations=1\n")
    master.write_text(text)
    feeder = Feeder(master, name="u")
    assert "needs more iterations than the feeder's own limits (MaxIterations 1" in "".join(
        feeder.notes
    )
    assert feeder.engine.Solution.MaxIterations() == 100
    assert feeder.solve().converged


def test_a_base_case_that_cannot_converge_gets_one_clear_paragraph(tmp_path: Path) -> None:
    master = broken_feeder(tmp_path / "U12F3", "no_convergence")
    with pytest.raises(FeederError) as caught:
        Feeder(master, name="nose")
    text = str(caught.value)
    assert "\n" not in text
    assert f"the base case of {master} does not converge" in text
    assert "OpenDSS reported: power flow did not converge" in text
    assert "MaxIterations 100 and MaxControlIter 100" in text and "What to try" in text


# ------------------------------------------------- shared public feeders


def test_epri_ckt7_master_that_only_compiles() -> None:
    """Allocation factors, BatchEdit, an energy meter, coordinates after
    CalcVoltageBases, 1-phase 240 V services, disabled lines, a master with
    no Solve."""
    report = inspect_feeder(_shared("epri-ckt7/Master_ckt7.dss"))
    assert report.base_case.converged
    assert len(report.buses) == 1255 and report.n_nodes == 2452 and report.n_loads == 906
    assert report.voltage_bases_kv == (115.0, 12.47, 0.416, 0.208)
    assert all(b.kv_ll > 0 for b in report.buses)
    # allocation factors applied: the service loads are not their 0.0001 kW placeholder
    assert report.load_kw > 1000.0


def test_lv_european_50_hz_with_load_shapes_from_files() -> None:
    report = inspect_feeder(_shared("lv-european/Master.dss"))
    assert report.base_case.converged
    assert report.n_loads == 55 and len(report.buses) == 907
    assert report.voltage_bases_kv == (11.0, 0.416)
    feeder = Feeder(report.master, name="lv")
    assert feeder.engine.Solution.Frequency() == pytest.approx(50.0)
    # 55 loads of 1 kW as compiled (a few above vmaxpu draw as constant impedance)
    assert math.isclose(feeder.solve().load_mw, 0.055, rel_tol=0.1)


@pytest.mark.federation
def test_quirky_feeder_new_scenario_and_one_hour(tmp_path: Path) -> None:
    _new_and_run(tmp_path, [quirky_feeder(tmp_path / "Q1")], hours=1.0)


@pytest.mark.federation
@pytest.mark.parametrize(
    "relative", ["lv-european/Master.dss", "epri-ckt7/Master_ckt7.dss", "epri-ckt7/RunDSS_ckt7.dss"]
)
def test_shared_utility_feeders_new_scenario_and_one_hour(tmp_path: Path, relative: str) -> None:
    made, _built, _ = _new_and_run(tmp_path, [_shared(relative)], hours=1.0)
    assert np.isfinite(made.attached[0].report.base_case.vmin_pu)
