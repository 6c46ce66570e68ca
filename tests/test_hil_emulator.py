"""The HIL device emulator: model physics on an injected clock (exact), the
client against a fake gateway ROUTER on loopback, fault injection, and the
``dsosim hil-device`` / ``dsosim hil-keys`` command lines."""

from __future__ import annotations

import itertools
import math
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import pytest
import zmq
import zmq.auth

from dsosim.federates.hil import emulator as emulator_module
from dsosim.federates.hil.emulator import (
    BatteryModel,
    DeviceRejected,
    DeviceSpec,
    Emulator,
    EmulatorOptions,
    Faults,
    ModelOptions,
    PvModel,
    clear_sky_fraction,
    load_curve_keys,
)
from dsosim.federates.hil.protocol import (
    Error,
    Heartbeat,
    Hello,
    Measurement,
    Message,
    ProtocolError,
    Read,
    Reject,
    Setpoint,
    Welcome,
    decode,
    encode,
)
from dsosim.runner.cli import main as cli

ETA = math.sqrt(0.9)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


INSTANT = ModelOptions(ramp_s=0.0, delay_ms=0.0)


# ------------------------------------------------------------------ battery


def test_battery_waits_the_response_delay_then_ramps() -> None:
    clock = FakeClock()
    bat = BatteryModel(10.0, 100.0, 0.5, time_scale=1.0, clock=clock)  # defaults: 20 ms, 0.2 s
    bat.command(10.0)
    clock.t = 0.019
    r = bat.measure()
    assert (r.p_kw, r.status) == (0.0, "limited")
    clock.t = 0.02 + 0.1  # half the ramp: 50 kW/s for 0.1 s
    assert bat.measure().p_kw == pytest.approx(5.0, abs=1e-9)
    assert bat.measure().status == "limited"
    clock.t = 0.02 + 0.2
    r = bat.measure()
    assert r.p_kw == pytest.approx(10.0, abs=1e-9) and r.status == "ok"
    clock.t = 5.0
    assert bat.measure().p_kw == 10.0


def test_battery_clips_to_rating() -> None:
    clock = FakeClock()
    bat = BatteryModel(10.0, 100.0, 0.5, 1.0, INSTANT, clock)
    bat.command(-25.0)
    clock.t = 0.1
    r = bat.measure()
    assert (r.p_kw, r.status) == (-10.0, "limited")


def test_battery_soc_counts_simulated_time_and_efficiency_each_way() -> None:
    clock = FakeClock()
    # time_scale 360: one wall second is 0.1 simulated hours
    bat = BatteryModel(10.0, 10.0, 0.5, time_scale=360.0, options=INSTANT, clock=clock)
    bat.command(10.0)
    clock.t = 1.0
    assert bat.measure().soc == pytest.approx(0.5 + 1.0 * ETA / 10.0, abs=1e-12)
    bat.command(-10.0)
    clock.t = 2.0
    assert bat.measure().soc == pytest.approx(0.5 + 0.1 * ETA - 0.1 / ETA, abs=1e-12)


def test_battery_ramp_through_zero_is_integrated_exactly() -> None:
    clock = FakeClock()
    # 10 kW/s ramp, time_scale 3600: kW x wall seconds = kWh
    bat = BatteryModel(10.0, 100.0, 0.5, 3600.0, ModelOptions(ramp_s=1.0, delay_ms=0.0), clock)
    bat.command(10.0)
    clock.t = 1.0  # 0 -> 10 kW: 5 kWh in
    assert bat.measure().soc == pytest.approx(0.5 + 5 * ETA / 100, abs=1e-12)
    bat.command(-10.0)
    clock.t = 3.0  # 10 -> -10 kW: 5 kWh in (x eta), then 5 kWh out (/ eta)
    r = bat.measure()
    assert r.p_kw == pytest.approx(-10.0) and r.status == "ok"
    assert r.soc == pytest.approx(0.5 + 10 * ETA / 100 - 5 / ETA / 100, abs=1e-12)


def test_battery_stops_at_soc_limits_and_reports_limited() -> None:
    clock = FakeClock()
    bat = BatteryModel(10.0, 1.0, 0.9, 3600.0, INSTANT, clock)
    bat.command(10.0)
    clock.t = 0.1  # 0.05 kWh of room fills in 0.05 / (10 eta) wall seconds
    r = bat.measure()
    assert (r.p_kw, r.status) == (0.0, "limited")
    assert r.soc == pytest.approx(0.95, abs=1e-12)
    bat.command(-10.0)  # discharging is still allowed at soc_max
    clock.t = 0.12
    r = bat.measure()
    assert (r.p_kw, r.status) == (-10.0, "ok")
    assert r.soc == pytest.approx(0.95 - 0.02 * 10 / ETA, abs=1e-12)
    clock.t = 1.0  # empties to soc_min and stops there
    r = bat.measure()
    assert (r.p_kw, r.status, r.soc) == (0.0, "limited", pytest.approx(0.05, abs=1e-12))
    bat.command(5.0)
    clock.t = 1.1
    assert bat.measure().status == "ok"


def test_battery_measured_when_it_reaches_the_limit_stays_there() -> None:
    clock = FakeClock()
    bat = BatteryModel(10.0, 1.0, 0.9, 3600.0, INSTANT, clock)
    bat.command(10.0)
    clock.t = 0.05 / (10 * ETA)
    assert bat.measure().soc == pytest.approx(0.95, abs=1e-12)
    clock.t = 1.0
    r = bat.measure()
    assert (r.p_kw, r.status) == (0.0, "limited") and r.soc == pytest.approx(0.95, abs=1e-12)


def test_battery_welcomed_above_soc_max_cannot_charge() -> None:
    clock = FakeClock()
    bat = BatteryModel(10.0, 10.0, 1.0, 300.0, INSTANT, clock)
    bat.command(3.0)
    clock.t = 1.0
    r = bat.measure()
    assert (r.p_kw, r.soc, r.status) == (0.0, 1.0, "limited")


# ------------------------------------------------------------------ pv


def test_clear_sky_shape() -> None:
    assert clear_sky_fraction(0.0) == 0.0
    assert clear_sky_fraction(6 * 3600) == 0.0
    assert clear_sky_fraction(12 * 3600) == pytest.approx(1.0)
    assert clear_sky_fraction(8 * 3600) == pytest.approx(0.5)
    assert clear_sky_fraction(86400 + 12 * 3600) == pytest.approx(1.0)  # the next day
    assert clear_sky_fraction(20 * 3600) == 0.0


def _pv_at(hour: float, setpoint: float, options: ModelOptions = INSTANT) -> PvModel:
    clock = FakeClock()
    pv = PvModel(10.0, 1.0, options, clock)
    pv.set_time(hour * 3600)
    pv.command(setpoint)
    clock.t = 0.5
    return pv


def test_pv_curtails_to_the_set_point_floor() -> None:
    r = _pv_at(12, -4.0).measure()
    assert (r.p_kw, r.soc, r.status) == (pytest.approx(-4.0), None, "ok")


def test_pv_limited_when_the_sun_cannot_meet_the_set_point() -> None:
    r = _pv_at(8, -10.0).measure()  # half the peak at 8 h
    assert (r.p_kw, r.status) == (pytest.approx(-5.0, abs=1e-3), "limited")  # 0.5 s past 8 h
    r = _pv_at(2, -1.0).measure()  # night
    assert (r.p_kw, r.status) == (0.0, "limited")
    r = _pv_at(2, 0.0).measure()
    assert (r.p_kw, r.status) == (0.0, "ok")
    assert _pv_at(12, 3.0).measure().p_kw == 0.0  # PV cannot consume


def test_pv_follows_simulated_time_and_ramps() -> None:
    clock = FakeClock()
    pv = PvModel(10.0, 3600.0, INSTANT, clock)  # a wall second is a simulated hour
    pv.set_time(6 * 3600)
    pv.command(-100.0)
    clock.t = 2.0  # 8 h
    assert pv.measure().p_kw == pytest.approx(-5.0)
    clock.t = 6.0  # noon
    assert pv.measure().p_kw == pytest.approx(-10.0)
    pv = _pv_at(12, -10.0, ModelOptions())  # 20 ms delay, 0.2 s to rated
    pv._clock.t = 0.02 + 0.1  # type: ignore[attr-defined]
    assert pv.measure().p_kw == pytest.approx(-5.0)


# ------------------------------------------------------------------ client


class FakeGateway:
    """A ROUTER standing in for the gateway: receives and sends protocol
    frames, keeps track of device identities."""

    def __init__(self, curve_secret: tuple[bytes, bytes] | None = None, port: int = 0) -> None:
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.ROUTER)
        self.sock.linger = 0
        if curve_secret is not None:
            self.sock.curve_server = True
            self.sock.curve_publickey, self.sock.curve_secretkey = curve_secret
        if port:
            self.sock.bind(f"tcp://127.0.0.1:{port}")
        else:
            port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"
        self.identity: dict[str, bytes] = {}

    def close(self) -> None:
        self.sock.close(linger=0)
        self.context.term()

    def recv_raw(self, timeout: float = 2.0) -> tuple[bytes, bytes] | None:
        if not self.sock.poll(timeout * 1000):
            return None
        identity, raw = self.sock.recv_multipart()
        return identity, raw

    def recv(
        self, timeout: float = 2.0, *, skip_heartbeats: bool = True, answer_heartbeats: bool = True
    ) -> Message | None:
        """The next message (None after ``timeout``); heartbeats answered
        (unless told not to) and skipped (unless asked for)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.recv_raw(max(0.0, deadline - time.monotonic()))
            if got is None:
                return None
            identity, raw = got
            msg = decode(raw, from_device=True)
            self.identity[msg.device] = identity  # type: ignore[union-attr]
            if isinstance(msg, Heartbeat):
                if answer_heartbeats:
                    self.send(Heartbeat(msg.device))
                if skip_heartbeats:
                    continue
            return msg

    def send(self, msg: Message) -> None:
        device = msg.device  # type: ignore[union-attr]
        self.sock.send_multipart([self.identity[device], encode(msg)])

    def open_session(self, device: str = "bat1", **overrides: object) -> Hello:
        hello = self.recv()
        assert isinstance(hello, Hello) and hello.device == device, hello
        self.send(welcome(device, **overrides))
        return hello


def welcome(device: str = "bat1", **overrides: object) -> Welcome:
    fields: dict[str, object] = dict(
        device=device,
        kind="battery",
        rated_kw=10.0,
        capacity_kwh=20.0,
        soc=0.6,
        time_scale=300.0,
        step_s=1.0,
        timeout_ms=200.0,
        heartbeat_s=5.0,
    )
    fields.update(overrides)
    return Welcome(**fields)  # type: ignore[arg-type]


def setpoint(
    seq: int, p_kw: float, device: str = "bat1", lo_kw: float = -10.0, hi_kw: float = 10.0
) -> Setpoint:
    return Setpoint(
        device,
        seq,
        interval=seq,
        t_s=12 * 3600.0,
        duration_s=300.0,
        p_kw=p_kw,
        price=40.0,
        lo_kw=lo_kw,
        hi_kw=hi_kw,
    )


@dataclass
class Running:
    stop: threading.Event
    said: list[str]
    errors: list[BaseException] = field(default_factory=list)
    thread: threading.Thread | None = None

    def wait(self, timeout: float = 3.0) -> None:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive()


@contextmanager
def emulating(
    address: str, *devices: str, clock: Callable[[], float] = time.perf_counter, **options: object
) -> Iterator[Running]:
    """The emulator in a thread; stopped and joined on the way out."""
    specs = [DeviceSpec(*d.split(":")) for d in devices or ("bat1",)]
    opts = EmulatorOptions(**{"hello_retry_s": 0.5, **options})  # type: ignore[arg-type]
    running = Running(threading.Event(), [])

    def target() -> None:
        try:
            with Emulator(address, specs, opts, clock=clock, say=running.said.append) as emulator:
                emulator.run(stop=running.stop)
        except BaseException as exc:
            running.errors.append(exc)

    running.thread = threading.Thread(target=target, daemon=True)
    running.thread.start()
    try:
        yield running
    finally:
        running.stop.set()
        running.wait()


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    gw = FakeGateway()
    yield gw
    gw.close()


def test_welcome_configures_and_setpoint_and_read_are_answered(gateway: FakeGateway) -> None:
    with emulating(gateway.address, "bat1:battery") as run:
        hello = gateway.open_session("bat1", soc=0.6)
        assert hello.kind == "battery"
        gateway.send(setpoint(17, -4.0))
        m = gateway.recv()
        # answered at once, before the 20 ms response delay has passed
        assert m == Measurement("bat1", 17, 0.0, 0.6, "limited", "setpoint")
        time.sleep(0.35)
        gateway.send(Read("bat1", 17))
        m = gateway.recv()
        assert isinstance(m, Measurement) and m.seq == 17 and m.status == "ok"
        assert m.p_kw == pytest.approx(-4.0)
        assert m.soc is not None and m.soc < 0.6  # ~0.33 s x 300 of 4 kW out of 20 kWh
        assert m.soc == pytest.approx(0.6 - 4 * 0.3 * 300 / 3600 / ETA / 20, abs=0.003)
    assert not run.errors
    assert any("welcome: battery 10 kW, 20 kWh" in s for s in run.said)


def test_several_devices_one_socket_each(gateway: FakeGateway) -> None:
    with emulating(gateway.address, "bat1", "pv1"):
        hellos = {gateway.recv().device, gateway.recv().device}  # type: ignore[union-attr]
        assert hellos == {"bat1", "pv1"}
        assert gateway.identity["bat1"] != gateway.identity["pv1"]
        gateway.send(welcome("bat1"))
        gateway.send(welcome("pv1", kind="pv", capacity_kwh=None, soc=None))
        gateway.send(setpoint(3, -2.0, "pv1"))
        m = gateway.recv()
        assert isinstance(m, Measurement) and (m.device, m.seq, m.soc) == ("pv1", 3, None)


def test_heartbeats_when_idle(gateway: FakeGateway) -> None:
    with emulating(gateway.address):
        gateway.open_session(heartbeat_s=0.1)
        t0 = time.monotonic()
        beats = []
        while time.monotonic() - t0 < 0.55:
            msg = gateway.recv(0.3, skip_heartbeats=False)
            assert isinstance(msg, Heartbeat), msg  # no HELLO: the gateway answers
            beats.append(time.monotonic() - t0)
        assert len(beats) >= 4
        assert all(b - a > 0.05 for a, b in itertools.pairwise(beats))


def test_hello_again_when_the_gateway_goes_quiet(gateway: FakeGateway) -> None:
    with emulating(gateway.address) as run:
        gateway.open_session(heartbeat_s=0.1, soc=0.6)
        t0 = time.monotonic()
        while True:  # heartbeats go unanswered
            msg = gateway.recv(1.0, skip_heartbeats=False, answer_heartbeats=False)
            if not isinstance(msg, Heartbeat):
                break
        assert isinstance(msg, Hello)
        assert 0.25 < time.monotonic() - t0 < 0.6
        gateway.send(welcome(soc=0.2, heartbeat_s=5.0))  # a new session...
        gateway.send(setpoint(1, 0.0))
        m = gateway.recv()
        assert isinstance(m, Measurement) and m.soc == 0.6  # ...same battery
    assert any("saying hello again" in s for s in run.said)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_waits_quietly_for_a_gateway_that_is_not_there_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulator_module, "WAITING_NOTICE_S", 0.3)
    calls = 0

    def counting_clock() -> float:
        nonlocal calls
        calls += 1
        return time.perf_counter()

    port = _free_port()
    with emulating(f"tcp://127.0.0.1:{port}", clock=counting_clock) as run:
        time.sleep(0.5)
        assert calls < 200, (calls, run.said)  # polling at 0.1 s, not spinning
        assert any("no connection to" in s for s in run.said)
        gw = FakeGateway(port=port)  # the gateway comes up late
        try:
            assert isinstance(gw.recv(), Hello)
        finally:
            gw.close()


def test_reject_stops_the_emulator(gateway: FakeGateway) -> None:
    with emulating(gateway.address, "ghost") as run:
        assert isinstance(gateway.recv(), Hello)
        gateway.send(Reject("ghost", "unknown device id"))
        run.wait()
    assert len(run.errors) == 1 and isinstance(run.errors[0], DeviceRejected)
    assert "ghost" in str(run.errors[0]) and "unknown device id" in str(run.errors[0])


def test_reject_within_a_session_says_hello_again_then_gives_up(gateway: FakeGateway) -> None:
    with emulating(gateway.address) as run:
        gateway.open_session()
        for _ in range(2):  # a restarted gateway that did not know us yet
            gateway.send(Reject("bat1", "no session"))
            assert isinstance(gateway.recv(), Hello)
        gateway.send(Reject("bat1", "no session"))
        run.wait()
    assert isinstance(run.errors[0], DeviceRejected)


def test_error_from_the_gateway_is_reported_not_fatal(gateway: FakeGateway) -> None:
    with emulating(gateway.address) as run:
        gateway.open_session()
        gateway.sock.send_multipart([gateway.identity["bat1"], encode(Error("malformed"))])
        gateway.send(setpoint(1, 1.0))
        assert isinstance(gateway.recv(), Measurement)
    assert not run.errors
    assert any("refused our last frame: malformed" in s for s in run.said)


def test_late_answers(gateway: FakeGateway) -> None:
    with emulating(gateway.address, faults=Faults(late_ms=200)):
        gateway.open_session()
        t0 = time.monotonic()
        gateway.send(setpoint(5, 3.0))
        m = gateway.recv()
        elapsed = time.monotonic() - t0
        assert isinstance(m, Measurement) and m.seq == 5
        assert 0.19 < elapsed < 0.5
        assert m.p_kw == pytest.approx(3.0)  # the state when it answers, not when asked
        gateway.send(Read("bat1", 5))
        assert gateway.recv(0.1) is None
        assert isinstance(gateway.recv(), Measurement)


def test_silent_after_n_set_points_but_still_connected(gateway: FakeGateway) -> None:
    with emulating(gateway.address, faults=Faults(silent_after=1)):
        gateway.open_session(heartbeat_s=0.1)
        gateway.send(setpoint(1, 1.0))
        assert isinstance(gateway.recv(), Measurement)
        gateway.send(Read("bat1", 1))
        assert isinstance(gateway.recv(), Measurement)
        gateway.send(setpoint(2, 2.0))
        gateway.send(Read("bat1", 2))
        msgs = [gateway.recv(0.15, skip_heartbeats=False) for _ in range(3)]
        assert all(isinstance(m, Heartbeat) for m in msgs), msgs


def test_garbage_every_nth_answer(gateway: FakeGateway) -> None:
    with emulating(gateway.address, faults=Faults(garbage_every=2)):
        gateway.open_session()
        kinds = []
        for seq in range(1, 5):
            gateway.send(setpoint(seq, 1.0))
            got = gateway.recv_raw()
            assert got is not None
            try:
                m = decode(got[1], from_device=True)
                kinds.append(m.seq)  # type: ignore[union-attr]
            except ProtocolError:
                kinds.append("garbage")
        assert kinds == [1, "garbage", 3, "garbage"]


def test_faulty_readings_start_after_n_set_points(gateway: FakeGateway) -> None:
    faults = Faults(power_factor=1000.0, soc_offset=0.5, faults_after=1)
    with emulating(gateway.address, faults=faults, model=ModelOptions(delay_ms=0, ramp_s=0)):
        gateway.open_session(soc=0.6)
        gateway.send(setpoint(1, 2.0))
        first = gateway.recv()
        assert isinstance(first, Measurement) and first.soc == pytest.approx(0.6, abs=1e-3)
        assert abs(first.p_kw) <= 2.0
        gateway.send(setpoint(2, 3.0))
        gateway.send(Read("bat1", 2))
        gateway.recv()
        read = gateway.recv()
        assert isinstance(read, Measurement) and read.answers == "read"
        assert read.p_kw == pytest.approx(3000.0)  # W reported as kW
        assert read.soc is not None and read.soc > 1.0  # a jump beyond 0..1
    with emulating(gateway.address, faults=Faults(report_kw=1e8)):
        gateway.open_session()
        gateway.send(setpoint(1, 1.0))
        m = gateway.recv()
        assert isinstance(m, Measurement) and m.p_kw == 1e8


def test_v2_welcome_sets_the_soc_limits_and_setpoint_the_sun(gateway: FakeGateway) -> None:
    no_ramp = ModelOptions(delay_ms=0, ramp_s=0)
    with emulating(gateway.address, "bat1", "pv1", model=no_ramp):
        gateway.open_session("bat1", soc=0.89, soc_min=0.1, soc_max=0.9, efficiency=0.81)
        gateway.open_session("pv1", kind="pv", rated_kw=3.0, capacity_kwh=None, soc=None)
        gateway.send(setpoint(1, 10.0))
        gateway.recv()
        time.sleep(0.3)  # 90 simulated s at 10 kW x 0.9: 0.011 of 20 kWh, the limit comes first
        gateway.send(Read("bat1", 1))
        m = gateway.recv()
        assert isinstance(m, Measurement)
        assert m.soc == pytest.approx(0.9, abs=1e-9) and m.p_kw == 0.0
        # noon on a clear sky would give 3 kW; the simulation's sun this interval gives 1.2
        gateway.send(setpoint(1, -3.0, "pv1", lo_kw=-1.2, hi_kw=0.0))
        gateway.recv()
        time.sleep(0.05)
        gateway.send(Read("pv1", 1))
        pv = gateway.recv()
        assert isinstance(pv, Measurement) and pv.p_kw == pytest.approx(-1.2)


def test_a_busy_reject_is_retried_not_final(gateway: FakeGateway) -> None:
    with emulating(gateway.address) as run:
        assert isinstance(gateway.recv(), Hello)
        gateway.send(Reject("bat1", "busy: 'bat1' has a live session", retry_s=0.3))
        t0 = time.monotonic()
        assert isinstance(gateway.recv(), Hello)
        assert time.monotonic() - t0 >= 0.25
        gateway.send(welcome())
        gateway.send(setpoint(1, 1.0))
        assert isinstance(gateway.recv(), Measurement)
    assert not run.errors


def test_a_v1_emulator_speaks_version_1(gateway: FakeGateway) -> None:
    with emulating(gateway.address, protocol=1):
        got = gateway.recv_raw()
        assert got is not None and msgpack.unpackb(got[1])["v"] == 1
        gateway.identity["bat1"] = got[0]
        gateway.sock.send_multipart([got[0], encode(welcome(), 1)])
        gateway.sock.send_multipart([got[0], encode(setpoint(3, 1.0), 1)])
        got = gateway.recv_raw()
        assert got is not None
        frame = msgpack.unpackb(got[1])
        assert frame["v"] == 1 and frame["seq"] == 3 and "answers" not in frame


def _keys(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "keys"
    assert cli(["hil-keys", str(folder)] + [a for n in names for a in ("--name", n)]) == 0
    return folder


def test_curve_client(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = _keys(tmp_path, "gateway", "bat1")
    public, secret = zmq.auth.load_certificate(keys / "gateway.key_secret")
    assert secret is not None
    gw = FakeGateway(curve_secret=(public, secret))
    try:
        curve = load_curve_keys(keys / "gateway.key", keys / "bat1.key_secret")
        with emulating(gw.address, curve=curve):
            assert isinstance(gw.recv(), Hello)
    finally:
        gw.close()


# ------------------------------------------------------------------ command line


def test_hil_device_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli(["hil-device", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--connect",
        "--device",
        "--late-ms",
        "--silent-after",
        "--garbage-every",
        "--curve-server-key",
        "--curve-key",
        "--duration",
        "--log",
        "--ramp-s",
        "--delay-ms",
        "--efficiency",
    ):
        assert flag in out


@pytest.mark.parametrize(
    "address", ["127.0.0.1:5570", "tcp://127.0.0.1", "tcp://host:99999", "udp://127.0.0.1:5570"]
)
def test_hil_device_bad_address(address: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["hil-device", "--connect", address, "--device", "bat1"]) == 2
    err = capsys.readouterr().err
    assert repr(address) in err and "tcp://HOST:PORT" in err


def test_hil_device_bad_key_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = _keys(tmp_path, "gateway", "bat1")
    base = ["hil-device", "--connect", "tcp://127.0.0.1:5570", "--device", "bat1"]
    missing = str(tmp_path / "nope.key")
    cases: list[tuple[list[str], str]] = [
        (["--curve-server-key", missing, "--curve-key", str(keys / "bat1.key_secret")], missing),
        (
            [
                "--curve-server-key",
                str(keys / "gateway.key"),
                "--curve-key",
                str(keys / "bat1.key"),
            ],
            "holds no secret key",
        ),
        (["--curve-server-key", str(keys / "gateway.key")], "go together"),
    ]
    capsys.readouterr()
    for extra, needle in cases:
        assert cli(base + extra) == 2
        err = capsys.readouterr().err
        assert needle in err, err


def test_hil_device_bad_device_id(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli(["hil-device", "--connect", "tcp://127.0.0.1:5570", "--device", "bad id"])
    assert exc.value.code == 2
    assert "device id" in capsys.readouterr().err


def _serve(gw: FakeGateway, script: Callable[[FakeGateway], None]) -> threading.Thread:
    t = threading.Thread(target=script, args=(gw,), daemon=True)
    t.start()
    return t


def test_hil_device_runs_logs_and_stops(gateway: FakeGateway, tmp_path: Path) -> None:
    def script(gw: FakeGateway) -> None:
        gw.open_session("bat1")
        gw.send(setpoint(1, 2.0))
        gw.recv()
        gw.send(Read("bat1", 1))
        gw.recv()

    log = tmp_path / "answers.csv"
    server = _serve(gateway, script)
    t0 = time.monotonic()
    rc = cli(
        [
            "hil-device",
            "--connect",
            gateway.address,
            "--device",
            "bat1",
            "--duration",
            "0.6",
            "--log",
            str(log),
        ]
    )
    server.join(3)
    assert rc == 0 and not server.is_alive()
    assert 0.55 < time.monotonic() - t0 < 2.0
    rows = log.read_text().splitlines()
    assert rows[0] == "wall_s,device,seq,answer,setpoint_kw,p_kw,soc,status"
    assert [r.split(",")[1:5] for r in rows[1:]] == [
        ["bat1", "1", "setpoint", "2"],
        ["bat1", "1", "read", "2"],
    ]


def test_hil_device_exits_1_on_reject(
    gateway: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    def script(gw: FakeGateway) -> None:
        gw.recv()
        gw.send(Reject("bat1", "wrong kind: configured as pv"))

    server = _serve(gateway, script)
    rc = cli(
        ["hil-device", "--connect", gateway.address, "--device", "bat1:battery", "--duration", "5"]
    )
    server.join(3)
    assert rc == 1
    assert "rejected device 'bat1': wrong kind" in capsys.readouterr().err


def test_hil_keys_writes_loadable_pairs_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = _keys(tmp_path, "gateway", "bat1")
    out = capsys.readouterr().out
    assert "--curve-server-key" in out and "bat1.key_secret" in out
    public, secret = zmq.auth.load_certificate(keys / "bat1.key_secret")
    assert secret is not None and zmq.auth.load_certificate(keys / "bat1.key") == (public, None)
    assert (keys / "bat1.key_secret").stat().st_mode & 0o077 == 0
    before = (keys / "gateway.key").read_bytes()
    assert cli(["hil-keys", str(keys), "--name", "gateway"]) == 2
    assert "already exist" in capsys.readouterr().err
    assert (keys / "gateway.key").read_bytes() == before
    assert cli(["hil-keys", str(keys), "--name", "gateway", "--force"]) == 0
    assert (keys / "gateway.key").read_bytes() != before


def test_hil_device_stops_cleanly_on_sigterm(gateway: FakeGateway) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dsosim.runner.cli",
            "hil-device",
            "--connect",
            gateway.address,
            "--device",
            "bat1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert isinstance(gateway.recv(timeout=30.0), Hello)  # imports take a few seconds
        gateway.send(welcome())
        gateway.send(setpoint(1, 1.0))
        assert isinstance(gateway.recv(), Measurement)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "welcome: battery" in err


def test_spin_window_follows_the_learned_schedule() -> None:
    from dsosim.federates.hil.emulator import _Session

    clock = FakeClock()
    em = Emulator(
        "tcp://127.0.0.1:1", [DeviceSpec("bat1")], EmulatorOptions(spin_ms=3), clock=clock
    )
    s = _Session(DeviceSpec("bat1"), socket=None)  # type: ignore[arg-type]
    em._sessions.append(s)
    assert em._until_spin(0.0) == math.inf  # nothing learned yet: sleep
    s.welcome = welcome(step_s=1.0)
    s.setpoint_at, s.read_seen = 10.0, False
    # the read delay is not known yet: only the next set-point (11.0) is expected
    assert em._until_spin(10.02) == pytest.approx(10.997 - 10.02)
    s.read_after = 0.1
    assert em._until_spin(10.05) == pytest.approx(10.097 - 10.05)  # the read at 10.1
    assert em._until_spin(10.099) == 0.0
    s.read_seen = True
    assert em._until_spin(10.2) == pytest.approx(10.997 - 10.2)  # the next set-point
    assert em._until_spin(11.002) == 0.0
    assert em._until_spin(11.02) == pytest.approx(11.097 - 11.02)  # then its read
    with pytest.raises(ValueError, match="spin_ms"):
        EmulatorOptions(spin_ms=-1)
    with pytest.raises(ValueError, match="choose one"):
        EmulatorOptions(spin_ms=3, realtime_priority=10)
