"""Transmission events: what happens to the wholesale system during a run.

A scenario's ``[[transmission.events]]`` (``TransmissionEvent``) each act
over ``[start_hour, end_hour)`` of the run (hours from its first interval):

* ``generator_outage``: generator ``gen`` (its row in the case's gen table,
  0-based) is out of service; the ISO clears a copy of the case without it
  (one extra warm-started DC-OPF per distinct set of outages);
* ``load_scale``: the case's fixed loads are multiplied by ``factor`` (a
  heat-wave spike above 1, a holiday trough below);
* ``supply_offer``: ``mw`` of extra supply at case bus ``bus``, offered at
  ``price`` $/MWh (a wind surge bid at a negative price, say): it runs
  unless the LMP there falls below its price, and is paid the LMP.

Events only change the transmission case the ISO clears; every organisational
model sees the same events, so what differs between models is how the DER
dispatch that follows from the prices meets the feeder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsosim.federates.common.config import TransmissionEvent
from dsosim.federates.common.curves import BidCurve
from dsosim.federates.iso.case import TransmissionCase


class EventError(ValueError):
    """An event that does not fit the case."""


@dataclass(frozen=True)
class IntervalEvents:
    """What the events change in one interval."""

    names: tuple[str, ...]
    outages: frozenset[int]
    load_factor: float
    supply: tuple[tuple[str, int, BidCurve], ...]
    """(owner, case bus, net-demand curve) of each extra supply offer."""


def check_events(case: TransmissionCase, events: Sequence[TransmissionEvent]) -> None:
    """Raise :class:`EventError` naming ``transmission.events[i]`` and the field."""
    buses = {int(b) for b in case.bus_ids}
    for i, e in enumerate(events):
        where = f"transmission.events[{i}]"
        if e.kind == "generator_outage":
            assert e.gen is not None
            if not 0 <= e.gen < case.n_gen:
                raise EventError(
                    f"{where}.gen: {e.gen} is not a generator of case {case.name!r} "
                    f"(rows 0..{case.n_gen - 1})"
                )
            if not case.gen_status[e.gen]:
                raise EventError(f"{where}.gen: generator {e.gen} is already out of service")
        if e.kind == "supply_offer" and e.bus not in buses:
            raise EventError(
                f"{where}.bus: bus {e.bus} is not in case {case.name!r} "
                f"(its buses: {sorted(buses)[:12]}{' ...' if len(buses) > 12 else ''})"
            )
    on = {g for g in range(case.n_gen) if case.gen_status[g]}
    out = {e.gen for e in events if e.kind == "generator_outage"}
    if on and on <= out:
        raise EventError("transmission.events: they take every generator of the case out")


class EventSchedule:
    """The events of a run, per interval."""

    def __init__(
        self, case: TransmissionCase, events: Sequence[TransmissionEvent], interval_s: float
    ) -> None:
        check_events(case, events)
        self.events = tuple(events)
        self.interval_h = interval_s / 3600.0

    def at(self, interval: int) -> IntervalEvents:
        t = interval * self.interval_h
        names: list[str] = []
        outages: set[int] = set()
        factor = 1.0
        supply: list[tuple[str, int, BidCurve]] = []
        for i, e in enumerate(self.events):
            if not e.start_hour <= t < e.end_hour:
                continue
            name = e.name or f"event{i}"
            names.append(name)
            if e.kind == "generator_outage":
                assert e.gen is not None
                outages.add(e.gen)
            elif e.kind == "load_scale":
                assert e.factor is not None
                factor *= e.factor
            else:
                assert e.bus is not None and e.mw is not None and e.price is not None
                supply.append((name, e.bus, BidCurve(-e.mw, ((e.price, e.mw),))))
        return IntervalEvents(tuple(names), frozenset(outages), factor, tuple(supply))


def without(case: TransmissionCase, outages: frozenset[int]) -> TransmissionCase:
    """The case with generators ``outages`` out of service."""
    status = np.array(case.gen_status, copy=True)
    status[sorted(outages)] = 0
    return case.replace(gen_status=status)
