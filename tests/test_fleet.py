"""DER fleet role: physics, deliverable bids, opportunity-cost offers, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsosim.federates.aggregator.fleet import (
    BatterySpec,
    DispatchOutcome,
    Fleet,
    FleetSpec,
    FlexLoadSpec,
    PvSpec,
    ShiftableLoadSpec,
    make_fleet_spec,
)
from dsosim.federates.common.curves import PRICE_CAP, PRICE_FLOOR, BidCurve

DAY = 288


def _fleet(*, interval_s: float = 300.0, n_intervals: int = DAY, seed: int = 1, **spec) -> Fleet:
    return Fleet(FleetSpec(**spec), interval_s=interval_s, n_intervals=n_intervals, seed=seed)


def _mixed_spec(**overrides) -> FleetSpec:
    spec = make_fleet_spec(
        [f"bus{i}" for i in range(30)], seed=4, pv_share=0.6, battery_share=0.5,
        flex_share=0.6, shiftable_share=0.3,
        price_prior=tuple(20.0 + 15.0 * np.sin(np.arange(24) / 24 * 2 * np.pi)),
    )
    fields = {name: getattr(spec, name) for name in spec.__dataclass_fields__}
    return FleetSpec(**{**fields, **overrides})


def _step(fleet: Fleet, setpoints: dict[str, float], price: float = 25.0) -> DispatchOutcome:
    return fleet.dispatch(fleet.interval, setpoints, dict.fromkeys(fleet.buses, price))


def _at_price(fleet: Fleet, price: float) -> DispatchOutcome:
    bids = fleet.bids(fleet.interval)
    return _step(fleet, {b: c.quantity_at(price) for b, c in bids.items()}, price)


# ------------------------------------------------------------------ battery


def test_battery_soc_follows_hand_calculation_with_split_efficiency() -> None:
    # eta = 0.81 round trip -> 0.9 each way; 1 h intervals; 4 MWh.
    fleet = _fleet(interval_s=3600.0, n_intervals=4, batteries=(
        BatterySpec("b", 1.0, 4.0, soc_init=0.5, soc_min=0.0, soc_max=1.0, efficiency=0.81),))
    out = _step(fleet, {"b": 1.0})  # charge 1 MWh from the grid: +0.9 MWh stored
    assert out.battery_charge_mw == pytest.approx(1.0)
    assert out.battery_soc[0] == pytest.approx(0.5 + 0.9 / 4.0, abs=1e-12)
    out = _step(fleet, {"b": -1.0})  # deliver 1 MWh: -1/0.9 MWh stored
    assert out.battery_discharge_mw == pytest.approx(1.0)
    assert out.battery_soc[0] == pytest.approx(0.725 - 1.0 / 0.9 / 4.0, abs=1e-12)


def test_round_trip_returns_efficiency_times_energy_charged() -> None:
    fleet = _fleet(interval_s=3600.0, n_intervals=6, batteries=(
        BatterySpec("b", 1.0, 4.0, soc_init=0.5, soc_min=0.0, soc_max=1.0, efficiency=0.81),))
    charged = sum(_step(fleet, {"b": 1.0}).actual_mw[0] for _ in range(2))  # 2 MWh in
    out = _step(fleet, {"b": -1.0})
    delivered = -out.actual_mw[0]
    # the remaining energy above the start point comes out in the next hour
    out = _step(fleet, {"b": -(2.0 * 0.81 - delivered)})
    delivered -= out.actual_mw[0]
    assert charged == pytest.approx(2.0)
    assert delivered == pytest.approx(0.81 * charged, abs=1e-12)
    assert out.battery_soc[0] == pytest.approx(0.5, abs=1e-12)


def test_soc_never_leaves_bounds_and_matches_the_energy_balance() -> None:
    rng = np.random.default_rng(0)
    batteries = tuple(
        BatterySpec(f"b{i}", float(rng.uniform(0.1, 1.0)), float(rng.uniform(0.1, 2.0)),
                    soc_init=0.5, soc_min=0.15, soc_max=0.85,
                    efficiency=float(rng.uniform(0.7, 1.0)))
        for i in range(20)
    )
    fleet = _fleet(interval_s=900.0, n_intervals=400, batteries=batteries)
    power = np.array([b.power_mw for b in batteries])
    cap = np.array([b.energy_mwh for b in batteries])
    eta1 = np.sqrt([b.efficiency for b in batteries])
    hit_min = hit_max = False
    for _ in range(400):
        before = fleet.battery_soc
        setpoints = rng.choice([-5.0, 5.0, 0.0], size=20) * rng.uniform(0, 1, 20) * power * 3
        out = _step(fleet, dict(zip(fleet.buses, setpoints.tolist())))
        soc = out.battery_soc
        assert np.all(soc >= 0.15) and np.all(soc <= 0.85)
        # one battery per bus; buses are sorted as strings (b0, b1, b10, ...)
        net = out.actual_mw[[fleet.buses.index(f"b{i}") for i in range(20)]]
        assert np.all(np.abs(net) <= power + 1e-12)
        stored = np.where(net > 0, net * eta1, net / eta1) * 0.25
        np.testing.assert_allclose(soc - before, stored / cap, atol=1e-12)
        hit_min |= bool(np.any(np.isclose(soc, 0.15)))
        hit_max |= bool(np.any(np.isclose(soc, 0.85)))
    assert hit_min and hit_max  # the limits were actually reached, so they were tested


# ------------------------------------------------------------------- curves


def _check_curve(curve: BidCurve) -> None:
    prices = [p for p, _ in curve.blocks]
    assert all(a >= b for a, b in zip(prices, prices[1:]))
    assert all(PRICE_FLOOR <= p <= PRICE_CAP for p in prices)
    assert all(mw > 0 for _, mw in curve.blocks)


def test_bids_are_deliverable_at_their_extremes_and_in_between() -> None:
    fleet = Fleet(_mixed_spec(), interval_s=300.0, n_intervals=2 * DAY, seed=3)
    rng = np.random.default_rng(1)
    for t in range(2 * DAY):
        bids = fleet.bids(t)
        assert tuple(bids) == fleet.buses
        for curve in bids.values():
            _check_curve(curve)
        pick = t % 3
        if pick == 0:
            setpoints = {b: c.max_mw for b, c in bids.items()}
        elif pick == 1:
            setpoints = {b: c.min_mw for b, c in bids.items()}
        else:
            setpoints = {b: c.quantity_at(float(rng.uniform(-20, 120))) for b, c in bids.items()}
        out = fleet.dispatch(t, setpoints, dict.fromkeys(fleet.buses, 30.0))
        np.testing.assert_allclose(out.actual_mw, out.requested_mw, rtol=0, atol=1e-9)
        np.testing.assert_allclose(out.deviation_mw, 0.0, atol=1e-9)


@pytest.mark.parametrize("prior", [PRICE_CAP * 0.95, PRICE_FLOOR * 0.95])
def test_curves_stay_within_price_bounds_with_extreme_expectations(prior: float) -> None:
    fleet = _fleet(batteries=(BatterySpec("b", 1.0, 2.0, efficiency=0.5),),
                   shiftable_loads=(ShiftableLoadSpec("b", 1.0, 0.5),), price_prior=prior)
    curve = fleet.bids(0)["b"]
    _check_curve(curve)
    if prior > 0:  # discharge at prior / 0.5 would exceed the cap: clipped to it
        assert curve.blocks[0][0] == PRICE_CAP


def test_flat_expected_price_gives_the_efficiency_band() -> None:
    # With a flat expectation p, the rule reduces to: discharge above p / eta,
    # charge below p * eta (every order statistic equals p).
    fleet = _fleet(batteries=(BatterySpec("b", 1.0, 4.0, efficiency=0.81),), price_prior=40.0)
    curve = fleet.bids(0)["b"]
    discharge, charge = curve.blocks[:3], curve.blocks[3:]
    assert curve.base_mw == pytest.approx(-1.0)
    assert all(p == pytest.approx(40.0 / 0.81) for p, _ in discharge)
    assert all(p == pytest.approx(40.0 * 0.81) for p, _ in charge)
    assert curve.quantity_at(45.0) == pytest.approx(0.0)  # idle inside the band
    assert curve.quantity_at(50.0) == pytest.approx(-1.0)
    assert curve.quantity_at(30.0) == pytest.approx(1.0)


def _discharge_prices(fleet: Fleet, bus: str = "b", k: int = 3) -> list[float]:
    return [p for p, _ in fleet.bids(fleet.interval)[bus].blocks[:k]]


def test_higher_expected_prices_raise_the_discharge_offer() -> None:
    battery = (BatterySpec("b", 1.0, 4.0),)
    shape = tuple(20.0 + 30.0 * math.exp(-0.5 * ((h - 19) / 2.0) ** 2) for h in range(24))
    low = _fleet(batteries=battery, price_prior=shape)
    high = _fleet(batteries=battery, price_prior=tuple(2.0 * p for p in shape))
    assert all(h > lo for h, lo in zip(_discharge_prices(high), _discharge_prices(low)))


def test_received_prices_are_learned_and_raise_the_discharge_offer() -> None:
    battery = (BatterySpec("b", 0.01, 0.04, soc_init=0.5, soc_min=0.0, soc_max=1.0),)
    calm = _fleet(batteries=battery, n_intervals=3 * DAY)
    spiky = _fleet(batteries=battery, n_intervals=3 * DAY)
    for t in range(2 * DAY):
        evening = 216 <= t % DAY < 240  # 18:00-20:00
        for fleet, price in ((calm, 25.0), (spiky, 200.0 if evening else 25.0)):
            fleet.dispatch(t, {"b": 0.0}, {"b": price})  # hold the battery still
    assert calm.battery_soc[0] == spiky.battery_soc[0] == 0.5
    assert all(s > c for s, c in zip(_discharge_prices(spiky), _discharge_prices(calm)))


def test_emptier_battery_asks_more_to_discharge_and_fuller_one_less_to_charge() -> None:
    shape = tuple(10.0 + 0.25 * i for i in range(DAY))  # rising through the day, per 5 min
    def offer(soc: float) -> BidCurve:
        fleet = _fleet(batteries=(BatterySpec("b", 1.0, 4.0, soc_init=soc),), price_prior=shape)
        return fleet.bids(0)["b"]
    empty, full = offer(0.2), offer(0.8)
    assert min(p for p, _ in empty.blocks[:3]) > max(p for p, _ in full.blocks[:3])
    assert max(p for p, _ in full.blocks[3:]) < min(p for p, _ in empty.blocks[3:])
    # deeper discharge within one interval asks a higher price
    prices = [p for p, _ in empty.blocks[:3]]
    assert prices[0] > prices[-1]


# ---------------------------------------------------------------- PV, loads


def _noon(interval_s: float = 300.0) -> int:
    return int(12 * 3600 / interval_s)


def test_pv_curtails_only_when_the_price_falls_below_minus_its_cost() -> None:
    profile = tuple([0.0] * 144 + [0.8] * 144)
    def fleet() -> Fleet:
        f = _fleet(n_intervals=DAY, pvs=(PvSpec("p", 2.0, curtail_cost=10.0, profile=profile),))
        for t in range(_noon()):
            f.dispatch(t, {"p": f.bids(t)["p"].min_mw}, {})
        return f
    f = fleet()
    curve = f.bids(f.interval)["p"]
    assert curve == BidCurve(-1.6, ((-10.0, 1.6),))
    out = _at_price(f, -9.0)
    assert out.pv_output_mw == pytest.approx(1.6)
    assert out.pv_curtailed_mw == pytest.approx(0.0, abs=1e-12)
    f = fleet()
    out = _at_price(f, -11.0)
    assert out.pv_output_mw == pytest.approx(0.0) and out.pv_curtailed_mw == pytest.approx(1.6)


def test_pv_without_light_bids_nothing() -> None:
    f = _fleet(pvs=(PvSpec("p", 2.0),))
    assert f.bids(0)["p"] == BidCurve(0.0)  # midnight


def test_non_curtailable_pv_cannot_be_turned_down_and_the_deviation_is_reported() -> None:
    profile = (0.5,) * 4
    f = _fleet(n_intervals=4, pvs=(PvSpec("p", 2.0, curtailable=False, profile=profile),))
    out = f.dispatch(0, {"p": 0.0}, {})
    assert out.target_mw[0] == pytest.approx(-1.0)
    assert out.actual_mw[0] == pytest.approx(-1.0)
    assert out.deviation_mw[0] == pytest.approx(-1.0)


def test_merit_order_at_a_bus_curtails_pv_only_after_load_blocks() -> None:
    profile = (0.5,) * 4
    f = _fleet(n_intervals=4, pvs=(PvSpec("x", 1.0, curtail_cost=5.0, profile=profile),),
               flex_loads=(FlexLoadSpec("x", 1.0, value_per_mwh=80.0, curtailable_share=0.5),))
    curve = f.bids(0)["x"]
    base = curve.base_mw
    flex_mw = curve.blocks[0][1]
    assert curve.blocks[0][0] == 80.0 and curve.blocks[1] == (-5.0, 0.5)
    out = f.dispatch(0, {"x": base + flex_mw}, {})  # exactly the load block
    assert out.pv_curtailed_mw == pytest.approx(0.0, abs=1e-12)
    assert out.flex_curtailed_mw == pytest.approx(0.0, abs=1e-12)
    curve = f.bids(1)["x"]
    out = f.dispatch(1, {"x": curve.base_mw + curve.blocks[0][1] + 0.2}, {})
    assert out.pv_curtailed_mw == pytest.approx(0.2)
    assert out.flex_curtailed_mw == pytest.approx(0.0, abs=1e-12)


def test_curtailable_load_is_served_only_up_to_its_value() -> None:
    f = _fleet(n_intervals=4, flex_loads=(FlexLoadSpec("l", 2.0, value_per_mwh=90.0,
                                                       curtailable_share=0.25),))
    demand = f.bids(0)["l"].max_mw
    out = _at_price(f, 95.0)
    assert out.flex_served_mw == pytest.approx(0.75 * demand)
    assert out.flex_curtailed_mw == pytest.approx(0.25 * demand)
    out = _at_price(f, 85.0)
    assert out.flex_curtailed_mw == pytest.approx(0.0)


@pytest.mark.parametrize("rule", ["min", "max"])
def test_shiftable_load_consumes_its_daily_energy_in_its_window(rule: str) -> None:
    spec = ShiftableLoadSpec("ev", energy_mwh=0.03, power_mw=0.01,
                             window_start_h=18.0, window_end_h=7.0)
    f = _fleet(n_intervals=3 * DAY, shiftable_loads=(spec,))
    hours = (np.arange(3 * DAY) + 0.5) * 300.0 / 3600.0 % 24.0
    served = np.zeros(3 * DAY)
    for t in range(3 * DAY):
        curve = f.bids(t)["ev"]
        served[t] = _step(f, {"ev": getattr(curve, f"{rule}_mw")}).shiftable_served_mw
    assert np.all(served[(hours > 7.0) & (hours < 18.0)] == 0.0)
    assert np.all(served <= 0.01 + 1e-15)
    # full windows: 18:00 day 0 -> 07:00 day 1, and day 1 -> day 2
    for start in (216, 216 + DAY):
        window = served[start:start + 156]
        assert window.sum() * (300.0 / 3600.0) == pytest.approx(0.03, abs=1e-12)


def test_shiftable_load_waits_for_cheaper_expected_hours() -> None:
    prior = tuple(50.0 if h < 12 else 10.0 for h in range(24))
    f = _fleet(shiftable_loads=(ShiftableLoadSpec("s", 0.1, 0.05),), price_prior=prior)
    curve = f.bids(0)["s"]
    assert curve.base_mw == 0.0
    assert curve.blocks[0][0] == pytest.approx(10.0)  # it would consume in the cheap afternoon


# -------------------------------------------------------------- validation


def test_unknown_and_missing_buses_are_rejected_by_name() -> None:
    f = _fleet(pvs=(PvSpec("p1", 1.0), PvSpec("p2", 1.0)))
    with pytest.raises(ValueError, match="'nowhere'"):
        f.dispatch(0, {"p1": 0.0, "p2": 0.0, "nowhere": 1.0}, {})
    with pytest.raises(ValueError, match="p2"):
        f.dispatch(0, {"p1": 0.0}, {})
    with pytest.raises(ValueError, match="'elsewhere'"):
        f.dispatch(0, {"p1": 0.0, "p2": 0.0}, {"elsewhere": 20.0})
    with pytest.raises(ValueError, match="p1.*finite"):
        f.dispatch(0, {"p1": math.nan, "p2": 0.0}, {})
    with pytest.raises(ValueError, match="p1.*number"):
        f.dispatch(0, {"p1": "1.0", "p2": 0.0}, {})
    assert f.interval == 0  # nothing happened


def test_setpoints_outside_the_curve_are_clipped_and_reported() -> None:
    f = _fleet(batteries=(BatterySpec("b", 1.0, 4.0),))
    curve = f.bids(0)["b"]
    out = f.dispatch(0, {"b": 10.0}, {})
    assert out.target_mw[0] == pytest.approx(curve.max_mw)
    assert out.actual_mw[0] == pytest.approx(curve.max_mw)
    assert out.deviation_mw[0] == pytest.approx(curve.max_mw - 10.0)


def test_intervals_must_run_in_order() -> None:
    f = _fleet(n_intervals=2, pvs=(PvSpec("p", 1.0),))
    with pytest.raises(ValueError, match="interval 1"):
        f.bids(1)
    f.dispatch(0, {"p": 0.0}, {})
    with pytest.raises(ValueError, match="interval 0"):
        f.dispatch(0, {"p": 0.0}, {})
    f.dispatch(1, {"p": 0.0}, {})
    with pytest.raises(ValueError, match="2 intervals"):
        f.bids(2)


@pytest.mark.parametrize(("factory", "match"), [
    (lambda: BatterySpec("b", 1.0, 4.0, soc_init=0.95), "soc_init"),
    (lambda: BatterySpec("b", -1.0, 4.0), "power_mw"),
    (lambda: BatterySpec("b", 1.0, 4.0, efficiency=1.2), "efficiency"),
    (lambda: PvSpec("", 1.0), "bus"),
    (lambda: FlexLoadSpec("l", 1.0, value_per_mwh=2e4), "value_per_mwh"),
    (lambda: FlexLoadSpec("l", 1.0, shape="industrial"), "shape"),
    (lambda: ShiftableLoadSpec("s", 10.0, 1.0, 18.0, 20.0), "energy_mwh"),
    (lambda: FleetSpec(price_smoothing=0.0), "price_smoothing"),
    (lambda: Fleet(FleetSpec(), interval_s=7.0, n_intervals=1, seed=0), "divide a day"),
])
def test_bad_configuration_names_the_field(factory, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


# ---------------------------------------------------- estimate, determinism


def test_expected_price_is_smoothed_per_bus_and_slot() -> None:
    f = _fleet(pvs=(PvSpec("a", 1.0), PvSpec("c", 1.0)), price_prior=25.0, price_smoothing=0.2)
    f.dispatch(0, {"a": 0.0, "c": 0.0}, {"a": 125.0})
    est = f.expected_prices
    assert est.shape == (2, DAY)
    assert est[0, 0] == pytest.approx(45.0)  # 0.8 * 25 + 0.2 * 125
    assert np.all(est[1] == 25.0) and np.all(est[0, 1:] == 25.0)
    f.dispatch(1, {"a": 0.0, "c": 0.0}, {"a": 25.0, "c": 75.0})
    est = f.expected_prices
    assert est[0, 1] == pytest.approx(25.0) and est[1, 1] == pytest.approx(35.0)
    assert est[0, 0] == pytest.approx(45.0) and est[1, 0] == pytest.approx(25.0)


def _run(seed: int, response_error: float) -> list[DispatchOutcome]:
    spec = _mixed_spec(response_error=response_error)
    f = Fleet(spec, interval_s=300.0, n_intervals=DAY, seed=seed)
    outs = []
    for t in range(DAY):
        price = 30.0 + 25.0 * math.sin(2 * math.pi * t / DAY)
        outs.append(_at_price(f, price))
    return outs


def test_same_seed_gives_identical_runs() -> None:
    a, b = _run(5, 0.05), _run(5, 0.05)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.actual_mw, y.actual_mw)
        np.testing.assert_array_equal(x.battery_soc, y.battery_soc)
        assert x.pv_output_mw == y.pv_output_mw
    c = _run(6, 0.05)
    assert any(not np.array_equal(x.actual_mw, z.actual_mw) for x, z in zip(a, c))


def test_response_error_deviates_but_stays_deliverable() -> None:
    spec = _mixed_spec(response_error=0.1)
    f = Fleet(spec, interval_s=300.0, n_intervals=DAY, seed=2)
    deviated = 0
    for t in range(DAY):
        bids = f.bids(t)
        out = _at_price(f, 40.0)
        lo = np.array([c.min_mw for c in bids.values()])
        hi = np.array([c.max_mw for c in bids.values()])
        assert np.all(out.actual_mw >= lo - 1e-12) and np.all(out.actual_mw <= hi + 1e-12)
        deviated += int(np.any(np.abs(out.deviation_mw) > 1e-6))
    assert deviated > DAY // 2


def test_outcome_reports_every_bus_and_type_totals_add_up() -> None:
    f = Fleet(_mixed_spec(), interval_s=300.0, n_intervals=DAY, seed=2)
    for _ in range(_noon()):
        out = _at_price(f, 20.0)
    total = (out.battery_charge_mw - out.battery_discharge_mw - out.pv_output_mw
             + out.flex_served_mw + out.shiftable_served_mw)
    assert out.actual_mw.sum() == pytest.approx(total, abs=1e-12)
    assert set(out.actual_by_bus()) == set(f.buses)
    with pytest.raises(ValueError):
        out.actual_mw[0] = 1.0  # outcome arrays are read-only


# ----------------------------------------------------------------- placement


def test_make_fleet_spec_is_seeded_and_order_independent() -> None:
    buses = [f"n{i}" for i in range(50)]
    a = make_fleet_spec(buses, seed=1, battery_share=0.3)
    assert a == make_fleet_spec(list(reversed(buses)), seed=1, battery_share=0.3)
    assert a != make_fleet_spec(buses, seed=2, battery_share=0.3)
    assert 5 <= len(a.batteries) <= 25  # about 15 expected
    assert all(b.bus in buses for b in a.batteries)


def test_make_fleet_spec_shares_zero_and_one() -> None:
    buses = [f"n{i}" for i in range(10)]
    spec = make_fleet_spec(buses, seed=0, pv_share=1.0, battery_share=0.0, flex_share=0.0,
                           bus_peak_mw={b: 0.1 for b in buses})
    assert [p.bus for p in spec.pvs] == sorted(buses)
    assert all(0.07 <= p.rating_mw <= 0.13 for p in spec.pvs)
    assert spec.batteries == () and spec.flex_loads == ()
    with pytest.raises(ValueError, match="n3"):
        make_fleet_spec(buses, seed=0, bus_peak_mw={"n1": 0.1})
