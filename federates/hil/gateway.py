"""The HIL gateway: serves hardware-in-the-loop devices over ZeroMQ (spec: ``docs/hil.md``).

Plain Python and pyzmq, no HELICS: the HIL federate shell owns a
:class:`Gateway` and calls :meth:`Gateway.setpoints` and :meth:`Gateway.read`
once per market interval.

Threading. A device must get its WELCOME and heartbeat answers at any time,
also while the federate sits blocked in a HELICS call for seconds. So one
**I/O thread** owns the ROUTER socket and every session; the caller's thread
never touches it. The caller talks to the I/O thread through a ZeroMQ inproc
PAIR socket: a request goes down the pipe, the I/O thread does the exchange
and sends the result back. Both threads block in ``zmq_poll`` on sockets (no
sleep-and-check loops), so a measurement reaching the ROUTER wakes the I/O
thread, and the completed round wakes the caller, each within microseconds:
the set-point -> measurement round trip stays well under the 2 ms budget on
loopback. Round-trip times are taken with :func:`time.perf_counter` in the
I/O thread, right after the request frame is handed to ZeroMQ and right after
the answer is received, so they do not include the caller's pipe hops.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from dsosim.federates.hil import protocol
from dsosim.federates.hil.protocol import (
    MAX_MESSAGE_BYTES,
    Error,
    Heartbeat,
    Hello,
    Measurement,
    ProtocolError,
    Read,
    Reject,
    Setpoint,
    Welcome,
)

log = logging.getLogger(__name__)

COUNTERS = (
    "malformed",
    "oversized",
    "unknown_device",
    "late",
    "no_session",
    "wrong_kind",
    "wrong_version",
    "heartbeats",
    "hellos",
    "sessions_expired",
    "sessions_lost",
    "takeover_refused",
)
"""What :meth:`Gateway.take_counters` reports. ``sessions_lost``: sessions
ended because ZeroMQ reported the device's connection gone when sending.
``takeover_refused``: HELLOs for a device with a live session from another
connection (see :meth:`Gateway._on_hello`)."""

ROUTER_MAX_MSG_SIZE = 65536
"""Hard bound set on the ROUTER (ZMQ_MAXMSGSIZE): libzmq drops a connection
that sends a larger frame before it is ever buffered whole. Frames between
:data:`protocol.MAX_MESSAGE_BYTES` and this are received, counted and refused."""

EXPIRY_HEARTBEATS = 3
"""A session ends after this many heartbeat periods without a frame."""

_MAX_FRAMES_PER_WAKE = 256
"""Frames taken from the ROUTER before looking at the caller's pipe again, so
a flooding device cannot starve the caller."""

_REPLY_OK, _REPLY_FAILED = b"ok", b"failed"

_LIVENESS_CHECK_MS = 250
"""While the caller waits for the I/O thread it re-checks that the thread is
alive this often (the wait itself returns as soon as the answer arrives)."""


class GatewayError(RuntimeError):
    """The gateway cannot start or its I/O thread has failed."""


@dataclass(frozen=True)
class DeviceInfo:
    """One configured device: the DER it stands for (goes into its WELCOME)."""

    id: str
    kind: str
    """``battery`` or ``pv``."""
    rated_kw: float
    capacity_kwh: float | None
    soc_min: float | None = None
    soc_max: float | None = None
    efficiency: float | None = None
    """Round trip (batteries); with the SOC limits it goes into a v2 WELCOME."""


@dataclass(frozen=True)
class GatewaySettings:
    bind: str = "tcp://127.0.0.1:5570"
    timeout_ms: float = 50.0
    heartbeat_s: float = 1.0
    time_scale: float = 1.0
    """Simulated seconds per wall second (goes into WELCOME)."""
    step_s: float = 1.0
    """Wall seconds between set-points (goes into WELCOME)."""
    curve_secret_key: Path | None = None
    """ZeroMQ certificate file holding the gateway's secret key."""
    curve_authorized_dir: Path | None = None
    """Folder of the authorised devices' public certificate files."""
    allow_unauthenticated: bool = False
    """Needed to bind a non-loopback address without CURVE."""
    origin: str = "T00:00:00"
    """The simulated date and time at ``t_s = 0`` (ISO 8601, local, no time
    zone; goes into a v2 WELCOME). The federation gives its scenario's start;
    ``T00:00:00`` says only that ``t_s = 0`` is a midnight."""
    realtime_priority: int = 0
    """1-99: the I/O thread and ZeroMQ's I/O thread run under the real-time
    scheduling policy SCHED_FIFO at this priority, so an answer arriving is
    handled at once instead of when the scheduler gets round to a woken
    thread (the round trip's tail on a busy machine). Needs the privilege
    (CAP_SYS_NICE or an rtprio limit); without it the gateway says so once and
    runs at the normal policy. 0 = the normal policy."""
    spin_ms: float = 0.0
    """After sending a round's requests, the I/O thread polls for the answers
    without sleeping for up to this long (then it sleeps until they come or
    the timeout): an answer is taken the moment it arrives instead of after
    the scheduler wakes a sleeping thread, which on a busy machine is what
    the round trip's tail is made of. 0 = always sleep."""


@dataclass(frozen=True)
class Exchange:
    """What happened with one device in one set-point or read round."""

    device: str
    status: str
    """``ok`` (answered), ``timeout`` (session open, no answer within
    ``timeout_ms``) or ``disconnected`` (no session, or it ended mid-round)."""
    rtt_ms: float | None
    """Request sent -> matching measurement received; None without an answer."""
    measurement: Measurement | None
    version: int | None = None
    """The protocol version of the session that answered."""


# ---------------------------------------------------------------- I/O thread state


@dataclass
class _Session:
    device: str
    identity: bytes
    last_seen: float
    """perf_counter of the last frame from this connection."""
    version: int = protocol.PROTOCOL_VERSION
    """The protocol version of the session's HELLO: every frame to it uses it."""
    key: str | None = None
    """The peer's CURVE public key (Z85), None without CURVE."""


@dataclass
class _Pending:
    seq: int
    sent_at: float


@dataclass
class _Round:
    request: str
    """``setpoint`` or ``read``: what a v2 answer must say it answers."""
    order: list[str]
    deadline: float
    pending: dict[str, _Pending]
    results: dict[str, Exchange]


@dataclass(frozen=True)
class _Request:
    """One prepared request of a round: the frame is encoded (and validated)
    in the caller's thread."""

    device: str
    seq: int
    frames: dict[int, bytes]
    """The request encoded in each protocol version."""


# ---------------------------------------------------------------- public class


class Gateway:
    """The gateway: bind with :meth:`start`, run rounds, :meth:`close`.

    Configuration errors and I/O thread failures raise :class:`GatewayError`;
    bad arguments (unknown device, NaN set-point) raise :class:`ValueError`.
    Usable as a context manager (starts on enter, closes on exit).
    """

    def __init__(self, settings: GatewaySettings, devices: Sequence[DeviceInfo]) -> None:
        _check_settings(settings)
        self.settings = settings
        self._devices: dict[str, DeviceInfo] = {}
        for info in devices:
            if info.id in self._devices:
                raise GatewayError(f"HIL device {info.id!r} is configured twice")
            _check_device(info, settings)
            self._devices[info.id] = info
        self._soc: dict[str, float | None] = {d: None for d in self._devices}
        self._soc_lock = threading.Lock()
        self._call_lock = threading.Lock()
        self._ctx: zmq.Context[Any] | None = None
        self._auth: ThreadAuthenticator | None = None
        self._router: zmq.Socket[Any] | None = None
        self._pipe: zmq.Socket[Any] | None = None
        """Caller's end of the inproc pipe."""
        self._io_pipe: zmq.Socket[Any] | None = None
        self._thread: threading.Thread | None = None
        # The pipe carries a one-byte token; the command and the reply pass
        # through these two slots (one call at a time, under _call_lock), so
        # nothing is serialised. zmq send/recv orders the memory accesses.
        self._command: tuple[Any, ...] | None = None
        self._reply: Any = None
        self._endpoint: str | None = None
        self._failure: BaseException | None = None
        self.realtime = False
        """Whether the I/O thread got its real-time priority."""
        self._closed = False
        # Owned by the I/O thread once it runs.
        self._by_identity: dict[bytes, _Session] = {}
        self._by_device: dict[str, _Session] = {}
        self._last_seq: dict[str, int] = {}
        self._round: _Round | None = None
        self._counters = dict.fromkeys(COUNTERS, 0)

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Bind the ROUTER and start the I/O thread."""
        if self._closed:
            raise GatewayError("the gateway is closed (or failed to start): make a new one")
        if self._ctx is not None:
            raise GatewayError("the gateway was already started")
        _check_security(self.settings)
        curve = _load_curve(self.settings)  # before any socket exists: nothing to clean up
        self._ctx = zmq.Context()
        if self.settings.realtime_priority:
            self._ctx.set(zmq.THREAD_SCHED_POLICY, SCHED_FIFO)
            self._ctx.set(zmq.THREAD_PRIORITY, self.settings.realtime_priority)
        try:
            if curve is not None:
                self._auth = ThreadAuthenticator(self._ctx, log=log.getChild("auth"))
                self._auth.start()
                self._auth.configure_curve(
                    domain="*", location=str(self.settings.curve_authorized_dir)
                )
            self._router = self._bind_router(curve)
            pipe_endpoint = f"inproc://hil-gateway-{id(self)}"
            self._pipe = self._ctx.socket(zmq.PAIR)
            self._pipe.linger = 0
            self._pipe.bind(pipe_endpoint)
            self._io_pipe = self._ctx.socket(zmq.PAIR)
            self._io_pipe.linger = 0
            self._io_pipe.connect(pipe_endpoint)
        except BaseException:
            self._closed = True  # a gateway that failed to start is not reused
            self._teardown()
            raise
        self._thread = threading.Thread(target=self._run, name="hil-gateway-io", daemon=True)
        self._thread.start()
        log.info(
            "HIL gateway listening on %s (%s)",
            self._endpoint,
            "CURVE" if curve is not None else "no authentication",
        )

    def close(self) -> None:
        """Stop the I/O thread, close the sockets and the authenticator. Idempotent."""
        if self._closed:
            return
        # The lock waits out a round running in another thread (at most
        # timeout_ms): the pipe socket must not be used by two threads at once.
        with self._call_lock:
            self._closed = True
            thread = self._thread
            if thread is not None and thread.is_alive() and self._pipe is not None:
                try:
                    self._command = ("stop",)
                    self._pipe.send(b"", zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
                thread.join(timeout=5.0)
                if thread.is_alive():
                    log.error("HIL gateway I/O thread did not stop; leaving its sockets open")
                    return
            self._teardown()

    def _teardown(self) -> None:
        for sock in (self._pipe, self._io_pipe, self._router):
            if sock is not None and not sock.closed:
                sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._ctx is not None and not self._ctx.closed:
            self._ctx.term()

    def _bind_router(self, curve: tuple[bytes, bytes] | None) -> zmq.Socket[Any]:
        assert self._ctx is not None
        router = self._ctx.socket(zmq.ROUTER)
        self._router = router  # so _teardown closes it if binding fails
        router.linger = 0
        router.setsockopt(zmq.MAXMSGSIZE, ROUTER_MAX_MSG_SIZE)
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        # Sending to a vanished peer raises EHOSTUNREACH instead of dropping
        # silently: the round reports "disconnected" at once, not a timeout.
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if _host(self.settings.bind).count(":") >= 1:
            router.ipv6 = True
        if curve is not None:
            public, secret = curve
            router.curve_publickey = public
            router.curve_secretkey = secret
            router.curve_server = True
        try:
            router.bind(self.settings.bind)
        except zmq.ZMQError as exc:
            raise GatewayError(f"HIL gateway cannot bind {self.settings.bind!r}: {exc}") from exc
        self._endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        return router

    # ------------------------------------------------------------ caller API

    @property
    def endpoint(self) -> str:
        """The bound endpoint, with the port resolved if ``bind`` used ``*``."""
        if self._endpoint is None:
            raise GatewayError("the gateway is not started")
        return self._endpoint

    def set_soc(self, device: str, soc: float | None) -> None:
        """The simulated device's state of charge, sent in its next WELCOME."""
        self._known(device)
        if soc is not None and not (math.isfinite(soc) and 0.0 <= soc <= 1.0):
            raise ValueError(f"soc of {device!r} must be within 0..1 or None, got {soc!r}")
        with self._soc_lock:
            self._soc[device] = None if soc is None else float(soc)

    def setpoints(self, items: Sequence[Setpoint | tuple[Any, ...]]) -> dict[str, Exchange]:
        """Send a SETPOINT to each listed device with a session; wait up to
        ``timeout_ms`` (in total, from the first send) for the answers.
        Items: :class:`Setpoint` records, or tuples of their fields ``(device,
        seq, interval, t_s, duration_s, p_kw, price[, lo_kw, hi_kw])``.
        Without ``lo_kw``/``hi_kw`` a v2 device gets the rating as the range."""
        requests = []
        for item in items:
            sp = item if isinstance(item, Setpoint) else Setpoint(*item)
            if sp.lo_kw is None or sp.hi_kw is None:
                rated = self._known(sp.device).rated_kw
                sp = replace(sp, lo_kw=-rated, hi_kw=rated)
            requests.append(self._prepare(sp))
        return self._run_round("setpoint", requests)

    def read(self, items: Sequence[tuple[str, int]]) -> dict[str, Exchange]:
        """Send a READ ``(device, seq)`` to each listed device; as :meth:`setpoints`."""
        return self._run_round("read", [self._prepare(Read(d, seq)) for d, seq in items])

    def connected(self) -> list[str]:
        """Device ids with an open session, sorted."""
        return self._call(("connected",))

    def take_counters(self) -> dict[str, int]:
        """The counters of :data:`COUNTERS` since the last call (then reset)."""
        return self._call(("counters",))

    def _known(self, device: str) -> DeviceInfo:
        try:
            return self._devices[device]
        except KeyError:
            raise ValueError(f"{device!r} is not a configured HIL device") from None

    def _prepare(self, message: Setpoint | Read) -> _Request:
        """Encode a request and check it passes the device's own validation,
        so a NaN or out-of-range value fails here, in the caller."""
        self._known(message.device)
        frames = {}
        for version in protocol.VERSIONS:
            frame = protocol.encode(message, version)
            try:
                protocol.decode(frame, from_device=False)
            except ProtocolError as exc:
                raise ValueError(f"{message.TYPE} for {message.device!r}: {exc}") from None
            frames[version] = frame
        return _Request(message.device, message.seq, frames)

    def _run_round(self, request: str, requests: list[_Request]) -> dict[str, Exchange]:
        devices = [r.device for r in requests]
        if len(set(devices)) != len(devices):
            raise ValueError(f"a device is listed twice in one round: {devices}")
        return self._call(("round", request, requests))

    def _call(self, command: tuple[Any, ...]) -> Any:
        """One request/answer with the I/O thread over the inproc pipe."""
        with self._call_lock:
            self._check_running()
            assert self._pipe is not None and self._thread is not None
            self._command = command
            self._pipe.send(b"")
            while not self._pipe.poll(_LIVENESS_CHECK_MS):
                if not self._thread.is_alive():
                    self._check_running()
            if self._pipe.recv() != _REPLY_OK:
                raise self._dead()
            reply, self._reply = self._reply, None
            return reply

    def _check_running(self) -> None:
        if self._closed:
            raise GatewayError("the gateway is closed")
        if self._thread is None:
            raise GatewayError("the gateway is not started")
        if self._failure is not None or not self._thread.is_alive():
            raise self._dead()

    def _dead(self) -> GatewayError:
        cause = self._failure
        err = GatewayError(f"the HIL gateway's I/O thread has stopped: {cause!r}")
        err.__cause__ = cause
        return err

    # ------------------------------------------------------------ I/O thread

    def _run(self) -> None:
        if self.settings.realtime_priority:
            self.realtime = set_realtime_priority(self.settings.realtime_priority)
        try:
            self._serve()
        except BaseException as exc:
            self._failure = exc
            log.exception("HIL gateway I/O thread failed")
            try:
                assert self._io_pipe is not None
                self._io_pipe.send(_REPLY_FAILED, zmq.NOBLOCK)
            except Exception:
                pass
        finally:
            for sock in (self._router, self._io_pipe):
                if sock is not None:
                    sock.close(linger=0)

    def _serve(self) -> None:
        assert self._router is not None and self._io_pipe is not None
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._io_pipe, zmq.POLLIN)
        while True:
            events = dict(poller.poll(self._poll_timeout_ms()))
            if self._router in events:
                self._drain_router()
            if self._io_pipe in events:
                self._io_pipe.recv()
                command, self._command = self._command, None
                if command is not None and not self._on_command(command):
                    return
            now = time.perf_counter()
            self._expire_sessions(now)
            self._maybe_finish_round(now)

    def _poll_timeout_ms(self) -> int | None:
        """Until the next thing due: the round's deadline or a session expiry."""
        now = time.perf_counter()
        due: list[float] = []
        if self._round is not None:
            due.append(self._round.deadline)
        if self._by_identity:
            oldest = min(s.last_seen for s in self._by_identity.values())
            due.append(oldest + EXPIRY_HEARTBEATS * self.settings.heartbeat_s)
        if not due:
            return None
        return max(0, math.ceil((min(due) - now) * 1000.0))

    def _answer(self, value: Any) -> None:
        """Hand ``value`` to the caller waiting in :meth:`_call`."""
        assert self._io_pipe is not None
        self._reply = value
        self._io_pipe.send(_REPLY_OK)

    def _on_command(self, command: tuple[Any, ...]) -> bool:
        """Handle a request from the caller; False to stop the thread."""
        name = command[0]
        if name == "stop":
            return False
        if name == "round":
            self._start_round(command[1], command[2])
        elif name == "connected":
            self._expire_sessions(time.perf_counter())
            self._answer(sorted(self._by_device))
        elif name == "counters":
            counters, self._counters = self._counters, dict.fromkeys(COUNTERS, 0)
            self._answer(counters)
        else:
            raise AssertionError(f"unknown gateway command {name!r}")
        return True

    # rounds

    def _start_round(self, request: str, requests: list[_Request]) -> None:
        start = time.perf_counter()
        self._expire_sessions(start)
        rnd = _Round(
            request=request,
            order=[r.device for r in requests],
            deadline=start + self.settings.timeout_ms / 1000.0,
            pending={},
            results={},
        )
        self._round = rnd
        for req in requests:
            session = self._by_device.get(req.device)
            if session is None:
                rnd.results[req.device] = Exchange(req.device, "disconnected", None, None)
                continue
            self._last_seq[req.device] = req.seq
            outcome = self._send_raw(session.identity, req.frames[session.version])
            if outcome == "sent":
                rnd.pending[req.device] = _Pending(req.seq, time.perf_counter())
            elif outcome == "full":  # the device is not reading: it will not answer in time
                rnd.results[req.device] = Exchange(req.device, "timeout", None, None)
            else:
                log.info("HIL device %s: connection gone", session.device)
                self._counters["sessions_lost"] += 1
                self._end_session(session)
                rnd.results[req.device] = Exchange(req.device, "disconnected", None, None)
        self._maybe_finish_round(time.perf_counter())
        self._spin(rnd, start)

    def _spin(self, rnd: _Round, start: float) -> None:
        """Poll for the round's answers without sleeping, up to ``spin_ms``
        (see :class:`GatewaySettings`)."""
        assert self._router is not None
        if self.realtime:  # never spin under SCHED_FIFO: it would hold the core
            return
        until = min(rnd.deadline, start + self.settings.spin_ms / 1000.0)
        while self._round is rnd and time.perf_counter() < until:
            if self._router.poll(0):
                self._drain_router()

    def _maybe_finish_round(self, now: float) -> None:
        rnd = self._round
        if rnd is None or (rnd.pending and now < rnd.deadline):
            return
        for device in rnd.pending:
            rnd.results[device] = Exchange(device, "timeout", None, None)
        self._round = None
        self._answer({d: rnd.results[d] for d in rnd.order})

    def _abandon(self, device: str) -> None:
        """The device's session ended: stop waiting for its answer."""
        if self._round is not None and self._round.pending.pop(device, None) is not None:
            self._round.results[device] = Exchange(device, "disconnected", None, None)

    # sessions

    def _expire_sessions(self, now: float) -> None:
        limit = EXPIRY_HEARTBEATS * self.settings.heartbeat_s
        for session in [s for s in self._by_identity.values() if now - s.last_seen >= limit]:
            log.info(
                "HIL device %s: session expired (silent for %.1f s)",
                session.device,
                now - session.last_seen,
            )
            self._counters["sessions_expired"] += 1
            self._end_session(session)

    def _end_session(self, session: _Session) -> None:
        self._by_identity.pop(session.identity, None)
        if self._by_device.get(session.device) is session:
            del self._by_device[session.device]
        self._abandon(session.device)

    def _open_session(
        self, identity: bytes, info: DeviceInfo, now: float, version: int, key: str | None
    ) -> None:
        """HELLO accepted (see :meth:`_on_hello`): open or refresh the session, WELCOME."""
        old = self._by_device.get(info.id)
        same = self._by_identity.get(identity)
        if old is not None and old.identity != identity:
            log.info(
                "HIL device %s: its CURVE key reconnects; the new connection takes over", info.id
            )
            self._end_session(old)
        if same is not None and same.device != info.id:
            self._end_session(same)
        if old is not None and old.identity == identity:
            old.last_seen, old.version = now, version  # hello again on the same connection
        else:
            session = _Session(info.id, identity, now, version, key)
            self._by_identity[identity] = session
            self._by_device[info.id] = session
            log.info("HIL device %s: session opened (protocol v%d)", info.id, version)
        with self._soc_lock:
            soc = self._soc[info.id]
        s = self.settings
        welcome = Welcome(
            info.id,
            info.kind,
            info.rated_kw,
            info.capacity_kwh,
            soc,
            s.time_scale,
            s.step_s,
            s.timeout_ms,
            s.heartbeat_s,
            info.soc_min,
            info.soc_max,
            info.efficiency,
            s.origin,
        )
        self._send_raw(identity, protocol.encode(welcome, version))

    # frames from devices

    def _drain_router(self) -> None:
        assert self._router is not None
        curve = self._auth is not None
        for _ in range(_MAX_FRAMES_PER_WAKE):
            try:
                if curve:  # zero-copy frames carry the peer's authenticated key
                    parts = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
                    user = parts[-1].get("User-Id") if len(parts) > 1 else None
                    key = user if isinstance(user, str) else None
                    frames = [bytes(f.buffer) for f in parts]
                else:
                    frames, key = self._router.recv_multipart(zmq.NOBLOCK), None
            except zmq.Again:
                return
            self._on_frames(frames, time.perf_counter(), key)

    def _on_frames(self, frames: list[bytes], now: float, key: str | None = None) -> None:
        identity, body = frames[0], frames[1:]
        session = self._by_identity.get(identity)
        if session is not None:
            session.last_seen = now
        if len(body) != 1:
            self._refuse(identity, "malformed", f"expected one frame per message, got {len(body)}")
            return
        raw = body[0]
        if len(raw) > MAX_MESSAGE_BYTES:
            self._refuse(
                identity,
                "oversized",
                f"size: {len(raw)} bytes, more than {MAX_MESSAGE_BYTES}; not decoded",
            )
            return
        try:
            version, message = protocol.decode_versioned(raw, from_device=True)
        except ProtocolError as exc:
            self._on_refused_frame(identity, raw, exc)
            return
        except Exception as exc:
            self._refuse(identity, "malformed", f"frame: cannot be read ({type(exc).__name__})")
            return
        if isinstance(message, Hello):
            self._on_hello(identity, message, now, version, key)
        elif session is None:
            self._counters["no_session"] += 1
            self._send_raw(
                identity,
                protocol.encode(Reject(message.device, "no session: send hello first"), version),
            )
        elif message.device != session.device:
            self._refuse(
                identity,
                "malformed",
                f"device: {message.device!r} on the session of {session.device!r}",
                _seq_of(message),
            )
        elif version != session.version:
            self._refuse(
                identity,
                "wrong_version",
                f"v: version {version} frame on a version {session.version} session "
                f"(say hello again to change versions)",
                _seq_of(message),
            )
        elif isinstance(message, Heartbeat):
            self._counters["heartbeats"] += 1
            self._send(identity, Heartbeat(session.device))
        else:
            assert isinstance(message, Measurement)
            self._on_measurement(identity, message, now)

    def _on_hello(
        self, identity: bytes, hello: Hello, now: float, version: int, key: str | None
    ) -> None:
        """A valid HELLO: REJECT an unknown id, a wrong kind, or a device whose
        live session belongs to another connection (unless that connection
        authenticated with the same CURVE key: the same device reconnecting);
        otherwise open the session."""
        self._counters["hellos"] += 1
        info = self._devices.get(hello.device)
        if info is None:
            self._counters["unknown_device"] += 1
            self._reject(identity, version, hello.device, f"unknown device id {hello.device!r}")
            return
        if hello.kind is not None and hello.kind != info.kind:
            self._counters["wrong_kind"] += 1
            self._reject(
                identity,
                version,
                hello.device,
                f"wrong kind: {hello.device!r} is a {info.kind}, not a {hello.kind}",
            )
            return
        self._expire_sessions(now)
        live = self._by_device.get(info.id)
        if live is not None and live.identity != identity and (key is None or key != live.key):
            self._counters["takeover_refused"] += 1
            left = EXPIRY_HEARTBEATS * self.settings.heartbeat_s - (now - live.last_seen)
            retry = max(left, 0.0) + 0.1
            self._reject(
                identity,
                version,
                hello.device,
                f"busy: {hello.device!r} has a live session from another connection; it "
                f"expires after {EXPIRY_HEARTBEATS * self.settings.heartbeat_s:g} s of silence "
                f"(in {max(left, 0.0):.1f} s if silent now): say hello again then",
                retry_s=retry,
            )
            return
        self._open_session(identity, info, now, version, key)

    def _reject(
        self,
        identity: bytes,
        version: int,
        device: str | None,
        reason: str,
        retry_s: float | None = None,
    ) -> None:
        if version == 1 and device is None:  # v1 REJECT must name a device: ERROR instead
            self._send_raw(identity, protocol.encode(Error(reason[:500]), 1))
            return
        self._send_raw(identity, protocol.encode(Reject(device, reason[:500], retry_s), version))

    def _on_refused_frame(self, identity: bytes, raw: bytes, exc: ProtocolError) -> None:
        """A frame that failed validation. A HELLO (any frame whose ``type`` is
        ``hello``) gets REJECT with the reason, in the frame's version if the
        gateway speaks it, else the newest; anything else gets ERROR naming
        the device and seq when they can be read."""
        try:
            data = protocol.unpack(raw)
        except ProtocolError:
            data = {}
        raw_version = data.get("v")
        known = not isinstance(raw_version, bool) and raw_version in protocol.VERSIONS
        version = raw_version if known else protocol.PROTOCOL_VERSION
        device = data.get("device")
        device = device if isinstance(device, str) and protocol.DEVICE_ID.match(device) else None
        wrong_version = exc.field == "v" and isinstance(raw_version, int) and not known
        counter = "wrong_version" if wrong_version else "malformed"
        if data.get("type") == Hello.TYPE:
            self._counters[counter] += 1
            self._counters["hellos"] += 1
            self._reject(identity, version, device, f"hello refused: {exc}")
            return
        seq = data.get("seq")
        seq = (
            seq if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**53 else None
        )
        self._refuse(identity, counter, str(exc), seq, device)

    def _on_measurement(self, identity: bytes, m: Measurement, now: float) -> None:
        rnd = self._round
        pending = rnd.pending.get(m.device) if rnd is not None else None
        last = self._last_seq.get(m.device)
        answers_this = m.answers is None or (rnd is not None and m.answers == rnd.request)
        if rnd is not None and pending is not None and m.seq == pending.seq and answers_this:
            del rnd.pending[m.device]
            session = self._by_device.get(m.device)
            rnd.results[m.device] = Exchange(
                m.device,
                "ok",
                (now - pending.sent_at) * 1000.0,
                m,
                None if session is None else session.version,
            )
            self._maybe_finish_round(now)
        elif last is not None and m.seq <= last:
            # an answer to a round already over (or a repeat); v2 also names the
            # request, so a late set-point answer is never taken for the read-back
            self._counters["late"] += 1
        else:
            self._refuse(
                identity, "malformed", f"seq: {m.seq} was never sent to {m.device!r}", m.seq
            )

    # sending

    def _refuse(
        self,
        identity: bytes,
        counter: str,
        reason: str,
        seq: int | None = None,
        device: str | None = None,
    ) -> None:
        """ERROR for a refused frame, in the connection's session version (v2
        without a session): v2 names the device and seq it refers to."""
        self._counters[counter] += 1
        log.debug("HIL gateway refused a frame (%s): %s", counter, reason)
        session = self._by_identity.get(identity)
        version = session.version if session is not None else protocol.PROTOCOL_VERSION
        if session is not None:
            device = session.device
        self._send_raw(identity, protocol.encode(Error(reason[:500], device, seq), version))

    def _send(self, identity: bytes, message: protocol.Message) -> None:
        """Answers are best effort: a peer gone or not reading misses them.
        In the version of the connection's session (the newest without one)."""
        session = self._by_identity.get(identity)
        version = session.version if session is not None else protocol.PROTOCOL_VERSION
        self._send_raw(identity, protocol.encode(message, version))

    def _send_raw(self, identity: bytes, frame: bytes) -> str:
        """Never blocks: ``sent``, ``full`` (the peer's queue is full: it is
        not reading) or ``gone`` (no such connection any more)."""
        assert self._router is not None
        try:
            self._router.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.Again:
            return "full"
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return "gone"
            raise
        return "sent"


# ---------------------------------------------------------------- configuration checks


SCHED_FIFO = 1
"""Linux's SCHED_FIFO (``os.SCHED_FIFO`` where Python has it)."""


def set_realtime_priority(priority: int) -> bool:
    """Put the calling thread under SCHED_FIFO at ``priority`` (Linux: per
    thread); False, with a warning, if the OS refuses."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError) as exc:
        log.warning(
            "HIL: real-time priority %d refused (%s); running at the normal policy",
            priority,
            exc,
        )
        return False
    return True


def _seq_of(message: protocol.Message) -> int | None:
    seq = getattr(message, "seq", None)
    return seq if isinstance(seq, int) else None


def _check_settings(s: GatewaySettings) -> None:
    if not (isinstance(s.realtime_priority, int) and 0 <= s.realtime_priority <= 99):
        raise GatewayError(
            f"HIL gateway setting realtime_priority must be 0..99, got {s.realtime_priority!r}"
        )
    if not (isinstance(s.spin_ms, (int, float)) and 0 <= s.spin_ms <= 1e4):
        raise GatewayError(
            f"HIL gateway setting spin_ms must be within 0..10000, got {s.spin_ms!r}"
        )
    for name in ("timeout_ms", "heartbeat_s", "time_scale", "step_s"):
        value = getattr(s, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= 1e9):
            raise GatewayError(
                f"HIL gateway setting {name} must be a positive number, got {value!r}"
            )


def _check_security(s: GatewaySettings) -> None:
    if not is_local_endpoint(s.bind) and s.curve_secret_key is None and not s.allow_unauthenticated:
        raise GatewayError(
            f"HIL gateway bind {s.bind!r} is not a loopback address: anyone who can reach it could "
            "pose as a device. Configure CURVE (curve_secret_key + curve_authorized_dir) or set "
            "allow_unauthenticated = true to accept that"
        )
    if s.curve_authorized_dir is not None and s.curve_secret_key is None:
        raise GatewayError("HIL gateway: curve_authorized_dir is set but curve_secret_key is not")


def _check_device(info: DeviceInfo, s: GatewaySettings) -> None:
    """A device's WELCOME must pass the device's validation."""
    welcome = Welcome(
        info.id,
        info.kind,
        info.rated_kw,
        info.capacity_kwh,
        None,
        s.time_scale,
        s.step_s,
        s.timeout_ms,
        s.heartbeat_s,
    )
    try:
        protocol.decode(protocol.encode(welcome), from_device=False)
    except (ProtocolError, TypeError) as exc:
        raise GatewayError(f"HIL device {info.id!r}: {exc}") from None


def _load_curve(s: GatewaySettings) -> tuple[bytes, bytes] | None:
    """The gateway's (public, secret) key, or None without CURVE."""
    if s.curve_secret_key is None:
        return None
    if not zmq.has("curve"):
        raise GatewayError("HIL gateway: this libzmq has no CURVE support")
    path = Path(s.curve_secret_key)
    if not path.is_file():
        raise GatewayError(f"HIL gateway: CURVE secret key file {path} does not exist")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise GatewayError(f"HIL gateway: cannot read CURVE key file {path}: {exc}") from exc
    if not secret:
        raise GatewayError(f"HIL gateway: {path} holds no secret key (is it the public .key file?)")
    folder = s.curve_authorized_dir
    if folder is None:
        raise GatewayError(
            "HIL gateway: curve_secret_key needs curve_authorized_dir, the folder "
            "of authorised device public keys"
        )
    if not Path(folder).is_dir():
        raise GatewayError(f"HIL gateway: authorised keys folder {folder} does not exist")
    return public, secret


def _host(bind: str) -> str:
    rest = bind.partition("://")[2]
    return rest.rsplit(":", 1)[0].strip("[]") if ":" in rest else rest


def is_local_endpoint(bind: str) -> bool:
    """True for endpoints only this host can reach: tcp on a loopback
    address, ipc and inproc."""
    scheme = bind.partition("://")[0]
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = _host(bind)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
