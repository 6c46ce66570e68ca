"""The feeder's discrete voltage controls: regulator taps and switched
capacitors, their state, and the voltage margin they call for.

A regulator holds its (line-drop compensated) voltage anywhere inside its
band: from different histories, the same loads and DER outputs leave it at
different taps, all of them valid resting points. Two resting points differ
by at most ``floor(band / step)`` taps (``band`` relative to ``vreg``,
``step`` the tap step; IEEE 13: 2 V on 122 V against 0.625 % gives 2 taps,
1.25 %). A capacitor under a CapControl may likewise be in or out. A market
operator that linearises the feeder at one control state therefore cannot
know the voltages to better than what those moves do: :func:`control_margin_pu`
measures it with power flows (each regulator moved by its taps both ways,
each switched capacitor toggled, at frozen controls; per node the moves add
up) and the market plans that much inside the band on top of the operating
margin.

Fixed capacitors (no CapControl) never switch and call for no margin.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dsosim.federates.dso.feeder import Feeder


@dataclass(frozen=True, slots=True)
class ControlState:
    """Tap (pu) of every regulated winding and step states of every switched
    capacitor, in the engine's order."""

    taps: tuple[tuple[str, int, float], ...]
    """(transformer, winding, tap pu)."""
    capacitors: tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True, slots=True)
class Regulator:
    name: str
    transformer: str
    winding: int
    band_rel: float
    """Band width relative to the set point (``band / vreg``)."""
    step_pu: float
    """One tap step, pu of the winding's rated voltage."""
    taps_apart: int
    """Taps two resting points inside the band can differ by."""


def regulators(feeder: Feeder) -> list[Regulator]:
    """Every RegControl of the feeder with its band and tap step."""
    dss = feeder.engine
    out: list[Regulator] = []
    if not dss.RegControls.Count():
        return out
    dss.RegControls.First()
    while True:
        name, xf, wdg = (
            dss.RegControls.Name(),
            dss.RegControls.Transformer(),
            dss.RegControls.Winding(),
        )
        band, vreg = dss.RegControls.ForwardBand(), dss.RegControls.ForwardVreg()
        dss.Transformers.Name(xf)
        dss.Transformers.Wdg(wdg)
        n_taps = dss.Transformers.NumTaps()
        span = dss.Transformers.MaxTap() - dss.Transformers.MinTap()
        step = span / n_taps if n_taps else math.inf
        rel = band / vreg if vreg > 0 else 0.0
        out.append(Regulator(name, xf, wdg, rel, step, math.floor(rel / step + 1e-9)))
        if not dss.RegControls.Next():
            break
    return out


def switched_capacitors(feeder: Feeder) -> list[str]:
    """Capacitors a CapControl switches."""
    dss = feeder.engine
    out: list[str] = []
    if not dss.CapControls.Count():
        return out
    dss.CapControls.First()
    while True:
        out.append(dss.CapControls.Capacitor())
        if not dss.CapControls.Next():
            break
    return sorted(set(out))


_Controlled = tuple[tuple[int, int], tuple[tuple[str, int], ...], tuple[str, ...]]
_CONTROLLED: weakref.WeakKeyDictionary[Feeder, _Controlled] = weakref.WeakKeyDictionary()


def _controlled(feeder: Feeder) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    """The regulated windings (transformer, winding) and switched capacitors
    of :func:`regulators` and :func:`switched_capacitors`, looked up once per
    feeder (again only if the number of RegControls or CapControls changes):
    the DSO reads the controls several times an interval."""
    dss = feeder.engine
    counts = (dss.RegControls.Count(), dss.CapControls.Count())
    known = _CONTROLLED.get(feeder)
    if known is None or known[0] != counts:
        windings = tuple((r.transformer, r.winding) for r in regulators(feeder))
        known = (counts, windings, tuple(switched_capacitors(feeder)))
        _CONTROLLED[feeder] = known
    return known[1], known[2]


def read(feeder: Feeder) -> ControlState:
    """The controls' present state."""
    dss = feeder.engine
    windings, capacitors = _controlled(feeder)
    taps = []
    for xf, wdg in windings:
        dss.Transformers.Name(xf)
        dss.Transformers.Wdg(wdg)
        taps.append((xf, wdg, float(dss.Transformers.Tap())))
    caps = []
    for c in capacitors:
        dss.Capacitors.Name(c)
        caps.append((c, tuple(int(s) for s in dss.Capacitors.States())))
    return ControlState(tuple(taps), tuple(caps))


def apply(feeder: Feeder, state: ControlState) -> None:
    """Put the controls where ``state`` has them (the next solve starts there)."""
    dss = feeder.engine
    for xf, wdg, tap in state.taps:
        dss.Transformers.Name(xf)
        dss.Transformers.Wdg(wdg)
        dss.Transformers.Tap(tap)
    for cap, states in state.capacitors:
        dss.Capacitors.Name(cap)
        dss.Capacitors.States(list(states))
    feeder.controls_moved()


def control_margin_pu(feeder: Feeder) -> float:
    """Largest voltage change at a monitored node that the controls can make
    between two valid resting points, at the feeder's present operating point
    (see the module doc). 0 for a feeder without regulators or switched
    capacitors. The controls are left as they were."""
    monitored = feeder.monitored
    saved = read(feeder)
    base = feeder.solve(controls=False).v_pu
    total = np.zeros(len(base))
    try:
        for r in regulators(feeder):
            if r.taps_apart == 0:
                continue
            moved = np.zeros(len(base))
            for sign in (1, -1):
                _set_tap(feeder, r, saved, sign * r.taps_apart * r.step_pu)
                moved = np.maximum(moved, np.abs(feeder.solve(controls=False).v_pu - base))
                apply(feeder, saved)
            total += moved
        for cap, states in saved.capacitors:
            dss = feeder.engine
            dss.Capacitors.Name(cap)
            dss.Capacitors.States([1 - s for s in states])
            total += np.abs(feeder.solve(controls=False).v_pu - base)
            apply(feeder, saved)
    finally:
        apply(feeder, saved)
        feeder.solve(controls=False)
    watched = total[monitored]
    return float(watched.max()) if len(watched) else 0.0


def _set_tap(feeder: Feeder, r: Regulator, saved: ControlState, delta: float) -> None:
    dss = feeder.engine
    tap = next(t for xf, w, t in saved.taps if xf == r.transformer and w == r.winding)
    dss.Transformers.Name(r.transformer)
    dss.Transformers.Wdg(r.winding)
    lo, hi = dss.Transformers.MinTap(), dss.Transformers.MaxTap()
    dss.Transformers.Tap(min(max(tap + delta, lo), hi))
