"""The hardware-in-the-loop wire protocol, version 1 (spec: ``docs/hil.md``).

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
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, Literal

import msgpack

PROTOCOL_VERSION = 1
"""Bumped whenever a message's fields change meaning; the other side rejects
other versions (a HELLO with another version gets a REJECT)."""

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
    """State of charge 0..1 (batteries); None for devices without storage."""
    status: Literal["ok", "limited", "fault"]
    """ok: following the set-point; limited: cannot (ramp, SOC, sun);
    fault: the device is in a fault state (its power is still reported)."""


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


@dataclass(frozen=True, slots=True)
class Reject:
    """Gateway -> device: HELLO refused (unknown id, wrong kind or version,
    or a message sent before HELLO); ``reason`` says which."""

    TYPE: ClassVar[str] = "reject"
    device: str
    reason: str


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


Message = Hello | Measurement | Heartbeat | Welcome | Reject | Setpoint | Read | Error
FROM_DEVICE: dict[str, type] = {c.TYPE: c for c in (Hello, Measurement, Heartbeat)}
FROM_GATEWAY: dict[str, type] = {
    c.TYPE: c for c in (Welcome, Reject, Setpoint, Read, Heartbeat, Error)
}


def encode(message: Message) -> bytes:
    payload: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": message.TYPE}
    for f in fields(message):  # type: ignore[arg-type]
        payload[f.name] = getattr(message, f.name)
    return msgpack.packb(payload, use_bin_type=True)


def decode(raw: bytes, *, from_device: bool) -> Message:
    """Validate one frame. ``from_device`` selects which side's messages are
    allowed. Raises :class:`ProtocolError` naming the field."""
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
    version = data.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            "v", f"protocol version {version!r}; this side speaks {PROTOCOL_VERSION}"
        )
    kinds = FROM_DEVICE if from_device else FROM_GATEWAY
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in kinds:
        raise ProtocolError(
            "type",
            f"{kind!r} is not a message a {'device' if from_device else 'gateway'} "
            f"sends; expected one of {sorted(kinds)}",
        )
    cls = kinds[kind]
    names = [f.name for f in fields(cls)]
    extra = sorted(str(k)[:64] for k in set(data) - {"v", "type"} - set(names))
    if extra:
        raise ProtocolError(extra[0], f"unknown field in {kind}")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING:
                raise ProtocolError(f.name, f"missing from {kind}")
            values[f.name] = f.default
            continue
        values[f.name] = _CHECKS[f.name](data[f.name], f.name)
    if cls is Welcome and values["kind"] is None:
        raise ProtocolError("kind", f"expected one of {KINDS}, got None")
    return cls(**values)  # type: ignore[no-any-return]


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
    if value is None and name == "kind":
        return None
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


def _positive_or_none(value: Any, name: str) -> float | None:
    return None if value is None else _positive(value, name)


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
    "soc": _fraction_or_none,
    "status": _status,
    "rated_kw": _positive,
    "capacity_kwh": _positive_or_none,
    "time_scale": _positive,
    "step_s": _positive,
    "timeout_ms": _positive,
    "heartbeat_s": _positive,
    "duration_s": _positive,
}
