"""Fleet hooks for hardware in the loop: single devices found by kind/bus,
per-device plans, measured readings replacing the model, unavailability."""

from __future__ import annotations

import math

import pytest

from dsosim.federates.aggregator.fleet import DeviceReading, Fleet
from dsosim.federates.aggregator.solar import sky_table
from dsosim.federates.aggregator.specs import BatterySpec, FleetSpec, PvSpec, SiteSpec

SITE = SiteSpec()
SKY = sky_table(SITE, ["south"])
NOON = 144


def _fleet() -> Fleet:
    spec = FleetSpec(
        batteries=(
            BatterySpec("a", 1.0, 4.0),
            BatterySpec("b", 0.5, 1.0),
            BatterySpec("b", 2.0, 8.0),
        ),
        pvs=(PvSpec("a", 1.0), PvSpec("b", 2.0)),
        sky=SKY,
        site=SITE,
    )
    return Fleet(spec, interval_s=300.0, n_intervals=288, seed=3)


def test_device_index_follows_spec_order_and_names_what_exists() -> None:
    f = _fleet()
    assert f.device_index("battery", "a") == 0
    assert f.device_index("battery", "b", 1) == 2
    assert f.device_index("pv", "b") == 4
    assert f.device_rating(2) == ("battery", 2.0, 8.0, 0.5)
    assert f.device_rating(3)[:3] == ("pv", 1.0, None)
    with pytest.raises(ValueError, match="no battery number 2 at bus 'b'.*has 2"):
        f.device_index("battery", "b", 2)
    with pytest.raises(ValueError, match="no pv number 0 at bus 'zz'"):
        f.device_index("pv", "zz")


def test_plan_is_what_dispatch_then_follows() -> None:
    f = _fleet()
    setpoints = {"a": 0.6, "b": -1.0}
    plan = f.plan(0, setpoints)
    assert plan.sum() == pytest.approx(sum(setpoints.values()))
    out = f.dispatch(0, setpoints, {"a": 20.0, "b": 20.0})
    assert out.actual_mw.sum() == pytest.approx(plan.sum())
    # the same plan is used: per-bus totals match per-device plan sums
    assert out.actual_by_bus()["a"] == pytest.approx(plan[0] + plan[3])


def test_measured_reading_replaces_the_model_and_carries_its_soc() -> None:
    f = _fleet()
    setpoints = {"a": 0.5, "b": 0.0}
    plan = f.plan(0, setpoints)
    i = f.device_index("battery", "a")
    out = f.dispatch(0, setpoints, {}, measured={i: DeviceReading(0.2, 0.61)})
    assert out.actual_by_bus()["a"] == pytest.approx(plan[0] + plan[3] - plan[i] + 0.2)
    assert out.by_type["battery"].actual_mw[0] == pytest.approx(0.2)
    assert f.battery_soc[0] == pytest.approx(0.61)


def test_reading_without_soc_integrates_the_measured_power() -> None:
    f = _fleet()
    i = f.device_index("battery", "a")
    f.dispatch(0, {"a": 0.0, "b": 0.0}, {}, measured={i: DeviceReading(0.4, None)})
    eta1 = math.sqrt(0.9)
    assert f.battery_soc[0] == pytest.approx((0.5 * 4.0 + 0.4 * eta1 * 300 / 3600) / 4.0)


def test_unavailable_device_offers_nothing_until_back() -> None:
    f = _fleet()
    for t in range(NOON):  # to midday, where PV offers too
        f.dispatch(t, {b: c.base_mw for b, c in f.bids(t).items()}, {})
    before = f.bids(NOON)["b"]
    i = f.device_index("battery", "b", 1)  # 2 MW of the 2.5 MW of batteries at b
    f.set_available(i, False)
    without = f.bids(NOON)["b"]
    assert without.max_mw - without.min_mw < before.max_mw - before.min_mw - 1.0
    for level in (without.min_mw, without.max_mw):  # dispatched at zero, whatever the set-point
        assert f.plan(NOON, {"a": 0.0, "b": level})[i] == 0.0
    f.set_available(i, True)
    again = f.bids(NOON)["b"]
    assert again.max_mw - again.min_mw == pytest.approx(before.max_mw - before.min_mw)


def test_measured_values_are_validated() -> None:
    f = _fleet()
    with pytest.raises(ValueError, match="range"):
        f.dispatch(0, {"a": 0.0, "b": 0.0}, {}, measured={0: DeviceReading(math.nan)})
    with pytest.raises(ValueError, match="outside"):
        f.dispatch(0, {"a": 0.0, "b": 0.0}, {}, measured={99: DeviceReading(0.0)})


def test_device_range_is_what_the_device_can_do_and_bounds_readings() -> None:
    f = _fleet()
    bat, pv = f.device_index("battery", "a"), f.device_index("pv", "a")
    # a 1 MW / 4 MWh battery half full: full power both ways; PV at midnight: nothing
    assert f.device_range(0, bat) == pytest.approx((-1.0, 1.0))
    assert f.device_range(0, pv) == (0.0, 0.0)
    with pytest.raises(ValueError, match=r"device 0 must lie in its range \[-1, 1\]"):
        f.dispatch(0, {"a": 0.0, "b": 0.0}, {}, measured={bat: DeviceReading(1.5)})
    with pytest.raises(ValueError, match="soc of device 0"):
        f.dispatch(0, {"a": 0.0, "b": 0.0}, {}, measured={bat: DeviceReading(0.5, 1.2)})
    for t in range(NOON):
        f.dispatch(t, {b: c.base_mw for b, c in f.bids(t).items()}, {})
    lo, hi = f.device_range(NOON, pv)
    assert hi == 0.0 and -1.0 <= lo < -0.1  # production up to what the sun gives, never demand
    # withdrawing the device (unavailable) does not change what it physically can do
    f.set_available(bat, False)
    assert f.device_range(NOON, bat)[1] > 0.1
