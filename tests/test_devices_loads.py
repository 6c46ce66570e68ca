"""Loads: inflexible shapes with seeded variation, curtailable loads served up
to their value, shiftable loads meeting their daily energy in their window."""

from __future__ import annotations

import numpy as np
import pytest

from dsosim.federates.aggregator.fleet import DispatchOutcome, Fleet
from dsosim.federates.aggregator.specs import (
    FleetSpec,
    FlexLoadSpec,
    InflexibleLoadSpec,
    ShiftableLoadSpec,
)
from dsosim.federates.common import profiles

DAY = 288


def _fleet(*, n_intervals: int = DAY, seed: int = 1, **spec) -> Fleet:
    return Fleet(FleetSpec(**spec), interval_s=300.0, n_intervals=n_intervals, seed=seed)


def _step(fleet: Fleet, setpoints: dict[str, float], price: float = 25.0) -> DispatchOutcome:
    return fleet.dispatch(fleet.interval, setpoints, dict.fromkeys(fleet.buses, price))


def _at_price(fleet: Fleet, price: float) -> DispatchOutcome:
    bids = fleet.bids(fleet.interval)
    return _step(fleet, {b: c.quantity_at(price) for b, c in bids.items()}, price)


def _day(fleet: Fleet) -> np.ndarray:
    """Every bus's net demand over the fleet's run, dispatched at 30 $/MWh."""
    return np.array([_at_price(fleet, 30.0).actual_mw for _ in range(fleet.n_intervals)])


def test_inflexible_load_without_noise_is_its_shape_and_bids_no_flexibility() -> None:
    f = _fleet(
        inflexible_loads=(
            InflexibleLoadSpec("r", 2.0, noise=0.0),
            InflexibleLoadSpec("c", 1.0, shape="commercial", noise=0.0),
            InflexibleLoadSpec("s", 2.0, shift_h=1.0, noise=0.0),
        )
    )
    assert all(c.blocks == () and c.base_mw > 0 for c in f.bids(0).values())
    got = _day(f)
    res, com = profiles.residential_load(DAY, 300.0), profiles.commercial_load(DAY, 300.0)
    np.testing.assert_allclose(got[:, f.buses.index("r")], 2.0 * res, rtol=1e-12)
    np.testing.assert_allclose(got[:, f.buses.index("c")], 1.0 * com, rtol=1e-12)
    np.testing.assert_allclose(got[:, f.buses.index("s")], 2.0 * np.roll(res, 12), rtol=1e-12)


def test_inflexible_load_varies_by_seed_around_its_shape() -> None:
    loads = tuple(InflexibleLoadSpec(f"b{i:02d}", 1.0, noise=0.1) for i in range(30))
    a, b = (
        _day(_fleet(inflexible_loads=loads, seed=1)),
        _day(_fleet(inflexible_loads=loads, seed=1)),
    )
    np.testing.assert_array_equal(a, b)
    c = _day(_fleet(inflexible_loads=loads, seed=2))
    assert not np.array_equal(a, c)
    ratio = a / profiles.residential_load(DAY, 300.0)[:, None]
    assert abs(ratio.mean() - 1.0) < 0.03  # centred on the shape
    assert 0.07 < ratio.std() < 0.13  # the configured 10 %
    # autocorrelated (one hour), not white: neighbouring intervals move together
    step = np.diff(ratio, axis=0).std()
    assert step < 0.5 * ratio.std()


def test_curtailable_load_is_served_only_up_to_its_value() -> None:
    f = _fleet(
        n_intervals=4,
        flex_loads=(FlexLoadSpec("l", 2.0, value_per_mwh=90.0, curtailable_share=0.25),),
    )
    demand = f.bids(0)["l"].max_mw
    out = _at_price(f, 95.0)
    assert out.total("curtailable", "served_mw") == pytest.approx(0.75 * demand)
    assert out.total("curtailable", "unserved_mw") == pytest.approx(0.25 * demand)
    out = _at_price(f, 85.0)
    assert out.total("curtailable", "unserved_mw") == pytest.approx(0.0)


@pytest.mark.parametrize("rule", ["min", "max"])
def test_shiftable_load_consumes_its_daily_energy_in_its_window(rule: str) -> None:
    spec = ShiftableLoadSpec(
        "ev", energy_mwh=0.03, power_mw=0.01, window_start_h=18.0, window_end_h=7.0
    )
    f = _fleet(n_intervals=3 * DAY, shiftable_loads=(spec,))
    hours = (np.arange(3 * DAY) + 0.5) * 300.0 / 3600.0 % 24.0
    served = np.zeros(3 * DAY)
    for t in range(3 * DAY):
        curve = f.bids(t)["ev"]
        served[t] = _step(f, {"ev": getattr(curve, f"{rule}_mw")}).total("shiftable", "served_mw")
    assert np.all(served[(hours > 7.0) & (hours < 18.0)] == 0.0)
    assert np.all(served <= 0.01 + 1e-15)
    for start in (216, 216 + DAY):  # full windows: 18:00 -> 07:00
        window = served[start : start + 156]
        assert window.sum() * (300.0 / 3600.0) == pytest.approx(0.03, abs=1e-12)


def test_shiftable_load_waits_for_cheaper_expected_hours() -> None:
    prior = tuple(50.0 if h < 12 else 10.0 for h in range(24))
    f = _fleet(shiftable_loads=(ShiftableLoadSpec("s", 0.1, 0.05),), price_prior=prior)
    curve = f.bids(0)["s"]
    assert curve.base_mw == 0.0
    assert curve.blocks[0][0] == pytest.approx(10.0)  # it would consume in the cheap afternoon


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: FlexLoadSpec("l", 1.0, value_per_mwh=2e4), "value_per_mwh"),
        (lambda: FlexLoadSpec("l", 1.0, shape="industrial"), "shape"),
        (lambda: InflexibleLoadSpec("l", 1.0, noise=0.9), "noise"),
        (lambda: ShiftableLoadSpec("s", 10.0, 1.0, 18.0, 20.0), "energy_mwh"),
    ],
)
def test_bad_load_names_the_field(factory, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()
