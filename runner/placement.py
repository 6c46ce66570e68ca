"""Place an aggregator's DER fleet on a feeder from penetration shares.

Each bus the aggregator serves gets devices sized relative to the bus's peak
load, with a seeded +-20 % spread so that buses differ:

* PV rated ``pv_share`` x bus load,
* a battery of ``battery_share`` x bus load, ``battery_hours`` of storage,
* a flexible load of ``flex_share`` x bus load: *additional* controllable
  demand (heat pumps, pumping, EV depots: not carved out of the feeder's own
  loads, which stay inflexible), half of it curtailable at ``flex_value``.

The result is a plain dict (JSON) of ``FleetSpec`` fields, written into the
federation config so the placement is visible and reproducible.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from dsosim.federates.aggregator.fleet import BatterySpec, FleetSpec, FlexLoadSpec, PvSpec
from dsosim.federates.aggregator.spec_json import fleet_to_json
from dsosim.federates.dso.feeder import Feeder
from dsosim.runner.scenario import Aggregator, ScenarioError

SPREAD = 0.2
"""Relative +- spread of device sizes between buses."""


def bus_peak_loads(feeder_master: Path) -> dict[str, float]:
    """Peak load per bus (MW, sum of the feeder's loads there)."""
    feeder = Feeder(feeder_master, name="placement")
    loads: dict[str, float] = {}
    for load in feeder.loads:
        loads[load.bus] = loads.get(load.bus, 0.0) + load.kw / 1000.0
    return loads


def place_fleet(feeder_master: Path, agg: Aggregator, *, seed: int, lda: str,
                loads: dict[str, float] | None = None) -> dict[str, Any]:
    """The aggregator's fleet as ``FleetSpec`` fields (JSON-ready)."""
    loads = bus_peak_loads(feeder_master) if loads is None else loads
    buses = sorted(agg.buses) if agg.buses else sorted(b for b, mw in loads.items() if mw > 0)
    unknown = [b for b in buses if b not in loads]
    if unknown:
        raise ScenarioError(
            f"ldas[{lda}].aggregators[{agg.name}].buses: {unknown} carry no load on the feeder; "
            f"load buses are {sorted(loads)}"
        )
    rng = np.random.default_rng([seed, zlib.crc32(lda.encode()), zlib.crc32(agg.name.encode())])
    spread = rng.uniform(1 - SPREAD, 1 + SPREAD, size=(len(buses), 3))
    batteries, pvs, flex = [], [], []
    for (bus, u) in zip(buses, spread, strict=True):
        load = loads[bus]
        if agg.pv_share > 0:
            pvs.append(PvSpec(bus=bus, rating_mw=round(agg.pv_share * load * u[0], 6)))
        if agg.battery_share > 0:
            power = round(agg.battery_share * load * u[1], 6)
            batteries.append(BatterySpec(bus=bus, power_mw=power, energy_mwh=round(power * agg.battery_hours, 6),
                                         efficiency=agg.battery_efficiency))
        if agg.flex_share > 0:
            flex.append(FlexLoadSpec(bus=bus, peak_mw=round(agg.flex_share * load * u[2], 6),
                                     value_per_mwh=agg.flex_value, curtailable_share=0.5))
    spec = FleetSpec(batteries=tuple(batteries), pvs=tuple(pvs), flex_loads=tuple(flex),
                     response_error=agg.response_error)
    return {"buses": buses, "spec": fleet_to_json(spec)}
