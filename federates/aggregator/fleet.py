"""The DER fleet role that an aggregator federate hosts (plain Python, no HELICS).

A :class:`Fleet` holds every device of one aggregator as numpy arrays, one
group per device type (batteries, PV, curtailable loads, shiftable loads),
and does two things per market interval:

1. :meth:`Fleet.bids` - one net-demand :class:`BidCurve` per feeder bus,
   deliverable over the whole interval from the devices' present state;
2. :meth:`Fleet.dispatch` - follow per-bus net-demand set-points, apply the
   interval's physics and report what the devices actually did.

Every device contributes a fixed part (its least net demand over the
interval) and blocks ``(price, mw)`` in the convention of
:mod:`dsosim.federates.common.curves`; a bus curve is the sum of the curves of
the devices at that bus. Dispatch fills a bus's blocks in price order,
highest first (pro rata among equal prices), which is exactly how a market
clearing at price ``p`` reads the curve: the devices that would move at
``p`` are the ones that move.

Offer rules
-----------
* **PV**: available output ``a = rating * profile[t]`` is injected at any
  price (``base = -a``); a curtailable system adds the block
  ``(-curtail_cost, a)``, so it stops injecting only when the price falls to
  minus its curtailment cost (lost production incentive).
* **Curtailable load**: demand ``d = peak * profile[t]``; ``base = (1 -
  share) * d`` is inflexible and the block ``(value_per_mwh, share * d)`` is
  consumed only at or below its value.
* **Battery** (opportunity cost; ``eta`` = round-trip efficiency, split
  ``sqrt(eta)`` for charging and discharging). The fleet keeps an expected
  price per bus and time-of-day slot (prior from the spec, exponentially
  smoothed with every price received in dispatch). Over the next
  ``horizon_h`` hours of expected prices:

  - the stored energy above ``soc_min`` could be sold in ``n_d`` full-power
    intervals, so its marginal MWh is worth the ``n_d``-th highest expected
    price ``v`` (the fuller the battery, the lower ``v``);
  - the headroom below ``soc_max`` could be filled in ``n_c`` full-power
    intervals, so the marginal charging price is the ``n_c``-th lowest
    expected price ``c``;
  - discharge now at price ``p`` if ``p >= max(v, c / eta)`` (better than
    selling that energy later, and worth buying back later); charge now if
    ``p <= min(c, eta * v)`` (no dearer than charging later, and profitable
    against the value of the stored MWh).

  The deliverable discharge and charge power are each split into
  ``battery_blocks`` equal tranches, each priced at the state of charge the
  battery would have in the middle of that tranche, so deeper discharge
  asks for a higher price and deeper charging for a lower one. Charge prices
  are capped at the lowest discharge price, so a battery never offers to
  charge and discharge at the same price. Order statistics are linearly
  interpolated between neighbouring intervals so offers move smoothly with
  the state of charge.
* **Shiftable load**: must consume ``energy_mwh`` inside its daily window,
  at most ``power_mw``. Whatever cannot be left to the remaining intervals of
  the window is forced now (``base``); the rest of what it could take now is
  one block priced at the expected price of the cheapest remaining
  intervals it would otherwise use (its marginal one).

All block prices are clipped to ``[PRICE_FLOOR, PRICE_CAP]``.

Time: interval 0 starts at midnight; ``interval_s`` must divide a day.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from dsosim.federates.common import profiles
from dsosim.federates.common.curves import PRICE_CAP, PRICE_FLOOR, BidCurve

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

SECONDS_PER_DAY = 86_400
EPS_MW = 1e-9
"""Blocks smaller than this are dropped (a curve block must be > 0 MW)."""

LoadShape = Literal["residential", "commercial"]
_LOAD_SHAPES: tuple[LoadShape, ...] = ("residential", "commercial")


# ------------------------------------------------------------------ config


def _fail(owner: str, name: str, message: str) -> None:
    raise ValueError(f"{owner}.{name}: {message}")


def _positive(owner: str, name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0.0):
        _fail(owner, name, f"must be a finite number > 0, got {value!r}")


def _fraction(owner: str, name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        _fail(owner, name, f"must be in [0, 1], got {value!r}")


def _price(owner: str, name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and PRICE_FLOOR <= value <= PRICE_CAP):
        _fail(owner, name,
              f"must be a price in [{PRICE_FLOOR:g}, {PRICE_CAP:g}] $/MWh, got {value!r}")


def _bus(owner: str, bus: str) -> None:
    if not (isinstance(bus, str) and bus):
        _fail(owner, "bus", f"must be a non-empty bus name, got {bus!r}")


@dataclass(frozen=True, slots=True)
class BatterySpec:
    """A battery at a feeder bus. SOC values are fractions of ``energy_mwh``;
    ``efficiency`` is round-trip (AC to AC)."""

    bus: str
    power_mw: float
    energy_mwh: float
    soc_init: float = 0.5
    soc_min: float = 0.1
    soc_max: float = 0.9
    efficiency: float = 0.9

    def __post_init__(self) -> None:
        owner = f"BatterySpec(bus={self.bus!r})"
        _bus(owner, self.bus)
        _positive(owner, "power_mw", self.power_mw)
        _positive(owner, "energy_mwh", self.energy_mwh)
        for name in ("soc_init", "soc_min", "soc_max"):
            _fraction(owner, name, getattr(self, name))
        if not self.soc_min <= self.soc_init <= self.soc_max:
            _fail(owner, "soc_init", f"{self.soc_init} is outside [soc_min, soc_max] = "
                  f"[{self.soc_min}, {self.soc_max}]")
        if not (isinstance(self.efficiency, (int, float)) and 0.0 < self.efficiency <= 1.0):
            _fail(owner, "efficiency", f"must be in (0, 1], got {self.efficiency!r}")


@dataclass(frozen=True, slots=True)
class PvSpec:
    """A PV system. Output is ``rating_mw`` times a per-unit profile: the
    fleet's shared weather (:func:`profiles.pv_output`) unless ``profile``
    gives one value per interval. A curtailable system stops injecting when
    the price is at or below ``-curtail_cost``."""

    bus: str
    rating_mw: float
    curtailable: bool = True
    curtail_cost: float = 0.0
    profile: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        owner = f"PvSpec(bus={self.bus!r})"
        _bus(owner, self.bus)
        _positive(owner, "rating_mw", self.rating_mw)
        _price(owner, "curtail_cost (as -curtail_cost)", -self.curtail_cost)
        if self.profile is not None:
            object.__setattr__(self, "profile", tuple(float(x) for x in self.profile))
            if not all(0.0 <= x <= 1.0 for x in self.profile):  # type: ignore[union-attr]
                _fail(owner, "profile", "per-unit values must be in [0, 1]")


@dataclass(frozen=True, slots=True)
class FlexLoadSpec:
    """A curtailable load: ``peak_mw`` times a daily shape; the share
    ``curtailable_share`` of it is consumed only at prices at or below
    ``value_per_mwh``, the rest at any price."""

    bus: str
    peak_mw: float
    value_per_mwh: float = 100.0
    curtailable_share: float = 0.2
    shape: LoadShape = "residential"

    def __post_init__(self) -> None:
        owner = f"FlexLoadSpec(bus={self.bus!r})"
        _bus(owner, self.bus)
        _positive(owner, "peak_mw", self.peak_mw)
        _price(owner, "value_per_mwh", self.value_per_mwh)
        _fraction(owner, "curtailable_share", self.curtailable_share)
        if self.shape not in _LOAD_SHAPES:
            _fail(owner, "shape", f"must be one of {_LOAD_SHAPES}, got {self.shape!r}")


@dataclass(frozen=True, slots=True)
class ShiftableLoadSpec:
    """A load that must consume ``energy_mwh`` every day inside the window
    ``[window_start_h, window_end_h)`` (hours of day; the window may wrap
    past midnight; equal ends mean the whole day), at most ``power_mw``.
    An EV charging overnight is ``window_start_h=18, window_end_h=7``."""

    bus: str
    energy_mwh: float
    power_mw: float
    window_start_h: float = 0.0
    window_end_h: float = 24.0

    def __post_init__(self) -> None:
        owner = f"ShiftableLoadSpec(bus={self.bus!r})"
        _bus(owner, self.bus)
        _positive(owner, "energy_mwh", self.energy_mwh)
        _positive(owner, "power_mw", self.power_mw)
        for name in ("window_start_h", "window_end_h"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 24.0):
                _fail(owner, name, f"must be an hour in [0, 24], got {value!r}")
        hours = self.window_hours
        if self.energy_mwh > self.power_mw * hours * (1.0 + 1e-12):
            _fail(owner, "energy_mwh", f"{self.energy_mwh} MWh cannot be served at "
                  f"{self.power_mw} MW in a {hours:g} h window")

    @property
    def window_hours(self) -> float:
        """Length of the window, hours (24 when the ends coincide)."""
        length = (self.window_end_h - self.window_start_h) % 24.0
        return 24.0 if length == 0.0 else length


DeviceSpec = BatterySpec | PvSpec | FlexLoadSpec | ShiftableLoadSpec
"""Any one device of a fleet."""


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """Everything an aggregator's fleet is made of, plus its bidding knobs.

    ``price_prior`` is the expected price before any price is received:
    one number ($/MWh) or a daily shape of any length (e.g. 24 hourly
    values), spread evenly over the day. ``price_smoothing`` is the weight
    of a new price in the exponential smoothing of the expected price of its
    bus and time-of-day slot. ``response_error`` is the standard deviation
    of a multiplicative error on every device's response (0 = exact).
    """

    batteries: tuple[BatterySpec, ...] = ()
    pvs: tuple[PvSpec, ...] = ()
    flex_loads: tuple[FlexLoadSpec, ...] = ()
    shiftable_loads: tuple[ShiftableLoadSpec, ...] = ()
    price_prior: float | tuple[float, ...] = 25.0
    price_smoothing: float = 0.2
    horizon_h: float = 24.0
    battery_blocks: int = 3
    pv_cloudiness: float = 0.3
    response_error: float = 0.0

    def __post_init__(self) -> None:
        for name in ("batteries", "pvs", "flex_loads", "shiftable_loads"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        prior = self.price_prior
        if isinstance(prior, (int, float)):
            _price("FleetSpec", "price_prior", prior)
        else:
            object.__setattr__(self, "price_prior", tuple(float(x) for x in prior))
            if not self.price_prior:
                _fail("FleetSpec", "price_prior", "a price shape needs at least one value")
            for x in self.price_prior:  # type: ignore[union-attr]
                _price("FleetSpec", "price_prior", x)
        a = self.price_smoothing
        if not (isinstance(a, (int, float)) and 0.0 < a <= 1.0):
            _fail("FleetSpec", "price_smoothing", f"must be in (0, 1], got {a!r}")
        _positive("FleetSpec", "horizon_h", self.horizon_h)
        if not (isinstance(self.battery_blocks, int) and self.battery_blocks >= 1):
            _fail("FleetSpec", "battery_blocks",
                  f"must be an integer >= 1, got {self.battery_blocks!r}")
        _fraction("FleetSpec", "pv_cloudiness", self.pv_cloudiness)
        if not (isinstance(self.response_error, (int, float)) and 0.0 <= self.response_error < 1.0):
            _fail("FleetSpec", "response_error", f"must be in [0, 1), got {self.response_error!r}")


# ----------------------------------------------------------------- outcome


@dataclass(frozen=True, slots=True)
class DispatchOutcome:
    """What the fleet did in one interval. Per-bus arrays follow
    :attr:`Fleet.buses`; type totals are MW averaged over the interval."""

    interval: int
    buses: tuple[str, ...]
    requested_mw: FloatArray
    """Set-points as received."""
    target_mw: FloatArray
    """Set-points clipped into each bus curve's deliverable range."""
    actual_mw: FloatArray
    """Net demand the devices actually produced."""
    battery_charge_mw: float
    battery_discharge_mw: float
    pv_output_mw: float
    pv_curtailed_mw: float
    flex_served_mw: float
    flex_curtailed_mw: float
    shiftable_served_mw: float
    battery_soc: FloatArray
    """State of charge of each battery at the end of the interval (spec order)."""
    shiftable_remaining_mwh: FloatArray
    """Energy each shiftable load still has to consume in its current window."""

    @property
    def deviation_mw(self) -> FloatArray:
        """Actual minus requested net demand per bus (clipping + response error)."""
        return self.actual_mw - self.requested_mw

    def actual_by_bus(self) -> dict[str, float]:
        """``{bus: actual MW}``, the shape of a measurement message."""
        return dict(zip(self.buses, self.actual_mw.tolist(), strict=True))


@dataclass(slots=True)
class _Offer:
    """The fleet's offer for one interval, as arrays (internal)."""

    interval: int
    dev_lo: FloatArray  # least net demand of each device over the interval
    dev_hi: FloatArray  # most net demand of each device
    bus_lo: FloatArray
    bus_hi: FloatArray
    blk_bus: IntArray  # blocks sorted by bus, then price descending
    blk_price: FloatArray
    blk_mw: FloatArray
    blk_owner: IntArray  # device index of each block
    bus_start: IntArray  # blocks of bus i are [bus_start[i], bus_start[i + 1])
    pv_avail: FloatArray
    flex_demand: FloatArray
    shift_remaining: FloatArray  # energy still due at the start of the interval


def _readonly(a: FloatArray) -> FloatArray:
    a.setflags(write=False)
    return a


def _order_stat(sorted_rows: FloatArray, rows: IntArray, position: FloatArray) -> FloatArray:
    """Value at fractional ``position`` along ascending ``sorted_rows[rows]``,
    linearly interpolated and clamped to the row."""
    last = sorted_rows.shape[1] - 1
    x = np.clip(position, 0.0, last)
    i0 = np.floor(x).astype(np.intp)
    i1 = np.minimum(i0 + 1, last)
    w = x - i0
    r = rows.reshape(rows.shape + (1,) * (x.ndim - rows.ndim))
    return sorted_rows[r, i0] * (1.0 - w) + sorted_rows[r, i1] * w


class _PriceEstimate:
    """Expected price per bus and time-of-day slot, exponentially smoothed.

    Buses that have received identical price sequences share one row
    (``label[bus]`` -> ``rows[label]``), so the common case of one price for
    the whole feeder keeps one row to sort per interval however many buses
    there are. Groups only ever split.
    """

    def __init__(self, n_bus: int, prior: FloatArray, smoothing: float) -> None:
        self.label = np.zeros(n_bus, dtype=np.intp)
        self.rows = prior[None, :].copy()
        self.smoothing = smoothing

    def full(self) -> FloatArray:
        """The estimate as a ``(n_bus, n_slots)`` array."""
        return self.rows[self.label]

    def update(self, bus_idx: IntArray, prices: FloatArray, slot: int) -> None:
        """Smooth ``prices`` received at buses ``bus_idx`` into ``slot``."""
        if len(bus_idx) == 0:
            return
        got = np.zeros(len(self.label), dtype=bool)
        got[bus_idx] = True
        price = np.zeros(len(self.label))
        price[bus_idx] = prices
        order = np.lexsort((price, got, self.label))
        lab, g, pr = self.label[order], got[order], price[order]
        new = np.empty(len(order), dtype=bool)
        new[0] = True
        new[1:] = (lab[1:] != lab[:-1]) | (g[1:] != g[:-1]) | (pr[1:] != pr[:-1])
        first = order[new]  # one representative bus per new group
        rows = self.rows[self.label[first]]
        a = self.smoothing
        upd = got[first]
        rows[upd, slot] = (1.0 - a) * rows[upd, slot] + a * price[first][upd]
        self.label[order] = np.cumsum(new) - 1
        self.rows = rows


# ------------------------------------------------------------------- fleet


class Fleet:
    """A vectorised DER fleet; see the module docstring for the offer rules.

    Intervals are processed in order: ``bids(t)`` (any number of times, no
    state change) then ``dispatch(t)``, which advances the fleet to ``t + 1``.
    ``seed`` drives the PV weather and the response error.
    """

    def __init__(self, spec: FleetSpec, *, interval_s: float, n_intervals: int, seed: int) -> None:
        number = isinstance(interval_s, (int, float)) and interval_s > 0
        per_day = SECONDS_PER_DAY / interval_s if number else 0.5
        if not (math.isclose(per_day, round(per_day)) and round(per_day) >= 1):
            raise ValueError(
                f"interval_s must divide a day ({SECONDS_PER_DAY} s), got {interval_s!r}")
        if not (isinstance(n_intervals, int) and n_intervals >= 1):
            raise ValueError(f"n_intervals must be an integer >= 1, got {n_intervals!r}")
        self.spec = spec
        self.interval_s = float(interval_s)
        self.n_intervals = n_intervals
        self._dt_h = self.interval_s / 3600.0
        self._slots = round(SECONDS_PER_DAY / interval_s)
        self._horizon = max(1, round(spec.horizon_h * 3600.0 / self.interval_s))
        self._t = 0
        self._rng = np.random.default_rng((seed, 1))
        devices = (*spec.batteries, *spec.pvs, *spec.flex_loads, *spec.shiftable_loads)
        self._buses = tuple(sorted({d.bus for d in devices}))
        self._bus_index = {b: i for i, b in enumerate(self._buses)}
        self._init_batteries(spec.batteries)
        self._init_pvs(spec.pvs, seed)
        self._init_flex(spec.flex_loads)
        self._init_shiftable(spec.shiftable_loads)
        self._dev_bus = np.array([self._bus_index[d.bus] for d in devices], dtype=np.intp)
        self._est = _PriceEstimate(len(self._buses), self._prior_by_slot(spec.price_prior),
                                   spec.price_smoothing)
        self._cache: _Offer | None = None

    # --- construction helpers

    def _bus_array(self, devices: Sequence[DeviceSpec]) -> IntArray:
        return np.array([self._bus_index[d.bus] for d in devices], dtype=np.intp)

    def _init_batteries(self, specs: Sequence[BatterySpec]) -> None:
        def col(name: str) -> FloatArray:
            return np.array([getattr(s, name) for s in specs], dtype=float)

        self._b_bus = self._bus_array(specs)
        self._b_p, self._b_e = col("power_mw"), col("energy_mwh")
        self._b_smin, self._b_smax = col("soc_min"), col("soc_max")
        self._b_eta = col("efficiency")
        self._b_eta1 = np.sqrt(self._b_eta)  # each way: charging and discharging
        self._soc = col("soc_init")

    def _init_pvs(self, specs: Sequence[PvSpec], seed: int) -> None:
        self._pv_bus = self._bus_array(specs)
        self._pv_rating = np.array([s.rating_mw for s in specs], dtype=float)
        self._pv_curt = np.array([s.curtailable for s in specs], dtype=bool)
        self._pv_price = np.clip(np.array([-s.curtail_cost for s in specs], dtype=float),
                                 PRICE_FLOOR, PRICE_CAP)
        rows = [profiles.pv_output(self.n_intervals, self.interval_s, seed,
                                   cloudiness=self.spec.pv_cloudiness)] if specs else []
        index = []
        for s in specs:
            if s.profile is None:
                index.append(0)
                continue
            if len(s.profile) < self.n_intervals:
                raise ValueError(f"PvSpec(bus={s.bus!r}).profile: {len(s.profile)} values for "
                                 f"{self.n_intervals} intervals")
            rows.append(np.asarray(s.profile[: self.n_intervals], dtype=float))
            index.append(len(rows) - 1)
        self._pv_profiles = np.array(rows, dtype=float).reshape(len(rows), self.n_intervals)
        self._pv_prof = np.array(index, dtype=np.intp)

    def _init_flex(self, specs: Sequence[FlexLoadSpec]) -> None:
        self._f_bus = self._bus_array(specs)
        self._f_peak = np.array([s.peak_mw for s in specs], dtype=float)
        self._f_value = np.array([s.value_per_mwh for s in specs], dtype=float)
        self._f_share = np.array([s.curtailable_share for s in specs], dtype=float)
        self._f_prof = np.array([_LOAD_SHAPES.index(s.shape) for s in specs], dtype=np.intp)
        self._f_profiles = np.stack([
            profiles.residential_load(self.n_intervals, self.interval_s),
            profiles.commercial_load(self.n_intervals, self.interval_s),
        ])

    def _init_shiftable(self, specs: Sequence[ShiftableLoadSpec]) -> None:
        s_per_h = 3600.0 / self.interval_s
        self._s_bus = self._bus_array(specs)
        self._s_e = np.array([s.energy_mwh for s in specs], dtype=float)
        self._s_p = np.array([s.power_mw for s in specs], dtype=float)
        self._s_a = np.array([round(s.window_start_h * s_per_h) % self._slots for s in specs],
                             dtype=np.intp)
        self._s_b = np.array([round(s.window_end_h * s_per_h) % self._slots for s in specs],
                             dtype=np.intp)
        self._s_len = (self._s_b - self._s_a - 1) % self._slots + 1
        # Starting inside a window: owe the share of the energy for what is left of it.
        in_window, n_rem = self._window_position(0)
        self._s_remaining = np.where(in_window, self._s_e * n_rem / self._s_len, 0.0)
        self._s_width = max(1, int(self._s_len.max(initial=1)) - 1)

    def _prior_by_slot(self, prior: float | tuple[float, ...]) -> FloatArray:
        if isinstance(prior, (int, float)):
            return np.full(self._slots, float(prior))
        shape = np.asarray(prior, dtype=float)
        return shape[(np.arange(self._slots) * len(shape)) // self._slots]

    # --- public state

    @property
    def buses(self) -> tuple[str, ...]:
        """Feeder buses with at least one device, sorted."""
        return self._buses

    @property
    def interval(self) -> int:
        """The next interval to bid and dispatch."""
        return self._t

    @property
    def battery_soc(self) -> FloatArray:
        """State of charge of each battery (fraction, spec order), a copy."""
        return self._soc.copy()

    @property
    def expected_prices(self) -> FloatArray:
        """Expected price per bus (rows, :attr:`buses` order) and time-of-day
        slot (columns), $/MWh, a copy."""
        return self._est.full()

    # --- bidding

    def bids(self, interval: int) -> dict[str, BidCurve]:
        """One net-demand curve per bus for ``interval`` (see module docstring)."""
        offer = self._offer(interval)
        prices = offer.blk_price.tolist()
        mws = offer.blk_mw.tolist()
        start = offer.bus_start.tolist()
        lo = offer.bus_lo.tolist()
        return {
            bus: BidCurve(base, tuple(zip(prices[a:b], mws[a:b])))
            for bus, base, a, b in zip(self._buses, lo, start[:-1], start[1:], strict=True)
        }

    def _check_interval(self, interval: int, what: str) -> None:
        if interval != self._t:
            raise ValueError(f"{what} for interval {interval!r}, but the fleet is at interval "
                             f"{self._t} (intervals run in order; dispatch advances by one)")
        if self._t >= self.n_intervals:
            raise ValueError(
                f"{what} for interval {interval}: the run has {self.n_intervals} intervals")

    def _offer(self, interval: int) -> _Offer:
        self._check_interval(interval, "bids")
        if self._cache is not None and self._cache.interval == interval:
            return self._cache
        t = interval
        b_lo, b_hi, b_price, b_mw, b_own = self._battery_offer(t)
        pv_avail = self._pv_rating * self._pv_profiles[self._pv_prof, t]
        demand = self._f_peak * self._f_profiles[self._f_prof, t]
        s_rem, s_must, s_flex, s_price = self._shiftable_offer(t)

        n_b, n_pv, n_f = len(self._b_p), len(pv_avail), len(demand)
        o_pv, o_f = n_b, n_b + n_pv
        o_s = o_f + n_f
        dev_lo = np.concatenate([b_lo, -pv_avail, (1.0 - self._f_share) * demand, s_must])
        price = np.concatenate([b_price, self._pv_price, self._f_value, s_price])
        mw = np.concatenate([b_mw, np.where(self._pv_curt, pv_avail, 0.0),
                             self._f_share * demand, s_flex])
        owner = np.concatenate([b_own, o_pv + np.arange(n_pv), o_f + np.arange(n_f),
                                o_s + np.arange(len(s_must))])
        keep = mw > EPS_MW
        price, mw, owner = np.clip(price[keep], PRICE_FLOOR, PRICE_CAP), mw[keep], owner[keep]
        bus = self._dev_bus[owner]
        order = np.lexsort((-price, bus))
        n_dev, n_bus = len(dev_lo), len(self._buses)
        dev_hi = dev_lo + np.bincount(owner, mw, minlength=n_dev)
        self._cache = _Offer(
            interval=t,
            dev_lo=dev_lo,
            dev_hi=dev_hi,
            bus_lo=np.bincount(self._dev_bus, dev_lo, minlength=n_bus),
            bus_hi=np.bincount(self._dev_bus, dev_hi, minlength=n_bus),
            blk_bus=bus[order],
            blk_price=price[order],
            blk_mw=mw[order],
            blk_owner=owner[order],
            bus_start=np.searchsorted(bus[order], np.arange(n_bus + 1)),
            pv_avail=pv_avail,
            flex_demand=demand,
            shift_remaining=s_rem,
        )
        return self._cache

    def _future_prices(self, t: int, buses: IntArray) -> tuple[FloatArray, IntArray]:
        """Expected prices of the next ``horizon`` intervals, sorted ascending,
        one row per distinct estimate among ``buses``, and each bus's row."""
        rows, row_of = np.unique(self._est.label[buses], return_inverse=True)
        est = self._est.rows[rows]
        if self._horizon != self._slots:
            est = est[:, (t + 1 + np.arange(self._horizon)) % self._slots]
        # With a one-day horizon the future is every slot once, in any order.
        return np.sort(est, axis=1), row_of

    def _battery_offer(
        self, t: int
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, IntArray]:
        """Least and most net demand, and blocks (price, mw, owner), of every battery."""
        k = self.spec.battery_blocks
        dt, p, cap = self._dt_h, self._b_p, self._b_e
        eta, e1 = self._b_eta, self._b_eta1
        stored = np.maximum((self._soc - self._b_smin) * cap, 0.0)  # MWh above soc_min
        room = np.maximum((self._b_smax - self._soc) * cap, 0.0)  # MWh below soc_max
        dmax = np.minimum(p, stored * e1 / dt)
        cmax = np.minimum(p, room / (e1 * dt))
        if len(p) == 0:
            empty = np.zeros(0)
            return empty, empty, empty, empty, np.zeros(0, dtype=np.intp)
        f, row = self._future_prices(t, self._b_bus)
        horizon = f.shape[1]
        mid = (np.arange(k) + 0.5) / k  # tranche midpoints, fraction of the deliverable power
        per_unit = (p * dt)[:, None]  # grid MWh of one full-power interval

        def value_of_stored(e: FloatArray) -> FloatArray:  # n_d-th highest expected price
            return _order_stat(f, row, horizon - e * e1[:, None] / per_unit)

        def cost_of_room(h: FloatArray) -> FloatArray:  # n_c-th lowest expected price
            return _order_stat(f, row, h / (e1[:, None] * per_unit) - 1.0)

        # stored MWh removed (added) by the middle of each discharge (charge) tranche
        out = mid * (dmax * dt / e1)[:, None]
        into = mid * (cmax * dt * e1)[:, None]
        e_col, h_col, eta_col = stored[:, None], room[:, None], eta[:, None]
        d_price = np.maximum(value_of_stored(e_col - out), cost_of_room(h_col + out) / eta_col)
        c_price = np.minimum(cost_of_room(h_col - into), eta_col * value_of_stored(e_col + into))
        c_price = np.minimum(c_price, d_price[:, :1])
        price = np.concatenate([d_price, c_price], axis=1)
        mw = np.concatenate([np.repeat((dmax / k)[:, None], k, axis=1),
                             np.repeat((cmax / k)[:, None], k, axis=1)], axis=1)
        owner = np.repeat(np.arange(len(p)), 2 * k)
        return -dmax, cmax, price.ravel(), mw.ravel(), owner

    def _window_position(self, t: int) -> tuple[NDArray[np.bool_], IntArray]:
        """Whether interval ``t`` lies in each shiftable window, and how many
        intervals of the window remain counting ``t``."""
        s, a, b = t % self._slots, self._s_a, self._s_b
        inside = np.where(a < b, (a <= s) & (s < b), np.where(a > b, (s >= a) | (s < b), True))
        n_rem = (b - s - 1) % self._slots + 1
        return inside, n_rem

    def _shiftable_offer(self, t: int) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Energy due, forced MW, flexible MW and its price, per shiftable load."""
        if len(self._s_e) == 0:
            empty = np.zeros(0)
            return empty, empty, empty, empty
        dt, p = self._dt_h, self._s_p
        inside, n_rem = self._window_position(t)
        due = np.where(t % self._slots == self._s_a, self._s_e, self._s_remaining)
        due = np.where(inside, due, 0.0)
        later = p * dt * (n_rem - 1)  # most that can be left to the rest of the window
        must = np.where(inside, np.minimum(p, np.maximum(due - later, 0.0) / dt), 0.0)
        flex = np.maximum(np.where(inside, np.minimum(p, due / dt), 0.0) - must, 0.0)
        # Expected prices of the rest of the window, ascending; past its end:
        # PRICE_CAP. Loads sharing an estimate row and a window share a row here.
        key = (self._est.label[self._s_bus] * self._slots + self._s_a) * self._slots + self._s_b
        _, first, row = np.unique(key, return_index=True, return_inverse=True)
        k = np.arange(self._s_width)
        slots = (t + 1 + k) % self._slots
        f = self._est.rows[self._est.label[self._s_bus[first]][:, None], slots[None, :]]
        f = np.sort(np.where(k[None, :] < (n_rem[first] - 1)[:, None], f, PRICE_CAP), axis=1)
        n_later = (due - must * dt) / (p * dt)  # full-power intervals it would otherwise use
        position = np.minimum(n_later - 1.0, np.maximum(n_rem - 2, 0))
        price = _order_stat(f, row, position)
        return due, must, flex, price

    # --- dispatch

    def _vector(
        self, values: Mapping[str, float], what: str, *, complete: bool
    ) -> tuple[IntArray, FloatArray]:
        """Bus indices and values of a ``{bus: number}`` mapping, validated."""
        try:
            index = np.array([self._bus_index[bus] for bus in values], dtype=np.intp)
        except KeyError as exc:
            raise ValueError(f"{what} for unknown bus {exc.args[0]!r}: this fleet has devices at "
                             f"{len(self._buses)} buses ({', '.join(self._buses[:5])}"
                             f"{', ...' if len(self._buses) > 5 else ''})") from None
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

    def dispatch(
        self, interval: int, setpoints_mw: Mapping[str, float], prices: Mapping[str, float]
    ) -> DispatchOutcome:
        """Follow per-bus net-demand set-points for ``interval`` and advance.

        ``setpoints_mw`` must name every bus in :attr:`buses` (an unknown or
        missing bus raises ``ValueError``); a set-point outside its curve's
        range is clipped to it and the difference shows in
        :attr:`DispatchOutcome.deviation_mw`. ``prices`` ($/MWh, any subset
        of the buses) update the expected prices.
        """
        self._check_interval(interval, "dispatch")
        idx, vals = self._vector(setpoints_mw, "set-point", complete=True)
        p_idx, p_vals = self._vector(prices, "price", complete=False)
        offer = self._offer(interval)
        requested = np.empty(len(self._buses))
        requested[idx] = vals
        target = np.clip(requested, offer.bus_lo, offer.bus_hi)
        net = offer.dev_lo + self._fill(offer, target - offer.bus_lo)
        if self.spec.response_error > 0.0:
            noise = self._rng.standard_normal(len(net)) * self.spec.response_error
            net = np.clip(net * (1.0 + noise), offer.dev_lo, offer.dev_hi)
        outcome = self._apply(offer, net, requested, target)
        self._est.update(p_idx, p_vals, interval % self._slots)
        self._t += 1
        self._cache = None
        return outcome

    @staticmethod
    def _fill(offer: _Offer, extra: FloatArray) -> FloatArray:
        """MW taken from each device's blocks when bus ``i`` takes ``extra[i]``
        above its base: blocks in price order, pro rata among equal prices."""
        n_dev = len(offer.dev_lo)
        if len(offer.blk_mw) == 0:
            return np.zeros(n_dev)
        bus, price, mw = offer.blk_bus, offer.blk_price, offer.blk_mw
        new = np.empty(len(mw), dtype=bool)
        new[0] = True
        new[1:] = (bus[1:] != bus[:-1]) | (price[1:] != price[:-1])
        group = np.cumsum(new) - 1
        starts = np.flatnonzero(new)
        g_mw = np.add.reduceat(mw, starts)
        g_bus = bus[starts]
        before = np.cumsum(g_mw) - g_mw  # taken before the group, counted over all buses
        first = np.flatnonzero(np.concatenate(([True], g_bus[1:] != g_bus[:-1])))
        bus_first = np.repeat(first, np.diff(np.append(first, len(g_mw))))
        before -= before[bus_first]
        share = np.clip((extra[g_bus] - before) / g_mw, 0.0, 1.0)
        return np.bincount(offer.blk_owner, mw * share[group], minlength=n_dev)

    def _apply(self, offer: _Offer, net: FloatArray, requested: FloatArray,
               target: FloatArray) -> DispatchOutcome:
        """Physics of the interval for device net demands ``net``."""
        n_b, n_pv, n_f = len(self._b_p), len(self._pv_rating), len(self._f_peak)
        b_net = net[:n_b]
        pv_out = -net[n_b:n_b + n_pv]
        served = net[n_b + n_pv:n_b + n_pv + n_f]
        s_served = net[n_b + n_pv + n_f:]
        charge, discharge = np.maximum(b_net, 0.0), np.maximum(-b_net, 0.0)
        stored = (charge * self._b_eta1 - discharge / self._b_eta1) * self._dt_h
        # The clip only removes floating-point dust: the offer kept power within the SOC limits.
        self._soc = np.clip(self._soc + stored / self._b_e, self._b_smin, self._b_smax)
        self._s_remaining = np.maximum(offer.shift_remaining - s_served * self._dt_h, 0.0)
        return DispatchOutcome(
            interval=offer.interval,
            buses=self._buses,
            requested_mw=_readonly(requested),
            target_mw=_readonly(target),
            actual_mw=_readonly(np.bincount(self._dev_bus, net, minlength=len(self._buses))),
            battery_charge_mw=float(charge.sum()),
            battery_discharge_mw=float(discharge.sum()),
            pv_output_mw=float(pv_out.sum()),
            pv_curtailed_mw=float((offer.pv_avail - pv_out).sum()),
            flex_served_mw=float(served.sum()),
            flex_curtailed_mw=float((offer.flex_demand - served).sum()),
            shiftable_served_mw=float(s_served.sum()),
            battery_soc=_readonly(self._soc.copy()),
            shiftable_remaining_mwh=_readonly(self._s_remaining.copy()),
        )


# --------------------------------------------------------------- placement


def make_fleet_spec(
    buses: Sequence[str],
    *,
    seed: int,
    bus_peak_mw: float | Mapping[str, float] = 0.05,
    pv_share: float = 0.3,
    battery_share: float = 0.1,
    flex_share: float = 0.2,
    shiftable_share: float = 0.0,
    commercial_share: float = 0.2,
    battery_hours: float = 2.0,
    price_prior: float | tuple[float, ...] = 25.0,
) -> FleetSpec:
    """Place devices over feeder buses with the given penetration shares.

    Each bus independently hosts each device type with probability equal to
    its share (drawn from ``seed``, buses taken in sorted order so the input
    order does not matter). Sizes scale with the bus's peak load
    ``bus_peak_mw`` (one value or per bus) times a uniform factor in
    [0.7, 1.3]:

    * PV rating = 1.0 x peak (rooftop systems sized to the house or building);
    * battery power = 0.5 x peak, energy = ``battery_hours`` x power;
    * curtailable load = 0.3 x peak (the enrolled part of the bus load, which
      a host also modelling the bus load must not count twice), commercial
      shape with probability ``commercial_share``, value $60-200/MWh, 20-50 %
      curtailable;
    * shiftable load (e.g. an EV) = 0.2 x peak power, 3 h of it a day, in an
      18:00-07:00 window.
    """
    names = sorted(set(buses))
    for name, share in (("pv_share", pv_share), ("battery_share", battery_share),
                        ("flex_share", flex_share), ("shiftable_share", shiftable_share),
                        ("commercial_share", commercial_share)):
        _fraction("make_fleet_spec", name, share)
    _positive("make_fleet_spec", "battery_hours", battery_hours)
    if isinstance(bus_peak_mw, Mapping):
        missing = [b for b in names if b not in bus_peak_mw]
        if missing:
            raise ValueError(
                f"make_fleet_spec.bus_peak_mw: no peak for bus(es) {', '.join(missing[:5])}")
        peak = np.array([bus_peak_mw[b] for b in names], dtype=float)
    else:
        peak = np.full(len(names), float(bus_peak_mw))
    if not np.all(np.isfinite(peak) & (peak > 0.0)):
        raise ValueError("make_fleet_spec.bus_peak_mw: peaks must be finite and > 0")
    rng = np.random.default_rng(seed)
    n = len(names)
    shares = np.array([[pv_share], [battery_share], [flex_share], [shiftable_share]])
    has = rng.random((4, n)) < shares
    size = peak * rng.uniform(0.7, 1.3, (4, n))
    commercial = rng.random(n) < commercial_share
    value = rng.uniform(60.0, 200.0, n)
    curtail = rng.uniform(0.2, 0.5, n)
    pvs = tuple(PvSpec(names[i], float(size[0, i])) for i in np.flatnonzero(has[0]))
    batteries = tuple(
        BatterySpec(names[i], float(0.5 * size[1, i]), float(0.5 * size[1, i] * battery_hours))
        for i in np.flatnonzero(has[1])
    )
    flex = tuple(
        FlexLoadSpec(names[i], float(0.3 * size[2, i]), float(value[i]), float(curtail[i]),
                     "commercial" if commercial[i] else "residential")
        for i in np.flatnonzero(has[2])
    )
    shiftable = tuple(
        ShiftableLoadSpec(names[i], float(0.6 * size[3, i]), float(0.2 * size[3, i]), 18.0, 7.0)
        for i in np.flatnonzero(has[3])
    )
    return FleetSpec(batteries, pvs, flex, shiftable, price_prior=price_prior)
