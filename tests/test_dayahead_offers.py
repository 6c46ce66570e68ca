"""Day-ahead offers of DER fleets and the pieces that carry them: the fleet's
plan from its price forecast (``Fleet.day_ahead``), the gate closure, the
forecasts table, the LDA's day-ahead bid built from the offers, the DMO's
settlement of the DERs' schedules."""

from __future__ import annotations

import numpy as np
import pytest

from dsosim.federates.aggregator.fleet import Fleet
from dsosim.federates.aggregator.solar import sky_table
from dsosim.federates.aggregator.specs import BatterySpec, FleetSpec, PvSpec, SiteSpec
from dsosim.federates.common import messages as msg
from dsosim.federates.common.curves import BidCurve
from dsosim.federates.common.forecasts import ForecastLog
from dsosim.federates.common.scale import TdScale
from dsosim.federates.common.schedule import day_ahead_due, gate_interval
from dsosim.federates.markets.location import Location

SITE = SiteSpec()
SKY = sky_table(SITE, ["south"])
# cheap at night and midday, dear in the morning and the evening
PRIOR = tuple([20.0] * 6 + [60.0] * 6 + [20.0] * 6 + [80.0] * 6)


def _battery_fleet(**spec: object) -> Fleet:
    fields = {
        "batteries": (BatterySpec("a", 1.0, 4.0),),
        "price_prior": PRIOR,
        "site": SITE,
        "sky": SKY,
        "response_error": 0.0,
        **spec,
    }
    return Fleet(FleetSpec(**fields), interval_s=300.0, n_intervals=2 * 288, seed=1)


def test_a_battery_plans_its_day_from_the_price_forecast() -> None:
    """Charging in the cheap periods, discharging in the dear ones; the plan's
    net demand is the offer taken at the price it was planned at."""
    fleet = _battery_fleet()
    plan = fleet.day_ahead(0, 24, 12)
    assert plan.price.tolist() == pytest.approx(PRIOR)
    cheap = np.array(PRIOR) == 20.0
    assert plan.net_mw[cheap].sum() > 2.0  # charges (net demand > 0) when cheap ...
    assert plan.net_mw[~cheap].sum() < -2.0  # ... and sells when dear
    assert plan.net_mw[:6].sum() * 1.0 <= 4.0 / 0.9 + 1e-9  # never more than it can store
    for p in range(24):  # the period offer at the plan's price is the plan
        taken = plan.offers["a"][p].quantity_at(plan.price[p])
        assert taken == pytest.approx(plan.net_mw[p], abs=1e-9)


def test_the_plan_leaves_the_fleet_untouched_and_repeats() -> None:
    fleet = _battery_fleet()
    before = fleet.bids(0)
    first = fleet.day_ahead(0, 24, 12)
    assert fleet.interval == 0 and fleet.bids(0) == before
    again = fleet.day_ahead(0, 24, 12)
    assert again.offers == first.offers and np.array_equal(again.net_mw, first.net_mw)


def test_an_offer_made_inside_the_day_before_plans_from_now() -> None:
    """At a gate closure 12 hours before the day, the plan runs the rest of
    today first: the battery starts the day from the state it plans to reach."""
    fleet = _battery_fleet()
    for k in range(144):  # to noon, idle
        fleet.dispatch(k, {"a": 0.0}, {})
    plan = fleet.day_ahead(288, 24, 12)
    assert fleet.interval == 144
    # the evening (80 $/MWh) sells what it has: nothing is left for day 2's first hours
    assert plan.net_mw[:6].sum() > 2.0
    with pytest.raises(ValueError, match="starting at 0, now 144"):
        fleet.day_ahead(0, 24, 12)


def test_pv_forecast_error_is_seeded_with_its_sd() -> None:
    # without an error the forecast is the sky the day then has
    spec = {"batteries": (), "pvs": (PvSpec("a", 1.0, orientation="south"),)}
    exact = _battery_fleet(**spec).day_ahead(0, 24, 12)
    fleet = _battery_fleet(**spec)
    available = np.zeros(24)
    for k in range(288):
        out = fleet.dispatch(k, {"a": fleet.bids(k)["a"].quantity_at(0.0)}, {})
        available[k // 12] += out.total("pv", "available_mw") / 12
    assert exact.pv_mw == pytest.approx(available, abs=1e-12)
    assert available.max() > 0.5
    # with one, a relative error per period (a flat profile shows it unclipped)
    spec = {"batteries": (), "pvs": (PvSpec("a", 1.0, profile=(0.5,) * 576),)}
    noisy = _battery_fleet(**spec).day_ahead(0, 24, 12, pv_error=0.2, seed=5)
    same = _battery_fleet(**spec).day_ahead(0, 24, 12, pv_error=0.2, seed=5)
    other = _battery_fleet(**spec).day_ahead(0, 24, 12, pv_error=0.2, seed=6)
    assert np.array_equal(noisy.pv_mw, same.pv_mw) and not np.allclose(noisy.pv_mw, other.pv_mw)
    error = noisy.pv_mw / 0.5 - 1.0
    # 24 draws of sd 0.2: the sample sd lies in [0.15, 0.28] with 95 % probability
    assert 0.12 < error.std() < 0.3 and abs(error.mean()) < 0.15


def test_periods_past_the_run_offer_nothing() -> None:
    fleet = Fleet(
        FleetSpec(batteries=(BatterySpec("a", 1.0, 4.0),), site=SITE, sky=SKY),
        interval_s=300.0,
        n_intervals=26 * 12,
        seed=1,
    )
    plan = fleet.day_ahead(288, 24, 12)
    assert all(c == BidCurve(0.0) for c in plan.offers["a"][2:])
    assert plan.offers["a"][0] != BidCurve(0.0)


def test_gate_closure_days_and_intervals() -> None:
    per_day = 288
    # at the day's start (no gate), every day's market runs before its first interval
    assert [day_ahead_due(k, per_day, 0, 3 * per_day) for k in (0, 288, 576)] == [0, 1, 2]
    assert day_ahead_due(5, per_day, 0, 3 * per_day) is None
    # 14 hours before (10:00 the day before); the first day's before interval 0
    gate = 14 * 12
    assert gate_interval(0, per_day, gate) == 0 and gate_interval(1, per_day, gate) == 120
    assert [day_ahead_due(k, per_day, gate, 3 * per_day) for k in (0, 120, 408)] == [0, 1, 2]
    assert day_ahead_due(696, per_day, gate, 3 * per_day) is None  # day 3 is past the run


def test_forecast_log_meets_each_period_with_its_actuals() -> None:
    log = ForecastLog("lda", per_day=8, per_period=2)
    log.expect(0, "load_mw", [1.0, 2.0, 3.0, 4.0])
    rows = []
    for k in range(8):
        log.observe(k, "load_mw", 10.0 * k)
        rows += log.rows_after(k)
    assert rows == [
        (0, 0, 0, "lda", "load_mw", 1.0, 5.0),
        (2, 0, 1, "lda", "load_mw", 2.0, 25.0),
        (4, 0, 2, "lda", "load_mw", 3.0, 45.0),
        (6, 0, 3, "lda", "load_mw", 4.0, 65.0),
    ]
    log.observe(9, "load_mw", 1.0)  # no forecast covers it: nothing
    assert log.rows_after(9) == []


def test_the_lda_day_ahead_bid_is_the_feeder_constrained_bid_of_the_forecast() -> None:
    """Layered models: the LDA's day-ahead bid per period is the real-time
    market's interface bid of the offers on the feeder forecast of that
    period. A 4 MW midday PV sale at bus 675 of IEEE 13 would load line
    692-675 to twice its rating: the bid sells only what the feeder carries,
    and the schedules cleared on the ISO's award keep the feeder's power flow
    at the rating (within the linearisation's error), priced at day-ahead DLMPs
    below the day-ahead LMP where the sale is curtailed. The DMO settles each
    schedule at its day-ahead DLMP."""
    from dsosim.federates.markets import day_ahead
    from dsosim.federates.markets.lda_market import Limits
    from tests.test_operator import SCALE, _operator

    op = _operator()
    grid, td, locations = op.grid, TdScale(SCALE), op.grid.locations
    pv = BidCurve(-4.0, ((0.0, 4.0),))  # curtailable down to zero below 0 $/MWh
    small = BidCurve(0.02, ((30.0, 0.05),))
    offers = {
        "a1": msg.DayAheadOffer("a1", 0, {"675": (small,) * 12 + (pv,) + (small,) * 11}),
        "a2": msg.DayAheadOffer("a2", 0, {"611": (small,) * 24}),
    }
    plain = {a: dict(m.offers) for a, m in offers.items()}
    day_ahead.check_offers(offers, locations, 24)
    intervals = np.arange(288).reshape(24, 12)
    ref = day_ahead.reference_der_mw(plain, locations, [20.0] * 24)
    assert ref[12][[loc.bus for loc in locations].index("675")] == pytest.approx(-4.0)
    points = [
        day_ahead.Point(s, sens) for s, sens in grid.day_ahead_points(intervals, 0.0, 0, 3, ref)
    ]
    limits = Limits()
    curves = day_ahead.lda_bid(points, plain, locations, limits, td)
    # unconstrained, the head would take the whole sale (less the losses it saves)
    free = td.to_td(points[12].state.substation_p_mw)  # at the reference: the sale taken
    assert curves[12].quantity_at(20.0) > free + 0.5 * SCALE  # the feeder carries much less
    assert points[12].state.loading.max() > 2.0  # at the reference point
    # the ISO takes the bid at 20 $/MWh: the DMO clears the schedules on the forecast
    award = curves[12].quantity_at(20.0)
    sched = day_ahead.schedules(points[12], plain, locations, 12, td.to_feeder(award), 20.0, limits)
    at_675 = sched[Location("a1", "675")]
    assert -4.0 < at_675.mw < -0.5 and at_675.dlmp < 20.0 and at_675.congestion < 0.0
    assert at_675.dlmp == pytest.approx(at_675.energy + at_675.loss + at_675.congestion)
    der = np.zeros(len(locations))
    for i, loc in enumerate(locations):
        der[i] = sched[loc].mw if loc in sched else 0.0
    flow = grid.linearise_at(150, der)  # the forecast load of 12:30, exact here (error 0)
    assert flow is not None
    assert flow[0].loading.max() == pytest.approx(1.0, abs=0.005)  # measured: 1.0003
    assert flow[0].v_pu[flow[0].monitored].max() <= 1.05
    # the DMO: the schedule settles at its day-ahead DLMP, the deviation at the DLMP
    dmo = op.dmo
    dmo.take_day_ahead(0, 12, plain, points)
    op.interface_bid(150, {"a1": {"675": pv, "634": small}, "a2": {"611": small}})
    _, tables = dmo.dispatch(150, 22.0, award, (award, 20.0))
    rows = {r[3]: r for r in tables["day_ahead_dispatch"][1]}
    assert rows["675"][4] == pytest.approx(at_675.mw) and rows["675"][5] == at_675.dlmp
    paid = {r[4]: r for r in tables["settlements"][1]}
    assert paid["day_ahead@675"][6] == at_675.dlmp
    foreign = {"a1": msg.DayAheadOffer("a1", 0, {"999": (pv,) * 24})}
    with pytest.raises(msg.MessageError, match="'999' is not a location of 'a1'"):
        day_ahead.check_offers(foreign, locations, 24)


def test_forward_schedules_the_feeder_cannot_carry_are_unwound() -> None:
    """Models 1-2: the ISO scheduled a 4 MW midday sale at bus 675 of IEEE 13
    (x scale at the T-D bus) without seeing the feeder. The utility's check
    keeps what the linearised feeder carries (up to its voltage limit) and
    unwinds the rest; power flows confirm the schedule overloads the feeder
    and what was kept much less. The check is linear at the forecast point, so
    it misses the overload the reversed flow brings beyond it (as model 2's
    DERM does): what it reports is a lower bound."""
    from dsosim.federates.dso.unwound import ForwardCheck
    from dsosim.federates.markets.lda_market import Limits
    from tests.test_operator import SCALE, _operator

    op = _operator()
    index = {(loc.aggregator, loc.bus): i for i, loc in enumerate(op.grid.locations)}
    check = ForwardCheck("lda", TdScale(SCALE), index, Limits(), per_day=288)
    hourly = [20.0] * 24
    sale = tuple([0.0] * 12 + [-4.0 * SCALE] + [0.0] * 11)
    small = tuple([0.0] * 12 + [0.02 * SCALE] + [0.0] * 11)
    zero = (0.0,) * 24
    check.take(
        msg.DayAheadSchedules(
            "iso", 0, tuple(hourly), {"a1": {"675": sale, "634": small}, "a2": {"611": zero}}
        )
    )
    f = op.grid.forecast(150)  # 12:30, the period of the sale
    check.check(150, f.state, f.sens)
    rows = {(r[2], r[3]): r for r in check.rows(150, 30.0)}
    da, carried, unwound = (rows[("a1", "675")][i] for i in (5, 6, 7))
    assert da == pytest.approx(-4.0) and -4.0 < carried < -1.0 and unwound == da - carried
    assert rows[("a1", "634")][7] == pytest.approx(0.0, abs=1e-9)  # a small purchase is carried
    assert rows[("a1", "675")][8:10] == (20.0, 30.0)  # day-ahead price, real-time LMP
    i, m = index[("a1", "675")], f.state.monitored
    move = np.zeros(len(op.grid.locations))
    for (agg, bus), row in rows.items():
        move[index[(agg, bus)]] = row[6] - f.state.der_mw[index[(agg, bus)]]
    linear = f.state.v_pu[m] + f.sens.dv_dp[m] @ move
    assert linear.max() == pytest.approx(1.05, abs=1e-6)  # as much as the band allows
    der = np.zeros(len(op.grid.locations))
    der[i] = da
    scheduled = op.grid.linearise_at(150, der)
    der[i] = carried
    kept = op.grid.linearise_at(150, der)
    assert scheduled is not None and kept is not None
    assert scheduled[0].loading.max() > 1.5  # the schedule as cleared overloads a line
    assert kept[0].loading.max() < 0.75 * scheduled[0].loading.max()
    assert np.isnan(rows[("a1", "675")][10])  # no power flow given: not checked on it
    assert check.rows(151, 30.0) == []  # rows only for the interval checked
    # the same check on the feeder's power flow: the linear one left the line
    # at 132 % of its rating (its unwound MW are a lower bound here); the power
    # flow's carries less and, checked again by a power flow, holds the rating
    check.check(150, f.state, f.sens, lambda d, lin: op.grid.check_at(150, d, linearise=lin))
    rows = {(r[2], r[3]): r for r in check.rows(150, 30.0)}
    linear, pf, pf_unwound, settled = rows[("a1", "675")][7], *rows[("a1", "675")][10:]
    assert settled and carried < pf < -1.0 and pf_unwound == pytest.approx(da - pf)
    assert abs(pf_unwound) > abs(linear) + 0.5  # measured: 2.07 MW beside 1.39 MW
    assert rows[("a1", "634")][11] == pytest.approx(0.0, abs=1e-9)
    der = np.asarray(f.state.der_mw, dtype=float).copy()
    for (agg, bus), row in rows.items():
        der[index[(agg, bus)]] = row[6]
    at_linear = op.grid.check_at(150, der, linearise=False)
    for (agg, bus), row in rows.items():
        der[index[(agg, bus)]] = row[10]
    at_pf = op.grid.check_at(150, der, linearise=False)
    assert at_linear is not None and at_pf is not None
    assert at_linear[0].loading.max() > 1.2  # measured: 1.32
    assert at_pf[0].loading.max() <= 1.0 + 1e-3  # measured: 1.0000
    assert at_pf[0].v_pu[at_pf[0].monitored].max() <= 1.05
    # a check leaves no trace: the forecast and the controls stay as they were
    assert op.grid.forecast_point is not None and op.grid.forecast_point.state is f.state
    # a schedule the feeder carries as it is needs no override: all carried
    check.take(
        msg.DayAheadSchedules(
            "iso", 0, tuple(hourly), {"a1": {"675": small, "634": small}, "a2": {"611": zero}}
        )
    )
    check.check(150, f.state, f.sens, lambda d, lin: op.grid.check_at(150, d, linearise=lin))
    assert all(r[11] == 0.0 and r[12] for r in check.rows(150, 30.0))
    with pytest.raises(ValueError, match="not its locations"):
        check.take(msg.DayAheadSchedules("iso", 288, (20.0,), {"a2": {"675": (1.0,)}}))


def test_inflexible_load_forecast_error_is_seeded_per_period_and_load() -> None:
    from dsosim.federates.aggregator.specs import InflexibleLoadSpec

    spec = {"batteries": (), "inflexible_loads": (InflexibleLoadSpec("a", 0.5),)}
    exact = _battery_fleet(**spec).day_ahead(0, 24, 12)
    fleet = _battery_fleet(**spec)
    demand = np.zeros(24)
    for k in range(288):
        out = fleet.dispatch(k, {"a": fleet.bids(k)["a"].quantity_at(0.0)}, {})
        demand[k // 12] += out.total("inflexible", "demand_mw") / 12
    assert exact.load_mw == pytest.approx(demand, abs=1e-12)  # no error: what happens
    noisy = _battery_fleet(**spec).day_ahead(0, 24, 12, load_error=0.05, seed=5)
    again = _battery_fleet(**spec).day_ahead(0, 24, 12, load_error=0.05, seed=5)
    assert np.array_equal(noisy.load_mw, again.load_mw)
    error = noisy.load_mw / demand - 1.0
    # 24 draws of sd 0.05: the sample sd lies in [0.039, 0.070] with 95 % probability
    assert 0.03 < error.std() < 0.075 and abs(error.mean()) < 0.04
    # the plan nets the forecast load: the period's offer is fixed at it
    assert [c.quantity_at(0.0) for c in noisy.offers["a"]] == pytest.approx(noisy.load_mw)


def test_ev_and_temperature_forecast_errors_are_seeded() -> None:
    """EV sessions arriving in the day offered are forecast with a seeded
    relative error in the energy they need, and the outdoor temperature of
    air conditioners with a seeded error per period; without errors the plan
    is what the fleet then does (a fleet at a fixed price is its own plan)."""
    from dsosim.federates.aggregator.specs import EvSpec, HvacSpec

    # commuters charging at work: they arrive at 07:00 and leave at 17:00 charged
    evs = tuple(
        EvSpec("a", 0.06, 0.007, 0.02 + 0.001 * i, arrival_h=7.0, departure_h=17.0)
        for i in range(20)
    )
    hvacs = tuple(HvacSpec("a", 0.004) for _ in range(20))
    spec = {"batteries": (), "evs": evs, "hvacs": hvacs, "sky": sky_table(SITE, ["flat"])}
    exact = _battery_fleet(**spec).day_ahead(0, 24, 12)
    fleet = _battery_fleet(**spec)
    net = np.zeros(24)
    for k in range(288):
        out = fleet.dispatch(k, {"a": fleet.bids(k)["a"].quantity_at(PRIOR[k // 12])}, {})
        net[k // 12] += out.total("ev", "charge_mw") / 12
    assert exact.ev_mw == pytest.approx(net, abs=1e-9)  # no error: what happens
    assert np.all(np.isfinite(exact.outdoor_c)) and exact.hvac_mw.sum() > 0.0

    def plan(seed: int):
        return _battery_fleet(**spec).day_ahead(
            0, 24, 12, ev_error=0.3, temperature_error_c=2.0, seed=seed
        )

    noisy, again, other = plan(5), plan(5), plan(6)
    assert np.array_equal(noisy.ev_mw, again.ev_mw)
    assert np.array_equal(noisy.outdoor_c, again.outdoor_c)
    assert not np.array_equal(noisy.ev_mw, other.ev_mw)
    # the morning's arrivals need more or less than they will: the plan
    # stores before they leave what it forecasts they need (day 0's sessions
    # are column 1: the sessions start the evening before day 0)
    from dsosim.federates.aggregator.ev import Evs

    cars = next(g for g in _battery_fleet(**spec).groups if isinstance(g, Evs))
    need = cars.e_req - cars.e_arrive[:, 1]
    draw = np.random.default_rng([5, 4409, 0]).normal(0.0, 0.3, cars.arrive.shape)[:, 1]
    forecast = np.minimum(need * np.maximum(1.0 + draw, 0.0), cars.e_req)
    assert exact.ev_mw.sum() * 0.92 == pytest.approx(need.sum(), rel=1e-9)  # 1 h periods
    assert noisy.ev_mw.sum() * 0.92 == pytest.approx(forecast.sum(), rel=1e-9)
    assert abs(forecast.sum() / need.sum() - 1.0) > 0.01
    delta = noisy.outdoor_c - exact.outdoor_c
    # 24 draws of sd 2 degC: the sample sd lies in [1.55, 2.80] with 95 % probability
    assert 1.3 < delta.std() < 3.0
    assert not np.allclose(noisy.hvac_mw, exact.hvac_mw)  # the plan cools to it
