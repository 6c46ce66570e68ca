"""Inspect a utility's OpenDSS feeder: what a scenario needs to know about it.

:func:`inspect_feeder` compiles the feeder (through
:class:`~dsosim.federates.dso.feeder.Feeder`, so a missing redirect file, a
compile error or a base case that does not converge raise ``FeederError``
with OpenDSS's message) and reports its buses, phases and voltage bases, its
loads, the substation source, regulators and capacitors with their controls,
the PV systems and storage it already has, whether it is a delta (three-wire)
feeder whose voltages must be read line-to-line, and its base case.

Delta feeders: a feeder is read line-to-line (``voltage_basis = "ll"``) when
the transformer at the source feeds it from a delta winding, or when nearly
all of its load (90 % of the kW or more) is delta-connected. On such a
three-wire system the line-to-ground voltages OpenDSS reports float with the
neutral point and mean nothing to a customer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dsosim.federates.dso.feeder import ExistingDer, Feeder, FeederState, VoltageBasis

DELTA_LOAD_SHARE = 0.9
GENERIC_STEMS = {"master", "main", "run", "circuit", "feeder"}


def feeder_label(master: str | Path) -> str:
    """A name for a feeder: its master file's stem, or its folder's name when
    the stem says nothing (``Master.dss``, ``Run.dss``)."""
    path = Path(master)
    if path.stem.lower() in GENERIC_STEMS and path.parent.name:
        return path.parent.name
    return path.stem


@dataclass(frozen=True)
class BusInfo:
    name: str
    phases: tuple[int, ...]
    kv_ll: float
    """Line-to-line voltage base, kV (0: OpenDSS found none)."""
    load_kw: float


@dataclass(frozen=True)
class Source:
    bus: str
    kv_ll: float
    pu: float
    transformer: str | None
    """The transformer fed from the source bus, if any (the substation)."""
    feeder_side_delta: bool
    others: tuple[str, ...] = ()
    """Buses of the feeder's other sources (ties to other substations,
    equivalents): the head flow and the T-D interface are the sum over all."""


@dataclass(frozen=True)
class Regulator:
    name: str
    transformer: str
    bus: str
    """Bus of the regulated winding."""
    vreg: float
    band: float


@dataclass(frozen=True)
class CapacitorInfo:
    name: str
    bus: str
    kvar: float
    control: str | None
    """Its CapControl, if any."""


@dataclass(frozen=True)
class BaseCase:
    converged: bool
    vmin_pu: float
    vmax_pu: float
    head_mw: float
    losses_mw: float
    n_below: int
    n_above: int
    max_loading: float
    n_overloaded: int


@dataclass(frozen=True)
class OwnShapes:
    """The feeder's own load shapes (loads with a daily, yearly or duty shape)."""

    n_loads: int
    kw_share: float
    """Share of the compiled load kW on loads with a shape."""
    longest_h: float
    """The longest shape's span, hours (24 for daily shapes)."""
    day_peak: float
    """Largest 5-minute mean of the first day's total load, per unit of the
    compiled load (loads without a shape at their compiled kW)."""

    @property
    def daily(self) -> bool:
        return self.longest_h <= 24.0 + 1e-9


@dataclass(frozen=True)
class FeederReport:
    master: Path
    circuit: str
    buses: tuple[BusInfo, ...]
    n_nodes: int
    voltage_bases_kv: tuple[float, ...]
    n_loads: int
    load_kw: float
    load_kvar: float
    delta_load_share: float
    """Share of the load kW that is delta-connected."""
    source: Source
    regulators: tuple[Regulator, ...]
    capacitors: tuple[CapacitorInfo, ...]
    n_transformers: int
    n_lines: int
    existing_ders: tuple[ExistingDer, ...]
    voltage_basis: VoltageBasis
    voltage_basis_reason: str
    base_case: BaseCase
    own_shapes: OwnShapes | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def load_buses(self) -> tuple[str, ...]:
        """Buses with load, sorted by name."""
        return tuple(sorted(b.name for b in self.buses if b.load_kw > 0.0))

    @property
    def load_mw(self) -> float:
        return self.load_kw / 1000.0

    def summary_lines(self) -> list[str]:
        """A short human-readable account (used in the scenario's header)."""
        bc = self.base_case
        lines = [
            f"circuit {self.circuit}: {len(self.buses)} buses, {self.n_nodes} nodes, "
            f"{self.n_lines} lines, {self.n_transformers} transformers",
            "voltage bases (kV, line-to-line): "
            + ", ".join(f"{v:g}" for v in self.voltage_bases_kv),
            f"source: bus {self.source.bus}, {self.source.kv_ll:g} kV, {self.source.pu:g} pu"
            + (
                f", transformer {self.source.transformer} at the source"
                + (" (delta on the feeder side)" if self.source.feeder_side_delta else "")
                if self.source.transformer
                else ""
            )
            + (
                f"; {len(self.source.others)} more source(s) at "
                f"{', '.join(self.source.others[:5])} (the head flow is the sum of all)"
                if self.source.others
                else ""
            ),
            f"loads: {self.n_loads} at {len(self.load_buses)} buses, "
            f"{self.load_kw:,.0f} kW / {self.load_kvar:,.0f} kvar, "
            f"{100 * self.delta_load_share:.0f} % of the kW delta-connected",
            "regulators: "
            + (
                ", ".join(
                    f"{r.name} (at {r.bus}, vreg {r.vreg:g}, band {r.band:g})"
                    for r in self.regulators
                )
                or "none"
            ),
            "capacitors: "
            + (
                ", ".join(
                    f"{c.name} ({c.kvar:g} kvar at {c.bus}"
                    + (f", control {c.control})" if c.control else ", fixed)")
                    for c in self.capacitors
                )
                or "none"
            ),
            "own DERs: "
            + (
                ", ".join(
                    f"{d.element} ({d.kw:g} kW"
                    + (f", {d.kwh:g} kWh" if d.kind == "storage" else "")
                    + f" at {d.bus})"
                    for d in self.existing_ders
                )
                or "none"
            ),
            f"voltages read {'line-to-line' if self.voltage_basis == 'll' else 'line-to-neutral'}: "
            f"{self.voltage_basis_reason}",
            f"base case ({'converged' if bc.converged else 'NOT converged'}): "
            f"V {bc.vmin_pu:.3f}-{bc.vmax_pu:.3f} pu, head {bc.head_mw:.3f} MW, "
            f"losses {bc.losses_mw:.3f} MW, max loading {bc.max_loading:.2f}",
        ]
        return lines


def inspect_feeder(
    master: str | Path,
    *,
    voltage_basis: VoltageBasis | None = None,
    vmin: float = 0.95,
    vmax: float = 1.05,
) -> FeederReport:
    """Compile and describe a feeder. ``voltage_basis`` forces the basis;
    by default it is chosen as the module doc explains.

    Raises ``FeederError`` (missing file or redirect, compile error, base case
    that does not converge)."""
    name = feeder_label(master)
    feeder = Feeder(Path(master), name=name, vmin=vmin, vmax=vmax)
    dss = feeder.engine
    source = _source(dss)
    loads, load_kvar, delta_kw = _loads(dss)
    load_kw = sum(loads.values())
    delta_share = delta_kw / load_kw if load_kw > 0 else 0.0
    if voltage_basis is None:
        voltage_basis, reason = _choose_basis(source, delta_share)
    else:
        reason = "as asked"
    if voltage_basis == "ll":
        feeder = Feeder(Path(master), name=name, vmin=vmin, vmax=vmax, voltage_basis="ll")
        dss = feeder.engine
    buses = tuple(
        BusInfo(
            name=b,
            phases=feeder.bus_phases(b),
            kv_ll=round(feeder.bus_kv_base(b) * math.sqrt(3.0), 4),
            load_kw=round(loads.get(b.lower(), 0.0), 3),
        )
        for b in feeder.buses
    )
    bases = tuple(sorted({b.kv_ll for b in buses if b.kv_ll > 0}, reverse=True))
    state = feeder.solve()
    base = _base_case(state)
    report = FeederReport(
        master=feeder.master,
        circuit=dss.Circuit.Name(),
        buses=buses,
        n_nodes=len(dss.Circuit.AllNodeNames()),
        voltage_bases_kv=tuple(round(v, 3) for v in bases),
        n_loads=len(feeder.loads),
        load_kw=load_kw,
        load_kvar=load_kvar,
        delta_load_share=delta_share,
        source=source,
        regulators=_regulators(dss),
        capacitors=_capacitors(dss),
        n_transformers=dss.Transformers.Count(),
        n_lines=dss.Lines.Count(),
        existing_ders=feeder.existing_ders,
        voltage_basis=voltage_basis,
        voltage_basis_reason=reason,
        base_case=base,
        own_shapes=_own_shapes(feeder),
    )
    return _with_warnings(report, vmin, vmax, feeder.notes)


def _own_shapes(feeder: Feeder) -> OwnShapes | None:
    """What the feeder's own load shapes are, if its loads have any."""
    mult, has = feeder.load_shapes(np.arange(288) * 300.0, 300.0)
    if not has.any():
        return None
    kw = np.array([ld.kw for ld in feeder.loads])
    total = float(kw.sum())
    dss = feeder.engine
    longest = 0.0
    for load, shaped in zip(feeder.loads, has, strict=True):
        if not shaped:
            continue
        dss.Loads.Name(load.name)
        name = next(n for n in (dss.Loads.Daily(), dss.Loads.Yearly(), dss.Loads.Duty()) if n)
        dss.LoadShape.Name(name)
        step = dss.LoadShape.HrInterval()
        hours = step * dss.LoadShape.Npts() if step > 0 else max(dss.LoadShape.TimeArray())
        longest = max(longest, float(hours))
    return OwnShapes(
        n_loads=int(has.sum()),
        kw_share=float(kw[has].sum() / total) if total > 0 else 0.0,
        longest_h=longest,
        day_peak=float((mult @ kw).max() / total) if total > 0 else 0.0,
    )


def _choose_basis(source: Source, delta_share: float) -> tuple[VoltageBasis, str]:
    if source.feeder_side_delta:
        return "ll", (
            f"the substation transformer {source.transformer} feeds the feeder "
            "from a delta winding (three-wire feeder)"
        )
    if delta_share >= DELTA_LOAD_SHARE:
        return "ll", f"{100 * delta_share:.0f} % of the load is delta-connected"
    return "ln", "the feeder has a grounded neutral (wye source side)"


def _source(dss: Any) -> Source:
    dss.Vsources.First()
    name = dss.Vsources.Name()
    dss.Circuit.SetActiveElement(f"Vsource.{name}")
    bus = dss.CktElement.BusNames()[0].split(".")[0]
    kv, pu = dss.Vsources.BasekV(), dss.Vsources.PU()
    transformer, delta = None, False
    if dss.Transformers.Count():
        dss.Transformers.First()
        while True:
            dss.Circuit.SetActiveElement(f"Transformer.{dss.Transformers.Name()}")
            roots = [b.split(".")[0].lower() for b in dss.CktElement.BusNames()]
            if bus.lower() in roots and len(roots) >= 2:
                transformer = dss.Transformers.Name()
                far = next(w for w, r in enumerate(roots, start=1) if r != bus.lower())
                dss.Transformers.Wdg(far)
                delta = bool(dss.Transformers.IsDelta())
                break
            if not dss.Transformers.Next():
                break
    others = []
    i = dss.Vsources.First()
    while i:
        dss.Circuit.SetActiveElement(f"Vsource.{dss.Vsources.Name()}")
        other = dss.CktElement.BusNames()[0].split(".")[0]
        if dss.Vsources.Name() != name:
            others.append(other)
        i = dss.Vsources.Next()
    return Source(
        bus=bus,
        kv_ll=kv,
        pu=pu,
        transformer=transformer,
        feeder_side_delta=delta,
        others=tuple(others),
    )


def _loads(dss: Any) -> tuple[dict[str, float], float, float]:
    """kW per bus (lower-case names), total kvar, delta-connected kW."""
    per_bus: dict[str, float] = {}
    kvar = delta = 0.0
    i = dss.Loads.First()
    while i:
        bus = dss.CktElement.BusNames()[0].split(".")[0].lower()
        kw = dss.Loads.kW()
        per_bus[bus] = per_bus.get(bus, 0.0) + kw
        kvar += dss.Loads.kvar()
        if dss.Loads.IsDelta():
            delta += kw
        i = dss.Loads.Next()
    return per_bus, kvar, delta


def _regulators(dss: Any) -> tuple[Regulator, ...]:
    found = []
    i = dss.RegControls.First()
    while i:
        name, xf = dss.RegControls.Name(), dss.RegControls.Transformer()
        winding = dss.RegControls.Winding()
        vreg, band = dss.RegControls.ForwardVreg(), dss.RegControls.ForwardBand()
        dss.Circuit.SetActiveElement(f"Transformer.{xf}")
        names = dss.CktElement.BusNames()
        bus = names[winding - 1].split(".")[0] if 1 <= winding <= len(names) else "?"
        found.append(Regulator(name, xf, bus, vreg, band))
        i = dss.RegControls.Next()
    return tuple(found)


def _capacitors(dss: Any) -> tuple[CapacitorInfo, ...]:
    controls: dict[str, str] = {}
    i = dss.CapControls.First()
    while i:
        controls[dss.CapControls.Capacitor().lower()] = dss.CapControls.Name()
        i = dss.CapControls.Next()
    found = []
    i = dss.Capacitors.First()
    while i:
        name = dss.Capacitors.Name()
        bus = dss.CktElement.BusNames()[0].split(".")[0]
        found.append(CapacitorInfo(name, bus, dss.Capacitors.kvar(), controls.get(name.lower())))
        i = dss.Capacitors.Next()
    return tuple(found)


def _base_case(state: FeederState) -> BaseCase:
    watched = state.v_pu[state.monitored]
    return BaseCase(
        converged=state.converged,
        vmin_pu=float(watched.min()) if watched.size else math.nan,
        vmax_pu=float(watched.max()) if watched.size else math.nan,
        head_mw=state.substation_p_mw,
        losses_mw=state.losses_mw,
        n_below=int(np.count_nonzero(watched < state.vmin)),
        n_above=int(np.count_nonzero(watched > state.vmax)),
        max_loading=float(state.loading.max()) if state.loading.size else 0.0,
        n_overloaded=int(state.n_thermal_violations),
    )


def _with_warnings(
    report: FeederReport, vmin: float, vmax: float, handled: Sequence[str] = ()
) -> FeederReport:
    notes: list[str] = list(handled)
    bc = report.base_case
    if bc.n_below or bc.n_above:
        notes.append(
            f"the base case already has {bc.n_below} node(s) below {vmin} pu and "
            f"{bc.n_above} above {vmax} pu (V {bc.vmin_pu:.3f}-{bc.vmax_pu:.3f}): limits "
            "that exclude it make the DSO's market try to fix it with DERs at any price"
        )
    if bc.n_overloaded:
        notes.append(
            f"the base case already has {bc.n_overloaded} branch(es) above their normal "
            f"rating (max loading {bc.max_loading:.2f})"
        )
    no_base = [b.name for b in report.buses if b.kv_ll <= 0]
    if no_base:
        notes.append(
            f"{len(no_base)} bus(es) have no voltage base and are not monitored "
            f"(e.g. {', '.join(no_base[:5])}); add their kV to 'Set VoltageBases'"
        )
    if report.load_kw <= 0:
        notes.append("the feeder has no load: DER fleets cannot be placed by load shares")
    own = [d for d in report.existing_ders if d.enabled and d.kind in ("pv", "storage")]
    if own:
        notes.append(
            f"{len(own)} PV system(s)/storage element(s) of the feeder's own: hand "
            "them to an aggregator (existing_ders_to), or they stay at their snapshot "
            "output all day"
        )
    shapes = report.own_shapes
    if shapes is not None:
        notes.append(
            f"{shapes.n_loads} load(s) ({100 * shapes.kw_share:.0f} % of the kW) have load "
            f"shapes of their own ({shapes.longest_h:g} h"
            + (
                '): the scenario follows them (load_profile = "feeder")'
                if shapes.daily
                else '): load_profile = "feeder" would follow them from January 1; '
                "the scenario uses the residential profile"
            )
        )
    gens = [d for d in report.existing_ders if d.enabled and d.kind == "generator"]
    if gens:
        notes.append(
            f"{len(gens)} generator(s) stay in the feeder at their fixed output "
            f"({', '.join(d.element for d in gens[:5])})"
        )
    return FeederReport(**{**report.__dict__, "warnings": tuple(notes)})
