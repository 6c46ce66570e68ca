"""A ``FleetSpec`` to and from plain JSON data (the federation config)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from dsosim.federates.aggregator.fleet import BatterySpec, FleetSpec, FlexLoadSpec, PvSpec, ShiftableLoadSpec

_DEVICES = {"batteries": BatterySpec, "pvs": PvSpec, "flex_loads": FlexLoadSpec,
            "shiftable_loads": ShiftableLoadSpec}


def fleet_to_json(spec: FleetSpec) -> dict[str, Any]:
    return _plain(asdict(spec))


def fleet_from_json(data: dict[str, Any]) -> FleetSpec:
    """Rebuild a spec; unknown fields raise ``TypeError`` naming them."""
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in _DEVICES:
            kwargs[key] = tuple(_DEVICES[key](**_tuples(d)) for d in value)
        else:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    return FleetSpec(**kwargs)


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
