"""What every device group of a fleet provides, and the per-bus helpers they
share.

A group holds every device of one type as arrays. Per interval it

* **offers** (:class:`GroupOffer`): each device's least and most net demand
  over the interval (``lo <= hi``, MW, positive = consumption), its
  no-market behaviour (``base``, inside ``[lo, hi]``) and blocks
  ``(price, mw, owner)`` whose quantities add up to ``hi - lo`` per device
  (block ``b`` is "raise my net demand by ``mw[b]`` at prices at or below
  ``price[b]``"). Offering changes no state.
* **applies** a net demand per device inside ``[lo, hi]``: the interval's
  physics; it returns what the devices actually did (a device may override
  its dispatch) and advances the state to the next interval.
* **summarises** the interval per bus for the results (:meth:`summary`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from dsosim.federates.aggregator.prices import Outlook
from dsosim.federates.common.arrays import FloatArray, IntArray

EMPTY = np.zeros(0)
EMPTY_INT = np.zeros(0, dtype=np.intp)


@dataclass(frozen=True, slots=True)
class Tick:
    """One interval as the devices see it."""

    t: int
    """Interval index (0 starts at midnight of day 0)."""
    slot: int
    """Time-of-day slot of the interval."""
    slots: int
    """Intervals per day."""
    dt_h: float
    """Interval length, hours."""
    outlook: Outlook
    """Expected prices of the following intervals."""


@dataclass(slots=True)
class GroupOffer:
    lo: FloatArray
    hi: FloatArray
    base: FloatArray
    price: FloatArray
    mw: FloatArray
    owner: IntArray

    @staticmethod
    def fixed(values: FloatArray) -> GroupOffer:
        """Devices that cannot move: ``lo = hi = base = values``, no blocks."""
        return GroupOffer(values, values, values, EMPTY, EMPTY, EMPTY_INT)


class DeviceGroup(Protocol):
    kind: str
    """Device type name, as it appears in the results."""
    table: str
    """Results table of its state (``results``)."""
    bus: IntArray
    """Bus index of each device."""

    def offer(self, tick: Tick) -> GroupOffer: ...

    def apply(self, tick: Tick, offer: GroupOffer, net: FloatArray) -> FloatArray: ...

    def summary(self, n_bus: int) -> dict[str, FloatArray]: ...


def per_bus_sum(bus: IntArray, values: FloatArray, n_bus: int) -> FloatArray:
    return np.bincount(bus, values, minlength=n_bus).astype(float, copy=False)


def per_bus_count(bus: IntArray, mask: NDArray[np.bool_], n_bus: int) -> NDArray[np.int64]:
    return np.bincount(bus[mask], minlength=n_bus).astype(np.int64)


def per_bus_mean(bus: IntArray, values: FloatArray, n_bus: int) -> FloatArray:
    """Mean per bus (NaN where a bus has no device)."""
    count = np.bincount(bus, minlength=n_bus)
    total = np.bincount(bus, values, minlength=n_bus)
    out = np.full(n_bus, np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def per_bus_extreme(bus: IntArray, values: FloatArray, n_bus: int, *, largest: bool) -> FloatArray:
    """Minimum (or maximum) per bus (NaN where a bus has no device)."""
    out = np.full(n_bus, -np.inf if largest else np.inf)
    (np.maximum if largest else np.minimum).at(out, bus, values)
    out[~np.isfinite(out)] = np.nan
    return out


def tranches(lo: FloatArray, hi: FloatArray, k: int) -> tuple[FloatArray, FloatArray]:
    """Split each device's range ``[lo, hi]`` into ``k`` equal tranches:
    their midpoints ``(n, k)`` and their size ``(n,)`` (block ``j`` of
    device ``i`` is entry ``i * k + j``: a group keeps those owners)."""
    size = (hi - lo) / k
    mid = lo[:, None] + size[:, None] * (np.arange(k) + 0.5)[None, :]
    return mid, size
