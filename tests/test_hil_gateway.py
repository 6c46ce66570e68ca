"""The HIL gateway against real DEALER sockets on loopback (protocol: docs/hil.md)."""

from __future__ import annotations

import math
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
import zmq.auth

from dsosim.federates.hil.gateway import (
    COUNTERS,
    DeviceInfo,
    Exchange,
    Gateway,
    GatewayError,
    GatewaySettings,
    is_local_endpoint,
)
from dsosim.federates.hil.protocol import (
    Error,
    Heartbeat,
    Hello,
    Measurement,
    Message,
    Read,
    Reject,
    Setpoint,
    Welcome,
    decode,
    encode,
)

DEVICES = (
    DeviceInfo("bat1", "battery", 5.0, 13.5),
    DeviceInfo("pv1", "pv", 4.0, None),
    DeviceInfo("bat2", "battery", 3.0, 6.0),
)
ANY_PORT = "tcp://127.0.0.1:*"
WAIT_MS = 3000
"""Upper bound for something that should arrive (never reached when all is well)."""
QUIET_MS = 250
"""How long to listen when checking that nothing arrives."""


class Device:
    """A test device: one DEALER socket speaking the protocol by hand."""

    def __init__(
        self, ctx: zmq.Context[Any], endpoint: str, curve: tuple[bytes, bytes, bytes] | None = None
    ) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        if curve is not None:
            public, secret, server = curve
            self.sock.curve_publickey = public
            self.sock.curve_secretkey = secret
            self.sock.curve_serverkey = server
        self.sock.connect(endpoint)

    def send(self, message: Message) -> None:
        self.sock.send(encode(message))

    def send_map(self, data: dict[str, Any]) -> None:
        self.sock.send(msgpack.packb(data, use_bin_type=True))

    def recv(self) -> Message:
        assert self.sock.poll(WAIT_MS), "no answer from the gateway"
        return decode(self.sock.recv(), from_device=False)

    def quiet(self) -> bool:
        return self.sock.poll(QUIET_MS) == 0

    def hello(self, device: str, kind: str | None = None) -> Message:
        self.send(Hello(device, kind))
        return self.recv()

    def answer(self, request: Message, p_kw: float, soc: float | None = None) -> None:
        assert isinstance(request, (Setpoint, Read))
        self.send(Measurement(request.device, request.seq, p_kw, soc, "ok", request.TYPE))


@pytest.fixture(autouse=True)
def no_threads_left() -> Iterator[None]:
    """Every test stops the threads it starts (the gateway's, the authenticator's)."""
    before = set(threading.enumerate())
    yield
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not left, f"threads left running: {left}"


@pytest.fixture
def connect() -> Iterator[Callable[..., Device]]:
    """Opens test devices; all are closed (and their context ended) after the test."""
    context: zmq.Context[Any] = zmq.Context()
    devices: list[Device] = []

    def open_device(endpoint: str, curve: tuple[bytes, bytes, bytes] | None = None) -> Device:
        devices.append(Device(context, endpoint, curve))
        return devices[-1]

    yield open_device
    for device in devices:
        device.sock.close(linger=0)
    context.term()


@pytest.fixture
def make_gateway() -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def make(**settings: Any) -> Gateway:
        settings.setdefault("bind", ANY_PORT)
        gateway = Gateway(GatewaySettings(**settings), DEVICES)
        started.append(gateway)
        gateway.start()
        return gateway

    yield make
    for gateway in started:
        gateway.close()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """Runs the gateway's blocking calls while the test thread plays the device."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        yield executor


def setpoint(
    device: str, seq: int, p_kw: float = -2.5
) -> tuple[str, int, int, float, float, float, float]:
    return (device, seq, seq + 100, 900.0 * seq, 900.0, p_kw, 42.5)


def result(future: Future[dict[str, Exchange]]) -> dict[str, Exchange]:
    return future.result(timeout=WAIT_MS / 1000)


def assert_answered(exchange: Exchange, seq: int, p_kw: float) -> None:
    assert exchange.status == "ok"
    assert exchange.measurement is not None
    assert exchange.measurement.seq == seq and exchange.measurement.p_kw == p_kw
    assert exchange.rtt_ms is not None and math.isfinite(exchange.rtt_ms) and exchange.rtt_ms > 0


def counted(gateway: Gateway, **expected: int) -> None:
    """The counters since the last call are exactly ``expected`` (others 0)."""
    counters = gateway.take_counters()
    assert set(counters) == set(COUNTERS)
    assert {k: v for k, v in counters.items() if v} == expected


# ------------------------------------------------------------------ sessions


def test_hello_gets_welcome_with_the_device_and_the_settings(make_gateway, connect):
    gateway = make_gateway(timeout_ms=80.0, heartbeat_s=2.0, time_scale=60.0, step_s=15.0)
    assert gateway.endpoint.startswith("tcp://127.0.0.1:") and not gateway.endpoint.endswith("*")
    gateway.set_soc("bat1", 0.4)
    welcome = connect(gateway.endpoint).hello("bat1")
    assert welcome == Welcome(
        device="bat1",
        kind="battery",
        rated_kw=5.0,
        capacity_kwh=13.5,
        soc=0.4,
        time_scale=60.0,
        step_s=15.0,
        timeout_ms=80.0,
        heartbeat_s=2.0,
        origin="T00:00:00",
    )
    welcome = connect(gateway.endpoint).hello("pv1", kind="pv")
    assert isinstance(welcome, Welcome)
    assert (welcome.kind, welcome.capacity_kwh, welcome.soc) == ("pv", None, None)
    assert gateway.connected() == ["bat1", "pv1"]
    counted(gateway, hellos=2)


@pytest.mark.parametrize(
    ("frame", "reason", "counter"),
    [
        ({"v": 1, "type": "hello", "device": "nope"}, "unknown device", "unknown_device"),
        ({"v": 1, "type": "hello", "device": "bat1", "kind": "pv"}, "wrong kind", "wrong_kind"),
        ({"v": 3, "type": "hello", "device": "bat1"}, "version 3 is not spoken", "wrong_version"),
        ({"v": 2, "type": "hello", "device": "bat 1"}, "device id must be", "malformed"),
        ({"v": 2, "type": "hello", "device": "bat1", "kind": "ev"}, "kind: expected", "malformed"),
        ({"v": 2, "type": "hello"}, "device: missing from hello", "malformed"),
        ({"v": 2, "type": "hello", "device": "bat1", "x": 1}, "x: unknown field", "malformed"),
        ({"v": 1, "type": "heartbeat", "device": "bat1"}, "no session", "no_session"),
        (
            {
                "v": 1,
                "type": "measurement",
                "device": "bat1",
                "seq": 1,
                "p_kw": 1.0,
                "soc": None,
                "status": "ok",
            },
            "no session",
            "no_session",
        ),
    ],
)
def test_refused_hello_or_message_before_hello_gets_reject(
    make_gateway, connect, frame, reason, counter
):
    gateway = make_gateway()
    device = connect(gateway.endpoint)
    device.send_map(frame)
    reject = device.recv()
    assert isinstance(reject, Reject), reject
    valid_id = frame.get("device") in ("bat1", "nope")
    assert reject.device == (frame["device"] if valid_id else None) and reason in reject.reason
    assert reject.retry_s is None  # final: the configuration disagrees
    assert gateway.connected() == []
    expected = {counter: 1}
    if frame["type"] == "hello":
        expected["hellos"] = 1
    counted(gateway, **expected)


def test_other_version_on_a_non_hello_frame_gets_error(make_gateway, connect):
    gateway = make_gateway()
    device = connect(gateway.endpoint)
    device.hello("bat1")
    device.send_map({"v": 7, "type": "heartbeat", "device": "bat1"})
    error = device.recv()
    assert isinstance(error, Error) and "version" in error.reason
    counted(gateway, hellos=1, wrong_version=1)


def test_a_hello_for_a_live_session_is_refused_until_it_expires(make_gateway, connect, pool):
    gateway = make_gateway(timeout_ms=2000.0, heartbeat_s=0.2)
    old = connect(gateway.endpoint)
    assert isinstance(old.hello("bat1"), Welcome)
    thief = connect(gateway.endpoint)
    reject = thief.hello("bat1")
    assert isinstance(reject, Reject) and reject.device == "bat1"
    assert reject.reason.startswith("busy: 'bat1' has a live session from another connection")
    assert reject.retry_s is not None and 0.1 <= reject.retry_s <= 0.7
    # the live session keeps its set-points; the other connection gets nothing
    future = pool.submit(gateway.setpoints, [setpoint("bat1", 1)])
    request = old.recv()
    old.answer(request, -2.4)
    assert_answered(result(future)["bat1"], 1, -2.4)
    assert thief.quiet()
    counted(gateway, hellos=2, takeover_refused=1)
    # once the old connection has been silent for three heartbeat periods it is gone
    time.sleep(0.65)
    assert isinstance(thief.hello("bat1"), Welcome)
    assert gateway.connected() == ["bat1"]
    old.send(Heartbeat("bat1"))
    reject = old.recv()
    assert isinstance(reject, Reject) and "no session" in reject.reason
    counted(gateway, hellos=1, sessions_expired=1, no_session=1)


def test_the_same_connection_saying_hello_again_keeps_its_session(make_gateway, connect):
    gateway = make_gateway()
    device = connect(gateway.endpoint)
    assert isinstance(device.hello("bat1"), Welcome)
    assert isinstance(device.hello("bat1"), Welcome)
    assert gateway.connected() == ["bat1"]
    counted(gateway, hellos=2)


def test_a_silent_session_expires_after_three_heartbeat_periods(make_gateway, connect):
    gateway = make_gateway(heartbeat_s=0.1)
    device = connect(gateway.endpoint)
    device.hello("bat1")
    deadline = time.monotonic() + WAIT_MS / 1000
    while gateway.connected():
        assert time.monotonic() < deadline, "the session never expired"
        time.sleep(0.02)
    counted(gateway, hellos=1, sessions_expired=1)
    assert gateway.setpoints([setpoint("bat1", 1)])["bat1"].status == "disconnected"
    assert device.quiet()
    device.send(Heartbeat("bat1"))
    assert isinstance(device.recv(), Reject)


def test_heartbeats_are_answered_and_keep_the_session(make_gateway, connect):
    gateway = make_gateway(heartbeat_s=0.2)
    device = connect(gateway.endpoint)
    device.hello("bat1")
    end = time.monotonic() + 0.8  # longer than the 0.6 s expiry
    beats = 0
    while time.monotonic() < end:  # the caller makes no gateway call meanwhile
        device.send(Heartbeat("bat1"))
        assert device.recv() == Heartbeat("bat1")
        beats += 1
        time.sleep(0.05)
    assert gateway.connected() == ["bat1"]
    counted(gateway, hellos=1, heartbeats=beats)


def test_heartbeat_and_hello_answered_while_the_caller_waits_in_a_round(
    make_gateway, connect, pool
):
    gateway = make_gateway(timeout_ms=2000.0)
    battery = connect(gateway.endpoint)
    battery.hello("bat1")
    future = pool.submit(gateway.setpoints, [setpoint("bat1", 1)])
    request = battery.recv()  # the round is open: the caller is blocked in setpoints()
    pv = connect(gateway.endpoint)
    assert isinstance(pv.hello("pv1"), Welcome)
    pv.send(Heartbeat("pv1"))
    assert pv.recv() == Heartbeat("pv1")
    assert not future.done()
    battery.answer(request, 1.0)
    assert_answered(result(future)["bat1"], 1, 1.0)


# ------------------------------------------------------------------ rounds


def test_setpoint_and_read_round_trips(make_gateway, connect, pool):
    gateway = make_gateway(timeout_ms=2000.0)
    battery, pv = connect(gateway.endpoint), connect(gateway.endpoint)
    battery.hello("bat1")
    pv.hello("pv1")

    future = pool.submit(
        gateway.setpoints,
        [setpoint("bat1", 7, -3.2), setpoint("pv1", 7, -1.0), setpoint("bat2", 7)],
    )
    sp_bat, sp_pv = battery.recv(), pv.recv()
    # without a range from the caller, the rating is the range
    assert sp_bat == Setpoint("bat1", 7, 107, 6300.0, 900.0, -3.2, 42.5, -5.0, 5.0)
    assert isinstance(sp_pv, Setpoint) and sp_pv.p_kw == -1.0
    battery.answer(sp_bat, 0.4, soc=0.5)
    pv.answer(sp_pv, -0.9)
    exchanges = result(future)
    assert list(exchanges) == ["bat1", "pv1", "bat2"]
    assert_answered(exchanges["bat1"], 7, 0.4)
    assert exchanges["bat1"].measurement.soc == 0.5
    assert_answered(exchanges["pv1"], 7, -0.9)
    assert exchanges["bat2"] == Exchange("bat2", "disconnected", None, None)

    future = pool.submit(gateway.read, [("bat1", 7), ("pv1", 7)])
    rd_bat, rd_pv = battery.recv(), pv.recv()
    assert rd_bat == Read("bat1", 7) and rd_pv == Read("pv1", 7)
    battery.answer(rd_bat, -3.1, soc=0.49)
    pv.answer(rd_pv, -1.0)
    exchanges = result(future)
    assert_answered(exchanges["bat1"], 7, -3.1)
    assert_answered(exchanges["pv1"], 7, -1.0)
    counted(gateway, hellos=2)


def test_timeout_then_late_answers_are_dropped_and_the_next_round_is_ok(
    make_gateway, connect, pool
):
    gateway = make_gateway(timeout_ms=100.0)
    device = connect(gateway.endpoint)
    device.hello("bat1")
    first = pool.submit(gateway.setpoints, [setpoint("bat1", 1)])
    request = device.recv()
    assert result(first)["bat1"] == Exchange("bat1", "timeout", None, None)
    device.answer(request, 9.0)  # late: its round is over

    gateway_round = pool.submit(gateway.setpoints, [setpoint("bat1", 2)])
    request2 = device.recv()
    assert request2.seq == 2
    device.answer(request, 9.0)  # late again, now while the next round waits
    device.answer(request2, 2.0)
    assert_answered(result(gateway_round)["bat1"], 2, 2.0)
    device.answer(request2, 2.0)  # a repeated answer is late too
    device.send(Heartbeat("bat1"))
    assert device.recv() == Heartbeat("bat1")  # frames are handled in order: all counted by now
    counted(gateway, hellos=1, late=3, heartbeats=1)


def test_a_round_with_no_session_returns_at_once(make_gateway):
    gateway = make_gateway(timeout_ms=60_000.0)
    exchanges = gateway.read([("bat1", 3), ("pv1", 3)])
    assert [e.status for e in exchanges.values()] == ["disconnected", "disconnected"]


def test_bad_round_arguments_raise_in_the_caller(make_gateway):
    gateway = make_gateway()
    with pytest.raises(ValueError, match="not a configured"):
        gateway.read([("ghost", 1)])
    with pytest.raises(ValueError, match="p_kw"):
        gateway.setpoints([setpoint("bat1", 1, p_kw=math.nan)])
    with pytest.raises(ValueError, match="twice"):
        gateway.read([("bat1", 1), ("bat1", 1)])
    with pytest.raises(ValueError, match="soc"):
        gateway.set_soc("bat1", 1.5)


# ------------------------------------------------------------------ bad frames


MEASUREMENT = {
    "v": 2,
    "type": "measurement",
    "device": "bat1",
    "seq": 1,
    "p_kw": 1.0,
    "soc": None,
    "status": "ok",
    "answers": "setpoint",
}


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"\xc1garbage"], "not msgpack"),
        ([b""], "not msgpack"),
        ([msgpack.packb([1, 2])], "expected a map"),
        ([msgpack.packb({"type": "heartbeat", "device": "bat1"})], "version"),
        ([msgpack.packb({**MEASUREMENT, "seq": "x"})], "seq"),
        ([msgpack.packb({**MEASUREMENT, "p_kw": math.nan})], "p_kw"),
        ([msgpack.packb({**MEASUREMENT, "extra": 1})], "extra"),
        ([msgpack.packb({"v": 1, "type": [1]})], "type: [1] is not a message a device sends"),
        ([msgpack.packb({**MEASUREMENT, "device": "pv1"})], "session of 'bat1'"),
        ([msgpack.packb({**MEASUREMENT, "seq": 99})], "never sent"),
        ([encode(Heartbeat("bat1")), encode(Heartbeat("bat1"))], "one frame"),
    ],
)
def test_malformed_frames_get_error_and_the_gateway_keeps_serving(
    make_gateway, connect, frames, reason
):
    gateway = make_gateway(timeout_ms=2000.0)
    device = connect(gateway.endpoint)
    device.hello("bat1")
    device.sock.send_multipart(frames)
    error = device.recv()
    assert isinstance(error, Error) and reason in error.reason
    assert_still_serving(gateway, device)
    counted(gateway, hellos=1, malformed=1, heartbeats=1)


def test_oversized_frames_are_refused_without_decoding(make_gateway, connect):
    gateway = make_gateway(timeout_ms=2000.0)
    device = connect(gateway.endpoint)
    device.hello("bat1")
    device.send_map({**MEASUREMENT, "status": "x" * 5000})
    error = device.recv()
    assert isinstance(error, Error) and "not decoded" in error.reason
    assert_still_serving(gateway, device)
    counted(gateway, hellos=1, oversized=1, heartbeats=1)


def assert_still_serving(gateway: Gateway, device: Device) -> None:
    device.send(Heartbeat("bat1"))
    assert device.recv() == Heartbeat("bat1")
    with ThreadPoolExecutor(max_workers=1) as executor:
        future = executor.submit(gateway.setpoints, [setpoint("bat1", 200)])
        request = device.recv()
        device.answer(request, 0.5)
        assert_answered(result(future)["bat1"], 200, 0.5)


# ------------------------------------------------------------------ security and failures


def test_curve_admits_authorised_keys_only(make_gateway, connect, tmp_path: Path):
    keys, authorised = tmp_path / "keys", tmp_path / "authorised"
    keys.mkdir()
    authorised.mkdir()
    _, gateway_secret_file = zmq.auth.create_certificates(keys, "gateway")
    device_public_file, device_secret_file = zmq.auth.create_certificates(keys, "bat1")
    zmq.auth.create_certificates(keys, "intruder")
    shutil.copy(device_public_file, authorised)
    server_public, _ = zmq.auth.load_certificate(gateway_secret_file)

    gateway = make_gateway(curve_secret_key=gateway_secret_file, curve_authorized_dir=authorised)
    public, secret = zmq.auth.load_certificate(device_secret_file)
    assert isinstance(
        connect(gateway.endpoint, (public, secret, server_public)).hello("bat1"), Welcome
    )

    public, secret = zmq.auth.load_certificate(keys / "intruder.key_secret")
    intruder = connect(gateway.endpoint, (public, secret, server_public))
    plaintext = connect(gateway.endpoint)
    for device in (intruder, plaintext):
        device.send(Hello("bat2"))
    assert intruder.quiet() and plaintext.quiet()
    assert gateway.connected() == ["bat1"]
    counted(gateway, hellos=1)


def test_with_curve_only_the_same_key_takes_a_live_session_over(
    make_gateway, connect, pool, tmp_path: Path
):
    keys, authorised = tmp_path / "keys", tmp_path / "authorised"
    keys.mkdir()
    authorised.mkdir()
    _, gateway_secret_file = zmq.auth.create_certificates(keys, "gateway")
    for name in ("bat1", "rig2"):  # both authorised: a second lab rig
        public_file, _ = zmq.auth.create_certificates(keys, name)
        shutil.copy(public_file, authorised)
    server_public, _ = zmq.auth.load_certificate(gateway_secret_file)
    gateway = make_gateway(
        curve_secret_key=gateway_secret_file, curve_authorized_dir=authorised, timeout_ms=2000.0
    )

    def device(name: str) -> Device:
        public, secret = zmq.auth.load_certificate(keys / f"{name}.key_secret")
        return connect(gateway.endpoint, (public, secret, server_public))

    first = device("bat1")
    assert isinstance(first.hello("bat1"), Welcome)
    # another authorised key claiming bat1 while its session lives: refused
    rig = device("rig2")
    reject = rig.hello("bat1")
    assert isinstance(reject, Reject) and reject.reason.startswith("busy:")
    # the same key on a new connection (the device restarted): takes over at once
    again = device("bat1")
    assert isinstance(again.hello("bat1"), Welcome)
    future = pool.submit(gateway.setpoints, [setpoint("bat1", 1)])
    again.answer(again.recv(), 1.0)
    assert_answered(result(future)["bat1"], 1, 1.0)
    assert first.quiet() and rig.quiet()
    counted(gateway, hellos=3, takeover_refused=1)


def test_non_loopback_bind_needs_curve_or_an_explicit_opt_in(tmp_path: Path):
    with pytest.raises(GatewayError, match="allow_unauthenticated"):
        Gateway(GatewaySettings(bind="tcp://0.0.0.0:*"), DEVICES).start()
    assert not is_local_endpoint("tcp://*:5570") and not is_local_endpoint("tcp://192.168.1.5:5570")
    assert is_local_endpoint("tcp://127.0.0.2:5570") and is_local_endpoint("tcp://localhost:1")
    assert is_local_endpoint("tcp://[::1]:5570")


def test_missing_curve_files_are_named(tmp_path: Path):
    _, secret_file = zmq.auth.create_certificates(tmp_path, "gateway")
    for settings, named in [
        (
            GatewaySettings(
                bind=ANY_PORT,
                curve_secret_key=tmp_path / "no.key_secret",
                curve_authorized_dir=tmp_path,
            ),
            "no.key_secret",
        ),
        (
            GatewaySettings(
                bind=ANY_PORT,
                curve_secret_key=secret_file,
                curve_authorized_dir=tmp_path / "missing",
            ),
            "missing",
        ),
        (
            GatewaySettings(
                bind=ANY_PORT,
                curve_secret_key=tmp_path / "gateway.key",
                curve_authorized_dir=tmp_path,
            ),
            "no secret key",
        ),
    ]:
        with pytest.raises(GatewayError, match=named):
            Gateway(settings, DEVICES).start()


def test_bind_failure_is_a_gateway_error(make_gateway):
    first = make_gateway()
    with pytest.raises(GatewayError, match="cannot bind"):
        make_gateway(bind=first.endpoint)


def test_a_failed_io_thread_is_reported_to_the_next_call(make_gateway, connect, monkeypatch):
    gateway = make_gateway()

    def explode(*args: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(gateway, "_on_hello", explode)
    connect(gateway.endpoint).send(Hello("bat1"))
    deadline = time.monotonic() + WAIT_MS / 1000
    with pytest.raises(GatewayError, match="boom"):
        while time.monotonic() < deadline:
            gateway.connected()
    with pytest.raises(GatewayError, match="boom"):
        gateway.setpoints([setpoint("bat1", 1)])
    gateway.close()
    gateway.close()


@pytest.mark.parametrize(("spin_ms", "priority"), [(5.0, 0), (0.0, 5)])
def test_spinning_or_real_time_gateway_serves_rounds_the_same(
    make_gateway, connect, pool, spin_ms, priority
):
    """The latency options change when an answer is taken, never what: a round
    is answered as with the defaults (the real-time policy may be refused by
    the OS: the gateway then says so and runs at the normal one)."""
    gateway = make_gateway(timeout_ms=2000.0, spin_ms=spin_ms, realtime_priority=priority)
    device = connect(gateway.endpoint)
    assert isinstance(device.hello("bat1"), Welcome)
    for seq in (1, 2):
        future = pool.submit(gateway.setpoints, [setpoint("bat1", seq)])
        device.answer(device.recv(), -1.5)
        assert_answered(result(future)["bat1"], seq, -1.5)
    if priority:
        assert isinstance(gateway.realtime, bool)
    with pytest.raises(GatewayError, match="realtime_priority"):
        Gateway(GatewaySettings(bind=ANY_PORT, realtime_priority=100), DEVICES)
    with pytest.raises(GatewayError, match="spin_ms"):
        Gateway(GatewaySettings(bind=ANY_PORT, spin_ms=-1.0), DEVICES)
