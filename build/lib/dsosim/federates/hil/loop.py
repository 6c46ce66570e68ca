"""What one interval of hardware in the loop means for the simulation, per
device: scaling between the simulated DER and the hardware, and the fallback
when the hardware does not answer (plain Python, no sockets, no HELICS).

Per device and interval the gateway has two exchanges (``gateway.Exchange``):
the set-point (answered at once: the round trip) and the read-back one settle
period later, whose measurement is the DER's output. Then:

* read-back answered: the measured power (scaled back to the simulated DER)
  and state of charge are the DER's output and state (``fallback = none``),
  whatever the device's own status says (``device_status``);
* no answer (``timeout``) or no session (``disconnected``): the scenario's
  fallback applies and is flagged:

  - ``hold``: the last measured power stands for this interval and the
    simulated storage integrates it (before any measurement, the simulated
    DER runs as modelled);
  - ``unavailable``: the DER delivers nothing this interval and offers
    nothing until the device answers again.

Recovery needs no action: the next answered read-back ends the fallback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dsosim.federates.common.config import HilDeviceConfig
from dsosim.federates.hil.gateway import Exchange

HIL_COLUMNS = (
    "interval",
    "device",
    "aggregator",
    "status",
    "device_status",
    "fallback",
    "setpoint_kw",
    "measured_kw",
    "soc",
    "used_mw",
    "rtt_setpoint_ms",
    "rtt_read_ms",
)


@dataclass(frozen=True, slots=True)
class DeviceStep:
    """One device's interval as the results record it."""

    device: str
    status: str
    """ok, or the first failure of the interval: timeout / disconnected."""
    device_status: str | None
    fallback: str
    """none, hold or unavailable."""
    setpoint_kw: float
    measured_kw: float | None
    soc: float | None
    used_mw: float | None
    """Output fed to the simulation (None: the simulated DER runs as modelled)."""
    rtt_setpoint_ms: float | None
    rtt_read_ms: float | None

    @property
    def unavailable(self) -> bool:
        return self.fallback == "unavailable"


class HardwareLoop:
    """Scaling and fallback for the configured hardware DERs."""

    def __init__(self, devices: Sequence[HilDeviceConfig], fallback: str) -> None:
        if fallback not in ("hold", "unavailable"):
            raise ValueError(f"fallback must be 'hold' or 'unavailable', got {fallback!r}")
        self.devices = {d.id: d for d in devices}
        self.fallback = fallback
        self._last_mw: dict[str, float] = {}

    def device_kw(self, device: str, sim_mw: float) -> float:
        """A simulated DER's MW as the hardware's kW."""
        return sim_mw * 1000.0 * self.devices[device].scale

    def sim_mw(self, device: str, device_kw: float) -> float:
        """The hardware's kW as the simulated DER's MW."""
        return device_kw / self.devices[device].scale / 1000.0

    def resolve(
        self, device: str, setpoint_kw: float, sent: Exchange, read: Exchange
    ) -> DeviceStep:
        """The interval's outcome for one device from its two exchanges."""
        failure = next((e.status for e in (sent, read) if e.status != "ok"), "ok")
        m = read.measurement if read.status == "ok" else None
        if m is not None:
            used = self.sim_mw(device, m.p_kw)
            self._last_mw[device] = used
            return DeviceStep(
                device,
                failure,
                m.status,
                "none",
                setpoint_kw,
                m.p_kw,
                m.soc,
                used,
                sent.rtt_ms,
                read.rtt_ms,
            )
        if self.fallback == "unavailable":
            used: float | None = 0.0
        else:
            used = self._last_mw.get(device)
        return DeviceStep(
            device,
            failure,
            None,
            self.fallback,
            setpoint_kw,
            None,
            None,
            used,
            sent.rtt_ms,
            read.rtt_ms,
        )

    def rows(self, interval: int, steps: Mapping[str, DeviceStep]) -> list[tuple[object, ...]]:
        return [
            (
                interval,
                s.device,
                self.devices[s.device].aggregator,
                s.status,
                s.device_status,
                s.fallback,
                s.setpoint_kw,
                s.measured_kw,
                s.soc,
                s.used_mw,
                s.rtt_setpoint_ms,
                s.rtt_read_ms,
            )
            for s in (steps[d] for d in sorted(steps))
        ]
