"""Battery storage: energy balance with split round-trip efficiency and
self-discharge, and offers priced from the opportunity cost of the stored
energy.

Physics per interval of ``dt`` hours, charge ``c`` and discharge ``x``
(grid side, MW, one of them zero), ``e = sqrt(round-trip efficiency)``,
self-discharge ``s`` per day, ``d = (1 - s) ** (dt / 24)``::

    E' = d * E + (e * c - x / e) * dt,     soc_min <= E' / capacity <= soc_max

(self-discharge is taken on the energy held at the start of the interval).
The offer only contains powers that keep ``E'`` within the bounds, so
dispatch never has to clip; a battery that self-discharges at ``soc_min``
charges just enough to stay there.

Opportunity cost (the fleet's price expectations, ``prices``). Over the
next ``horizon_h`` hours of expected prices:

* the stored energy above ``soc_min`` could be sold in ``n_d`` full-power
  intervals, so its marginal MWh is worth the ``n_d``-th highest expected
  price ``v`` (the fuller the battery, the lower ``v``);
* the headroom below ``soc_max`` could be filled in ``n_c`` full-power
  intervals, so the marginal charging price is the ``n_c``-th lowest
  expected price ``c``;
* the windows these order statistics are taken over follow one storage
  cycle (``Outlook.cycle_windows``): energy held now is valued up to the
  expected price valley (after it, it could be bought back cheaply), and
  room is priced up to the expected peak (where its energy would be sold);
  the energy a discharge gives up is bought back before the peak after the
  valley, and the energy a charge stores is sold before the valley after
  the peak. So a battery that expects to refill tonight sells at this
  evening's peak rather than holding for tomorrow's;
* discharge now at price ``p`` if ``p >= max(v, c / eta)`` (better than
  selling that energy later, and worth buying back later); charge now if
  ``p <= min(c, eta * v)``.

The deliverable discharge and charge power are each split into
``battery_blocks`` equal tranches, each priced at the state of charge the
battery would have in the middle of that tranche, so deeper discharge asks
for a higher price and deeper charging for a lower one. Charge prices are
capped at the lowest discharge price, so a battery never offers to charge
and discharge at the same price. Order statistics are interpolated between
neighbouring intervals so offers move smoothly with the state of charge.
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
from dsosim.federates.aggregator.prices import order_stat
from dsosim.federates.aggregator.specs import BatterySpec


class Batteries:
    kind = "battery"
    table = "ders_battery"
    columns = ("soc", "energy_mwh", "capacity_mwh", "charge_mw", "discharge_mw", "losses_mw")

    def __init__(
        self, specs: Sequence[BatterySpec], bus: IntArray, *, dt_h: float, horizon: int, blocks: int
    ) -> None:
        def col(name: str) -> FloatArray:
            return np.array([getattr(s, name) for s in specs], dtype=float)

        self.bus = bus
        self.power, self.capacity = col("power_mw"), col("energy_mwh")
        self.capacity.flags.writeable = False  # a constant: its per-bus sums are kept
        self.e_min = col("soc_min") * self.capacity
        self.e_max = col("soc_max") * self.capacity
        self.eta = col("efficiency")
        self.eta1 = np.sqrt(self.eta)  # each way: charging and discharging
        self.decay = (1.0 - col("self_discharge")) ** (dt_h / 24.0)
        self.energy = col("soc_init") * self.capacity
        self.dt_h = dt_h
        self.horizon = horizon
        self.blocks = blocks
        self._before = self.energy
        self._last: dict[str, FloatArray] = {}
        # per-battery constants of the offer, computed once
        n = len(self.power)
        self._mid = (np.arange(blocks) + 0.5) / blocks  # tranche midpoints, fraction of power
        self._e1 = self.eta1[:, None]
        self._per_unit = (self.power * dt_h)[:, None]  # grid MWh of one full-power interval
        self._e1_per_unit = self._e1 * self._per_unit
        self._owner = np.repeat(np.arange(n, dtype=np.intp), 2 * blocks)

    @property
    def soc(self) -> FloatArray:
        """State of charge of each battery (fraction), a copy."""
        return self.energy / self.capacity

    def _limits(self) -> tuple[FloatArray, ...]:
        held = self.decay * self.energy
        stored = np.maximum(held - self.e_min, 0.0)  # MWh above soc_min
        room = np.maximum(self.e_max - held, 0.0)  # MWh below soc_max
        dmax = np.minimum(self.power, stored * self.eta1 / self.dt_h)
        cmax = np.minimum(self.power, room / (self.eta1 * self.dt_h))
        # self-discharge at the reserve is made up at any price (the BMS holds soc_min)
        must = np.minimum(self.power, np.maximum(self.e_min - held, 0.0) / (self.eta1 * self.dt_h))
        return stored, room, dmax, cmax, must

    def offer(self, tick: Tick) -> GroupOffer:
        stored, room, dmax, cmax, must = self._limits()
        n, k, dt = len(self.power), self.blocks, self.dt_h
        if n == 0:
            return GroupOffer.fixed(np.zeros(0))
        windows, row = tick.outlook.cycle_windows(self.bus, self.horizon)
        horizon = windows[0].shape[1]
        e1, per_unit, e1_per_unit, mid = self._e1, self._per_unit, self._e1_per_unit, self._mid
        out = mid * (dmax * dt / self.eta1)[:, None]  # stored MWh removed by mid-tranche
        into = mid * (cmax * dt * self.eta1)[:, None]  # stored MWh added by mid-tranche
        e_col, h_col, eta_col = stored[:, None], room[:, None], self.eta[:, None]
        # positions in the sorted expected prices, all four order statistics in one pass:
        # the n_d-th highest price values the stored energy, the n_c-th lowest the room
        value_at = horizon - (e_col - out) * e1 / per_unit, horizon - (e_col + into) * e1 / per_unit
        cost_at = (h_col + out) / e1_per_unit - 1.0, (h_col - into) / e1_per_unit - 1.0
        # windows: 0 to the valley, 1 to the peak after it, 2 to the peak, 3 to the valley after it
        v_out = order_stat(windows[0], row, value_at[0])
        c_out = order_stat(windows[1], row, cost_at[0])
        c_in = order_stat(windows[2], row, cost_at[1])
        v_in = order_stat(windows[3], row, value_at[1])
        d_price = np.maximum(v_out, c_out / eta_col)
        c_price = np.minimum(c_in, eta_col * v_in)
        c_price = np.minimum(c_price, d_price[:, :1])
        price = np.concatenate([d_price, c_price], axis=1)
        mw = np.concatenate(
            [
                np.repeat((dmax / k)[:, None], k, axis=1),
                np.repeat(((cmax - must) / k)[:, None], k, axis=1),
            ],
            axis=1,
        )
        return GroupOffer(must - dmax, cmax, must, price.ravel(), mw.ravel(), self._owner)

    def apply(self, tick: Tick, offer: GroupOffer, net: FloatArray) -> FloatArray:
        charge, discharge = np.maximum(net, 0.0), np.maximum(-net, 0.0)
        before = self.energy
        self._before = before
        after = self.decay * before + (charge * self.eta1 - discharge / self.eta1) * self.dt_h
        # The clip only removes floating-point dust: the offer kept power within the bounds.
        self.energy = np.clip(after, self.e_min, self.e_max)
        self._last = {
            "charge_mw": charge,
            "discharge_mw": discharge,
            # grid energy in minus stored energy gained: conversion and self-discharge
            "losses_mw": net - (self.energy - before) / self.dt_h,
        }
        return net

    def sync(self, i: int, mw: float, soc: float | None) -> None:
        """Battery ``i`` measurably drew ``mw`` and ends at ``soc`` (hardware in
        the loop): carry on from there, held within the SOC bounds the offers
        assume. Without a measured SOC the energy follows from ``mw``."""
        if soc is None:
            charge, discharge = max(mw, 0.0), max(-mw, 0.0)
            energy = (
                self.decay[i] * self._before[i]
                + (charge * self.eta1[i] - discharge / self.eta1[i]) * self.dt_h
            )
        else:
            energy = soc * self.capacity[i]
        self.energy[i] = min(max(energy, self.e_min[i]), self.e_max[i])
        if self._last:
            self._last["charge_mw"][i], self._last["discharge_mw"][i] = max(mw, 0.0), max(-mw, 0.0)

    def summary(self, sums: BusSums) -> dict[str, FloatArray]:
        n_bus = sums.n_bus
        energy = sums.sum(self.energy)
        capacity = sums.sum_fixed(self.capacity)
        out = {
            "soc": np.divide(energy, capacity, out=np.full(n_bus, np.nan), where=capacity > 0),
            "energy_mwh": energy,
            "capacity_mwh": capacity,
        }
        for name, values in self._last.items():
            out[name] = sums.sum(values)
        return out
