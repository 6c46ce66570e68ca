"""Plausibility of device measurements and the policies applied to them
(federates/hil/plausibility.py, loop.py): every implausible case of issue 15
flagged with its reason, clipped or treated as missing, and nothing absurd
ever reaching the simulation."""

from __future__ import annotations

import math

import pytest

from dsosim.federates.common.config import HilConfig, HilDeviceConfig
from dsosim.federates.hil.gateway import Exchange
from dsosim.federates.hil.loop import Bounds, HardwareLoop
from dsosim.federates.hil.plausibility import Accepted, Envelope, Tolerances, check
from dsosim.federates.hil.protocol import Measurement

TOL = Tolerances(power=0.05, soc=0.02)
H = 5 / 60  # a 5-minute interval, hours
# a 5 kW / 20 kWh battery standing for 166 kW / 664 kWh, SOC limits 0.1..0.9, 90 % round trip
BAT = Envelope("battery", 5.0, -5.0, 5.0, 20.0, 0.1, 0.9, 0.9)
PV_NIGHT = Envelope("pv", 3.0, 0.0, 0.0)
PV_DAY = Envelope("pv", 3.0, -2.0, 0.0)


def _check(env: Envelope, p: float, soc: float | None = None, previous=None):
    return check(env, p, soc, interval=10, interval_h=H, previous=previous, tol=TOL)


def test_power_within_rating_and_tolerance_is_plausible_and_clipped_to_the_range() -> None:
    v = _check(BAT, 5.2, 0.5)  # 4 % over the rating: noise, used at the bound
    assert v.plausible and v.p_kw == 5.0 and v.soc == 0.5
    v = _check(BAT, -3.1, 0.5)
    assert v.plausible and v.p_kw == -3.1


@pytest.mark.parametrize(
    ("p", "words"),
    [
        (100.0, "power 100 kW beyond the rating 5 kW"),  # W/kW firmware confusion
        (7.5, "power 7.5 kW beyond the rating 5 kW"),  # 1.5x the rating
        (1e8, "power 1e+08 kW beyond the rating 5 kW"),
    ],
)
def test_battery_power_beyond_its_rating_is_implausible(p: float, words: str) -> None:
    v = _check(BAT, p, 0.5)
    assert not v.plausible and words in v.reason
    assert v.p_kw == 5.0  # the physical bound, if the policy clips


def test_battery_power_beyond_what_its_soc_allows_is_used_clipped() -> None:
    # instantaneous power within the rating is possible (still ramping down from the
    # last set-point); over the interval the state of charge bounds the average
    nearly_full = Envelope("battery", 5.0, -5.0, 0.4, 20.0, 0.1, 0.9, 0.9)
    v = _check(nearly_full, 4.0, 0.89)
    assert v.plausible and v.p_kw == 0.4


def test_pv_at_night_producing_megawatts_or_consuming_is_implausible() -> None:
    v = _check(PV_NIGHT, -12100.0)
    assert "beyond the rating 3 kW" in v.reason
    assert "outside the simulated available power [0, 0] kW" in v.reason
    assert v.p_kw == 0.0
    v = _check(PV_DAY, 2.0)
    assert v.reason == "PV consuming 2 kW (a PV system only produces)" and v.p_kw == 0.0
    assert _check(PV_DAY, 0.1).plausible  # standby draw within 5 % of the rating
    v = _check(PV_DAY, -2.5)  # more than the simulated sun gives
    assert "available power [-2, 0]" in v.reason and v.p_kw == -2.0
    assert _check(PV_DAY, -2.1).plausible  # within 0.15 kW


def test_soc_outside_0_1_and_outside_the_simulated_limits() -> None:
    v = _check(BAT, 0.0, 1.3)
    assert v.reason == "state of charge 1.3 outside 0..1" and v.soc == 0.9
    v = _check(BAT, 0.0, 0.95)
    assert "outside the simulated limits 0.1..0.9" in v.reason and v.soc == 0.9
    v = _check(BAT, 0.0, 0.9189)  # within the 0.02 tolerance: used at the limit
    assert v.plausible and v.soc == 0.9


def test_soc_jump_the_power_cannot_explain_is_implausible() -> None:
    previous = Accepted(9, 2.0, 0.54)
    v = _check(BAT, 2.0, 0.90, previous)  # 0.36 of 20 kWh in 5 min at 2 kW
    assert "moved 0.5400 -> 0.9000 (+0.3600) since interval 9" in v.reason
    explained = 2.0 * math.sqrt(0.9) * H / 20.0  # 0.0079
    assert f"+{explained:.4f}..+{explained:.4f}" in v.reason
    assert v.soc == pytest.approx(0.54 + explained)  # clipped to what the power explains
    # what the power explains, within the tolerance, is plausible
    assert _check(BAT, 2.0, 0.54 + explained + 0.015, previous).plausible
    # discharging loses 1/sqrt(eta) of the grid energy from storage
    d = -4.0 / math.sqrt(0.9) * H / 20.0
    assert _check(BAT, -4.0, 0.54 + d, Accepted(9, -4.0, 0.54)).plausible
    assert not _check(BAT, -4.0, 0.54 + d - 0.03, Accepted(9, -4.0, 0.54)).plausible


def test_after_missed_readings_the_whole_rating_explains_the_change() -> None:
    previous = Accepted(6, 0.0, 0.5)  # four intervals ago
    most = 5.0 * math.sqrt(0.9) * 4 * H / 20.0  # 0.0791
    assert _check(BAT, 0.0, 0.5 + most, previous).plausible
    assert not _check(BAT, 0.0, 0.5 + most + 0.05, previous).plausible


def test_a_federation_running_late_does_not_make_the_device_implausible() -> None:
    """Readings 3 intervals apart on the wall clock (the federation fell
    behind real time; the device stayed at its set-point): the energy it
    stored in that time is explained, and the state of charge is taken as
    read. Without the elapsed time (or with readings on time) the same change
    is flagged, as before."""
    previous = Accepted(9, 5.0, 0.5, 5.0)
    moved = 5.0 * math.sqrt(0.9) * 3 * H / 20.0  # 0.0593: beyond 0.0198 + 0.02
    late = check(
        BAT,
        5.0,
        0.5 + moved,
        interval=10,
        interval_h=H,
        previous=previous,
        tol=TOL,
        setpoint_kw=5.0,
        elapsed_h=3 * H,
    )
    assert late.plausible and late.soc == pytest.approx(0.5 + moved)
    assert not _check(BAT, 5.0, 0.5 + moved, previous).plausible
    on_time = check(
        BAT,
        5.0,
        0.5 + moved,
        interval=10,
        interval_h=H,
        previous=previous,
        tol=TOL,
        setpoint_kw=5.0,
        elapsed_h=1.02 * H,
    )
    assert not on_time.plausible and "h between the readings" not in on_time.reason
    # a reading soon after a late one: less time passed, less energy moved
    soon = 5.0 * math.sqrt(0.9) * 0.4 * H / 20.0
    early = check(
        BAT,
        5.0,
        0.5 + soon - 0.021,
        interval=10,
        interval_h=H,
        previous=previous,
        tol=TOL,
        setpoint_kw=5.0,
        elapsed_h=0.4 * H,
    )
    assert not early.plausible  # still beyond what even 0.4 intervals explain
    assert "0.03333 h between the readings, not 0.08333" in early.reason
    assert check(
        BAT,
        5.0,
        0.5 + soon,
        interval=10,
        interval_h=H,
        previous=previous,
        tol=TOL,
        setpoint_kw=5.0,
        elapsed_h=0.4 * H,
    ).plausible


def test_the_loop_takes_the_time_between_readings_from_the_gateway_clock() -> None:
    """300 simulated seconds per wall second: readings 3 s apart are 3
    intervals apart for the device; without the time scale the loop judges
    over the interval, as before."""
    moved_kw = 5.0 * 3 * H  # kWh at the device's scale in 3 intervals
    soc_after = 0.5 + moved_kw * math.sqrt(0.9) / (664.0 * 5.0 / 166.0)
    timed = _loop("missing", time_scale=300.0)
    timed.resolve("bat1", 0, 5.0, RANGE, *_answer(5.0, 0.5), read_wall_s=10.0)
    late = timed.resolve("bat1", 1, 5.0, RANGE, *_answer(5.0, soc_after, 2), read_wall_s=13.0)
    assert late.status == "ok", late.reason
    untimed = _loop("missing")
    untimed.resolve("bat1", 0, 5.0, RANGE, *_answer(5.0, 0.5), read_wall_s=10.0)
    flagged = untimed.resolve("bat1", 1, 5.0, RANGE, *_answer(5.0, soc_after, 2), read_wall_s=13.0)
    assert flagged.status == "implausible"


def _loop(
    implausible: str, fallback: str = "hold", time_scale: float | None = None
) -> HardwareLoop:
    hil = HilConfig(
        fallback=fallback,
        implausible=implausible,
        devices=(
            HilDeviceConfig(
                id="bat1",
                aggregator="agg",
                kind="battery",
                bus="634",
                rated_kw=5.0,
                sim_rated_kw=166.0,
                sim_capacity_kwh=664.0,
                soc_init=0.5,
                soc_min=0.1,
                soc_max=0.9,
                efficiency=0.9,
            ),
        ),
    )
    return HardwareLoop(hil, 300.0, time_scale)


def _answer(p: float, soc: float | None, seq: int = 1) -> tuple[Exchange, Exchange]:
    m = Measurement("bat1", seq, p, soc, "ok")
    return Exchange("bat1", "ok", 0.5, m), Exchange("bat1", "ok", 0.4, m)


RANGE = Bounds(-0.166, 0.166)


@pytest.mark.parametrize("absurd", [100.0, 1e8, -1e9])
def test_missing_policy_discards_the_reading_and_holds_the_last_plausible(absurd: float) -> None:
    loop = _loop("missing")
    good = loop.resolve("bat1", 0, 2.0, RANGE, *_answer(2.0, 0.5))
    assert good.status == "ok" and good.used_mw == pytest.approx(2.0 / 5.0 * 0.166)
    bad = loop.resolve("bat1", 1, 2.0, RANGE, *_answer(absurd, 0.5, 2))
    assert (bad.status, bad.fallback) == ("implausible", "hold")
    assert "beyond the rating 5 kW" in (bad.reason or "")
    assert bad.measured_kw == absurd  # the raw answer stays in the table
    assert bad.used_mw == good.used_mw and bad.used_soc is None
    # the hold never re-uses an absurd value, and follows the range (here: a full battery)
    full = Bounds(-0.166, 0.0)
    again = loop.resolve("bat1", 2, 2.0, full, *_answer(absurd, 0.5, 3))
    assert again.used_mw == 0.0


def test_clip_policy_uses_the_physical_bound_and_flags_it() -> None:
    loop = _loop("clip")
    step = loop.resolve("bat1", 0, 5.0, RANGE, *_answer(100.0, 1.3))
    assert (step.status, step.fallback) == ("implausible", "clip")
    assert "beyond the rating" in (step.reason or "") and "outside 0..1" in (step.reason or "")
    assert step.used_mw == pytest.approx(0.166) and step.used_soc == 0.9


def test_unavailable_fallback_for_an_implausible_reading_is_zero() -> None:
    loop = _loop("missing", "unavailable")
    step = loop.resolve("bat1", 0, 2.0, RANGE, *_answer(-1e8, 0.5))
    assert (step.status, step.fallback, step.used_mw) == ("implausible", "unavailable", 0.0)
    assert step.unavailable


def test_soc_jump_policy_missing_keeps_the_previous_accepted_reading() -> None:
    loop = _loop("missing")
    loop.resolve("bat1", 0, 2.0, RANGE, *_answer(2.0, 0.54))
    jump = loop.resolve("bat1", 1, 2.0, RANGE, *_answer(2.0, 0.90, 2))
    assert jump.status == "implausible" and "state of charge moved" in (jump.reason or "")
    # the next reading is checked against the last accepted one (two intervals back)
    after = loop.resolve("bat1", 2, 2.0, RANGE, *_answer(2.0, 0.55, 3))
    assert after.status == "ok" and after.used_soc == 0.55


def test_no_answer_has_a_reason() -> None:
    loop = _loop("missing")
    none = Exchange("bat1", "timeout", None, None)
    step = loop.resolve("bat1", 0, 2.0, RANGE, Exchange("bat1", "ok", 0.3, None), none)
    assert (step.status, step.reason, step.used_mw) == ("timeout", "no answer in time", None)


def test_a_read_back_caught_mid_ramp_is_explained_by_the_set_points() -> None:
    # read 0.1 s after the set-point the device was still ramping to 5 kW (reading 1 kW),
    # then held 5 kW until the next set-point: the set-points bound the energy
    previous = Accepted(9, 1.0, 0.50, 5.0)
    held = 5.0 * math.sqrt(0.9) * H / 20.0  # 0.0198
    v = check(
        BAT,
        0.0,
        0.50 + held,
        interval=10,
        interval_h=H,
        previous=previous,
        tol=TOL,
        setpoint_kw=0.0,
    )
    assert v.plausible, v.reason
    without = _check(BAT, 0.0, 0.50 + held + 0.03, Accepted(9, 1.0, 0.50))
    assert "the power (1 -> 0 kW) explains" in without.reason
