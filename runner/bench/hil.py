"""Hardware in the loop: wall-clock tracking of a real-time federation and the gateway round trip.

Builds the shipped HIL scenario (``configs/scenarios/hil.toml``: the
quickstart federation in real time, a 5-minute market interval per wall
second, exchanges 0.1 s apart, a battery and a PV inverter handed to
hardware) on free ports, starts the device emulator (``dsosim hil-device``)
itself as a separate process, runs the federation for ``--seconds`` of wall
clock through ``helics run`` and reports, from the run's results:

* tracking error: at every grant of every federate, the wall time since it
  entered executing mode minus the granted simulation time (HELICS
  ``realtime`` table; positive = late). The sub-steps are ``--substep-s``
  apart (100 ms by default);
* gateway round trip: SETPOINT sent -> MEASUREMENT received, per device and
  interval (``hil`` table), and the same for the read-back. Both ends are
  Python processes that sleep between exchanges.

References measured in the same run, before the federation (the machine is
shared and noisy): the overshoot of a plain ``time.sleep`` on this machine
(the floor any wall-clock pacing has) and a bare pyzmq DEALER/ROUTER round
trip over loopback TCP between two processes, back to back and after 0.1 s
idle (the floor of the gateway's: idle cores wake up slower).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from dsosim.federates.hil.gateway import SCHED_FIFO, set_realtime_priority
from dsosim.federates.recorder.summary import read_table
from dsosim.runner.build.federation import build, free_port
from dsosim.runner.launch import launch

SCENARIO = Path(__file__).resolve().parents[2] / "configs" / "scenarios" / "hil.toml"
DEVICES = ("bat1", "pv1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds",
        type=float,
        default=600.0,
        help="wall seconds of real-time federation (default 600)",
    )
    parser.add_argument("--out", default="runs/bench-hil", help="where the run is written")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument(
        "--gateway-spin-ms",
        type=float,
        default=None,
        help="the gateway's spin_ms (default: the scenario's, 0 = sleep until answered)",
    )
    parser.add_argument(
        "--device-spin-ms",
        type=float,
        default=0.0,
        help="the emulator's --spin-ms (default 0: a device that sleeps until asked)",
    )
    parser.add_argument(
        "--realtime-priority",
        type=int,
        default=10,
        choices=range(100),
        metavar="N",
        help="the gateway's and the emulator's I/O under SCHED_FIFO at priority N (the "
        "scenario's realtime_priority and hil-device --realtime-priority; refused without "
        "the privilege, then the normal policy); default 10, 0 = the normal policy",
    )


def sleep_overshoot_ms(n: int = 200, period_s: float = 0.01) -> np.ndarray:
    """How late ``time.sleep(period)`` wakes up, ms (reference)."""
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        time.sleep(period_s)
        out[i] = (time.perf_counter() - t0 - period_s) * 1e3
    return out


def _echo(port_queue: Any, spin: bool, priority: int) -> None:
    """The reference's other end, in its own process (as the device is)."""
    if priority:
        set_realtime_priority(priority)
    ctx = zmq.Context()
    if priority:
        ctx.set(zmq.THREAD_SCHED_POLICY, SCHED_FIFO)
        ctx.set(zmq.THREAD_PRIORITY, priority)
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port_queue.put(router.bind_to_random_port("tcp://127.0.0.1"))
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    while True:
        if poller.poll(0 if spin else 1000):
            frames = router.recv_multipart()
            if frames[-1] == b"stop":
                break
            router.send_multipart(frames)
    router.close()
    ctx.term()


def bare_zmq_rtt_ms(
    n: int = 2000, idle_s: float = 0.0, spin: bool = False, priority: int = 0
) -> np.ndarray:
    """Round trips of a 64-byte frame DEALER -> ROUTER -> DEALER over
    loopback TCP between two processes, ms (reference), back to back or
    ``idle_s`` apart (an idle process pays the wake-up latency of the
    machine, as the gateway's exchanges do: they come once per interval).
    ``spin``: both ends poll without sleeping (what the gateway's and the
    device's spin_ms do), so only ZeroMQ's own I/O threads still wake up.
    ``priority``: both ends' threads under SCHED_FIFO at that priority (the
    ZeroMQ I/O threads included), as with ``realtime_priority``."""
    mp = multiprocessing.get_context("spawn")
    ports = mp.Queue()
    echo = mp.Process(target=_echo, args=(ports, spin, priority), daemon=True)
    echo.start()
    port = ports.get(timeout=60)
    ctx = zmq.Context()
    if priority:
        ctx.set(zmq.THREAD_SCHED_POLICY, SCHED_FIFO)
        ctx.set(zmq.THREAD_PRIORITY, priority)
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    payload = b"x" * 64
    out = np.empty(n)
    before = os.sched_getscheduler(0), os.sched_getparam(0)
    if priority:
        set_realtime_priority(priority)
    try:
        for i in range(n):
            if idle_s:
                time.sleep(idle_s)
            t0 = time.perf_counter()
            dealer.send(payload)
            if spin:
                while not dealer.poll(0):
                    pass
            dealer.recv()
            out[i] = (time.perf_counter() - t0) * 1e3
    finally:
        if priority:
            os.sched_setscheduler(0, before[0], before[1])
        dealer.send(b"stop")
        echo.join(timeout=10)
        if echo.is_alive():
            echo.kill()
        dealer.close()
        ctx.term()
    return out[min(100, n // 10) :]  # connection warm-up


def _pct(values: Any) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    if not len(a):
        return {"n": 0}
    return {
        "n": len(a),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
    }


def _emulator(address: str, log: Path, spin_ms: float, priority: int) -> subprocess.Popen[bytes]:
    dsosim = Path(sys.executable).with_name("dsosim")
    cmd = [str(dsosim)] if dsosim.exists() else [sys.executable, "-m", "dsosim.runner.cli"]
    cmd += ["hil-device", "--connect", address, *(a for d in DEVICES for a in ("--device", d))]
    cmd += ["--spin-ms", f"{spin_ms:g}", "--realtime-priority", str(priority)]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def handle(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not args.seconds > 0:
        print(f"dsosim bench hil: --seconds must be > 0, got {args.seconds:g}", file=sys.stderr)
        return 2
    if out.exists() and not out.is_dir():
        print(f"dsosim bench hil: --out {out}: exists and is not a folder", file=sys.stderr)
        return 2
    step_s, interval_s = 1.0, 300.0
    hours = max(1, round(args.seconds / step_s)) * interval_s / 3600.0
    print("references (same machine, now):", flush=True)
    sleep_ref = _pct(sleep_overshoot_ms())
    zmq_ref = _pct(bare_zmq_rtt_ms())
    zmq_idle = _pct(bare_zmq_rtt_ms(200, idle_s=0.1))
    zmq_idle_spin = _pct(bare_zmq_rtt_ms(200, idle_s=0.1, spin=True))
    prio = args.realtime_priority
    zmq_idle_fifo = _pct(bare_zmq_rtt_ms(200, idle_s=0.1, priority=prio)) if prio else None
    print(
        f"  time.sleep(10 ms) overshoot:   p50 {sleep_ref['p50']:.3f} ms, "
        f"p99 {sleep_ref['p99']:.3f} ms"
    )
    print(
        f"  bare pyzmq round trip:         p50 {zmq_ref['p50']:.3f} ms, p99 {zmq_ref['p99']:.3f} ms"
    )
    print(
        f"  the same, each after 0.1 s idle: p50 {zmq_idle['p50']:.3f} ms, "
        f"p99 {zmq_idle['p99']:.3f} ms"
    )
    print(
        f"  the same, both threads spinning: p50 {zmq_idle_spin['p50']:.3f} ms, "
        f"p99 {zmq_idle_spin['p99']:.3f} ms",
        flush=True,
    )
    if zmq_idle_fifo is not None:
        print(
            f"  the same, both under SCHED_FIFO {prio}: p50 {zmq_idle_fifo['p50']:.3f} ms, "
            f"p99 {zmq_idle_fifo['p99']:.3f} ms",
            flush=True,
        )
    hil_port = free_port()
    address = f"tcp://127.0.0.1:{hil_port}"
    built = build(SCENARIO, out, hours=hours, hil_bind=address)
    if prio or args.gateway_spin_ms is not None:
        spec = json.loads(built.federation.read_text())
        if args.gateway_spin_ms is not None:
            spec["hil"]["spin_ms"] = args.gateway_spin_ms
        spec["hil"]["realtime_priority"] = prio
        built.federation.write_text(json.dumps(spec, indent=2) + "\n")
    gateway_spin = json.loads(built.federation.read_text())["hil"]["spin_ms"]
    time_cfg = built.config.time
    print(
        f"real-time federation: {time_cfg.n_intervals} intervals of {time_cfg.interval_s:g} s, "
        f"one per {time_cfg.step:g} wall s, sub-steps {time_cfg.substep_s:g} s; "
        f"emulator at {address}; spin: gateway {gateway_spin:g} ms, "
        f"device {args.device_spin_ms:g} ms; SCHED_FIFO priority {prio or 'off'}",
        flush=True,
    )
    emulator = _emulator(address, out / "emulator.log", args.device_spin_ms, prio)
    try:
        outcome = launch(built.runner, built.results_dir, timeout_s=args.seconds * 2 + 300)
    finally:
        _stop(emulator)
    if not outcome.ok:
        print(f"bench hil: the federation failed:\n{outcome.failure}", file=sys.stderr)
        return 1
    rt = read_table(built.results_dir, "realtime")
    hil = read_table(built.results_dir, "hil")
    lag = _pct(rt["lag_ms"])
    late = rt["lag_ms"].to_numpy()
    per_federate = {name: _pct(g["lag_ms"]) for name, g in rt.groupby("federate")}
    figures = {
        "wall_s": outcome.wall_s,
        "intervals": time_cfg.n_intervals,
        "substep_s": time_cfg.substep_s,
        "tracking_lag_ms": lag,
        "tracking_abs_ms": _pct(np.abs(late)),
        "within_5ms": float(np.mean(np.abs(late) <= 5.0)),
        "tracking_by_federate": per_federate,
        "rtt_setpoint_ms": _pct(hil["rtt_setpoint_ms"]),
        "rtt_read_ms": _pct(hil["rtt_read_ms"]),
        "device_intervals": len(hil),
        "answered": int((hil["fallback"] == "none").sum()),
        "ref_sleep_overshoot_ms": sleep_ref,
        "ref_bare_zmq_rtt_ms": zmq_ref,
        "ref_bare_zmq_rtt_idle_ms": zmq_idle,
        "ref_bare_zmq_rtt_idle_spin_ms": zmq_idle_spin,
        "ref_bare_zmq_rtt_idle_fifo_ms": zmq_idle_fifo,
        "realtime_priority": prio,
        "gateway_spin_ms": gateway_spin,
        "device_spin_ms": args.device_spin_ms,
        "uptime": _uptime(),
    }
    print(
        f"done: {outcome.wall_s:.1f} s wall; {lag['n']} grants, {figures['device_intervals']} "
        f"device-intervals ({figures['answered']} answered)"
    )
    print("tracking error (wall - simulation time at each grant), ms:")
    print(
        f"  all federates: p50 {lag['p50']:.3f}  p90 {lag['p90']:.3f}  p99 {lag['p99']:.3f}  "
        f"max {lag['max']:.3f}  ({100 * figures['within_5ms']:.2f}% within 5 ms)"
    )
    for name, s in per_federate.items():
        print(f"  {name:14s} p50 {s['p50']:.3f}  p99 {s['p99']:.3f}  max {s['max']:.3f}")
    for key, label in (
        ("rtt_setpoint_ms", "set-point -> measurement"),
        ("rtt_read_ms", "read -> measurement"),
    ):
        s = figures[key]
        print(
            f"gateway round trip, {label}: p50 {s['p50']:.3f} ms  p99 {s['p99']:.3f} ms  "
            f"(bare pyzmq after idle: p99 {zmq_idle['p99']:.3f} ms, "
            f"x{s['p99'] / zmq_idle['p99']:.1f}"
            + (f"; under SCHED_FIFO: p99 {zmq_idle_fifo['p99']:.3f} ms)" if zmq_idle_fifo else ")")
        )
    print(f"load: {figures['uptime']}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0
