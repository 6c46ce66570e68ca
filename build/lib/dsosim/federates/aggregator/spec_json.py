"""A ``FleetSpec`` to and from plain JSON data (the federation config).

Each device is a dict of its fields, leaving out the fields at their
default (a home's device costs a few numbers; a thousand devices stay
around 100 kB). Other build steps may append devices to these lists
(``runner.existing_ders``). Unknown fields raise ``TypeError`` naming them.
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
    SiteSpec,
    SkyTable,
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
    """Rebuild a spec from :func:`fleet_to_json` data."""
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in DEVICES:
            kwargs[key] = _devices(DEVICES[key], value)
        elif key == "site":
            kwargs[key] = SiteSpec(**value)
        elif key == "sky":
            kwargs[key] = None if value is None else SkyTable(**value)
        else:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    return FleetSpec(**kwargs)


def _device(device: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(device):
        value = getattr(device, f.name)
        if f.default is MISSING or value != f.default:
            out[f.name] = _plain(value)
    return out


def _devices(cls: type, value: Any) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise TypeError(f"{cls.__name__}: expected a list of devices, got {type(value).__name__}")
    return tuple(cls(**_tuples(d)) for d in value)


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
