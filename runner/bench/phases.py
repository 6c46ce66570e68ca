"""Where an interval's time goes: role CPU by market phase and LDA, the critical path on N cores.

The scenario (default the study) is built for ``--hours`` from
``--start-hour`` and its federates' role calls run in this process on the
in-process bus (``runner.bench.inprocess``, mode ``roles``: the federation's
calls, order and inputs, without HELICS). Each federate's thread clock is
read at each of its grants, so every CPU second is booked to the federate
and the federation time (the market phase) it was spent at, whatever the
machine's load.

It prints, per interval: the role CPU of each phase of the schedule
(``common.schedule``) with its largest federates; each LDA's CPU (its
utility, independent operator and aggregators) and the ISO's; and the
**critical path** on ``--cores`` cores for the scenario's packing of
federates into processes: at each grant time every process runs its
federates' work one after another, and the step takes at least the busiest
process's work and at least the step's work divided by the cores. Summed
over the steps this is a lower bound on the wall time of the phases' work
(HELICS's own latency, serialisation and the recorder come on top:
``dsosim bench scale`` measures those), next to the perfect split (all
work / cores) and the same bound with every LDA in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STUDY = Path(__file__).resolve().parents[2] / "configs" / "scenarios" / "study.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default=str(STUDY), help="scenario to run (study.toml)")
    parser.add_argument("--hours", type=float, default=2.0, help="simulated hours (default 2)")
    parser.add_argument(
        "--start-hour",
        type=float,
        default=None,
        help="start at this hour of the scenario's day (e.g. 16 for the evening peak)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="the packing whose critical path is computed (default: the scenario's)",
    )
    parser.add_argument("--cores", type=int, default=2, help="cores of the machine (default 2)")
    parser.add_argument("--json", default=None, help="also write the figures here")


@dataclass(frozen=True)
class Booking:
    """Thread CPU seconds of one federate's work at one grant."""

    time: float
    federate: str
    cpu_s: float


def lda_of(config: Any) -> dict[str, str]:
    """Federate name -> the LDA (its utility's name) it belongs to; the ISO is its own."""
    from dsosim.federates.common.config import independent_name

    out = {config.iso.name: config.iso.name}
    for dso in config.dsos:
        out[dso.name] = dso.name
        out[independent_name(dso.name)] = dso.name
    for agg in config.aggregators:
        out[agg.name] = agg.dso
    return out


def phase_name(offset_s: float, config: Any) -> str:
    """The schedule's phase at ``offset_s`` into an interval (``+x s`` when between)."""
    from dsosim.federates.common.schedule import Phase, offset

    best = Phase.BID
    for phase in Phase:
        if offset(phase, config.time) <= offset_s + 1e-9:
            best = phase
    extra = offset_s - offset(best, config.time)
    return best.name if abs(extra) < 1e-9 else f"{best.name}+{extra:g}s"


def critical_path(
    bookings: list[Booking], process_of: dict[str, str], cores: int
) -> tuple[float, float]:
    """(critical path, all work) in seconds: per grant time, the larger of the
    busiest process's work and the step's work over ``cores``, summed."""
    steps: dict[float, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for b in bookings:
        if b.time >= 0:
            steps[b.time][process_of[b.federate]] += b.cpu_s
    path = sum(max(max(work.values()), sum(work.values()) / cores) for work in steps.values())
    return path, sum(sum(work.values()) for work in steps.values())


def packing_of(config: Any, processes: int | None) -> dict[str, str]:
    """Federate -> process, as ``dsosim build --processes`` packs them."""
    from dsosim.runner.build.packing import groups, process_name

    names = [n for n in config.federate_names() if n != config.recorder.name]
    if not processes:
        return {n: n for n in names}
    out = {}
    for index, group in enumerate(groups(config, processes)):
        for name in group:
            out[name] = process_name(index)
    return {n: out.get(n, n) for n in names}


def measure(
    scenario: str,
    hours: float,
    start_hour: float | None,
    processes: int | None,
    cores: int,
) -> dict[str, Any]:
    from dsosim.federates.common.config import load_federation
    from dsosim.runner.bench.inprocess import LocalBus, bodies
    from dsosim.runner.build.federation import build
    from dsosim.runner.build.scenario import load_scenario

    if processes is None:
        processes = load_scenario(scenario)[0].processes
    with tempfile.TemporaryDirectory(prefix="dsosim-bench-phases-") as tmp:
        built = build(scenario, Path(tmp) / "run", hours=hours, start_hour=start_hour)
        config, base = load_federation(built.federation)
        bus = LocalBus(config, serialised=False, results_dir=Path(tmp) / "results")
        bus.run(bodies(config, base))
    n = config.time.n_intervals
    bookings = [Booking(t, name, cpu) for (t, name), cpu in bus.cpu.items()]
    per_interval = 1e3 / n
    lda = lda_of(config)
    by_phase: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_lda: dict[str, float] = defaultdict(float)
    for b in bookings:
        if b.time < 0:
            continue
        step = config.time.step
        name = phase_name(b.time - step * (b.time // step), config)
        by_phase[name][b.federate] += b.cpu_s * per_interval
        by_lda[lda[b.federate]] += b.cpu_s * per_interval
    packed = packing_of(config, processes)
    path, work = critical_path(bookings, packed, cores)
    alone, _ = critical_path(bookings, {f: lda[f] for f in packed}, cores)
    return {
        "scenario": Path(scenario).name,
        "hours": hours,
        "start_hour": start_hour,
        "intervals": n,
        "cores": cores,
        "processes": len(set(packed.values())),
        "role_cpu_ms": work * per_interval,
        "setup_cpu_s": sum(b.cpu_s for b in bookings if b.time < 0),
        "phases_ms": {
            phase: dict(sorted(cpu.items(), key=lambda kv: -kv[1]))
            for phase, cpu in by_phase.items()
        },
        "ldas_ms": dict(sorted(by_lda.items(), key=lambda kv: -kv[1])),
        "critical_path_ms": path * per_interval,
        "perfect_ms": work / cores * per_interval,
        "one_process_per_lda_ms": alone * per_interval,
    }


def report(r: dict[str, Any]) -> str:
    start = "" if r["start_hour"] is None else f" from {r['start_hour']:g}:00"
    lines = [
        f"{r['scenario']}, {r['hours']:g} h{start}, {r['intervals']} intervals; "
        f"role CPU per interval {r['role_cpu_ms']:.1f} ms (thread CPU; set-up "
        f"{r['setup_cpu_s']:.2f} s once)",
        "by phase (ms per interval; largest federates):",
    ]
    for phase, cpu in r["phases_ms"].items():
        top = ", ".join(f"{k} {v:.1f}" for k, v in list(cpu.items())[:3])
        lines.append(f"  {phase:<14} {sum(cpu.values()):7.1f}   {top}")
    lines.append("by LDA (ms per interval, its utility, operator and aggregators):")
    lines.append("  " + ", ".join(f"{k} {v:.1f}" for k, v in r["ldas_ms"].items()))
    lines.append(
        f"critical path on {r['cores']} cores, {r['processes']} processes as packed: "
        f"{r['critical_path_ms']:.1f} ms per interval; perfect split {r['perfect_ms']:.1f}; "
        f"every LDA its own process {r['one_process_per_lda_ms']:.1f} "
        f"(parallel speed-up {r['role_cpu_ms'] / r['critical_path_ms']:.2f} of {r['cores']})"
    )
    return "\n".join(lines)


def handle(args: argparse.Namespace) -> int:
    if args.hours <= 0 or args.cores < 1:
        print("dsosim bench phases: --hours and --cores must be positive", file=sys.stderr)
        return 2
    from dsosim.runner.build.scenario import ScenarioError

    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    try:
        r = measure(args.scenario, args.hours, args.start_hour, args.processes, args.cores)
    except ScenarioError as exc:
        print(f"dsosim bench phases: {exc}", file=sys.stderr)
        return 2
    print(report(r))
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1) + "\n")
    return 0
