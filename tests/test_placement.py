"""Placing fleets on the shipped feeder: load shares, homes and penetration
shares, seeding, weather, errors that name the field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsosim.federates.aggregator.fleet import Fleet
from dsosim.federates.aggregator.spec_json import fleet_from_json
from dsosim.runner.build.placement import bus_peak_loads, place_fleet
from dsosim.runner.build.scenario import Aggregator, ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[1]
FEEDER = ROOT / "configs" / "feeders" / "ieee13" / "Master.dss"
LOADS = bus_peak_loads(FEEDER)
HOMES = {"pv": 0.3, "battery": 0.1, "ev": 0.2, "v2g": 0.25, "hvac": 0.5, "water_heater": 0.3}


def _place(seed: int = 7, lda: str = "lda", **fields) -> dict:
    fields.setdefault("name", "agg")
    return place_fleet(FEEDER, Aggregator(**fields), seed=seed, lda=lda, loads=LOADS)


def _count(spec: dict, kind: str, bus: str) -> int:
    return sum(1 for d in spec.get(kind, []) if d["bus"] == bus)


def test_homes_follow_bus_load_and_penetration_shares() -> None:
    placed = _place(homes={**HOMES, "home_peak_kw": 4.0, "enrolled": 0.5})
    spec = placed["spec"]
    for bus, peak_mw in LOADS.items():
        homes = round(peak_mw * 1000 / 4.0 * 0.5)
        assert _count(spec, "pvs", bus) == round(0.3 * homes)
        assert _count(spec, "batteries", bus) == round(0.1 * homes)
        assert _count(spec, "evs", bus) == round(0.2 * homes)
        assert _count(spec, "hvacs", bus) == round(0.5 * homes)
        assert _count(spec, "water_heaters", bus) == round(0.3 * homes)
    v2g = sum(1 for e in spec["evs"] if e.get("discharge_mw", 0) > 0)
    assert 0.1 < v2g / len(spec["evs"]) < 0.4
    # homes replace the load-share devices unless those are asked for explicitly
    assert "flex_loads" not in spec
    assert placed["buses"] == sorted(LOADS)


def test_explicit_counts_and_shares_add_up() -> None:
    spec = _place(
        buses=["675", "611"], homes={"ev": 0.5, "counts": {"611": 10}}, battery_share=0.3
    )["spec"]
    assert _count(spec, "evs", "611") == 5  # half of the 10 given homes
    assert _count(spec, "evs", "675") == round(0.5 * round(843 / 4.0))
    assert _count(spec, "batteries", "675") == 1  # the explicit community battery per bus
    with pytest.raises(ScenarioError, match=r"homes\.counts.*'650'"):
        _place(buses=["675"], homes={"counts": {"650": 3}})


def test_placement_is_seeded_and_independent_of_bus_order() -> None:
    a = _place(homes=HOMES)
    assert a == _place(homes=HOMES, buses=sorted(LOADS, reverse=True))
    assert a != _place(seed=8, homes=HOMES)
    assert a != _place(name="other", homes=HOMES)
    caps = np.array([e["capacity_mwh"] for e in a["spec"]["evs"]])
    assert 0.04 <= caps.min() and caps.max() <= 0.08  # drawn from the documented range


def test_load_share_sizing_keeps_quickstart_semantics() -> None:
    spec = _place(
        buses=["675", "634"], pv_share=0.6, battery_share=0.2, battery_hours=2.0, flex_share=0.05
    )["spec"]
    for d in spec["pvs"]:
        assert 0.8 * 0.6 <= d["rating_mw"] / LOADS[d["bus"]] <= 1.2 * 0.6
    for d in spec["batteries"]:
        assert d["energy_mwh"] == pytest.approx(2.0 * d["power_mw"], rel=1e-5)
    assert [d["bus"] for d in spec["flex_loads"]] == ["634", "675"]
    assert "inflexible_loads" not in spec and "evs" not in spec


def test_inflexible_load_behind_the_meters_is_a_share_of_bus_peak() -> None:
    spec = _place(
        inflexible_share=0.1, commercial_share=1.0, pv_share=0.0, battery_share=0.0, flex_share=0.0
    )["spec"]
    got = {d["bus"]: d for d in spec["inflexible_loads"]}
    assert set(got) == set(LOADS)
    assert all(got[b]["peak_mw"] == pytest.approx(0.1 * LOADS[b], abs=1e-6) for b in LOADS)
    assert all(d["shape"] == "commercial" for d in got.values())


def test_weather_is_shared_on_a_feeder_and_the_sky_is_precomputed() -> None:
    a = _place(name="a", homes=HOMES)["spec"]
    b = _place(name="b", homes=HOMES)["spec"]
    other = _place(name="a", lda="elsewhere", homes=HOMES)["spec"]
    assert a["weather_seed"] == b["weather_seed"] != other["weather_seed"]
    assert set(a["sky"]["orientations"]) == {"flat", "south", "east", "west"}
    battery_only = _place(pv_share=0.0, flex_share=0.0)["spec"]
    assert battery_only["sky"]["orientations"] == ["south"]  # for PV handed over later


def test_measured_weather_profile_by_name() -> None:
    spec = _place(
        homes=HOMES,
        weather={
            "profile": "greensboro-nc-jul20",
            "latitude_deg": 36.1,
            "longitude_deg": -79.95,
            "utc_offset_h": -5,
            "day_of_year": 201,
        },
    )["spec"]
    assert spec["site"]["profile"] == "greensboro-nc-jul20"  # a name, not a machine path
    assert spec["site"]["temp_max_c"] == pytest.approx(33.9)  # the measured day's extremes
    assert spec["sky"]["clouds"] is False
    with pytest.raises(ScenarioError, match=r"weather\.profile.*greensboro-nc-jul20"):
        _place(weather={"profile": "atlantis"})


def test_a_placed_fleet_runs() -> None:
    placed = _place(homes=HOMES, inflexible_share=0.1)
    fleet = Fleet(fleet_from_json(placed["spec"]), interval_s=300.0, n_intervals=24, seed=1)
    assert fleet.buses == tuple(placed["buses"])
    for t in range(24):
        bids = fleet.bids(t)
        out = fleet.dispatch(t, {b: c.quantity_at(30.0) for b, c in bids.items()}, {})
        np.testing.assert_allclose(out.actual_mw, out.requested_mw, atol=1e-9)


def test_locations_are_the_buses_that_got_devices() -> None:
    assert _place(pv_share=0.0, battery_share=0.0, flex_share=0.0)["buses"] == []
    few = _place(homes={"ev": 0.2, "counts": {"611": 2, "675": 20}}, buses=["611", "675"])
    assert few["buses"] == ["675"]  # 0.2 x 2 homes rounds to no EV at 611


def test_all_ders_scenario_has_every_device_type() -> None:
    scenario, _ = load_scenario(ROOT / "configs" / "scenarios" / "all-ders.toml")
    kinds = set()
    for agg in scenario.ldas[0].aggregators:
        spec = place_fleet(FEEDER, agg, seed=scenario.seed, lda="lda5", loads=LOADS)["spec"]
        kinds |= {
            k
            for k in ("batteries", "pvs", "evs", "hvacs", "water_heaters", "inflexible_loads")
            if spec.get(k)
        }
    assert kinds == {"batteries", "pvs", "evs", "hvacs", "water_heaters", "inflexible_loads"}
