"""What one interval of hardware in the loop means for the simulation, per
device: scaling between the simulated DER and the hardware, the plausibility
check of what the device says, and the fallback when there is no usable
answer (plain Python, no sockets, no HELICS).

Per device and interval the gateway has two exchanges (``gateway.Exchange``):
the set-point (answered at once: the round trip) and the read-back one settle
period later, whose measurement is the DER's output. Then:

* read-back answered and plausible (``plausibility``): the measured power
  (scaled back to the simulated DER) and state of charge are the DER's output
  and state (``fallback = none``), clipped to what the simulated DER can do
  (within the tolerances that clip is measurement noise), whatever the
  device's own status says (``device_status``);
* answered but implausible (``status = implausible``, every failed check in
  ``reason``): the scenario's ``implausible`` policy applies:

  - ``clip``: the reading clipped to the physical bound is used
    (``fallback = clip``);
  - ``missing``: the reading is discarded and the fallback below applies;

* no answer (``timeout``) or no session (``disconnected``): the scenario's
  fallback applies and is flagged:

  - ``hold``: the last used power stands for this interval, clipped to what
    the simulated DER can do now, and the simulated storage integrates it
    (before any measurement, the simulated DER runs as modelled);
  - ``unavailable``: the DER delivers nothing this interval and offers
    nothing until the device answers again.

Whatever the device sends, ``used_mw`` is finite and inside the simulated
DER's range for the interval. Recovery needs no action: the next usable
read-back ends the fallback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from dsosim.federates.common.config import HilConfig, HilDeviceConfig
from dsosim.federates.hil.gateway import Exchange
from dsosim.federates.hil.plausibility import Accepted, Envelope, Tolerances, check
from dsosim.federates.hil.protocol import Measurement

HIL_COLUMNS = (
    "interval",
    "device",
    "aggregator",
    "status",
    "reason",
    "device_status",
    "fallback",
    "setpoint_kw",
    "measured_kw",
    "soc",
    "used_mw",
    "used_soc",
    "lo_mw",
    "hi_mw",
    "rtt_setpoint_ms",
    "rtt_read_ms",
    "protocol",
)


@dataclass(frozen=True, slots=True)
class Bounds:
    """What the simulated DER can do this interval (from its fleet), MW."""

    lo_mw: float
    hi_mw: float


@dataclass(frozen=True, slots=True)
class DeviceStep:
    """One device's interval as the results record it."""

    device: str
    status: str
    """ok, or what went wrong: implausible, or the first failure of the
    interval's exchanges (timeout / disconnected)."""
    reason: str | None
    """Why, in words (None when ok)."""
    device_status: str | None
    fallback: str
    """none, clip, hold or unavailable."""
    setpoint_kw: float
    measured_kw: float | None
    soc: float | None
    """As measured."""
    used_mw: float | None
    """Output fed to the simulation (None: the simulated DER runs as modelled)."""
    used_soc: float | None
    """State of charge fed to the simulation (None: it follows from the output)."""
    rtt_setpoint_ms: float | None
    rtt_read_ms: float | None
    bounds: Bounds
    """What the simulated DER could do this interval."""
    protocol: int | None = None
    """Protocol version of the device's answer (None: no answer)."""

    @property
    def unavailable(self) -> bool:
        return self.fallback == "unavailable"


class HardwareLoop:
    """Scaling, plausibility and fallback for the configured hardware DERs."""

    def __init__(self, hil: HilConfig, interval_s: float, time_scale: float | None = None) -> None:
        """``time_scale``: simulated seconds per wall second (the devices'
        clock, from WELCOME); with it, readings that came further apart on the
        wall clock than their intervals are judged over the time that passed."""
        if hil.fallback not in ("hold", "unavailable"):
            raise ValueError(f"fallback must be 'hold' or 'unavailable', got {hil.fallback!r}")
        if hil.implausible not in ("clip", "missing"):
            raise ValueError(f"implausible must be 'clip' or 'missing', got {hil.implausible!r}")
        self.devices: dict[str, HilDeviceConfig] = {d.id: d for d in hil.devices}
        self.fallback = hil.fallback
        self.implausible = hil.implausible
        self.tolerances = Tolerances(hil.power_tolerance, hil.soc_tolerance)
        self.interval_h = interval_s / 3600.0
        self.time_scale = time_scale
        self._last_mw: dict[str, float] = {}
        self._accepted: dict[str, Accepted] = {}

    def device_kw(self, device: str, sim_mw: float) -> float:
        """A simulated DER's MW as the hardware's kW."""
        return sim_mw * 1000.0 * self.devices[device].scale

    def sim_mw(self, device: str, device_kw: float) -> float:
        """The hardware's kW as the simulated DER's MW."""
        return device_kw / self.devices[device].scale / 1000.0

    def envelope(self, device: str, bounds: Bounds) -> Envelope:
        d = self.devices[device]
        capacity = None if d.sim_capacity_kwh is None else d.sim_capacity_kwh * d.scale
        return Envelope(
            d.kind,
            d.rated_kw,
            self.device_kw(device, bounds.lo_mw) + 0.0,  # no -0 in the reasons
            self.device_kw(device, bounds.hi_mw) + 0.0,
            capacity,
            0.0 if d.soc_min is None else d.soc_min,
            1.0 if d.soc_max is None else d.soc_max,
            1.0 if d.efficiency is None else d.efficiency,
        )

    def resolve(
        self,
        device: str,
        interval: int,
        setpoint_kw: float,
        bounds: Bounds,
        sent: Exchange,
        read: Exchange,
        read_wall_s: float | None = None,
    ) -> DeviceStep:
        """The interval's outcome for one device from its two exchanges
        (``read_wall_s``: when the read round ended, on the gateway's clock)."""
        failure = next((e.status for e in (sent, read) if e.status != "ok"), "ok")
        rtt = (sent.rtt_ms, read.rtt_ms)
        m = read.measurement if read.status == "ok" else None
        if m is None:
            reason = {
                "timeout": "no answer in time",
                "disconnected": "no session",
            }.get(read.status, read.status if failure == "ok" else failure)
            return self._fallback(device, setpoint_kw, bounds, failure, reason, None, rtt)
        previous = self._accepted.get(device)
        elapsed_h = None
        if (
            self.time_scale is not None
            and read_wall_s is not None
            and previous is not None
            and previous.wall_s is not None
        ):
            elapsed_h = (read_wall_s - previous.wall_s) * self.time_scale / 3600.0
        verdict = check(
            self.envelope(device, bounds),
            m.p_kw,
            m.soc,
            interval=interval,
            interval_h=self.interval_h,
            previous=previous,
            tol=self.tolerances,
            setpoint_kw=setpoint_kw,
            elapsed_h=elapsed_h,
        )
        if not verdict.plausible and self.implausible == "missing":
            return self._fallback(
                device, setpoint_kw, bounds, "implausible", verdict.reason, m, rtt
            )
        self._accepted[device] = Accepted(interval, m.p_kw, verdict.soc, setpoint_kw, read_wall_s)
        used = min(max(self.sim_mw(device, verdict.p_kw), bounds.lo_mw), bounds.hi_mw)
        self._last_mw[device] = used
        plausible = verdict.plausible
        return DeviceStep(
            device,
            failure if plausible else "implausible",
            None if plausible else verdict.reason,
            m.status,
            "none" if plausible else "clip",
            setpoint_kw,
            m.p_kw,
            m.soc,
            used,
            verdict.soc,
            *rtt,
            bounds,
            read.version,
        )

    def _fallback(
        self,
        device: str,
        setpoint_kw: float,
        bounds: Bounds,
        status: str,
        reason: str,
        m: Measurement | None,
        rtt: tuple[float | None, float | None],
    ) -> DeviceStep:
        used: float | None
        if self.fallback == "unavailable":
            used = 0.0
        else:
            last = self._last_mw.get(device)
            used = None if last is None else min(max(last, bounds.lo_mw), bounds.hi_mw)
        return DeviceStep(
            device,
            status,
            reason,
            None if m is None else m.status,
            self.fallback,
            setpoint_kw,
            None if m is None else m.p_kw,
            None if m is None else m.soc,
            used,
            None,
            *rtt,
            bounds,
        )

    def rows(self, interval: int, steps: Mapping[str, DeviceStep]) -> list[tuple[object, ...]]:
        """The ``hil`` rows. A missing number is NaN and a missing text "" (not
        None): the recorder fixes a table's column types at its first flush, and
        a column that is all None there would refuse every later value."""
        return [
            (
                interval,
                s.device,
                self.devices[s.device].aggregator,
                s.status,
                s.reason or "",
                s.device_status or "",
                s.fallback,
                s.setpoint_kw,
                nan_for_none(s.measured_kw),
                nan_for_none(s.soc),
                nan_for_none(s.used_mw),
                nan_for_none(s.used_soc),
                s.bounds.lo_mw,
                s.bounds.hi_mw,
                nan_for_none(s.rtt_setpoint_ms),
                nan_for_none(s.rtt_read_ms),
                s.protocol or 0,
            )
            for s in (steps[d] for d in sorted(steps))
        ]


def nan_for_none(x: float | None) -> float:
    return math.nan if x is None else float(x)
