"""The exchange schedule inside a market interval (``common.schedule``)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from dsosim.federates.common.schedule import (
    ROUND_TRIP_SLOTS,
    Phase,
    at,
    round_trip_at,
)
from dsosim.federates.markets.nodal_dmo import RELINEARISE_MAX


@dataclass(frozen=True)
class _Clock:
    step: float = 300.0
    substep_s: float = 1.0
    settle: float = 1.0
    origin_s: float = 0.0
    intervals_per_day: int = 288


def test_the_independent_operators_round_trips_fit_inside_dispatch() -> None:
    """Every re-linearisation a market may ask for (request at an odd slot,
    answer read at the next even one, ``PricedOn`` read one slot later) lies
    strictly between DISPATCH and RESPOND, in order."""
    clock = _Clock()
    last = 2 * RELINEARISE_MAX + 1
    assert last < ROUND_TRIP_SLOTS
    times = [round_trip_at(7, j, clock) for j in range(1, last + 1)]
    assert at(7, Phase.DISPATCH, clock) < times[0]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert times[-1] < at(7, Phase.RESPOND, clock)
    with pytest.raises(ValueError, match="outside"):
        round_trip_at(7, ROUND_TRIP_SLOTS, clock)
