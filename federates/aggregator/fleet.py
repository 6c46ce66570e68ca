"""The DER fleet role that an aggregator federate hosts (plain Python, no HELICS).

A :class:`Fleet` holds every device of one aggregator as numpy arrays, one
group per device type (see the module of each: ``battery``, ``pv``, ``ev``,
``thermal``, ``loads``), and does two things per market interval:

1. :meth:`Fleet.bids` - one net-demand :class:`BidCurve` per feeder bus,
   deliverable over the whole interval from the devices' present state:
   the sum of the devices' least net demand plus their blocks, pooled to at
   most ``max_blocks`` per bus (``offers``);
2. :meth:`Fleet.dispatch` - follow per-bus net-demand set-points: clip each
   into its curve's range, fill the bus's blocks in price order, add the
   response error, run the interval's physics and report what the devices
   did, per bus and device type, next to their no-market baseline.

Time: interval 0 starts ``start_s`` seconds after midnight (default 0, a
whole number of intervals); ``interval_s`` must divide a day. Inside, the
devices, the weather and the price estimate count intervals from midnight of
the first day (the *clock* interval, run interval + ``start_s / interval_s``),
so a run that starts at 16:00 sees the evening's sun, loads and EV arrivals.
Randomness (EV sessions, initial temperatures, overrides, load noise,
response error) comes from ``seed``; weather from ``spec.weather_seed``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real

import numpy as np

from dsosim.federates.aggregator import group as group_module
from dsosim.federates.aggregator import offers
from dsosim.federates.aggregator.battery import Batteries
from dsosim.federates.aggregator.ev import Evs
from dsosim.federates.aggregator.group import (
    BusSums,
    DeviceGroup,
    FloatArray,
    GroupOffer,
    IntArray,
    Tick,
)
from dsosim.federates.aggregator.loads import CurtailableLoads, InflexibleLoads, ShiftableLoads
from dsosim.federates.aggregator.prices import Outlook, PriceEstimate
from dsosim.federates.aggregator.pv import PvSystems
from dsosim.federates.aggregator.specs import DeviceSpec, FleetSpec, SkyTable
from dsosim.federates.aggregator.thermal import Hvacs, WaterHeaters
from dsosim.federates.aggregator.weather import Weather, run_weather
from dsosim.federates.common.curves import BidCurve

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True, slots=True)
class TypeOutcome:
    """One device type's interval, per bus (arrays follow :attr:`Fleet.buses`)."""

    kind: str
    table: str
    devices: IntArray
    baseline_mw: FloatArray
    """What the devices would have done without a market."""
    min_mw: FloatArray
    max_mw: FloatArray
    dispatched_mw: FloatArray
    """The type's share of the (clipped) set-point."""
    actual_mw: FloatArray
    """What the devices did (response error and overrides included)."""
    state: dict[str, FloatArray] = field(default_factory=dict)
    """Per-type state and flows (SOC, temperatures, EV energy, ...)."""


@dataclass(frozen=True, slots=True)
class DispatchOutcome:
    """What the fleet did in one interval. Per-bus arrays follow
    :attr:`Fleet.buses`; MW are averages over the interval."""

    interval: int
    buses: tuple[str, ...]
    requested_mw: FloatArray
    """Set-points as received."""
    target_mw: FloatArray
    """Set-points clipped into each bus curve's deliverable range."""
    actual_mw: FloatArray
    """Net demand the devices actually produced."""
    baseline_mw: FloatArray
    """Net demand without a market (every device's no-market behaviour)."""
    prices: FloatArray
    """Prices received with the set-points (NaN where none was sent)."""
    by_type: dict[str, TypeOutcome]
    expected_price: FloatArray = field(default_factory=lambda: np.zeros(0))
    """What the fleet expected this interval's price to be, before it came."""
    forecast_low: FloatArray = field(default_factory=lambda: np.zeros(0))
    """Lowest expected price over the planning horizon after this interval."""
    forecast_high: FloatArray = field(default_factory=lambda: np.zeros(0))
    """Highest expected price over the planning horizon after this interval."""
    published: bool = False
    """True when this interval's expected price was a published (day-ahead) one."""

    @property
    def deviation_mw(self) -> FloatArray:
        """Actual minus requested net demand per bus (clipping + response error
        + overrides)."""
        return self.actual_mw - self.requested_mw

    def actual_by_bus(self) -> dict[str, float]:
        """``{bus: actual MW}``, the shape of a measurement message."""
        return dict(zip(self.buses, self.actual_mw.tolist(), strict=True))

    def with_pv_reactive(self, q_mvar: FloatArray) -> DispatchOutcome:
        """The same outcome with the PV inverters' reactive power per bus
        (``ders_pv.q_mvar``) known after the fact (:meth:`Fleet.volt_var_mvar`)."""
        pv = self.by_type.get("pv")
        if pv is None:
            return self
        pv = dataclasses.replace(pv, state={**pv.state, "q_mvar": np.asarray(q_mvar, dtype=float)})
        return dataclasses.replace(self, by_type={**self.by_type, "pv": pv})

    def total(self, kind: str, name: str) -> float:
        """Fleet total of one state column of one type (0 if the type is absent)."""
        t = self.by_type.get(kind)
        return float(np.nansum(t.state[name])) if t is not None else 0.0


@dataclass(frozen=True, slots=True)
class DayAheadPlan:
    """A fleet's day-ahead offer and the plan behind it (:meth:`Fleet.day_ahead`).
    Per-period arrays are fleet totals, means over the period's intervals."""

    first: int
    """The day's first interval."""
    offers: dict[str, tuple[BidCurve, ...]]
    """Per bus, one net-demand curve per period: the mean of the interval
    curves the fleet expects to bid along its plan."""
    price: FloatArray
    """The price the plan was made at, $/MWh (mean over buses)."""
    net_mw: FloatArray
    """Planned net demand: every interval's curve taken at the expected price."""
    pv_mw: FloatArray
    """Forecast available PV power (the sky, before any curtailment), MW."""
    load_mw: FloatArray
    """Forecast inflexible demand, MW."""
    ev_mw: FloatArray
    """Planned EV net charging (charge minus discharge), MW."""
    hvac_mw: FloatArray
    """Planned air-conditioner and heat-pump power, MW."""
    outdoor_c: FloatArray
    """Forecast outdoor temperature at the air conditioners and heat pumps,
    degC (NaN without any)."""


@dataclass(frozen=True, slots=True)
class DeviceReading:
    """What one device measurably did in an interval (hardware in the loop):
    its net demand (MW, at the simulation's scale) and, for storage, the state
    of charge it ends with. It replaces the device's modelled output, and the
    model carries on from the measured state."""

    mw: float
    soc: float | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    interval: int
    setpoints: dict[str, float]
    requested: FloatArray
    target: FloatArray
    dispatched: FloatArray
    net: FloatArray


class Fleet:
    """A vectorised DER fleet; see the module docstring.

    Intervals are processed in order: ``bids(t)`` (any number of times, no
    state change) then ``dispatch(t)``, which advances the fleet to ``t + 1``.
    """

    def __init__(
        self,
        spec: FleetSpec,
        *,
        interval_s: float,
        n_intervals: int,
        seed: int,
        start_s: float = 0.0,
    ) -> None:
        number = isinstance(interval_s, (int, float)) and interval_s > 0
        per_day = SECONDS_PER_DAY / interval_s if number else 0.5
        if not (math.isclose(per_day, round(per_day)) and round(per_day) >= 1):
            raise ValueError(
                f"interval_s must divide a day ({SECONDS_PER_DAY} s), got {interval_s!r}"
            )
        if not (isinstance(n_intervals, int) and n_intervals >= 1):
            raise ValueError(f"n_intervals must be an integer >= 1, got {n_intervals!r}")
        first = start_s / interval_s if isinstance(start_s, (int, float)) else -1.0
        if not (0.0 <= start_s < SECONDS_PER_DAY and math.isclose(first, round(first))):
            raise ValueError(
                f"start_s must be a whole number of {interval_s:g} s intervals within a day, "
                f"got {start_s!r}"
            )
        self.spec = spec
        self.interval_s = float(interval_s)
        self.n_intervals = n_intervals
        self._first = round(first)
        """Clock interval (from midnight of the first day) of run interval 0."""
        self._clock_n = self._first + n_intervals
        self._dt_h = self.interval_s / 3600.0
        self._slots = round(SECONDS_PER_DAY / interval_s)
        self._t = 0
        self._rng = np.random.default_rng((seed, 1))
        devices = spec.devices()
        self._buses = tuple(sorted({d.bus for d in devices}))
        self._bus_index = {b: i for i, b in enumerate(self._buses)}
        self.weather = self._weather(spec, seed)
        self.groups = self._groups(spec, seed)
        self._dev_bus = (
            np.concatenate([g.bus for g in self.groups])
            if self.groups
            else np.zeros(0, dtype=np.intp)
        )
        self._spans = np.cumsum([0] + [len(g.bus) for g in self.groups])
        self.large = len(self._dev_bus) >= group_module.SPARSE_FROM
        """A utility-scale fleet (``group.SPARSE_FROM`` devices or more): per-bus
        sums by sparse matrix, and its federate keeps freed memory (``heap``)."""
        n_bus = len(self._buses)
        self._group_sums = [BusSums(g.bus, n_bus, sparse=self.large) for g in self.groups]
        self._bus_sums = BusSums(self._dev_bus, n_bus, sparse=self.large)
        """Per-bus sums over each group's devices and over the whole fleet."""
        self._horizon = max(1, round(spec.horizon_h / self._dt_h))
        thermal_horizon = max(1, round(spec.thermal_horizon_h / self._dt_h))
        # devices plan up to a horizon past the last interval: prices can be published there
        self.forecast_reach = n_intervals + max(self._horizon, thermal_horizon)
        self._est = PriceEstimate(
            len(self._buses),
            self._prior_by_slot(spec.price_prior, spec.load_forecast),
            spec.price_smoothing,
            memory=spec.price_memory_h / self._dt_h,
            prior_weight=spec.price_prior_h / self._dt_h,
            n_intervals=self._first + self.forecast_reach,
        )
        self._voltage = np.ones(len(self._buses))
        self._cache: offers.FleetOffer | None = None
        self._ticked: Tick | None = None  # this interval's, while the price estimate holds
        self._owners = offers.BlockOwners()
        self._plan: _Plan | None = None
        self._unavailable: set[int] = set()
        self._range: tuple[FloatArray, FloatArray] | None = None
        """Each device's physical net-demand range this interval (see :meth:`device_range`)."""
        self._range_parts: list[tuple[FloatArray, FloatArray]] = []
        """The group offers' ranges it is made of, when asked for."""

    # --- construction

    def _bus_array(self, devices: Sequence[DeviceSpec]) -> IntArray:
        return np.array([self._bus_index[d.bus] for d in devices], dtype=np.intp)

    def _weather(self, spec: FleetSpec, seed: int) -> Weather | None:
        needed = sorted(
            {p.orientation for p in spec.pvs if p.profile is None}
            | ({"flat"} if spec.hvacs else set())
        )
        if not needed:
            return None
        sky = spec.sky if spec.sky is not None else _compute_sky(spec, needed)
        missing = [o for o in needed if o not in sky.orientations]
        if missing:
            raise ValueError(
                f"FleetSpec.sky: no irradiance for orientation(s) {missing}; "
                f"it has {sky.orientations}"
            )
        wseed = spec.weather_seed if spec.weather_seed is not None else seed
        return run_weather(
            sky, spec.site, n_intervals=self._clock_n, interval_s=self.interval_s, seed=wseed
        )

    def _groups(self, spec: FleetSpec, seed: int) -> list[DeviceGroup]:
        dt, n, s = self._dt_h, self._clock_n, self.interval_s
        horizon = max(1, round(spec.horizon_h / dt))  # == self._horizon
        thermal = {
            "dt_h": dt,
            "blocks": spec.thermal_blocks,
            "horizon": max(1, round(spec.thermal_horizon_h / dt)),
            "override_probability": spec.override_probability,
            "seed": seed,
        }
        groups: list[DeviceGroup] = []
        if spec.batteries:
            groups.append(
                Batteries(
                    spec.batteries,
                    self._bus_array(spec.batteries),
                    dt_h=dt,
                    horizon=horizon,
                    blocks=spec.battery_blocks,
                )
            )
        if spec.pvs:
            groups.append(
                PvSystems(spec.pvs, self._bus_array(spec.pvs), weather=self.weather, n_intervals=n)
            )
        if spec.evs:
            groups.append(
                Evs(
                    spec.evs,
                    self._bus_array(spec.evs),
                    n_intervals=n,
                    interval_s=s,
                    jitter_h=spec.ev_jitter_h,
                    energy_jitter=spec.ev_energy_jitter,
                    seed=seed,
                )
            )
        if spec.hvacs:
            assert self.weather is not None
            groups.append(
                Hvacs(spec.hvacs, self._bus_array(spec.hvacs), weather=self.weather, **thermal)
            )
        if spec.water_heaters:
            groups.append(
                WaterHeaters(
                    spec.water_heaters, self._bus_array(spec.water_heaters), interval_s=s, **thermal
                )
            )
        if spec.inflexible_loads:
            groups.append(
                InflexibleLoads(
                    spec.inflexible_loads,
                    self._bus_array(spec.inflexible_loads),
                    n_intervals=n,
                    interval_s=s,
                    seed=seed,
                )
            )
        if spec.flex_loads:
            groups.append(
                CurtailableLoads(spec.flex_loads, self._bus_array(spec.flex_loads), interval_s=s)
            )
        if spec.shiftable_loads:
            groups.append(
                ShiftableLoads(
                    spec.shiftable_loads, self._bus_array(spec.shiftable_loads), interval_s=s
                )
            )
        return groups

    def _by_slot(self, shape: tuple[float, ...]) -> FloatArray:
        values = np.asarray(shape, dtype=float)
        return values[(np.arange(self._slots) * len(values)) // self._slots]

    def _prior_by_slot(
        self, prior: float | tuple[float, ...], load: tuple[float, ...] | None
    ) -> FloatArray:
        if isinstance(prior, (int, float)):
            out = np.full(self._slots, float(prior))
        else:
            out = self._by_slot(prior)
        if load is not None:  # prices follow the published system load
            shape = self._by_slot(load)
            out = out * shape / shape.mean()
        return out

    # --- public state

    @property
    def buses(self) -> tuple[str, ...]:
        """Feeder buses with at least one device, sorted."""
        return self._buses

    @property
    def interval(self) -> int:
        """The next interval to bid and dispatch."""
        return self._t

    def group(self, kind: str) -> DeviceGroup:
        """The device group of one type (``battery``, ``pv``, ``ev``, ...)."""
        for g in self.groups:
            if g.kind == kind:
                return g
        raise KeyError(
            f"this fleet has no {kind!r} devices; it has {[g.kind for g in self.groups]}"
        )

    @property
    def battery_soc(self) -> FloatArray:
        """State of charge of each battery (fraction, spec order), a copy."""
        g = self.group("battery")
        assert isinstance(g, Batteries)
        return g.soc

    @property
    def expected_prices(self) -> FloatArray:
        """Learned expected price per bus (rows, :attr:`buses` order) and
        time-of-day slot (columns), $/MWh, a copy (published prices not
        included: see :meth:`forecast`)."""
        return self._est.full()

    def forecast(self, first: int, n: int) -> FloatArray:
        """Expected price per bus (rows) of intervals ``first ... first + n - 1``
        as the fleet sees them now: published prices where there are any, the
        learned forecast elsewhere."""
        return self._est.forecast(np.arange(len(self._buses)), self._first + first + np.arange(n))

    def publish_prices(self, first: int, prices: Sequence[float]) -> None:
        """Plan against these prices for intervals ``first, first + 1, ...``
        (every bus): the interface a day-ahead market's prices come in by.
        They replace the learned forecast for those intervals only."""
        self._est.publish(self._first + first, prices)
        self._cache = None  # offers depend on them
        self._ticked = None

    def day_ahead(
        self,
        first: int,
        periods: int,
        per_period: int,
        *,
        pv_error: float = 0.0,
        load_error: float = 0.0,
        ev_error: float = 0.0,
        temperature_error_c: float = 0.0,
        seed: int = 0,
    ) -> DayAheadPlan:
        """The fleet's day-ahead offer for the day starting at interval
        ``first``, made now (before :attr:`interval`'s bids; ``first`` may lie
        ahead, as at a gate closure inside the day before).

        A copy of the fleet runs from now to the day's end, every interval
        dispatched at its expected price (:meth:`forecast`: published prices
        where there are any, the learned forecast elsewhere), with no price
        learning: that is its state-of-charge plan (batteries, EVs and thermal
        loads offer from their state and the price outlook, as in real
        time). The day's offer per bus and period is the mean of the interval
        curves along that plan, so at any price the period's offer is the
        mean of what the interval offers would take. The fleet itself is not
        changed. Devices forecast their own output with the fleet's models;
        the day's sky (irradiance, and PV profiles) is forecast with a seeded
        relative error per period (sd ``pv_error``, from ``seed`` and the
        day), so real time sees more or less sun than the offer planned on;
        inflexible loads likewise (sd ``load_error``, per period and load).
        EV sessions that arrive from now to the day's end are forecast with a
        seeded relative error in the energy they arrive needing (sd
        ``ev_error`` per session; arrival and departure times as they will
        be), and the outdoor temperature the air conditioners and heat pumps
        see with a seeded error per period (sd ``temperature_error_c``, degC).
        Water heaters' draws follow their daily profile, known exactly.
        Periods past the run's last interval offer nothing (a zero curve)."""
        if not (isinstance(periods, int) and periods >= 1 and per_period >= 1):
            raise ValueError(f"need periods >= 1 and per_period >= 1, got {periods}, {per_period}")
        if first < self._t:
            raise ValueError(f"day-ahead offer for a day starting at {first}, now {self._t}")
        shadow = copy.deepcopy(self)
        n_bus = len(self._buses)
        end = min(first + periods * per_period, self.n_intervals)
        if end > first:
            _forecast_errors(
                shadow,
                self._t,
                first,
                end,
                (periods, per_period),
                errors=(pv_error, load_error, ev_error, temperature_error_c),
                seed=seed,
            )
        per_bus: list[list[list[BidCurve]]] = [[[] for _ in range(periods)] for _ in range(n_bus)]
        ev, hvac, outdoor = np.zeros(periods), np.zeros(periods), np.zeros(periods)
        price = np.zeros(periods)
        net = np.zeros(periods)
        pv = np.zeros(periods)
        count = np.zeros(periods)
        load = np.zeros(periods)
        for t in range(self._t, end):
            bids = shadow.bids(t)
            expected = shadow.forecast(t, 1)[:, 0]
            setpoints = {
                b: bids[b].quantity_at(float(expected[i])) for i, b in enumerate(self._buses)
            }
            outcome = shadow.dispatch(t, setpoints, {})
            if t < first:
                continue
            p = (t - first) // per_period
            for i, b in enumerate(self._buses):
                per_bus[i][p].append(bids[b])
            count[p] += 1
            price[p] += float(expected.mean())
            net[p] += float(outcome.actual_mw.sum())
            if "pv" in outcome.by_type:
                pv[p] += outcome.total("pv", "available_mw")
            load[p] += outcome.total("inflexible", "demand_mw")
            ev[p] += ev_net_mw(outcome)
            hvac[p] += outcome.total("hvac", "power_mw")
            outdoor[p] += outdoor_c(outcome)
        offers = {
            b: tuple(
                BidCurve.combine(curves).scaled(1.0 / len(curves)) if curves else BidCurve(0.0)
                for curves in per_bus[i]
            )
            for i, b in enumerate(self._buses)
        }
        n = np.maximum(count, 1)
        return DayAheadPlan(
            first, offers, price / n, net / n, pv / n, load / n, ev / n, hvac / n, outdoor / n
        )

    def volt_var_mvar(self, v_pu: Mapping[str, float]) -> FloatArray:
        """Reactive power (Mvar, + injected) per bus of the fleet's volt-var
        inverters at the bus voltages ``v_pu`` (pu, every bus of the fleet):
        each at ``rating x curve(v)`` (``PvSystems.reactive_mvar``); 0 at
        buses without any. Unlike :meth:`set_voltages` it changes nothing
        the fleet offers or does."""
        idx, vals = self._vector(v_pu, "voltage", complete=True)
        n = len(self._buses)
        v = np.ones(n)
        v[idx] = vals
        out = np.zeros(n)
        for g in self.groups:
            if isinstance(g, PvSystems):
                out += g.reactive_mvar(v, n)
        return out

    def set_voltages(self, v_pu: Mapping[str, float]) -> None:
        """Give the fleet measured bus voltages (pu) for volt-var inverters;
        buses not named keep their last value (1.0 at the start)."""
        idx, vals = self._vector(v_pu, "voltage", complete=False)
        self._voltage[idx] = vals
        self._cache = None  # offers depend on them
        for g in self.groups:
            if isinstance(g, PvSystems):
                g.set_voltages(self._voltage)

    # --- single devices (hardware in the loop)

    def device_index(self, kind: str, bus: str, nth: int = 0) -> int:
        """Fleet-wide index of the ``nth`` device of type ``kind`` at ``bus``
        (spec order); ``ValueError`` naming what exists otherwise."""
        group = self.group(kind)
        g = self.groups.index(group)
        local = (
            np.flatnonzero(group.bus == self._bus_index[bus])
            if bus in self._bus_index
            else np.zeros(0, dtype=np.intp)
        )
        if not 0 <= nth < len(local):
            raise ValueError(
                f"no {kind} number {nth} at bus {bus!r}: this fleet has {len(local)} "
                f"there (buses with {kind}: "
                f"{sorted({self._buses[b] for b in group.bus.tolist()})})"
            )
        return int(self._spans[g] + local[nth])

    def device_rating(self, index: int) -> tuple[str, float, float | None, float | None]:
        """(kind, rated MW, energy MWh or None, state of charge now or None) of a device."""
        g, i = self._locate(index)
        group = self.groups[g]
        if isinstance(group, Batteries):
            return group.kind, float(group.power[i]), float(group.capacity[i]), float(group.soc[i])
        if isinstance(group, PvSystems):
            return group.kind, float(group.rating[i]), None, None
        raise ValueError(f"device {index} is a {group.kind}; only batteries and PV can be hardware")

    def set_available(self, index: int, available: bool) -> None:
        """An unavailable device offers nothing and is dispatched at zero until
        it is available again (a fallback for hardware that stopped answering)."""
        self._locate(index)
        before = index in self._unavailable
        (self._unavailable.discard if available else self._unavailable.add)(index)
        if before == available:  # the state changed: offers and plans are stale
            self._cache = None
            self._plan = None

    def device_range(self, interval: int, index: int) -> tuple[float, float]:
        """(least, most) net demand, MW, device ``index`` can physically have in
        ``interval`` from its present state: a battery within its power and
        what its state of charge allows, a PV system between its available
        power and 0; always including 0. A measured reading (:meth:`dispatch`)
        must lie inside it."""
        self._offer(interval)
        self._locate(index)
        if self._range is None:
            lo = np.concatenate([np.zeros(0), *(lo for lo, _ in self._range_parts)])
            hi = np.concatenate([np.zeros(0), *(hi for _, hi in self._range_parts)])
            self._range = (np.minimum(lo, 0.0), np.maximum(hi, 0.0))
        return float(self._range[0][index]), float(self._range[1][index])

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < int(self._spans[-1]):
            raise ValueError(f"device index {index} outside 0..{int(self._spans[-1]) - 1}")
        g = int(np.searchsorted(self._spans, index, side="right") - 1)
        return g, index - int(self._spans[g])

    # --- bidding

    def bids(self, interval: int) -> dict[str, BidCurve]:
        """One net-demand curve per bus for ``interval`` (see module docstring)."""
        offer = self._offer(interval)
        curves = BidCurve.many(offer.bus_lo, offer.curve_price, offer.curve_mw, offer.curve_start)
        return dict(zip(self._buses, curves, strict=True))

    def _check_interval(self, interval: int, what: str) -> None:
        if interval != self._t:
            raise ValueError(
                f"{what} for interval {interval!r}, but the fleet is at interval "
                f"{self._t} (intervals run in order; dispatch advances by one)"
            )
        if self._t >= self.n_intervals:
            raise ValueError(
                f"{what} for interval {interval}: the run has {self.n_intervals} intervals"
            )

    def _tick(self, t: int) -> Tick:
        """Interval ``t`` as the devices see it: one per interval (its outlook
        keeps what it computed) until the price estimate changes."""
        clock = self._first + t
        if self._ticked is None or self._ticked.t != clock:
            self._ticked = Tick(
                t=clock,
                slot=clock % self._slots,
                slots=self._slots,
                dt_h=self._dt_h,
                outlook=Outlook(self._est, clock),
            )
        return self._ticked

    def _offer(self, interval: int) -> offers.FleetOffer:
        self._check_interval(interval, "bids")
        if self._cache is not None and self._cache.interval == interval:
            return self._cache
        tick = self._tick(interval)
        group_offers = [g.offer(tick) for g in self.groups]
        # what each device can physically do, before the unavailable ones are withdrawn;
        # idling (0) is always possible, whatever a must-run or must-charge offer says
        self._range_parts = [(o.lo, o.hi) for o in group_offers]  # _withdraw copies, not edits
        self._range = None
        for index in sorted(self._unavailable):
            g, i = self._locate(index)
            _withdraw(group_offers[g], i)
        self._cache = offers.assemble(
            interval, group_offers, self._bus_sums, self.spec.max_blocks, self._owners
        )
        return self._cache

    # --- dispatch

    def _vector(
        self, values: Mapping[str, float], what: str, *, complete: bool
    ) -> tuple[IntArray, FloatArray]:
        """Bus indices and values of a ``{bus: number}`` mapping, validated."""
        try:
            index = np.array([self._bus_index[bus] for bus in values], dtype=np.intp)
        except KeyError as exc:
            raise ValueError(
                f"{what} for unknown bus {exc.args[0]!r}: this fleet has devices at "
                f"{len(self._buses)} buses ({', '.join(self._buses[:5])}"
                f"{', ...' if len(self._buses) > 5 else ''})"
            ) from None
        raw = list(values.values())
        if not all(type(v) is float for v in raw):  # fast path; ABC checks are slow
            for bus, v in values.items():
                if not isinstance(v, Real) or isinstance(v, bool):
                    raise ValueError(f"{what} for bus {bus!r} must be a number, got {v!r}")
        out = np.array(raw, dtype=float)
        if not np.all(np.isfinite(out)):
            bad = list(values)[int(np.flatnonzero(~np.isfinite(out))[0])]
            raise ValueError(f"{what} for bus {bad!r} must be finite, got {values[bad]!r}")
        if complete and len(index) != len(self._buses):
            missing = [b for b in self._buses if b not in values]
            raise ValueError(f"{what} missing for {len(missing)} bus(es): {', '.join(missing[:5])}")
        return index, out

    def plan(self, interval: int, setpoints_mw: Mapping[str, float]) -> FloatArray:
        """Each device's net demand (MW, fleet order) for per-bus set-points,
        without advancing: what hardware in the loop is told to do.
        :meth:`dispatch` with the same set-points then uses this plan."""
        return self._planned(interval, setpoints_mw).net.copy()

    def _planned(self, interval: int, setpoints_mw: Mapping[str, float]) -> _Plan:
        self._check_interval(interval, "dispatch")
        wanted = dict(setpoints_mw)
        if (
            self._plan is not None
            and self._plan.interval == interval
            and self._plan.setpoints == wanted
        ):
            return self._plan
        idx, vals = self._vector(setpoints_mw, "set-point", complete=True)
        offer = self._offer(interval)
        requested = np.empty(len(self._buses))
        requested[idx] = vals
        target = np.clip(requested, offer.bus_lo, offer.bus_hi)
        dispatched = offer.dev_lo + offers.fill(offer, target - offer.bus_lo)
        net = dispatched
        if self.spec.response_error > 0.0 and len(net):
            noise = self._rng.standard_normal(len(net)) * self.spec.response_error
            net = np.clip(net * (1.0 + noise), offer.dev_lo, offer.dev_hi)
        self._plan = _Plan(interval, wanted, requested, target, dispatched, net)
        return self._plan

    def dispatch(
        self,
        interval: int,
        setpoints_mw: Mapping[str, float],
        prices: Mapping[str, float],
        measured: Mapping[int, DeviceReading] | None = None,
    ) -> DispatchOutcome:
        """Follow per-bus net-demand set-points for ``interval`` and advance.

        ``setpoints_mw`` must name every bus in :attr:`buses` (an unknown or
        missing bus raises ``ValueError``); a set-point outside its curve's
        range is clipped to it and the difference shows in
        :attr:`DispatchOutcome.deviation_mw`. ``prices`` ($/MWh, any subset
        of the buses) update the expected prices. ``measured`` (device index
        -> reading) replaces the modelled output of devices run by hardware.
        """
        self._check_interval(interval, "dispatch")
        p_idx, p_vals = self._vector(prices, "price", complete=False)
        plan = self._planned(interval, setpoints_mw)
        offer = self._offer(interval)
        tick = self._tick(interval)
        n_bus = len(self._buses)
        net, dispatched = plan.net, plan.dispatched
        readings = dict(measured or {})
        for index, reading in readings.items():
            _check_reading(index, reading, self.device_range(interval, index))
        by_type: dict[str, TypeOutcome] = {}
        actual = np.empty(len(net))
        for g, sums, g_offer, a, b in zip(
            self.groups,
            self._group_sums,
            offer.groups,
            self._spans[:-1],
            self._spans[1:],
            strict=True,
        ):
            actual[a:b] = g.apply(tick, g_offer, net[a:b])
            for index in sorted(i for i in readings if a <= i < b):
                reading = readings[index]
                actual[index] = reading.mw
                sync = getattr(g, "sync", None)
                if sync is not None:
                    sync(index - a, reading.mw, reading.soc)
            by_type[g.kind] = TypeOutcome(
                kind=g.kind,
                table=g.table,
                devices=sums.count.copy(),
                baseline_mw=sums.sum(offer.dev_base[a:b]),
                min_mw=sums.sum(offer.dev_lo[a:b]),
                max_mw=sums.sum(offer.dev_hi[a:b]),
                dispatched_mw=sums.sum(dispatched[a:b]),
                actual_mw=sums.sum(actual[a:b]),
                state=g.summary(sums),
            )
        price_by_bus = np.full(n_bus, np.nan)
        price_by_bus[p_idx] = p_vals
        everyone = np.arange(n_bus)
        ahead = tick.outlook.ahead(self._horizon)[self._est.label]
        clock = self._first + interval
        published = self._est.published_at(np.array([clock])) is not None
        outcome = DispatchOutcome(
            interval=interval,
            buses=self._buses,
            requested_mw=_readonly(plan.requested.copy()),
            target_mw=_readonly(plan.target.copy()),
            actual_mw=_readonly(self._bus_sums.sum(actual)),
            baseline_mw=_readonly(self._bus_sums.sum(offer.dev_base)),
            prices=_readonly(price_by_bus),
            by_type=by_type,
            expected_price=_readonly(tick.outlook.now(everyone)),
            forecast_low=_readonly(ahead.min(axis=1)),
            forecast_high=_readonly(ahead.max(axis=1)),
            published=published,
        )
        self._est.update(p_idx, p_vals, clock % self._slots)
        self._ticked = None
        self._t += 1
        self._cache = None
        self._plan = None
        return outcome


def _forecast_errors(
    shadow: Fleet,
    now: int,
    first: int,
    end: int,
    shape: tuple[int, int],
    *,
    errors: tuple[float, float, float, float],
    seed: int,
) -> None:
    """Put the day-ahead forecast errors into ``shadow`` (a copy of a fleet)
    for the day's intervals ``first .. end - 1`` (see :meth:`Fleet.day_ahead`):
    ``errors`` are the sd of the sky (relative, per period), inflexible loads
    (relative, per period and load), EV sessions' energy (relative, per
    session) and outdoor temperature (degC, per period)."""
    periods, per_period = shape
    pv_error, load_error, ev_error, temperature_error_c = errors
    if pv_error > 0.0:
        rng = np.random.default_rng([seed, 2909, first])
        factor = np.maximum(0.0, 1.0 + rng.normal(0.0, pv_error, periods))
        _forecast_sky(shadow, first, end, np.repeat(factor, per_period)[: end - first])
    if load_error > 0.0:
        rng = np.random.default_rng([seed, 3571, first])
        for g in shadow.groups:
            if isinstance(g, InflexibleLoads):
                factor = np.maximum(0.0, 1.0 + rng.normal(0.0, load_error, (periods, len(g.bus))))
                g.demand = g.demand.copy()
                g.demand[first:end] *= np.repeat(factor, per_period, axis=0)[: end - first]
    if ev_error > 0.0:
        rng = np.random.default_rng([seed, 4409, first])
        for g in shadow.groups:
            if isinstance(g, Evs):
                _forecast_ev_energy(g, now, end, ev_error, rng)
    if temperature_error_c > 0.0:
        rng = np.random.default_rng([seed, 5303, first])
        delta = np.repeat(rng.normal(0.0, temperature_error_c, periods), per_period)
        for g in shadow.groups:
            if isinstance(g, Hvacs):
                g.outdoor = g.outdoor.copy()
                g.outdoor[first:end] += delta[: end - first]


def ev_net_mw(outcome: DispatchOutcome) -> float:
    """The fleet's EV net charging in an outcome, MW (0 without EVs)."""
    return outcome.total("ev", "charge_mw") - outcome.total("ev", "discharge_mw")


def outdoor_c(outcome: DispatchOutcome) -> float:
    """Mean outdoor temperature at the fleet's air conditioners and heat
    pumps in an outcome, degC (NaN without any)."""
    t = outcome.by_type.get("hvac")
    if t is None:
        return math.nan
    ambient = np.asarray(t.state["ambient_c"], dtype=float)
    return float(np.nanmean(ambient)) if np.isfinite(ambient).any() else math.nan


def _forecast_ev_energy(
    evs: Evs, now: int, end: int, error: float, rng: np.random.Generator
) -> None:
    """Forecast the energy EV sessions arriving in ``now .. end - 1`` arrive
    needing, with a relative error (sd ``error``) per session (on a copy of a
    fleet): sessions plugged in already are known."""
    factor = np.maximum(1.0 + rng.normal(0.0, error, evs.arrive.shape), 0.0)
    ahead = (evs.arrive >= now) & (evs.arrive < end)
    need = evs.e_req[:, None] - evs.e_arrive
    forecast = np.clip(evs.e_req[:, None] - need * factor, 0.0, evs.e_req[:, None])
    evs.e_arrive = np.where(ahead, forecast, evs.e_arrive)


def _forecast_sky(fleet: Fleet, first: int, end: int, factor: FloatArray) -> None:
    """Scale ``fleet``'s irradiance and PV profiles over intervals ``first ..
    end - 1`` by ``factor`` (a forecast's error; on a copy of a fleet)."""
    if fleet.weather is not None:
        poa = np.array(fleet.weather.poa, dtype=float)
        poa[:, first:end, :] *= factor[None, :, None]
        weather = dataclasses.replace(fleet.weather, poa=poa)
        fleet.weather = weather
        for g in fleet.groups:
            if hasattr(g, "weather"):
                g.weather = weather
    for g in fleet.groups:
        if isinstance(g, PvSystems):
            g.profile = g.profile.copy()
            g.profile[:, first:end] *= factor[None, :]


def _check_reading(index: int, reading: DeviceReading, bounds: tuple[float, float]) -> None:
    """A measured reading the device cannot have produced is a bug upstream
    (the HIL gateway checks plausibility and clips before sending)."""
    lo, hi = bounds
    slack = 1e-9 * max(1.0, abs(lo), abs(hi))
    if not (math.isfinite(reading.mw) and lo - slack <= reading.mw <= hi + slack):
        raise ValueError(
            f"measured output of device {index} must lie in its range [{lo:.6g}, {hi:.6g}] "
            f"MW this interval, got {reading.mw!r}"
        )
    if reading.soc is not None and not (math.isfinite(reading.soc) and 0 <= reading.soc <= 1):
        raise ValueError(f"measured soc of device {index} must be within 0..1, got {reading.soc!r}")


def _withdraw(offer: GroupOffer, i: int) -> None:
    """Make device ``i`` of a group offer a fixed zero (no blocks)."""
    for name in ("lo", "hi", "base", "mw"):
        setattr(offer, name, np.array(getattr(offer, name), dtype=float))
    offer.lo[i] = offer.hi[i] = offer.base[i] = 0.0
    offer.mw[offer.owner == i] = 0.0


def _compute_sky(spec: FleetSpec, orientations: list[str]) -> SkyTable:
    """The site's sky, computed now (imports pvlib: about 2 s; the federation
    build precomputes it instead)."""
    from dsosim.federates.aggregator.solar import sky_table

    return sky_table(spec.site, orientations)


def _readonly(a: FloatArray) -> FloatArray:
    a.setflags(write=False)
    return a
