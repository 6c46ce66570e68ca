"""PV systems: output from irradiance and temperature, inverter efficiency
and clipping, curtailment offers, optional volt-var.

Per 60 s sample of the fleet's weather (``weather``), for an array of DC
rating ``P_dc0 = dc_ac_ratio * rating`` on its orientation's plane-of-array
irradiance ``G``:

* cell temperature, Faiman model: ``T_c = T_air + G / (u0 + u1 * wind)``
  (``u0 = 25``, ``u1 = 6.84``, wind 1 m/s);
* DC power, PVWatts: ``P_dc = P_dc0 * G / 1000 * (1 + gamma (T_c - 25))``;
* AC power, PVWatts inverter: part-load efficiency
  ``eta = eta_nom / eta_ref * (-0.0162 z - 0.0059 / z + 0.9858)``,
  ``z = P_dc / (rating / eta_nom)``, clipped at the rating.

These are the pvlib functions ``temperature.faiman``, ``pvsystem.pvwatts_dc``
and ``inverter.pvwatts`` written out in numpy (the tests check they agree),
so that a federate does not import pvlib. Output is averaged over the
interval after clipping. With ``volt_var`` the inverter absorbs or injects
reactive power along the IEEE 1547-2018 category B curve at the bus's last
known voltage, with reactive priority: active power is held to
``sqrt(S^2 - Q^2)`` with ``S`` the rating.
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
    per_bus_sum,
)
from dsosim.federates.aggregator.specs import PvSpec
from dsosim.federates.aggregator.weather import Weather
from dsosim.federates.common.curves import PRICE_CAP, PRICE_FLOOR

FAIMAN_U0, FAIMAN_U1, WIND_SPEED = 25.0, 6.84, 1.0
ETA_INV_NOM, ETA_INV_REF = 0.96, 0.9637
VOLT_VAR_V = (0.92, 0.98, 1.02, 1.08)
"""IEEE 1547-2018 category B default volt-var curve: voltages (pu) ..."""
VOLT_VAR_Q = (0.44, 0.0, 0.0, -0.44)
"""... and reactive power (pu of the rating, + = injection)."""


def cell_temperature(poa: FloatArray, temp_air: FloatArray) -> FloatArray:
    """Faiman cell temperature, degC (pvlib ``temperature.faiman``)."""
    return temp_air + poa / (FAIMAN_U0 + FAIMAN_U1 * WIND_SPEED)


def dc_power(
    poa: FloatArray, temp_cell: FloatArray, pdc0: FloatArray, gamma: FloatArray
) -> FloatArray:
    """PVWatts DC power (pvlib ``pvsystem.pvwatts_dc``), units of ``pdc0``."""
    return pdc0 * poa * 0.001 * (1.0 + gamma * (temp_cell - 25.0))


def ac_power(pdc: FloatArray, pac0: FloatArray) -> FloatArray:
    """PVWatts inverter AC power, clipped at ``pac0`` (pvlib ``inverter.pvwatts``
    with DC input rating ``pac0 / eta_nom``)."""
    return np.minimum(ac_unclipped(pdc, pac0), pac0)


def ac_unclipped(pdc: FloatArray, pac0: FloatArray) -> FloatArray:
    """AC power the inverter of rating ``pac0`` would give without its output
    limit (its efficiency curve only); the excess over ``pac0`` is clipped."""
    zeta = pdc / (pac0 / ETA_INV_NOM)
    inv = np.divide(0.0059, zeta, out=np.zeros_like(zeta), where=zeta != 0.0)
    eta = ETA_INV_NOM / ETA_INV_REF * (-0.0162 * zeta - inv + 0.9858)
    return np.maximum(eta * pdc, 0.0)


def volt_var(v_pu: FloatArray) -> FloatArray:
    """Reactive power, pu of the rating, of the category B volt-var curve."""
    return np.interp(v_pu, VOLT_VAR_V, VOLT_VAR_Q)


def volt_var_ratings(pvs: Sequence[PvSpec]) -> dict[str, float]:
    """Apparent-power rating (MVA) of the volt-var inverters per bus: what
    the utility's interconnection record holds (it sets their curve) and its
    power flow applies the curve to (``dso.voltvar``)."""
    out: dict[str, float] = {}
    for s in pvs:
        if s.volt_var:
            out[s.bus] = out.get(s.bus, 0.0) + s.rating_mw
    return out


class PvSystems:
    kind = "pv"
    table = "ders_pv"
    columns = (
        "rating_mw",
        "available_mw",
        "output_mw",
        "curtailed_mw",
        "clipped_mw",
        "irradiance_w_m2",
        "cell_temp_c",
        "q_mvar",
    )

    def __init__(
        self, specs: Sequence[PvSpec], bus: IntArray, *, weather: Weather | None, n_intervals: int
    ) -> None:
        self.bus = bus
        n = len(specs)
        self.rating = np.array([s.rating_mw for s in specs], dtype=float)
        self.pdc0 = self.rating * np.array([s.dc_ac_ratio for s in specs], dtype=float)
        self.rating.flags.writeable = False  # a constant: its per-bus sums are kept
        self.gamma = np.array([s.temp_coeff for s in specs], dtype=float)
        self.curtailable = np.array([s.curtailable for s in specs], dtype=bool)
        self.price = np.clip(
            np.array([-s.curtail_cost for s in specs], dtype=float), PRICE_FLOOR, PRICE_CAP
        )
        self.volt_var = np.array([s.volt_var for s in specs], dtype=bool)
        self.voltage = np.ones(n)
        self.modelled = np.array([s.profile is None for s in specs], dtype=bool)
        self.weather = weather
        if self.modelled.any():
            if weather is None:
                raise ValueError("PV systems without a profile need the fleet's weather")
            self.orient = np.array(
                [weather.index(s.orientation) if s.profile is None else 0 for s in specs],
                dtype=np.intp,
            )
        else:
            self.orient = np.zeros(n, dtype=np.intp)
        self.profiled = np.flatnonzero(~self.modelled)
        """The systems that follow a given profile (``profile`` has their rows)."""
        self.profile = np.zeros((len(self.profiled), n_intervals))
        for row, i in enumerate(self.profiled.tolist()):
            s = specs[i]
            assert s.profile is not None
            if len(s.profile) < n_intervals:
                raise ValueError(
                    f"PvSpec(bus={s.bus!r}).profile: {len(s.profile)} values for "
                    f"{n_intervals} intervals"
                )
            self.profile[row] = s.profile[:n_intervals]
        self._state: dict[str, FloatArray] = {}
        self._last: dict[str, FloatArray] = {}
        self._modelled_sums: BusSums | None = None
        self._curtail_owner = np.flatnonzero(self.curtailable).astype(np.intp)
        self._curtail_price = self.price[self._curtail_owner]
        self._reactive = self._volt_var()
        # the modelled systems' constants, as (devices, 1) columns against the samples
        m = self.modelled
        self._orient_m = self.orient[m]
        self._pdc0_m, self._gamma_m = self.pdc0[m, None], self.gamma[m, None]
        self._rating_m = self.rating[m, None]
        self._dc_rating_m = self._rating_m / ETA_INV_NOM

    def set_voltages(self, v_pu_by_bus: FloatArray) -> None:
        """Last known voltage (pu) at every bus of the fleet, for volt-var."""
        self.voltage = v_pu_by_bus[self.bus]
        self._reactive = self._volt_var()

    def _volt_var(self) -> tuple[FloatArray, FloatArray]:
        """Reactive power (MVAr) at the last known voltages and the active
        power it leaves room for (MW), per system."""
        q = np.where(self.volt_var, volt_var(self.voltage), 0.0) * self.rating
        return q, np.sqrt(np.maximum(self.rating**2 - q**2, 0.0))

    def reactive_mvar(self, v_pu_by_bus: FloatArray, n_bus: int) -> FloatArray:
        """Per bus, the reactive power (Mvar, + injected) the volt-var
        inverters produce at bus voltages ``v_pu_by_bus`` (the fleet's bus
        order): each at ``rating x curve(v)``, carried on top of its active
        output as in the utility's power flow (``dso.voltvar``), which is
        where these voltages come from in a federation."""
        q = np.where(self.volt_var, volt_var(v_pu_by_bus[self.bus]), 0.0) * self.rating
        return per_bus_sum(self.bus, q, n_bus)

    def _available(self, t: int) -> dict[str, FloatArray]:
        n = len(self.rating)
        avail = np.zeros(n)  # the modelled systems' entries are set below
        avail[self.profiled] = self.rating[self.profiled] * self.profile[:, t]
        poa, t_cell, clipped = np.zeros(n), np.full(n, np.nan), np.zeros(n)
        m = self.modelled
        if m.any() and self.weather is not None:
            # irradiance and cell temperature depend on the orientation only
            g_o = self.weather.poa[:, t, :]  # (orientations, samples)
            tc_o = cell_temperature(g_o, self.weather.temp_air[t][None, :])
            orient = self._orient_m
            if g_o.any():
                free = self._ac_unclipped(g_o, tc_o)
                pac = np.minimum(free, self._rating_m)
                avail[m] = pac.mean(axis=1)
                free -= pac
                clipped[m] = free.mean(axis=1)
            else:  # night: no irradiance, so no DC power, no AC power, nothing clipped
                avail[m] = 0.0
            poa[m], t_cell[m] = g_o.mean(axis=1)[orient], tc_o.mean(axis=1)[orient]
        q, cap = self._reactive
        avail = np.minimum(avail, cap)
        return {
            "available_mw": avail,
            "clipped_mw": clipped,
            "irradiance_w_m2": poa,
            "cell_temp_c": t_cell,
            "q_mvar": q,
        }

    def _ac_unclipped(self, g_o: FloatArray, tc_o: FloatArray) -> FloatArray:
        """``ac_unclipped(dc_power(...))`` of every modelled system, ``(devices,
        samples)``, from the irradiance and cell temperature per orientation:
        the same operations in the same order, in place on two arrays."""
        # pdc0 * poa * 0.001 * (1 + gamma * (temp_cell - 25)); np.take copies the rows of
        # each system's orientation (row-major, as indexing does) several times faster
        pdc = np.take(g_o, self._orient_m, axis=0)
        np.multiply(self._pdc0_m, pdc, out=pdc)
        pdc *= 0.001
        x = np.take(tc_o - 25.0, self._orient_m, axis=0)
        x *= self._gamma_m
        x += 1.0
        pdc *= x
        zeta = np.divide(pdc, self._dc_rating_m, out=x)  # the inverter's part load
        inv = np.divide(0.0059, zeta, out=np.zeros_like(zeta), where=zeta != 0.0)
        eta = np.multiply(zeta, -0.0162, out=zeta)
        eta -= inv
        eta += 0.9858
        eta *= ETA_INV_NOM / ETA_INV_REF
        pdc *= eta
        return np.maximum(pdc, 0.0, out=pdc)

    def offer(self, tick: Tick) -> GroupOffer:
        self._state = self._available(tick.t)
        avail = self._state["available_mw"]
        # every curtailable system offers a block (empty ones, at night, are dropped
        # with the fleet's other empty blocks): the same owners every interval
        return GroupOffer(
            -avail,
            np.where(self.curtailable, 0.0, -avail),
            -avail,
            self._curtail_price,
            avail[self._curtail_owner],
            self._curtail_owner,
        )

    def apply(self, tick: Tick, offer: GroupOffer, net: FloatArray) -> FloatArray:
        state = self._state
        output = -net
        self._last = {**state, "output_mw": output, "curtailed_mw": state["available_mw"] - output}
        return net

    def sync(self, i: int, mw: float, soc: float | None) -> None:
        """PV system ``i`` measurably injected ``-mw`` (hardware in the loop)."""
        if self._last:
            self._last["output_mw"][i] = -mw
            self._last["curtailed_mw"][i] = self._last["available_mw"][i] + mw

    def summary(self, sums: BusSums) -> dict[str, FloatArray]:
        out = {"rating_mw": sums.sum_fixed(self.rating)}
        for name in ("available_mw", "output_mw", "curtailed_mw", "clipped_mw", "q_mvar"):
            out[name] = sums.sum(self._last[name])
        m = self.modelled
        if self._modelled_sums is None or self._modelled_sums.n_bus != sums.n_bus:
            self._modelled_sums = BusSums(self.bus[m], sums.n_bus, sparse=sums.sparse)
        for name in ("irradiance_w_m2", "cell_temp_c"):
            out[name] = self._modelled_sums.mean(self._last[name][m])
        return out
