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

The check above is linear at the forecast point: a schedule that reverses a
flow, or moves the regulators, takes the feeder beyond what the
linearisation sees. With the feeder owner's power flow (``PowerFlow``) the
same check is made again on the feeder itself (``carried_pf_mw``,
``unwound_pf_mw``): a power flow at the forecast load with every scheduled
DER at its schedule; if it keeps the feeder within its limits, everything is
carried (exact); otherwise the override starts from the feeder linearised at
the schedules and re-linearises at each set-point it decides until none
moves more than 1 kW (at most ``RELINEARISE_MAX`` times, as model 2's DERM;
``pf_converged`` says whether it got there). NaN where that power flow
diverged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from dsosim.federates.common.messages import DayAheadSchedules
from dsosim.federates.common.scale import TdScale
from dsosim.federates.common.tables import Rows
from dsosim.federates.dso.feeder import FeederState, Sensitivities
from dsosim.federates.markets.derm_override import override_awards, relinearised_overrides
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
    "carried_pf_mw",
    "unwound_pf_mw",
    "pf_converged",
)

PowerFlow = Callable[[np.ndarray, bool], tuple[FeederState, Sensitivities | None] | None]
"""The feeder owner's power flow at the interval's forecast load with the
DERs at a dispatch (MW, the feeder's order), linearised there if asked
(``GridOperator.check_at``); None if it diverged."""
_LIMIT_TOL = 1e-6


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
        self._pending: (
            tuple[int, list[tuple[str, str, float, float, float, float, bool]]] | None
        ) = None

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

    def check(
        self,
        interval: int,
        state: FeederState,
        sens: Sensitivities,
        power_flow: PowerFlow | None = None,
    ) -> None:
        """Check the schedules of ``interval``'s period on the feeder at its
        forecast operating point (``state``, ``sens``), and, with
        ``power_flow``, on the feeder's power flow (module docstring)."""
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
        by_flow, converged = (
            self._by_power_flow(awards, state, power_flow)
            if power_flow is not None
            else (None, False)
        )
        rows = []
        for agg in sorted(awards):
            for bus in sorted(awards[agg]):
                da = self.td.to_feeder(awards[agg][bus])
                pf = math.nan if by_flow is None else by_flow[agg][bus]
                rows.append((agg, bus, da, carried[agg][bus], day.lmp[p], pf, converged))
        self._pending = (interval, rows)

    def _by_power_flow(
        self,
        awards: Mapping[str, Mapping[str, float]],
        state: FeederState,
        power_flow: PowerFlow,
    ) -> tuple[dict[str, dict[str, float]] | None, bool]:
        """What the feeder carries of the schedules by its power flow, and
        whether the re-linearised override settled (True when nothing had to
        move); (None, False) if a power flow diverged."""
        dispatch = np.array(state.der_mw, dtype=float)
        for agg, by_bus in awards.items():
            for bus, mw in by_bus.items():
                dispatch[self.der_index[(agg, bus)]] = self.td.to_feeder(mw)
        got = power_flow(dispatch, False)
        if got is None:
            return None, False
        if self._within(got[0]):
            as_scheduled = {
                agg: {bus: self.td.to_feeder(mw) for bus, mw in by_bus.items()}
                for agg, by_bus in awards.items()
            }
            return as_scheduled, True
        got = power_flow(dispatch, True)
        if got is None or got[1] is None:
            return None, False

        def relinearise(der: np.ndarray) -> tuple[FeederState, Sensitivities] | None:
            point = power_flow(der, True)
            return None if point is None or point[1] is None else (point[0], point[1])

        decided = relinearised_overrides(
            awards,
            scale=self.td,
            der_index=self.der_index,
            state=got[0],
            sens=got[1],
            limits=self.limits,
            relinearise=relinearise,
        )
        return decided.setpoints, decided.converged

    def _within(self, state: FeederState) -> bool:
        """The feeder's power flow within its own limits."""
        v = np.asarray(state.v_pu)[np.asarray(state.monitored, dtype=bool)]
        lim = self.limits
        return bool(
            np.all(v <= lim.vmax_pu + _LIMIT_TOL)
            and np.all(v >= lim.vmin_pu - _LIMIT_TOL)
            and np.all(np.asarray(state.loading) <= lim.max_loading + _LIMIT_TOL)
        )

    def rows(self, interval: int, lmp: float) -> Rows:
        """The ``unwound`` rows of ``interval`` (after :meth:`check`), with
        the real-time LMP."""
        if self._pending is None or self._pending[0] != interval:
            return []
        return [
            (
                interval,
                self.lda,
                agg,
                bus,
                self.td.factor,
                da,
                c,
                da - c,
                da_lmp,
                lmp,
                pf,
                da - pf,
                ok,
            )
            for agg, bus, da, c, da_lmp, pf, ok in self._pending[1]
        ]
