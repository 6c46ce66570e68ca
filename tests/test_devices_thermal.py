"""Thermostatic loads: the ETP model against hand calculations, the comfort
band held under any dispatch inside the offer, comfort-priced bids, overrides."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsosim.federates.aggregator.fleet import Fleet
from dsosim.federates.aggregator.solar import sky_table
from dsosim.federates.aggregator.specs import (
    FleetSpec,
    HvacSpec,
    SiteSpec,
    SkyTable,
    WaterHeaterSpec,
)

DAY = 288
SITE = SiteSpec(cloudiness=0.0)
SKY = sky_table(SITE, ["flat"])
HOT = SiteSpec(cloudiness=0.0, temp_min_c=26.0, temp_max_c=36.0)  # never below any setpoint
HOT_SKY = sky_table(HOT, ["flat"])


def _night_sky(temp: float) -> SkyTable:
    """No sun, constant outdoor temperature: for hand calculations."""
    return SkyTable(
        step_s=3600.0,
        offset_s=1800.0,
        orientations=("flat",),
        poa_clear=((0.0,) * 24,),
        poa_overcast=((0.0,) * 24,),
        temp_air_c=(temp,) * 24,
        clouds=False,
    )


def _fleet(
    *,
    hvacs=(),
    heaters=(),
    interval_s: float = 300.0,
    n_intervals: int = DAY,
    sky: SkyTable = SKY,
    site: SiteSpec = SITE,
    seed: int = 1,
    **spec,
) -> Fleet:
    return Fleet(
        FleetSpec(hvacs=hvacs, water_heaters=heaters, sky=sky, site=site, **spec),
        interval_s=interval_s,
        n_intervals=n_intervals,
        seed=seed,
    )


def _temps(fleet: Fleet, kind: str) -> np.ndarray:
    return fleet.group(kind).temp.copy()  # type: ignore[attr-defined]


def test_air_conditioner_follows_the_hand_calculated_etp_step() -> None:
    # R = 2 degC/kW (G = 0.5 kW/degC), C = 2 kWh/degC, 35 degC outside, 0.5 kW of
    # internal gains, COP 3, 2 kW electric for one hour from 23 degC:
    # T_eq = 35 + 0.5 / 0.5 - 3 * 2 / 0.5 = 24; a = exp(-0.5 * 1 / 2)
    # T' = 24 + (23 - 24) a = 23.22120
    ac = HvacSpec(
        "h",
        0.004,
        cop=3.0,
        r_c_per_kw=2.0,
        c_kwh_per_c=2.0,
        setpoint_c=23.0,
        band_c=1.0,
        internal_gain_kw=0.5,
        solar_gain_kw=0.0,
        t_init_c=23.0,
    )
    f = _fleet(hvacs=(ac,), interval_s=3600.0, n_intervals=2, sky=_night_sky(35.0))
    out = f.dispatch(0, {"h": 0.002}, {})
    assert out.actual_mw[0] == pytest.approx(0.002)
    assert _temps(f, "hvac")[0] == pytest.approx(24.0 - math.exp(-0.25), abs=1e-12)
    # the offer's range is exactly the power that keeps the end temperature in the band:
    # T'(P) = 24 + 6 (1 - a) ... solved for 22 and 24 degC from 23.2212 degC
    a = math.exp(-0.25)
    free = 36.0 + (24.0 - a - 36.0) * a  # end temperature without cooling
    slope = -3.0 * (1 - a) / 0.5  # degC per kW
    curve = f.bids(1)["h"]
    assert curve.min_mw * 1000 == pytest.approx((24.0 - free) / slope, abs=1e-9)
    assert curve.max_mw * 1000 == pytest.approx(min((22.0 - free) / slope, 4.0), abs=1e-9)


def test_water_heater_follows_the_hand_calculated_tank_step() -> None:
    # 190 l: C = 190 * 4.186 / 3600 = 0.220928 kWh/degC; UA 2 W/degC to a 20 degC room,
    # no draw, 4.5 kW at 98 % for 5 minutes from 50 degC:
    # T' = T_eq + (50 - T_eq) exp(-0.002 / 12 / C), T_eq = 20 + 4.41 / 0.002
    heater = WaterHeaterSpec(
        "w",
        0.0045,
        cop=0.98,
        tank_l=190.0,
        ua_w_per_c=2.0,
        draw_l_per_day=0.0,
        setpoint_c=52.0,
        band_c=4.0,
        t_init_c=50.0,
    )
    f = _fleet(heaters=(heater,), n_intervals=2)
    f.dispatch(0, {"w": 0.0045}, {})
    c = 190 * 4.186 / 3600
    t_eq = 20.0 + 4.41 / 0.002
    expected = t_eq + (50.0 - t_eq) * math.exp(-0.002 / 12.0 / c)
    assert _temps(f, "water_heater")[0] == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(51.64, abs=0.01)  # about 1.6 degC in 5 minutes


def _homes(n: int, rng: np.random.Generator) -> tuple[HvacSpec, ...]:
    return tuple(
        HvacSpec(
            f"h{i:02d}",
            float(rng.uniform(0.004, 0.006)),
            cop=float(rng.uniform(2.8, 3.6)),
            r_c_per_kw=float(rng.uniform(1.5, 3.0)),
            c_kwh_per_c=float(rng.uniform(1.5, 3.0)),
            setpoint_c=float(rng.uniform(22, 25)),
            band_c=float(rng.uniform(0.75, 1.5)),
            comfort_price=float(rng.uniform(20, 100)),
        )
        for i in range(n)
    )


def _heaters(n: int, rng: np.random.Generator) -> tuple[WaterHeaterSpec, ...]:
    return tuple(
        WaterHeaterSpec(
            f"w{i:02d}",
            tank_l=float(rng.choice([150.0, 190.0, 270.0])),
            draw_l_per_day=float(rng.uniform(100, 300)),
            draw_shift_h=float(rng.uniform(-1, 1)),
        )
        for i in range(n)
    )


@pytest.mark.parametrize("rule", ["random", "min", "max"])
def test_temperature_stays_in_band_under_any_dispatch_inside_the_offer(rule: str) -> None:
    # A hot spell: the air conditioners can always hold the band, so they must.
    rng = np.random.default_rng(5)
    f = _fleet(
        hvacs=_homes(20, rng), heaters=_heaters(20, rng), n_intervals=2 * DAY, sky=HOT_SKY, site=HOT
    )
    hv, wh = f.group("hvac"), f.group("water_heater")
    hi_temp = []
    for t in range(2 * DAY):
        bids = f.bids(t)
        u = {
            "random": rng.uniform(0, 1, len(bids)),
            "min": np.zeros(len(bids)),
            "max": np.ones(len(bids)),
        }[rule]
        out = f.dispatch(
            t,
            {b: c.min_mw + u[i] * (c.max_mw - c.min_mw) for i, (b, c) in enumerate(bids.items())},
            {},
        )
        for g in (hv, wh):
            temp = g.temp  # type: ignore[attr-defined]
            assert np.all(np.abs(temp - g.setpoint) <= g.band + 1e-9), (t, g.kind)  # type: ignore[attr-defined]
        assert out.total("hvac", "out_of_band") == 0
        hi_temp.append(float(np.mean(hv.temp - hv.setpoint)))  # type: ignore[attr-defined]
    if rule == "min":  # least cooling: homes ride at the top of their band in the afternoon
        assert max(hi_temp) > 0.8 * float(np.mean(hv.band))  # type: ignore[attr-defined]
    if rule == "max":
        assert min(hi_temp) < -0.8 * float(np.mean(hv.band))  # type: ignore[attr-defined]


def test_on_a_cool_night_the_air_conditioner_is_off_and_the_home_may_cool_below_its_band() -> None:
    ac = HvacSpec("h", 0.004, setpoint_c=24.0, band_c=1.0, t_init_c=24.0)
    f = _fleet(hvacs=(ac,), sky=_night_sky(15.0), n_intervals=36)
    for t in range(36):
        curve = f.bids(t)["h"]
        out = f.dispatch(t, {"h": 0.0}, {})
    assert curve.min_mw == curve.max_mw == 0.0  # nothing to offer: cooling would overcool
    assert out.by_type["hvac"].state["temp_max_c"][0] < 23.0  # below the band ...
    assert out.total("hvac", "out_of_band") == 0  # ... which is not a comfort violation


def test_an_undersized_air_conditioner_runs_flat_out_and_reports_the_excursion() -> None:
    weak = HvacSpec("h", 0.0005, r_c_per_kw=1.0, setpoint_c=22.0, band_c=0.5, t_init_c=22.0)
    f = _fleet(hvacs=(weak,), sky=_night_sky(40.0), n_intervals=24)
    for t in range(24):
        curve = f.bids(t)["h"]
        out = f.dispatch(t, {"h": curve.min_mw}, {})
    assert curve.min_mw == curve.max_mw == pytest.approx(0.0005)
    assert out.total("hvac", "out_of_band") == 1


def test_bids_price_the_comfort_of_the_occupant() -> None:
    def curve(t_init: float, comfort: float) -> list[tuple[float, float]]:
        ac = HvacSpec(
            "h",
            0.005,
            setpoint_c=23.0,
            band_c=1.0,
            comfort_price=comfort,
            t_init_c=t_init,
            solar_gain_kw=0.0,
        )
        f = _fleet(hvacs=(ac,), sky=_night_sky(30.0), price_prior=40.0, thermal_blocks=4)
        return list(f.bids(0)["h"].blocks)

    warm, cool = curve(23.8, 60.0), curve(22.3, 60.0)
    assert min(p for p, _ in warm) > max(p for p, _ in cool)  # warmer home pays more for power
    assert max(p for p, _ in warm) > 40.0 > min(p for p, _ in cool)
    # the premium scales with the comfort price and vanishes without one
    spread = [
        max(p for p, _ in c) - min(p for p, _ in c) for c in (curve(23.0, 30.0), curve(23.0, 90.0))
    ]
    assert spread[1] == pytest.approx(3.0 * spread[0])
    flat = [p for p, _ in curve(23.0, 0.0)]
    assert len(flat) == 1 and flat[0] == pytest.approx(40.0)  # no premium: one block at p_ref


def test_overrides_run_the_thermostat_and_show_as_deviation() -> None:
    rng = np.random.default_rng(1)
    homes = _homes(10, rng)
    f = _fleet(hvacs=homes, override_probability=1.0, sky=_night_sky(32.0), n_intervals=12)
    bids = f.bids(0)
    out = f.dispatch(0, {b: c.min_mw for b, c in bids.items()}, {})
    t_out = out.by_type["hvac"]
    assert t_out.state["overrides"].sum() == 10
    np.testing.assert_allclose(t_out.actual_mw, t_out.baseline_mw, atol=1e-15)
    assert np.abs(out.deviation_mw).sum() > 0.0  # visible in the results
    never = _fleet(hvacs=homes, override_probability=0.0, sky=_night_sky(32.0), n_intervals=12)
    out = never.dispatch(0, {b: c.min_mw for b, c in never.bids(0).items()}, {})
    assert out.by_type["hvac"].state["overrides"].sum() == 0
    np.testing.assert_allclose(out.deviation_mw, 0.0, atol=1e-15)


def test_hot_water_draws_cool_the_tank_at_breakfast_not_at_night() -> None:
    heater = WaterHeaterSpec("w", draw_l_per_day=250.0, setpoint_c=55.0, band_c=10.0, t_init_c=60.0)
    f = _fleet(heaters=(heater,))
    drop = {}
    for t in range(DAY):
        before = _temps(f, "water_heater")[0]
        f.dispatch(t, {"w": f.bids(t)["w"].min_mw}, {})
        if t in (36, 84):  # 03:00 and 07:00
            drop[t] = before - _temps(f, "water_heater")[0]
    assert drop[84] > 5 * drop[36] > 0.0
