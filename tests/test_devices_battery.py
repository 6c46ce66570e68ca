"""Battery storage: hand-calculated energy balance, efficiency, self-discharge,
SOC limits, and offers priced from the opportunity cost of stored energy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsosim.federates.aggregator.fleet import DispatchOutcome, Fleet
from dsosim.federates.aggregator.specs import BatterySpec, FleetSpec, ShiftableLoadSpec
from dsosim.federates.common.curves import PRICE_CAP, PRICE_FLOOR, BidCurve

DAY = 288


def _fleet(*, interval_s: float = 300.0, n_intervals: int = DAY, **spec) -> Fleet:
    return Fleet(FleetSpec(**spec), interval_s=interval_s, n_intervals=n_intervals, seed=1)


def _step(fleet: Fleet, setpoints: dict[str, float], price: float = 25.0) -> DispatchOutcome:
    return fleet.dispatch(fleet.interval, setpoints, dict.fromkeys(fleet.buses, price))


def _soc(fleet: Fleet) -> float:
    return float(fleet.battery_soc[0])


def test_soc_follows_hand_calculation_with_split_efficiency() -> None:
    # eta = 0.81 round trip -> 0.9 each way; 1 h intervals; 4 MWh.
    fleet = _fleet(
        interval_s=3600.0,
        n_intervals=4,
        batteries=(
            BatterySpec("b", 1.0, 4.0, soc_init=0.5, soc_min=0.0, soc_max=1.0, efficiency=0.81),
        ),
    )
    out = _step(fleet, {"b": 1.0})  # charge 1 MWh from the grid: +0.9 MWh stored
    assert out.total("battery", "charge_mw") == pytest.approx(1.0)
    assert _soc(fleet) == pytest.approx(0.5 + 0.9 / 4.0, abs=1e-12)
    assert out.total("battery", "losses_mw") == pytest.approx(0.1, abs=1e-12)
    out = _step(fleet, {"b": -1.0})  # deliver 1 MWh: -1/0.9 MWh stored
    assert out.total("battery", "discharge_mw") == pytest.approx(1.0)
    assert _soc(fleet) == pytest.approx(0.725 - 1.0 / 0.9 / 4.0, abs=1e-12)
    assert out.total("battery", "losses_mw") == pytest.approx(1.0 / 0.9 - 1.0, abs=1e-12)


def test_round_trip_returns_efficiency_times_energy_charged() -> None:
    fleet = _fleet(
        interval_s=3600.0,
        n_intervals=6,
        batteries=(
            BatterySpec("b", 1.0, 4.0, soc_init=0.5, soc_min=0.0, soc_max=1.0, efficiency=0.81),
        ),
    )
    charged = sum(_step(fleet, {"b": 1.0}).actual_mw[0] for _ in range(2))  # 2 MWh in
    delivered = -_step(fleet, {"b": -1.0}).actual_mw[0]
    out = _step(fleet, {"b": -(2.0 * 0.81 - delivered)})  # the rest comes out next hour
    delivered -= out.actual_mw[0]
    assert charged == pytest.approx(2.0)
    assert delivered == pytest.approx(0.81 * charged, abs=1e-12)
    assert _soc(fleet) == pytest.approx(0.5, abs=1e-12)


def test_self_discharge_of_an_idle_battery_matches_the_daily_rate() -> None:
    # 2 % a day: after 36 hours the stored energy is 0.98 ** 1.5 of what it was.
    fleet = _fleet(
        interval_s=900.0,
        n_intervals=144,
        batteries=(
            BatterySpec("b", 1.0, 4.0, soc_init=0.8, soc_min=0.0, soc_max=1.0, self_discharge=0.02),
        ),
    )
    lost = 0.0
    for _ in range(144):
        lost += _step(fleet, {"b": 0.0}).total("battery", "losses_mw") * 0.25
    assert _soc(fleet) == pytest.approx(0.8 * 0.98**1.5, rel=1e-12)
    assert lost == pytest.approx(3.2 * (1 - 0.98**1.5), rel=1e-12)


def test_energy_is_conserved_and_soc_never_leaves_its_bounds() -> None:
    rng = np.random.default_rng(0)
    n = 20
    specs = tuple(
        BatterySpec(
            f"b{i:02d}",
            float(rng.uniform(0.1, 1.0)),
            float(rng.uniform(0.1, 2.0)),
            soc_init=0.5,
            soc_min=0.15,
            soc_max=0.85,
            efficiency=float(rng.uniform(0.7, 1.0)),
            self_discharge=float(rng.uniform(0.0, 0.05)),
        )
        for i in range(n)
    )
    dt = 0.25
    fleet = _fleet(interval_s=900.0, n_intervals=400, batteries=specs)
    power = np.array([b.power_mw for b in specs])
    cap = np.array([b.energy_mwh for b in specs])
    eta1 = np.sqrt([b.efficiency for b in specs])
    decay = (1.0 - np.array([b.self_discharge for b in specs])) ** (dt / 24.0)
    hit_min = hit_max = False
    for _ in range(400):
        before = fleet.battery_soc * cap
        setpoints = rng.choice([-5.0, 5.0, 0.0], size=n) * rng.uniform(0, 1, n) * power * 3
        out = _step(fleet, dict(zip(fleet.buses, setpoints.tolist())))
        after = fleet.battery_soc * cap
        net = out.actual_mw  # one battery per bus, buses in spec order
        soc = after / cap
        assert np.all(soc >= 0.15 - 1e-12) and np.all(soc <= 0.85 + 1e-12)
        assert np.all(np.abs(net) <= power + 1e-12)
        # grid energy in = stored gain + conversion losses + self-discharge
        conversion = np.where(net > 0, net * (1 - eta1), -net * (1 / eta1 - 1)) * dt
        self_loss = (1 - decay) * before
        np.testing.assert_allclose(net * dt, after - before + conversion + self_loss, atol=1e-12)
        np.testing.assert_allclose(
            out.by_type["battery"].state["losses_mw"] * dt, conversion + self_loss, atol=1e-12
        )
        hit_min |= bool(np.any(np.isclose(soc, 0.15)))
        hit_max |= bool(np.any(np.isclose(soc, 0.85)))
    assert hit_min and hit_max  # the limits were actually reached, so they were tested


# ----------------------------------------------------------------- offers


def test_flat_expected_price_gives_the_efficiency_band() -> None:
    # With a flat expectation p, the rule reduces to: discharge above p / eta,
    # charge below p * eta (every order statistic equals p).
    fleet = _fleet(batteries=(BatterySpec("b", 1.0, 4.0, efficiency=0.81),), price_prior=40.0)
    curve = fleet.bids(0)["b"]
    discharge, charge = curve.blocks[0], curve.blocks[1]  # equal prices pooled
    assert curve.base_mw == pytest.approx(-1.0)
    assert discharge == (pytest.approx(40.0 / 0.81), pytest.approx(1.0))
    assert charge == (pytest.approx(40.0 * 0.81), pytest.approx(1.0))
    assert curve.quantity_at(45.0) == pytest.approx(0.0)  # idle inside the band
    assert curve.quantity_at(50.0) == pytest.approx(-1.0)
    assert curve.quantity_at(30.0) == pytest.approx(1.0)


def _discharge_prices(fleet: Fleet, bus: str = "b") -> list[float]:
    curve = fleet.bids(fleet.interval)[bus]
    out, total = [], 0.0
    for p, mw in curve.blocks:  # the blocks that undo the discharge at the base
        if total >= -curve.base_mw - 1e-12:
            break
        out.append(p)
        total += mw
    return out


def test_higher_expected_prices_raise_the_discharge_offer() -> None:
    battery = (BatterySpec("b", 1.0, 4.0),)
    shape = tuple(20.0 + 30.0 * math.exp(-0.5 * ((h - 19) / 2.0) ** 2) for h in range(24))
    low = _fleet(batteries=battery, price_prior=shape)
    high = _fleet(batteries=battery, price_prior=tuple(2.0 * p for p in shape))
    lo, hi = _discharge_prices(low), _discharge_prices(high)
    assert len(lo) == len(hi) >= 1
    assert all(h > x for h, x in zip(hi, lo))


def _charge_prices(fleet: Fleet, bus: str = "b") -> list[float]:
    curve = fleet.bids(fleet.interval)[bus]
    out, total = [], 0.0
    for p, mw in curve.blocks:  # the blocks past the ones that undo the discharge
        if total >= -curve.base_mw - 1e-12:
            out.append(p)
        total += mw
    return out


def test_received_prices_are_learned_and_raise_the_charge_offer() -> None:
    # Both batteries can buy at 25 all night; the one that learned of a 200
    # $/MWh evening will pay up to that 25 to fill up (it sells at 200), the
    # calm one only 0.9 x 25 (it would sell at 25). Discharging now is priced
    # alike (sell at 25 / 0.9, buy back at 25 before the evening).
    battery = (BatterySpec("b", 0.01, 0.04, soc_init=0.5, soc_min=0.0, soc_max=1.0),)
    calm = _fleet(batteries=battery, n_intervals=3 * DAY)
    spiky = _fleet(batteries=battery, n_intervals=3 * DAY)
    for t in range(2 * DAY):
        evening = 216 <= t % DAY < 240  # 18:00-20:00
        for fleet, price in ((calm, 25.0), (spiky, 200.0 if evening else 25.0)):
            fleet.dispatch(t, {"b": 0.0}, {"b": price})  # hold the battery still
    assert _soc(calm) == _soc(spiky) == 0.5
    assert min(_charge_prices(spiky)) == pytest.approx(25.0)
    assert max(_charge_prices(calm)) == pytest.approx(0.9 * 25.0)


def test_emptier_battery_asks_more_to_discharge_and_fuller_one_less_to_charge() -> None:
    shape = tuple(10.0 + 0.25 * i for i in range(DAY))  # rising through the day, per 5 min

    def offer(soc: float) -> BidCurve:
        fleet = _fleet(batteries=(BatterySpec("b", 1.0, 4.0, soc_init=soc),), price_prior=shape)
        return fleet.bids(0)["b"]

    empty, full = offer(0.2), offer(0.8)
    assert min(p for p, _ in empty.blocks[:3]) > max(p for p, _ in full.blocks[:3])
    assert max(p for p, _ in full.blocks[3:]) < min(p for p, _ in empty.blocks[3:])
    prices = [p for p, _ in empty.blocks[:3]]
    assert prices[0] > prices[-1]  # deeper discharge within one interval asks more


@pytest.mark.parametrize("prior", [PRICE_CAP * 0.95, PRICE_FLOOR * 0.95])
def test_curves_stay_within_price_bounds_with_extreme_expectations(prior: float) -> None:
    fleet = _fleet(
        batteries=(BatterySpec("b", 1.0, 2.0, efficiency=0.5),),
        shiftable_loads=(ShiftableLoadSpec("b", 1.0, 0.5),),
        price_prior=prior,
    )
    curve = fleet.bids(0)["b"]
    prices = [p for p, _ in curve.blocks]
    assert all(PRICE_FLOOR <= p <= PRICE_CAP for p in prices)
    if prior > 0:  # discharge at prior / 0.5 would exceed the cap: clipped to it
        assert prices[0] == PRICE_CAP


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: BatterySpec("b", 1.0, 4.0, soc_init=0.95), "soc_init"),
        (lambda: BatterySpec("b", -1.0, 4.0), "power_mw"),
        (lambda: BatterySpec("b", 1.0, 4.0, efficiency=1.2), "efficiency"),
        (lambda: BatterySpec("b", 1.0, 4.0, self_discharge=1.0), "self_discharge"),
    ],
)
def test_bad_battery_names_the_field(factory, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


# ------------------------------------------------------- arbitrage on a known path

HOURLY_PATH = (
    16,
    15,
    15,
    15,
    15,
    16,
    19,
    21,
    20,
    19,
    19,
    20,
    19,
    20,
    20,
    21,
    23,
    25,
    26,
    25,
    23,
    21,
    19,
    17,
)
"""$/MWh per hour: a day of LMPs shaped like the shipped scenario's (night
valley, morning shoulder, evening peak)."""


def _arbitrage(
    days: int, publish: np.ndarray | None = None, **spec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run a price-taking battery on the path: each interval it does what its
    own curve says at that price. Returns price, net demand (MW) and SOC."""
    fleet = _fleet(
        batteries=(BatterySpec("b", 1.0, 2.0, soc_init=0.5, efficiency=0.9),),
        n_intervals=days * DAY,
        **spec,
    )
    price = np.tile(np.repeat(np.asarray(HOURLY_PATH, dtype=float), 12), days)
    if publish is not None:
        fleet.publish_prices(0, publish.tolist())
    net, soc = np.zeros(len(price)), np.zeros(len(price))
    for t, p in enumerate(price):
        setpoint = fleet.bids(t)["b"].quantity_at(float(p))
        net[t] = _step(fleet, {"b": setpoint}, float(p)).actual_mw[0]
        soc[t] = _soc(fleet)
    return price, net, soc


def _check_arbitrage(
    price: np.ndarray, net: np.ndarray, soc: np.ndarray, *, at_peak: float = 0.99
) -> None:
    charge, discharge = np.maximum(net, 0.0), np.maximum(-net, 0.0)
    # it cycles (MWh): fills from half full (0.8 MWh stored) and empties to 10 %
    assert charge.sum() / 12 > 0.8 and discharge.sum() / 12 > 1.4
    bought = float((charge * price).sum() / charge.sum())
    sold = float((discharge * price).sum() / discharge.sum())
    # energy comes back at 90 %: selling must beat buying by more than that
    assert sold * 0.9 > bought
    # charged in the night valley, discharged at the evening peak
    assert charge[price <= 16.0].sum() >= 0.99 * charge.sum()
    assert discharge[price >= 25.0].sum() >= at_peak * discharge.sum()
    hour = np.arange(len(price)) // 12 % 24
    assert soc[hour == 5].min() > 0.85 and soc[hour == 21].max() < 0.15  # full by dawn, empty after


def test_battery_learns_the_price_path_in_a_day_then_arbitrages() -> None:
    # a flat prior says nothing about the shape: day 1 teaches it, day 2 uses it
    price, net, soc = _arbitrage(2, price_prior=25.0)
    day2 = slice(DAY, 2 * DAY)
    _check_arbitrage(price[day2], net[day2], soc[day2])


def test_battery_arbitrages_published_prices() -> None:
    # the day-ahead interface: the path itself published before the day
    fleet_prices = np.repeat(np.asarray(HOURLY_PATH, dtype=float), 12)
    price, net, soc = _arbitrage(1, publish=fleet_prices)
    _check_arbitrage(price, net, soc)


def test_battery_with_a_load_shaped_prior_arbitrages_on_day_one() -> None:
    # The prior (20 $/MWh x load / mean load) is 13.7-15.1 at night where 15-16
    # comes: at midnight the battery sells 0.25 MWh at 16 expecting to buy back
    # at 13.7, then buys back at 15. The rest of its cycle is the peak.
    load = tuple(float(x) for x in np.asarray(HOURLY_PATH) - 5.0)  # a published load shape
    price, net, soc = _arbitrage(1, price_prior=20.0, load_forecast=load)
    _check_arbitrage(price, net, soc, at_peak=0.85)


def test_a_battery_that_knows_a_flat_tariff_past_the_run_stays_idle() -> None:
    # a 13-hour run: the 24-hour horizon reaches past the end, where prices can
    # be published too (a passive fleet publishes its tariff that far)
    fleet = _fleet(
        batteries=(BatterySpec("b", 1.0, 2.0),),
        n_intervals=156,
        price_prior=20.0,
        load_forecast=tuple(float(x) for x in HOURLY_PATH),
    )
    assert fleet.forecast_reach == 156 + DAY
    fleet.publish_prices(0, [25.0] * fleet.forecast_reach)
    for t in range(156):
        assert fleet.bids(t)["b"].quantity_at(25.0) == pytest.approx(0.0, abs=1e-12)
        _step(fleet, {"b": 0.0})
