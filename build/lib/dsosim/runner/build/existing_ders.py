"""Hand a feeder's own PV systems and storage to an aggregator.

A utility's feeder model often already holds PV systems and storage elements.
When a scenario names an aggregator in ``ldas.existing_ders_to``, build

1. turns each enabled ``PVSystem`` / ``Storage`` element into a device of
   that aggregator's fleet at the same bus (:func:`fleet_devices`, merged by
   :func:`merge_into_fleet`): PV rated ``min(Pmpp, kVA)``, batteries with
   the element's ``kWrated``, ``kWhrated``, ``%stored``, ``%reserve`` and
   round-trip efficiency;
2. writes a small master file beside the federation config that redirects
   to the user's master and disables those elements
   (:func:`write_handover_master`), and gives that file to the DSO, so the
   same energy is not counted twice (once in OpenDSS at its snapshot output,
   once as the aggregator's DER).

Generators stay in the feeder as modelled. The aggregator then bids, and is
dispatched and settled for, these devices like its own; the DSO attaches its
DER element at the bus on all the bus's phases (a single-phase PV on a
three-phase bus is spread over the three).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsosim.federates.dso.feeder import ExistingDer

HANDED_KINDS = ("pv", "storage")


def handed_over(ders: Sequence[ExistingDer]) -> tuple[ExistingDer, ...]:
    """The elements an aggregator takes over: enabled PV systems and storage."""
    return tuple(d for d in ders if d.enabled and d.kind in HANDED_KINDS and d.kw > 0)


def fleet_devices(ders: Sequence[ExistingDer]) -> dict[str, list[dict[str, Any]]]:
    """Fleet spec entries (``pvs`` and ``batteries``) for the handed-over elements."""
    pvs: list[dict[str, Any]] = []
    batteries: list[dict[str, Any]] = []
    for d in handed_over(ders):
        if d.kind == "pv":
            rating_kw = min(d.kw, d.kva) if d.kva > 0 else d.kw
            pvs.append({"bus": d.bus, "rating_mw": round(rating_kw / 1000.0, 6)})
        else:
            soc_min = min(max(d.reserve, 0.0), 0.5)
            batteries.append(
                {
                    "bus": d.bus,
                    "power_mw": round(d.kw / 1000.0, 6),
                    "energy_mwh": round(d.kwh / 1000.0, 6),
                    "soc_init": round(min(max(d.soc, soc_min), 1.0), 6),
                    "soc_min": round(soc_min, 6),
                    "soc_max": 1.0,
                    "efficiency": round(min(max(d.efficiency, 0.5), 1.0), 6),
                }
            )
    return {"pvs": pvs, "batteries": batteries}


def merge_into_fleet(
    placed: dict[str, Any], devices: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """``placed`` (``{"buses": [...], "spec": {...}}`` from placement) with the
    devices added to the spec and their buses to the aggregator's locations."""
    spec = dict(placed["spec"])
    for key, items in devices.items():
        if items:
            spec[key] = list(spec.get(key, [])) + list(items)
    buses = sorted(set(placed["buses"]) | {d["bus"] for items in devices.values() for d in items})
    return {**placed, "buses": buses, "spec": spec}


def write_handover_master(
    master: str, ders: Sequence[ExistingDer], path: Path, *, lda: str, aggregator: str
) -> Path:
    """Write ``path``: the feeder ``master`` (absolute, or relative to the
    folder of ``path``) with the handed-over elements disabled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"! Written by dsosim build for LDA {lda}: the feeder below with its own PV systems",
        f"! and storage handed to aggregator {aggregator} (they run in its fleet; here they",
        "! are disabled so their energy is not counted twice).",
        f'Redirect "{Path(master).as_posix()}"',
    ]
    lines += [f"Edit {d.element} enabled=no" for d in handed_over(ders)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
