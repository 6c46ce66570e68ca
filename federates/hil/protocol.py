"""The hardware-in-the-loop wire protocol, versions 1 and 2 (spec: ``docs/hil.md``).

Both ends use this module: the gateway federate (``gateway``) and the device
emulator (``emulator``). It has no HELICS and no sockets in it: records,
their msgpack encoding and the validation of what arrives.

Transport: ZeroMQ. The gateway binds a ROUTER socket; each device connects
one DEALER socket and sends single-frame messages. Every message is a
msgpack map with the protocol version ``v``, its ``type`` and its fields.

Units: kW (net demand sign: positive = the device consumes, negative = it
produces), $/MWh, seconds, state of charge as a fraction 0..1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import msgpack

PROTOCOL_VERSION = 2
"""The newest version, spoken by default. Bumped whenever a message's fields
change; a HELLO in a version the gateway does not speak gets a REJECT."""

VERSIONS = (1, 2)
"""Versions the gateway speaks; each session speaks the version of its HELLO."""

ANSWERS = ("setpoint", "read")

MAX_MESSAGE_BYTES = 4096
"""Larger frames are refused before they are decoded (and counted)."""

DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KINDS = ("battery", "pv")
STATUSES = ("ok", "limited", "fault")


class ProtocolError(ValueError):
    """A frame failed validation; ``field`` names what was wrong."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


# ------------------------------------------------------------ device -> gateway


@dataclass(frozen=True, slots=True)
class Hello:
    """Device -> gateway, first message of a session (and after any restart).
    ``kind``, if given, must match the gateway's configuration."""

    TYPE: ClassVar[str] = "hello"
    device: str
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class Measurement:
    """Device -> gateway, the answer to a SETPOINT or a READ (same ``seq``):
    the device's state at the moment it answers."""

    TYPE: ClassVar[str] = "measurement"
    device: str
    seq: int
    p_kw: float
    """Power now, kW, positive = consumption."""
    soc: float | None
    """State of charge 0..1 (batteries); None for devices without storage.
    Any finite number passes the protocol: a value outside 0..1 is refused by
    the plausibility check, which says so in the results."""
    status: Literal["ok", "limited", "fault"]
    """ok: following the set-point; limited: cannot (ramp, SOC, sun);
    fault: the device is in a fault state (its power is still reported)."""
    answers: Literal["setpoint", "read"] | None = None
    """v2: the type of the request answered (with ``seq``, it names it)."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Either way: a device sends one every ``heartbeat_s`` (from WELCOME); the
    gateway answers each with a heartbeat. A device silent for three
    heartbeat periods (and not answering set-points) loses its session."""

    TYPE: ClassVar[str] = "heartbeat"
    device: str


# ------------------------------------------------------------ gateway -> device


@dataclass(frozen=True, slots=True)
class Welcome:
    """Gateway -> device: the session is open. Also tells the device what it
    stands for in the simulation (an emulator configures itself from this;
    real equipment may ignore the fields it does not need)."""

    TYPE: ClassVar[str] = "welcome"
    device: str
    kind: str
    rated_kw: float
    capacity_kwh: float | None
    soc: float | None
    """State of charge of the simulated device now (batteries)."""
    time_scale: float
    """Simulated seconds per wall-clock second (1 = true real time)."""
    step_s: float
    """Wall seconds between two set-points."""
    timeout_ms: float
    """How long the gateway waits for an answer."""
    heartbeat_s: float
    soc_min: float | None = None
    """v2: the simulated battery's state-of-charge limits (nil for PV)."""
    soc_max: float | None = None
    efficiency: float | None = None
    """v2: the simulated battery's round-trip efficiency (nil for PV)."""
    origin: str | None = None
    """v2: the simulated date and time at ``t_s = 0``: ISO 8601 local date
    and time without a time zone (the scenario's start), or ``T00:00:00``
    (only: a midnight)."""


@dataclass(frozen=True, slots=True)
class Reject:
    """Gateway -> device: HELLO refused (unknown id, wrong kind or version,
    or a message sent before HELLO); ``reason`` says which."""

    TYPE: ClassVar[str] = "reject"
    device: str | None
    """The HELLO's device id (v2: nil when the HELLO had no valid id)."""
    reason: str
    retry_s: float | None = None
    """v2: nil when the refusal is final (the configuration disagrees: stop);
    a number when the device should say HELLO again after that many seconds
    (its id has a live session from another connection). In v1 the reason of
    such a REJECT starts with ``busy:``."""


@dataclass(frozen=True, slots=True)
class Setpoint:
    """Gateway -> device, once per market interval: follow ``p_kw`` from now
    on; answer at once with a MEASUREMENT carrying the same ``seq``."""

    TYPE: ClassVar[str] = "setpoint"
    device: str
    seq: int
    interval: int
    t_s: float
    """Simulation time of the interval's start, s."""
    duration_s: float
    """Simulated seconds the set-point holds for."""
    p_kw: float
    price: float
    """Price at the device's bus for this interval, $/MWh."""
    lo_kw: float | None = None
    """v2: the least net demand the simulated DER can have this interval (kW,
    device scale; a PV system: minus its available power)."""
    hi_kw: float | None = None
    """v2: the most (a battery: what its state of charge allows)."""


@dataclass(frozen=True, slots=True)
class Read:
    """Gateway -> device, one settle period after the set-point: answer at
    once with a MEASUREMENT carrying ``seq`` (the set-point being followed).
    This answer is the device's output fed into the federation."""

    TYPE: ClassVar[str] = "read"
    device: str
    seq: int


@dataclass(frozen=True, slots=True)
class Error:
    """Gateway -> device: the last frame from this connection was refused
    (malformed or oversized); ``reason`` says why. No answer expected."""

    TYPE: ClassVar[str] = "error"
    reason: str
    device: str | None = None
    """v2: the device of the refused frame (its session's, or the frame's),
    nil when unknown."""
    seq: int | None = None
    """v2: the refused frame's ``seq``, nil when it had none that could be read."""


Message = Hello | Measurement | Heartbeat | Welcome | Reject | Setpoint | Read | Error
FROM_DEVICE: dict[str, type] = {c.TYPE: c for c in (Hello, Measurement, Heartbeat)}
FROM_GATEWAY: dict[str, type] = {
    c.TYPE: c for c in (Welcome, Reject, Setpoint, Read, Heartbeat, Error)
}


V2_ONLY: dict[str, tuple[str, ...]] = {
    "measurement": ("answers",),
    "welcome": ("soc_min", "soc_max", "efficiency", "origin"),
    "setpoint": ("lo_kw", "hi_kw"),
    "error": ("device", "seq"),
    "reject": ("retry_s",),
}
"""Fields a version-1 frame does not have (and must not carry)."""

OMITTABLE = {("hello", "kind")}
"""The only field that may be left out (v1 and v2); every other field is
always sent, as nil when it has no value."""

NULLABLE = {
    ("hello", "kind"),
    ("measurement", "soc"),
    ("welcome", "capacity_kwh"),
    ("welcome", "soc"),
    ("welcome", "soc_min"),
    ("welcome", "soc_max"),
    ("welcome", "efficiency"),
    ("welcome", "origin"),
    ("reject", "device"),
    ("reject", "retry_s"),
    ("error", "device"),
    ("error", "seq"),
}
"""Fields that may be nil. In v1, ``reject.device`` may not."""


def field_names(cls: type, version: int) -> list[str]:
    """The fields of a message type in one protocol version, in order."""
    skip = V2_ONLY.get(cls.TYPE, ()) if version == 1 else ()  # type: ignore[attr-defined]
    return [f.name for f in fields(cls) if f.name not in skip]


def encode(message: Message, version: int = PROTOCOL_VERSION) -> bytes:
    """One frame in ``version`` (v2-only fields are left out of a v1 frame)."""
    if version not in VERSIONS:
        raise ValueError(f"protocol version {version!r}; known: {VERSIONS}")
    payload: dict[str, Any] = {"v": version, "type": message.TYPE}
    for name in field_names(type(message), version):
        payload[name] = getattr(message, name)
    return msgpack.packb(payload, use_bin_type=True)


def unpack(raw: bytes) -> dict[Any, Any]:
    """The msgpack map of a frame, bounded; ProtocolError if it is not one."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ProtocolError("size", f"{len(raw)} bytes, more than {MAX_MESSAGE_BYTES}; not decoded")
    try:
        data = msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            max_bin_len=MAX_MESSAGE_BYTES,
            max_str_len=MAX_MESSAGE_BYTES,
            max_array_len=64,
            max_map_len=64,
        )
    except Exception as exc:
        raise ProtocolError("frame", f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ProtocolError("frame", f"expected a map, got {type(data).__name__}")
    return data


def decode(raw: bytes, *, from_device: bool) -> Message:
    """Validate one frame. ``from_device`` selects which side's messages are
    allowed. Raises :class:`ProtocolError` naming the field."""
    return decode_versioned(raw, from_device=from_device)[1]


def decode_versioned(raw: bytes, *, from_device: bool) -> tuple[int, Message]:
    """As :func:`decode`, with the frame's protocol version."""
    data = unpack(raw)
    version = data.get("v")
    if isinstance(version, bool) or version not in VERSIONS:
        raise ProtocolError(
            "v", f"protocol version {version!r} is not spoken here; this side speaks {VERSIONS}"
        )
    kinds = FROM_DEVICE if from_device else FROM_GATEWAY
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in kinds:
        raise ProtocolError(
            "type",
            f"{kind!r}"[:80] + f" is not a message a {'device' if from_device else 'gateway'} "
            f"sends; expected one of {sorted(kinds)}",
        )
    cls = kinds[kind]
    names = field_names(cls, version)
    extra = sorted(str(k)[:64] for k in set(data) - {"v", "type"} - set(names))
    if extra:
        raise ProtocolError(extra[0], f"unknown field in a version {version} {kind}")
    values: dict[str, Any] = {}
    for name in names:
        if name not in data:
            if (kind, name) not in OMITTABLE:
                raise ProtocolError(name, f"missing from {kind} (send nil for no value)")
            values[name] = None
            continue
        value = data[name]
        if (
            value is None
            and (kind, name) in NULLABLE
            and not (version == 1 and (kind, name) == ("reject", "device"))
        ):
            values[name] = None
            continue
        values[name] = _CHECKS[name](value, name)
    if cls is Welcome:
        _fraction_or_none(values["soc"], "soc")
    return version, cls(**values)


# ------------------------------------------------------------------ checkers


def _device(value: Any, name: str) -> str:
    if not isinstance(value, str) or not DEVICE_ID.match(value):
        raise ProtocolError(
            name,
            f"device id must be 1-64 of [A-Za-z0-9_.-], starting with a "
            f"letter or digit; got {value!r}"[:200],
        )
    return value


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) > 500:
        raise ProtocolError(name, "expected a string of at most 500 characters")
    return value


def _kind(value: Any, name: str) -> str | None:
    if value not in KINDS:
        raise ProtocolError(name, f"expected one of {KINDS}, got {value!r}"[:200])
    return str(value)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise ProtocolError(name, f"expected an integer 0 <= n < 2**53, got {value!r}"[:200])
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError(name, f"expected a finite number, got {value!r}"[:200])
    if abs(value) > 1e9:
        raise ProtocolError(name, f"{value!r} is out of range (|x| <= 1e9)")
    return float(value)


def _positive(value: Any, name: str) -> float:
    x = _number(value, name)
    if x <= 0:
        raise ProtocolError(name, f"must be > 0, got {x!r}")
    return x


def _fraction_or_none(value: Any, name: str) -> float | None:
    if value is None:
        return None
    x = _number(value, name)
    if not 0.0 <= x <= 1.0:
        raise ProtocolError(name, f"must be within 0..1, got {x!r}")
    return x


def _fraction(value: Any, name: str) -> float:
    x = _number(value, name)
    if not 0.0 <= x <= 1.0:
        raise ProtocolError(name, f"must be within 0..1, got {x!r}")
    return x


def _efficiency(value: Any, name: str) -> float:
    x = _fraction(value, name)
    if x <= 0:
        raise ProtocolError(name, f"must be > 0, got {x!r}")
    return x


def _answers(value: Any, name: str) -> str:
    if value not in ANSWERS:
        raise ProtocolError(name, f"expected one of {ANSWERS}, got {value!r}"[:200])
    return str(value)


def _status(value: Any, name: str) -> str:
    if value not in STATUSES:
        raise ProtocolError(name, f"expected one of {STATUSES}, got {value!r}"[:200])
    return str(value)


_CHECKS = {
    "device": _device,
    "kind": _kind,
    "reason": _text,
    "seq": _int,
    "interval": _int,
    "p_kw": _number,
    "price": _number,
    "t_s": _number,
    "soc": _number,
    "answers": _answers,
    "soc_min": _fraction,
    "soc_max": _fraction,
    "efficiency": _efficiency,
    "origin": _text,
    "lo_kw": _number,
    "retry_s": _positive,
    "hi_kw": _number,
    "status": _status,
    "rated_kw": _positive,
    "capacity_kwh": _positive,
    "time_scale": _positive,
    "step_s": _positive,
    "timeout_ms": _positive,
    "heartbeat_s": _positive,
    "duration_s": _positive,
}
