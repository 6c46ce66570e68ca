"""A ``FleetSpec`` to and from plain JSON data (the federation config).

Each device is a dict of its fields, leaving out the fields at their
default (a home's device costs a few numbers; a thousand devices stay
around 100 kB). Other build steps may append devices to these lists
(``runner.existing_ders``). Unknown fields raise ``ValueError`` naming them.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, fields
from typing import Any

from dsosim.federates.aggregator.specs import (
    BatterySpec,
    EvSpec,
    FleetSpec,
    FlexLoadSpec,
    HvacSpec,
    InflexibleLoadSpec,
    PvSpec,
    ShiftableLoadSpec,
    WaterHeaterSpec,
)

DEVICES: dict[str, type] = {
    "batteries": BatterySpec,
    "pvs": PvSpec,
    "evs": EvSpec,
    "hvacs": HvacSpec,
    "water_heaters": WaterHeaterSpec,
    "inflexible_loads": InflexibleLoadSpec,
    "flex_loads": FlexLoadSpec,
    "shiftable_loads": ShiftableLoadSpec,
}


def fleet_to_json(spec: FleetSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(spec):
        value = getattr(spec, f.name)
        if f.name in DEVICES:
            if value:
                out[f.name] = [_device(d) for d in value]
        elif f.name in ("site", "sky"):
            out[f.name] = None if value is None else _plain(asdict(value))
        else:
            out[f.name] = _plain(value)
    return out


def fleet_from_json(data: dict[str, Any]) -> FleetSpec:
    """Rebuild a spec from :func:`fleet_to_json` data (validated by the specs
    themselves: lists become tuples, unknown fields are refused by name)."""
    if not isinstance(data, dict):
        raise ValueError(f"a fleet spec must be a JSON object, got {type(data).__name__}")
    return FleetSpec(**data)


def _device(device: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(device):
        value = getattr(device, f.name)
        if f.default is MISSING or value != f.default:
            out[f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
