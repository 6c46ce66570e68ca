"""Electric vehicles charging at home: daily plug-in sessions, flexible only
within what still meets the energy needed at departure, optional V2G.

Sessions. Each car arrives at ``arrival_h`` and leaves at ``departure_h``
plus independent normal jitter of ``ev_jitter_h`` every day (seeded), and
arrives with its target energy minus the day's use (``energy_mwh`` times a
seeded factor ``1 + ev_energy_jitter * N(0, 1)``, floored at zero). A car
plugged in at midnight of day 0 arrived the evening before and has charged
at full power since (its no-market behaviour).

Flexibility. With ``E`` stored, ``E_req`` needed at departure, ``n``
intervals left counting this one, charger ``P`` and efficiency ``e``
(each way), a full-power interval stores ``P e dt``:

* it must charge now ``max(0, E_req - E - (n - 1) P e dt) / (e dt)`` (capped
  at ``P``: an infeasible target is chased at full power and the shortfall
  at departure is reported);
* it charges at most up to ``E_req`` (``min(P, (E_req - E) / (e dt))``);
* a V2G car may discharge (up to its discharge limit and ``min_soc``) only
  what the remaining intervals can put back before departure.

Prices. The optional part of the charging is worth the expected price of
the marginal interval it would otherwise use: the ``k``-th cheapest of the
remaining plugged-in intervals, ``k`` the full-power intervals it still
needs. Discharging asks the price of buying the energy back later (the
next cheapest interval after those, over ``e^2``) plus ``wear_cost``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from dsosim.federates.aggregator.group import (
    BusSums,
    FloatArray,
    GroupOffer,
    IntArray,
    Tick,
)
from dsosim.federates.aggregator.specs import EvSpec


class Evs:
    kind = "ev"
    table = "ders_ev"
    columns = (
        "plugged",
        "energy_mwh",
        "needed_mwh",
        "charge_mw",
        "discharge_mw",
        "departures",
        "shortfall_mwh",
    )

    def __init__(
        self,
        specs: Sequence[EvSpec],
        bus: IntArray,
        *,
        n_intervals: int,
        interval_s: float,
        jitter_h: float,
        energy_jitter: float,
        seed: int,
    ) -> None:
        def col(name: str) -> FloatArray:
            return np.array([getattr(s, name) for s in specs], dtype=float)

        n = len(specs)
        self.bus = bus
        self.dt_h = interval_s / 3600.0
        self.p_c, self.p_d = col("charge_mw"), col("discharge_mw")
        self.eta = col("efficiency")
        self.capacity = col("capacity_mwh")
        self.e_min = col("min_soc") * self.capacity
        self.e_req = col("target_soc") * self.capacity
        self.wear = col("wear_cost")
        self._sessions(col, n, n_intervals, interval_s, jitter_h, energy_jitter, seed)
        # state at the start of interval 0
        self.sess = np.argmax(self.depart > 0, axis=1).astype(np.intp)
        rows = np.arange(n)
        arrive = self.arrive[rows, self.sess]
        self.plugged = arrive <= 0
        charged = self.p_c * self.eta * self.dt_h * np.maximum(-arrive, 0)
        self.energy = np.where(
            self.plugged, np.minimum(self.e_arrive[rows, self.sess] + charged, self.e_req), 0.0
        )
        self._last: dict[str, FloatArray] = {}
        # each car's first session in the flattened (cars, sessions) arrays
        self._row0 = np.arange(n, dtype=np.intp) * self.arrive.shape[1]
        # block owners of the offer: every car twice (discharge, then charge)
        self._owner = np.tile(np.arange(len(bus), dtype=np.intp), 2)

    def _sessions(
        self,
        col: Callable[[str], FloatArray],
        n: int,
        n_intervals: int,
        interval_s: float,
        jitter_h: float,
        energy_jitter: float,
        seed: int,
    ) -> None:
        """Arrival and departure intervals and arrival energy of every daily
        session, from the evening before day 0 to past the end of the run."""
        per_h = 3600.0 / interval_s
        slots = round(24 * per_h)
        n_days = math.ceil(n_intervals / slots) + 2
        day = np.arange(-1, n_days - 1, dtype=float)[None, :]
        rng = np.random.default_rng([seed, 3])
        arr_h = col("arrival_h")[:, None] + jitter_h * rng.standard_normal((n, n_days))
        dep_h = col("departure_h")[:, None] + jitter_h * rng.standard_normal((n, n_days))
        use = col("energy_mwh")[:, None] * np.maximum(
            1.0 + energy_jitter * rng.standard_normal((n, n_days)), 0.0
        )
        stay_h = (dep_h - arr_h) % 24.0
        arrive = np.round((day * 24.0 + arr_h) * per_h).astype(np.int64)
        depart = arrive + np.maximum(np.round(stay_h * per_h).astype(np.int64), 1)
        # a jittered stay never runs into the next day's arrival
        depart[:, :-1] = np.minimum(depart[:, :-1], np.maximum(arrive[:, 1:], arrive[:, :-1] + 1))
        self.arrive, self.depart = arrive, depart
        self.e_arrive = np.maximum(self.e_req[:, None] - use, 0.0)

    def _session(self, values: np.ndarray) -> np.ndarray:
        """Each car's entry of a ``(cars, sessions)`` array at its present session
        (``values[rows, sess]``, by a flat ``take``: the same entries, faster)."""
        return np.take(values, self._row0 + self.sess)

    def _state(self, t: int) -> tuple[FloatArray, ...]:
        n_rem = np.where(self.plugged, self._session(self.depart) - t, 0)
        eta, dt = self.eta, self.dt_h
        per_full = self.p_c * eta * dt  # MWh stored by one full-power interval
        need = np.where(self.plugged, np.maximum(self.e_req - self.energy, 0.0), 0.0)
        later = per_full * np.maximum(n_rem - 1, 0)
        must = np.where(self.plugged, np.clip((need - later) / (eta * dt), 0.0, self.p_c), 0.0)
        hi = np.where(self.plugged, np.minimum(self.p_c, need / (eta * dt)), 0.0)
        dmax = np.minimum(
            self.p_d, np.minimum((self.energy - self.e_min) * eta / dt, (later - need) * eta / dt)
        )
        dmax = np.where(self.plugged & (self.p_d > 0.0), np.maximum(dmax, 0.0), 0.0)
        return n_rem, need, must, hi, dmax, per_full

    def offer(self, tick: Tick) -> GroupOffer:
        n_rem, need, must, hi, dmax, per_full = self._state(tick.t)
        n = len(self.p_c)
        if n == 0:
            return GroupOffer.fixed(np.zeros(0))
        eta, dt = self.eta, self.dt_h
        m = np.maximum(n_rem - 1, 0)
        full = np.where(per_full > 0, per_full, 1.0)
        n_later = (need - must * eta * dt) / full  # full-power intervals it will still need
        flex = hi - must
        back = n_later + dmax * dt / eta / full  # intervals it needs after discharging
        # one pass for both prices; only cars with something to offer ask the outlook
        both = tick.outlook.order_stat_ahead(
            np.concatenate([self.bus, self.bus]),
            np.concatenate([np.where(flex > 0, m, 0), np.where(dmax > 0, m, 0)]),
            np.concatenate([n_later, back]) - 1.0,
        )
        c_price, d_price = both[:n], both[n:] / eta**2 + self.wear
        price = np.concatenate([d_price, c_price])
        mw = np.concatenate([dmax, flex])
        return GroupOffer(must - dmax, hi, hi, price, mw, self._owner)

    def apply(self, tick: Tick, offer: GroupOffer, net: FloatArray) -> FloatArray:
        t = tick.t
        charge, discharge = np.maximum(net, 0.0), np.maximum(-net, 0.0)
        need_before = np.where(self.plugged, np.maximum(self.e_req - self.energy, 0.0), 0.0)
        self.energy = np.where(
            self.plugged, self.energy + (charge * self.eta - discharge / self.eta) * self.dt_h, 0.0
        )
        leaving = self.plugged & (self._session(self.depart) == t + 1)
        shortfall = np.where(leaving, np.maximum(self.e_req - self.energy, 0.0), 0.0)
        self._last = {
            "plugged": self.plugged.copy(),
            "energy_mwh": self.energy.copy(),
            "needed_mwh": need_before,
            "charge_mw": charge,
            "discharge_mw": discharge,
            "departures": leaving,
            "shortfall_mwh": shortfall,
        }
        # departures at the end of t, arrivals at the start of t + 1
        self.plugged = self.plugged & ~leaving
        self.sess = np.where(leaving, self.sess + 1, self.sess)
        if len(self.sess) and int(self.sess.max()) >= self.arrive.shape[1]:  # flat reads need it
            raise IndexError("an EV went past the last daily session prepared for the run")
        self.energy = np.where(self.plugged, self.energy, 0.0)
        arriving = (
            ~self.plugged
            & (self._session(self.arrive) <= t + 1)
            & (self._session(self.depart) > t + 1)
        )
        self.plugged = self.plugged | arriving
        self.energy = np.where(arriving, self._session(self.e_arrive), self.energy)
        return net

    def summary(self, sums: BusSums) -> dict[str, FloatArray]:
        last = self._last
        out: dict[str, FloatArray] = {
            "plugged": sums.count_true(last["plugged"]),
            "departures": sums.count_true(last["departures"]),
        }
        for name in ("energy_mwh", "needed_mwh", "charge_mw", "discharge_mw", "shortfall_mwh"):
            out[name] = sums.sum(last[name])
        return out
