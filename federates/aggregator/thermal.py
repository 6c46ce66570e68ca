"""Thermostatic loads (air conditioners, heat pumps, water heaters) as
first-order equivalent thermal parameter (ETP) models, and bids that price
the comfort cost of deviating from the setpoint.

Physics. One node of heat capacity ``C`` (kWh/degC) exchanges heat with
sources at temperatures ``T_j`` through conductances ``G_j`` (kW/degC),
receives gains ``Q`` (kW) and the appliance's heat ``s * cop * P`` (``s = +1``
heating, ``-1`` cooling; ``P`` electric kW). With all of them constant over
an interval of ``dt`` hours the temperature at its end is exact::

    G = sum G_j,   T_eq(P) = (sum G_j T_j + Q + s cop P) / G,   a = exp(-G dt / C)
    T' = T_eq(P) + (T - T_eq(P)) a  =  T'(0) + s cop (1 - a) / G * P

* air conditioner / heat pump: one conductance ``1 / R`` to the outdoor air,
  gains = internal + solar (horizontal irradiance / 1000 times
  ``solar_gain_kw``);
* water heater: standby loss ``UA`` to the room and the hot-water draw
  (flow times the heat capacity of water) to the cold inlet.

Power is the average over the interval (a fleet's duty cycles, not one
compressor's on/off state). The end temperature moves monotonically
within an interval, so a band that holds at both ends holds throughout.

Offer. The band ``[setpoint - band, setpoint + band]`` at the end of the
interval bounds the power: ``lo`` and ``hi`` are the least and most power
that keep ``T'`` in the band (clipped to ``[0, rated]``; if even full power
cannot, the device runs at the nearer bound and the excursion shows in the
results). Its no-market behaviour heads for the setpoint. The range is split
into ``thermal_blocks`` tranches; the tranche around power ``P`` is worth

    p_ref + comfort_price * s * (setpoint - T'(P)) / band

where ``p_ref`` is the mean expected price over the next
``thermal_horizon_h`` (energy not used now has to be used soon to pull the
temperature back): the occupant pays the expected price at the setpoint, up
to ``comfort_price`` more at the edge of the band where comfort is lost,
and less when the home is already on the comfortable side (the ramp bid of
transactive thermostats, anchored on the expected price). Prices fall as
power rises, so the curve is monotonic.

Overrides. With ``override_probability`` per interval (seeded) an occupant
overrides the dispatch and the device runs its no-market power: the
deviation is counted in the results.

Results count a device *out of band* when it ends an interval on the side
of its band it works against (too warm for an air conditioner, too cold for
a heater); a home cooler than its band on a cool night with the air
conditioner off is not a comfort violation (its temperature still shows).
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
from dsosim.federates.aggregator.specs import HvacSpec, WaterHeaterSpec
from dsosim.federates.aggregator.weather import Weather
from dsosim.federates.common import profiles

WATER_KWH_PER_L_C = 4.186 / 3600.0
"""Heat capacity of water, kWh per litre and degC."""
_SHIFT_CHUNK = 256
"""Water-heater draw shifts whose daily shape is sampled at once (bounds the
temporaries: shifts x slots x samples)."""


def end_temperature(
    t0: FloatArray,
    g: FloatArray,
    t_src: FloatArray,
    c: FloatArray,
    heat_kw: FloatArray,
    dt_h: float,
    decay: FloatArray | None = None,
) -> FloatArray:
    """Exact end temperature of ``C dT/dt = G (T_src - T) + heat`` after
    ``dt_h`` hours: the one formula every thermal device uses (see module).
    ``decay`` is ``exp(-G dt / C)`` when the caller already has it."""
    a = np.exp(-g * dt_h / c) if decay is None else decay
    t_eq = t_src + heat_kw / g
    return t_eq + (t0 - t_eq) * a


class ThermalLoads:
    """A group of thermostatic devices of one kind (``hvac`` or ``water_heater``)."""

    table = "ders_thermal"
    columns = (
        "temp_mean_c",
        "temp_min_c",
        "temp_max_c",
        "out_of_band",
        "overrides",
        "power_mw",
        "ambient_c",
    )

    def __init__(
        self,
        kind: str,
        bus: IntArray,
        *,
        power_mw: FloatArray,
        cop: FloatArray,
        sign: FloatArray,
        capacity: FloatArray,
        setpoint: FloatArray,
        band: FloatArray,
        comfort: FloatArray,
        t_init: FloatArray,
        dt_h: float,
        blocks: int,
        horizon: int,
        override_probability: float,
        seed: int,
    ) -> None:
        self.kind = kind
        self.bus = bus
        self.p_kw = power_mw * 1000.0
        self.cop, self.sign, self.capacity = cop, sign, capacity
        self.setpoint, self.band, self.comfort = setpoint, band, comfort
        self.temp = t_init
        self.dt_h = dt_h
        self.blocks = blocks
        self.horizon = horizon
        self.override_probability = override_probability
        self._rng = np.random.default_rng([seed, 4])
        self._last: dict[str, FloatArray] = {}
        self._env: tuple[FloatArray, FloatArray, FloatArray] | None = None
        # per-device constants of the offer, computed once
        self._t_min, self._t_max = setpoint - band, setpoint + band
        self._steep = (comfort * sign / band)[:, None]
        self._owner = np.repeat(np.arange(len(bus), dtype=np.intp), blocks)
        self._halves = (np.arange(blocks) + 0.5)[None, :]  # tranche midpoints, in tranches
        self._decay: tuple[FloatArray, FloatArray, FloatArray] | None = None

    # A subclass gives the environment of interval t: conductance G (kW/degC),
    # source temperature T_src (degC) and the ambient to report.
    def environment(self, t: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        raise NotImplementedError

    def _bounds(self, t: int) -> tuple[FloatArray, ...]:
        g, t_src, ambient = self.environment(t)
        a, slope = self._response(g)
        free = end_temperature(self.temp, g, t_src, self.capacity, 0.0, self.dt_h, decay=a)
        # the least and most power that end in the band, and the no-market power
        p1 = np.subtract(self._t_min, free)
        p1 /= slope
        p2 = np.subtract(self._t_max, free)
        p2 /= slope
        lo_kw = np.minimum(p1, p2)
        np.clip(lo_kw, 0.0, self.p_kw, out=lo_kw)
        hi_kw = np.maximum(p1, p2, out=p1)
        np.clip(hi_kw, 0.0, self.p_kw, out=hi_kw)
        np.maximum(hi_kw, lo_kw, out=hi_kw)
        base_kw = np.subtract(self.setpoint, free, out=p2)
        base_kw /= slope
        np.clip(base_kw, lo_kw, hi_kw, out=base_kw)
        self._env = (free, slope, ambient)
        return lo_kw, hi_kw, base_kw, free, slope

    def _response(self, g: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Decay ``a = exp(-G dt / C)`` over the interval and the end
        temperature's slope in power (degC/kW) for conductances ``g``; kept
        while ``environment`` returns the same array (a constant ``G``)."""
        if self._decay is not None and self._decay[0] is g:
            return self._decay[1], self._decay[2]
        x = -g * self.dt_h / self.capacity
        a = np.exp(x)
        slope = self.sign * self.cop * -np.expm1(x) / g
        self._decay = (g, a, slope)
        return a, slope

    def offer(self, tick: Tick) -> GroupOffer:
        lo_kw, hi_kw, base_kw, free, slope = self._bounds(tick.t)
        if len(lo_kw) == 0:
            return GroupOffer.fixed(np.zeros(0))
        # the range in equal tranches (block j of device i is entry i * blocks + j),
        # each priced at the end temperature its midpoint gives, in one (n, blocks) array:
        # p_ref + steep * (setpoint - (free + slope * (lo + size * (j + 0.5))))
        size = np.subtract(hi_kw, lo_kw)
        size /= self.blocks
        price = np.multiply(size[:, None], self._halves)
        price += lo_kw[:, None]  # the tranche's midpoint
        price *= slope[:, None]
        price += free[:, None]  # its end temperature
        np.subtract(self.setpoint[:, None], price, out=price)
        price *= self._steep
        price += tick.outlook.mean_ahead(self.bus, self.horizon)[:, None]
        size /= 1000.0
        mw = np.repeat(size, self.blocks)
        lo_kw /= 1000.0
        hi_kw /= 1000.0
        base_kw /= 1000.0
        return GroupOffer(lo_kw, hi_kw, base_kw, price.ravel(), mw, self._owner)

    def apply(self, tick: Tick, offer: GroupOffer, net: FloatArray) -> FloatArray:
        if self._env is None:
            self._bounds(tick.t)
        assert self._env is not None
        free, slope, ambient = self._env
        override = self._rng.random(len(net)) < self.override_probability
        actual = np.where(override, offer.base, net)
        self.temp = free + slope * actual * 1000.0
        # discomfort is on the side the device works against: too warm for a cooler,
        # too cold for a heater (a home cooler than its band with the AC off is fine)
        off = self.sign * (self.setpoint - self.temp) > self.band + 1e-9
        self._last = {
            "temp": self.temp.copy(),
            "out_of_band": off,
            "overrides": override,
            "power_mw": actual,
            "ambient": ambient,
        }
        self._env = None
        return actual

    def summary(self, sums: BusSums) -> dict[str, FloatArray]:
        last = self._last
        return {
            "temp_mean_c": sums.mean(last["temp"]),
            "temp_min_c": sums.extreme(last["temp"], largest=False),
            "temp_max_c": sums.extreme(last["temp"], largest=True),
            "out_of_band": sums.count_true(last["out_of_band"]),
            "overrides": sums.count_true(last["overrides"]),
            "power_mw": sums.sum(last["power_mw"]),
            "ambient_c": sums.mean(last["ambient"]),
        }


def _initial(
    t_init: list[float | None], setpoint: FloatArray, band: FloatArray, rng: np.random.Generator
) -> FloatArray:
    """Given initial temperatures, or seeded ones inside the inner half of the band."""
    draw = setpoint + band * rng.uniform(-0.5, 0.5, len(setpoint))
    return np.array([d if x is None else x for x, d in zip(t_init, draw, strict=True)], dtype=float)


class Hvacs(ThermalLoads):
    """Air conditioners and heat pumps in homes exposed to the fleet's weather."""

    def __init__(
        self,
        specs: Sequence[HvacSpec],
        bus: IntArray,
        *,
        weather: Weather,
        dt_h: float,
        blocks: int,
        horizon: int,
        override_probability: float,
        seed: int,
    ) -> None:
        def col(name: str) -> FloatArray:
            return np.array([getattr(s, name) for s in specs], dtype=float)

        setpoint, band = col("setpoint_c"), col("band_c")
        rng = np.random.default_rng([seed, 5])
        super().__init__(
            "hvac",
            bus,
            power_mw=col("power_mw"),
            cop=col("cop"),
            sign=np.array([1.0 if s.mode == "heat" else -1.0 for s in specs]),
            capacity=col("c_kwh_per_c"),
            setpoint=setpoint,
            band=band,
            comfort=col("comfort_price"),
            t_init=_initial([s.t_init_c for s in specs], setpoint, band, rng),
            dt_h=dt_h,
            blocks=blocks,
            horizon=horizon,
            override_probability=override_probability,
            seed=seed,
        )
        self.g = 1.0 / col("r_c_per_kw")
        self.q_int, self.q_sun = col("internal_gain_kw"), col("solar_gain_kw")
        self.outdoor = weather.temp_air.mean(axis=1)
        self.sun = weather.interval_means("flat") / 1000.0

    def environment(self, t: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        gains = self.q_int + self.q_sun * self.sun[t]
        ambient = np.full(len(self.g), self.outdoor[t])
        return self.g, ambient + gains / self.g, ambient


class WaterHeaters(ThermalLoads):
    """Storage water heaters with a daily hot-water draw profile."""

    def __init__(
        self,
        specs: Sequence[WaterHeaterSpec],
        bus: IntArray,
        *,
        interval_s: float,
        dt_h: float,
        blocks: int,
        horizon: int,
        override_probability: float,
        seed: int,
    ) -> None:
        def col(name: str) -> FloatArray:
            return np.array([getattr(s, name) for s in specs], dtype=float)

        setpoint, band = col("setpoint_c"), col("band_c")
        rng = np.random.default_rng([seed, 6])
        super().__init__(
            "water_heater",
            bus,
            power_mw=col("power_mw"),
            cop=col("cop"),
            sign=np.ones(len(specs)),
            capacity=col("tank_l") * WATER_KWH_PER_L_C,
            setpoint=setpoint,
            band=band,
            comfort=col("comfort_price"),
            t_init=_initial([s.t_init_c for s in specs], setpoint, band, rng),
            dt_h=dt_h,
            blocks=blocks,
            horizon=horizon,
            override_probability=override_probability,
            seed=seed,
        )
        self.ua = col("ua_w_per_c") / 1000.0
        self.room, self.inlet = col("room_c"), col("inlet_c")
        self.draw_l_h = col("draw_l_per_day") / 24.0  # mean draw, litres per hour
        slots = round(86_400.0 / interval_s)
        # draw shape per time-of-day slot, averaged over the slot, per device shift:
        # computed once per distinct shift (specs round them), time-of-day slots first
        t = profiles.sample_times(slots, interval_s, 0.0) / 3600.0  # (slots, samples)
        shifts, which = np.unique(col("draw_shift_h"), return_inverse=True)
        by_shift = np.empty((slots, len(shifts)))
        for a in range(0, len(shifts), _SHIFT_CHUNK):
            s = shifts[a : a + _SHIFT_CHUNK]
            by_shift[:, a : a + len(s)] = (
                profiles.hot_water_draw(t[None, :, :] - s[:, None, None]).mean(axis=2).T
            )
        self.shape = by_shift[:, which]
        """Draw per unit of the daily mean, ``(slots, devices)``."""
        self.slots = slots

    def environment(self, t: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        flow = self.draw_l_h * self.shape[t % self.slots]  # litres per hour
        g_draw = flow * WATER_KWH_PER_L_C  # kW/degC
        g = self.ua + g_draw
        return g, (self.ua * self.room + g_draw * self.inlet) / g, self.room
