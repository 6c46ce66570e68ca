"""Federation overhead at scale: the federation per interval against its role calls in one process.

For each LDA count N in ``--ldas`` the scenario (default the study scenario)
is cut to its first N LDAs and run three ways for ``--hours``, in the same
run of the bench:

* **federation**: the real thing, every federate its own process under
  ``helics run``. Each federate and the broker log their CPU time and the
  wall clock when the federation enters executing mode (after their set-up;
  the recorder, which finishes its set-up after that, when it is ready)
  and at their end (the recorder: when the last interval is written, before
  the run's summary); the sum of the CPU between the two, divided by the
  intervals, is the federation's CPU per interval. Wall per interval runs
  from entering executing mode to the last of those ends. Start-up is the
  time from launching ``helics run`` to entering executing mode; peak
  memory is the sum of every federate process's high-water mark (each logs
  its own; the broker's is not counted).
* **roles**: the same federates' ``run`` functions in one process, on an
  in-process bus, messages handed over as objects, rows dropped
  (``runner.bench.inprocess``), timed from the first grant to the end: the
  role calls alone, the reference.
* **serialised**: as roles, plus every message msgpack-encoded and decoded
  and the rows written to Parquet as the recorder writes them (its tables
  are byte-identical to the federation's; a test checks this).

``ratio`` is the federation's CPU per interval over the roles'; the goal is
at most 1.5. The machine may be shared: the load average is printed with the
figures, and only ratios measured in the same run mean much.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STUDY = Path(__file__).resolve().parents[2] / "configs" / "scenarios" / "study.toml"
STAMP = re.compile(
    r"\[(\S+)\] (executing|ready|intervals done|finished) at (\d+\.\d+) cpu (\d+\.\d+) s"
    r"(?: peak (\d+\.\d+) MB)?"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ldas", default="1,2,4,8", help="LDA counts to measure, comma-separated (default 1,2,4,8)"
    )
    parser.add_argument(
        "--scenario", default=str(STUDY), help="scenario whose first N LDAs are run (study.toml)"
    )
    parser.add_argument(
        "--hours", type=float, default=2.0, help="simulated hours of every run (default 2)"
    )
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temp folder)")
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="pack the federates into this many processes (default: the scenario's "
        "`processes`; 0: one per federate)",
    )


@dataclass
class FederationRun:
    intervals: int
    wall_s: float
    cpu_s: float
    startup_s: float
    peak_rss_mb: float
    processes: int


def run_federation(
    scenario: str, ldas: int, hours: float, out: Path, processes: int | None = None
) -> FederationRun:
    """Build and launch the first ``ldas`` LDAs for ``hours``; read every log."""
    from dsosim.runner.build.federation import build
    from dsosim.runner.launch import launch

    built = build(scenario, out, hours=hours, first_ldas=ldas, processes=processes)
    t0 = time.time()
    outcome = launch(built.runner, built.results_dir, timeout_s=3600)
    if not outcome.ok:
        raise RuntimeError(f"the federation failed: {outcome.failure}")
    # one log per process; a process may hold several federates (--processes),
    # whose stamps then give the same process's CPU and memory
    stamps: dict[tuple[str, str], tuple[float, float, float]] = {}
    process_of: dict[str, str] = {}
    for log in out.glob("*.log"):
        for m in STAMP.finditer(log.read_text(errors="replace")):
            stamps[(m.group(1), m.group(2))] = (
                float(m.group(3)),
                float(m.group(4)),
                float(m.group(5) or 0.0),
            )
            process_of[m.group(1)] = log.stem
    names = [*built.config.federate_names(), "broker"]
    missing = [(n, e) for n in names for e in ("executing", "finished") if (n, e) not in stamps]
    if missing:
        raise RuntimeError(f"federates did not log their times: {missing}")

    def begin(name: str) -> tuple[float, float, float]:
        # the recorder imports pandas and Arrow once the federation runs (it
        # is an observer): its set-up ends when it says it is ready
        return stamps.get((name, "ready"), stamps[(name, "executing")])

    def end(name: str) -> tuple[float, float, float]:
        # the recorder's summary of the whole run is a one-off, not per interval
        return stamps.get((name, "intervals done"), stamps[(name, "finished")])

    by_process: dict[str, list[str]] = {}
    for n in names:
        by_process.setdefault(process_of[n], []).append(n)
    cpu = 0.0
    peak = 0.0
    for members in by_process.values():
        cpu += max(end(n)[1] for n in members) - min(begin(n)[1] for n in members)
        if "broker" not in members:
            peak += max(stamps[(n, "finished")][2] for n in members)
    start = max(stamps[(n, "executing")][0] for n in names)
    return FederationRun(
        intervals=built.config.time.n_intervals,
        wall_s=max(end(n)[0] for n in names) - start,
        cpu_s=cpu,
        startup_s=start - t0,
        peak_rss_mb=peak,
        processes=len(by_process),
    )


def run_inprocess(federation: Path, mode: str) -> dict[str, Any]:
    """The role calls in one fresh process (so its memory is its own)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dsosim.runner.bench.inprocess",
            "--config",
            str(federation),
            "--mode",
            mode,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"in-process {mode} run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def devices_of(federation: Path) -> int:
    config = json.loads(federation.read_text())
    return sum(
        len(v) for a in config["aggregators"] for v in a["fleet"].values() if isinstance(v, list)
    )


def measure(
    scenario: str, ldas: int, hours: float, out: Path, processes: int | None = None
) -> dict[str, Any]:
    run = run_federation(scenario, ldas, hours, out / f"ldas-{ldas}", processes)
    federation = out / f"ldas-{ldas}" / "federation.json"
    roles = run_inprocess(federation, "roles")
    serialised = run_inprocess(federation, "serialised")
    cpu = run.cpu_s / run.intervals
    return {
        "ldas": ldas,
        "devices": devices_of(federation),
        "processes": run.processes,
        "fed_cpu_ms": cpu * 1e3,
        "fed_wall_ms": run.wall_s / run.intervals * 1e3,
        "roles_cpu_ms": roles["cpu_per_interval_s"] * 1e3,
        "roles_wall_ms": roles["wall_per_interval_s"] * 1e3,
        "serialised_cpu_ms": serialised["cpu_per_interval_s"] * 1e3,
        "ratio": cpu / roles["cpu_per_interval_s"],
        "ratio_serialised": cpu / serialised["cpu_per_interval_s"],
        "startup_s": run.startup_s,
        "roles_startup_s": roles["startup_s"],
        "fed_peak_mb": run.peak_rss_mb,
        "roles_peak_mb": roles["peak_rss_mb"],
    }


COLUMNS = (
    ("ldas", "LDAs", "{:d}"),
    ("devices", "devices", "{:,d}"),
    ("processes", "procs", "{:d}"),
    ("fed_cpu_ms", "fed CPU ms", "{:.1f}"),
    ("fed_wall_ms", "fed wall ms", "{:.1f}"),
    ("roles_cpu_ms", "roles CPU ms", "{:.1f}"),
    ("serialised_cpu_ms", "+ser CPU ms", "{:.1f}"),
    ("ratio", "ratio", "{:.2f}"),
    ("ratio_serialised", "ratio/+ser", "{:.2f}"),
    ("startup_s", "start-up s", "{:.2f}"),
    ("roles_startup_s", "1-proc start s", "{:.2f}"),
    ("fed_peak_mb", "fed peak MB", "{:,.0f}"),
    ("roles_peak_mb", "1-proc peak MB", "{:,.0f}"),
)


def handle(args: argparse.Namespace) -> int:
    try:
        counts = [int(x) for x in args.ldas.split(",") if x.strip()]
    except ValueError:
        print(
            f"dsosim bench scale: --ldas {args.ldas!r}: give LDA counts like 1,2,4,8",
            file=sys.stderr,
        )
        return 2
    if not counts or min(counts) < 1:
        print(
            f"dsosim bench scale: --ldas {args.ldas!r}: give LDA counts of at least 1",
            file=sys.stderr,
        )
        return 2
    if args.hours <= 0:
        print("dsosim bench scale: --hours must be positive", file=sys.stderr)
        return 2
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="dsosim-bench-scale-")
        out = Path(tmp.name)
    else:
        out = Path(args.out)
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    print(f"{Path(args.scenario).name}, {args.hours:g} h; per interval, after set-up:")
    print(" | ".join(title for _, title, _ in COLUMNS))
    from dsosim.runner.build.scenario import ScenarioError

    rows = []
    try:
        for count in counts:
            row = measure(args.scenario, count, args.hours, out, args.processes)
            rows.append(row)
            print(" | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS), flush=True)
    except ScenarioError as exc:
        print(f"dsosim bench scale: {exc}", file=sys.stderr)
        return 2
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    worst = max(r["ratio"] for r in rows)
    print(f"overhead ratio (federation CPU / role calls in one process): worst {worst:.2f}")
    return 0
