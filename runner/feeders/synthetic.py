"""Synthetic radial distribution feeders of a chosen size, for scale tests.

:func:`generate_feeder` writes an OpenDSS feeder folder laid out the way a
utility delivers one (a master file that ``Redirect``s line codes, lines,
loads and control devices, plus bus coordinates), from a bus count and a
seed. The same arguments always give byte-identical files.

The feeder
----------
* a 115 kV source and a 115/12.47 kV substation transformer whose
  load-tap changer (a ganged ``RegControl``) holds the head near 1.03 pu;
* a random radial tree over ``n_buses`` primary buses: three-phase near the
  substation, single-phase laterals (each on one phase, drawn at random) off
  three-phase buses, so the feeder is unbalanced;
* a spot load on about two buses in three (constant power mostly, some
  constant impedance and constant current), wye-connected line-to-neutral on
  single-phase buses and three-phase elsewhere;
* conductors sized by the current each section carries at peak (the smallest
  of a short catalogue with 25 % margin), as a planner would;
* a three-phase line regulator half-way along the longest path and a
  voltage-controlled switched capacitor, when the feeder has 100 buses or
  more;
* optionally ``n_pv`` PV systems and ``n_storage`` storage elements already
  on the feeder (to exercise the discovery of a utility's existing DERs).

The loads are scaled down (deterministically) until the base case holds
every monitored voltage within 0.955-1.05 pu, so any size yields a feeder
that solves in range at its peak load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KV_PRIMARY = 12.47
KV_LN = KV_PRIMARY / math.sqrt(3.0)
KV_SOURCE = 115.0
MIN_BUSES = 10
MAX_BUSES = 50_000
VMIN_TARGET = 0.955
LATERAL_MAX_BUSES = 12

# (name, phases, r1, x1, r0, x0 in ohm/km, normamps)
_LINECODES_3PH = (
    ("oh3_1/0", 0.61, 0.48, 0.95, 1.55, 230.0),
    ("oh3_4/0", 0.31, 0.45, 0.65, 1.50, 340.0),
    ("oh3_336", 0.19, 0.41, 0.53, 1.45, 530.0),
    ("oh3_795", 0.08, 0.37, 0.42, 1.40, 900.0),
)
_LINECODES_1PH = (
    ("oh1_2", 0.96, 0.52, 1.30, 1.60, 180.0),
    ("oh1_1/0", 0.61, 0.48, 0.95, 1.55, 230.0),
    ("oh1_4/0", 0.31, 0.45, 0.65, 1.50, 340.0),
)
_MARGIN = 1.25


class SyntheticFeederError(ValueError):
    """Arguments out of range, or no load scaling gave a feeder in range."""


@dataclass(frozen=True)
class SyntheticFeeder:
    """What :func:`generate_feeder` wrote."""

    master: Path
    n_buses: int
    """Primary buses of the tree (the source and substation buses excluded)."""
    n_loads: int
    total_kw: float
    load_factor: float
    """The scaling applied to the drawn loads to keep the base case in range."""


@dataclass
class _Tree:
    parent: np.ndarray  # parent index per node, -1 for the head
    phase: np.ndarray  # 0 = three-phase, 1..3 = single phase
    length_km: np.ndarray
    load_kw: np.ndarray
    load_model: np.ndarray
    depth: np.ndarray


def generate_feeder(
    n_buses: int,
    seed: int,
    out_dir: str | Path,
    *,
    n_pv: int = 0,
    n_storage: int = 0,
    crlf: bool = False,
) -> SyntheticFeeder:
    """Write a synthetic feeder of ``n_buses`` primary buses into ``out_dir``.

    ``crlf`` writes Windows line endings (as many utilities' files have).
    Returns where the master file is and what was generated.
    """
    if not MIN_BUSES <= n_buses <= MAX_BUSES:
        raise SyntheticFeederError(f"n_buses must be in [{MIN_BUSES}, {MAX_BUSES}], got {n_buses}")
    if n_pv < 0 or n_storage < 0:
        raise SyntheticFeederError("n_pv and n_storage must be >= 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, n_buses])
    tree = _grow_tree(n_buses, rng)
    names = [f"n{i:05d}" for i in range(n_buses)]
    devices = _device_sites(tree, rng, n_pv, n_storage)

    factor = 1.0
    for _ in range(12):
        _write_files(out, tree, names, factor, devices, crlf)
        vmin = _base_case_vmin(out / "Master.dss")
        if vmin >= VMIN_TARGET:
            break
        factor *= 0.8
    else:
        raise SyntheticFeederError(
            f"no load scaling brought the synthetic feeder within range (vmin {vmin:.3f})"
        )
    loads = tree.load_kw > 0
    return SyntheticFeeder(
        master=out / "Master.dss",
        n_buses=n_buses,
        n_loads=int(np.count_nonzero(loads)),
        total_kw=float(np.round(tree.load_kw * factor, 1)[loads].sum()),
        load_factor=factor,
    )


def _grow_tree(n: int, rng: np.random.Generator) -> _Tree:
    """A random radial tree: new buses mostly extend a recent bus (chains and
    laterals), sometimes branch off anywhere earlier."""
    parent = np.full(n, -1, dtype=np.int64)
    depth = np.zeros(n, dtype=np.int64)
    for i in range(1, n):
        if rng.random() < 0.6:
            p = int(rng.integers(max(0, i - 3), i))
        else:
            p = int(rng.integers(0, i))
        parent[i] = p
        depth[i] = depth[p] + 1
    # Single-phase laterals: a small subtree hanging off a three-phase bus is,
    # with some probability, built on one phase (all of it, as in the field).
    subtree = np.ones(n, dtype=np.int64)
    for i in range(n - 1, 0, -1):
        subtree[parent[i]] += subtree[i]
    phase = np.zeros(n, dtype=np.int64)
    draws = rng.random(n)
    which = rng.integers(1, 4, n)
    for i in range(1, n):
        p = parent[i]
        if phase[p] != 0:
            phase[i] = phase[p]
        elif depth[i] > 2 and subtree[i] <= LATERAL_MAX_BUSES and draws[i] < 0.6:
            phase[i] = which[i]
    length = np.round(rng.uniform(0.05, 0.25, n), 3)
    # Loads: about two buses in three, never at the head; three-phase ones
    # larger. A real feeder's peak does not grow with its bus count (big models
    # spell out the secondaries), so the total is capped at ~10 MW.
    has_load = rng.random(n) < 0.67
    has_load[0] = False
    size = np.where(phase == 0, 3.0, 1.0) * rng.lognormal(0.0, 0.5, n)
    size = np.where(has_load, size, 0.0)
    total_kw = 1000.0 * min(10.0, 0.5 + n / 150.0)
    load_kw = np.round(size * total_kw / max(size.sum(), 1e-9), 1)
    model = rng.choice([1, 1, 1, 1, 1, 1, 1, 1, 2, 5], size=n)
    return _Tree(parent, phase, length, load_kw, model, depth)


@dataclass(frozen=True)
class _Devices:
    regulator: int | None
    """Node whose incoming section gets a line regulator (its parent side)."""
    capacitor: int | None
    pv: tuple[int, ...]
    storage: tuple[int, ...]


def _device_sites(tree: _Tree, rng: np.random.Generator, n_pv: int, n_storage: int) -> _Devices:
    n = len(tree.parent)
    regulator = capacitor = None
    three = np.flatnonzero(tree.phase == 0)
    if n >= 100:
        deepest = int(np.argmax(np.where(tree.phase == 0, tree.depth, -1)))
        path = _path_to_head(tree.parent, deepest)
        if len(path) >= 4:
            regulator = path[len(path) // 2]
            capacitor = path[(3 * len(path)) // 4]
    load_buses = np.flatnonzero(tree.load_kw > 0)
    pv = (
        tuple(
            sorted(
                int(x)
                for x in rng.choice(load_buses, size=min(n_pv, len(load_buses)), replace=False)
            )
        )
        if n_pv
        else ()
    )
    storage = (
        tuple(
            sorted(
                int(x)
                for x in rng.choice(three[1:], size=min(n_storage, len(three) - 1), replace=False)
            )
        )
        if n_storage
        else ()
    )
    return _Devices(regulator, capacitor, pv, storage)


def _path_to_head(parent: np.ndarray, node: int) -> list[int]:
    path = [node]
    while parent[path[-1]] >= 0:
        path.append(int(parent[path[-1]]))
    return path[::-1]


def _downstream_kw(tree: _Tree, factor: float) -> np.ndarray:
    total = tree.load_kw * factor
    # Children always have a larger index than their parent: one reverse pass.
    for i in range(len(total) - 1, 0, -1):
        total[tree.parent[i]] += total[i]
    return total


_Code = tuple[str, float, float, float, float, float]


def _pick_code(amps: float, catalogue: tuple[_Code, ...]) -> str:
    for code in catalogue:
        if code[5] >= _MARGIN * amps:
            return code[0]
    return catalogue[-1][0]


def _nodes(phase: int) -> str:
    return ".1.2.3" if phase == 0 else f".{phase}"


def _linecode_lines() -> list[str]:
    """The line codes every synthetic feeder defines (three- and single-phase)."""
    codes = ["! Line codes: overhead conductors, sequence impedances in ohm/km"]
    for name, r1, x1, r0, x0, amps in _LINECODES_3PH:
        codes.append(
            f"New LineCode.{name} nphases=3 r1={r1} x1={x1} r0={r0} x0={x0} "
            f"c1=10 c0=4 units=km normamps={amps:g} emergamps={1.5 * amps:g}"
        )
    for name, r1, x1, r0, x0, amps in _LINECODES_1PH:
        z_self_r, z_self_x = (2 * r1 + r0) / 3, (2 * x1 + x0) / 3
        codes.append(
            f"New LineCode.{name} nphases=1 rmatrix=[{z_self_r:.4f}] "
            f"xmatrix=[{z_self_x:.4f}] cmatrix=[8] units=km normamps={amps:g} "
            f"emergamps={1.5 * amps:g}"
        )
    return codes


def _write_files(
    out: Path, tree: _Tree, names: list[str], factor: float, devices: _Devices, crlf: bool
) -> None:
    nl = "\r\n" if crlf else "\n"
    n = len(names)
    kw_down = _downstream_kw(tree, factor)

    codes = _linecode_lines()

    lines = ["! Primary lines, parent bus to child bus"]
    for i in range(1, n):
        p = int(tree.parent[i])
        ph = int(tree.phase[i])
        bus1 = names[p] + ("r" if devices.regulator == i else "")
        if ph == 0:
            amps = kw_down[i] / (math.sqrt(3.0) * KV_PRIMARY * 0.95)
            code = _pick_code(amps, _LINECODES_3PH)
            lines.append(
                f"New Line.l{i:05d} phases=3 bus1={bus1}.1.2.3 bus2={names[i]}.1.2.3 "
                f"linecode={code} length={tree.length_km[i]:g} units=km"
            )
        else:
            amps = kw_down[i] / (KV_LN * 0.95)
            code = _pick_code(amps, _LINECODES_1PH)
            lines.append(
                f"New Line.l{i:05d} phases=1 bus1={bus1}.{ph} bus2={names[i]}.{ph} "
                f"linecode={code} length={tree.length_km[i]:g} units=km"
            )

    loads = ["! Spot loads (kW at peak, 0.95 power factor lagging)"]
    for i in map(int, np.flatnonzero(tree.load_kw > 0)):
        kw = round(float(tree.load_kw[i]) * factor, 1)
        kvar = round(kw * math.tan(math.acos(0.95)), 1)
        ph = int(tree.phase[i])
        model = int(tree.load_model[i])
        if ph == 0:
            loads.append(
                f"New Load.ld{i:05d} bus1={names[i]}.1.2.3 phases=3 conn=wye "
                f"kv={KV_PRIMARY} kw={kw} kvar={kvar} model={model}"
            )
        else:
            loads.append(
                f"New Load.ld{i:05d} bus1={names[i]}.{ph} phases=1 conn=wye "
                f"kv={KV_LN:.4f} kw={kw} kvar={kvar} model={model}"
            )

    dev = ["! Voltage control devices and the feeder's own DERs"]
    if devices.regulator is not None:
        i = devices.regulator
        at = names[int(tree.parent[i])]
        dev.append(
            f"New Transformer.lreg phases=3 windings=2 buses=[{at} {at}r] conns=[wye wye] "
            f"kvs=[{KV_PRIMARY} {KV_PRIMARY}] kvas=[10000 10000] xhl=0.01 %loadloss=0.0001"
        )
        dev.append("New RegControl.lreg transformer=lreg winding=2 vreg=124 band=2 ptratio=60")
    if devices.capacitor is not None:
        c = names[devices.capacitor]
        dev.append(f"New Capacitor.c1 bus1={c} phases=3 kvar=600 kv={KV_PRIMARY}")
        dev.append(
            f"New CapControl.c1 capacitor=c1 element=Line.l{devices.capacitor:05d} "
            "terminal=2 type=voltage "
            "ptratio=60 onsetting=119 offsetting=125 delay=30 delayoff=30"
        )
    for i in devices.pv:
        kw = max(5.0, round(float(tree.load_kw[i]) * factor * 0.8, 1))
        ph = int(tree.phase[i])
        kv = KV_PRIMARY if ph == 0 else round(KV_LN, 4)
        dev.append(
            f"New PVSystem.pv{i:05d} bus1={names[i]}{_nodes(ph)} phases={1 if ph else 3} "
            f"kv={kv} kva={kw * 1.1:.1f} pmpp={kw} irradiance=1 pf=1"
        )
    for i in devices.storage:
        dev.append(
            f"New Storage.st{i:05d} bus1={names[i]}.1.2.3 phases=3 kv={KV_PRIMARY} "
            "kwrated=250 kwhrated=1000 %stored=50 %reserve=10 dispmode=default"
        )

    coords = ["Bus,X,Y"]
    y_at: dict[int, int] = {}
    for i in range(n):
        d = int(tree.depth[i])
        y_at[d] = y_at.get(d, 0) + 1
        coords.append(f"{names[i]},{d * 100},{y_at[d] * 50}")

    master = [
        f"! Synthetic radial feeder: {n} primary buses (dsosim synth-feeder)",
        "Clear",
        "Set DefaultBaseFrequency=60",
        f"New Circuit.synthetic basekv={KV_SOURCE} pu=1.0 phases=3 bus1=sourcebus "
        "MVAsc3=2000 MVAsc1=2100",
        f"New Transformer.sub phases=3 windings=2 buses=[sourcebus {names[0]}] conns=[delta wye] "
        f"kvs=[{KV_SOURCE} {KV_PRIMARY}] kvas=[20000 20000] xhl=8 %r=0.5",
        "New RegControl.ltc transformer=sub winding=2 vreg=123.6 band=2 ptratio=60",
        "Redirect LineCodes.dss",
        "Redirect Lines.dss",
        "Redirect Loads.dss",
        "Redirect Devices.dss",
        f"Set VoltageBases=[{KV_SOURCE}, {KV_PRIMARY}]",
        "CalcVoltageBases",
        "BusCoords BusCoords.csv",
    ]
    for fname, body in (
        ("LineCodes.dss", codes),
        ("Lines.dss", lines),
        ("Loads.dss", loads),
        ("Devices.dss", dev),
        ("BusCoords.csv", coords),
        ("Master.dss", master),
    ):
        with open(out / fname, "w", encoding="ascii", newline="") as f:
            f.write(nl.join(body) + nl)


def _base_case_vmin(master: Path) -> float:
    """Lowest monitored voltage of the base case (imported here: the
    generator itself needs no OpenDSS)."""
    from dsosim.federates.dso.feeder import Feeder, FeederError

    try:
        state = Feeder(master, name="synthetic", vmin=0.5, vmax=1.5).solve()
    except FeederError:
        return 0.0
    if not state.converged:
        return 0.0
    return float(state.v_pu[state.monitored].min())
