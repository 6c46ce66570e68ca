"""What a DER fleet is made of: one frozen, validated spec per device, the
site (weather) and the fleet's bidding knobs.

Specs are pydantic dataclasses, validated like the rest of the configuration
(numbers strict and finite, unknown fields refused), and plain data: they go
through the federation config as JSON (see ``spec_json``); the physics lives in
one module per device type. Powers and energies are MW and MWh, like every
quantity on the bus; thermal parameters use the units thermal engineers quote
(degC, kW of heat, kWh per degC). A wrong value raises ``ValueError`` naming
the device, its bus and the field.

Why pydantic dataclasses rather than ``BaseModel``: devices are built
positionally in many places (``BatterySpec("b", 1.0, 2.0)``), ``dataclasses``
helpers keep working, and ``slots`` keeps 100,000 devices small.
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from dsosim.federates.common.curves import PRICE_CAP, PRICE_FLOOR

LoadShape = Literal["residential", "commercial"]
LOAD_SHAPES: tuple[LoadShape, ...] = ("residential", "commercial")
Orientation = Literal["flat", "south", "east", "west", "north"]
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


def _in(
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Any:
    """Field metadata of a strict, finite float (ints accepted, bools and
    strings refused) within the bounds given."""
    return Field(strict=True, allow_inf_nan=False, gt=gt, ge=ge, lt=lt, le=le)


Number = Annotated[float, _in()]
Positive = Annotated[float, _in(gt=0.0)]
NonNegative = Annotated[float, _in(ge=0.0)]
Fraction = Annotated[float, _in(ge=0.0, le=1.0)]
Hour = Annotated[float, _in(ge=0.0, le=24.0)]
Price = Annotated[float, _in(ge=PRICE_FLOOR, le=PRICE_CAP)]
Bus = Annotated[str, Field(strict=True, min_length=1)]
Count = Annotated[int, Field(strict=True)]

SPEC_CONFIG = ConfigDict(extra="forbid")


def fail(owner: str, name: str, message: str) -> None:
    raise ValueError(f"{owner}.{name}: {message}")


def _describe(
    cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], error: ValidationError
) -> str:
    """One line per problem, naming the spec, the device's bus and the field
    (pydantic's own message names neither the bus nor positional fields)."""
    parts = []
    for e in error.errors():
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "value_error" and not e["loc"]:  # from __post_init__: names itself
            parts.append(msg)
            continue
        node: Any = dict(zip(_field_names(cls), args)) | kwargs
        where = cls.__name__ + _bus_of(node)
        for x in e["loc"]:
            if isinstance(x, int) and isinstance(node, dict):  # a positional argument
                names = _field_names(cls)
                x = names[x] if x < len(names) else x
            node = _child(node, x)
            where += (f"[{x}]" if isinstance(x, int) else f".{x}") + _bus_of(node)
        if e["type"] == "unexpected_keyword_argument":
            msg = "unknown field"
        parts.append(f"{where}: {msg}, got {e.get('input')!r}")
    return "; ".join(parts)


def _bus_of(node: Any) -> str:
    bus = node.get("bus") if isinstance(node, dict) else getattr(node, "bus", None)
    return f"(bus={bus!r})" if isinstance(bus, str) else ""


def _field_names(cls: Any) -> list[str]:
    return list(getattr(cls, "__dataclass_fields__", {}))


def _child(node: Any, key: Any) -> Any:
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list | tuple) and isinstance(key, int) and key < len(node):
        return node[key]
    return getattr(node, str(key), None)


def spec(cls: type) -> Any:
    """The decorator every spec uses: a frozen, slotted pydantic dataclass
    whose validation errors are one readable ``ValueError`` line each."""
    built: Any = dataclass(frozen=True, slots=True, config=SPEC_CONFIG)(cls)
    validate = built.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            validate(self, *args, **kwargs)
        except ValidationError as error:
            raise ValueError(_describe(built, args, kwargs, error)) from None

    built.__init__ = __init__
    return built


# ----------------------------------------------------------------- devices


@spec
class BatterySpec:
    """A battery at a feeder bus. SOC values are fractions of ``energy_mwh``;
    ``efficiency`` is round-trip (AC to AC, split evenly between charging and
    discharging); ``self_discharge`` is the fraction of the stored energy
    lost per day when idle."""

    bus: Bus
    power_mw: Positive
    energy_mwh: Positive
    soc_init: Fraction = 0.5
    soc_min: Fraction = 0.1
    soc_max: Fraction = 0.9
    efficiency: Annotated[float, _in(gt=0.0, le=1.0)] = 0.9
    self_discharge: Annotated[float, _in(ge=0.0, lt=1.0)] = 0.0  # a fraction lost per day

    def __post_init__(self) -> None:
        if not self.soc_min <= self.soc_init <= self.soc_max:
            fail(
                f"BatterySpec(bus={self.bus!r})",
                "soc_init",
                f"{self.soc_init} is outside [soc_min, soc_max] = [{self.soc_min}, {self.soc_max}]",
            )


@spec
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

    bus: Bus
    rating_mw: Positive
    dc_ac_ratio: Annotated[float, _in(ge=0.5, le=3.0)] = 1.2
    orientation: Orientation = "south"
    temp_coeff: Annotated[float, _in(ge=-0.02, le=0.0)] = -0.004
    curtailable: Annotated[bool, Field(strict=True)] = True
    curtail_cost: Annotated[float, _in(ge=-PRICE_CAP, le=-PRICE_FLOOR)] = (
        0.0  # -curtail_cost is a price
    )
    volt_var: Annotated[bool, Field(strict=True)] = False
    profile: tuple[Fraction, ...] | None = None  # AC output per unit of the rating


@spec
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

    bus: Bus
    capacity_mwh: Positive
    charge_mw: Positive
    energy_mwh: Positive
    arrival_h: Hour = 18.0
    departure_h: Hour = 7.5
    target_soc: Fraction = 0.9
    discharge_mw: NonNegative = 0.0
    min_soc: Fraction = 0.2
    efficiency: Annotated[float, _in(gt=0.5, le=1.0)] = 0.92
    wear_cost: Price = 40.0

    def __post_init__(self) -> None:
        owner = f"EvSpec(bus={self.bus!r})"
        if self.min_soc >= self.target_soc:
            fail(owner, "min_soc", f"{self.min_soc} must be below target_soc {self.target_soc}")
        if self.energy_mwh > self.target_soc * self.capacity_mwh:
            fail(
                owner,
                "energy_mwh",
                f"{self.energy_mwh} MWh a day exceeds what the car holds at "
                f"its target ({self.target_soc} x {self.capacity_mwh} MWh)",
            )


@spec
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

    bus: Bus
    power_mw: Positive
    cop: Annotated[float, _in(ge=0.5, le=10.0)] = 3.0
    mode: Literal["cool", "heat"] = "cool"
    r_c_per_kw: Positive = 2.0
    c_kwh_per_c: Positive = 2.0
    setpoint_c: Annotated[float, _in(ge=5.0, le=35.0)] = 23.0
    band_c: Annotated[float, _in(ge=0.1, le=10.0)] = 1.0
    comfort_price: Annotated[float, _in(ge=0.0, le=PRICE_CAP)] = 50.0
    internal_gain_kw: NonNegative = 0.5
    solar_gain_kw: NonNegative = 1.0
    t_init_c: Annotated[float, _in(ge=-30.0, le=60.0)] | None = None


@spec
class WaterHeaterSpec:
    """An electric water heater (resistive: ``cop`` about 1; heat-pump: 2-4)
    as a one-node tank: ``C dT/dt = (T_room - T) / R + draw * c_p * (T_inlet - T)
    + cop * P``. ``tank_l`` litres of water give ``C``; ``ua_w_per_c`` is the
    standby loss; ``draw_l_per_day`` is the hot water used, spread over the
    day with morning and evening peaks (shifted by ``draw_shift_h``).
    Comfort band ``setpoint_c +- band_c``; ``comfort_price`` as in
    :class:`HvacSpec`."""

    bus: Bus
    power_mw: Positive = 0.0045
    cop: Annotated[float, _in(ge=0.5, le=10.0)] = 0.98
    tank_l: Positive = 190.0
    ua_w_per_c: Positive = 2.0
    draw_l_per_day: NonNegative = 200.0
    draw_shift_h: Annotated[float, _in(ge=-12.0, le=12.0)] = 0.0
    inlet_c: Annotated[float, _in(ge=0.0, le=40.0)] = 15.0
    room_c: Annotated[float, _in(ge=-10.0, le=40.0)] = 20.0
    setpoint_c: Annotated[float, _in(ge=30.0, le=90.0)] = 52.0
    band_c: Annotated[float, _in(ge=0.1, le=20.0)] = 4.0
    comfort_price: Annotated[float, _in(ge=0.0, le=PRICE_CAP)] = 30.0
    t_init_c: Annotated[float, _in(ge=0.0, le=100.0)] | None = None


@spec
class InflexibleLoadSpec:
    """Load behind the aggregator's meters that it cannot move: ``peak_mw``
    times a daily shape, shifted by ``shift_h`` and varied by a seeded,
    autocorrelated relative noise of standard deviation ``noise`` (the
    fleet draws it; correlation time one hour)."""

    bus: Bus
    peak_mw: Positive
    shape: LoadShape = "residential"
    shift_h: Annotated[float, _in(ge=-12.0, le=12.0)] = 0.0
    noise: Annotated[float, _in(ge=0.0, le=0.5)] = 0.05


@spec
class FlexLoadSpec:
    """A curtailable load: ``peak_mw`` times a daily shape; the share
    ``curtailable_share`` of it is consumed only at prices at or below
    ``value_per_mwh``, the rest at any price."""

    bus: Bus
    peak_mw: Positive
    value_per_mwh: Price = 100.0
    curtailable_share: Fraction = 0.2
    shape: LoadShape = "residential"


@spec
class ShiftableLoadSpec:
    """A load that must consume ``energy_mwh`` every day inside the window
    ``[window_start_h, window_end_h)`` (hours of day; the window may wrap
    past midnight; equal ends mean the whole day), at most ``power_mw``."""

    bus: Bus
    energy_mwh: Positive
    power_mw: Positive
    window_start_h: Hour = 0.0
    window_end_h: Hour = 24.0

    def __post_init__(self) -> None:
        owner = f"ShiftableLoadSpec(bus={self.bus!r})"
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


@spec
class SkyTable:
    """One day of sky at the site, precomputed (with pvlib, see ``solar``) so
    that a fleet needs no solar-geometry library at run time.

    Values are at ``offset_s + i * step_s`` seconds after midnight, local
    clock time, and repeat every day. Per orientation: plane-of-array
    irradiance under a clear sky and under a full overcast (W/m2); the
    fleet blends the two with its seeded cloud cover (``clouds``: False for
    a measured profile, whose clouds are already in the data). ``temp_air_c``
    is the outdoor temperature."""

    step_s: Positive
    offset_s: Number
    orientations: tuple[Orientation, ...]
    poa_clear: tuple[tuple[Number, ...], ...]
    poa_overcast: tuple[tuple[Number, ...], ...]
    temp_air_c: tuple[Number, ...]
    clouds: Annotated[bool, Field(strict=True)] = True

    def __post_init__(self) -> None:
        owner = "SkyTable"
        n = len(self.temp_air_c)
        if n < 2 or not math.isclose(n * self.step_s, 86_400.0):
            fail(owner, "temp_air_c", f"{n} values every {self.step_s:g} s do not cover a day")
        for name in ("poa_clear", "poa_overcast"):
            rows = getattr(self, name)
            if len(rows) != len(self.orientations) or any(len(r) != n for r in rows):
                fail(owner, name, f"needs {len(self.orientations)} rows of {n} values")


@spec
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

    latitude_deg: Annotated[float, _in(ge=-66.0, le=66.0)] = 35.0
    longitude_deg: Annotated[float, _in(ge=-180.0, le=180.0)] = 0.0
    utc_offset_h: Annotated[float, _in(ge=-12.0, le=14.0)] = 0.0
    day_of_year: Annotated[int, Field(strict=True, ge=1, le=365)] = 172
    tilt_deg: Annotated[float, _in(ge=0.0, le=90.0)] = 25.0
    albedo: Fraction = 0.2
    cloudiness: Fraction = 0.3
    temp_min_c: Annotated[float, _in(ge=-40.0, le=50.0)] = 21.0
    temp_max_c: Annotated[float, _in(le=55.0)] = 33.0
    temp_day_sd_c: Annotated[float, _in(ge=0.0, le=10.0)] = 1.5
    profile: str | None = None

    def __post_init__(self) -> None:
        if self.temp_max_c < self.temp_min_c:
            fail(
                "SiteSpec",
                "temp_max_c",
                f"{self.temp_max_c} is below temp_min_c {self.temp_min_c}",
            )


# ------------------------------------------------------------------- fleet


@spec
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
    price_prior: Price | Annotated[tuple[Price, ...], Field(min_length=1)] = 25.0
    price_smoothing: Annotated[float, _in(gt=0.0, le=1.0)] = 0.2
    load_forecast: Annotated[tuple[NonNegative, ...], Field(min_length=1)] | None = None
    price_memory_h: Positive = 24.0
    price_prior_h: Positive = 1.0
    horizon_h: Positive = 24.0
    battery_blocks: Annotated[int, Field(strict=True, ge=1)] = 3
    thermal_blocks: Annotated[int, Field(strict=True, ge=1)] = 2
    thermal_horizon_h: Positive = 2.0
    max_blocks: Annotated[int, Field(strict=True, ge=2)] = 16
    response_error: Annotated[float, _in(ge=0.0, lt=1.0)] = 0.0
    override_probability: Fraction = 0.0
    ev_jitter_h: Annotated[float, _in(ge=0.0, le=6.0)] = 0.5
    ev_energy_jitter: Fraction = 0.2
    weather_seed: Count | None = None

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
        if self.load_forecast is not None and max(self.load_forecast) <= 0.0:
            fail("FleetSpec", "load_forecast", "a daily shape needs a value above 0")

    def devices(self) -> tuple[DeviceSpec, ...]:
        """Every device, in the fleet's canonical order (type by type)."""
        return tuple(d for name in self.DEVICE_FIELDS for d in getattr(self, name))
