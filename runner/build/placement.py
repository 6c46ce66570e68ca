"""Place an aggregator's DER fleet on a feeder, seeded, as plain JSON.

Two ways to size a fleet, which can be combined (docs/ders.md):

* **shares of bus load** (the ``*_share`` fields): each bus the aggregator
  serves gets one device of each type sized relative to the bus's peak load,
  with a seeded +-20 % spread so that buses differ: PV rated ``pv_share`` x
  bus load, a battery of ``battery_share`` x bus load with ``battery_hours``
  of storage, a curtailable load of ``flex_share`` x bus load (half of it
  curtailable at ``flex_value``), and an inflexible load of
  ``inflexible_share`` x bus load (residential or, for ``commercial_share``
  of the buses, commercial shape). These loads and devices are *additional*
  to the feeder model's own loads, which stay with the DSO.
* **homes** (``[homes]``): homes per bus = bus peak load / ``home_peak_kw``
  (times ``enrolled``), then penetration shares of homes with PV, a battery,
  an EV, an air conditioner or heat pump and a water heater, every device's
  parameters drawn from seeded distributions
  (``federates.aggregator.population``).

The sky the fleet needs (PV orientations, and the outdoor air for
thermostats) is computed here with pvlib, once, and written into the spec,
so the aggregator federate does not import pvlib. Clouds and temperatures
are seeded per LDA: fleets on one feeder share their weather.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dsosim.federates.aggregator.population import HomeMix, home_devices, homes_per_bus
from dsosim.federates.aggregator.solar import read_profile, sky_table
from dsosim.federates.aggregator.spec_json import fleet_to_json
from dsosim.federates.aggregator.specs import (
    BatterySpec,
    FleetSpec,
    FlexLoadSpec,
    InflexibleLoadSpec,
    PvSpec,
    SiteSpec,
    SkyTable,
)
from dsosim.federates.dso.feeder import Feeder
from dsosim.runner.build.scenario import Aggregator, ScenarioError

SPREAD = 0.2
"""Relative +- spread of load-share device sizes between buses."""
WEATHER_DIR = Path(__file__).resolve().parents[2] / "configs" / "weather"
"""Shipped measured weather profiles, named by file stem."""


def bus_peak_loads(feeder_master: Path) -> dict[str, float]:
    """Peak load per bus (MW, sum of the feeder's loads there)."""
    feeder = Feeder(feeder_master, name="placement")
    loads: dict[str, float] = {}
    for load in feeder.loads:
        loads[load.bus] = loads.get(load.bus, 0.0) + load.kw / 1000.0
    return loads


def place_fleet(
    feeder_master: Path,
    agg: Aggregator,
    *,
    seed: int,
    lda: str,
    loads: dict[str, float] | None = None,
    load_forecast: tuple[float, ...] | None = None,
) -> dict[str, Any]:
    """The aggregator's fleet as ``FleetSpec`` fields (JSON-ready), and its buses.
    ``load_forecast``: the ISO's published daily system load shape, which
    shapes the fleet's price prior (``FleetSpec``)."""
    loads = bus_peak_loads(feeder_master) if loads is None else loads
    where = f"ldas[{lda}].aggregators[{agg.name}]"
    buses = sorted(agg.buses) if agg.buses else sorted(b for b, mw in loads.items() if mw > 0)
    unknown = [b for b in buses if b not in loads]
    if unknown:
        raise ScenarioError(
            f"{where}.buses: {unknown} carry no load on the feeder; load buses are {sorted(loads)}"
        )
    rng = np.random.default_rng([seed, zlib.crc32(lda.encode()), zlib.crc32(agg.name.encode())])
    site = _site(agg, where)
    batteries, pvs, flex, inflexible = _load_share_devices(agg, buses, loads, rng)
    fields: dict[str, Any] = {}
    if agg.homes is not None:
        h = agg.homes
        stray = sorted(set(h.counts) - set(buses))
        if stray:
            raise ScenarioError(f"{where}.homes.counts: {stray} are not buses it serves ({buses})")
        try:
            mix = HomeMix(**h.model_dump(exclude={"override_probability"}))
        except ValueError as exc:
            raise ScenarioError(f"{where}.homes: {exc}") from None
        homes = homes_per_bus(loads, buses, mix)
        got = home_devices(homes, mix, site, rng)
        pvs += got.pvs
        batteries += got.batteries
        fields.update(
            evs=tuple(got.evs),
            hvacs=tuple(got.hvacs),
            water_heaters=tuple(got.water_heaters),
            override_probability=h.override_probability,
        )
    spec = FleetSpec(
        batteries=tuple(batteries),
        pvs=tuple(pvs),
        flex_loads=tuple(flex),
        inflexible_loads=tuple(inflexible),
        site=site,
        response_error=agg.response_error,
        max_blocks=agg.max_blocks,
        weather_seed=zlib.crc32(f"{seed}:{lda}".encode()),
        load_forecast=load_forecast,
        **fields,
    )
    spec = _with_sky(spec, where)
    # its locations are the buses where it has devices (a small bus may round to none;
    # the build may still hand it a feeder's own DERs, see ``runner.existing_ders``)
    return {"buses": sorted({d.bus for d in spec.devices()}), "spec": fleet_to_json(spec)}


def _load_share_devices(
    agg: Aggregator,
    buses: list[str],
    loads: dict[str, float],
    rng: np.random.Generator,
) -> tuple[list[BatterySpec], list[PvSpec], list[FlexLoadSpec], list[InflexibleLoadSpec]]:
    spread = rng.uniform(1 - SPREAD, 1 + SPREAD, size=(len(buses), 3))
    commercial = rng.random(len(buses)) < agg.commercial_share
    batteries: list[BatterySpec] = []
    pvs: list[PvSpec] = []
    flex: list[FlexLoadSpec] = []
    inflexible: list[InflexibleLoadSpec] = []
    for bus, u, com in zip(buses, spread, commercial, strict=True):
        load = loads[bus]
        if agg.pv_share > 0:
            pvs.append(PvSpec(bus=bus, rating_mw=round(agg.pv_share * load * u[0], 6)))
        if agg.battery_share > 0:
            power = round(agg.battery_share * load * u[1], 6)
            batteries.append(
                BatterySpec(
                    bus=bus,
                    power_mw=power,
                    energy_mwh=round(power * agg.battery_hours, 6),
                    efficiency=agg.battery_efficiency,
                )
            )
        if agg.flex_share > 0:
            flex.append(
                FlexLoadSpec(
                    bus=bus,
                    peak_mw=round(agg.flex_share * load * u[2], 6),
                    value_per_mwh=agg.flex_value,
                    curtailable_share=0.5,
                )
            )
        if agg.inflexible_share > 0:
            inflexible.append(
                InflexibleLoadSpec(
                    bus=bus,
                    peak_mw=round(agg.inflexible_share * load, 6),
                    shape="commercial" if com else "residential",
                    shift_h=round(float(rng.uniform(-0.5, 0.5)), 3),
                )
            )
    return batteries, pvs, flex, inflexible


def _site(agg: Aggregator, where: str) -> SiteSpec:
    w = agg.weather.model_dump()
    if w["profile"] is not None:
        path = _profile_path(w["profile"], where)
        w["profile"] = str(path)
        try:  # the measured day's extremes (thermostats are sized to them)
            temp = read_profile(path)[-1]
        except ValueError as exc:
            raise ScenarioError(f"{where}.weather.profile: {exc}") from None
        w["temp_min_c"], w["temp_max_c"] = float(temp.min()), float(temp.max())
    try:
        return SiteSpec(**w)
    except ValueError as exc:
        raise ScenarioError(f"{where}.weather: {exc}") from None


def _profile_path(name: str, where: str) -> Path:
    path = Path(name)
    if not path.is_absolute():
        path = WEATHER_DIR / (name if name.endswith(".csv") else f"{name}.csv")
    if not path.is_file():
        shipped = sorted(p.stem for p in WEATHER_DIR.glob("*.csv"))
        raise ScenarioError(
            f"{where}.weather.profile: {name!r} is neither a shipped profile "
            f"({', '.join(shipped)}) nor an absolute path to a CSV file"
        )
    return path


def _with_sky(spec: FleetSpec, where: str) -> FleetSpec:
    """The spec with its precomputed sky (and the profile named portably)."""
    # "south" always: PV systems added to the fleet later in the build (a
    # feeder's own, see ``existing_ders``) have the default orientation.
    orientations = sorted(
        {p.orientation for p in spec.pvs if p.profile is None}
        | ({"flat"} if spec.hvacs else set())
        | {"south"}
    )
    try:
        sky: SkyTable = sky_table(spec.site, orientations)
    except ValueError as exc:
        raise ScenarioError(f"{where}.weather: {exc}") from None
    site = spec.site
    if site.profile is not None:  # keep the name, not a machine path, in the config
        stem = Path(site.profile).stem
        site = replace(site, profile=stem)
    return replace(spec, sky=sky, site=site)
