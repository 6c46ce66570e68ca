"""What a DER fleet is made of: one frozen, validated spec per device, the
site (weather) and the fleet's bidding knobs.

Specs are plain data (they go through the federation config as JSON, see
``spec_json``); the physics lives in one module per device type. Powers and
energies are MW and MWh, like every quantity on the bus; thermal parameters
use the units thermal engineers quote (degC, kW of heat, kWh per degC).
A wrong value raises ``ValueError`` naming the device, its bus and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from dsosim.federates.common.curves import PRICE_CAP, PRICE_FLOOR

LoadShape = Literal["residential", "commercial"]
LOAD_SHAPES: tuple[LoadShape, ...] = ("residential", "commercial")
ORIENTATIONS: dict[str, float | None] = {
    "flat": None,
    "south": 180.0,
    "east": 90.0,
    "west": 270.0,
    "north": 0.0,
}
"""PV orientation -> array azimuth (degrees from north); ``flat`` is horizontal,
the others are tilted by the site's ``tilt_deg``."""


# ------------------------------------------------------------------ checks


def fail(owner: str, name: str, message: str) -> None:
    raise ValueError(f"{owner}.{name}: {message}")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive(owner: str, name: str, value: float) -> None:
    if not (_number(value) and value > 0.0):
        fail(owner, name, f"must be a finite number > 0, got {value!r}")


def non_negative(owner: str, name: str, value: float) -> None:
    if not (_number(value) and value >= 0.0):
        fail(owner, name, f"must be a finite number >= 0, got {value!r}")


def fraction(owner: str, name: str, value: float) -> None:
    if not (_number(value) and 0.0 <= value <= 1.0):
        fail(owner, name, f"must be in [0, 1], got {value!r}")


def in_range(owner: str, name: str, value: float, lo: float, hi: float) -> None:
    if not (_number(value) and lo <= value <= hi):
        fail(owner, name, f"must be in [{lo:g}, {hi:g}], got {value!r}")


def price(owner: str, name: str, value: float) -> None:
    if not (_number(value) and PRICE_FLOOR <= value <= PRICE_CAP):
        fail(
            owner, name, f"must be a price in [{PRICE_FLOOR:g}, {PRICE_CAP:g}] $/MWh, got {value!r}"
        )


def hour(owner: str, name: str, value: float) -> None:
    in_range(owner, name, value, 0.0, 24.0)


def bus(owner: str, value: str) -> None:
    if not (isinstance(value, str) and value):
        fail(owner, "bus", f"must be a non-empty bus name, got {value!r}")


# ----------------------------------------------------------------- devices


@dataclass(frozen=True, slots=True)
class BatterySpec:
    """A battery at a feeder bus. SOC values are fractions of ``energy_mwh``;
    ``efficiency`` is round-trip (AC to AC, split evenly between charging and
    discharging); ``self_discharge`` is the fraction of the stored energy
    lost per day when idle."""

    bus: str
    power_mw: float
    energy_mwh: float
    soc_init: float = 0.5
    soc_min: float = 0.1
    soc_max: float = 0.9
    efficiency: float = 0.9
    self_discharge: float = 0.0

    def __post_init__(self) -> None:
        owner = f"BatterySpec(bus={self.bus!r})"
        bus(owner, self.bus)
        positive(owner, "power_mw", self.power_mw)
        positive(owner, "energy_mwh", self.energy_mwh)
        for name in ("soc_init", "soc_min", "soc_max", "self_discharge"):
            fraction(owner, name, getattr(self, name))
        if not self.soc_min <= self.soc_init <= self.soc_max:
            fail(
                owner,
                "soc_init",
                f"{self.soc_init} is outside [soc_min, soc_max] = [{self.soc_min}, {self.soc_max}]",
            )
        if not (_number(self.efficiency) and 0.0 < self.efficiency <= 1.0):
            fail(owner, "efficiency", f"must be in (0, 1], got {self.efficiency!r}")
        if self.self_discharge >= 1.0:
            fail(owner, "self_discharge", "must be < 1 (a fraction lost per day)")


@dataclass(frozen=True, slots=True)
class PvSpec:
    """A PV system: ``rating_mw`` is the inverter's AC rating (also its
    apparent-power limit), the array is ``dc_ac_ratio`` times larger (DC,
    standard test conditions), so output clips at the rating on bright
    hours. Output follows the fleet's weather for its ``orientation``
    (see :data:`ORIENTATIONS`) unless ``profile`` gives AC output per unit
    of the rating, one value per interval. A curtailable system stops
    injecting when the price is at or below ``-curtail_cost``; with
    ``volt_var`` its inverter follows the IEEE 1547 category B volt-var
    curve with reactive-power priority."""

    bus: str
    rating_mw: float
    dc_ac_ratio: float = 1.2
    orientation: str = "south"
    temp_coeff: float = -0.004
    curtailable: bool = True
    curtail_cost: float = 0.0
    volt_var: bool = False
    profile: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        owner = f"PvSpec(bus={self.bus!r})"
        bus(owner, self.bus)
        positive(owner, "rating_mw", self.rating_mw)
        in_range(owner, "dc_ac_ratio", self.dc_ac_ratio, 0.5, 3.0)
        if self.orientation not in ORIENTATIONS:
            fail(
                owner,
                "orientation",
                f"must be one of {tuple(ORIENTATIONS)}, got {self.orientation!r}",
            )
        in_range(owner, "temp_coeff", self.temp_coeff, -0.02, 0.0)
        price(owner, "curtail_cost (as -curtail_cost)", -self.curtail_cost)
        if self.profile is not None:
            object.__setattr__(self, "profile", tuple(float(x) for x in self.profile))
            if not all(0.0 <= x <= 1.0 for x in self.profile):  # type: ignore[union-attr]
                fail(owner, "profile", "per-unit values must be in [0, 1]")


@dataclass(frozen=True, slots=True)
class EvSpec:
    """An electric vehicle that plugs in at home every day.

    It arrives around ``arrival_h`` and leaves around ``departure_h`` (hours
    of day; the fleet's ``ev_jitter_h`` spreads them from day to day), and
    must leave with ``target_soc`` of ``capacity_mwh`` after using about
    ``energy_mwh`` while away. ``charge_mw`` is the charger limit (grid
    side); ``discharge_mw > 0`` makes it a vehicle-to-grid (V2G) car that
    may discharge down to ``min_soc`` as long as the departure energy stays
    reachable, asking at least ``wear_cost`` $/MWh above the cost of putting
    the energy back. ``efficiency`` applies each way."""

    bus: str
    capacity_mwh: float
    charge_mw: float
    energy_mwh: float
    arrival_h: float = 18.0
    departure_h: float = 7.5
    target_soc: float = 0.9
    discharge_mw: float = 0.0
    min_soc: float = 0.2
    efficiency: float = 0.92
    wear_cost: float = 40.0

    def __post_init__(self) -> None:
        owner = f"EvSpec(bus={self.bus!r})"
        bus(owner, self.bus)
        positive(owner, "capacity_mwh", self.capacity_mwh)
        positive(owner, "charge_mw", self.charge_mw)
        positive(owner, "energy_mwh", self.energy_mwh)
        non_negative(owner, "discharge_mw", self.discharge_mw)
        hour(owner, "arrival_h", self.arrival_h)
        hour(owner, "departure_h", self.departure_h)
        fraction(owner, "target_soc", self.target_soc)
        fraction(owner, "min_soc", self.min_soc)
        if self.min_soc >= self.target_soc:
            fail(owner, "min_soc", f"{self.min_soc} must be below target_soc {self.target_soc}")
        if self.energy_mwh > self.target_soc * self.capacity_mwh:
            fail(
                owner,
                "energy_mwh",
                f"{self.energy_mwh} MWh a day exceeds what the car holds at "
                f"its target ({self.target_soc} x {self.capacity_mwh} MWh)",
            )
        if not (_number(self.efficiency) and 0.5 < self.efficiency <= 1.0):
            fail(owner, "efficiency", f"must be in (0.5, 1], got {self.efficiency!r}")
        price(owner, "wear_cost", self.wear_cost)


@dataclass(frozen=True, slots=True)
class HvacSpec:
    """An air conditioner (``mode="cool"``) or heat pump (``"heat"``) and the
    home it conditions, as a first-order equivalent thermal parameter (ETP)
    model: ``C dT/dt = (T_out - T) / R + gains +- cop * P``.

    ``r_c_per_kw`` (degC per kW of heat flow) and ``c_kwh_per_c`` (kWh per
    degC) describe the envelope; ``internal_gain_kw`` and ``solar_gain_kw``
    (at 1000 W/m2 horizontal) heat the home. Comfort band:
    ``setpoint_c +- band_c``; ``comfort_price`` is the premium ($/MWh over
    the expected price) the occupant pays for power when the home sits at
    the edge of the band. ``t_init_c`` None = seeded inside the band."""

    bus: str
    power_mw: float
    cop: float = 3.0
    mode: Literal["cool", "heat"] = "cool"
    r_c_per_kw: float = 2.0
    c_kwh_per_c: float = 2.0
    setpoint_c: float = 23.0
    band_c: float = 1.0
    comfort_price: float = 50.0
    internal_gain_kw: float = 0.5
    solar_gain_kw: float = 1.0
    t_init_c: float | None = None

    def __post_init__(self) -> None:
        owner = f"HvacSpec(bus={self.bus!r})"
        bus(owner, self.bus)
        positive(owner, "power_mw", self.power_mw)
        in_range(owner, "cop", self.cop, 0.5, 10.0)
        if self.mode not in ("cool", "heat"):
            fail(owner, "mode", f"must be 'cool' or 'heat', got {self.mode!r}")
        positive(owner, "r_c_per_kw", self.r_c_per_kw)
        positive(owner, "c_kwh_per_c", self.c_kwh_per_c)
        in_range(owner, "setpoint_c", self.setpoint_c, 5.0, 35.0)
        in_range(owner, "band_c", self.band_c, 0.1, 10.0)
        in_range(owner, "comfort_price", self.comfort_price, 0.0, PRICE_CAP)
        non_negative(owner, "internal_gain_kw", self.internal_gain_kw)
        non_negative(owner, "solar_gain_kw", self.solar_gain_kw)
        if self.t_init_c is not None:
            in_range(owner, "t_init_c", self.t_init_c, -30.0, 60.0)


@dataclass(frozen=True, slots=True)
class WaterHeaterSpec:
    """An electric water heater (resistive: ``cop`` about 1; heat-pump: 2-4)
    as a one-node tank: ``C dT/dt = (T_room - T) / R + draw * c_p * (T_inlet - T)
    + cop * P``. ``tank_l`` litres of water give ``C``; ``ua_w_per_c`` is the
    standby loss; ``draw_l_per_day`` is the hot water used, spread over the
    day with morning and evening peaks (shifted by ``draw_shift_h``).
    Comfort band ``setpoint_c +- band_c``; ``comfort_price`` as in
    :class:`HvacSpec`."""

    bus: str
    power_mw: float = 0.0045
    cop: float = 0.98
    tank_l: float = 190.0
    ua_w_per_c: float = 2.0
    draw_l_per_day: float = 200.0
    draw_shift_h: float = 0.0
    inlet_c: float = 15.0
    room_c: float = 20.0
    setpoint_c: float = 52.0
    band_c: float = 4.0
    comfort_price: float = 30.0
    t_init_c: float | None = None

    def __post_init__(self) -> None:
        owner = f"WaterHeaterSpec(bus={self.bus!r})"
        bus(owner, self.bus)
        positive(owner, "power_mw", self.power_mw)
        in_range(owner, "cop", self.cop, 0.5, 10.0)
        positive(owner, "tank_l", self.tank_l)
        positive(owner, "ua_w_per_c", self.ua_w_per_c)
        non_negative(owner, "draw_l_per_day", self.draw_l_per_day)
        in_range(owner, "draw_shift_h", self.draw_shift_h, -12.0, 12.0)
        in_range(owner, "inlet_c", self.inlet_c, 0.0, 40.0)
        in_range(owner, "room_c", self.room_c, -10.0, 40.0)
        in_range(owner, "setpoint_c", self.setpoint_c, 30.0, 90.0)
        in_range(owner, "band_c", self.band_c, 0.1, 20.0)
        in_range(owner, "comfort_price", self.comfort_price, 0.0, PRICE_CAP)
        if self.t_init_c is not None:
            in_range(owner, "t_init_c", self.t_init_c, 0.0, 100.0)


@dataclass(frozen=True, slots=True)
class InflexibleLoadSpec:
    """Load behind the aggregator's meters that it cannot move: ``peak_mw``
    times a daily shape, shifted by ``shift_h`` and varied by a seeded,
    autocorrelated relative noise of standard deviation ``noise`` (the
    fleet draws it; correlation time one hour)."""

    bus: str
    peak_mw: float
    shape: LoadShape = "residential"
    shift_h: float = 0.0
    noise: float = 0.05

    def __post_init__(self) -> None:
        owner = f"InflexibleLoadSpec(bus={self.bus!r})"
        bus(owner, self.bus)
        positive(owner, "peak_mw", self.peak_mw)
        if self.shape not in LOAD_SHAPES:
            fail(owner, "shape", f"must be one of {LOAD_SHAPES}, got {self.shape!r}")
        in_range(owner, "shift_h", self.shift_h, -12.0, 12.0)
        in_range(owner, "noise", self.noise, 0.0, 0.5)


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
        bus(owner, self.bus)
        positive(owner, "peak_mw", self.peak_mw)
        price(owner, "value_per_mwh", self.value_per_mwh)
        fraction(owner, "curtailable_share", self.curtailable_share)
        if self.shape not in LOAD_SHAPES:
            fail(owner, "shape", f"must be one of {LOAD_SHAPES}, got {self.shape!r}")


@dataclass(frozen=True, slots=True)
class ShiftableLoadSpec:
    """A load that must consume ``energy_mwh`` every day inside the window
    ``[window_start_h, window_end_h)`` (hours of day; the window may wrap
    past midnight; equal ends mean the whole day), at most ``power_mw``."""

    bus: str
    energy_mwh: float
    power_mw: float
    window_start_h: float = 0.0
    window_end_h: float = 24.0

    def __post_init__(self) -> None:
        owner = f"ShiftableLoadSpec(bus={self.bus!r})"
        bus(owner, self.bus)
        positive(owner, "energy_mwh", self.energy_mwh)
        positive(owner, "power_mw", self.power_mw)
        hour(owner, "window_start_h", self.window_start_h)
        hour(owner, "window_end_h", self.window_end_h)
        hours = self.window_hours
        if self.energy_mwh > self.power_mw * hours * (1.0 + 1e-12):
            fail(
                owner,
                "energy_mwh",
                f"{self.energy_mwh} MWh cannot be served at "
                f"{self.power_mw} MW in a {hours:g} h window",
            )

    @property
    def window_hours(self) -> float:
        """Length of the window, hours (24 when the ends coincide)."""
        length = (self.window_end_h - self.window_start_h) % 24.0
        return 24.0 if length == 0.0 else length


DeviceSpec = (
    BatterySpec
    | PvSpec
    | EvSpec
    | HvacSpec
    | WaterHeaterSpec
    | InflexibleLoadSpec
    | FlexLoadSpec
    | ShiftableLoadSpec
)
"""Any one device of a fleet."""


# -------------------------------------------------------------------- site


@dataclass(frozen=True, slots=True)
class SkyTable:
    """One day of sky at the site, precomputed (with pvlib, see ``solar``) so
    that a fleet needs no solar-geometry library at run time.

    Values are at ``offset_s + i * step_s`` seconds after midnight, local
    clock time, and repeat every day. Per orientation: plane-of-array
    irradiance under a clear sky and under a full overcast (W/m2); the
    fleet blends the two with its seeded cloud cover (``clouds``: False for
    a measured profile, whose clouds are already in the data). ``temp_air_c``
    is the outdoor temperature."""

    step_s: float
    offset_s: float
    orientations: tuple[str, ...]
    poa_clear: tuple[tuple[float, ...], ...]
    poa_overcast: tuple[tuple[float, ...], ...]
    temp_air_c: tuple[float, ...]
    clouds: bool = True

    def __post_init__(self) -> None:
        owner = "SkyTable"
        positive(owner, "step_s", self.step_s)
        n = len(self.temp_air_c)
        if n < 2 or not math.isclose(n * self.step_s, 86_400.0):
            fail(owner, "temp_air_c", f"{n} values every {self.step_s:g} s do not cover a day")
        for name in ("orientations", "poa_clear", "poa_overcast", "temp_air_c"):
            value = getattr(self, name)
            object.__setattr__(
                self, name, tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in value)
            )
        for o in self.orientations:
            if o not in ORIENTATIONS:
                fail(owner, "orientations", f"unknown orientation {o!r}")
        for name in ("poa_clear", "poa_overcast"):
            rows = getattr(self, name)
            if len(rows) != len(self.orientations) or any(len(r) != n for r in rows):
                fail(owner, name, f"needs {len(self.orientations)} rows of {n} values")


@dataclass(frozen=True, slots=True)
class SiteSpec:
    """Where the fleet is and what its weather is.

    Clock time is local standard time at ``utc_offset_h`` (the defaults,
    longitude 0 and offset 0, make it solar time). With no ``profile`` the
    sky is the clear sky of ``day_of_year`` with a seeded cloud process
    covering it about ``cloudiness`` of the time, and the outdoor
    temperature a daily cycle between ``temp_min_c`` (around 05:00) and
    ``temp_max_c`` (around 15:00), shifted each day by a seeded offset of
    standard deviation ``temp_day_sd_c``. ``profile`` names a CSV file of
    measured weather (see ``docs/ders.md``): then the clouds and
    temperatures are the measured ones. PV arrays are tilted
    ``tilt_deg`` (except ``flat`` ones) over ground of reflectance
    ``albedo``."""

    latitude_deg: float = 35.0
    longitude_deg: float = 0.0
    utc_offset_h: float = 0.0
    day_of_year: int = 172
    tilt_deg: float = 25.0
    albedo: float = 0.2
    cloudiness: float = 0.3
    temp_min_c: float = 21.0
    temp_max_c: float = 33.0
    temp_day_sd_c: float = 1.5
    profile: str | None = None

    def __post_init__(self) -> None:
        owner = "SiteSpec"
        in_range(owner, "latitude_deg", self.latitude_deg, -66.0, 66.0)
        in_range(owner, "longitude_deg", self.longitude_deg, -180.0, 180.0)
        in_range(owner, "utc_offset_h", self.utc_offset_h, -12.0, 14.0)
        if not (isinstance(self.day_of_year, int) and 1 <= self.day_of_year <= 365):
            fail(owner, "day_of_year", f"must be an integer in [1, 365], got {self.day_of_year!r}")
        in_range(owner, "tilt_deg", self.tilt_deg, 0.0, 90.0)
        fraction(owner, "albedo", self.albedo)
        fraction(owner, "cloudiness", self.cloudiness)
        in_range(owner, "temp_min_c", self.temp_min_c, -40.0, 50.0)
        in_range(owner, "temp_max_c", self.temp_max_c, self.temp_min_c, 55.0)
        in_range(owner, "temp_day_sd_c", self.temp_day_sd_c, 0.0, 10.0)


# ------------------------------------------------------------------- fleet


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """Everything an aggregator's fleet is made of, plus its bidding knobs.

    * Price expectations (``prices``): ``price_prior`` is the expected price
      before any price is received, one number ($/MWh) or a daily shape of
      any length spread over the day; ``load_forecast`` (a daily shape, any
      units) is the ISO's published system load forecast: the prior is then
      ``price_prior`` times that shape over its mean (prices follow system
      load). Prices received are learned: a regression on the prior with
      ``price_memory_h`` of memory, the prior weighing as ``price_prior_h``
      hours of prices; a time-of-day slot once seen is expected at its
      exponentially smoothed price (``price_smoothing``: the least weight of
      a new price).
    * ``horizon_h``: how far ahead batteries value their energy;
      ``battery_blocks``: price tranches per battery and direction;
      ``thermal_blocks`` and ``thermal_horizon_h``: tranches per thermostatic
      load and the window whose mean expected price anchors their bids.
    * ``max_blocks``: the most blocks one bus curve may have (blocks of many
      devices are pooled into equal-quantity bands beyond that, so the
      message and the DSO's clearing stay small whatever the device count).
    * ``response_error``: standard deviation of a multiplicative error on
      every device's response; ``override_probability``: chance per interval
      that a thermostat's occupant overrides the dispatch and runs it at
      the setpoint.
    * ``ev_jitter_h`` / ``ev_energy_jitter``: day-to-day spread of EV
      arrival and departure times (h) and of their daily energy (relative).
    * ``weather_seed``: seed of the cloud and temperature processes (the
      placement derives it from the LDA, so fleets on one feeder share
      their weather); None = the fleet's own seed.
    * ``sky``: the precomputed sky (None = computed on first use, which
      imports pvlib).
    """

    batteries: tuple[BatterySpec, ...] = ()
    pvs: tuple[PvSpec, ...] = ()
    evs: tuple[EvSpec, ...] = ()
    hvacs: tuple[HvacSpec, ...] = ()
    water_heaters: tuple[WaterHeaterSpec, ...] = ()
    inflexible_loads: tuple[InflexibleLoadSpec, ...] = ()
    flex_loads: tuple[FlexLoadSpec, ...] = ()
    shiftable_loads: tuple[ShiftableLoadSpec, ...] = ()
    site: SiteSpec = field(default_factory=SiteSpec)
    sky: SkyTable | None = None
    price_prior: float | tuple[float, ...] = 25.0
    price_smoothing: float = 0.2
    load_forecast: tuple[float, ...] | None = None
    price_memory_h: float = 24.0
    price_prior_h: float = 1.0
    horizon_h: float = 24.0
    battery_blocks: int = 3
    thermal_blocks: int = 2
    thermal_horizon_h: float = 2.0
    max_blocks: int = 16
    response_error: float = 0.0
    override_probability: float = 0.0
    ev_jitter_h: float = 0.5
    ev_energy_jitter: float = 0.2
    weather_seed: int | None = None

    DEVICE_FIELDS = (
        "batteries",
        "pvs",
        "evs",
        "hvacs",
        "water_heaters",
        "inflexible_loads",
        "flex_loads",
        "shiftable_loads",
    )

    def __post_init__(self) -> None:
        for name in self.DEVICE_FIELDS:
            object.__setattr__(self, name, tuple(getattr(self, name)))
        owner = "FleetSpec"
        prior = self.price_prior
        if isinstance(prior, (int, float)):
            price(owner, "price_prior", prior)
        else:
            object.__setattr__(self, "price_prior", tuple(float(x) for x in prior))
            if not self.price_prior:
                fail(owner, "price_prior", "a price shape needs at least one value")
            for x in self.price_prior:  # type: ignore[union-attr]
                price(owner, "price_prior", x)
        a = self.price_smoothing
        if not (_number(a) and 0.0 < a <= 1.0):
            fail(owner, "price_smoothing", f"must be in (0, 1], got {a!r}")
        if self.load_forecast is not None:
            object.__setattr__(self, "load_forecast", tuple(float(x) for x in self.load_forecast))
            shape = self.load_forecast
            if not shape or not all(_number(x) and x >= 0.0 for x in shape) or max(shape) <= 0:
                fail(
                    owner,
                    "load_forecast",
                    "must be a non-empty daily shape of numbers >= 0, not all 0",
                )
        positive(owner, "price_memory_h", self.price_memory_h)
        positive(owner, "price_prior_h", self.price_prior_h)
        positive(owner, "horizon_h", self.horizon_h)
        positive(owner, "thermal_horizon_h", self.thermal_horizon_h)
        for name, least in (("battery_blocks", 1), ("thermal_blocks", 1), ("max_blocks", 2)):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= least):
                fail(owner, name, f"must be an integer >= {least}, got {value!r}")
        if not (_number(self.response_error) and 0.0 <= self.response_error < 1.0):
            fail(owner, "response_error", f"must be in [0, 1), got {self.response_error!r}")
        fraction(owner, "override_probability", self.override_probability)
        in_range(owner, "ev_jitter_h", self.ev_jitter_h, 0.0, 6.0)
        in_range(owner, "ev_energy_jitter", self.ev_energy_jitter, 0.0, 1.0)
        if self.weather_seed is not None and not isinstance(self.weather_seed, int):
            fail(owner, "weather_seed", f"must be an integer or None, got {self.weather_seed!r}")

    def devices(self) -> tuple[DeviceSpec, ...]:
        """Every device, in the fleet's canonical order (type by type)."""
        return tuple(d for name in self.DEVICE_FIELDS for d in getattr(self, name))
