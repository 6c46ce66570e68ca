"""The order of exchanges inside one market interval, defined once.

Interval ``k`` starts at ``t_k = k * interval_s`` seconds. Each exchange happens
at a fixed sub-step inside the interval; a message sent at sub-step ``p`` is
read by its receiver at a later sub-step (HELICS delivers a message sent at
time t at the receiver's next grant after t). Federates are uninterruptible
and request exactly these instants, so the order is deterministic and needs
no wall-clock sleeps::

    t_k+0  BID        aggregators -> market operator     FleetBid
    t_k+1  AGGREGATE  DSO: feeder-constrained LDA curve  InterfaceBid -> ISO
    t_k+2  CLEAR      ISO: DC-OPF, LMPs                  Award -> DSO
    t_k+3  DISPATCH   DSO: LDA clearing, DLMPs           Dispatch -> aggregators
    t_k+4  RESPOND    aggregators: device physics        Measurement -> DSO
    t_k+5  MEASURE    DSO: OpenDSS power flow            Meter -> ISO (settled at t_k+1 +2)
    t_k+6  RECORD     recorder: writes the interval's rows

Every federate also sends its result rows to the recorder at the sub-step
where it produces them; the recorder reads them all at RECORD.
"""

from __future__ import annotations

from enum import IntEnum


class Phase(IntEnum):
    """Sub-step offsets (seconds) inside a market interval."""

    BID = 0
    AGGREGATE = 1
    CLEAR = 2
    DISPATCH = 3
    RESPOND = 4
    MEASURE = 5
    RECORD = 6


SUBSTEP_S = 1.0
"""Spacing of sub-steps; intervals must be longer than ``len(Phase)`` of them."""


def at(interval: int, phase: Phase, interval_s: float) -> float:
    """Simulation time (s) of ``phase`` in market interval ``interval``."""
    return interval * interval_s + int(phase) * SUBSTEP_S
