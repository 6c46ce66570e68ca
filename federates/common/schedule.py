"""The order of exchanges inside one market interval, defined once.

Interval ``k`` starts at federation time ``t_k = k * step`` (``TimeSettings``:
``step`` = the interval length itself unless the run compresses time). Each
exchange happens at a fixed sub-step inside the interval; a message sent at
sub-step ``p`` is read by its receiver at a later sub-step (HELICS delivers a
message sent at time t at the receiver's next grant after t). Federates are
uninterruptible and request exactly these instants, so the order is
deterministic and needs no wall-clock sleeps::

    t_k+0  BID        aggregators -> market operator     FleetBid
    t_k+1  AGGREGATE  DSO: feeder-constrained LDA curve  InterfaceBid -> ISO
    t_k+2  CLEAR      ISO: DC-OPF, LMPs                  Award -> DSO
    t_k+3  DISPATCH   DSO: LDA clearing, DLMPs           Dispatch -> aggregators
                      (an independent operator: round trips with the utility
                      inside it, ``round_trip_at``)
    t_k+4  RESPOND    aggregators with hardware: per-device set-points -> HIL gateway
    t_k+5  ACTUATE    HIL gateway: SETPOINT to devices (answers: round trip)
    t_k+5+s READBACK  HIL gateway: READ devices          HilReadings -> aggregators
    t_k+6+s REPORT    aggregators: device physics        Measurement -> DSO
    t_k+7+s MEASURE   DSO: OpenDSS power flow            Meter -> ISO (settled at t_k+1 +2)
                      (LocationVoltages -> aggregators with volt-var, read
                      half a sub-step later: ``voltages_at``)
    t_k+8+s RECORD    recorder: writes the interval's rows

(sub-steps ``substep_s`` apart, 1 s by default; ``s`` is the settle time the
hardware gets between its set-point and the read-back, one sub-step by
default). Every federate also sends its result rows to the recorder at the
sub-step where it produces them; the recorder reads them all at RECORD.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Protocol


class Clock(Protocol):
    """The clocks a schedule needs (``config.TimeSettings`` has them): the
    federation seconds per interval, between sub-steps and from set-point to
    read-back."""

    @property
    def step(self) -> float: ...

    @property
    def substep_s(self) -> float: ...

    @property
    def settle(self) -> float: ...

    @property
    def origin_s(self) -> float:
        """Federation seconds before interval 0 (the first day-ahead market's)."""
        ...

    @property
    def intervals_per_day(self) -> int: ...


class Phase(IntEnum):
    """Sub-steps inside a market interval, in order."""

    BID = 0
    AGGREGATE = 1
    CLEAR = 2
    DISPATCH = 3
    RESPOND = 4
    ACTUATE = 5
    READBACK = 6
    REPORT = 7
    MEASURE = 8
    RECORD = 9


def offset(phase: Phase, time: Clock) -> float:
    """Federation seconds from an interval's start to ``phase``."""
    base = int(phase) * time.substep_s
    return base + (time.settle - time.substep_s if phase >= Phase.READBACK else 0.0)


def last_offset(time: Clock) -> float:
    """Offset of the last sub-step (it must fall inside the step)."""
    return offset(Phase.RECORD, time)


def at(interval: int, phase: Phase, time: Clock) -> float:
    """Federation time (s) of ``phase`` in market interval ``interval``."""
    return time.origin_s + interval * time.step + offset(phase, time)


ROUND_TRIP_SLOTS = 16
"""DISPATCH is split into this many slots for the round trips of a market
operator that does not own the feeder (models 4 and 6) with the utility that
does: at slot ``2j - 1`` the utility reads the operator's ``j``-th dispatch
to re-linearise at (``LineariseAt``) and answers with the feeder linearised
there; at slot ``2j`` the operator reads it and clears again. The last
exchange (``PricedOn``, and the set-points to the aggregators) is sent at the
operator's last slot, so everything is in before RESPOND."""


def round_trip_at(interval: int, slot: int, time: Clock) -> float:
    """Federation time (s) of round-trip ``slot`` (1 ..
    ``ROUND_TRIP_SLOTS - 1``) inside the DISPATCH sub-step of ``interval``."""
    if not 0 < slot < ROUND_TRIP_SLOTS:
        raise ValueError(f"round-trip slot {slot} is outside 1..{ROUND_TRIP_SLOTS - 1}")
    return at(interval, Phase.DISPATCH, time) + slot * time.substep_s / ROUND_TRIP_SLOTS


def voltages_at(interval: int, time: Clock) -> float:
    """Federation time (s), half a sub-step after MEASURE, at which an
    aggregator with volt-var inverters reads the voltages the utility's
    measured power flow gave its locations (``LocationVoltages``), and so
    knows the reactive power its inverters produced, before RECORD."""
    return at(interval, Phase.MEASURE, time) + 0.5 * time.substep_s


class DayAheadPhase(IntEnum):
    """Exchanges of the day-ahead market of day ``d``, at its gate closure:
    just before the market interval ``gate_interval(d)`` (the day's first
    interval, or ``gate_closure_hours`` before it, inside the day before; the
    first day's market always runs before interval 0, in the ``origin_s``
    the federation keeps for it)::

        DA_OFFER  market aggregators -> their T-D bidder   DayAheadOffer (curves per period)
                  (the ISO in models 1-2, the LDA's utility and DMO in 3-6)
        DA_BID    each LDA's utility -> ISO               DayAheadBid (one curve per period)
        DA_CLEAR  ISO: multi-period DC-OPF                day-ahead schedules and prices
    """

    DA_OFFER = 0
    DA_BID = 1
    DA_CLEAR = 2


DAY_AHEAD_ORIGIN_SUBSTEPS = len(DayAheadPhase)
"""Sub-steps kept before interval 0 when a day-ahead market runs."""


def gate_interval(day: int, per_day: int, gate_intervals: int) -> int:
    """The market interval before whose BID the market of ``day`` runs:
    ``gate_intervals`` before the day's first interval, never before interval 0."""
    return max(0, day * per_day - gate_intervals)


def day_ahead_due(interval: int, per_day: int, gate_intervals: int, n_intervals: int) -> int | None:
    """The day whose day-ahead market runs just before ``interval``'s BID, if
    any (days that start inside the run only; ``gate_intervals < per_day``, so
    at most one day per interval)."""
    day = (interval + gate_intervals) // per_day
    if day * per_day >= n_intervals or gate_interval(day, per_day, gate_intervals) != interval:
        return None
    return day


def day_ahead_at(interval: int, phase: DayAheadPhase, time: Clock) -> float:
    """Federation time (s) of ``phase`` of a day-ahead market held just before
    market interval ``interval`` (its :func:`gate_interval`)."""
    first = at(interval, Phase.BID, time)
    return first - (len(DayAheadPhase) - int(phase)) * time.substep_s
