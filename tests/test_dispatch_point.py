"""Market results that hold on the physics (IEEE 13, no HELICS).

* The nodal market re-linearises at the point it dispatches: its DLMP loss
  components match marginal loss factors taken by finite differences of an
  independent OpenDSS circuit at that dispatch, solved to a tight tolerance
  (at OpenDSS's default tolerance a 10 kW difference is ~1 % noise), while
  the forecast linearisation (previous interval's DER output) is visibly off.
* The ex-post check counts a violation the market could not see: planted by
  making the compiled regulator taps (where the check starts) high.
* The control margin is what two taps of each regulator do.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import opendssdirect
import pytest

from dsosim.federates.common.config import DsoConfig, LimitsConfig, TimeSettings
from dsosim.federates.common.curves import BidCurve
from dsosim.federates.dso import controls
from dsosim.federates.dso.grid import EXPOST_COLUMNS, GridOperator
from dsosim.federates.markets.lda_market import Limits
from dsosim.federates.markets.nodal_dmo import RELINEARISE_TOL_MW, NodalDmo

ROOT = Path(__file__).resolve().parents[1]
MASTER = ROOT / "configs" / "feeders" / "ieee13" / "Master.dss"
TIME = TimeSettings(interval_s=300.0, n_intervals=288)
BUSES = ("611", "652", "675", "680")
PV_MW = {"611": 0.3, "652": 0.3, "675": 1.4, "680": 0.9}  # 652: its lateral carries ~0.4 MW
K = 144  # noon
LMP = 20.0


def _grid() -> GridOperator:
    config = DsoConfig(
        name="lda",
        iso="iso",
        feeder="configs/feeders/ieee13/Master.dss",
        td_bus=5,
        scale=1.0,
        load_scale=0.6,
        limits=LimitsConfig(),
        aggregators=("a",),
    )
    return GridOperator(config, {"a": BUSES}, TIME, seed=1, base_dir=ROOT)


def _bids() -> dict[str, dict[str, BidCurve]]:
    # PV injecting its whole output unless the price falls to 2 $/MWh (curtailment)
    return {"a": {b: BidCurve(-mw, ((2.0, mw),)) for b, mw in PV_MW.items()}}


def _clear(relinearise: bool) -> tuple[GridOperator, dict[str, float], dict[str, float]]:
    grid = _grid()
    grid.der_mw = np.zeros(len(BUSES))  # last interval's output: the PV was off (stale point)
    dmo = NodalDmo(
        "lda",
        grid.locations,
        ["a"],
        scale=1.0,
        limits=Limits(vmax_pu=1.1),  # no voltage limit binds: prices are energy and losses
        hours=TIME.interval_s / 3600,
    )
    f = grid.forecast(K)
    curve, _ = dmo.interface_bid(K, _bids(), f.state, f.sens)
    if relinearise:
        dmo.relinearise = lambda der: grid.linearise_at(K, der)
    _, tables = dmo.dispatch(K, LMP, curve.quantity_at(LMP))
    cols, rows = tables["dispatch"]
    setpoints = {r[cols.index("location")]: r[cols.index("setpoint_mw")] for r in rows}
    congestion = [r[cols.index("dlmp_congestion")] for r in rows]
    assert np.abs(congestion).max() < 1e-6  # nothing binds: prices are energy and losses
    loss_factor = {
        r[cols.index("location")]: 1.0 + r[cols.index("dlmp_loss")] / r[cols.index("dlmp_energy")]
        for r in rows
    }
    lin_cols, lin_rows = tables["linearisation"]
    assert len(lin_rows) == 1
    if relinearise:
        assert lin_rows[0][lin_cols.index("converged")]
    return grid, setpoints, loss_factor


def _reference(grid: GridOperator, setpoints: dict[str, float], step_mw: float = 0.01):
    """An independent OpenDSS circuit at the dispatch, tolerance 1e-10, taps
    where the market linearised: marginal loss factors by central differences."""
    dss = opendssdirect.NewContext()
    dss.Text.Command(f'compile "{MASTER}"')
    dss.Text.Command("set mode=snapshot")
    dss.Text.Command("set tolerance=1e-10")
    m = float(grid.profile[K])
    for i in range(1, dss.Loads.Count() + 1):
        dss.Loads.Idx(i)
        kw, kvar = dss.Loads.kW(), dss.Loads.kvar()
        dss.Loads.kW(kw * m)
        dss.Loads.kvar(kvar * m)
    for bus in BUSES:
        phases = grid.feeder.bus_phases(bus)
        kv = 2.4 if len(phases) == 1 else 4.16
        nodes = ".".join(str(p) for p in phases)
        dss.Text.Command(
            f"New Load.ref_{bus} bus1={bus}.{nodes} phases={len(phases)} kv={kv} "
            f"kw={setpoints[bus] * 1000.0} pf=1 model=1 vminpu=0.85 vmaxpu=1.15"
        )
    assert grid.planning_point is not None and grid.planning_point.controls is not None
    for xf, wdg, tap in grid.planning_point.controls.taps:
        dss.Transformers.Name(xf)
        dss.Transformers.Wdg(wdg)
        dss.Transformers.Tap(tap)

    def head_mw() -> float:
        dss.Solution.SolveNoControl()
        assert dss.Solution.Converged()
        return -dss.Circuit.TotalPower()[0] / 1000.0

    out = {}
    for bus in BUSES:
        dss.Loads.Name(f"ref_{bus}")
        kw = setpoints[bus] * 1000.0
        dss.Loads.kW(kw + step_mw * 1000.0)
        up = head_mw()
        dss.Loads.kW(kw - step_mw * 1000.0)
        down = head_mw()
        dss.Loads.kW(kw)
        out[bus] = (up - down) / (2.0 * step_mw)
    return out


def test_dlmp_loss_components_at_the_dispatched_point() -> None:
    grid, setpoints, at_dispatch = _clear(relinearise=True)
    # the PV injects (nothing binds, nothing is curtailed at 20 $/MWh)
    for bus, mw in PV_MW.items():
        assert setpoints[bus] == pytest.approx(-mw, abs=RELINEARISE_TOL_MW)
    reference = _reference(grid, setpoints)
    for bus in BUSES:
        # marginal loss factor in percentage points of the price
        assert abs(at_dispatch[bus] - reference[bus]) < 0.002, bus
    # the same market on the forecast linearisation (PV at 0 MW) prices losses
    # where the PV was, not where it is: off by more than a point at the far end
    _, stale_setpoints, stale = _clear(relinearise=False)
    assert stale_setpoints == pytest.approx(setpoints, abs=1e-6)
    assert max(abs(stale[b] - reference[b]) for b in BUSES) > 0.01


def _row(values: tuple[object, ...]) -> dict[str, object]:
    return dict(zip(EXPOST_COLUMNS, values, strict=True))


def test_expost_check_catches_a_planted_violation() -> None:
    grid = _grid()
    grid.der_mw = -0.8 * np.array([PV_MW[b] for b in BUSES])
    # the operating history comes from below (compiled taps): the regulators
    # rest at the bottom of their band, where the market linearises
    controls.apply(grid.feeder, grid.feeder.compiled_controls)
    f = grid.forecast(K)
    assert f.controls is not None
    setpoints = f.state.der_mw.copy()
    honest = _row(grid.expost(K, setpoints))
    assert honest["voltage_violations"] == 0 and honest["vmax_pu"] < 1.05
    assert honest["taps_moved"] == 0  # from the compiled taps, the same resting point
    # the linearisation is taken at the dispatch itself: it predicts the flow
    assert honest["gap_v_pu"] < 1e-4 and honest["gap_lin_v_pu"] < 1e-4  # solver tolerance
    # Plant: the compiled taps, where the check starts, sit 8 steps up. The
    # regulators then come to rest at the top of their band instead of the
    # bottom: a valid state the market never saw, and over-voltage.
    step = controls.regulators(grid.feeder)[0].step_pu
    grid.feeder.compiled_controls = controls.ControlState(
        tuple((xf, w, t + 8 * step) for xf, w, t in f.controls.taps), ()
    )
    before = controls.read(grid.feeder)
    planted = _row(grid.expost(K, setpoints))
    assert controls.read(grid.feeder) == before  # the operating history is untouched
    assert planted["voltage_violations"] > 0 and planted["vmax_pu"] > 1.05
    assert planted["taps_moved"] > 0
    # the gap is the regulators' doing (a tap step or more), not the linearisation's
    assert planted["gap_v_pu"] >= step * 0.9
    assert planted["gap_lin_v_pu"] < 1e-4
    # the count is that of an independent solve from the planted taps
    grid.feeder.set_der_mw(setpoints)
    controls.apply(grid.feeder, grid.feeder.compiled_controls)
    again = grid.feeder.solve()
    controls.apply(grid.feeder, before)
    assert planted["voltage_violations"] == again.n_voltage_violations


def test_control_margin_is_two_taps_of_each_regulator() -> None:
    grid = _grid()
    regs = controls.regulators(grid.feeder)
    # IEEE 13: band 2 V on 122 V, +-10 % in 32 steps
    assert [r.taps_apart for r in regs] == [2, 2, 2]
    assert regs[0].step_pu == pytest.approx(0.00625)
    margin = controls.control_margin_pu(grid.feeder)
    two_taps = 2 * 0.00625
    # a node downstream moves with its phase's regulator, a little with the others
    assert two_taps * 0.9 < margin < two_taps * 1.5
    assert not math.isnan(margin)


def test_loading_margin_covers_what_the_controls_do_to_currents() -> None:
    """The planned loading limit keeps ``m / (vmin + m)`` free, ``m`` the
    voltage margins: every regulator two taps lower than where the market
    found it (the worst the control margin allows, every voltage lower)
    raises no branch's loading by more than that fraction, at the evening
    peak with the DERs at 634 and 671 charging."""
    config = LimitsConfig(control_margin_pu=0.0144)
    planned = Limits.planning(config)
    m = config.operating_margin_pu + 0.0144
    assert planned.max_loading == pytest.approx(1.0 - m / (config.vmin_pu + m))
    assert planned.vmin_pu == pytest.approx(config.vmin_pu + m)
    config = DsoConfig(
        name="lda",
        iso="iso",
        feeder="configs/feeders/ieee13/Master.dss",
        td_bus=5,
        scale=1.0,
        load_scale=0.6,
        aggregators=("a",),
    )
    grid = GridOperator(config, {"a": ("634", "671")}, TIME, seed=1, base_dir=ROOT)
    feeder = grid.feeder
    feeder.set_load_multipliers(grid.profile[222])  # 18:30
    feeder.set_der_mw([0.19, 0.5])
    base = feeder.solve()
    saved = controls.read(feeder)
    lowered = controls.ControlState(
        tuple((xf, w, tap - 2 * 0.00625) for xf, w, tap in saved.taps), saved.capacitors
    )
    controls.apply(feeder, lowered)
    low = feeder.solve(controls=False)
    controls.apply(feeder, saved)
    loaded = base.loading > 0.3
    rise = low.loading[loaded] / base.loading[loaded] - 1.0
    assert rise.max() > 0.005  # the controls do move currents ...
    assert rise.max() <= 1.0 - planned.max_loading  # ... by less than the margin
