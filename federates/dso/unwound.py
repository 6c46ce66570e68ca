"""Forward schedules the feeder cannot carry (models 1-2), in plain Python.

Where aggregators bid day-ahead straight to the ISO (models 1-2), the ISO
clears their schedules without seeing the feeder: the seeds' example of the
California ISO's original zonal market, whose forward markets "cleared energy
transactions that were not feasible on the grid and had to be unwound in
real time". The utility receives each aggregator location's day-ahead
schedule (``DayAheadSchedules``) and, every interval, checks the schedule of
the interval's period on its feeder: the set-points closest to the schedules
that keep the linearised voltages and loadings within the feeder's own
limits (not the narrower band a market plans within), moving a schedule
only toward zero (``derm_override.override_awards``, the check the utility
as DERM applies to real-time awards in model 2), at the interval's forecast
operating point. A limit the feeder breaks even with every scheduled DER at
zero takes every schedule that adds to it to zero. What it had to move is the part of the
forward schedule the feeder could not carry: it has to be unwound in real
time, bought back (or sold back) at the real-time price.

Who unwinds it differs: in model 2 the utility, as DERM, overrides the ISO's
real-time awards into the feeder's limits; in model 1 nobody does (the ISO is
the DERM and does not see the feeder), so the schedules are carried out and
the feeder is violated instead. The ``unwound`` table records, per interval
and aggregator location: the schedule (``da_mw``), what the feeder could
carry (``carried_mw``), their difference (``unwound_mw = da_mw -
carried_mw``; MW on the modelled feeder, x ``scale`` at the T-D interface),
the day-ahead price and the interval's real-time LMP. The cost of unwinding
at real-time prices what was sold at day-ahead prices: ``-unwound_mw x
(lmp - da_lmp)`` per hour (positive: the schedule holder loses).
"""

from __future__ import annotations

from collections.abc import Mapping

from dsosim.federates.common.messages import DayAheadSchedules
from dsosim.federates.common.scale import TdScale
from dsosim.federates.common.tables import Rows
from dsosim.federates.dso.feeder import FeederState, Sensitivities
from dsosim.federates.markets.derm_override import override_awards
from dsosim.federates.markets.lda_market import Limits

UNWOUND_COLUMNS = (
    "interval",
    "dso",
    "aggregator",
    "location",
    "scale",
    "da_mw",
    "carried_mw",
    "unwound_mw",
    "da_lmp",
    "lmp",
)


class ForwardCheck:
    """The utility's check of the day-ahead schedules of its aggregator
    locations against its feeder (see the module docstring)."""

    def __init__(
        self,
        lda: str,
        td: TdScale,
        der_index: Mapping[tuple[str, str], int],
        limits: Limits,
        per_day: int,
    ) -> None:
        self.lda = lda
        self.td = td
        self.der_index = dict(der_index)
        self.limits = limits
        self.per_day = per_day
        self._days: dict[int, DayAheadSchedules] = {}
        self._pending: tuple[int, list[tuple[str, str, float, float, float]]] | None = None

    def take(self, schedules: DayAheadSchedules) -> None:
        """A day's schedules (the ISO's ``DayAheadSchedules``); unknown
        locations are an error naming them."""
        for agg, by_bus in schedules.schedules.items():
            unknown = sorted(b for b in by_bus if (agg, b) not in self.der_index)
            if unknown:
                raise ValueError(
                    f"{self.lda}: day-ahead schedules of {agg!r} at {unknown}, "
                    "which are not its locations on this feeder"
                )
        for first in sorted(self._days)[:-1]:  # keep the day running and the next
            del self._days[first]
        self._days[schedules.interval] = schedules

    def _schedule(self, interval: int) -> tuple[DayAheadSchedules, int] | None:
        first = interval - interval % self.per_day
        day = self._days.get(first)
        if day is None:
            return None
        return day, (interval - first) * len(day.lmp) // self.per_day

    def check(self, interval: int, state: FeederState, sens: Sensitivities) -> None:
        """Check the schedules of ``interval``'s period on the feeder at its
        forecast operating point (``state``, ``sens``)."""
        self._pending = None
        found = self._schedule(interval)
        if found is None:
            return
        day, p = found
        awards = {
            agg: {bus: mws[p] for bus, mws in by_bus.items()}
            for agg, by_bus in day.schedules.items()
        }
        carried = override_awards(
            awards,
            scale=self.td,
            der_index=self.der_index,
            state=state,
            sens=sens,
            limits=self.limits,
        )
        rows = []
        for agg in sorted(awards):
            for bus in sorted(awards[agg]):
                da = self.td.to_feeder(awards[agg][bus])
                rows.append((agg, bus, da, carried[agg][bus], day.lmp[p]))
        self._pending = (interval, rows)

    def rows(self, interval: int, lmp: float) -> Rows:
        """The ``unwound`` rows of ``interval`` (after :meth:`check`), with
        the real-time LMP."""
        if self._pending is None or self._pending[0] != interval:
            return []
        return [
            (interval, self.lda, agg, bus, self.td.factor, da, c, da - c, da_lmp, lmp)
            for agg, bus, da, c, da_lmp in self._pending[1]
        ]
