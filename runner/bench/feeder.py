"""Feeder speed at size: one DSO interval on synthetic feeders of 1,000 to 10,000 buses.

For each size, ``dsosim synth-feeder`` writes a seeded feeder (the same
generator, same seed), DERs are attached at ``--der-buses`` of its load
buses (a seeded sample, as ``new-scenario`` places two aggregators), each
with a bid curve, and every timed interval does what the DSO federate does
in one market interval, split into

* **power flow**: the load multipliers and DER set-points in, and the two
  OpenDSS solves with controls acting (forecast point, and the measured
  outcome);
* **linearisation**: ``Feeder.sensitivities`` (the factorised Jacobian: one
  sparse LU for every DER);
* **LP**: the LDA market's interface bid (a parametric LP over the head
  price) and the clearing of an award with DLMPs (``lda_market``);
* **recording**: the ``voltages`` and ``branches`` result rows of the
  measured state, built and encoded as the bus message the recorder gets.

BLAS runs on one thread (``--blas-threads``), as in the DSO federate: a
federation has several processes per core.

The reference, measured in the same run on the same feeder and operating
points, is the finite-difference linearisation (two OpenDSS power flows per
DER bus, ``method="fd"``), timed on the first ``--reference-intervals``
intervals. The machine's load average is printed with the figures: on a
shared machine absolute times move with it, the ratio much less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from dsosim.federates.common.curves import BidCurve, PlacedCurve
from dsosim.federates.common.messages import TableRows, encode
from dsosim.federates.dso.feeder import Feeder, FeederState
from dsosim.federates.markets.lda_market import (
    Limits,
    build_interface_bid,
    clear_lda,
    fixed_head_mw,
)
from dsosim.runner.feeders.synthetic import generate_feeder

PARTS = ("power_flow", "linearisation", "lp", "recording")
DEFAULT_SIZES = (1000, 5000, 10000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--buses",
        type=int,
        nargs="+",
        default=list(DEFAULT_SIZES),
        help="feeder sizes in primary buses (default: 1000 5000 10000)",
    )
    parser.add_argument(
        "--der-buses", type=int, default=50, help="buses with DERs (default 50, as new-scenario)"
    )
    parser.add_argument("--intervals", type=int, default=12, help="timed intervals (default 12)")
    parser.add_argument(
        "--reference-intervals",
        type=int,
        default=2,
        help="intervals also linearised by finite differences, the reference (default 2)",
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads (default 1, as the DSO federate runs; 0: the library's default)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")


class _Clock:
    """Wall and CPU (this process, all its threads) time per part, in ms. On a
    machine shared with other work, CPU time is the steadier figure: wall time
    also counts the waits for a core."""

    def __init__(self) -> None:
        self.laps: dict[str, list[float]] = {}

    def start(self) -> None:
        self.laps = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, part: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        got = self.laps.setdefault(part, [0.0, 0.0])
        got[0] += (wall - self._wall) * 1e3
        got[1] += (cpu - self._cpu) * 1e3
        self._wall, self._cpu = wall, cpu

    def store(self, result: SizeResult) -> None:
        for part, (wall, cpu) in self.laps.items():
            result.ms[part].append(wall)
            result.cpu_ms[part].append(cpu)


@dataclass
class SizeResult:
    buses: int
    nodes: int
    branches: int
    der_buses: int
    setup_s: float
    ms: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PARTS})
    cpu_ms: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PARTS})
    reference_ms: list[float] = field(default_factory=list)
    reference_cpu_ms: list[float] = field(default_factory=list)

    def median(self, part: str, cpu: bool = False) -> float:
        return statistics.median((self.cpu_ms if cpu else self.ms)[part])

    def total(self, cpu: bool = False) -> float:
        return sum(self.median(p, cpu) for p in PARTS)

    @property
    def total_ms(self) -> float:
        return self.total()

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "buses": self.buses,
            "nodes": self.nodes,
            "branches": self.branches,
            "der_buses": self.der_buses,
            "setup_s": round(self.setup_s, 3),
        }
        for label, cpu, reference in (
            ("wall", False, self.reference_ms),
            ("cpu", True, self.reference_cpu_ms),
        ):
            lin = self.median("linearisation", cpu)
            ref = statistics.median(reference) if reference else None
            out[label] = {
                "median_ms": {p: round(self.median(p, cpu), 2) for p in PARTS},
                "total_ms": round(self.total(cpu), 2),
                "reference_linearisation_ms": None if ref is None else round(ref, 2),
                "linearisation_speedup": None if ref is None else round(ref / lin, 2),
                "total_with_reference_ms": None
                if ref is None
                else round(self.total(cpu) - lin + ref, 2),
            }
        return out


def _curves(names: list[str], rng: np.random.Generator) -> list[PlacedCurve[str]]:
    """A PV-and-battery-like bid per DER: injecting at its base, more
    consumption in two blocks as the price falls."""
    out = []
    for name in names:
        size = float(rng.uniform(0.02, 0.08))
        curve = BidCurve(
            -size, ((float(rng.uniform(40, 60)), size), (float(rng.uniform(10, 30)), size))
        )
        out.append(PlacedCurve(name, curve, owner="agg"))
    return out


def _limits(state: FeederState) -> Limits:
    """ANSI range A, widened where the base case is already outside (as
    new-scenario does), so that the LP is about the DERs."""
    watched = state.v_pu[state.monitored]
    lo = min(0.95, float(watched.min()) - 0.02)
    hi = max(1.05, float(watched.max()) + 0.02)
    loading = max(1.0, float(state.loading.max(initial=0.0)) + 0.05)
    return Limits(vmin_pu=lo, vmax_pu=hi, max_loading=loading)


def _record(name: str, interval: int, state: FeederState) -> int:
    """The measured state's voltage and branch rows as the DSO sends them."""
    size = 0
    for table, columns, pairs in (
        ("voltages", ("interval", "dso", "node", "v_pu"), zip(state.node_names, state.v_pu)),
        (
            "branches",
            ("interval", "dso", "branch", "loading"),
            zip(state.branch_names, state.loading),
        ),
    ):
        rows = tuple((interval, name, n, float(v)) for n, v in pairs)
        size += len(encode(TableRows(name, interval, table, columns, rows)))
    return size


def bench_size(n_buses: int, args: argparse.Namespace, folder: Path) -> SizeResult:
    t0 = time.perf_counter()
    made = generate_feeder(n_buses, args.seed, folder / f"feeder{n_buses}")
    feeder = Feeder(made.master, name=f"synthetic{n_buses}")
    rng = np.random.default_rng([args.seed, n_buses])
    load_buses = sorted({ld.bus for ld in feeder.loads})
    chosen = sorted(
        rng.choice(load_buses, size=min(args.der_buses, len(load_buses)), replace=False)
    )
    names = [f"der{i:03d}" for i in range(len(chosen))]
    for name, bus in zip(names, chosen, strict=True):
        feeder.attach_der(name, str(bus))
    curves = _curves(names, rng)
    der = np.array([c.curve.base_mw for c in curves])
    feeder.set_der_mw(der)
    base = feeder.solve()
    limits = _limits(base)
    feeder.sensitivities()  # the first one builds the Jacobian's structure and checks it once
    result = SizeResult(
        buses=n_buses,
        nodes=len(base.node_names),
        branches=len(base.branch_names),
        der_buses=len(chosen),
        setup_s=time.perf_counter() - t0,
    )
    hours = np.arange(args.intervals) * 24.0 / max(args.intervals, 1)
    profile = 0.65 + 0.3 * np.sin(np.pi * (hours - 6.0) / 12.0).clip(0.0)
    clock = _Clock()
    for k, multiplier in enumerate(profile):
        clock.start()
        feeder.set_load_multipliers(float(multiplier))
        feeder.set_der_mw(der)
        state = feeder.solve()
        clock.lap("power_flow")
        sens = feeder.sensitivities()
        clock.lap("linearisation")
        bid = build_interface_bid(curves, state, sens, fixed_head_mw(state), limits)
        lmp = 25.0 + 10.0 * float(multiplier)
        award = bid.curve.quantity_at(lmp)
        clearing = clear_lda(award, lmp, curves, state, sens, bid.fixed_mw, limits)
        clock.lap("lp")
        feeder.set_der_mw(clearing.der_mw)
        measured = feeder.solve()
        clock.lap("power_flow")
        _record(feeder.name, k, measured)
        clock.lap("recording")
        clock.store(result)
        if k < args.reference_intervals:
            feeder.set_der_mw(der)
            feeder.solve()
            clock.start()
            feeder.sensitivities(method="fd")
            clock.lap("reference")
            wall, cpu = clock.laps.pop("reference")
            result.reference_ms.append(wall)
            result.reference_cpu_ms.append(cpu)
    return result


def handle(args: argparse.Namespace) -> int:
    if min(args.buses) < 20 or args.der_buses < 1 or args.intervals < 1:
        print(
            "dsosim bench feeder: --buses >= 20, --der-buses >= 1, --intervals >= 1",
            file=sys.stderr,
        )
        return 2
    if args.blas_threads > 0:
        threadpool_limits(limits=args.blas_threads)
    blas = sorted({str(i["num_threads"]) for i in threadpool_info()})
    load = os.getloadavg()
    print(
        f"machine load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"on {os.cpu_count()} cores; BLAS threads {'/'.join(blas) or '-'}",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="dsosim-bench-feeder-") as tmp:
        for n in args.buses:
            r = bench_size(n, args, Path(tmp))
            results.append(r)
            d = r.as_dict()
            print(
                f"{r.buses:>6} buses ({r.nodes} nodes, {r.branches} branches, "
                f"{r.der_buses} DER buses; set-up {r.setup_s:.1f} s), median per interval:",
                flush=True,
            )
            for label in ("cpu", "wall"):
                f = d[label]
                assert isinstance(f, dict)
                med = f["median_ms"]
                line = (
                    f"  {label:4s} {f['total_ms']:7.0f} ms = power flow {med['power_flow']:.0f}"
                    f" + linearisation {med['linearisation']:.0f} + LP {med['lp']:.0f}"
                    f" + recording {med['recording']:.0f}"
                )
                if f["reference_linearisation_ms"] is not None:
                    line += (
                        f"; reference linearisation (finite differences, same run) "
                        f"{f['reference_linearisation_ms']:.0f} ms = "
                        f"{f['linearisation_speedup']:.1f}x, interval with it "
                        f"{f['total_with_reference_ms']:.0f} ms"
                    )
                print(line, flush=True)
    load = os.getloadavg()
    print(f"machine load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"load_average": load, "sizes": [r.as_dict() for r in results]}, indent=1)
        )
    return 0
