"""Volt-var inverters in the utility's power flow (``dso.voltvar``), held to
OpenDSS's own InvControl on PVSystem elements, and in the grid operator's
tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import opendssdirect
import pytest

from dsosim.federates.aggregator.pv import VOLT_VAR_Q, VOLT_VAR_V, volt_var_ratings
from dsosim.federates.aggregator.specs import PvSpec
from dsosim.federates.common.config import DsoConfig, TimeSettings
from dsosim.federates.dso.feeder import Feeder
from dsosim.federates.dso.grid import DER_LOCATION_COLUMNS, FEEDER_COLUMNS, GridOperator
from dsosim.federates.dso.voltvar import VoltVar

ROOT = Path(__file__).resolve().parents[1]

CIRCUIT = """clear
new circuit.vv basekv=12.47 pu={pu} phases=3 bus1=src
new linecode.lc nphases=3 r1=0.3 x1=0.6 r0=0.6 x0=1.8 units=km
new line.l1 bus1=src bus2=b1 linecode=lc length={l1} units=km
new line.l2 bus1=b1 bus2=b2 linecode=lc length={l2} units=km
new load.ld1 bus1=b1 phases=3 kv=12.47 kw=500 pf=0.95 model=1
new load.ld2 bus1=b2 phases=3 kv=12.47 kw=200 pf=0.95 model=1
set voltagebases=[12.47]
calcvoltagebases
"""
CURVE = (
    f"new xycurve.vv npts=4 xarray=[{' '.join(map(str, VOLT_VAR_V))}] "
    f"yarray=[{' '.join(map(str, VOLT_VAR_Q))}]"
)
PV = (
    "new pvsystem.{name} bus1={bus} phases=3 kv=12.47 kva={kva} pmpp={kw} irradiance=1 "
    "%cutin=0 %cutout=0 varfollowinverter=no wattpriority=no"
)
INVCONTROL = (
    "new invcontrol.vv derlist=[pvsystem.pv1 pvsystem.pv2] mode=voltvar vvc_curve1=vv "
    "voltage_curvex_ref=rated refreactivepower=varmax varchangetolerance=0.00001 "
    "voltagechangetolerance=0.000001 deltaq_factor=0.1"
)

CASES = [
    # (line km to b1, to b2; kVA, kW of the PV at b1; kVA, kW at b2; source pu)
    (3.0, 3.0, 500.0, 400.0, 3000.0, 2500.0, 1.03),  # over-voltage: both absorb
    (3.0, 8.0, 2000.0, 1500.0, 6000.0, 2000.0, 1.03),  # weak feeder: loop gain above 1 at b2
    (1.0, 1.0, 100.0, 50.0, 100.0, 90.0, 1.03),  # just past the dead band
    (12.0, 4.0, 300.0, 0.0, 400.0, 0.0, 0.97),  # night, under-voltage: both inject
]


def _invcontrol(case: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenDSS's InvControl: (kW, kvar injected, local V pu) at b1 and b2."""
    l1, l2, kva1, kw1, kva2, kw2, pu = case
    dss = opendssdirect.NewContext()
    dss.Basic.AllowChangeDir(False)
    commands = [
        *CIRCUIT.format(l1=l1, l2=l2, pu=pu).splitlines(),
        CURVE,
        PV.format(name="pv1", bus="b1", kva=kva1, kw=max(kw1, 1e-3)),
        PV.format(name="pv2", bus="b2", kva=kva2, kw=max(kw2, 1e-3)),
        INVCONTROL,
        "set maxcontroliter=1000",
        "set tolerance=1e-10",
    ]
    for c in commands:
        dss.Text.Command(c)
    dss.Solution.Solve()
    assert dss.Solution.Converged()
    p, q, v = [], [], []
    for name, bus in (("pv1", "b1"), ("pv2", "b2")):
        dss.Circuit.SetActiveElement(f"pvsystem.{name}")
        s = np.asarray(dss.CktElement.Powers(), dtype=float)
        p.append(-s[0:6:2].sum())
        q.append(-s[1:6:2].sum())
        dss.Circuit.SetActiveBus(bus)
        v.append(float(np.mean(dss.Bus.puVmagAngle()[0::2])))
    return np.array(p), np.array(q), np.array(v)


def _feeder(tmp_path: Path, case: tuple[float, ...]) -> Feeder:
    master = tmp_path / "Master.dss"
    master.write_text(CIRCUIT.format(l1=case[0], l2=case[1], pu=case[6]) + "solve\n")
    feeder = Feeder(master, name="vv", vmin=0.95, vmax=1.05)
    feeder.attach_der("a", "b1")
    feeder.attach_der("b", "b2")
    feeder.engine.Text.Command("set tolerance=1e-10")
    return feeder


@pytest.mark.parametrize("case", CASES)
def test_fixed_point_matches_opendss_invcontrol(tmp_path: Path, case: tuple[float, ...]) -> None:
    """The same inverters as OpenDSS PVSystems under an InvControl with the
    category B curve: reactive power within 1e-4 of each rating, local
    voltages within 1e-5 pu."""
    p_kw, q_kvar, v_ref = _invcontrol(case)
    feeder = _feeder(tmp_path, case)
    feeder.set_der_mw(-p_kw / 1000.0)
    ratings = np.array([case[2], case[4]]) / 1000.0
    vv = VoltVar(feeder, ["b1", "b2"], ratings, tolerance_pu=1e-6)
    _, result = vv.solve()
    assert result.converged
    assert np.abs(q_kvar).max() > 0.005 * ratings.min() * 1000.0  # not in the dead band
    assert result.q_mvar == pytest.approx(q_kvar / 1000.0, abs=1e-4 * ratings.max())
    assert result.v_pu == pytest.approx(v_ref, abs=1e-5)


def test_weak_feeder_needs_the_secant_step(tmp_path: Path) -> None:
    """On the weak feeder plain substitution (Q <- q(V(Q))) does not settle:
    the loop gain at b2 is above 1. The secant step converges there."""
    case = CASES[1]
    p_kw, q_kvar, _ = _invcontrol(case)
    feeder = _feeder(tmp_path, case)
    feeder.set_der_mw(-p_kw / 1000.0)
    vv = VoltVar(feeder, ["b1", "b2"], [case[2] / 1000.0, case[4] / 1000.0])
    q = np.zeros(2)
    for _ in range(40):
        feeder.set_der_mvar(-q)
        q = vv.curve(vv.local_voltages(feeder.solve()))
    assert np.abs(q - q_kvar / 1000.0).max() > 0.05  # still swinging
    _, result = vv.solve()
    assert result.converged and result.iterations < 40


def test_reactive_power_survives_active_power_changes(tmp_path: Path) -> None:
    """Setting a DER's kW resets an OpenDSS load's kvar from its power factor:
    the feeder sets the reactive power again, and clears it without leaving a
    degenerate power factor behind."""
    feeder = _feeder(tmp_path, CASES[0])
    feeder.set_der_mw([0.0, 0.0])
    feeder.set_der_mvar([0.0, -0.3])  # injects 0.3 Mvar at b2, at 0 kW
    q_on = feeder.solve().substation_q_mvar
    feeder.set_der_mw([-0.2, -1.0])
    loads = feeder.engine.Loads
    loads.Name("der_b")
    assert loads.kvar() == pytest.approx(-300.0)
    feeder.set_der_mvar([0.0, 0.0])
    feeder.set_der_mw([0.0, 0.1])
    assert loads.kvar() == pytest.approx(0.0)
    feeder.set_der_mw([0.0, 0.0])
    q_off = feeder.solve().substation_q_mvar
    assert q_off - q_on == pytest.approx(0.3, rel=0.05)


def test_volt_var_ratings_sum_the_volt_var_inverters_per_bus() -> None:
    pvs = [
        PvSpec("675", 0.5, volt_var=True),
        PvSpec("675", 0.25, volt_var=True),
        PvSpec("675", 1.0),
        PvSpec("611", 0.1, volt_var=True),
    ]
    assert volt_var_ratings(pvs) == {"675": 0.75, "611": pytest.approx(0.1)}


def test_grid_operator_records_the_inverters_reactive_power() -> None:
    """IEEE 13 with PV at noon over-voltaging the far end: the measured power
    flow has the volt-var inverters absorbing, recorded per location with
    their local voltage, and fewer node-intervals above 1.05 pu than the
    same dispatch without volt-var."""
    config = DsoConfig(
        name="lda",
        iso="iso",
        feeder="configs/feeders/ieee13/Master.dss",
        td_bus=5,
        scale=1.0,
        load_scale=0.3,
        load_forecast_error=0.0,
        aggregators=("a",),
    )
    time = TimeSettings(interval_s=300.0, n_intervals=4)
    buses = ("675", "611", "652")
    out = {}
    for ratings in ({}, {"a": {"675": 1.5, "611": 0.5, "652": 0.5}}):
        grid = GridOperator(config, {"a": buses}, time, seed=1, base_dir=ROOT, volt_var_mva=ratings)
        grid.forecast(0)
        actual = {"a": {"675": -1.4, "611": -0.5, "652": -0.5}}
        _, _, tables = grid.measure(0, actual, actual, ["a"], 20.0, 0.0, tariff=25.0)
        cols, rows = tables["der_locations"]
        q = {r[3]: r[cols.index("q_mvar")] for r in rows}
        v = {r[3]: r[cols.index("v_pu")] for r in rows}
        feeder_cols, feeder_rows = tables["feeder"]
        out[bool(ratings)] = (q, v, dict(zip(feeder_cols, feeder_rows[0], strict=True)))
    assert "q_mvar" in DER_LOCATION_COLUMNS and "der_q_mvar" in FEEDER_COLUMNS
    q_off, _, f_off = out[False]
    q_on, v_on, f_on = out[True]
    assert all(x == 0.0 for x in q_off.values())
    assert f_off["vmax_pu"] > 1.05  # the case over-voltages without volt-var
    for bus, rating in (("675", 1.5), ("611", 0.5), ("652", 0.5)):
        expected = float(np.interp(v_on[bus], VOLT_VAR_V, VOLT_VAR_Q)) * rating
        assert q_on[bus] == pytest.approx(expected, abs=2e-3 * rating)
        assert q_on[bus] < 0.0  # absorbing
    assert f_on["voltvar_converged"] and f_on["voltvar_iterations"] >= 2
    assert f_on["der_q_mvar"] == pytest.approx(sum(q_on.values()))
    assert f_on["vmax_pu"] < f_off["vmax_pu"]


SCENARIO = """
name = "volt-var"
seed = 5
hours = 24
interval_minutes = 5
model = "{model}"

[transmission]
case = "case9"

[[ldas]]
name = "lda5"
feeder = "{feeder}"
td_bus = 5
scale = 10
load_scale = 0.5

[[ldas.aggregators]]
name = "agg_homes"
buses = ["675", "611", "652", "634"]

[ldas.aggregators.homes]
pv = 0.8
volt_var = 1.0
battery = 0.2
"""


@pytest.mark.federation
@pytest.mark.parametrize("model", ["1", "3"])
def test_volt_var_in_a_federation(tmp_path: Path, model: str) -> None:
    """A federation whose home PV inverters all run volt-var: the utility's
    power flow has them at their curve every interval, recorded per location
    (``der_locations``) and per interval (``feeder``), and the fleet records
    what its inverters produced (``ders_pv``), the same way in a
    grand-central and a layered model."""
    from tests.federation import run_scenario, table

    scenario = tmp_path / "volt-var.toml"
    feeder = (ROOT / "configs" / "feeders" / "ieee13" / "Master.dss").as_posix()
    scenario.write_text(SCENARIO.format(model=model, feeder=feeder))
    built, outcome = run_scenario(scenario, tmp_path / "out", hours=1.0)
    assert outcome.ok, outcome.failure
    loc = table(built.results_dir, "der_locations")
    feeder_rows = table(built.results_dir, "feeder")
    assert len(feeder_rows) == 12 and feeder_rows["voltvar_converged"].all()
    assert (loc["q_mvar"].abs() > 1e-4).any()
    # every location on its curve: q = rating x curve(v), within the fixed
    # point's tolerance (1e-3 of the rating); the rating read off the
    # interval furthest from the dead band
    loc = loc.assign(curve=np.interp(loc["v_pu"], VOLT_VAR_V, VOLT_VAR_Q))
    checked = 0
    for _, rows in loc.groupby("location"):
        top = rows.loc[rows["curve"].abs().idxmax()]
        if abs(top["curve"]) < 0.01:
            continue
        rating = top["q_mvar"] / top["curve"]
        assert rating > 0.0
        assert (rows["q_mvar"] - rating * rows["curve"]).abs().max() <= 1.5e-3 * rating
        checked += 1
    assert checked >= 2
    per_interval = loc.groupby("interval")["q_mvar"].sum()
    assert per_interval.to_numpy() == pytest.approx(feeder_rows["der_q_mvar"].to_numpy())
    # the fleet's inverters, sent the voltages the power flow gave their
    # locations, record the reactive power they produced there: the same as
    # the utility's fixed point, inverter by inverter at rating x curve(v)
    pv = table(built.results_dir, "ders_pv").rename(columns={"bus": "location"})
    both = pv.merge(loc, on=["interval", "aggregator", "location"], suffixes=("_pv", "_pf"))
    assert len(both) == len(loc) == len(pv)
    assert (both["q_mvar_pv"].abs() > 1e-4).any()  # voltages out of the dead band
    assert (both["q_mvar_pv"] - both["q_mvar_pf"]).abs().max() <= 1.5e-3 * both["rating_mw"].max()
    assert (both["q_mvar_pv"] - both["rating_mw"] * both["curve"]).abs().max() < 1e-9


def test_locations_on_a_feeder_read_line_to_line() -> None:
    """A delta feeder's readings are named bus.node.node (IEEE 37, read in
    place): every location finds its bus's readings."""
    master = ROOT.parent / "shared" / "feeders" / "ieee37" / "ieee37.dss"
    if not master.is_file():
        pytest.skip("shared feeder ieee37 not available")
    feeder = Feeder(
        master,
        name="ieee37",
        voltage_basis="ll",
    )
    feeder.attach_der("a", "701")
    feeder.attach_der("b", "742")
    vv = VoltVar(feeder, ["701", "742"], [0.1, 0.0])
    state = feeder.solve()
    for k, bus in enumerate(("701", "742")):
        readings = [i for i, n in enumerate(state.node_names) if n.split(".")[0] == bus]
        assert len(readings) >= 1
        assert vv.local_voltages(state)[k] == pytest.approx(state.v_pu[readings].mean())


def test_closed_loop_linearisation_predicts_the_inverters_response() -> None:
    """The markets' linearisation with the volt-var response folded in
    predicts the voltages of a changed dispatch (the power flow with every
    inverter at its new fixed point, taps held) an order of magnitude better
    than the one at frozen reactive power, which overstates the change."""
    config = DsoConfig(
        name="lda",
        iso="iso",
        feeder="configs/feeders/ieee13/Master.dss",
        td_bus=5,
        scale=1.0,
        load_scale=0.3,
        load_forecast_error=0.0,
        aggregators=("a",),
    )
    time = TimeSettings(interval_s=300.0, n_intervals=4)
    grid = GridOperator(
        config,
        {"a": ("675", "611", "652")},
        time,
        seed=1,
        base_dir=ROOT,
        volt_var_mva={"a": {"675": 1.5, "611": 0.5, "652": 0.5}},
    )
    assert grid.volt_var is not None
    at = {bus: grid.index[("a", bus)] for bus in ("675", "611", "652")}
    grid.der_mw = np.zeros(3)
    grid.der_mw[[at["675"], at["611"], at["652"]]] = (-1.2, -0.3, -0.3)
    f = grid.forecast(0)
    frozen = grid.feeder.sensitivities()  # at the same fixed point, reactive power frozen
    vv = grid.volt_var
    slopes = vv.slopes(vv.local_voltages(f.state))
    assert np.count_nonzero(slopes < 0.0) >= 2  # absorbing, on the curve's slope
    step = np.zeros(3)
    step[[at["675"], at["652"]]] = (-0.1, -0.05)  # more injection
    grid.feeder.set_der_mw(grid.der_mw + step)
    state, result = vv.solve(controls=False)  # within the interval: taps stay
    assert result.converged
    assert vv.slopes(result.v_pu) == pytest.approx(slopes)  # the same curve segments
    mon = f.state.monitored
    actual = state.v_pu[mon] - f.state.v_pu[mon]
    closed_err = np.abs(f.sens.dv_dp[mon] @ step - actual).max()
    frozen_err = np.abs(frozen.dv_dp[mon] @ step - actual).max()
    assert np.abs(actual).max() > 2e-3
    assert closed_err < 0.1 * frozen_err  # measured: 4.4e-5 against 2.0e-3 pu
    assert np.abs(frozen.dv_dp[mon] @ step).max() > np.abs(actual).max()  # frozen overstates


def test_reactive_derivatives_from_the_factorisation_match_finite_differences() -> None:
    """The closed loop's d/dQ from the linearisation's own LU (no power flow)
    against two OpenDSS power flows per location (+-0.01 Mvar, taps held,
    OpenDSS's tolerance at 1e-10 so that they are exact to ~1e-6) on IEEE 13
    with locations on the curve's slope: voltage derivatives within 1e-4 of
    the largest (measured 7e-6), head power within 1e-4 MW/Mvar (4e-6),
    loadings within 1e-3 of the largest (3.5e-4: the finite differences
    follow the currents' curvature). At OpenDSS's default tolerance the
    finite differences themselves are off by ~4e-4 of the largest here."""
    config = DsoConfig(
        name="lda",
        iso="iso",
        feeder="configs/feeders/ieee13/Master.dss",
        td_bus=5,
        scale=1.0,
        load_scale=0.3,
        load_forecast_error=0.0,
        aggregators=("a",),
    )
    time = TimeSettings(interval_s=300.0, n_intervals=4)
    grid = GridOperator(
        config,
        {"a": ("675", "611", "652")},
        time,
        seed=1,
        base_dir=ROOT,
        volt_var_mva={"a": {"675": 1.5, "611": 0.5, "652": 0.5}},
    )
    vv = grid.volt_var
    assert vv is not None
    grid.der_mw = np.array([-1.2, -0.3, -0.3])
    f = grid.forecast(0)
    on = np.flatnonzero(vv.slopes(vv.local_voltages(f.state)) != 0.0)
    assert len(on) >= 2
    # finite differences exact to ~1e-6: OpenDSS's tolerance tightened, small steps
    dss = grid.feeder._dss
    dss.Text.Command("set tolerance=1e-10")
    grid.feeder.solve(controls=False)
    fd = vv._reactive_fd(f.state, on, 0.01)
    grid.feeder.sensitivities()
    analytic = grid.feeder.reactive_sensitivities(on, 0.01)
    assert analytic is not None
    dv, dl, dp = (-x for x in analytic)  # per Mvar injected, as the finite differences
    assert np.abs(dv - fd[0]).max() <= 1e-4 * np.abs(fd[0]).max()
    assert np.abs(fd[0]).max() > 1e-3  # the inverters move voltages
    assert np.abs(dp - fd[2]).max() <= 1e-4
    assert np.abs(dl - fd[1]).max() <= 1e-3 * np.abs(fd[1]).max()
    # no power flow since the linearisation: a solve makes it unavailable
    grid.feeder.solve(controls=False)
    assert grid.feeder.reactive_sensitivities(on, 0.01) is None
    # and the closed loop takes the same response either way
    a = vv.closed_loop(f.state, grid.feeder.sensitivities(), delta_mvar=0.01)
    b = vv.closed_loop(
        f.state, grid.feeder.sensitivities(), delta_mvar=0.01, finite_differences=True
    )
    dss.Text.Command("set tolerance=0.0001")
    assert np.abs(a.dv_dp - b.dv_dp).max() <= 1e-4 * np.abs(b.dv_dp).max()
    assert np.abs(a.dpsub_dp - b.dpsub_dp).max() <= 1e-4


def test_location_means_are_each_locations_mean_bit_for_bit() -> None:
    """The closed loop averages every location's reading rows at once, grouped
    by the number of readings (a three-phase and two single-phase buses on
    IEEE 13); each row equals NumPy's mean over that location's readings to
    the bit, so grouping changed no result."""
    feeder = Feeder(ROOT / "configs" / "feeders" / "ieee13" / "Master.dss", name="ieee13")
    buses = ["675", "611", "652"]
    for bus in buses:
        feeder.attach_der(bus, bus)
    vv = VoltVar(feeder, buses, [0.5, 0.2, 0.0])
    rows = np.random.default_rng(7).normal(size=(len(feeder.node_names), 5)) * 1e-3
    means = vv._location_means(rows)
    counts = set()
    for k, bus in enumerate(buses):
        idx = [i for i, n in enumerate(feeder.node_names) if n.split(".")[0] == bus]
        counts.add(len(idx))
        assert np.array_equal(means[k], rows[idx].mean(axis=0))
    assert counts == {1, 3}


def test_bench_voltvar_reference_and_present_agree_to_the_bit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``dsosim bench voltvar`` runs each DSO interval of the study's eight
    LDAs with the present power flows and with those before their speed-up
    (runner/bench/voltvar_reference.py): the speed-up changed no number
    (no timing is checked here)."""
    import argparse

    from dsosim.runner.bench import voltvar as bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.handle(parser.parse_args(["--intervals", "2"])) == 0
    out = capsys.readouterr().out
    assert "results identical to the bit: 16 of 16 LDA intervals" in out
