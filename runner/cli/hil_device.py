"""``dsosim hil-device --connect ADDRESS --device ID [...]``: the HIL device emulator.

Emulated batteries and PV inverters that connect to a HIL gateway and follow
its set-points (``docs/hil.md``, "Device emulator").
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import zmq

from dsosim.federates.hil.emulator import (
    DeviceRejected,
    DeviceSpec,
    Emulator,
    EmulatorOptions,
    Faults,
    ModelOptions,
    check_address,
    load_curve_keys,
    parse_device,
)

PROG = "dsosim hil-device"


def _non_negative(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not x >= 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return x


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {n}")
        return n

    return parse


def _device(text: str) -> DeviceSpec:
    try:
        return parse_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


DESCRIPTION = (
    "Emulated batteries and PV inverters for a hardware-in-the-loop federation: "
    "each --device connects to the gateway, is configured by its WELCOME and "
    "answers its set-points with measurements (docs/hil.md)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--connect",
        required=True,
        metavar="ADDRESS",
        help="the gateway's address, e.g. tcp://127.0.0.1:5570",
    )
    p.add_argument(
        "--device",
        required=True,
        action="append",
        type=_device,
        metavar="ID[:KIND]",
        help="a device id from the scenario's [[hil.devices]]; repeat for several "
        "(one connection each). ':battery' or ':pv' also sends the kind in HELLO",
    )
    g = p.add_argument_group("device behaviour")
    g.add_argument(
        "--ramp-s",
        type=_non_negative,
        default=0.2,
        metavar="S",
        help="wall seconds to ramp from 0 to rated power (default 0.2; 0 = no limit)",
    )
    g.add_argument(
        "--delay-ms",
        type=_non_negative,
        default=20.0,
        metavar="MS",
        help="wall ms before a new set-point starts to act (default 20)",
    )
    g.add_argument(
        "--efficiency",
        type=float,
        default=0.9,
        metavar="F",
        help="battery round-trip efficiency, (0, 1] (default 0.9; a v2 WELCOME sets it)",
    )
    g.add_argument(
        "--soc-min",
        type=float,
        default=0.05,
        metavar="F",
        help="battery discharging stops here (default 0.05; a v2 WELCOME sets it)",
    )
    g.add_argument(
        "--soc-max",
        type=float,
        default=0.95,
        metavar="F",
        help="battery charging stops here (default 0.95; a v2 WELCOME sets it)",
    )
    p.add_argument(
        "--protocol",
        type=int,
        choices=(1, 2),
        default=2,
        help="protocol version to speak (1: stand in for an old device; default 2)",
    )
    p.add_argument(
        "--realtime-priority",
        type=int,
        default=0,
        choices=range(100),
        metavar="N",
        help="1-99: answer under the real-time policy SCHED_FIFO at priority N (needs the "
        "privilege); default 0: the normal policy",
    )
    p.add_argument(
        "--spin-ms",
        type=_non_negative,
        default=0.0,
        metavar="MS",
        help="poll without sleeping from MS before each expected request until it comes "
        "(learned from the last interval; default 0: sleep until asked)",
    )
    f = p.add_argument_group("fault injection")
    f.add_argument(
        "--late-ms",
        type=_non_negative,
        default=0.0,
        metavar="MS",
        help="send every measurement MS late",
    )
    f.add_argument(
        "--silent-after",
        type=_count(0),
        metavar="N",
        help="answer the first N set-points, then nothing (heartbeats go on)",
    )
    f.add_argument(
        "--garbage-every",
        type=_count(1),
        metavar="N",
        help="every Nth answer is a garbage frame instead of a measurement",
    )
    f.add_argument(
        "--power-factor",
        type=float,
        default=1.0,
        metavar="F",
        help="report the power times F (1000: firmware reporting W as kW; 1.5: a bad meter)",
    )
    f.add_argument(
        "--report-kw",
        type=float,
        metavar="KW",
        help="report this power whatever the device does (1e8; a PV at night reporting -12100)",
    )
    f.add_argument(
        "--soc-offset",
        type=float,
        default=0.0,
        metavar="D",
        help="report the state of charge plus D (a jump; beyond 0..1 if D takes it there)",
    )
    f.add_argument(
        "--faults-after",
        type=_count(0),
        default=0,
        metavar="N",
        help="the three faults above start with set-point N+1 (default: from the first)",
    )
    s = p.add_argument_group("security (CURVE)")
    s.add_argument(
        "--curve-server-key",
        metavar="FILE",
        help="the gateway's public certificate (gateway.key from dsosim hil-keys)",
    )
    s.add_argument(
        "--curve-key", metavar="FILE", help="this machine's secret certificate (NAME.key_secret)"
    )
    p.add_argument(
        "--duration",
        type=_non_negative,
        metavar="S",
        help="stop after S wall seconds (default: until Ctrl-C or SIGTERM)",
    )
    p.add_argument(
        "--log",
        metavar="FILE",
        help="write a CSV row per answer: wall_s, device, seq, answer, setpoint_kw, "
        "p_kw, soc, status",
    )


def _options(args: argparse.Namespace) -> EmulatorOptions:
    """Raises ValueError naming the option that is wrong."""
    if (args.curve_server_key is None) != (args.curve_key is None):
        raise ValueError("--curve-server-key and --curve-key go together (CURVE needs both)")
    curve = None
    if args.curve_server_key is not None:
        curve = load_curve_keys(args.curve_server_key, args.curve_key)
    try:
        model = ModelOptions(
            ramp_s=args.ramp_s,
            delay_ms=args.delay_ms,
            efficiency=args.efficiency,
            soc_min=args.soc_min,
            soc_max=args.soc_max,
        )
    except ValueError as exc:
        raise ValueError(f"--efficiency, --soc-min, --soc-max: {exc}") from None
    faults = Faults(
        late_ms=args.late_ms,
        silent_after=args.silent_after,
        garbage_every=args.garbage_every,
        power_factor=args.power_factor,
        report_kw=args.report_kw,
        soc_offset=args.soc_offset,
        faults_after=args.faults_after,
    )
    log = Path(args.log) if args.log else None
    if log is not None and not log.parent.is_dir():
        raise ValueError(f"--log {args.log!r}: folder {str(log.parent)!r} does not exist")
    return EmulatorOptions(
        model=model,
        faults=faults,
        curve=curve,
        log_path=log,
        protocol=args.protocol,
        spin_ms=args.spin_ms,
        realtime_priority=args.realtime_priority,
    )


def handle(args: argparse.Namespace) -> int:
    try:
        address = check_address(args.connect)
        options = _options(args)
        ids = [d.device for d in args.device]
        if len(set(ids)) != len(ids):
            raise ValueError(f"--device given twice for the same id: {ids}")
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    restore = _stop_on_signals(stop)
    try:
        with Emulator(address, args.device, options) as emulator:
            names = ", ".join(ids)
            print(
                f"{PROG}: {names} -> {address}" + (" (CURVE)" if options.curve else ""),
                file=sys.stderr,
                flush=True,
            )
            emulator.run(duration_s=args.duration, stop=stop)
    except DeviceRejected as exc:
        print(f"{PROG}: {exc}; stopping", file=sys.stderr)
        return 1
    except (OSError, zmq.ZMQError) as exc:  # the log file; connecting
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    finally:
        restore()
    return 0


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """Ctrl-C and SIGTERM set ``stop`` (the loop then closes its sockets and
    returns); gives back a function that puts the old handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    return restore
