"""DER fleet speed: one interval's bid construction plus dispatch for an N-device aggregator.

The fleet is a seeded mix of home devices in the proportions of
``configs/scenarios/all-ders.toml`` (per 100 homes: 30 PV, 10 batteries, 20
EVs of which a quarter V2G, 50 air conditioners, 30 water heaters) spread
over ``--buses`` feeder buses, plus one inflexible load per bus; the homes
are as many as needed for ``--devices`` devices. Each timed interval is
``Fleet.bids`` (every device's offer, the bus curves as ``BidCurve``
objects) and ``Fleet.dispatch`` (fill, physics, per-bus results), with
set-points read off the curves at a price that follows a daily shape plus
noise, and per-bus prices that differ slightly (as DLMPs do). Building the
set-points is the market's work and is not timed. The weather (pvlib) is
prepared before timing starts, as the federation build does.

It prints the fleet's memory (resident growth while building it and after
the run, and the process's peak) and the CPU time per interval (on a busy
machine the wall time includes waiting for a core), next to a reference
timed in the same run between intervals: ``np.lexsort`` and a cumulative sum
over two random blocks per device (about what a 100,000-device interval
offers), so a figure from a busy machine can be read against one from a
quiet one. A fleet of ``group.SPARSE_FROM`` devices or more keeps freed
memory, as its aggregator federate does (``aggregator.heap``). A SHA-256 over
every bus curve and dispatch outcome (hashed outside the timed calls) tells
whether a change kept the results byte-identical. The last line gives the
median wall time per interval.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from dsosim.federates.aggregator.fleet import DispatchOutcome, Fleet
from dsosim.federates.aggregator.heap import keep_freed_memory
from dsosim.federates.aggregator.population import HomeMix, home_devices
from dsosim.federates.aggregator.solar import sky_table
from dsosim.federates.aggregator.specs import FleetSpec, InflexibleLoadSpec, SiteSpec
from dsosim.federates.common.arrays import FloatArray, IntArray
from dsosim.federates.common.curves import BidCurve

MIX = HomeMix(pv=0.3, battery=0.1, ev=0.2, v2g=0.25, hvac=0.5, water_heater=0.3)
DEVICES_PER_HOME = MIX.pv + MIX.battery + MIX.ev + MIX.hvac + MIX.water_heater


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices", type=int, default=1000, help="devices in the fleet (default 1000)"
    )
    parser.add_argument("--buses", type=int, default=9, help="feeder buses they sit at (default 9)")
    parser.add_argument(
        "--intervals", type=int, default=288, help="timed 5-minute intervals (default 288, one day)"
    )
    parser.add_argument("--seed", type=int, default=1)


def build_fleet(devices: int, buses: int, *, seed: int, n_intervals: int) -> Fleet:
    """A mixed fleet of about ``devices`` devices over ``buses`` buses."""
    names = [f"b{i:03d}" for i in range(buses)]
    homes_total = max(1, round((devices - buses) / DEVICES_PER_HOME))
    per_bus = np.full(buses, homes_total // buses)
    per_bus[: homes_total % buses] += 1
    site = SiteSpec()
    got = home_devices(
        dict(zip(names, per_bus.tolist(), strict=True)), MIX, site, np.random.default_rng(seed)
    )
    inflexible = tuple(InflexibleLoadSpec(b, 0.05, shape="residential") for b in names)
    spec = FleetSpec(
        batteries=tuple(got.batteries),
        pvs=tuple(got.pvs),
        evs=tuple(got.evs),
        hvacs=tuple(got.hvacs),
        water_heaters=tuple(got.water_heaters),
        inflexible_loads=inflexible,
        site=site,
        sky=sky_table(site, ["south", "east", "west", "flat"]),
    )
    return Fleet(spec, interval_s=300.0, n_intervals=n_intervals, seed=seed)


REFERENCE_EVERY = 8
"""Intervals between two timings of the reference work."""


def _reference_blocks(n: int, buses: int, seed: int) -> tuple[IntArray, FloatArray, FloatArray]:
    """Random blocks (bus, price, MW) for the reference work."""
    rng = np.random.default_rng([seed, 17])
    return rng.integers(0, buses, n), rng.uniform(-20.0, 80.0, n), rng.uniform(0.0, 0.01, n)


def _reference_work(bus: IntArray, price: FloatArray, mw: FloatArray) -> float:
    """Plain numpy on as many blocks as the fleet offers: the block order by
    ``lexsort`` and a running total, what a fleet interval does once each."""
    order = np.lexsort((-price, bus))
    return float(np.cumsum(mw[order])[-1])


def _digest(digest: hashlib._Hash, bids: dict[str, BidCurve], outcome: DispatchOutcome) -> None:
    """Hash an interval's bus curves and outcome (per bus and per device type)."""
    for curve in bids.values():
        blocks = [x for block in curve.blocks for x in block]
        digest.update(np.array([curve.base_mw, *blocks], dtype=float).tobytes())
    for name in ("target_mw", "actual_mw", "baseline_mw", "expected_price"):
        digest.update(np.ascontiguousarray(getattr(outcome, name), dtype=float).tobytes())
    for kind in sorted(outcome.by_type):
        t = outcome.by_type[kind]
        for values in (t.baseline_mw, t.min_mw, t.max_mw, t.dispatched_mw, t.actual_mw):
            digest.update(np.ascontiguousarray(values, dtype=float).tobytes())
        for name in sorted(t.state):
            digest.update(np.ascontiguousarray(t.state[name], dtype=float).tobytes())


def _rss_mb() -> float:
    """This process's resident memory now (Linux ``/proc``; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def handle(args: argparse.Namespace) -> int:
    if args.devices < args.buses or args.buses < 1 or args.intervals < 1:
        print(
            "error: need --buses >= 1, --devices >= --buses and --intervals >= 1", file=sys.stderr
        )
        return 2
    rss_before = _rss_mb()
    built_at = time.perf_counter()
    fleet = build_fleet(args.devices, args.buses, seed=args.seed, n_intervals=args.intervals)
    build_s = time.perf_counter() - built_at
    fleet_mb = _rss_mb() - rss_before
    kept = fleet.large and keep_freed_memory()  # as the aggregator federate does
    counts = {g.kind: len(g.bus) for g in fleet.groups}
    print(
        f"fleet: {sum(counts.values())} devices at {len(fleet.buses)} buses: "
        + ", ".join(f"{n} {kind}" for kind, n in counts.items())
        + ("; utility scale: sparse per-bus sums, freed memory kept" if fleet.large else "")
        + (" (glibc declined)" if fleet.large and not kept else "")
    )
    rng = np.random.default_rng(args.seed)
    ref = _reference_blocks(2 * args.devices, len(fleet.buses), args.seed)
    times, cpu_times, ref_times, blocks = [], [], [], 0
    digest = hashlib.sha256()
    for k in range(args.intervals):
        if k % REFERENCE_EVERY == 0:  # between intervals, so both see the same machine
            cpu = time.process_time()
            _reference_work(*ref)
            ref_times.append(time.process_time() - cpu)
        price = 30.0 + 20.0 * np.sin(2 * np.pi * (k / 288.0 - 0.25)) + rng.normal(0.0, 5.0)
        start, cpu = time.perf_counter(), time.process_time()
        bids = fleet.bids(k)
        elapsed, cpu_elapsed = time.perf_counter() - start, time.process_time() - cpu
        setpoints = {b: c.quantity_at(price) for b, c in bids.items()}
        prices = {b: float(price + 0.5 * i / len(bids)) for i, b in enumerate(bids)}
        start, cpu = time.perf_counter(), time.process_time()
        outcome = fleet.dispatch(k, setpoints, prices)
        times.append(elapsed + time.perf_counter() - start)
        cpu_times.append(cpu_elapsed + time.process_time() - cpu)
        _digest(digest, bids, outcome)
        blocks = max(blocks, max(len(c.blocks) for c in bids.values()))
    ms = sorted(t * 1000.0 for t in times)
    cpu_ms = sorted(t * 1000.0 for t in cpu_times)
    print(
        f"bus curves: at most {blocks} blocks; p10 {ms[len(ms) // 10]:.2f} ms, "
        f"p90 {ms[(9 * len(ms)) // 10]:.2f} ms, max {ms[-1]:.2f} ms"
    )
    # on a busy machine wall time includes waiting for a core; CPU time does not
    print(
        f"cpu: median {statistics.median(cpu_ms):.2f} ms, p10 {cpu_ms[len(cpu_ms) // 10]:.2f} ms, "
        f"p90 {cpu_ms[(9 * len(cpu_ms)) // 10]:.2f} ms per interval (this process's CPU time)"
    )
    ref_ms = statistics.median(ref_times) * 1000.0
    print(
        f"reference (same run): np.lexsort and a cumsum of {len(ref[0])} random blocks "
        f"(2 per device), median {ref_ms:.2f} ms CPU; an interval takes "
        f"{statistics.median(cpu_ms) / ref_ms:.2f} x the reference"
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(
        f"memory: fleet {fleet_mb:.0f} MB (resident growth while building it, {build_s:.1f} s), "
        f"{_rss_mb() - rss_before:.0f} MB after the run, process peak {peak_mb:.0f} MB"
    )
    print(f"results: sha256 {digest.hexdigest()} over every bus curve and dispatch outcome")
    print(
        f"ders: median {statistics.median(ms):.2f} ms per interval (bids + dispatch, "
        f"{sum(counts.values())} devices, {len(fleet.buses)} buses, {args.intervals} intervals)"
    )
    return 0
