"""DER fleet role: deliverable bids, pooled curves, merit-order dispatch,
validation, determinism, result tables (device physics: tests/test_devices_*)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from dsosim.federates.aggregator import offers
from dsosim.federates.aggregator.fleet import DispatchOutcome, Fleet
from dsosim.federates.aggregator.population import HomeMix, home_devices
from dsosim.federates.aggregator.prices import Outlook, PriceEstimate
from dsosim.federates.aggregator.results import der_tables
from dsosim.federates.aggregator.solar import sky_table
from dsosim.federates.aggregator.spec_json import fleet_from_json, fleet_to_json
from dsosim.federates.aggregator.specs import (
    BatterySpec,
    FleetSpec,
    FlexLoadSpec,
    InflexibleLoadSpec,
    PvSpec,
    ShiftableLoadSpec,
    SiteSpec,
)
from dsosim.federates.common.curves import PRICE_CAP, PRICE_FLOOR, BidCurve

DAY = 288
SITE = SiteSpec()
SKY = sky_table(SITE, ["flat", "south", "east", "west"])


def _fleet(*, interval_s: float = 300.0, n_intervals: int = DAY, seed: int = 1, **spec) -> Fleet:
    spec.setdefault("sky", SKY)
    return Fleet(FleetSpec(**spec), interval_s=interval_s, n_intervals=n_intervals, seed=seed)


def _mixed_spec(n_bus: int = 6, homes: int = 12, **overrides) -> FleetSpec:
    """Every device type at every bus, seeded."""
    buses = [f"bus{i}" for i in range(n_bus)]
    mix = HomeMix(pv=0.5, battery=0.3, ev=0.4, v2g=0.5, hvac=0.6, water_heater=0.4, volt_var=0.3)
    got = home_devices(dict.fromkeys(buses, homes), mix, SITE, np.random.default_rng(4))
    fields = dict(
        batteries=tuple(got.batteries),
        pvs=tuple(got.pvs),
        evs=tuple(got.evs),
        hvacs=tuple(got.hvacs),
        water_heaters=tuple(got.water_heaters),
        inflexible_loads=tuple(InflexibleLoadSpec(b, 0.01) for b in buses),
        flex_loads=tuple(FlexLoadSpec(b, 0.01, value_per_mwh=70.0) for b in buses[::2]),
        shiftable_loads=tuple(ShiftableLoadSpec(b, 0.01, 0.003, 22.0, 6.0) for b in buses[1::2]),
        price_prior=tuple(20.0 + 15.0 * np.sin(np.arange(24) / 24 * 2 * np.pi - 2.0)),
        site=SITE,
        sky=SKY,
    )
    return FleetSpec(**{**fields, **overrides})


def _step(fleet: Fleet, setpoints: dict[str, float], price: float = 25.0) -> DispatchOutcome:
    return fleet.dispatch(fleet.interval, setpoints, dict.fromkeys(fleet.buses, price))


def _at_price(fleet: Fleet, price: float) -> DispatchOutcome:
    bids = fleet.bids(fleet.interval)
    return _step(fleet, {b: c.quantity_at(price) for b, c in bids.items()}, price)


def _check_curve(curve: BidCurve, max_blocks: int) -> None:
    prices = [p for p, _ in curve.blocks]
    assert all(a >= b for a, b in itertools.pairwise(prices))
    assert all(PRICE_FLOOR <= p <= PRICE_CAP for p in prices)
    assert all(mw > 0 for _, mw in curve.blocks)
    assert len(curve.blocks) <= max_blocks


# ------------------------------------------------------------------- curves


def test_bids_are_deliverable_at_their_extremes_and_in_between() -> None:
    spec = _mixed_spec()
    fleet = Fleet(spec, interval_s=300.0, n_intervals=2 * DAY, seed=3)
    rng = np.random.default_rng(1)
    for t in range(2 * DAY):
        bids = fleet.bids(t)
        assert tuple(bids) == fleet.buses
        for curve in bids.values():
            _check_curve(curve, spec.max_blocks)
        pick = t % 3
        if pick == 0:
            setpoints = {b: c.max_mw for b, c in bids.items()}
        elif pick == 1:
            setpoints = {b: c.min_mw for b, c in bids.items()}
        else:
            setpoints = {b: c.quantity_at(float(rng.uniform(-20, 120))) for b, c in bids.items()}
        out = fleet.dispatch(t, setpoints, dict.fromkeys(fleet.buses, 30.0))
        np.testing.assert_allclose(out.actual_mw, out.requested_mw, rtol=0, atol=1e-9)
        # each device type stays inside its own offered range
        for t_out in out.by_type.values():
            assert np.all(t_out.actual_mw >= t_out.min_mw - 1e-12)
            assert np.all(t_out.actual_mw <= t_out.max_mw + 1e-12)
            assert np.all(t_out.baseline_mw >= t_out.min_mw - 1e-12)
            assert np.all(t_out.baseline_mw <= t_out.max_mw + 1e-12)


def test_pooling_keeps_range_and_order_and_bounds_each_band() -> None:
    rng = np.random.default_rng(2)
    n = 400
    bus = np.sort(rng.integers(0, 3, n))
    price = rng.uniform(-50, 200, n)
    mw = rng.uniform(0.001, 0.01, n)
    order = np.lexsort((-price, bus))
    bus, price, mw = bus[order], price[order], mw[order]
    # bus 2 has only a few distinct prices: pooled exactly by price
    price[bus == 2] = np.sort(rng.choice([10.0, 40.0, 90.0], (bus == 2).sum()))[::-1]
    g_bus, g_price, g_mw = offers.pool(bus, price, mw, 3, 8)
    for b in range(3):
        mine = g_bus == b
        assert g_mw[mine].sum() == pytest.approx(mw[bus == b].sum(), rel=1e-12)
        assert np.all(np.diff(g_price[mine]) <= 0.0)
    assert np.sum(g_bus == 0) == 8 and np.sum(g_bus == 1) == 8
    assert sorted(g_price[g_bus == 2].tolist()) == [10.0, 40.0, 90.0]  # exact prices kept
    # equal-quantity bands: no band holds much more than 1/8 of its bus (one block of slack)
    for b in (0, 1):
        assert g_mw[g_bus == b].max() <= mw[bus == b].sum() / 8 + 2 * mw.max()
    # bands are consecutive runs of blocks, priced within the prices they pool
    for b in range(3):
        p_b, q_b = price[bus == b], mw[bus == b]
        i = 0
        for gp, gq in zip(g_price[g_bus == b], g_mw[g_bus == b]):
            members, total = [], 0.0
            while total < gq * (1 - 1e-9):
                members.append(p_b[i])
                total += q_b[i]
                i += 1
            assert total == pytest.approx(gq, rel=1e-9)
            assert min(members) - 1e-9 <= gp <= max(members) + 1e-9
        assert i == len(p_b)


@pytest.mark.parametrize("n", [50, 5000, 60000])
def test_block_order_is_lexsorts_with_ties_in_index_order(n: int) -> None:
    """The fast block order is exactly the stable (bus, price descending) order:
    many equal prices (several devices offering at one price), signed zeros,
    the price cap and floor, many buses."""
    rng = np.random.default_rng(n)
    bus = rng.integers(0, 40, n).astype(np.intp)
    price = rng.uniform(-50.0, 200.0, n)
    shared = rng.random(n) < 0.5
    price[shared] = rng.choice([-0.0, 0.0, 12.5, 30.0, PRICE_CAP, PRICE_FLOOR], shared.sum())
    expected = np.lexsort((-price, bus))
    got = offers.bus_price_order(bus, price)
    assert got.dtype == np.intp
    assert np.array_equal(got, expected)
    price[n // 2] = np.nan  # not a price the fleet makes: the plain lexsort then
    assert np.array_equal(offers.bus_price_order(bus, price), np.lexsort((-price, bus)))


def test_a_thousand_devices_bid_a_bounded_curve_that_is_still_deliverable() -> None:
    spec = _mixed_spec(n_bus=3, homes=250, max_blocks=12)
    fleet = Fleet(spec, interval_s=300.0, n_intervals=DAY, seed=3)
    assert len(spec.devices()) > 1000
    for t in range(0, 60):
        bids = fleet.bids(t)
        for c in bids.values():
            _check_curve(c, 12)
        price = 25.0 + 10.0 * math.sin(t / 10.0)
        out = _step(fleet, {b: c.quantity_at(price) for b, c in bids.items()}, price)
        np.testing.assert_allclose(out.actual_mw, out.requested_mw, atol=1e-9)


def test_merit_order_at_a_bus_curtails_pv_only_after_load_blocks() -> None:
    profile = (0.5,) * 4
    f = _fleet(
        n_intervals=4,
        pvs=(PvSpec("x", 1.0, curtail_cost=5.0, profile=profile),),
        flex_loads=(FlexLoadSpec("x", 1.0, value_per_mwh=80.0, curtailable_share=0.5),),
    )
    curve = f.bids(0)["x"]
    flex_mw = curve.blocks[0][1]
    assert curve.blocks[0][0] == 80.0 and curve.blocks[1] == (-5.0, 0.5)
    out = f.dispatch(0, {"x": curve.base_mw + flex_mw}, {})  # exactly the load block
    assert out.total("pv", "curtailed_mw") == pytest.approx(0.0, abs=1e-12)
    assert out.total("curtailable", "unserved_mw") == pytest.approx(0.0, abs=1e-12)
    curve = f.bids(1)["x"]
    out = f.dispatch(1, {"x": curve.base_mw + curve.blocks[0][1] + 0.2}, {})
    assert out.total("pv", "curtailed_mw") == pytest.approx(0.2)
    assert out.total("curtailable", "unserved_mw") == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------- dispatch


def test_setpoints_outside_the_curve_are_clipped_and_reported() -> None:
    f = _fleet(batteries=(BatterySpec("b", 1.0, 4.0),))
    curve = f.bids(0)["b"]
    out = f.dispatch(0, {"b": 10.0}, {})
    assert out.target_mw[0] == pytest.approx(curve.max_mw)
    assert out.actual_mw[0] == pytest.approx(curve.max_mw)
    assert out.deviation_mw[0] == pytest.approx(curve.max_mw - 10.0)


def test_response_error_deviates_but_stays_deliverable() -> None:
    f = Fleet(_mixed_spec(response_error=0.1), interval_s=300.0, n_intervals=DAY, seed=2)
    deviated = 0
    for t in range(DAY):
        bids = f.bids(t)
        out = _at_price(f, 40.0)
        lo = np.array([c.min_mw for c in bids.values()])
        hi = np.array([c.max_mw for c in bids.values()])
        assert np.all(out.actual_mw >= lo - 1e-12) and np.all(out.actual_mw <= hi + 1e-12)
        deviated += int(np.any(np.abs(out.deviation_mw) > 1e-6))
    assert deviated > DAY // 2


def test_outcome_types_add_up_to_the_bus_and_are_read_only() -> None:
    f = Fleet(_mixed_spec(), interval_s=300.0, n_intervals=DAY, seed=2)
    for _ in range(150):
        out = _at_price(f, 20.0)
    by_type = sum(t.actual_mw for t in out.by_type.values())
    np.testing.assert_allclose(out.actual_mw, by_type, atol=1e-12)
    np.testing.assert_allclose(
        out.baseline_mw, sum(t.baseline_mw for t in out.by_type.values()), atol=1e-12
    )
    assert set(out.by_type) == {
        "battery",
        "pv",
        "ev",
        "hvac",
        "water_heater",
        "inflexible",
        "curtailable",
        "shiftable",
    }
    assert set(out.actual_by_bus()) == set(f.buses)
    with pytest.raises(ValueError):
        out.actual_mw[0] = 1.0


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


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: FleetSpec(price_smoothing=0.0), "price_smoothing"),
        (lambda: FleetSpec(max_blocks=1), "max_blocks"),
        (lambda: FleetSpec(override_probability=1.5), "override_probability"),
        (lambda: Fleet(FleetSpec(), interval_s=7.0, n_intervals=1, seed=0), "divide a day"),
        (lambda: _fleet(pvs=(PvSpec("p", 1.0, orientation="north"),)), "north"),
    ],
)
def test_bad_configuration_names_the_field(factory, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


# ----------------------------------------------------------- expectations


def _hourly(n_days: int = 2, **spec) -> Fleet:
    return _fleet(
        pvs=(PvSpec("a", 1.0), PvSpec("c", 1.0)),
        interval_s=3600.0,
        n_intervals=24 * n_days,
        **{"price_prior": 25.0, "price_prior_h": 1.0, **spec},
    )


def test_flat_prior_learns_a_level_and_a_seen_slot_its_price() -> None:
    f = _hourly()
    f.dispatch(0, {"a": 0.0, "c": 0.0}, {"a": 125.0})
    est = f.expected_prices
    assert est.shape == (2, 24)
    assert est[0, 0] == pytest.approx(125.0)  # slot 0 seen: its price
    # unseen slots: least squares over the prior (one hour of prices at 25) and
    # the price received (125): beta stays 1 (a flat prior has no slope), level 75
    assert est[0, 1:] == pytest.approx(np.full(23, 75.0))
    assert np.all(est[1] == 25.0)  # bus c received nothing: still the prior


def test_a_seen_slot_is_smoothed_over_days() -> None:
    f = _hourly(n_days=3, price_smoothing=0.2)
    for day, price in enumerate((20.0, 40.0, 70.0)):
        for h in range(24):
            f.dispatch(24 * day + h, {"a": 0.0, "c": 0.0}, {"a": price if h == 0 else 30.0})
        slot0 = f.expected_prices[0, 0]
        # weight max(0.2, 1/n): the day's price, then their mean, then a third of the way
        assert slot0 == pytest.approx((20.0, 30.0, 30.0 + (70.0 - 30.0) / 3)[day])


def test_shaped_prior_learns_the_slope_of_prices_on_it() -> None:
    # prices are 4 + 0.5 x(slot) on a prior x that rises through the day; after
    # the first half day the unseen afternoon is forecast by the weighted least
    # squares fit of the prices and the prior's pseudo-observations (weighing as
    # 6 minutes of prices, the share one hour has among 5-minute prices)
    x = np.linspace(10.0, 40.0, 24)
    f = _hourly(price_prior=tuple(x), price_memory_h=12.0, price_prior_h=0.1)
    for h in range(12):
        f.dispatch(h, {"a": 0.0, "c": 0.0}, {"a": 4.0 + 0.5 * x[h], "c": 4.0 + 0.5 * x[h]})
    got = f.expected_prices[0, 12:]
    # independent reference: numpy least squares with the same weights
    lam = math.exp(-1.0 / 12.0)
    w = np.concatenate([lam ** (11 - np.arange(12)), [1.0, 1.0]])
    spread = max(0.1 * x.mean(), 1.0)
    px = np.concatenate([x[:12], [x.mean() - spread, x.mean() + spread]])
    py = np.concatenate([4.0 + 0.5 * x[:12], px[12:]])
    sw = np.sqrt(w * np.concatenate([np.ones(12), [0.05, 0.05]]))
    coef = np.linalg.lstsq(np.column_stack([np.ones(14), px]) * sw[:, None], py * sw, rcond=None)[0]
    assert got == pytest.approx(coef[0] + coef[1] * x[12:], rel=1e-9)
    truth, prior = 4.0 + 0.5 * x[12:], x[12:]
    assert np.abs(got - truth).max() < 0.2 * np.abs(prior - truth).max()


def test_load_forecast_shapes_the_prior() -> None:
    load = (1.0, 1.0, 2.0, 2.0)  # four 6-hour blocks; mean 1.5
    f = _hourly(price_prior=30.0, load_forecast=load)
    assert f.expected_prices[0, :12] == pytest.approx(np.full(12, 20.0))
    assert f.expected_prices[0, 12:] == pytest.approx(np.full(12, 40.0))


def test_published_prices_replace_the_learned_forecast_for_their_intervals() -> None:
    f = _hourly()
    f.publish_prices(5, [100.0, 110.0, 120.0])
    ahead = f.forecast(0, 10)
    assert ahead[:, 5:8] == pytest.approx(np.array([[100.0, 110.0, 120.0]] * 2))
    assert np.all(ahead[:, :5] == 25.0) and np.all(ahead[:, 8:] == 25.0)
    for t in range(6):
        out = f.dispatch(t, {"a": 0.0, "c": 0.0}, {"a": 25.0, "c": 25.0})
    assert out.published and out.expected_price.tolist() == [100.0, 100.0]
    rows = der_tables("agg", out)["price_forecast"][1]
    assert [r[3:6] for r in rows] == [("published", 100.0, 25.0)] * 2
    assert rows[0][7] == 120.0  # highest expected over the horizon: the last published
    with pytest.raises(ValueError, match="finite"):
        f.publish_prices(7, [float("nan")])


def test_order_statistics_of_every_window_match_a_brute_force_sort() -> None:
    rng = np.random.default_rng(3)
    est = PriceEstimate(3, rng.uniform(0, 100, 48), 0.5)
    est.update(np.array([1]), np.array([500.0]), 7)  # bus 1 gets its own row
    outlook = Outlook(est, t=40)
    buses = rng.integers(0, 3, 200)
    m = rng.integers(0, 30, 200)
    pos = rng.uniform(-1, 35, 200)
    got = outlook.order_stat_ahead(buses, m, pos)
    # a second query with shorter windows reads the wider sorted rows the first left
    short = np.minimum(m, 9)
    again = outlook.order_stat_ahead(buses, short, pos)
    full = est.full()
    for b, mm, p, g in [*zip(buses, m, pos, got), *zip(buses, short, pos, again)]:
        if mm == 0:
            assert g == np.inf
            continue
        window = np.sort(full[b, (41 + np.arange(mm)) % 48])
        x = min(max(p, 0.0), mm - 1)
        i0 = math.floor(x)
        i1 = min(i0 + 1, mm - 1)
        assert g == pytest.approx(window[i0] * (1 - (x - i0)) + window[i1] * (x - i0), abs=1e-12)


# ------------------------------------------------- determinism, records


def _run(seed: int, response_error: float, hours: int = 24) -> list[DispatchOutcome]:
    spec = _mixed_spec(response_error=response_error, override_probability=0.05)
    f = Fleet(spec, interval_s=300.0, n_intervals=DAY, seed=seed)
    return [_at_price(f, 30.0 + 25.0 * math.sin(2 * math.pi * t / DAY)) for t in range(hours * 12)]


def test_same_seed_gives_identical_runs() -> None:
    a, b = _run(5, 0.05), _run(5, 0.05)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.actual_mw, y.actual_mw)
        for kind in x.by_type:
            for name, values in x.by_type[kind].state.items():
                np.testing.assert_array_equal(values, y.by_type[kind].state[name])
    c = _run(6, 0.05, hours=2)
    assert any(not np.array_equal(x.actual_mw, z.actual_mw) for x, z in zip(a, c))


def test_result_tables_have_stable_columns_and_one_row_per_bus_and_type() -> None:
    spec = _mixed_spec()
    f = Fleet(spec, interval_s=300.0, n_intervals=DAY, seed=1)
    kinds: dict[str, tuple[tuple[str, ...], tuple[type, ...]]] = {}
    for _ in range(DAY):
        out = _at_price(f, 30.0)
        tables = der_tables("agg", out)
        for name, (columns, rows) in tables.items():
            for row in rows:
                assert len(row) == len(columns)
                signature = (columns, tuple(type(v) for v in row))
                assert kinds.setdefault(name, signature) == signature, name
    n_bus = len(f.buses)
    cols, rows = tables["ders"]
    assert len(rows) == sum(int((t.devices > 0).sum()) for t in out.by_type.values())
    assert len(tables["ders_bus"][1]) == n_bus
    assert {r[cols.index("type")] for r in rows} >= {"battery", "pv", "ev", "hvac"}
    assert {r[3] for r in tables["ders_thermal"][1]} == {"hvac", "water_heater"}
    assert set(kinds) == {
        "ders",
        "ders_bus",
        "price_forecast",
        "ders_battery",
        "ders_pv",
        "ders_ev",
        "ders_thermal",
        "ders_load",
    }


def test_spec_json_round_trips_and_omits_defaults() -> None:
    spec = _mixed_spec()
    data = fleet_to_json(spec)
    assert fleet_from_json(data) == spec
    assert "soc_max" not in data["flex_loads"][0]
    assert set(data["inflexible_loads"][0]) == {"bus", "peak_mw"}
    # devices appended by another build step as plain dicts are accepted
    data["pvs"].append({"bus": "bus0", "rating_mw": 0.01})
    assert fleet_from_json(data).pvs[-1] == PvSpec("bus0", 0.01)
    data["pvs"].append({"bus": "bus0", "rating_mw": 0.01, "colour": "blue"})
    with pytest.raises(ValueError, match=r"pvs\[\d+\]\(bus='bus0'\)\.colour: unknown field"):
        fleet_from_json(data)
    data["pvs"][-1] = {"bus": "bus0", "rating_mw": "0.01"}  # a string is not a number
    with pytest.raises(ValueError, match=r"rating_mw: Input should be a valid number"):
        fleet_from_json(data)


def test_a_fleet_started_late_follows_the_clock() -> None:
    """A run that starts at 16:00 sees the sun, loads and prior of 16:00 (the
    same weather path as a run from midnight, since both draw it from midnight)."""
    spec = dict(
        pvs=(PvSpec("a", 1.0, curtailable=False),),
        inflexible_loads=(InflexibleLoadSpec("a", 0.5, noise=0.0),),
        price_prior=tuple(float(h) for h in range(24)),
    )
    first = 16 * 12
    midnight = _fleet(n_intervals=first + 12, **spec)
    for k in range(first):
        midnight.dispatch(k, {"a": midnight.bids(k)["a"].base_mw}, {"a": 20.0})
    late = Fleet(
        FleetSpec(sky=SKY, **spec), interval_s=300.0, n_intervals=12, seed=1, start_s=16 * 3600.0
    )
    assert late.forecast(0, 1)[0, 0] == pytest.approx(16.0)  # the prior's 16:00 slot
    at_16 = late.bids(0)["a"].base_mw
    for k in range(12):
        got, want = late.bids(k)["a"], midnight.bids(first + k)["a"]
        assert got.base_mw == pytest.approx(want.base_mw, abs=1e-12)
        late.dispatch(k, {"a": got.base_mw}, {"a": 20.0})
        midnight.dispatch(first + k, {"a": want.base_mw}, {"a": 20.0})
    fresh = _fleet(n_intervals=12, **spec)
    assert fresh.bids(0)["a"].base_mw != pytest.approx(at_16, abs=1e-3)  # midnight differs
    with pytest.raises(ValueError, match="start_s must be a whole number"):
        Fleet(FleetSpec(sky=SKY, **spec), interval_s=300.0, n_intervals=1, seed=1, start_s=100.0)
