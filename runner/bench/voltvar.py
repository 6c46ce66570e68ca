"""The utility's volt-var closed loop and ex-post check in the study: present against reference.

Each LDA of the scenario gets two utilities (:class:`GridOperator`, built as
the DSO federate builds them, volt-var inverters included), each with its
own OpenDSS engine: one runs the present code, the other the reference, the
power flows as they were before this round's speed-up
(:mod:`.voltvar_reference`). Both go through the same DSO interval, in
alternating order, ``--intervals`` times from ``--start-hour``: the
forecast (``forecast``: power flow and linearisation), a seeded dispatch
(normal, sd ``--der-sd`` MW per location) re-linearised at
(``linearise_at``), and the metering of a seeded response to it (the
dispatch plus normal noise of sd ``--response-sd``) with its ex-post check
(``measure``, which calls ``expost``).

It prints, per interval summed over the LDAs, the CPU (this thread's) of
the volt-var closed loop's power flows (every ``GridOperator._solve`` and
``_settle``: the fixed point of the inverters' reactive power, OpenDSS solves and the NumPy
around them) by where they are solved, of the ex-post check (its two power
flows and its row), and of the rest of the metering; the OpenDSS solves and
closed-loop iterations per LDA and interval; the ratio reference / present;
the load average; and whether every result (the forecast's and dispatch
point's states, every row of the metering's tables) is the same to the bit.
The linearisations are not timed (``dsosim bench linearise`` does those).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from dsosim.federates.common.config import load_federation
from dsosim.federates.dso.__main__ import utility_grid
from dsosim.federates.dso.grid import GridOperator
from dsosim.runner.bench import voltvar_reference
from dsosim.runner.build.federation import build

DEFAULT_SCENARIO = Path("configs/scenarios/study.toml")
PHASES = ("forecast", "dispatch", "measure", "expost")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        type=Path,
        default=DEFAULT_SCENARIO,
        help=f"scenario whose LDAs are run (default {DEFAULT_SCENARIO})",
    )
    parser.add_argument(
        "--start-hour", type=float, default=16.0, help="first interval's hour (default 16)"
    )
    parser.add_argument("--intervals", type=int, default=24, help="intervals (default 24)")
    parser.add_argument(
        "--der-sd", type=float, default=0.02, help="sd of the seeded dispatch, MW (0.02)"
    )
    parser.add_argument(
        "--response-sd", type=float, default=0.002, help="sd of the response's error, MW"
    )
    parser.add_argument("--seed", type=int, default=1)


class _Meter:
    """Thread CPU and calls of a utility's power flows, by phase."""

    def __init__(self) -> None:
        self.phase = ""
        self.cpu: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)

    def wrap(self, obj: Any, name: str, label: str, *, phase: str | None = None) -> None:
        inner: Callable[..., Any] = getattr(obj, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            outer = self.phase
            if phase is not None:
                self.phase = phase
            key = f"{label}:{self.phase}" if phase is None else label
            start = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.cpu[key] += time.thread_time() - start
                self.count[key] += 1
                self.phase = outer

        setattr(obj, name, timed)


def _grids(scenario: Path, folder: Path, start_hour: float, hours: float) -> list[GridOperator]:
    build(scenario, folder, hours=hours, start_hour=start_hour)
    config, base = load_federation(folder / "federation.json")
    return [utility_grid(config, cfg.name, base) for cfg in config.dsos]


def _instrument(grid: GridOperator, meter: _Meter) -> None:
    meter.wrap(grid, "_solve", "volt-var")
    meter.wrap(grid, "_settle", "volt-var")
    meter.wrap(grid.feeder, "solve_flow", "solves")
    meter.wrap(grid, "expost", "expost", phase="expost")
    meter.wrap(grid, "measure", "measure", phase="measure")


def _by_aggregator(grid: GridOperator, mw: np.ndarray) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for loc, x in zip(grid.locations, mw.tolist(), strict=True):
        out.setdefault(loc.aggregator, {})[loc.bus] = x
    return out


def _interval(grid: GridOperator, meter: _Meter, k: int, rng_seed: list[int], args: Any) -> str:
    """One DSO interval; the fingerprint of everything it produced."""
    rng = np.random.default_rng(rng_seed)
    dispatch = rng.normal(0.0, args.der_sd, len(grid.locations))
    actual = dispatch + rng.normal(0.0, args.response_sd, len(grid.locations))
    meter.phase = "forecast"
    point = grid.forecast(k)
    meter.phase = "dispatch"
    at = grid.linearise_at(k, dispatch)
    meter.phase = ""
    aggregators = sorted({loc.aggregator for loc in grid.locations})
    _, allocation, tables = grid.measure(
        k,
        _by_aggregator(grid, actual),
        _by_aggregator(grid, dispatch),
        aggregators,
        30.0,
        0.0,
        tariff=0.1,
    )
    parts = [point.state.v_pu.tobytes().hex(), repr(point.state.losses_mw)]
    if at is not None:
        parts += [at[0].v_pu.tobytes().hex(), repr(at[0].losses_mw)]
    parts.append(repr(sorted((str(p), v) for p, v in allocation.items())))
    parts += [repr(rows) for _, (_, rows) in sorted(tables.items())]
    return "\n".join(parts)


def handle(args: argparse.Namespace) -> int:
    if args.intervals < 1 or not args.scenario.is_file():
        print("error: need --intervals >= 1 and an existing --scenario", file=sys.stderr)
        return 2
    threadpool_limits(limits=1)
    hours = args.intervals / 12.0 + 1.0
    with tempfile.TemporaryDirectory(prefix="dsosim-bench-voltvar-") as tmp:
        present = _grids(args.scenario, Path(tmp) / "present", args.start_hour, hours)
        reference = _grids(args.scenario, Path(tmp) / "reference", args.start_hour, hours)
    meters = {False: _Meter(), True: _Meter()}
    for grid in present:
        _instrument(grid, meters[False])
    for grid in reference:
        voltvar_reference.install(grid)
        _instrument(grid, meters[True])
    identical = total = 0
    for k in range(args.intervals):
        for i, (new, old) in enumerate(zip(present, reference, strict=True)):
            seed = [args.seed, i, k]
            got: dict[bool, str] = {}
            for ref in (False, True) if (k + i) % 2 == 0 else (True, False):
                if ref:
                    with voltvar_reference.installed():
                        got[ref] = _interval(old, meters[ref], k, seed, args)
                else:
                    got[ref] = _interval(new, meters[ref], k, seed, args)
            total += 1
            identical += got[False] == got[True]
    n, lda = args.intervals, len(present)
    load = os.getloadavg()
    nodes = [len(g.feeder.node_names) for g in present]
    print(
        f"voltvar: {lda} LDAs of {args.scenario.name} ({min(nodes)}-{max(nodes)} nodes), "
        f"{n} intervals from hour {args.start_hour:g}: each DSO interval run by the present "
        "code and by the reference"
    )
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    print("CPU ms per interval (all LDAs): reference -> present (ratio)")
    rows = [(f"volt-var closed loop at {p}", f"volt-var:{p}") for p in PHASES]
    rows += [("volt-var closed loop, all", "volt-var:*"), ("  of which OpenDSS solves", "solves:*")]
    rows += [("ex-post check (whole)", "expost")]
    rows += [("metering without the ex-post check", "measure-own")]
    for label, key in rows:
        ms = {ref: _ms(meters[ref], key) / n for ref in (True, False)}
        ratio = ms[True] / ms[False] if ms[False] > 0 else float("nan")
        print(f"  {label:38s} {ms[True]:7.2f} -> {ms[False]:7.2f}  ({ratio:.2f}x)")
    for ref, label in ((True, "reference"), (False, "present")):
        m = meters[ref]
        solves = {p: m.count[f"solves:{p}"] / (n * lda) for p in PHASES}
        loops = {p: m.count[f"volt-var:{p}"] / (n * lda) for p in PHASES}
        print(
            f"OpenDSS solves per LDA and interval, {label}: "
            + ", ".join(f"{p} {solves[p]:.2f} ({loops[p]:.2f} closed loops)" for p in PHASES)
        )
    print(f"results identical to the bit: {identical} of {total} LDA intervals")
    return 0 if identical == total else 1


def _ms(meter: _Meter, key: str) -> float:
    if key.endswith(":*"):
        return 1e3 * sum(meter.cpu[f"{key[:-2]}:{p}"] for p in PHASES)
    if key == "measure-own":
        return 1e3 * (meter.cpu["measure"] - meter.cpu["expost"] - meter.cpu["volt-var:measure"])
    return 1e3 * meter.cpu[key]
