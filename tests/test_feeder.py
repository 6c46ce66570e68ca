"""The OpenDSS feeder adaptor on the shipped IEEE 13-node feeder and on small
hand-written circuits (hunting controls, broken files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsosim.federates.dso import controls
from dsosim.federates.dso.feeder import Feeder, FeederError

ROOT = Path(__file__).resolve().parents[1]
IEEE13 = ROOT / "configs" / "feeders" / "ieee13" / "Master.dss"
REFERENCE13 = ROOT.parent / "shared" / "feeders" / "ieee13" / "IEEE13Nodeckt.dss"
TAP_STEP = 0.1 / 16  # OpenDSS default regulator: +-10 % in 32 steps


@pytest.fixture(scope="module")
def base13() -> Feeder:
    """A feeder nobody modifies (module scope: compiled once)."""
    return Feeder(IEEE13, name="ieee13")


@pytest.fixture
def ieee13() -> Feeder:
    return Feeder(IEEE13, name="ieee13")


def test_ieee13_compiles_with_its_published_topology(base13: Feeder) -> None:
    # 13 nodes of the published diagram + source bus, regulator output and the
    # bus 670 that carries the distributed load: 16 buses, 41 phase nodes.
    assert len(base13.buses) == 16
    assert len(base13.node_names) == 41
    assert {ld.bus for ld in base13.loads} == {
        "634",
        "645",
        "646",
        "652",
        "670",
        "671",
        "675",
        "692",
        "611",
    }
    total_kw = sum(ld.kw for ld in base13.loads)
    assert total_kw == pytest.approx(3466.0, abs=0.01)  # published spot + distributed kW
    assert base13.branch_ratings["Line.650632"] == 730.0
    assert base13.branch_ratings["Line.684652"] == 165.0
    # 5000 kVA at 115 kV: the nameplate, not OpenDSS's default 110 %.
    assert base13.branch_ratings["Transformer.sub"] == pytest.approx(5000 / (115 * 3**0.5))


def test_ieee13_base_case_voltages_and_regulators(base13: Feeder) -> None:
    state = base13.solve()
    assert state.converged and not state.control_iterations_exceeded
    v = dict(zip(state.node_names, state.v_pu, strict=True))
    for phase in (1, 2, 3):
        assert v[f"650.{phase}"] == pytest.approx(1.0, abs=1e-3)
        # Regulators settled on whole taps within their +-16 range.
        taps = (v[f"rg60.{phase}"] / v[f"650.{phase}"] - 1.0) / TAP_STEP
        assert abs(taps - round(taps)) < 0.02
        assert 0 < round(taps) <= 16
    watched = state.v_pu[state.monitored]
    assert 0.955 < watched.min() < 0.965  # 611.c, the far end of phase c
    assert 1.035 < watched.max() < 1.045  # 675.b
    assert state.n_voltage_violations == 0
    # XFM-1 carries more than its phase rating on phase a in the published data.
    loading = dict(zip(state.branch_names, state.loading, strict=True))
    assert loading["Transformer.xfm1"] > 1.1
    assert state.n_thermal_violations == 1
    assert 3.4 < state.substation_p_mw < 3.7
    assert 0.09 < state.losses_mw < 0.13
    # 3466 kW as published; the constant-Z and constant-I loads draw a little
    # less at their voltages (0.96-1.03 pu).
    assert 3.40 < state.load_mw < 3.466
    assert base13.load_mw() == state.load_mw
    assert state.substation_q_mvar > 0.0


@pytest.mark.skipif(not REFERENCE13.is_file(), reason="reference IEEE 13 model not available")
def test_ieee13_matches_the_reference_model() -> None:
    ours = Feeder(IEEE13, name="ours").solve()
    theirs = Feeder(REFERENCE13, name="reference").solve()
    ref = dict(zip(theirs.node_names, theirs.v_pu, strict=True))
    common = [n for n in ours.node_names if n in ref]
    assert len(common) == 41
    diff = np.array([v - ref[n] for n, v in zip(ours.node_names, ours.v_pu) if n in ref])
    assert np.max(np.abs(diff)) < 0.01
    assert abs(ours.substation_p_mw - theirs.substation_p_mw) < 0.01


def test_line_to_line_readings(base13: Feeder) -> None:
    ll = Feeder(IEEE13, name="ll", voltage_basis="ll")
    state = ll.solve()
    v = dict(zip(state.node_names, state.v_pu, strict=True))
    assert {"650.1.2", "650.2.3", "650.3.1", "645.2.3", "652.1", "611.3"} <= set(v)
    assert v["650.1.2"] == pytest.approx(1.0, abs=1e-3)
    # 645 has phases b, c only: one line-to-line reading, near the LN ones.
    ln = dict(zip(base13.node_names, base13.solve().v_pu, strict=True))
    assert v["645.2.3"] == pytest.approx((ln["645.2"] + ln["645.3"]) / 2, abs=0.02)
    assert ll.node_kv_base[state.node_names.index("650.1.2")] == pytest.approx(4.16)


def test_der_injection_changes_substation_power_by_its_size_plus_losses(ieee13: Feeder) -> None:
    ieee13.attach_der("pv675", "675")
    before = ieee13.solve(controls=False)
    ieee13.set_der_mw(np.array([-0.5]))
    after = ieee13.solve(controls=False)
    change = after.substation_p_mw - before.substation_p_mw
    loss_change = after.losses_mw - before.losses_mw
    assert -0.06 < loss_change < 0.0  # injection near the load relieves the feeder
    # Exact but for the ~700 kW of constant-Z and constant-I loads, whose draw
    # follows the voltage rise (about 1 %).
    assert change == pytest.approx(-0.5 + loss_change, abs=0.01)
    assert after.der_mw.tolist() == [-0.5]


def test_der_power_balance_is_exact_with_constant_power_loads(tmp_path: Path) -> None:
    master = tmp_path / "pq.dss"
    master.write_text(
        "Clear\nNew Circuit.c basekv=12.47 bus1=src\n"
        "New Line.l bus1=src bus2=b r1=0.5 x1=1.0 units=km length=2 normamps=200\n"
        "New Load.l bus1=b phases=3 kv=12.47 kw=2000 kvar=600 model=1 vminpu=0.85 vmaxpu=1.15\n"
        "Set VoltageBases=[12.47]\nCalcVoltageBases\n"
    )
    feeder = Feeder(master, name="pq")
    feeder.attach_der("pv", "b")
    before = feeder.solve()
    # To the power-flow tolerance (1e-4 pu voltage mismatch on 2 MW of load).
    assert before.substation_p_mw == pytest.approx(2.0 + before.losses_mw, abs=5e-4)
    feeder.set_der_mw(np.array([-1.5]))
    after = feeder.solve()
    assert after.substation_p_mw == pytest.approx(0.5 + after.losses_mw, abs=5e-4)
    assert after.losses_mw < before.losses_mw


def test_der_on_a_single_phase_bus_and_on_the_low_voltage_side(ieee13: Feeder) -> None:
    ieee13.attach_der("ev652", "652")
    ieee13.attach_der("bat634", "634")
    base = ieee13.solve(controls=False)
    ieee13.set_der_mw(np.array([0.1, -0.2]))
    state = ieee13.solve(controls=False)
    v0 = dict(zip(base.node_names, base.v_pu, strict=True))
    v1 = dict(zip(state.node_names, state.v_pu, strict=True))
    assert v1["652.1"] < v0["652.1"] - 0.003  # consumption on phase a lowers 652
    assert v1["634.2"] > v0["634.2"] + 0.003  # injection on all three phases at 634
    assert state.substation_p_mw - base.substation_p_mw == pytest.approx(-0.1, abs=0.01)


def test_load_multipliers_scale_each_load(ieee13: Feeder) -> None:
    state0 = ieee13.solve()
    ieee13.set_load_multipliers(0.5)
    half = ieee13.solve()
    assert 0.45 * state0.substation_p_mw < half.substation_p_mw < 0.55 * state0.substation_p_mw
    m = np.ones(len(ieee13.loads))
    m[[i for i, ld in enumerate(ieee13.loads) if ld.name == "671"]] = 0.0
    ieee13.set_load_multipliers(m)
    no671 = ieee13.solve()
    assert state0.substation_p_mw - no671.substation_p_mw == pytest.approx(1.155, abs=0.1)
    with pytest.raises(FeederError, match="multipliers"):
        ieee13.set_load_multipliers(np.ones(3))
    with pytest.raises(FeederError, match=">= 0"):
        ieee13.set_load_multipliers(-1.0)


def test_attach_der_rejects_unknown_bus_and_duplicates(ieee13: Feeder) -> None:
    with pytest.raises(FeederError, match="no bus 'nowhere'"):
        ieee13.attach_der("x", "nowhere")
    ieee13.attach_der("x", "680")
    with pytest.raises(FeederError, match="already attached"):
        ieee13.attach_der("X", "675")
    with pytest.raises(FeederError, match="must match"):
        ieee13.attach_der("a.b", "675")
    with pytest.raises(FeederError, match="DER values"):
        ieee13.set_der_mw(np.array([1.0, 2.0]))


def test_two_feeders_in_one_process_are_independent() -> None:
    a = Feeder(IEEE13, name="a")
    b = Feeder(IEEE13, name="b")
    a.set_load_multipliers(0.2)
    pa = a.solve().substation_p_mw
    pb = b.solve().substation_p_mw
    assert pa < 0.3 * pb
    assert Feeder(IEEE13, name="c").solve().substation_p_mw == pytest.approx(pb, abs=1e-9)


def test_solves_are_deterministic(ieee13: Feeder) -> None:
    first = ieee13.solve()
    again = Feeder(IEEE13, name="again").solve()
    assert np.array_equal(first.v_pu, again.v_pu)
    assert np.array_equal(first.loading, again.loading)


def test_state_arrays_are_read_only(base13: Feeder) -> None:
    state = base13.solve()
    with pytest.raises(ValueError):
        state.v_pu[0] = 2.0


# --------------------------------------------------------------- sensitivities


def test_sensitivities_predict_a_moderate_injection(ieee13: Feeder) -> None:
    ieee13.attach_der("pv675", "675")
    ieee13.attach_der("pv680", "680")
    base = ieee13.solve()
    sens = ieee13.sensitivities()
    assert sens.dv_dp.shape == (41, 2)
    assert sens.dloading_dp.shape == (len(base.branch_names), 2)
    # Consumption lowers voltages downstream; losses make the head see more.
    assert np.all(sens.dv_dp[base.monitored][:, 0] < 1e-6)
    assert np.all((1.0 < sens.dpsub_dp) & (sens.dpsub_dp < 1.1))
    # Linearising restored the operating point (to the power-flow tolerance).
    assert np.allclose(ieee13.solve(controls=False).v_pu, base.v_pu, atol=1e-4)

    # Observed on this feeder: 0.5 MW at 675 -> error ~2.1e-4 pu for a ~0.009 pu
    # change; with 0.3 MW more at 680 -> ~5.6e-4 pu for ~0.013 pu. Bounds 2x that.
    for change, change_min, bound in (([-0.5, 0.0], 0.005, 4.5e-4), ([-0.5, -0.3], 0.01, 1.2e-3)):
        ieee13.set_der_mw(np.array(change))
        after = ieee13.solve(controls=False)
        predicted = base.v_pu + sens.dv_dp @ change
        assert np.max(np.abs(after.v_pu - base.v_pu)) > change_min
        assert np.max(np.abs(predicted - after.v_pu)) < bound
        p_pred = base.substation_p_mw + sens.dpsub_dp @ change
        assert abs(p_pred - after.substation_p_mw) < 0.01 * sum(np.abs(change))


def test_loading_slopes_are_one_sided_on_a_lateral_that_feeds_only_a_der(ieee13: Feeder) -> None:
    ieee13.attach_der("bat680", "680")  # nothing else on 671-680: zero current
    base = ieee13.solve()
    sens = ieee13.sensitivities()
    k = base.branch_names.index("Line.671680")
    assert base.loading[k] < 1e-3
    up, down = sens.dloading_dp_up[k, 0], sens.dloading_dp_down[k, 0]
    assert up > 0.1 and down < -0.1  # |current| has a kink at zero
    for mw in (0.4, -0.4):
        ieee13.set_der_mw(np.array([mw]))
        actual = ieee13.solve(controls=False).loading[k]
        predicted = max(base.loading[k] + up * mw, base.loading[k] + down * mw)
        assert predicted == pytest.approx(actual, rel=0.02)
    # A branch carrying load is smooth: both slopes agree.
    m = base.branch_names.index("Line.650632")
    assert sens.dloading_dp_up[m, 0] == pytest.approx(sens.dloading_dp_down[m, 0], rel=0.02)


def test_headrooms_are_consistent_with_the_linearisation(ieee13: Feeder) -> None:
    ieee13.attach_der("pv675", "675")
    state = ieee13.solve()
    sens = ieee13.sensitivities(0.95, 1.05)
    up = sens.injection_headroom_mw[0]
    assert 0.0 < up < np.inf
    v_at = state.v_pu - sens.dv_dp[:, 0] * up
    assert v_at[state.monitored].max() == pytest.approx(1.05, abs=1e-4)


# ----------------------------------------------------------- failure handling

HUNTING = """\
Clear
New Circuit.hunt basekv=12.47 pu=1.0 phases=3 bus1=src MVAsc3=20000 MVAsc1=21000
New Line.l1 phases=3 bus1=src bus2=b2 r1=0.3 x1=0.6 r0=0.6 x0=1.2 units=km length=3 normamps=400
New Load.ld bus1=b2 phases=3 kv=12.47 kw=600 kvar=200 model=1 vminpu=0.85 vmaxpu=1.15
! A capacitor whose step (about 3 V on 120 V) is wider than its control deadband
! (118-119 V): once the load pulls b2 below 118 V it switches on and off forever.
New Capacitor.c1 bus1=b2 phases=3 kv=12.47 kvar=3000
New CapControl.cc capacitor=c1 element=Line.l1 terminal=2 type=voltage ptratio=60
~ ONsetting=118 OFFsetting=119 delay=1 delayoff=1
Set VoltageBases=[12.47]
CalcVoltageBases
"""


def test_hunting_controls_are_recorded_not_raised(tmp_path: Path) -> None:
    master = tmp_path / "hunt.dss"
    master.write_text(HUNTING)
    feeder = Feeder(master, name="hunt")
    feeder.set_load_multipliers(5.0)
    state = feeder.solve()
    assert not state.converged
    assert state.control_iterations_exceeded
    assert "#485" in state.message
    assert len(state.v_pu) == 6  # the last iterate is still reported
    # ... and it is a power flow at the capacitor's last position: it balances.
    assert state.power_flow_converged
    assert state.substation_p_mw == pytest.approx(state.load_mw + state.losses_mw, abs=1e-3)
    # The engine is usable again: a load that does not hunt solves cleanly.
    feeder.set_load_multipliers(1.0)
    recovered = feeder.solve()
    assert recovered.converged and not recovered.control_iterations_exceeded
    assert recovered.message == ""


def test_a_base_case_that_does_not_converge_is_refused(tmp_path: Path) -> None:
    master = tmp_path / "hunt.dss"
    master.write_text(HUNTING.replace("kw=600 kvar=200", "kw=3000 kvar=1000"))
    with pytest.raises(FeederError, match=r"base case .*hunt\.dss does not converge.*#485"):
        Feeder(master, name="hunt")


def test_compile_error_names_the_opendss_message_and_file(tmp_path: Path) -> None:
    master = tmp_path / "bad.dss"
    master.write_text(
        "Clear\nNew Circuit.bad basekv=12.47\n"
        "New Line.l1 bus1=sourcebus bus2=b2 linecode=nosuchcode length=1\n"
    )
    with pytest.raises(FeederError) as info:
        Feeder(master, name="bad")
    text = str(info.value)
    assert 'LineCode object "nosuchcode" not found' in text
    assert "bad.dss" in text and "line: 3" in text


def test_missing_redirect_file(tmp_path: Path) -> None:
    master = tmp_path / "master.dss"
    master.write_text("Clear\nNew Circuit.c basekv=12.47\nRedirect lines_missing.dss\n")
    with pytest.raises(FeederError, match=r"Redirect file not found.*lines_missing\.dss"):
        Feeder(master, name="m")


def test_missing_master_file(tmp_path: Path) -> None:
    with pytest.raises(FeederError, match="does not exist"):
        Feeder(tmp_path / "nothing.dss", name="m")


def test_relative_redirects_do_not_change_the_working_directory(tmp_path: Path) -> None:
    sub = tmp_path / "feeder"
    sub.mkdir()
    (sub / "loads.dss").write_text(
        "New Load.l bus1=b phases=3 kv=12.47 kw=100 kvar=30 model=1 vminpu=0.85 vmaxpu=1.15\n"
    )
    (sub / "master.dss").write_text(
        "Clear\nNew Circuit.c basekv=12.47 bus1=src\n"
        "New Line.l bus1=src bus2=b r1=0.1 x1=0.2 units=km length=1 normamps=100\n"
        "Redirect loads.dss\nSet VoltageBases=[12.47]\nCalcVoltageBases\n"
    )
    cwd = Path.cwd()
    feeder = Feeder(sub / "master.dss", name="c")
    assert Path.cwd() == cwd
    assert [ld.name for ld in feeder.loads] == ["l"]
    assert feeder.solve().substation_p_mw == pytest.approx(0.1, abs=1e-3)


# ------------------------------------------------- speed paths and own DERs


def test_branch_currents_from_admittances_match_opendss_after_tap_moves(ieee13: Feeder) -> None:
    # The regulators move their taps as the load changes; the loadings from the
    # admittance product must follow OpenDSS's own current report.
    circuit = ieee13._circuit
    for m in (1.0, 0.3, 1.4):
        ieee13.set_load_multipliers(m)
        state = ieee13.solve()
        mags = np.asarray(circuit.PDElements.AllCurrentsMagAng)[0::2]
        ratio = mags[ieee13._branch_picks] / ieee13._branch_ratings
        expected = np.maximum.reduceat(ratio, ieee13._branch_starts)
        assert ieee13._currents is not None
        np.testing.assert_allclose(state.loading, expected, rtol=1e-9, atol=1e-9)


def test_ders_at_one_bus_share_one_perturbation(ieee13: Feeder) -> None:
    ieee13.attach_der("a675", "675")
    ieee13.attach_der("b675", "675")
    ieee13.attach_der("c680", "680")
    ieee13.set_der_mw(np.array([-0.2, 0.1, 0.0]))
    ieee13.solve()
    sens = ieee13.sensitivities()
    np.testing.assert_array_equal(sens.dv_dp[:, 0], sens.dv_dp[:, 1])
    np.testing.assert_array_equal(sens.dloading_dp_up[:, 0], sens.dloading_dp_up[:, 1])
    assert not np.allclose(sens.dv_dp[:, 0], sens.dv_dp[:, 2])
    # ... and it is the slope of either DER alone: moving b675 moves the feeder
    # as the shared column predicts.
    base = ieee13.solve(controls=False)
    ieee13.set_der_mw(np.array([-0.2, -0.2, 0.0]))
    after = ieee13.solve(controls=False)
    predicted = base.v_pu + sens.dv_dp[:, 1] * -0.3
    assert np.max(np.abs(after.v_pu - base.v_pu)) > 0.004
    assert np.max(np.abs(predicted - after.v_pu)) < 4e-4


OWN_DERS = """\
Clear
New Circuit.own basekv=12.47 pu=1.0 phases=3 bus1=src MVAsc3=20000 MVAsc1=21000
New Line.l1 phases=3 bus1=src bus2=b2 r1=0.3 x1=0.6 r0=0.6 x0=1.2 units=km length=2 normamps=400
New Line.l2 phases=1 bus1=b2.2 bus2=b3.2 r1=0.3 x1=0.6 r0=0.6 x0=1.2 units=km length=1 normamps=200
New Load.ld bus1=b2 phases=3 kv=12.47 kw=900 kvar=300 model=1
New Load.ld3 bus1=b3.2 phases=1 kv=7.2 kw=100 kvar=30 model=1
New PVSystem.roof bus1=b3.2 phases=1 kv=7.2 kva=60 pmpp=50 irradiance=1 pf=1
New Storage.bess bus1=b2 phases=3 kv=12.47 kwrated=300 kwhrated=1200 %stored=40 %reserve=15
~ %effcharge=95 %effdischarge=95
Set VoltageBases=[12.47]
CalcVoltageBases
"""


def test_the_feeders_own_ders_are_discovered(tmp_path: Path) -> None:
    master = tmp_path / "own.dss"
    master.write_text(OWN_DERS)
    feeder = Feeder(master, name="own")
    pv, bess = feeder.existing_ders
    assert (pv.kind, pv.element, pv.bus, pv.phases, pv.kw, pv.kva) == (
        "pv",
        "PVSystem.roof",
        "b3",
        1,
        50.0,
        60.0,
    )
    assert (bess.kind, bess.bus, bess.phases, bess.kw, bess.kwh) == (
        "storage",
        "b2",
        3,
        300.0,
        1200.0,
    )
    assert bess.soc == pytest.approx(0.4) and bess.reserve == pytest.approx(0.15)
    assert bess.efficiency == pytest.approx(0.9025)
    assert pv.enabled and bess.enabled


def test_own_pv_counts_in_the_inflexible_balance_until_disabled(tmp_path: Path) -> None:
    master = tmp_path / "own.dss"
    master.write_text(OWN_DERS)
    feeder = Feeder(master, name="own")
    with_pv = feeder.solve()
    # The PV injects up to its 50 kW Pmpp at b3 (less OpenDSS's default
    # inverter losses): net inflexible demand is the loads minus it, and the
    # head still balances with it.
    assert 1.0 - 0.05 <= with_pv.load_mw < 1.0 - 0.04
    assert with_pv.substation_p_mw == pytest.approx(with_pv.load_mw + with_pv.losses_mw, abs=1e-4)
    disabled = feeder.disable(["pvsystem.ROOF", "Storage.bess"])
    assert [d.element for d in disabled] == ["PVSystem.roof", "Storage.bess"]
    assert not any(d.enabled for d in feeder.existing_ders)
    without = feeder.solve()
    assert without.load_mw == pytest.approx(1.0, abs=2e-3)
    assert without.substation_p_mw == pytest.approx(without.load_mw + without.losses_mw, abs=1e-4)
    assert without.substation_p_mw - with_pv.substation_p_mw > 0.04
    with pytest.raises(
        FeederError, match=r"no PV system, storage or generator named \['PVSystem.nope'\]"
    ):
        feeder.disable(["PVSystem.nope"])


DELTA = """\
Clear
New Circuit.delta basekv=69 pu=1.0 phases=3 bus1=src MVAsc3=2000 MVAsc1=2100
New Transformer.sub phases=3 windings=2 buses=[src b1] conns=[wye delta] kvs=[69 4.8] kvas=[5000 5000] xhl=6
New Line.l1 phases=3 bus1=b1 bus2=b2 r1=0.2 x1=0.4 r0=0.6 x0=1.2 c1=10 c0=4 units=km length=2 normamps=400
New Line.l2 phases=2 bus1=b2.1.2 bus2=b3.1.2 r1=0.3 x1=0.5 r0=0.6 x0=1.2 c1=8 c0=3 units=km length=1 normamps=200
New Load.l2 bus1=b2 phases=3 conn=delta kv=4.8 kw=900 kvar=300 model=1
New Load.l3 bus1=b3.1.2 phases=1 conn=delta kv=4.8 kw=200 kvar=60 model=1
Set VoltageBases=[69, 4.8]
CalcVoltageBases
"""  # noqa: E501 (OpenDSS lines as a user writes them)


def test_ders_on_a_three_wire_delta_feeder_connect_line_to_line(tmp_path: Path) -> None:
    # A phase-to-ground constant-power element on an ungrounded delta feeder
    # makes the power flow diverge; read line-to-line, DERs connect across the
    # phases like the loads there, and the linearisation predicts the response.
    master = tmp_path / "delta.dss"
    master.write_text(DELTA)
    feeder = Feeder(master, name="delta", voltage_basis="ll")
    feeder.attach_der("three", "b2")
    feeder.attach_der("two", "b3")
    base = feeder.solve()
    assert base.converged
    sens = feeder.sensitivities()
    assert np.all(np.isfinite(sens.dv_dp)) and np.all(np.isfinite(sens.dpsub_dp))
    assert np.all((1.0 < sens.dpsub_dp) & (sens.dpsub_dp < 1.1))
    change = np.array([-0.4, -0.15])
    feeder.set_der_mw(change)
    after = feeder.solve(controls=False)
    assert after.converged
    assert np.max(np.abs(after.v_pu - base.v_pu)) > 0.005
    assert np.max(np.abs(base.v_pu + sens.dv_dp @ change - after.v_pu)) < 1e-3
    assert after.substation_p_mw == pytest.approx(after.load_mw + after.losses_mw - 0.55, abs=1e-3)


def test_a_diverging_power_flow_is_recorded_as_such_and_the_next_one_recovers(
    tmp_path: Path,
) -> None:
    master = tmp_path / "nose.dss"
    master.write_text(
        "Clear\nNew Circuit.c basekv=12.47 bus1=src MVAsc3=2000 MVAsc1=2100\n"
        "New Line.l bus1=src bus2=b r1=0.5 x1=1.0 units=km length=5 normamps=400\n"
        # constant power at any voltage: past the nose of the P-V curve there is no solution
        "New Load.l bus1=b phases=3 kv=12.47 kw=1000 kvar=300 model=1 vminpu=0 vmaxpu=10\n"
        "Set VoltageBases=[12.47]\nCalcVoltageBases\n"
    )
    feeder = Feeder(master, name="nose")
    feeder.set_load_multipliers(60.0)
    state = feeder.solve()
    assert not state.converged and not state.power_flow_converged
    assert not state.control_iterations_exceeded and state.message == "power flow did not converge"
    feeder.set_load_multipliers(1.0)
    again = feeder.solve()
    assert again.converged and again.power_flow_converged
    assert again.substation_p_mw == pytest.approx(1.0 + again.losses_mw, abs=1e-3)


def test_control_state_follows_taps_and_new_controls(ieee13: Feeder) -> None:
    """controls.read looks the regulated windings and switched capacitors up
    once per feeder: the taps are read every time, and a control added later
    (the number of RegControls or CapControls changes) is seen."""
    before = controls.read(ieee13)
    assert [t[0] for t in before.taps] == ["reg1", "reg2", "reg3"]
    xf, wdg, tap = before.taps[0]
    ieee13.engine.Transformers.Name(xf)
    ieee13.engine.Transformers.Wdg(wdg)
    ieee13.engine.Transformers.Tap(tap + TAP_STEP)
    assert controls.read(ieee13).taps[0][2] == pytest.approx(tap + TAP_STEP)
    controls.apply(ieee13, before)
    assert controls.read(ieee13) == before
    assert "extra" not in [c for c, _ in before.capacitors]
    ieee13.engine.Text.Command("New Capacitor.extra bus1=675 phases=3 kvar=300 kv=4.16")
    ieee13.engine.Text.Command(
        "New CapControl.extra capacitor=extra element=Line.692675 type=voltage "
        "on=118 off=126 ptratio=20"
    )
    assert "extra" in [c for c, _ in controls.read(ieee13).capacitors]
