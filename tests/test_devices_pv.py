"""PV: the numpy PVWatts/Faiman models against pvlib and a hand calculation,
clipping, curtailment, volt-var, and the weather they run in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsosim.federates.aggregator import pv
from dsosim.federates.aggregator.fleet import Fleet
from dsosim.federates.aggregator.solar import read_profile, sky_table
from dsosim.federates.aggregator.specs import FleetSpec, PvSpec, SiteSpec, SkyTable
from dsosim.federates.aggregator.weather import run_weather
from dsosim.federates.common.curves import BidCurve

DAY = 288
ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "configs" / "weather" / "greensboro-nc-jul20.csv"
CLEAR = SiteSpec(cloudiness=0.0)
SKY = sky_table(CLEAR, ["south", "east", "west", "flat"])


def _flat_sky(poa: float, temp: float) -> SkyTable:
    """A sky of constant irradiance and temperature, for hand calculations."""
    return SkyTable(
        step_s=3600.0,
        offset_s=1800.0,
        orientations=("south",),
        poa_clear=((poa,) * 24,),
        poa_overcast=((poa,) * 24,),
        temp_air_c=(temp,) * 24,
        clouds=False,
    )


def _fleet(
    *pvs: PvSpec, n_intervals: int = DAY, sky: SkyTable = SKY, site: SiteSpec = CLEAR, seed: int = 1
) -> Fleet:
    return Fleet(
        FleetSpec(pvs=pvs, sky=sky, site=site), interval_s=300.0, n_intervals=n_intervals, seed=seed
    )


def _run_to(fleet: Fleet, t: int) -> None:
    while fleet.interval < t:
        bids = fleet.bids(fleet.interval)
        fleet.dispatch(fleet.interval, {b: c.min_mw for b, c in bids.items()}, {})


def test_numpy_models_agree_with_pvlib() -> None:
    pvlib = pytest.importorskip("pvlib")
    rng = np.random.default_rng(0)
    poa = rng.uniform(0, 1200, 500)
    temp = rng.uniform(-10, 45, 500)
    pdc0 = rng.uniform(0.003, 2.0, 500)
    gamma = rng.uniform(-0.005, -0.002, 500)
    pac0 = pdc0 / rng.uniform(1.0, 1.5, 500)
    t_cell = pv.cell_temperature(poa, temp)
    np.testing.assert_allclose(t_cell, pvlib.temperature.faiman(poa, temp), rtol=1e-12)
    pdc = pv.dc_power(poa, t_cell, pdc0, gamma)
    np.testing.assert_allclose(pdc, pvlib.pvsystem.pvwatts_dc(poa, t_cell, pdc0, gamma), rtol=1e-12)
    np.testing.assert_allclose(
        pv.ac_power(pdc, pac0), pvlib.inverter.pvwatts(pdc, pac0 / pv.ETA_INV_NOM), rtol=1e-12
    )


def test_output_matches_a_hand_calculation() -> None:
    # 500 W/m2 at 20 degC, 1.2 MW DC behind a 1 MW inverter, gamma -0.4 %/degC:
    # T_cell = 20 + 500 / (25 + 6.84) = 35.7035 degC
    # P_dc = 1.2 * 0.5 * (1 - 0.004 * 10.7035) = 0.574312 MW
    # zeta = 0.574312 * 0.96 = 0.551340; eta = 0.96 / 0.9637 * (-0.0162 zeta
    #   - 0.0059 / zeta + 0.9858) = 0.962460; P_ac = 0.552752 MW
    fleet = _fleet(PvSpec("p", 1.0, dc_ac_ratio=1.2), sky=_flat_sky(500.0, 20.0))
    curve = fleet.bids(0)["p"]
    assert curve.base_mw == pytest.approx(-0.552752, abs=2e-6)
    out = fleet.dispatch(0, {"p": curve.base_mw}, {})
    state = out.by_type["pv"].state
    assert state["cell_temp_c"][0] == pytest.approx(35.7035, abs=1e-4)
    assert state["clipped_mw"][0] == pytest.approx(0.0)


def test_inverter_clips_an_oversized_array_on_bright_hours() -> None:
    fleet = _fleet(PvSpec("big", 1.0, dc_ac_ratio=1.6), PvSpec("small", 1.0, dc_ac_ratio=0.8))
    _run_to(fleet, 144)  # solar noon
    out = fleet.dispatch(144, {b: c.min_mw for b, c in fleet.bids(144).items()}, {})
    state = out.by_type["pv"].state
    big, small = fleet.buses.index("big"), fleet.buses.index("small")
    assert state["output_mw"][big] == pytest.approx(1.0)  # at the rating
    assert state["clipped_mw"][big] > 0.05
    assert 0.5 < state["output_mw"][small] < 0.8 and state["clipped_mw"][small] == 0.0


def test_clear_sky_day_has_the_sun_where_it_should_be() -> None:
    fleet = _fleet(
        PvSpec("s", 1.0), PvSpec("e", 1.0, orientation="east"), PvSpec("w", 1.0, orientation="west")
    )
    out = []
    for t in range(DAY):
        bids = fleet.bids(t)
        out.append(-np.array([bids[b].base_mw for b in fleet.buses]))
        fleet.dispatch(t, {b: c.base_mw for b, c in bids.items()}, {})
    out = np.array(out)
    hours = (np.arange(DAY) + 0.5) / 12.0
    e, s, w = (out[:, fleet.buses.index(b)] for b in ("e", "s", "w"))
    assert np.all(s[(hours < 4.5) | (hours > 19.5)] == 0.0)  # 35 N, June: night
    assert 11.0 < hours[np.argmax(s)] < 13.0  # solar time: noon
    assert hours[np.argmax(e)] < 11.0 < 13.0 < hours[np.argmax(w)]
    assert 6.0 < s.sum() / 12.0 < 9.0  # MWh a day per MW AC (1.2 MW DC): a clear June day


def test_clouds_remove_energy_and_are_seeded() -> None:
    cloudy = SiteSpec(cloudiness=0.6)

    def energy(site: SiteSpec, seed: int) -> float:
        w = run_weather(SKY, site, n_intervals=DAY, interval_s=300.0, seed=seed)
        return float(w.interval_means("south").sum())

    assert energy(cloudy, 3) < 0.85 * energy(CLEAR, 3)
    assert energy(cloudy, 3) == energy(cloudy, 3)
    assert energy(cloudy, 3) != energy(cloudy, 4)


def test_measured_profile_gives_the_measured_day() -> None:
    site = SiteSpec(
        latitude_deg=36.1,
        longitude_deg=-79.95,
        utc_offset_h=-5.0,
        day_of_year=201,
        profile=str(PROFILE),
    )
    sky = sky_table(site, ["flat"])
    assert sky.clouds is False and sky.step_s == 3600.0
    _hours, ghi, _, _, temp = read_profile(PROFILE)
    # horizontal plane: the measured global irradiance comes back (beam + diffuse on a
    # flat array; TMY components close to within a few W/m2)
    np.testing.assert_allclose(sky.poa_clear[0], ghi, rtol=0.02, atol=2.5)
    np.testing.assert_allclose(sky.temp_air_c, temp)
    w = run_weather(sky, site, n_intervals=DAY, interval_s=300.0, seed=1)
    assert w.temp_air.max() == pytest.approx(temp.max(), abs=0.5)
    mid_hour = w.interval_means("flat")[6::12]  # interval centred on each half hour
    np.testing.assert_allclose(mid_hour, ghi, atol=0.35 * ghi.max() / 12 + 1.0)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("hour,ghi,dni,dhi\n0,1,1,1\n", "header"),
        (
            "hour,ghi,dni,dhi,temp_air\n" + "".join(f"{h},0,0,0,20\n" for h in range(23)),
            "24 hourly",
        ),
        ("hour,ghi,dni,dhi,temp_air\n" + "".join(f"{h},2000,0,0,20\n" for h in range(24)), "1500"),
    ],
)
def test_bad_profiles_are_rejected_by_name(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "w.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"w\.csv.*{match}"):
        read_profile(path)


# ------------------------------------------------------ market behaviour


def test_pv_curtails_only_when_the_price_falls_below_minus_its_cost() -> None:
    profile = tuple([0.0] * 144 + [0.8] * 144)

    def fleet() -> Fleet:
        f = _fleet(PvSpec("p", 2.0, curtail_cost=10.0, profile=profile))
        _run_to(f, 150)
        return f

    f = fleet()
    curve = f.bids(f.interval)["p"]
    assert curve == BidCurve(-1.6, ((-10.0, 1.6),))
    out = f.dispatch(f.interval, {"p": curve.quantity_at(-9.0)}, {})
    assert out.total("pv", "output_mw") == pytest.approx(1.6)
    assert out.total("pv", "curtailed_mw") == pytest.approx(0.0, abs=1e-12)
    f = fleet()
    out = f.dispatch(f.interval, {"p": f.bids(f.interval)["p"].quantity_at(-11.0)}, {})
    assert out.total("pv", "output_mw") == pytest.approx(0.0)
    assert out.total("pv", "curtailed_mw") == pytest.approx(1.6)


def test_pv_without_light_bids_nothing() -> None:
    assert _fleet(PvSpec("p", 2.0)).bids(0)["p"] == BidCurve(0.0)  # midnight


def test_non_curtailable_pv_cannot_be_turned_down_and_the_deviation_is_reported() -> None:
    f = _fleet(PvSpec("p", 2.0, curtailable=False, profile=(0.5,) * 4), n_intervals=4)
    out = f.dispatch(0, {"p": 0.0}, {})
    assert out.target_mw[0] == pytest.approx(-1.0)
    assert out.actual_mw[0] == pytest.approx(-1.0)
    assert out.deviation_mw[0] == pytest.approx(-1.0)


def test_volt_var_follows_the_1547_curve_with_reactive_priority() -> None:
    assert pv.volt_var(np.array([0.90, 0.95, 1.0, 1.05, 1.10])).tolist() == pytest.approx(
        [0.44, 0.22, 0.0, -0.22, -0.44]
    )
    f = _fleet(
        PvSpec("a", 1.0, volt_var=True, profile=(0.99,) * 4),
        PvSpec("b", 1.0, profile=(0.99,) * 4),
        n_intervals=4,
    )
    assert f.bids(0)["a"].base_mw == pytest.approx(-0.99)  # 1.0 pu: no reactive power
    f.set_voltages({"a": 1.08, "b": 1.08})
    curve = f.bids(0)
    assert curve["a"].base_mw == pytest.approx(-np.sqrt(1 - 0.44**2))  # 0.898: kVA-limited
    assert curve["b"].base_mw == pytest.approx(-0.99)  # no volt-var
    out = f.dispatch(0, {b: c.base_mw for b, c in curve.items()}, {})
    q = out.by_type["pv"].state["q_mvar"]
    assert q.tolist() == pytest.approx([-0.44, 0.0])  # absorbing at high voltage
