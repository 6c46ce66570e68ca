"""HIL gateway federate: lab hardware (or the emulator) stands in for DERs of
aggregators' fleets (docs/hil.md).

Before its first grant (so the whole federation waits) it binds its ZeroMQ
socket and waits up to ``wait_s`` for every configured device to say HELLO. Then per interval k
(see ``common.schedule``):

* ACTUATE: reads each hardware aggregator's ``HilSetpoints``, sends every
  device its SETPOINT (scaled to the hardware) and waits for the answers
  (the round trip);
* READBACK (one settle period later): READs every device; the answers, or the
  fallback (``loop``), go back to the aggregators as ``HilReadings``;
* records the ``hil`` table (per device: status, fallback, set-point, measured
  power and SOC, round trips) and ``hil_gateway`` (per interval: sessions and
  refused frames).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dsosim.federates.common import messages as msg
from dsosim.federates.common.config import FederationConfig, HilConfig
from dsosim.federates.common.log import federate_log
from dsosim.federates.common.schedule import Phase, at
from dsosim.federates.common.shell import FederateShell, expect, federate_main
from dsosim.federates.hil.gateway import COUNTERS, DeviceInfo, Gateway, GatewaySettings
from dsosim.federates.hil.loop import HIL_COLUMNS, Bounds, DeviceStep, HardwareLoop
from dsosim.federates.hil.protocol import Setpoint
from dsosim.federates.hil.replay import ANSWER_COLUMNS, ReplayGateway, answer_rows

GATEWAY_COLUMNS = ("interval", "connected", *COUNTERS, "read_wall_s")


def make_gateway(config: FederationConfig, base: Path) -> Gateway:
    """The gateway role for this federation (not started)."""
    hil = config.hil
    assert hil is not None

    def path(p: str | None) -> Path | None:
        return None if p is None else (base / p).resolve()

    settings = GatewaySettings(
        bind=hil.bind,
        timeout_ms=hil.timeout_ms,
        heartbeat_s=hil.heartbeat_s,
        time_scale=config.time.time_scale,
        step_s=config.time.step,
        curve_secret_key=path(hil.curve_secret_key),
        curve_authorized_dir=path(hil.curve_authorized_dir),
        allow_unauthenticated=hil.allow_unauthenticated,
        spin_ms=hil.spin_ms,
        realtime_priority=hil.realtime_priority,
        origin=config.time.start.isoformat(timespec="seconds"),
    )
    devices = [
        DeviceInfo(
            d.id,
            d.kind,
            d.rated_kw,
            None if d.sim_capacity_kwh is None else d.sim_capacity_kwh * d.scale,
            d.soc_min,
            d.soc_max,
            d.efficiency,
        )
        for d in hil.devices
    ]
    return Gateway(settings, devices)


def wait_for_devices(gateway: Gateway, hil: HilConfig, name: str) -> None:
    ids = sorted(d.id for d in hil.devices)
    if hil.wait_s <= 0:
        return
    log = federate_log(name)
    log.info(
        f"waiting up to {hil.wait_s:g} s for devices {', '.join(ids)} at {gateway.endpoint} "
        f"(e.g. dsosim hil-device --connect {gateway.endpoint} "
        f"{' '.join('--device ' + i for i in ids)})"
    )
    deadline = time.monotonic() + hil.wait_s
    while time.monotonic() < deadline:
        if set(ids) <= set(gateway.connected()):
            log.info("all devices connected")
            return
        time.sleep(0.05)
    missing = sorted(set(ids) - set(gateway.connected()))
    log.info(f"starting without {missing}: they get the fallback until they connect")


def run(shell: FederateShell, config: FederationConfig, gateway: Gateway | ReplayGateway) -> None:
    hil = config.hil
    assert hil is not None
    loop = HardwareLoop(hil, config.time.interval_s, config.time.time_scale)
    t0 = time.monotonic()
    owners = sorted({d.aggregator for d in hil.devices})
    last_status: dict[str, str] = {}
    for k in range(config.time.n_intervals):
        shell.advance(at(k, Phase.ACTUATE, config.time))
        got = expect(shell.receive(allowed_senders=owners), msg.HilSetpoints, k, owners)
        wanted: dict[str, tuple[float, float]] = {}
        bounds: dict[str, Bounds] = {}
        for owner, m in got.items():
            assert isinstance(m, msg.HilSetpoints)
            mine = {d.id for d in hil.devices if d.aggregator == owner}
            if set(m.setpoints_mw) != mine:
                raise msg.MessageError(
                    owner,
                    "hil_setpoints.setpoints_mw",
                    f"names {sorted(m.setpoints_mw)}; its hardware is {sorted(mine)}",
                )
            for device, mw in m.setpoints_mw.items():
                wanted[device] = (loop.device_kw(device, mw), m.prices[device])
                bounds[device] = Bounds(m.lo_mw[device], m.hi_mw[device])
                gateway.set_soc(device, m.soc.get(device))
        seq = k + 1
        t_s = k * config.time.interval_s
        sent = gateway.setpoints(
            [
                Setpoint(
                    d,
                    seq,
                    k,
                    t_s,
                    config.time.interval_s,
                    kw,
                    price,
                    loop.device_kw(d, bounds[d].lo_mw) + 0.0,
                    loop.device_kw(d, bounds[d].hi_mw) + 0.0,
                )
                for d, (kw, price) in sorted(wanted.items())
            ]
        )

        shell.advance(at(k, Phase.READBACK, config.time))
        read = gateway.read([(d, seq) for d in sorted(wanted)])
        # when the devices were read (a replay: when they were read in the run)
        read_wall_s = (
            gateway.read_wall_s()
            if isinstance(gateway, ReplayGateway)
            else round(time.monotonic() - t0, 6)
        )
        shell.record(
            k,
            "hil_answers",
            ANSWER_COLUMNS,
            answer_rows(k, "setpoint", seq, sent) + answer_rows(k, "read", seq, read),
        )
        steps = {
            d: loop.resolve(d, k, wanted[d][0], bounds[d], sent[d], read[d], read_wall_s)
            for d in sorted(wanted)
        }
        for owner in owners:
            _send_readings(
                shell,
                owner,
                k,
                [s for d, s in steps.items() if loop.devices[d].aggregator == owner],
            )
        _report_changes(shell.name, k, steps, last_status)
        counters = gateway.take_counters()
        shell.record(k, "hil", HIL_COLUMNS, loop.rows(k, steps))
        shell.record(
            k,
            "hil_gateway",
            GATEWAY_COLUMNS,
            [
                (
                    k,
                    len(gateway.connected()),
                    *(counters.get(c, 0) for c in COUNTERS),
                    read_wall_s,
                )
            ],
        )
        shell.end_interval(k)


def _send_readings(shell: FederateShell, owner: str, k: int, steps: list[DeviceStep]) -> None:
    shell.send(
        owner,
        msg.HilReadings(
            shell.name,
            k,
            {s.device: s.used_mw for s in steps if s.used_mw is not None},
            {s.device: s.used_soc for s in steps if s.used_soc is not None},
            tuple(s.device for s in steps if s.unavailable),
        ),
    )


def _report_changes(name: str, k: int, steps: dict[str, DeviceStep], last: dict[str, str]) -> None:
    """One log line whenever a device's state changes (not every interval)."""
    for device, s in steps.items():
        state = s.status if s.fallback == "none" else f"{s.status}, fallback {s.fallback}"
        if s.reason and s.status == "implausible":
            state += f" ({s.reason})"
        if last.get(device) != state:
            federate_log(name).info(f"interval {k}: {device} {state}")
            last[device] = state


def body(shell: FederateShell, config: FederationConfig, name: str, base: Path) -> None:
    """Bind, wait for the devices (before the first grant: the whole federation
    waits), run, and always close the sockets."""
    if config.hil is None or config.hil.name != name:
        raise ValueError(f"the federation has no HIL gateway named {name!r}")
    if config.hil.replay is not None:
        replay = ReplayGateway(
            (base / config.hil.replay).resolve(), [d.id for d in config.hil.devices]
        )
        federate_log(name).info(f"replaying the device answers recorded in {config.hil.replay}")
        run(shell, config, replay)
        return
    gateway = make_gateway(config, base)
    try:
        for d in config.hil.devices:
            gateway.set_soc(d.id, d.soc_init)
        gateway.start()
        wait_for_devices(gateway, config.hil, name)
        run(shell, config, gateway)
    finally:
        gateway.close()


def main(argv: list[str] | None = None) -> int:
    return federate_main("hil", body, argv)


if __name__ == "__main__":
    sys.exit(main())
