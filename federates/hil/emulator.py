"""The HIL device emulator: the device side of the protocol in ``docs/hil.md``.

It stands in for real equipment in a hardware-in-the-loop federation, or is
a reference client for whoever writes one. Plain Python and pyzmq: no HELICS.

Two parts:

* **Device models** (:class:`BatteryModel`, :class:`PvModel`) that follow a
  set-point the way equipment does, on the wall clock: a response delay
  before a new set-point starts to act, a ramp limit in kW per wall second,
  and physical limits (rating, state of charge, sun). Energy is counted in
  *simulated* time (wall seconds x ``time_scale`` from WELCOME), because the
  federation runs faster than real time: 1 wall second may be 5 simulated
  minutes, and a battery must empty in simulated hours, not wall hours.
* **The client** (:class:`Emulator`): one DEALER socket per device, one poll
  loop for all of them. It says HELLO, configures a model from WELCOME,
  answers every SETPOINT and READ at once with a MEASUREMENT, heartbeats when
  idle and says HELLO again when the gateway has gone quiet. Fault
  injection (:class:`Faults`) makes it late, silent or garbled on purpose.

The clock is injectable so the physics can be tested exactly.
"""

from __future__ import annotations

import csv
import math
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal

import zmq

from dsosim.federates.hil.protocol import (
    DEVICE_ID,
    KINDS,
    PROTOCOL_VERSION,
    VERSIONS,
    Error,
    Heartbeat,
    Hello,
    Measurement,
    ProtocolError,
    Read,
    Reject,
    Setpoint,
    Welcome,
    decode,
    encode,
)

Clock = Callable[[], float]
Status = Literal["ok", "limited", "fault"]

GARBAGE_FRAME = b"\xc1 garbage from the device emulator (--garbage-every)"
"""An injected garbage answer. 0xc1 is the one byte msgpack never uses, so
the frame fails to decode on the first byte, as line noise would."""

SILENCE_PERIODS = 3
"""Heartbeat periods without a word from the gateway before saying HELLO
again (``docs/hil.md``: the gateway may have restarted)."""

UNSENT_RETRY_S = 0.1
"""Retry period for a HELLO that found no connection to go out on."""

WAITING_NOTICE_S = 10.0
"""Say so when a device has had no connection for this long."""

MAX_CONSECUTIVE_REJECTS = 3
"""REJECTs in a row, without a WELCOME between, after which a device that
had a session gives up (see :meth:`Emulator._on_reject`)."""


@dataclass(frozen=True, slots=True)
class Reading:
    """What a device measures on itself at one instant."""

    p_kw: float
    soc: float | None
    status: Status


@dataclass(frozen=True, slots=True)
class ModelOptions:
    """Behaviour the WELCOME does not say: how the equipment responds."""

    ramp_s: float = 0.2
    """Wall seconds to ramp from 0 to rated power (0 = no ramp limit)."""
    delay_ms: float = 20.0
    """Wall milliseconds before a new set-point starts to take effect."""
    efficiency: float = 0.9
    """Battery round-trip efficiency; sqrt of it on the way in and out."""
    soc_min: float = 0.05
    soc_max: float = 0.95

    def __post_init__(self) -> None:
        if not (self.ramp_s >= 0 and math.isfinite(self.ramp_s)):
            raise ValueError(f"ramp_s must be >= 0, got {self.ramp_s}")
        if not (self.delay_ms >= 0 and math.isfinite(self.delay_ms)):
            raise ValueError(f"delay_ms must be >= 0, got {self.delay_ms}")
        if not 0 < self.efficiency <= 1:
            raise ValueError(f"efficiency must be within (0, 1], got {self.efficiency}")
        if not 0 <= self.soc_min < self.soc_max <= 1:
            raise ValueError(
                f"need 0 <= soc_min < soc_max <= 1, got {self.soc_min}, {self.soc_max}"
            )


# ------------------------------------------------------------------- models


class _Follower:
    """What both models share: a set-point queue behind the response delay and
    a ramp-limited power. Subclasses say what power they can reach now."""

    def __init__(
        self, rated_kw: float, time_scale: float, options: ModelOptions, clock: Clock
    ) -> None:
        if rated_kw <= 0 or time_scale <= 0:
            raise ValueError("rated_kw and time_scale must be > 0")
        self.rated_kw = rated_kw
        self.time_scale = time_scale
        self.options = options
        self._clock = clock
        self._ramp = math.inf if options.ramp_s == 0 else rated_kw / options.ramp_s
        """kW per wall second."""
        self._t = clock()
        self.p_kw = 0.0
        self.requested_kw = 0.0
        """The set-point in effect, as the gateway asked it (before any limit)."""
        self.commanded_kw = 0.0
        """The latest set-point, in effect or still behind the response delay:
        the status says whether the device follows *this* one."""
        self._pending: deque[tuple[float, float]] = deque()
        """(wall time it takes effect, set-point), in order."""

    @property
    def tolerance_kw(self) -> float:
        return 1e-6 * max(self.rated_kw, 1.0)

    def command(self, p_kw: float) -> None:
        """A new set-point: it starts to act ``delay_ms`` from now."""
        now = self._advance()
        self._pending.append((now + self.options.delay_ms / 1000.0, p_kw))
        self.commanded_kw = p_kw

    def _advance(self) -> float:
        """Bring the state up to the clock, applying queued set-points at the
        moment each takes effect."""
        now = self._clock()
        while True:
            while self._pending and self._pending[0][0] <= self._t:
                self.requested_kw = self._pending.popleft()[1]
            t_end = min(now, self._pending[0][0]) if self._pending else now
            if t_end <= self._t:
                return max(now, self._t)
            self._evolve(t_end)
            self._t = t_end

    def _evolve(self, t_end: float) -> None:
        raise NotImplementedError


class BatteryModel(_Follower):
    """A battery inverter. ``p_kw`` > 0 charges, < 0 discharges.

    Power ramps toward the set-point (clipped to +-rated) at the ramp limit.
    State of charge integrates the power over simulated time, with sqrt of
    the round-trip efficiency lost on each way. At ``soc_max`` charging stops
    and at ``soc_min`` discharging stops: the power is cut to 0 at once (the
    battery management system opens), not ramped. Between events the power is
    linear in time, so the integration is exact; the moment a limit is hit is
    found by bisection."""

    def __init__(
        self,
        rated_kw: float,
        capacity_kwh: float,
        soc: float,
        time_scale: float,
        options: ModelOptions = ModelOptions(),
        clock: Clock = time.perf_counter,
    ) -> None:
        super().__init__(rated_kw, time_scale, options, clock)
        if capacity_kwh <= 0:
            raise ValueError("capacity_kwh must be > 0")
        self.capacity_kwh = capacity_kwh
        self.soc = min(max(soc, 0.0), 1.0)
        self._eta_one_way = math.sqrt(options.efficiency)

    def configure(self, options: ModelOptions) -> None:
        """New SOC limits and efficiency (a v2 WELCOME after a reconnect)."""
        self._advance()
        self.options = options
        self._eta_one_way = math.sqrt(options.efficiency)

    def measure(self) -> Reading:
        self._advance()
        limited = abs(self.p_kw - self.commanded_kw) > self.tolerance_kw
        return Reading(self.p_kw, self.soc, "limited" if limited else "ok")

    def _reachable(self) -> float:
        """The set-point clipped to the rating and to what the SOC allows."""
        p = min(max(self.requested_kw, -self.rated_kw), self.rated_kw)
        if self.soc >= self.options.soc_max:
            p = min(p, 0.0)
        if self.soc <= self.options.soc_min:
            p = max(p, 0.0)
        return p

    def _delta_soc(self, p0: float, slope: float, dt: float) -> float:
        """SOC change over ``dt`` wall seconds of power ``p0 + slope*t`` (one sign)."""
        kw_wall_s = p0 * dt + 0.5 * slope * dt * dt
        kwh = kw_wall_s * self.time_scale / 3600.0
        factor = self._eta_one_way if kw_wall_s > 0 else 1.0 / self._eta_one_way
        return factor * kwh / self.capacity_kwh

    def _evolve(self, t_end: float) -> None:
        t = self._t
        while t < t_end:
            if (self.p_kw > 0 and self.soc >= self.options.soc_max) or (
                self.p_kw < 0 and self.soc <= self.options.soc_min
            ):
                self.p_kw = 0.0  # a limit reached exactly at the end of the last segment
            target = self._reachable()
            gap = target - self.p_kw
            reaches = crosses_zero = False
            if abs(gap) <= self.tolerance_kw or math.isinf(self._ramp):
                self.p_kw, slope, seg_end = target, 0.0, t_end
            else:
                slope = math.copysign(self._ramp, gap)
                t_reach = t + abs(gap) / self._ramp
                seg_end = min(t_end, t_reach)
                reaches = seg_end == t_reach
                if self.p_kw * (self.p_kw + slope * (seg_end - t)) < 0:
                    # split where the power changes sign: efficiency differs each way
                    seg_end, reaches, crosses_zero = t - self.p_kw / slope, False, True
            dt = seg_end - t
            new_soc = self.soc + self._delta_soc(self.p_kw, slope, dt)
            limit = self._limit_crossed(self.p_kw + 0.5 * slope * dt, new_soc)
            if limit is not None:
                t += self._time_to(limit, slope, dt)
                self.soc, self.p_kw = limit, 0.0
                continue
            self.soc = new_soc
            if reaches:
                self.p_kw = target
            elif crosses_zero:
                self.p_kw = 0.0
            else:
                self.p_kw += slope * dt
            t = seg_end

    def _limit_crossed(self, p_mid: float, new_soc: float) -> float | None:
        if p_mid > 0 and self.soc < self.options.soc_max <= new_soc:
            return self.options.soc_max
        if p_mid < 0 and self.soc > self.options.soc_min >= new_soc:
            return self.options.soc_min
        return None

    def _time_to(self, limit: float, slope: float, dt: float) -> float:
        """Wall seconds into the segment at which the SOC reaches ``limit``
        (the SOC is monotonic within a segment: the power keeps one sign)."""
        lo, hi = 0.0, dt
        rising = limit > self.soc
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            soc = self.soc + self._delta_soc(self.p_kw, slope, mid)
            if (soc < limit) == rising:
                lo = mid
            else:
                hi = mid
        return hi


def clear_sky_fraction(t_s: float) -> float:
    """Share of rated PV power available at simulation time ``t_s`` (seconds
    from a midnight): a sine from sunrise at 6 h to sunset at 18 h. Simple and
    deterministic on purpose: the emulator tests the loop, not the weather."""
    hour = (t_s % 86400.0) / 3600.0
    if hour <= 6.0 or hour >= 18.0:
        return 0.0
    return math.sin(math.pi * (hour - 6.0) / 12.0)


class PvModel(_Follower):
    """A PV inverter. Output is negative (production). A set-point ``p_kw``
    <= 0 is a floor on net demand (curtailment): the output is
    ``max(p_kw, -available)``, ramp-limited; a positive set-point is read as 0.

    Simulation time of day comes from the latest SETPOINT's ``t_s`` plus the
    wall time since it arrived x ``time_scale``; before the first set-point
    the time of day is unknown and the inverter stays at 0. The sun moves far
    slower than the ramp, so between events the power takes one ramp-limited
    step toward what is available at the step's end."""

    def __init__(
        self,
        rated_kw: float,
        time_scale: float,
        options: ModelOptions = ModelOptions(),
        clock: Clock = time.perf_counter,
    ) -> None:
        super().__init__(rated_kw, time_scale, options, clock)
        self._anchor: tuple[float, float] | None = None
        """(wall time, simulation time) of the latest SETPOINT."""
        self._available: float | None = None
        """The available power a v2 SETPOINT said (None: the clear sky)."""

    def set_time(self, t_s: float, available_kw: float | None = None) -> None:
        """The simulation time now (from a SETPOINT) and, from a v2 SETPOINT,
        the simulated PV system's available power this interval: the emulated
        sun then follows the simulation's weather instead of a clear sky."""
        now = self._advance()
        self._anchor = (now, t_s)
        self._available = None if available_kw is None else min(available_kw, self.rated_kw)

    def available_kw(self, wall: float | None = None) -> float:
        if self._anchor is None:
            return 0.0
        if self._available is not None:
            return self._available
        wall = self._clock() if wall is None else wall
        t_s = self._anchor[1] + (wall - self._anchor[0]) * self.time_scale
        return self.rated_kw * clear_sky_fraction(t_s)

    def measure(self) -> Reading:
        self._advance()
        floor = min(self.commanded_kw, 0.0)
        limited = abs(self.p_kw - floor) > self.tolerance_kw
        return Reading(self.p_kw, None, "limited" if limited else "ok")

    def _evolve(self, t_end: float) -> None:
        floor = max(min(self.requested_kw, 0.0), -self.rated_kw)
        target = max(floor, -self.available_kw(t_end))
        step = self._ramp * (t_end - self._t)
        self.p_kw += min(max(target - self.p_kw, -step), step)


Model = BatteryModel | PvModel


def build_model(
    welcome: Welcome,
    options: ModelOptions,
    clock: Clock,
    warn: Callable[[str], None] = lambda _m: None,
) -> Model:
    """The model a WELCOME describes. A battery WELCOME without a capacity or a
    SOC gets 1 h of rated power and half full, with a warning."""
    options = _welcome_options(welcome, options)
    if welcome.kind == "pv":
        return PvModel(welcome.rated_kw, welcome.time_scale, options, clock)
    capacity = welcome.capacity_kwh
    if capacity is None:
        capacity = welcome.rated_kw * 1.0
        warn(f"{welcome.device}: WELCOME has no capacity_kwh; assuming {capacity:g} kWh (1 h)")
    soc = welcome.soc
    if soc is None:
        soc = 0.5
        warn(f"{welcome.device}: WELCOME has no soc; starting half full")
    return BatteryModel(welcome.rated_kw, capacity, soc, welcome.time_scale, options, clock)


def _welcome_options(welcome: Welcome, options: ModelOptions) -> ModelOptions:
    """A v2 WELCOME says the simulated battery's SOC limits and efficiency:
    the emulated battery takes them (a v1 WELCOME leaves the options as they are)."""
    changes: dict[str, float] = {}
    if welcome.soc_min is not None and welcome.soc_max is not None:
        if welcome.soc_min < welcome.soc_max:
            changes.update(soc_min=welcome.soc_min, soc_max=welcome.soc_max)
    if welcome.efficiency is not None:
        changes["efficiency"] = welcome.efficiency
    return replace(options, **changes) if changes else options


# ------------------------------------------------------------------- client


@dataclass(frozen=True, slots=True)
class Faults:
    """Misbehaviour on purpose, for demos and for testing the gateway."""

    late_ms: float = 0.0
    """Send every MEASUREMENT this much after the request (state at sending)."""
    silent_after: int | None = None
    """Answer the first N set-points (and their READs), then nothing more;
    heartbeats continue, so the device stays connected but useless."""
    garbage_every: int | None = None
    """Every Nth answer is a garbage frame instead of a MEASUREMENT."""
    power_factor: float = 1.0
    """Report the power times this (1000: firmware reporting W as kW)."""
    report_kw: float | None = None
    """Report this power, whatever the device does (an absurd meter)."""
    soc_offset: float = 0.0
    """Report the state of charge plus this (a jump; may leave 0..1)."""
    faults_after: int = 0
    """The three reading faults above start with set-point ``faults_after + 1``."""

    def __post_init__(self) -> None:
        for name in ("power_factor", "soc_offset"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        if self.report_kw is not None and not math.isfinite(self.report_kw):
            raise ValueError(f"report_kw must be finite, got {self.report_kw}")
        if self.faults_after < 0:
            raise ValueError(f"faults_after must be >= 0, got {self.faults_after}")
        if not (self.late_ms >= 0 and math.isfinite(self.late_ms)):
            raise ValueError(f"late_ms must be >= 0, got {self.late_ms}")
        if self.silent_after is not None and self.silent_after < 0:
            raise ValueError(f"silent_after must be >= 0, got {self.silent_after}")
        if self.garbage_every is not None and self.garbage_every < 1:
            raise ValueError(f"garbage_every must be >= 1, got {self.garbage_every}")


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """Z85 keys for a CURVE client: the gateway's public key and our pair."""

    server_public: bytes
    public: bytes
    secret: bytes


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    device: str
    kind: str | None = None
    """Sent in HELLO when given, so the gateway can refuse a wiring mistake."""


@dataclass(frozen=True, slots=True)
class EmulatorOptions:
    model: ModelOptions = ModelOptions()
    faults: Faults = Faults()
    curve: CurveKeys | None = None
    log_path: Path | None = None
    hello_retry_s: float = 1.0
    """HELLO again after this long without a WELCOME."""
    protocol: int = PROTOCOL_VERSION
    """The protocol version to speak (1 to stand in for an old device)."""
    realtime_priority: int = 0
    """1-99: run the emulator (and ZeroMQ's I/O thread) under SCHED_FIFO at
    this priority, as real-time equipment would answer; 0 = normal policy."""
    spin_ms: float = 0.0
    """Poll without sleeping from this long before a request is expected
    (the set-point every ``step_s``, the read its settle time later, both
    learned from the previous interval) until it comes or this long after:
    a device that is awake when asked answers without the machine's
    wake-up latency. 0 = sleep until asked."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.spin_ms) and 0 <= self.spin_ms <= 1000):
            raise ValueError(f"spin_ms must be within 0..1000, got {self.spin_ms!r}")
        if not 0 <= self.realtime_priority <= 99:
            raise ValueError(f"realtime_priority must be 0..99, got {self.realtime_priority!r}")
        if self.spin_ms and self.realtime_priority:
            raise ValueError(
                "spin_ms and realtime_priority together would hold a core at real-time "
                "priority while spinning: choose one"
            )
        if self.protocol not in VERSIONS:
            raise ValueError(f"protocol version must be one of {VERSIONS}, got {self.protocol!r}")


class DeviceRejected(RuntimeError):
    """The gateway refused a device (REJECT); the emulator stops."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"the gateway rejected device {device!r}: {reason}")
        self.device = device
        self.reason = reason


ADDRESS = re.compile(
    r"^tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)"
    r":(?P<port>\d{1,5})$"
)


def check_address(address: str) -> str:
    """A ZeroMQ address a device can connect to, or ValueError saying why not."""
    if address.startswith("ipc://") and len(address) > len("ipc://"):
        return address
    m = ADDRESS.match(address)
    if not m or not 1 <= int(m["port"]) <= 65535:
        raise ValueError(
            f"{address!r} is not an address to connect to; expected tcp://HOST:PORT "
            f"(e.g. tcp://127.0.0.1:5570)"
        )
    return address


def parse_device(text: str) -> DeviceSpec:
    """``ID`` or ``ID:KIND`` (``:`` cannot occur in an id)."""
    device, _, kind = text.partition(":")
    if not DEVICE_ID.match(device):
        raise ValueError(
            f"device id {device!r} must be 1-64 of [A-Za-z0-9_.-], starting with a letter or digit"
        )
    if kind and kind not in KINDS:
        raise ValueError(f"device kind {kind!r} must be one of {', '.join(KINDS)}")
    return DeviceSpec(device, kind or None)


@dataclass
class _Session:
    """One device's connection and state."""

    spec: DeviceSpec
    socket: zmq.Socket
    welcome: Welcome | None = None
    """The WELCOME of the session now open (None: no session)."""
    model: Model | None = None
    model_welcome: Welcome | None = None
    """The WELCOME the model was built from (kept across sessions)."""
    ever_welcomed: bool = False
    rejects_in_a_row: int = 0
    next_hello: float = -math.inf
    """When to (re)try HELLO while there is no session."""
    unsent_since: float | None = None
    """Since when a HELLO could not go out (no connection to the gateway)."""
    last_sent: float = 0.0
    last_heard: float = 0.0
    setpoints: int = 0
    answers: int = 0
    setpoint_kw: float | None = None
    setpoint_at: float | None = None
    """Wall time the latest SETPOINT arrived (for --spin-ms)."""
    read_after: float | None = None
    """SETPOINT -> READ delay seen last (for --spin-ms)."""
    read_seen: bool = True
    late: deque[tuple[float, int, str]] = field(default_factory=deque)
    """Answers held back by --late-ms: (due wall time, seq, what it answers)."""


class Emulator:
    """Emulated devices connected to one gateway. Use as a context manager
    (sockets and the CSV log are closed on exit), then :meth:`run`."""

    def __init__(
        self,
        address: str,
        devices: Sequence[DeviceSpec],
        options: EmulatorOptions = EmulatorOptions(),
        *,
        clock: Clock = time.perf_counter,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.address = check_address(address)
        ids = [d.device for d in devices]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"need one or more distinct device ids, got {ids}")
        self.devices = list(devices)
        self.options = options
        self._clock = clock
        self._say = say or (lambda m: print(m, file=sys.stderr, flush=True))
        self._context: zmq.Context | None = None
        self._sessions: list[_Session] = []
        self._log_file: IO[str] | None = None
        self._log: Any = None
        """csv.writer over the log file, when --log is given."""
        self._start = clock()

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> Emulator:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _open(self) -> None:
        self._context = zmq.Context()
        if self.options.realtime_priority:
            self._context.set(zmq.THREAD_SCHED_POLICY, 1)  # SCHED_FIFO
            self._context.set(zmq.THREAD_PRIORITY, self.options.realtime_priority)
            if not _set_fifo(self.options.realtime_priority):
                self._say(
                    f"real-time priority {self.options.realtime_priority} refused by the OS; "
                    f"running at the normal policy"
                )
        for spec in self.devices:
            self._sessions.append(_Session(spec, self._connect()))
        if self.options.log_path is not None:
            self._log_file = open(self.options.log_path, "w", newline="", encoding="utf-8")
            self._log = csv.writer(self._log_file)
            self._log.writerow(
                ["wall_s", "device", "seq", "answer", "setpoint_kw", "p_kw", "soc", "status"]
            )

    def _connect(self) -> zmq.Socket:
        assert self._context is not None
        sock = self._context.socket(zmq.DEALER)
        try:
            sock.linger = 0
            # Only queue to a live connection: nothing stale (a heartbeat from
            # before a gateway restart) reaches a new gateway ahead of HELLO.
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.ipv6 = "://[" in self.address
            curve = self.options.curve
            if curve is not None:
                sock.curve_serverkey = curve.server_public
                sock.curve_publickey = curve.public
                sock.curve_secretkey = curve.secret
            sock.connect(self.address)
        except BaseException:
            sock.close(linger=0)
            raise
        return sock

    def close(self) -> None:
        for s in self._sessions:
            s.socket.close(linger=0)
        self._sessions.clear()
        if self._context is not None:
            self._context.term()
            self._context = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -------------------------------------------------------------- loop

    def run(self, *, duration_s: float | None = None, stop: threading.Event | None = None) -> None:
        """Serve until ``duration_s`` wall seconds have passed or ``stop`` is
        set. Raises :class:`DeviceRejected` when the gateway refuses a device."""
        if not self._sessions:
            raise RuntimeError("Emulator.run outside its with-block")
        start = self._clock()
        poller = zmq.Poller()
        by_socket = {}
        for s in self._sessions:
            poller.register(s.socket, zmq.POLLIN)
            by_socket[s.socket] = s
        while not (stop is not None and stop.is_set()):
            now = self._clock()
            if duration_s is not None and now - start >= duration_s:
                return
            for s in self._sessions:
                self._tick(s, now)
            wait = min([self._next_due(s) for s in self._sessions] + [now + 0.05]) - now
            if duration_s is not None:
                wait = min(wait, start + duration_s - now)
            if self.options.spin_ms > 0:
                wait = min(wait, self._until_spin(now))
            # whole milliseconds, rounded up: a timeout under 1 ms would return at
            # once and spin until the deadline
            for sock, _ev in poller.poll(math.ceil(max(0.0, wait) * 1000.0)):
                session = by_socket[sock]
                while True:
                    try:
                        raw = sock.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._on_frame(session, raw)

    def _until_spin(self, now: float) -> float:
        """Seconds until a request is expected within ``spin_ms`` (0: spin now)."""
        window = self.options.spin_ms / 1000.0
        soonest = math.inf
        for s in self._sessions:
            if s.welcome is None or s.setpoint_at is None:
                continue
            expected = [s.setpoint_at + s.welcome.step_s]
            if s.read_after is not None:
                expected.append(s.setpoint_at + s.welcome.step_s + s.read_after)
                if not s.read_seen:
                    expected.append(s.setpoint_at + s.read_after)
            for e in expected:
                if e - window <= now <= e + window:
                    return 0.0
                if e - window > now:
                    soonest = min(soonest, e - window - now)
        return soonest

    def _next_due(self, s: _Session) -> float:
        """The next moment ``_tick`` has something to do for this device."""
        dues = [s.late[0][0]] if s.late else []
        if s.welcome is None:
            dues.append(s.next_hello)
        else:
            hb = s.welcome.heartbeat_s
            dues += [s.last_sent + hb, s.last_heard + SILENCE_PERIODS * hb]
        return min(dues)

    def _tick(self, s: _Session, now: float) -> None:
        """Timers: held-back answers, HELLO (re)tries, heartbeats, silence."""
        while s.late and s.late[0][0] <= now:
            _due, seq, what = s.late.popleft()
            self._answer(s, seq, what)
        if s.welcome is None:
            if now >= s.next_hello:
                self._hello(s, now)
            return
        hb = s.welcome.heartbeat_s
        if now - s.last_heard >= SILENCE_PERIODS * hb:
            self._say(
                f"{s.spec.device}: nothing from the gateway for {now - s.last_heard:.1f} s "
                f"(3 heartbeat periods); saying hello again"
            )
            s.welcome = None
            self._hello(s, now)
        elif now - s.last_sent >= hb:
            self._send(s, self._encode(Heartbeat(s.spec.device)))

    def _hello(self, s: _Session, now: float) -> None:
        """Say HELLO; retry in ``hello_retry_s`` if no WELCOME comes, or soon
        if it could not go out (no connection: nothing is queued, see
        ``_connect``)."""
        if self._send(s, self._encode(Hello(s.spec.device, s.spec.kind))):
            s.next_hello, s.unsent_since = now + self.options.hello_retry_s, None
            return
        s.next_hello = now + UNSENT_RETRY_S
        if s.unsent_since is None:
            s.unsent_since = now
        elif now - s.unsent_since >= WAITING_NOTICE_S:
            self._say(
                f"{s.spec.device}: no connection to {self.address} for "
                f"{now - s.unsent_since:.1f} s (gateway not running? CURVE keys refused?); "
                f"still trying"
            )
            s.unsent_since = now

    def _encode(self, message: Any) -> bytes:
        return encode(message, self.options.protocol)

    def _send(self, s: _Session, frame: bytes) -> bool:
        """Send without blocking; False if there is no connection to send on.
        A failed attempt still counts as activity for the heartbeat timer."""
        s.last_sent = self._clock()
        try:
            s.socket.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    # -------------------------------------------------------------- messages

    def _on_frame(self, s: _Session, raw: bytes) -> None:
        s.last_heard = self._clock()
        try:
            msg = decode(raw, from_device=False)
        except ProtocolError as exc:
            self._say(f"{s.spec.device}: ignored a frame from the gateway: {exc}")
            return
        if isinstance(msg, Error):
            self._say(f"{s.spec.device}: the gateway refused our last frame: {msg.reason}")
            return
        if msg.device != s.spec.device:
            self._say(f"{s.spec.device}: ignored a {msg.TYPE} addressed to {msg.device!r}")
            return
        if isinstance(msg, Welcome):
            self._on_welcome(s, msg)
        elif isinstance(msg, Reject):
            self._on_reject(s, msg)
        elif s.welcome is None or s.model is None:
            if not isinstance(msg, Heartbeat):
                self._say(f"{s.spec.device}: ignored a {msg.TYPE} before WELCOME")
        elif isinstance(msg, Setpoint):
            self._on_setpoint(s, msg)
        elif isinstance(msg, Read):
            if s.setpoint_at is not None and not s.read_seen:
                s.read_after, s.read_seen = self._clock() - s.setpoint_at, True
            self._request(s, msg.seq, "read")
        # a Heartbeat only refreshes last_heard

    def _on_welcome(self, s: _Session, w: Welcome) -> None:
        """Configure the model. A WELCOME after a reconnect keeps the model's
        physical state (an emulated battery keeps its charge like a real one)
        unless the device it describes changed."""
        if s.spec.kind is not None and w.kind != s.spec.kind:
            self._say(
                f"{s.spec.device}: the gateway says kind {w.kind!r}, we said "
                f"{s.spec.kind!r}; following the gateway"
            )
        old = s.model_welcome
        same = old is not None and (old.kind, old.rated_kw, old.capacity_kwh, old.time_scale) == (
            w.kind,
            w.rated_kw,
            w.capacity_kwh,
            w.time_scale,
        )
        if s.model is None or not same:
            s.model = build_model(w, self.options.model, self._clock, self._say)
        elif isinstance(s.model, BatteryModel):
            s.model.configure(_welcome_options(w, self.options.model))
        s.model_welcome = s.welcome = w
        s.ever_welcomed = True
        s.rejects_in_a_row = 0
        s.late.clear()
        extra = ""
        if isinstance(s.model, BatteryModel):
            extra = f", {s.model.capacity_kwh:g} kWh, soc {s.model.soc:.2f}"
        self._say(
            f"{s.spec.device}: welcome: {w.kind} {w.rated_kw:g} kW{extra}, time scale "
            f"{w.time_scale:g}, heartbeat {w.heartbeat_s:g} s"
        )

    def _on_reject(self, s: _Session, r: Reject) -> None:
        """A REJECT of a device that never had a session is final (unknown id,
        wrong kind or version): raise. One that had a session most likely
        sent a heartbeat to a restarted gateway that does not know it yet:
        say HELLO again, and give up after a few REJECTs in a row."""
        if r.retry_s is not None or r.reason.startswith("busy:"):
            # our id still has a live session (our own, from before a restart):
            # not final, say hello again when the gateway says
            self._say(f"{s.spec.device}: {r.reason}")
            s.welcome = None
            s.late.clear()
            s.next_hello = self._clock() + (r.retry_s or self.options.hello_retry_s)
            return
        s.rejects_in_a_row += 1
        if not s.ever_welcomed or s.rejects_in_a_row >= MAX_CONSECUTIVE_REJECTS:
            raise DeviceRejected(s.spec.device, r.reason)
        self._say(
            f"{s.spec.device}: rejected ({r.reason}); the gateway may have restarted, "
            f"saying hello again"
        )
        s.welcome = None
        s.late.clear()
        self._hello(s, self._clock())

    def _on_setpoint(self, s: _Session, sp: Setpoint) -> None:
        assert s.model is not None
        s.setpoint_at, s.read_seen = self._clock(), False
        s.setpoints += 1
        s.setpoint_kw = sp.p_kw
        if isinstance(s.model, PvModel):
            s.model.set_time(sp.t_s, None if sp.lo_kw is None else max(-sp.lo_kw, 0.0))
        s.model.command(sp.p_kw)
        self._request(s, sp.seq, "setpoint")

    def _request(self, s: _Session, seq: int, what: str) -> None:
        """A SETPOINT or READ wants an answer: now, later (--late-ms) or never
        (--silent-after)."""
        silent = self.options.faults.silent_after
        if silent is not None and s.setpoints > silent:
            return
        late = self.options.faults.late_ms
        if late > 0:
            s.late.append((self._clock() + late / 1000.0, seq, what))
        else:
            self._answer(s, seq, what)

    def _answer(self, s: _Session, seq: int, what: str) -> None:
        """A MEASUREMENT of the state at this moment (or, every Nth answer
        with --garbage-every, a garbage frame)."""
        if s.model is None:
            return
        reading = _misreport(s.model.measure(), self.options.faults, s.setpoints)
        s.answers += 1
        every = self.options.faults.garbage_every
        garbage = every is not None and s.answers % every == 0
        soc = reading.soc
        frame = (
            GARBAGE_FRAME
            if garbage
            else self._encode(
                Measurement(s.spec.device, seq, reading.p_kw, soc, reading.status, what)
            )
        )
        self._send(s, frame)
        if self._log is not None and self._log_file is not None:
            self._log.writerow(
                [
                    f"{self._clock() - self._start:.4f}",
                    s.spec.device,
                    seq,
                    "garbage" if garbage else what,
                    "" if s.setpoint_kw is None else f"{s.setpoint_kw:.6g}",
                    f"{reading.p_kw:.6g}",
                    "" if soc is None else f"{soc:.6f}",
                    reading.status,
                ]
            )
            self._log_file.flush()


def _set_fifo(priority: int) -> bool:
    """SCHED_FIFO for the calling thread; False if the OS refuses."""
    import os

    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError):
        return False
    return True


def _misreport(reading: Reading, faults: Faults, setpoints: int) -> Reading:
    """What a faulty meter or firmware reports instead of ``reading``."""
    if setpoints <= faults.faults_after:
        return reading
    p = faults.report_kw if faults.report_kw is not None else reading.p_kw * faults.power_factor
    soc = None if reading.soc is None else reading.soc + faults.soc_offset
    return Reading(p, soc, reading.status)


def load_curve_keys(server_key_file: str | Path, own_key_file: str | Path) -> CurveKeys:
    """Keys from ZeroMQ certificate files (``zmq.auth.create_certificates``):
    the gateway's public ``.key`` and our own ``.key_secret``. Raises
    ValueError naming the file and what is wrong with it."""
    import zmq.auth

    def load(path: str | Path, what: str) -> tuple[bytes, bytes | None]:
        try:
            public, secret = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {what} {str(path)!r}: {exc}") from None
        for key in (public, secret):
            if key is not None and len(key) != 40:
                raise ValueError(
                    f"{what} {str(path)!r} holds a key of {len(key)} characters; "
                    f"a CURVE key is 40 (Z85)"
                )
        return public, secret

    server_public, _ = load(server_key_file, "--curve-server-key")
    public, secret = load(own_key_file, "--curve-key")
    if secret is None:
        raise ValueError(
            f"--curve-key {str(own_key_file)!r} holds no secret key; give the "
            f"device's NAME.key_secret file, not NAME.key"
        )
    return CurveKeys(server_public, public, secret)
