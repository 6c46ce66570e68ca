"""Electric vehicles: the departure energy is met whenever it can be, whatever
the dispatch inside the offered range; offers priced from the cheapest hours
left; V2G only while the energy can be put back."""

from __future__ import annotations

import numpy as np
import pytest

from dsosim.federates.aggregator.fleet import Fleet
from dsosim.federates.aggregator.specs import EvSpec, FleetSpec

DAY = 288
DT = 300.0 / 3600.0
# 7.2 kW charger at 92 %: 0.552 kWh stored per 5-minute interval at full power
CAR = dict(
    capacity_mwh=0.06,
    charge_mw=0.0072,
    energy_mwh=0.0132,
    arrival_h=18.0,
    departure_h=7.0,
    target_soc=0.9,
    efficiency=0.92,
)


def _fleet(
    *evs: EvSpec,
    n_intervals: int = 2 * DAY,
    jitter: float = 0.0,
    energy_jitter: float = 0.0,
    seed: int = 1,
    **spec,
) -> Fleet:
    return Fleet(
        FleetSpec(evs=evs, ev_jitter_h=jitter, ev_energy_jitter=energy_jitter, **spec),
        interval_s=300.0,
        n_intervals=n_intervals,
        seed=seed,
    )


def _drive(fleet: Fleet, rule, until: int | None = None) -> list:
    """Dispatch every interval with set-points ``rule(t, curve)`` (no prices,
    so the expectations stay the prior); the outcomes."""
    outs = []
    end = fleet.n_intervals if until is None else until
    while fleet.interval < end:
        t = fleet.interval
        bids = fleet.bids(t)
        outs.append(fleet.dispatch(t, {b: rule(t, c) for b, c in bids.items()}, {}))
    return outs


def _energy(fleet: Fleet) -> float:
    return float(fleet.group("ev").energy[0])  # type: ignore[attr-defined]


def test_least_charging_still_leaves_with_the_target_energy() -> None:
    # Needs 13.2 kWh = 23.9 full-power intervals; plugged 18:00-07:00 (156 intervals).
    fleet = _fleet(EvSpec("a", **CAR))
    outs = _drive(fleet, lambda t, c: c.min_mw)
    charge = np.array([o.total("ev", "charge_mw") for o in outs])
    hours = (np.arange(2 * DAY) + 0.5) * DT % 24.0
    first_night = slice(216, DAY + 84)  # 18:00 day 0 to 07:00 day 1
    assert charge[first_night].sum() * DT * 0.92 == pytest.approx(0.0132, abs=1e-12)
    # it waited until the last moment: only the last 24 intervals before 07:00 charge
    on = np.flatnonzero(charge[first_night] > 0)
    assert len(on) == 24 and on[0] == 156 - 24
    assert np.all(charge[(hours > 7.0) & (hours < 18.0)] == 0.0)  # away during the day
    departure = outs[DAY + 83]
    assert departure.total("ev", "departures") == 1
    assert departure.total("ev", "shortfall_mwh") == pytest.approx(0.0, abs=1e-12)


def test_most_charging_fills_up_right_after_arrival() -> None:
    fleet = _fleet(EvSpec("a", **CAR))
    outs = _drive(fleet, lambda t, c: c.max_mw, until=DAY)
    charge = np.array([o.total("ev", "charge_mw") for o in outs])
    assert np.all(charge[216:239] == pytest.approx(0.0072))  # 23 full intervals from 18:00
    assert 0.0 < charge[239] < 0.0072 and np.all(charge[240:] == 0.0)
    assert _energy(fleet) == pytest.approx(0.054)


def test_a_plugged_in_car_at_midnight_has_charged_since_the_evening() -> None:
    fleet = _fleet(EvSpec("a", **CAR))
    # arrived at 18:00 with 40.8 kWh and charged at full power since: full at midnight
    assert _energy(fleet) == pytest.approx(0.054)
    early = _fleet(EvSpec("a", **{**CAR, "arrival_h": 23.5, "energy_mwh": 0.03}))
    assert _energy(early) == pytest.approx(0.054 - 0.03 + 6 * 0.0072 * 0.92 * DT)


@pytest.mark.parametrize("v2g", [False, True])
def test_departure_energy_is_met_whenever_feasible_under_any_dispatch(v2g: bool) -> None:
    rng = np.random.default_rng(7)
    n = 40
    evs = tuple(
        EvSpec(
            f"b{i:02d}",
            capacity_mwh=float(rng.uniform(0.04, 0.08)),
            charge_mw=float(rng.choice([0.0036, 0.0072, 0.0115])),
            energy_mwh=float(rng.uniform(0.004, 0.03)),
            arrival_h=float(rng.uniform(15, 23)),
            departure_h=float(rng.uniform(5, 10)),
            discharge_mw=0.0072 if v2g else 0.0,
        )
        for i in range(n)
    )
    fleet = _fleet(*evs, n_intervals=3 * DAY, jitter=1.5, energy_jitter=0.5, seed=3)
    g = fleet.group("ev")
    e_min = np.array([e.min_soc * e.capacity_mwh for e in evs])
    departures = shortfalls = 0
    while fleet.interval < 3 * DAY:
        t = fleet.interval
        bids = fleet.bids(t)
        u = rng.uniform(0, 1, n)  # any set-point inside each car's range
        out = fleet.dispatch(
            t,
            {b: c.min_mw + u[i] * (c.max_mw - c.min_mw) for i, (b, c) in enumerate(bids.items())},
            {},
        )
        state = out.by_type["ev"].state  # one car per bus: per-bus = per-car
        plugged = state["plugged"] > 0
        assert np.all(state["energy_mwh"][plugged] <= g.e_req[plugged] + 1e-12)  # never past target
        assert np.all(out.actual_mw >= -0.0072 * v2g - 1e-12)
        discharged = state["discharge_mw"] > 0
        assert np.all(state["energy_mwh"][discharged] >= e_min[discharged] - 1e-12)
        leaving = state["departures"] > 0
        for i in np.flatnonzero(leaving):
            departures += 1
            s = g.sess[i] - 1  # the session that just ended
            need = g.e_req[i] - g.e_arrive[i, s]
            stay = g.depart[i, s] - max(g.arrive[i, s], 0)
            feasible = need <= g.p_c[i] * g.eta[i] * DT * stay - 1e-12
            if feasible and g.arrive[i, s] >= 0:
                assert state["shortfall_mwh"][i] == pytest.approx(0.0, abs=1e-9)
            elif g.arrive[i, s] >= 0:  # chased at full power the whole stay
                shortfalls += 1
                assert state["shortfall_mwh"][i] == pytest.approx(
                    need - g.p_c[i] * g.eta[i] * DT * stay, abs=1e-9
                )
    assert departures > 2 * n  # three days of sessions were checked
    assert shortfalls < departures // 4


def test_charging_waits_for_the_cheapest_hours_left() -> None:
    cheap = tuple(10.0 if 1 <= h < 5 else 50.0 for h in range(24))  # 48 cheap intervals
    fleet = _fleet(EvSpec("a", **CAR), price_prior=cheap)
    _drive(fleet, lambda t, c: c.min_mw, until=216)  # to 18:00, arrival
    curve = fleet.bids(216)["a"]
    assert curve.base_mw == 0.0
    assert curve.blocks == ((pytest.approx(10.0), pytest.approx(0.0072)),)
    short = tuple(10.0 if h == 2 else 50.0 for h in range(24))  # 12 cheap intervals < 24 needed
    fleet = _fleet(EvSpec("a", **CAR), price_prior=short)
    _drive(fleet, lambda t, c: c.min_mw, until=216)
    assert fleet.bids(216)["a"].blocks[0][0] == pytest.approx(50.0)


def test_v2g_discharges_only_what_it_can_put_back_and_asks_for_it() -> None:
    car = EvSpec("a", **{**CAR, "discharge_mw": 0.0072, "wear_cost": 40.0})
    fleet = _fleet(car, price_prior=20.0)
    _drive(fleet, lambda t, c: c.min_mw, until=216)
    curve = fleet.bids(216)["a"]  # just arrived, 13 h to go
    assert curve.base_mw == pytest.approx(-0.0072)
    d_price = curve.blocks[0][0]
    assert d_price == pytest.approx(20.0 / 0.92**2 + 40.0)
    # discharge at every chance: near departure it must stop and charge instead
    outs = _drive(fleet, lambda t, c: c.min_mw, until=DAY + 84)
    assert outs[-1].total("ev", "shortfall_mwh") == pytest.approx(0.0, abs=1e-12)
    discharged = sum(o.total("ev", "discharge_mw") for o in outs) * DT
    assert discharged > 0.01
    last = [o.total("ev", "discharge_mw") for o in outs[-40:]]
    assert all(x == 0.0 for x in last)


def test_bad_ev_names_the_field() -> None:
    with pytest.raises(ValueError, match="energy_mwh"):
        EvSpec("a", **{**CAR, "energy_mwh": 0.06})
    with pytest.raises(ValueError, match="min_soc"):
        EvSpec("a", **{**CAR, "min_soc": 0.95})
