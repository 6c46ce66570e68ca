"""Loads: inflexible (taken at any price), curtailable (a share served only
up to its value) and shiftable (a daily energy inside a window).

* **Inflexible**: ``peak * shape(t - shift) * (1 + noise * z_t)``, ``z`` a
  seeded AR(1) path per load (one-hour correlation), floored at zero.
* **Curtailable**: demand ``d = peak * shape(t)``; ``(1 - share) d`` at any
  price, ``share * d`` only at or below ``value_per_mwh``.
* **Shiftable**: must consume ``energy_mwh`` inside its daily window, at
  most ``power_mw``. What cannot be left to the remaining intervals of the
  window is forced now; the rest of what it could take now is one block
  priced at the expected price of the marginal remaining interval it would
  otherwise use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dsosim.federates.aggregator.group import (
    BusSums,
    FloatArray,
    GroupOffer,
    IntArray,
    Tick,
)
from dsosim.federates.aggregator.specs import (
    LOAD_SHAPES,
    FlexLoadSpec,
    InflexibleLoadSpec,
    ShiftableLoadSpec,
)
from dsosim.federates.common import profiles

LOAD_NOISE_TIME_CONSTANT_S = 3600.0
_SHAPES = {"residential": profiles.residential_load, "commercial": profiles.commercial_load}


def _daily_shapes(interval_s: float) -> FloatArray:
    """One day of every load shape, per time-of-day slot, ``(shapes, slots)``."""
    slots = round(86_400.0 / interval_s)
    return np.stack([_SHAPES[s](slots, interval_s) for s in LOAD_SHAPES])


class InflexibleLoads:
    kind = "inflexible"
    table = "ders_load"
    columns = ("demand_mw", "served_mw", "unserved_mw")

    def __init__(
        self,
        specs: Sequence[InflexibleLoadSpec],
        bus: IntArray,
        *,
        n_intervals: int,
        interval_s: float,
        seed: int,
    ) -> None:
        self.bus = bus
        n = len(specs)
        slots = round(86_400.0 / interval_s)
        shapes = _daily_shapes(interval_s)
        kind = np.array([LOAD_SHAPES.index(s.shape) for s in specs], dtype=np.intp)
        shift = np.array([round(s.shift_h * 3600.0 / interval_s) for s in specs], dtype=np.intp)
        peak = np.array([s.peak_mw for s in specs], dtype=float)
        noise = np.array([s.noise for s in specs], dtype=float)
        slot = (np.arange(n_intervals)[:, None] - shift[None, :]) % slots
        z = profiles.ar1_paths(
            n,
            n_intervals,
            interval_s,
            LOAD_NOISE_TIME_CONSTANT_S,
            np.random.SeedSequence([seed, 7]),
        )
        self.demand = np.maximum(peak * shapes[kind[None, :], slot] * (1.0 + noise * z), 0.0)
        self._last: FloatArray = np.zeros(n)

    def offer(self, tick: Tick) -> GroupOffer:
        return GroupOffer.fixed(self.demand[tick.t])

    def apply(self, tick: Tick, offer: GroupOffer, net: FloatArray) -> FloatArray:
        self._last = net
        return net

    def summary(self, sums: BusSums) -> dict[str, FloatArray]:
        served = sums.sum(self._last)
        return {"demand_mw": served, "served_mw": served, "unserved_mw": np.zeros(sums.n_bus)}


class CurtailableLoads:
    kind = "curtailable"
    table = "ders_load"
    columns = InflexibleLoads.columns

    def __init__(self, specs: Sequence[FlexLoadSpec], bus: IntArray, *, interval_s: float) -> None:
        self.bus = bus
        self.peak = np.array([s.peak_mw for s in specs], dtype=float)
        self.value = np.array([s.value_per_mwh for s in specs], dtype=float)
        self.share = np.array([s.curtailable_share for s in specs], dtype=float)
        self.kind_index = np.array([LOAD_SHAPES.index(s.shape) for s in specs], dtype=np.intp)
        self.shapes = _daily_shapes(interval_s)
        self._last: dict[str, FloatArray] = {}
        self._owner = np.arange(len(specs), dtype=np.intp)

    def offer(self, tick: Tick) -> GroupOffer:
        demand = self.peak * self.shapes[self.kind_index, tick.slot]
        return GroupOffer(
            (1.0 - self.share) * demand,
            demand,
            demand,
            self.value,
            self.share * demand,
            self._owner,
        )

    def apply(self, tick: Tick, offer: GroupOffer, net: FloatArray) -> FloatArray:
        self._last = {"demand_mw": offer.hi, "served_mw": net, "unserved_mw": offer.hi - net}
        return net

    def summary(self, sums: BusSums) -> dict[str, FloatArray]:
        return {k: sums.sum(v) for k, v in self._last.items()}


class ShiftableLoads:
    kind = "shiftable"
    table = "ders_load"
    columns = InflexibleLoads.columns

    def __init__(
        self, specs: Sequence[ShiftableLoadSpec], bus: IntArray, *, interval_s: float
    ) -> None:
        self.bus = bus
        self.slots = round(86_400.0 / interval_s)
        per_h = 3600.0 / interval_s
        self.energy = np.array([s.energy_mwh for s in specs], dtype=float)
        self.power = np.array([s.power_mw for s in specs], dtype=float)
        self.start = np.array(
            [round(s.window_start_h * per_h) % self.slots for s in specs], dtype=np.intp
        )
        self.end = np.array(
            [round(s.window_end_h * per_h) % self.slots for s in specs], dtype=np.intp
        )
        self.length = (self.end - self.start - 1) % self.slots + 1
        self.dt_h = interval_s / 3600.0
        # Starting inside a window: owe the share of the energy for what is left of it.
        inside, n_rem = self._position(0)
        self.remaining = np.where(inside, self.energy * n_rem / self.length, 0.0)
        self._due = np.zeros(len(specs))
        self._last: dict[str, FloatArray] = {}
        self._owner = np.arange(len(specs), dtype=np.intp)

    def _position(self, t: int) -> tuple[np.ndarray, IntArray]:
        """Whether interval ``t`` lies in each window, and how many intervals
        of the window remain counting ``t``."""
        s, a, b = t % self.slots, self.start, self.end
        inside = np.where(a < b, (a <= s) & (s < b), np.where(a > b, (s >= a) | (s < b), True))
        n_rem = (b - s - 1) % self.slots + 1
        return inside, n_rem

    def offer(self, tick: Tick) -> GroupOffer:
        n = len(self.energy)
        if n == 0:
            return GroupOffer.fixed(np.zeros(0))
        dt, p = self.dt_h, self.power
        inside, n_rem = self._position(tick.t)
        due = np.where(tick.slot == self.start, self.energy, self.remaining)
        due = np.where(inside, due, 0.0)
        later = p * dt * (n_rem - 1)  # most that can be left to the rest of the window
        must = np.where(inside, np.minimum(p, np.maximum(due - later, 0.0) / dt), 0.0)
        hi = np.where(inside, np.minimum(p, due / dt), 0.0)
        n_later = (due - must * dt) / (p * dt)  # full-power intervals it would otherwise use
        m = np.where(inside, n_rem - 1, 0)
        price = tick.outlook.order_stat_ahead(self.bus, m, n_later - 1.0)
        self._due = due
        return GroupOffer(
            must,
            np.maximum(hi, must),
            hi,
            price,
            np.maximum(hi - must, 0.0),
            self._owner,
        )

    def apply(self, tick: Tick, offer: GroupOffer, net: FloatArray) -> FloatArray:
        self.remaining = np.maximum(self._due - net * self.dt_h, 0.0)
        self._last = {"demand_mw": offer.hi, "served_mw": net, "unserved_mw": offer.hi - net}
        return net

    def summary(self, sums: BusSums) -> dict[str, FloatArray]:
        return {k: sums.sum(v) for k, v in self._last.items()}
