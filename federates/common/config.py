"""The federation config: what the runner generates and every federate reads.

One JSON file per run holds the whole resolved federation (paths absolute or
relative to the file, devices placed, ports chosen); each federate picks its
own section by name. Validated with pydantic, unknown keys are errors.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from dsosim.federates.common.schedule import last_offset

DEFAULT_START = datetime(2026, 7, 20, 0, 0)
REUSE_LINEARISATION_KW = 0.0
"""Default move (kW and kvar of every load and DER location) within which a
utility reuses its last linearisation (docs/scenario.md): 0, off (10 cuts the
study's linearisation CPU by three quarters and changes its results:
docs/models.md, "Reusing a linearisation")."""
"""Start of a run when the scenario gives none: a summer Monday, midnight."""


def naive_start(value: datetime) -> datetime:
    """A start date-time must be local time without a time zone (profiles and
    the sun are computed in the scenario's local time)."""
    if value.tzinfo is not None:
        raise ValueError(
            f"give the start as local date and time without a time zone "
            f"(e.g. 2026-07-20T00:00), got {value.isoformat()}"
        )
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HelicsSettings(Strict):
    core_type: Literal["zmq", "tcp", "tcp_ss", "ipc"] = "zmq"
    broker_address: str = Field(description="e.g. tcp://127.0.0.1:23500")
    broker_port: int = Field(ge=1024, le=65535)
    broker_interface: str = Field(
        "127.0.0.1", description="address the broker listens on (several hosts: its host's)"
    )
    interfaces: dict[str, str] = Field(
        default_factory=dict,
        description="federate -> the address of its host, which its core advertises to the "
        "broker (several hosts; absent: loopback)",
    )
    broker_key: str = Field(
        "",
        description="filled in from broker_key_file when the config is loaded; never "
        "written to federation.json or a command line",
    )
    broker_key_file: str | None = Field(
        "broker.key",
        description="file beside federation.json holding the secret broker key (mode "
        "0600; created with a random key by the first process that needs it)",
    )
    stall_timeout_s: PositiveFloat = Field(
        120.0,
        description="the broker stops the federation when no federate is granted time "
        "for this long, naming the federate that holds it",
    )
    connect_timeout_s: PositiveInt = 30
    max_cosim_duration_s: PositiveInt = Field(
        3600, description="broker wall-clock limit: a hung federation ends after this"
    )
    real_time: bool = Field(False, description="HELICS real-time mode on every federate")
    rt_lead_s: float = Field(
        0.0,
        ge=0,
        description="a grant may come this long before wall time reaches it (0: "
        "never early, so hardware never sees a set-point before its time)",
    )
    rt_lag_s: float = Field(
        10.0,
        gt=0,
        description="HELICS forces a grant pending this long after its wall time; "
        "forcing breaks the exchange order, so this is a last-resort safety valve",
    )


class TimeSettings(Strict):
    """Two clocks: the market interval (``interval_s``, simulated seconds: what
    energy, profiles and devices see) and the federation step that carries it
    (``step_s`` HELICS seconds per interval, with sub-steps ``substep_s`` apart;
    in real-time mode HELICS seconds are wall seconds, so ``interval_s /
    step_s`` is the time compression). See ``common.schedule``."""

    interval_s: float = Field(gt=0, description="market interval length, simulated seconds")
    n_intervals: PositiveInt
    step_s: float | None = Field(
        None, gt=0, description="federation seconds per interval (default: interval_s)"
    )
    substep_s: float = Field(1.0, gt=0, description="federation seconds between sub-steps")
    settle_s: float | None = Field(
        None, gt=0, description="set-point to read-back of hardware (default: one sub-step)"
    )
    start: datetime = Field(
        DEFAULT_START,
        description="simulated date and time (local, no time zone) at which interval 0 starts",
    )
    origin_s: float = Field(
        0.0,
        ge=0,
        description="federation seconds before interval 0 (room for the first day's "
        "day-ahead market; see common.schedule)",
    )

    @field_validator("start")
    @classmethod
    def _local_time(cls, value: datetime) -> datetime:
        return naive_start(value)

    @model_validator(mode="after")
    def _phases_fit(self) -> TimeSettings:
        if last_offset(self) + self.origin_s >= self.step:
            with_da = " with the day-ahead market's" if self.origin_s else ""
            raise ValueError(
                f"the last exchange of an interval{with_da} comes "
                f"{last_offset(self) + self.origin_s:g} s after "
                f"its start but an interval is only {self.step:g} s (step_s); shorten "
                f"substep_s/settle_s or lengthen the step"
            )
        return self

    @property
    def step(self) -> float:
        """Federation seconds per market interval."""
        return self.interval_s if self.step_s is None else self.step_s

    @property
    def settle(self) -> float:
        return self.substep_s if self.settle_s is None else self.settle_s

    @property
    def time_scale(self) -> float:
        """Simulated seconds per federation (wall, in real time) second."""
        return self.interval_s / self.step

    @property
    def intervals_per_day(self) -> int:
        """Market intervals in a simulated day (rounded)."""
        return max(1, round(86400.0 / self.interval_s))

    @property
    def start_s(self) -> float:
        """Seconds after midnight at which interval 0 starts (the start's time of
        day): roles shift their daily profiles by it."""
        t = self.start
        return float(t.hour * 3600 + t.minute * 60 + t.second) + t.microsecond / 1e6

    def timestamp(self, interval: int) -> datetime:
        """Simulated date and time at which market interval ``interval`` starts."""
        return self.start + timedelta(seconds=interval * self.interval_s)


class IsoInterface(Strict):
    dso: str
    td_bus: int


class TransmissionEvent(Strict):
    """A change to the transmission system over ``[start_hour, end_hour)`` of
    the run (hours from its first interval); see ``federates/iso/events.py``
    and docs/scenario.md."""

    kind: Literal["generator_outage", "load_scale", "supply_offer"]
    start_hour: float = Field(ge=0, description="hours from the run's first interval")
    end_hour: float = Field(gt=0, description="the event ends here (exclusive)")
    name: str | None = Field(None, description="label in the results (default event<i>)")
    gen: int | None = Field(None, ge=0, description="generator_outage: row of the case's gen table")
    factor: PositiveFloat | None = Field(None, description="load_scale: multiplies fixed loads")
    bus: int | None = Field(None, description="supply_offer: case bus number")
    mw: PositiveFloat | None = Field(None, description="supply_offer: MW offered")
    price: float | None = Field(
        None, ge=-1000.0, le=10000.0, description="supply_offer: offer price, $/MWh"
    )

    @model_validator(mode="after")
    def _fields_of_kind(self) -> TransmissionEvent:
        if self.end_hour <= self.start_hour:
            raise ValueError(f"end_hour {self.end_hour} must be after start_hour {self.start_hour}")
        needs = {
            "generator_outage": ("gen",),
            "load_scale": ("factor",),
            "supply_offer": ("bus", "mw", "price"),
        }[self.kind]
        missing = [f for f in needs if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.kind} event needs {', '.join(missing)}")
        extra = [
            f
            for f in ("gen", "factor", "bus", "mw", "price")
            if f not in needs and getattr(self, f) is not None
        ]
        if extra:
            raise ValueError(f"a {self.kind} event takes no {', '.join(extra)}")
        return self


class DayAheadConfig(Strict):
    """The ISO's day-ahead market (``federates/iso/dayahead.py``), cleared once
    per simulated day at its gate closure (``common.schedule``)."""

    period_minutes: float = Field(60.0, gt=0, le=1440, description="day-ahead period")
    ramp_pu_per_h: PositiveFloat = Field(
        0.5, description="ramp rate, x PMAX per hour, of generators whose case gives none"
    )
    segments: int = Field(10, ge=1, le=100, description="offer segments of a quadratic cost")
    load_forecast_error: float = Field(
        0.03, ge=0, lt=0.5, description="relative error (sd) of the day-ahead load forecasts"
    )
    pv_forecast_error: float = Field(
        0.1,
        ge=0,
        lt=1.0,
        description="relative error (sd) per period of aggregators' day-ahead sky (PV) forecasts",
    )
    ev_forecast_error: float = Field(
        0.1,
        ge=0,
        lt=1.0,
        description="relative error (sd) per session of aggregators' day-ahead forecasts of "
        "the energy their EVs arrive needing",
    )
    temperature_forecast_error_c: float = Field(
        1.0,
        ge=0,
        lt=10.0,
        description="error (sd, degC) per period of aggregators' day-ahead outdoor temperature "
        "forecasts (air conditioners and heat pumps)",
    )
    gate_closure_hours: float = Field(
        0.0,
        ge=0,
        lt=24,
        description="hours before each day starts that its market closes (0: just before "
        "the day; 14: at 10:00 the day before); the first day's market runs before the "
        "first interval whatever this says",
    )

    def gate_intervals(self, interval_s: float) -> int:
        """``gate_closure_hours`` in market intervals (the scenario checks it is whole)."""
        return round(self.gate_closure_hours * 3600.0 / interval_s)


class IsoConfig(Strict):
    name: str
    case: str
    load_scale: PositiveFloat = 1.0
    line_limit_mw: PositiveFloat | None = None
    load_profile: str = "system"
    interfaces: tuple[IsoInterface, ...]
    events: tuple[TransmissionEvent, ...] = ()
    day_ahead: DayAheadConfig | None = None


class LimitsConfig(Strict):
    """An LDA's feeder limits: the scenario's ``[ldas.limits]`` as written."""

    vmin_pu: float = Field(0.95, gt=0.5, lt=1.0)
    vmax_pu: float = Field(1.05, ge=1.0, lt=1.5)
    max_loading: float = Field(1.0, gt=0.1, le=2.0, description="fraction of normal rating")
    operating_margin_pu: float = Field(
        0.005,
        ge=0,
        lt=0.05,
        description=(
            "voltage margin a market operator keeps inside the band (forecast and model error)"
        ),
    )
    control_margin_pu: float | None = Field(
        None,
        ge=0,
        lt=0.05,
        description=(
            "voltage margin for the feeder's regulators and switched capacitors: what they "
            "can move a voltage between two valid resting points; derived from their bands "
            "and steps at build when absent (dso.controls, docs/models.md)"
        ),
    )

    @model_validator(mode="after")
    def _band_left(self) -> LimitsConfig:
        margin = self.operating_margin_pu + (self.control_margin_pu or 0.0)
        if not self.vmin_pu + margin < self.vmax_pu - margin:
            raise ValueError(
                f"the voltage band {self.vmin_pu}-{self.vmax_pu} pu narrowed by the operating "
                f"margin {self.operating_margin_pu} and the control margin "
                f"{self.control_margin_pu} pu on each side leaves nothing to plan within"
            )
        return self


class DsoConfig(Strict):
    name: str
    iso: str
    feeder: str
    td_bus: int
    scale: PositiveFloat
    load_profile: str = "residential"
    load_scale: PositiveFloat = 1.0
    load_forecast_error: float = Field(0.02, ge=0, lt=0.5)
    voltage_basis: Literal["ln", "ll"] = "ln"
    limits: LimitsConfig = LimitsConfig()
    aggregators: tuple[str, ...]
    reuse_linearisation_kw: float = Field(
        REUSE_LINEARISATION_KW,
        ge=0,
        description="a forecast or dispatch point reuses the last linearisation when no load "
        "or DER location moved more (kW, kvar) and no control or volt-var segment changed; "
        "0: never",
    )


class AggregatorConfig(Strict):
    name: str
    dso: str
    buses: tuple[str, ...] = Field(description="feeder buses where its fleet sits (its locations)")
    fleet: dict[str, Any]
    response_error: float = Field(0.0, ge=0, lt=1)
    utility_owned: bool = Field(False, description="owned by the utility (DMO rule applies)")


class OrgModel(Strict):
    """A DSO organisational model: which role holder runs what (see
    ``configs/models/``). Everything model-specific in the federation follows
    from these fields through :mod:`dsosim.federates.common.routes`."""

    name: str = Field(description="baseline, 1 ... 6")
    title: str
    vision: Literal["none", "grand_central", "layered"]
    dmo: Literal["none", "iso", "utility", "independent"]
    derm: Literal["none", "iso", "utility", "independent", "automatic"]
    local_market: Literal["none", "nodal", "p2p"]
    utility_ders_may_bid: bool
    tariff: float = Field(25.0, description="flat retail tariff passive DERs see, $/MWh")


class HilDeviceConfig(Strict):
    """One DER of an aggregator's fleet run by hardware (or the emulator)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    aggregator: str
    kind: Literal["battery", "pv"]
    bus: str
    nth: int = Field(0, ge=0, description="which device of that kind at that bus (spec order)")
    rated_kw: PositiveFloat = Field(
        description="the hardware's rating; set-points and "
        "measurements scale by rated_kw / sim_rated_kw"
    )
    sim_rated_kw: PositiveFloat = Field(description="rating of the simulated DER it stands for")
    sim_capacity_kwh: PositiveFloat | None = None
    soc_init: float | None = Field(None, ge=0, le=1)
    soc_min: float | None = Field(None, ge=0, le=1, description="simulated battery's SOC limits")
    soc_max: float | None = Field(None, ge=0, le=1)
    efficiency: float | None = Field(None, gt=0, le=1, description="round trip (batteries)")

    @property
    def scale(self) -> float:
        """Hardware kW per simulated kW."""
        return self.rated_kw / self.sim_rated_kw


class HilConfig(Strict):
    """The hardware-in-the-loop gateway federate (docs/hil.md)."""

    name: str = "hil"
    bind: str = "tcp://127.0.0.1:5570"
    timeout_ms: PositiveFloat = 50.0
    heartbeat_s: PositiveFloat = 1.0
    fallback: Literal["hold", "unavailable"] = "hold"
    implausible: Literal["clip", "missing"] = "missing"
    power_tolerance: float = Field(0.05, ge=0, le=1)
    soc_tolerance: float = Field(0.02, ge=0, le=1)
    spin_ms: float = Field(0.0, ge=0, le=10_000)
    realtime_priority: int = Field(0, ge=0, le=99)
    curve_secret_key: str | None = None
    curve_authorized_dir: str | None = None
    allow_unauthenticated: bool = False
    wait_s: float = Field(
        30.0,
        ge=0,
        description="before the start, wait this long for every "
        "device to connect (the whole federation waits)",
    )
    devices: tuple[HilDeviceConfig, ...] = Field(min_length=1)
    replay: str | None = Field(
        None,
        description="results folder of a recorded HIL run: the gateway plays back its "
        "device answers (hil_answers) instead of serving devices (dsosim replay)",
    )


class LedgerBoundConfig(Strict):
    """The settlement sanity bound (``ledger.SanityBound``), derived from the case at build."""

    max_mw: PositiveFloat
    max_price: PositiveFloat


class RecorderConfig(Strict):
    name: str
    results_dir: str
    writers: dict[str, tuple[str, ...]] | None = Field(
        None,
        description="table -> the only federates that may write it; tables not named "
        "are refused (dsosim build fills it from common.tables.TABLES_BY_ROLE). None: "
        "any member may write any table (hand-written federations)",
    )
    markets: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="federate -> the markets whose settlement rows it may write: 'iso', "
        "or '*:LDA' for every market of that LDA (retail:LDA, p2p:LDA, ...)",
    )

    def may_settle(self, federate: str, market: str) -> bool:
        """May ``federate`` write settlement rows of ``market``?"""
        for owned in self.markets.get(federate, ()):
            if market == owned:
                return True
            if owned.startswith("*:") and ":" in market and market.split(":", 1)[1] == owned[2:]:
                return True
        return False

    flush_every: PositiveInt = 12


class FederationConfig(Strict):
    name: str
    seed: int
    model: OrgModel
    helics: HelicsSettings
    time: TimeSettings
    iso: IsoConfig
    dsos: tuple[DsoConfig, ...]
    aggregators: tuple[AggregatorConfig, ...]
    recorder: RecorderConfig
    hil: HilConfig | None = None
    ledger_bound: LedgerBoundConfig | None = Field(
        None, description="payments beyond it are refused from the books (recorder)"
    )

    def federate_names(self) -> list[str]:
        return [
            self.iso.name,
            *(d.name for d in self.dsos),
            *self.independent_names(),
            *(a.name for a in self.aggregators),
            *([self.hil.name] if self.hil else []),
            self.recorder.name,
        ]

    def hil_devices_of(self, aggregator: str) -> tuple[HilDeviceConfig, ...]:
        """The DERs of an aggregator's fleet that hardware runs."""
        return tuple(d for d in self.hil.devices if d.aggregator == aggregator) if self.hil else ()

    def independent_names(self) -> list[str]:
        """Independent market operator federates (one per LDA) if the model has them."""
        if "independent" not in (self.model.dmo, self.model.derm):
            return []
        return [independent_name(d.name) for d in self.dsos]

    def dso(self, name: str) -> DsoConfig:
        return next(d for d in self.dsos if d.name == name)

    def aggregator(self, name: str) -> AggregatorConfig:
        return next(a for a in self.aggregators if a.name == name)


def independent_name(lda: str) -> str:
    """Federate name of the independent operator of an LDA."""
    return f"{lda}_imo"


def load_federation(path: str | Path) -> tuple[FederationConfig, Path]:
    """Read a federation config; returns it (with the broker key read from its
    key file) and the folder relative paths inside it are resolved against."""
    path = Path(path).resolve()
    config = FederationConfig.model_validate(json.loads(path.read_text()))
    key_file = config.helics.broker_key_file
    if key_file and not config.helics.broker_key:
        key = broker_key(path.parent / key_file)
        config = config.model_copy(
            update={"helics": config.helics.model_copy(update={"broker_key": key})}
        )
    return config, path.parent


KEY_BYTES = 24


def write_broker_key(path: str | Path, *, key: str | None = None) -> str:
    """Write a fresh random broker key (or ``key``), readable by its owner only."""
    path = Path(path)
    key = key or secrets.token_urlsafe(KEY_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.replace(tmp, path)
    return key


def broker_key(path: str | Path) -> str:
    """The federation's broker key from its key file. If there is none yet
    (a checked-in runner launched for the first time), the first process to
    get here creates it atomically (hard link: all or nothing) and the others
    read it, so every process of the run uses the same secret."""
    path = Path(path)
    if not path.exists():
        key = secrets.token_urlsafe(KEY_BYTES)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process of this run was first: use its key
        finally:
            tmp.unlink(missing_ok=True)
    text = path.read_text().strip()
    if not text:
        raise ValueError(f"{path}: broker key file is empty")
    return text
