"""The user's scenario file (TOML): what to simulate, validated with clear errors.

A scenario names the transmission case, the local distribution areas (LDAs:
a feeder at a T-D bus of the case, with a scale factor) and the aggregators
in each LDA with their DER fleets, the horizon and the seed. Relative paths
are relative to the scenario file. Every field is documented in
``docs/scenario.md``; a wrong field gets a :class:`ScenarioError` naming the
file, the field and what is allowed.
"""

from __future__ import annotations

import os
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dsosim.federates.common.config import (
    DEFAULT_START,
    REUSE_LINEARISATION_KW,
    DayAheadConfig,
    LimitsConfig,
    TransmissionEvent,
    naive_start,
)
from dsosim.federates.common.curves import MAX_ABS_MW


class ScenarioError(ValueError):
    """The scenario file is missing, unreadable or invalid."""


class _Section(BaseModel):
    # no NaN or infinity anywhere: "hours = nan" or "scale = inf" is an input error
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
NAME_HELP = "letters, digits, _ and -, starting with a letter, at most 64 characters"
RESERVED_NAMES = frozenset({"iso", "recorder", "hil", "broker", "dsosim-broker"})
"""Federate names the federation gives its own members."""
MAX_SCALE = 10_000.0
"""Most feeders one modelled feeder may stand for at a T-D bus."""


class Transmission(_Section):
    case: str = Field(
        "case9", description="MATPOWER case name (case9, case14, ...) or path to a .m file"
    )
    load_scale: PositiveFloat = Field(
        1.0, le=100, description="multiplies every fixed load of the case"
    )
    load_profile: Literal["system", "flat"] = Field(
        "system", description="daily shape applied to the case's fixed loads"
    )
    line_limit_mw: PositiveFloat | None = Field(
        None, le=MAX_ABS_MW, description="cap every line rating at this MW"
    )
    events: tuple[TransmissionEvent, ...] = Field(
        (), description="generator outages, load steps and extra supply during the run"
    )


class DayAhead(_Section, DayAheadConfig):
    """The scenario's ``[day_ahead]``: the federation's day-ahead settings
    (``DayAheadConfig``, one declaration of each field) and whether it runs."""

    enabled: bool = Field(False, description="run the ISO's day-ahead market each day")

    @model_validator(mode="after")
    def _periods_tile_the_day(self) -> DayAhead:
        periods = 1440.0 / self.period_minutes
        if abs(periods - round(periods)) > 1e-9:
            raise ValueError(
                f"period_minutes must divide a day (1440 minutes), got {self.period_minutes}"
            )
        return self


class Aggregator(_Section):
    """A DER aggregator and its fleet: devices sized relative to the load at
    each bus (the ``*_share`` fields) and/or homes with devices (``homes``).
    Every field is explained in docs/ders.md."""

    class Homes(_Section):
        """Homes per bus from the bus's peak load, and penetration shares."""

        home_peak_kw: PositiveFloat = Field(
            4.0,
            le=100,
            description="average peak of a home's base load, kW: homes per bus = "
            "bus peak load / this",
        )
        enrolled: float = Field(1.0, ge=0, le=1, description="share of each bus's homes served")
        counts: dict[str, int] = Field(
            {}, description="homes per bus, overriding the derived count"
        )
        pv: float = Field(0.0, ge=0, le=1, description="share of homes with rooftop PV")
        battery: float = Field(0.0, ge=0, le=1, description="share of homes with a battery")
        ev: float = Field(0.0, ge=0, le=1, description="share of homes with an EV")
        v2g: float = Field(0.0, ge=0, le=1, description="share of the EVs that can discharge (V2G)")
        hvac: float = Field(
            0.0,
            ge=0,
            le=1,
            description="share of homes with an air conditioner (or heat pump, see hvac_mode)",
        )
        water_heater: float = Field(
            0.0, ge=0, le=1, description="share with an electric water heater"
        )
        volt_var: float = Field(
            0.0, ge=0, le=1, description="share of PV inverters running volt-var"
        )
        hvac_mode: Literal["cool", "heat"] = "cool"
        pv_kw: tuple[PositiveFloat, PositiveFloat] = Field(
            (3.0, 8.0), description="PV DC size range"
        )
        battery_kwh: tuple[PositiveFloat, PositiveFloat] = (5.0, 15.0)
        ev_kwh_per_day: tuple[PositiveFloat, PositiveFloat] = (4.0, 16.0)
        comfort_price: tuple[PositiveFloat, PositiveFloat] = Field(
            (20.0, 100.0), description="premium for comfort at the band edge, $/MWh"
        )
        override_probability: float = Field(
            0.0, ge=0, le=1, description="chance per interval that a thermostat is overridden"
        )

    class Weather(_Section):
        """The fleet's site: clear sky with seeded clouds, or a measured profile."""

        latitude_deg: float = Field(35.0, ge=-66, le=66)
        longitude_deg: float = Field(0.0, ge=-180, le=180)
        utc_offset_h: float = Field(0.0, ge=-12, le=14, description="clock time zone")
        day_of_year: int = Field(172, ge=1, le=365)
        tilt_deg: float = Field(25.0, ge=0, le=90, description="tilt of PV arrays")
        albedo: float = Field(0.2, ge=0, le=1)
        cloudiness: float = Field(0.3, ge=0, le=1, description="share of time overcast")
        temp_min_c: float = Field(21.0, ge=-40, le=50)
        temp_max_c: float = Field(33.0, ge=-40, le=55)
        temp_day_sd_c: float = Field(1.5, ge=0, le=10, description="day-to-day temperature spread")
        profile: str | None = Field(
            None,
            description="measured weather: a file of configs/weather (name) or an "
            "absolute path to such a CSV",
        )

    name: str = Field(pattern=NAME_PATTERN, description=NAME_HELP)
    buses: tuple[str, ...] = Field((), description="feeder buses it serves; empty = every load bus")
    pv_share: float = Field(0.3, ge=0, le=5, description="PV rating / bus peak load")
    battery_share: float = Field(0.2, ge=0, le=5, description="battery power / bus peak load")
    battery_hours: PositiveFloat = Field(2.0, le=24, description="battery energy / power, h")
    battery_efficiency: float = Field(0.9, gt=0.5, le=1.0, description="round-trip efficiency")
    flex_share: float = Field(0.1, ge=0, le=1, description="curtailable share of bus load")
    flex_value: float = Field(60.0, ge=0, le=10000, description="value of curtailable load, $/MWh")
    inflexible_share: float = Field(
        0.0,
        ge=0,
        le=5,
        description="inflexible load behind its meters (not in the feeder model) / bus peak load",
    )
    commercial_share: float = Field(
        0.0, ge=0, le=1, description="share of buses whose inflexible load is commercial"
    )
    homes: Homes | None = Field(None, description="homes and their devices (docs/ders.md)")
    weather: Weather = Weather()
    max_blocks: int = Field(16, ge=2, le=200, description="most blocks in one bus curve")
    response_error: float = Field(0.0, ge=0, lt=1, description="std of relative response error")
    utility_owned: bool = Field(
        False, description="DERs owned by the utility (may not bid where it is DMO)"
    )

    @model_validator(mode="before")
    @classmethod
    def _homes_replace_share_defaults(cls, data: object) -> object:
        """With ``homes``, the load-share devices default to none (they can
        still be added explicitly, e.g. a community battery)."""
        if isinstance(data, dict) and data.get("homes") is not None:
            return {"pv_share": 0.0, "battery_share": 0.0, "flex_share": 0.0, **data}
        return data


class Lda(_Section):
    """A local distribution area: one feeder model at one T-D bus."""

    name: str = Field(pattern=NAME_PATTERN, description=NAME_HELP)
    feeder: str = Field(description="OpenDSS master file (relative to the scenario file)")
    td_bus: int = Field(description="bus number of the transmission case it connects to")
    scale: PositiveFloat = Field(
        1.0,
        le=MAX_SCALE,
        description="number of similar feeders this one stands for at the T-D bus",
    )
    load_profile: Literal["residential", "commercial", "flat", "feeder"] = Field(
        "residential",
        description="daily shape of the feeder's loads: residential, commercial, flat, or "
        "feeder (each load's own daily or yearly load shape from the feeder files, averaged "
        "over each interval; loads without one follow the residential shape)",
    )
    load_scale: float = Field(
        1.0, gt=0, le=5, description="multiplies the feeder's own loads (season, growth)"
    )
    load_forecast_error: float = Field(0.02, ge=0, lt=0.5, description="std of relative load error")
    reuse_linearisation_kw: float = Field(
        REUSE_LINEARISATION_KW,
        ge=0,
        description="the utility reuses its last linearisation (at a forecast or a dispatch "
        "point) if no load or DER location moved by more than this (kW, and kvar), no regulator "
        "tap or capacitor moved and no volt-var inverter changed segment; 0: never",
    )
    voltage_basis: Literal["ln", "ll"] = Field(
        "ln", description="read voltages line-to-neutral (ln) or line-to-line (ll, delta feeders)"
    )
    limits: LimitsConfig = LimitsConfig()
    aggregators: tuple[Aggregator, ...] = Field(min_length=1)
    existing_ders_to: str | None = Field(
        None,
        description="aggregator of this LDA that takes over the feeder's own PV systems and "
        "storage (they leave the feeder model and run in its fleet at the same buses)",
    )

    @field_validator("existing_ders_to")
    @classmethod
    def _existing_ders_owner(cls, value: str | None, info: ValidationInfo) -> str | None:
        names = [a.name for a in info.data.get("aggregators", ())]
        if value is not None and value not in names:
            raise ValueError(f"not an aggregator of this LDA; its aggregators are {names}")
        return value


class RealTime(_Section):
    """Run the federation in wall-clock time (HELICS real-time mode on every
    federate); needed for hardware in the loop. See docs/hil.md."""

    enabled: bool = False
    step_s: PositiveFloat | None = Field(
        None,
        description="wall seconds per market interval; default: the interval itself "
        "(true real time). Shorter compresses time: 1.0 runs a 5-minute market each second",
    )
    substep_s: PositiveFloat | None = Field(
        None,
        description="wall seconds between the exchanges inside an interval; default "
        "step/10, at most 1 s",
    )
    settle_s: PositiveFloat | None = Field(
        None,
        description="wall seconds hardware gets between its set-point and the read-back; "
        "default one sub-step",
    )
    rt_lead_s: float = Field(
        0.0,
        ge=0,
        le=10,
        description="HELICS rt_lead: how early a grant may "
        "come; 0 keeps set-points from reaching hardware before their time",
    )
    rt_lag_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="HELICS rt_lag: a grant still pending "
        "this long after its wall time is forced (breaks the exchange order: "
        "a last-resort valve, not a tuning knob)",
    )


class HilDevice(_Section):
    """One DER of an aggregator's fleet run by hardware or the emulator."""

    id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="the id the device says in its HELLO",
    )
    aggregator: str = Field(description="the aggregator whose fleet holds the DER")
    kind: Literal["battery", "pv"]
    bus: str = Field(description="feeder bus of the DER")
    nth: int = Field(0, ge=0, description="which DER of that kind at that bus (0 = the first)")
    rated_kw: PositiveFloat = Field(
        description="the hardware's rating, kW: set-points and "
        "measurements scale by rated_kw / the simulated DER's rating"
    )


class Hil(_Section):
    """The hardware-in-the-loop gateway (docs/hil.md)."""

    bind: str = Field(
        "tcp://127.0.0.1:5570",
        pattern=r"^tcp://[^:]+:[0-9]+$",
        description="where the gateway listens; loopback unless CURVE is set up",
    )
    timeout_ms: float = Field(50.0, gt=0, le=60_000, description="wait for each device answer")
    heartbeat_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="device heartbeat period; a device silent for three periods loses its session",
    )
    fallback: Literal["hold", "unavailable"] = Field(
        "hold",
        description="a device that does not answer: hold its last measured output, or "
        "treat it as unavailable (no output, no offers) until it answers again",
    )
    wait_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="before the start, wait this long for every device to connect",
    )
    implausible: Literal["clip", "missing"] = Field(
        "missing",
        description="a measurement the device cannot have produced (docs/hil.md "
        "'Plausibility'): clip it to the physical bound, or treat it as missing "
        "(the fallback applies)",
    )
    power_tolerance: float = Field(
        0.05,
        ge=0,
        le=1,
        description="how far (fraction of the rating) a measured power may lie outside "
        "what the simulated device can do this interval before it is implausible",
    )
    soc_tolerance: float = Field(
        0.02,
        ge=0,
        le=1,
        description="how far (fraction of the capacity) a measured state of charge may lie "
        "outside the simulated limits, or from what the measured power explains, "
        "before it is implausible",
    )
    realtime_priority: int = Field(
        0,
        ge=0,
        le=99,
        description="1-99: the gateway's I/O threads run under SCHED_FIFO at this priority "
        "(needs the privilege; refused: a warning and the normal policy); 0 = normal",
    )
    spin_ms: float = Field(
        0.0,
        ge=0,
        le=10_000,
        description="after sending set-points or reads, the gateway polls for the answers "
        "without sleeping for up to this long (a sleeping thread's wake-up is the round "
        "trip's tail on a busy machine); 0 = always sleep",
    )
    curve_secret_key: str | None = Field(
        None,
        description="the gateway's ZMQ certificate with its "
        "secret key (relative to the scenario file)",
    )
    curve_authorized_dir: str | None = Field(
        None, description="folder of the public certificates of the devices allowed in"
    )
    allow_unauthenticated: bool = Field(
        False, description="allow a non-loopback bind without CURVE"
    )
    devices: tuple[HilDevice, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Hil:
        ids = [d.id for d in self.devices]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"device ids must be unique; repeated: {dup}")
        if (self.curve_secret_key is None) != (self.curve_authorized_dir is None):
            raise ValueError("CURVE needs both curve_secret_key and curve_authorized_dir")
        return self


class Scenario(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    seed: int = Field(1, ge=0)
    hours: PositiveFloat = Field(
        24.0, le=24 * 366, description="simulated horizon; beyond 24 h runs several days"
    )
    start: datetime = Field(
        DEFAULT_START,
        description="local date and time at which the run starts (no time zone); "
        "every result row carries its interval's timestamp from it",
    )
    interval_minutes: float = Field(
        5.0,
        ge=1 / 60,
        le=60,
        description="market interval; down to 1 s (1/60) for control-step lab runs",
    )
    model: Literal["baseline", "1", "2", "3", "4", "5", "6", "layered"] = Field(
        "layered", description="DSO organisational model (configs/models/); layered = model 3"
    )
    transmission: Transmission = Transmission()
    ldas: tuple[Lda, ...] = Field(min_length=1)
    real_time: RealTime = RealTime()
    day_ahead: DayAhead = DayAhead()
    hil: Hil | None = Field(None, description="hardware in the loop (needs real_time.enabled)")
    processes: int | None = Field(
        None,
        ge=1,
        le=64,
        description="pack the federates into this many processes (each stays a federate); "
        "absent: one process per federate",
    )

    @field_validator("start")
    @classmethod
    def _local_start(cls, value: datetime) -> datetime:
        return naive_start(value)

    @model_validator(mode="after")
    def _start_on_interval(self) -> Scenario:
        t = self.start
        after_midnight = t.hour * 60 + t.minute + (t.second + t.microsecond / 1e6) / 60.0
        steps = after_midnight / self.interval_minutes
        if abs(steps - round(steps)) > 1e-9:
            raise ValueError(
                f"start: {t.time()} is not a whole number of {self.interval_minutes:g}-minute "
                "intervals after midnight (daily profiles and devices run on that clock)"
            )
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Scenario:
        names = [lda.name for lda in self.ldas] + [
            a.name for lda in self.ldas for a in lda.aggregators
        ]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"names must be unique across LDAs and aggregators; repeated: {dup}")
        if self.day_ahead.enabled:
            per_day = 1440.0 / self.interval_minutes
            per_period = self.day_ahead.period_minutes / self.interval_minutes
            if abs(per_day - round(per_day)) > 1e-9 or abs(per_period - round(per_period)) > 1e-9:
                raise ValueError(
                    "day_ahead: interval_minutes must divide day_ahead.period_minutes "
                    f"({self.day_ahead.period_minutes}) and a day"
                )
            if self.start.time() != datetime.min.time():
                raise ValueError("day_ahead: the run must start at midnight (start = ...T00:00)")
            gate = self.day_ahead.gate_closure_hours * 60.0 / self.interval_minutes
            if abs(gate - round(gate)) > 1e-9:
                raise ValueError(
                    f"day_ahead.gate_closure_hours ({self.day_ahead.gate_closure_hours}) must be "
                    f"a whole number of market intervals ({self.interval_minutes} minutes)"
                )
        if self.hil is not None:
            if not self.real_time.enabled:
                raise ValueError(
                    "hil needs real_time.enabled = true (hardware runs in wall-clock time)"
                )
            aggregators = [a.name for lda in self.ldas for a in lda.aggregators]
            for i, d in enumerate(self.hil.devices):
                if d.aggregator not in aggregators:
                    raise ValueError(
                        f"hil.devices[{i}].aggregator: {d.aggregator!r} is not an "
                        f"aggregator of this scenario ({aggregators})"
                    )
        return self

    @model_validator(mode="after")
    def _own_names_and_whole_days(self) -> Scenario:
        names = [lda.name for lda in self.ldas] + [
            a.name for lda in self.ldas for a in lda.aggregators
        ]
        taken = sorted(n for n in names if n.lower() in RESERVED_NAMES or n.endswith("_imo"))
        if taken:
            raise ValueError(
                f"names {taken} are taken by the federation's own members "
                f"({', '.join(sorted(RESERVED_NAMES))} and LDA_imo, the independent "
                "operators); choose other LDA and aggregator names"
            )
        per_day = 24 * 60 / self.interval_minutes
        if abs(per_day - round(per_day)) > 1e-9:
            raise ValueError(
                f"interval_minutes = {self.interval_minutes:g} does not divide a day "
                f"(1440 minutes) into whole intervals: use a divisor such as 1, 5, 15 or 60"
            )
        return self

    @property
    def interval_s(self) -> float:
        return self.interval_minutes * 60.0

    @property
    def step_s(self) -> float:
        """Federation seconds per market interval."""
        rt = self.real_time
        return rt.step_s if rt.enabled and rt.step_s is not None else self.interval_s

    @property
    def substep_s(self) -> float:
        rt = self.real_time
        if not rt.enabled:
            return 1.0
        return rt.substep_s if rt.substep_s is not None else min(1.0, self.step_s / 10)

    @property
    def n_intervals(self) -> int:
        return max(1, round(self.hours * 60 / self.interval_minutes))


def load_scenario(path: str | Path) -> tuple[Scenario, Path]:
    """Read and validate a scenario; returns it and its folder (for relative paths)."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(f"{path}: scenario file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Scenario.model_validate(data), Path(os.path.abspath(path)).parent
    except ValidationError as exc:
        raise ScenarioError(_explain(path, exc)) from None


def _explain(path: Path, exc: ValidationError) -> str:
    errors = exc.errors()
    # pydantic also reports a tuple "too short" when one of its items failed:
    # that is not a second problem, and the message would be false
    inner = [e["loc"] for e in errors]
    errors = [
        e
        for e in errors
        if not (
            e["type"] == "too_short"
            and any(len(o) > len(e["loc"]) and o[: len(e["loc"])] == e["loc"] for o in inner)
        )
    ]
    lines = [f"{path}: invalid scenario ({len(errors)} problem(s))"]
    for err in errors:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent = _model_at(err["loc"][:-1])
            allowed = ", ".join(parent.model_fields) if parent else "?"
            lines.append(f"  {where}: unknown field; allowed here: {allowed}")
        elif err["type"] == "literal_error":
            lines.append(f"  {where}: {err['msg']} (got {_short(err.get('input'))})")
        else:
            lines.append(f"  {where}: {err['msg']} (got {_short(err.get('input'))})")
    return "\n".join(lines)


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The section model a location inside the scenario points into."""
    model: type[BaseModel] = Scenario
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))
        nxt = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nxt is None:
            return None
        model = nxt
    return model
