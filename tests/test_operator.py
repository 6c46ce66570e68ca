"""The utility's grid-operator role and the nodal DMO role on the shipped IEEE
13-node feeder, without HELICS (what the utility federate does in model 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsosim.federates.common.config import DsoConfig, LimitsConfig, TimeSettings
from dsosim.federates.common.curves import BidCurve
from dsosim.federates.common.scale import TdScale
from dsosim.federates.dso.grid import GridError, GridOperator
from dsosim.federates.markets.lda_market import Limits
from dsosim.federates.markets.nodal_dmo import BidError, NodalDmo

ROOT = Path(__file__).resolve().parents[1]
TIME = TimeSettings(interval_s=300.0, n_intervals=288)
FLEETS = {"a1": ("675", "634"), "a2": ("611",)}
SCALE = 10.0


class _Operator:
    """Grid operator and nodal DMO held by one utility, as in model 3."""

    def __init__(self, error: float, vmax: float) -> None:
        config = DsoConfig(
            name="lda",
            iso="iso",
            feeder="configs/feeders/ieee13/Master.dss",
            td_bus=5,
            scale=SCALE,
            load_forecast_error=error,
            limits=LimitsConfig(vmax_pu=vmax),
            aggregators=("a1", "a2"),
        )
        self.grid = GridOperator(config, FLEETS, TIME, seed=3, base_dir=ROOT)
        self.dmo = NodalDmo(
            "lda",
            self.grid.locations,
            ["a1", "a2"],
            scale=SCALE,
            limits=Limits(vmax_pu=vmax),
            hours=TIME.interval_s / 3600,
        )
        self.award = (0.0, 0.0)

    def interface_bid(self, k, bids):
        f = self.grid.forecast(k)
        return self.dmo.interface_bid(k, bids, f.state, f.sens)

    def dispatch(self, k, lmp, cleared):
        self.award = (lmp, cleared)
        out, self.dmo_tables = self.dmo.dispatch(k, lmp, cleared)
        return out

    def measure(self, k, actual):
        flow, _, tables = self.grid.measure(
            k, actual, actual, ["a1", "a2"], *self.award, tariff=25.0
        )
        tables["settlements"] = (
            tables["settlements"][0],
            tables["settlements"][1] + self.dmo_tables["settlements"][1],
        )
        return flow, tables


def _operator(error: float = 0.0, vmax: float = 1.05) -> _Operator:
    return _Operator(error, vmax)


BIDS = {
    "a1": {
        "675": BidCurve(-0.2, ((35.0, 0.2), (15.0, 0.3))),
        "634": BidCurve(0.05, ((30.0, 0.1),)),
    },
    "a2": {"611": BidCurve(-0.05, ((20.0, 0.15),))},
}


def test_interface_bid_is_the_scaled_feeder_curve() -> None:
    op = _operator()
    curve, tables = op.interface_bid(100, BIDS)
    flexible = sum(mw for bids in BIDS.values() for c in bids.values() for _, mw in c.blocks)
    assert curve.max_mw - curve.min_mw == pytest.approx(SCALE * flexible, rel=0.05)
    assert curve.min_mw > 0  # the inflexible feeder load dominates the LDA
    bid_rows = tables["bids"][1]
    assert len(bid_rows) == 4 and bid_rows[-1][2] == "iso" and bid_rows[0][2] == "dmo:lda"


def test_dispatch_meets_the_award_and_the_books_balance() -> None:
    op = _operator()
    curve, _ = op.interface_bid(100, BIDS)
    award = curve.quantity_at(25.0)
    dispatch = op.dispatch(100, 25.0, award)
    setpoints = {(a, b): mw for a, (sp, _) in dispatch.items() for b, mw in sp.items()}
    assert set(setpoints) == {(a, b) for a, bs in FLEETS.items() for b in bs}
    # blocks priced above 25 $/MWh are taken, those below are not (675: 35 yes, 15 no)
    assert setpoints[("a1", "675")] == pytest.approx(0.0, abs=1e-6)
    assert setpoints[("a2", "611")] == pytest.approx(-0.05, abs=1e-6)
    actual = {a: dict(sp) for a, (sp, _) in dispatch.items()}
    td_flow, tables = op.measure(100, actual)
    # with no forecast error and DERs on their set-points, the only imbalance is
    # the linearisation error of the feeder model: small against the schedule
    assert abs(td_flow - award) < 0.01 * award
    cols, rows = tables["feeder"]
    row = dict(zip(cols, rows[0], strict=True))
    assert row["head_mw"] == pytest.approx(
        row["inflexible_mw"] + row["der_mw"] + row["losses_mw"], abs=1e-4
    )
    cols, pay = tables["settlements"]
    ledger = [dict(zip(cols, p, strict=True)) for p in pay]
    to_iso = sum(p["amount"] for p in ledger if p["payee"] == "iso")
    assert to_iso == pytest.approx(25.0 * award * 300 / 3600, rel=1e-9)


def test_voltage_limit_shapes_the_bid() -> None:
    loose, tight = _operator(vmax=1.10), _operator(vmax=1.0)
    big = {
        "a1": {"675": BidCurve(-3.0, ((35.0, 3.0),)), "634": BidCurve(0.0)},
        "a2": {"611": BidCurve(0.0)},
    }
    c_loose, _ = loose.interface_bid(144, big)
    c_tight, _ = tight.interface_bid(144, big)
    # 3 MW of injection at 675 raises voltages; under a 1.0 pu cap the DSO cannot
    # offer all of it, so its least net demand is higher
    assert c_tight.min_mw > c_loose.min_mw + 1.0


def test_bad_bids_and_measurements_named() -> None:
    op = _operator()
    with pytest.raises(BidError, match=r"bids expected from \['a1', 'a2'\]"):
        op.interface_bid(0, {"a1": BIDS["a1"]})
    with pytest.raises(BidError, match="'a2' bid at \\['675'\\], where it has no registered DERs"):
        op.interface_bid(0, {**BIDS, "a2": {"611": BidCurve(0.0), "675": BidCurve(0.0)}})
    curve, _ = op.interface_bid(0, BIDS)
    op.dispatch(0, 25.0, curve.quantity_at(25.0))
    with pytest.raises(GridError, match="unknown location '999'"):
        op.measure(0, {"a1": {"999": 0.0}, "a2": {}})


def test_forecast_error_is_seeded_and_creates_imbalance() -> None:
    flows = []
    for _ in range(2):
        op = _operator(error=0.05)
        curve, _ = op.interface_bid(200, BIDS)
        award = curve.quantity_at(25.0)
        sp = op.dispatch(200, 25.0, award)
        flows.append(op.measure(200, {a: dict(s) for a, (s, _) in sp.items()})[0] - award)
    assert flows[0] == flows[1]
    assert abs(flows[0]) > 1e-3 and np.isfinite(flows[0])


def test_derm_override_curtails_only_what_the_feeder_cannot_take() -> None:
    """Model 2: the utility turns ISO awards into set-points within the band."""
    from dsosim.federates.markets.derm_override import override_awards

    op = _operator()
    f = op.grid.forecast(144)  # midday
    index = {(loc.aggregator, loc.bus): i for i, loc in enumerate(op.grid.locations)}
    limits = Limits(vmax_pu=1.04)  # the midday operating point peaks at ~1.035 pu
    small = {"a1": {"675": -0.05 * SCALE, "634": 0.02 * SCALE}, "a2": {"611": 0.0}}
    kept = override_awards(
        small, scale=TdScale(SCALE), der_index=index, state=f.state, sens=f.sens, limits=Limits()
    )
    assert kept["a1"]["675"] == pytest.approx(-0.05) and kept["a1"]["634"] == pytest.approx(0.02)
    big = {"a1": {"675": -4.0 * SCALE, "634": 0.0}, "a2": {"611": 0.0}}
    cut = override_awards(
        big, scale=TdScale(SCALE), der_index=index, state=f.state, sens=f.sens, limits=limits
    )
    injection = cut["a1"]["675"]
    assert -4.0 < injection < -0.1  # curtailed toward zero, not to zero, never reversed
    i = index[("a1", "675")]
    v = f.state.v_pu[f.state.monitored] + f.sens.dv_dp[f.state.monitored][:, i] * (
        injection - f.state.der_mw[i]
    )
    assert v.max() == pytest.approx(1.04, abs=1e-6)  # as much as the band allows


def test_derm_override_relinearised_at_its_set_points_holds_the_band() -> None:
    """Model 2 with the utility re-linearising at its own set-points: the
    big award at 675 is cut to where the power flow at those set-points (not
    the forecast point's extrapolation) meets the band, and the set-points
    stop moving."""
    from dsosim.federates.markets.derm_override import override_awards, relinearised_overrides

    op = _operator()
    grid = op.grid
    f = grid.forecast(144)
    index = {(loc.aggregator, loc.bus): i for i, loc in enumerate(grid.locations)}
    limits = Limits(vmax_pu=1.04)
    big = {"a1": {"675": -4.0 * SCALE, "634": 0.0}, "a2": {"611": 0.0}}
    args = {"scale": TdScale(SCALE), "der_index": index, "limits": limits}
    once = override_awards(big, state=f.state, sens=f.sens, **args)
    decided = relinearised_overrides(
        big, state=f.state, sens=f.sens, relinearise=lambda d: grid.linearise_at(144, d), **args
    )
    assert decided.converged and 1 <= decided.iterations <= 4
    assert decided.change_mw <= 1e-3
    assert decided.setpoints["a1"]["675"] != pytest.approx(once["a1"]["675"], abs=1e-3)
    der = np.array(f.state.der_mw, dtype=float)
    for (agg, bus), i in index.items():
        der[i] = decided.setpoints[agg][bus]
    grid.feeder.set_der_mw(der)
    vmax = grid.feeder.solve().v_pu[f.state.monitored].max()
    assert vmax == pytest.approx(1.04, abs=2e-4)  # the power flow, not the linearisation
