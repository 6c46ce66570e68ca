"""Is a device's measurement something the device can have done? (plain Python)

Checked before the simulation uses a read-back (``loop``), against what the
simulated DER the device stands for can do in this interval, all at the
device's scale (kW, kWh):

* **power within the rating**: ``|p| <= rated x (1 + power_tolerance)``;
* **PV never consumes**: ``p <= rated x power_tolerance``;
* **PV within its sun**: ``p >= -(available) - rated x power_tolerance``,
  the available power of the simulated PV system this interval;
* **state of charge within 0..1** and within the simulated battery's limits
  widened by ``soc_tolerance``;
* **state of charge consistent with the energy since the last reading**: the
  change from the previous accepted reading must be what the measured power
  can explain. Between two read-backs one interval apart the device was at
  the previous reading's power, still going to the previous set-point (a
  read-back may catch it mid-ramp) and held it until the new set-point, then
  went to this reading's, so the stored energy changed by between
  ``f(p_lo) x T`` and ``f(p_hi) x T`` with ``p_lo, p_hi`` the smallest and
  largest of those four powers (each within the rating), ``T`` the interval
  and ``f(p) = p x sqrt(eta)`` charging,
  ``p / sqrt(eta)`` discharging (the simulated battery's round-trip
  efficiency; self-discharge neglected). After missed readings the envelope
  is the full rating. ``T`` is the intervals between the readings or, when
  they were further apart (or closer) on the wall clock than that, either:
  a federation that falls behind real time leaves the device at its
  set-point longer, and the energy it moved is then the device's, not a
  fault (``elapsed_h``, from the gateway's clock and the time scale; in a
  replay, the recorded times). The change may miss that range by
  ``soc_tolerance`` (of the capacity).

A plausible reading is used clipped to the simulated DER's range for the
interval ``[lo, hi]`` (from its fleet; 0 always inside) and SOC limits: the
simulation takes the read-back as the interval's average, and a battery's
range there is an energy limit (its state of charge), which an instantaneous
reading still ramping from the previous set-point may exceed; the raw value
stays in the ``hil`` table. Beyond them it is implausible, with every failed check named
in the reason, and the scenario's policy applies (``loop``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LATE_FRACTION = 0.05
"""Readings further apart (or closer) on the wall clock than their intervals by
more than this fraction are judged over the time that really passed too."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the simulated device can do this interval, at the device's scale."""

    kind: str
    """``battery`` or ``pv``."""
    rated_kw: float
    lo_kw: float
    """Least net demand possible this interval (<= 0)."""
    hi_kw: float
    """Most net demand possible this interval (>= 0)."""
    capacity_kwh: float | None = None
    soc_min: float = 0.0
    soc_max: float = 1.0
    efficiency: float = 1.0
    """Round trip; the square root is lost each way."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """The last reading the simulation used (plausible or clipped)."""

    interval: int
    p_kw: float
    soc: float | None
    setpoint_kw: float | None = None
    """The set-point of that interval (the device held it until the next)."""
    wall_s: float | None = None
    """When it was read, wall seconds on the gateway's clock (None: unknown)."""


@dataclass(frozen=True, slots=True)
class Tolerances:
    power: float = 0.05
    """Fraction of the rating."""
    soc: float = 0.02
    """Fraction of the capacity."""

    def __post_init__(self) -> None:
        for name in ("power", "soc"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} tolerance must be within 0..1, got {value!r}")


@dataclass(frozen=True, slots=True)
class Verdict:
    problems: tuple[str, ...]
    """Every failed check, in words (empty: plausible)."""
    p_kw: float
    """The power clipped to the simulated range (the physical bound)."""
    soc: float | None
    """The state of charge clipped to the simulated limits and to what the
    power explains (None: none measured, or not a battery)."""

    @property
    def plausible(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str:
        return "; ".join(self.problems)


def check(
    env: Envelope,
    p_kw: float,
    soc: float | None,
    *,
    interval: int,
    interval_h: float,
    previous: Accepted | None,
    tol: Tolerances,
    setpoint_kw: float | None = None,
    elapsed_h: float | None = None,
) -> Verdict:
    """Check one measurement; see the module docstring. ``p_kw`` and ``soc``
    are finite (the protocol refuses anything else). ``elapsed_h``: the
    simulated hours that really passed since ``previous`` was read (wall time
    x the time scale), when known."""
    problems: list[str] = []
    rated, slack = env.rated_kw, tol.power * env.rated_kw
    if abs(p_kw) > rated + slack:
        problems.append(
            f"power {p_kw:.6g} kW beyond the rating {rated:g} kW (+{tol.power:.0%} tolerance)"
        )
    if env.kind == "pv" and p_kw > slack:
        problems.append(f"PV consuming {p_kw:.6g} kW (a PV system only produces)")
    elif env.kind == "pv" and p_kw < env.lo_kw - slack:
        problems.append(
            f"power {p_kw:.6g} kW outside the simulated available power "
            f"[{env.lo_kw:.6g}, {env.hi_kw:.6g}] kW this interval "
            f"(+-{tol.power:.0%} of rating tolerance)"
        )
    p_used = min(max(p_kw, env.lo_kw), env.hi_kw)
    if env.kind != "battery" or soc is None:
        return Verdict(tuple(problems), p_used, None)
    lo_soc, hi_soc = env.soc_min, env.soc_max
    if not 0.0 <= soc <= 1.0:
        problems.append(f"state of charge {soc:.6g} outside 0..1")
    elif not env.soc_min - tol.soc <= soc <= env.soc_max + tol.soc:
        problems.append(
            f"state of charge {soc:.4f} outside the simulated limits "
            f"{env.soc_min:g}..{env.soc_max:g} (+-{tol.soc:g})"
        )
    if previous is not None and previous.soc is not None and env.capacity_kwh:
        p_now = min(max(p_kw, -rated), rated)  # what moved the energy: the device's power
        d_lo, d_hi, powers = _explained(
            env, previous, p_now, setpoint_kw, interval, interval_h, elapsed_h
        )
        change = soc - previous.soc
        if not d_lo - tol.soc <= change <= d_hi + tol.soc:
            problems.append(
                f"state of charge moved {previous.soc:.4f} -> {soc:.4f} ({change:+.4f}) since "
                f"interval {previous.interval}; the power ({powers}) explains "
                f"{d_lo:+.4f}..{d_hi:+.4f} (+-{tol.soc:g})"
            )
        lo_soc = max(lo_soc, min(previous.soc + d_lo, hi_soc))
        hi_soc = min(hi_soc, max(previous.soc + d_hi, lo_soc))
    return Verdict(tuple(problems), p_used, min(max(soc, lo_soc), hi_soc))


def _explained(
    env: Envelope,
    previous: Accepted,
    p_kw: float,
    setpoint_kw: float | None,
    interval: int,
    interval_h: float,
    elapsed_h: float | None = None,
) -> tuple[float, float, str]:
    """The change of state of charge the power can explain since ``previous``,
    over the intervals' time or, when the readings were not those intervals
    apart on the wall clock (a federation running late), over either."""
    assert env.capacity_kwh is not None
    gap = max(interval - previous.interval, 1)
    if gap == 1:
        rated = env.rated_kw
        setpoints = [x for x in (previous.setpoint_kw, setpoint_kw) if x is not None]
        clipped = [min(max(p, -rated), rated) for p in (previous.p_kw, p_kw, *setpoints)]
        p_lo, p_hi = min(clipped), max(clipped)
        powers = f"{previous.p_kw:.4g} -> {p_kw:.4g} kW"
        if setpoints:
            powers += ", set-points " + " -> ".join(f"{x:.4g}" for x in setpoints) + " kW"
    else:  # readings missed in between: anything the rating allows
        p_lo, p_hi = -env.rated_kw, env.rated_kw
        powers = f"any within +-{env.rated_kw:g} kW over {gap} intervals"
    e = math.sqrt(env.efficiency)
    hours = [gap * interval_h]
    if elapsed_h is not None and abs(elapsed_h - hours[0]) > LATE_FRACTION * hours[0]:
        hours.append(max(elapsed_h, 0.0))
        powers += f", {elapsed_h:.4g} h between the readings, not {hours[0]:.4g}"

    def stored(p: float, h: float) -> float:
        return (p * e if p > 0 else p / e) * h / env.capacity_kwh  # type: ignore[operator]

    return (
        min(stored(p_lo, h) for h in hours),
        max(stored(p_hi, h) for h in hours),
        powers,
    )
