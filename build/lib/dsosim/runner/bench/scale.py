"""Federation overhead at scale: the federation per interval against its role calls in one process.

For each LDA count N in ``--ldas`` the scenario (default the study scenario)
is cut to its first N LDAs and measured four ways, in the same run:

* **federation**: the real thing, every federate its own process under
  ``helics run``. It runs twice, for ``--short-hours`` and ``--hours``; the
  difference of the two runs' CPU (every process, from the kernel's
  accounting of reaped children) and wall time, divided by the difference of
  their intervals, is the cost per interval without start-up and shut-down.
  Wall time runs from the moment the federation entered executing mode to
  the last federate's end (each federate logs both), so ``helics run``'s
  once-a-second polling does not count. Start-up is the time from launching
  ``helics run`` to entering executing mode; peak memory is the sum of every
  federate process's high-water mark (each logs its own; the broker's is
  not counted).
* **roles**: the same federates' ``run`` functions in one process, on an
  in-process bus, messages handed over as objects, rows dropped
  (``runner.bench.inprocess``): the role calls alone, the reference.
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
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STUDY = Path(__file__).resolve().parents[2] / "configs" / "scenarios" / "study.toml"
EXECUTING = re.compile(r"executing at (\d+\.\d+)")
FINISHED = re.compile(r"finished at (\d+\.\d+) peak (\d+\.\d+) MB")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ldas", default="1,2,4,8", help="LDA counts to measure, comma-separated (default 1,2,4,8)"
    )
    parser.add_argument(
        "--scenario", default=str(STUDY), help="scenario whose first N LDAs are run (study.toml)"
    )
    parser.add_argument(
        "--hours", type=float, default=2.0, help="simulated hours of the long run (default 2)"
    )
    parser.add_argument(
        "--short-hours", type=float, default=0.5, help="of the short run (default 0.5)"
    )
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temp folder)")


@dataclass
class FederationRun:
    intervals: int
    wall_s: float
    cpu_s: float
    startup_s: float
    peak_rss_mb: float
    processes: int


def run_federation(scenario: str, ldas: int, hours: float, out: Path) -> FederationRun:
    """Build and launch the first ``ldas`` LDAs for ``hours``; CPU of every process."""
    from dsosim.runner.build.federation import build
    from dsosim.runner.launch import launch

    built = build(scenario, out, hours=hours, first_ldas=ldas)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    outcome = launch(built.runner, built.results_dir, timeout_s=3600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not outcome.ok:
        raise RuntimeError(f"the federation failed: {outcome.failure}")
    logs = [log.read_text(errors="replace") for log in out.glob("*.log")]
    executing = [float(m.group(1)) for text in logs for m in EXECUTING.finditer(text)]
    finished = [(float(m.group(1)), float(m.group(2))) for t in logs for m in FINISHED.finditer(t)]
    names = built.config.federate_names()
    if len(executing) != len(names) or len(finished) != len(names):
        raise RuntimeError(f"expected {len(names)} federates to log their start and end")
    # helics run and the broker count in the CPU (kernel accounting), not in the memory
    return FederationRun(
        intervals=built.config.time.n_intervals,
        wall_s=max(t for t, _ in finished) - max(executing),
        cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        startup_s=max(executing) - t0,
        peak_rss_mb=sum(mb for _, mb in finished),
        processes=len(names) + 1,
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


def measure(scenario: str, ldas: int, hours: float, short: float, out: Path) -> dict[str, Any]:
    long_run = run_federation(scenario, ldas, hours, out / f"ldas-{ldas}" / "long")
    short_run = run_federation(scenario, ldas, short, out / f"ldas-{ldas}" / "short")
    n = long_run.intervals - short_run.intervals
    federation = out / f"ldas-{ldas}" / "long" / "federation.json"
    roles = run_inprocess(federation, "roles")
    serialised = run_inprocess(federation, "serialised")
    cpu = (long_run.cpu_s - short_run.cpu_s) / n
    return {
        "ldas": ldas,
        "devices": devices_of(federation),
        "processes": long_run.processes,
        "fed_cpu_ms": cpu * 1e3,
        "fed_wall_ms": (long_run.wall_s - short_run.wall_s) / n * 1e3,
        "roles_cpu_ms": roles["cpu_per_interval_s"] * 1e3,
        "roles_wall_ms": roles["wall_per_interval_s"] * 1e3,
        "serialised_cpu_ms": serialised["cpu_per_interval_s"] * 1e3,
        "ratio": cpu / roles["cpu_per_interval_s"],
        "ratio_serialised": cpu / serialised["cpu_per_interval_s"],
        "startup_s": long_run.startup_s,
        "roles_startup_s": roles["startup_s"],
        "fed_peak_mb": long_run.peak_rss_mb,
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
        print(f"dsosim bench scale: --ldas {args.ldas!r}: give LDA counts like 1,2,4,8")
        return 2
    if not counts or min(counts) < 1:
        print(f"dsosim bench scale: --ldas {args.ldas!r}: give LDA counts of at least 1")
        return 2
    if not 0 < args.short_hours < args.hours:
        print("dsosim bench scale: need 0 < --short-hours < --hours")
        return 2
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="dsosim-bench-scale-")
        out = Path(tmp.name)
    else:
        out = Path(args.out)
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    print(
        f"{Path(args.scenario).name}: federation {args.short_hours:g} h and {args.hours:g} h "
        f"(per interval = difference / difference of intervals); one process {args.hours:g} h"
    )
    print(" | ".join(title for _, title, _ in COLUMNS))
    from dsosim.runner.build.scenario import ScenarioError

    rows = []
    try:
        for count in counts:
            row = measure(args.scenario, count, args.hours, args.short_hours, out)
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
