"""Feeder linearisation of the study's LDAs: the present one against the one it replaced.

Each LDA's utility (:class:`~dsosim.federates.dso.grid.GridOperator`, built as
the DSO federate builds it, volt-var inverters included) is set, at
``--intervals`` intervals spread over the scenario's day, to the interval's
forecast load with its DERs at a seeded output (normal, sd ``--der-sd`` MW
per location), solved, and linearised there as the utility does at every
forecast and every dispatch (``GridOperator._linearise``: the factorised
sensitivities and the volt-var closed loop), twice: with the present
implementation and with the reference, the implementation before its
speed-up (:mod:`.linearise_reference`), in alternating order. Each feeder's
first linearisation (the check against OpenDSS, the Jacobian's static parts
and ordering) is made once before timing, with either.

It prints the CPU time per linearisation of each (this process's CPU: on a
busy machine wall time includes waiting for a core), their ratio, the load
average, and whether every result (voltage, loading and head-power
derivatives, headrooms) is the same to the bit. BLAS runs on one thread, as
in the DSO federate.

Then the re-linearisation at the market's dispatch (``GridOperator.linearise_at``:
the power flow there and its linearisation) with the reuse of the
forecast's linearisation (``reuse_linearisation_kw`` = ``--reuse-kw``, default
10) against none (0, the reference), in alternating order: at each
interval each LDA is forecast (DERs at the seeded output) and dispatched at
a seeded move of every location, uniform within ``--move-kw`` (default 8:
in the study's evening peak half the dispatches move no location by more
than 6.9 kW and 71 % by at most 10), each time from the forecast's taps. It
prints the CPU per dispatch of each, their ratio, the share reused, and the
largest difference between a reused voltage derivative and the one computed
afresh (the approximation's bound is tests/test_reuse_linearisation.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from dsosim.federates.common.config import load_federation
from dsosim.federates.dso import controls
from dsosim.federates.dso.__main__ import utility_grid
from dsosim.federates.dso.feeder import Sensitivities
from dsosim.federates.dso.grid import GridOperator
from dsosim.runner.bench import linearise_reference
from dsosim.runner.build.federation import build

DEFAULT_SCENARIO = Path("configs/scenarios/study.toml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        type=Path,
        default=DEFAULT_SCENARIO,
        help=f"scenario whose LDAs are linearised (default {DEFAULT_SCENARIO})",
    )
    parser.add_argument(
        "--intervals",
        type=int,
        default=24,
        help="intervals, spread over the scenario's horizon (default 24)",
    )
    parser.add_argument(
        "--der-sd", type=float, default=0.02, help="sd of the DERs' seeded output, MW (0.02)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--reuse-kw",
        type=float,
        default=10.0,
        help="reuse_linearisation_kw of the present side of the dispatch comparison (10)",
    )
    parser.add_argument(
        "--move-kw",
        type=float,
        default=8.0,
        help="largest move of a location from the forecast to the dispatch, kW (8)",
    )


def _grids(scenario: Path, folder: Path) -> list[GridOperator]:
    build(scenario, folder)
    config, base = load_federation(folder / "federation.json")
    return [utility_grid(config, cfg.name, base) for cfg in config.dsos]


def _set(grid: GridOperator, interval: int, der_sd: float, seed: int, index: int) -> None:
    rng = np.random.default_rng([seed, index, interval])
    grid.feeder.set_load_multipliers(grid.profile[interval])
    grid.feeder.set_der_mw(rng.normal(0.0, der_sd, len(grid.locations)))
    grid._solve()


def _same(a: Sensitivities, b: Sensitivities) -> bool:
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            if x.shape != y.shape or not np.array_equal(x.view(np.uint8), y.view(np.uint8)):
                return False
        elif x != y:
            return False
    return True


def _timed(grid: GridOperator, reference: bool) -> tuple[float, Sensitivities]:
    state = grid.feeder.solved_state()
    if reference:
        with linearise_reference.installed(grid.feeder):
            start = time.process_time()
            sens = grid._linearise(state)
            return time.process_time() - start, sens
    start = time.process_time()
    sens = grid._linearise(state)
    return time.process_time() - start, sens


def _quantiles(ms: list[float]) -> str:
    s = sorted(ms)
    return (
        f"median {statistics.median(s):.2f} ms, p10 {s[len(s) // 10]:.2f}, "
        f"p90 {s[(9 * len(s)) // 10]:.2f}"
    )


def handle(args: argparse.Namespace) -> int:
    if args.intervals < 1 or not args.scenario.is_file():
        print("error: need --intervals >= 1 and an existing --scenario", file=sys.stderr)
        return 2
    threadpool_limits(limits=1)
    with tempfile.TemporaryDirectory(prefix="dsosim-bench-linearise-") as tmp:
        grids = _grids(args.scenario, Path(tmp))
    n = len(grids[0].profile)
    intervals = sorted({int(k) for k in np.linspace(0, n - 1, args.intervals)})
    for i, grid in enumerate(grids):  # the first linearisation of each, untimed, with each
        _set(grid, intervals[0], args.der_sd, args.seed, i)
        _timed(grid, False)
        _timed(grid, True)
    times: dict[bool, list[float]] = {False: [], True: []}
    identical = total = 0
    for k in intervals:
        for i, grid in enumerate(grids):
            _set(grid, k, args.der_sd, args.seed, i)
            order = (False, True) if (k + i) % 2 == 0 else (True, False)
            got = {}
            for reference in order:
                seconds, got[reference] = _timed(grid, reference)
                times[reference].append(seconds * 1000.0)
            total += 1
            identical += _same(got[False], got[True])
    nodes = [len(g.feeder.node_names) for g in grids]
    ders = [len(g.feeder._ders_by_bus()) for g in grids]
    load = os.getloadavg()
    print(
        f"linearise: {len(grids)} LDAs of {args.scenario.name} ({min(nodes)}-{max(nodes)} nodes, "
        f"{min(ders)}-{max(ders)} DER buses, volt-var closed loop), {len(intervals)} intervals: "
        f"{total} linearisations each way"
    )
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    print(f"reference (before the speed-up): {_quantiles(times[True])} CPU per linearisation")
    print(f"present:                         {_quantiles(times[False])} CPU per linearisation")
    ratio = statistics.median(times[True]) / statistics.median(times[False])
    total_ratio = sum(times[True]) / sum(times[False])
    print(f"ratio reference / present: {ratio:.2f}x (medians), {total_ratio:.2f}x (totals)")
    print(f"results identical to the bit: {identical} of {total} linearisations")
    _dispatch(grids, intervals, args)
    return 0 if identical == total else 1


def _dispatch(grids: list[GridOperator], intervals: list[int], args: argparse.Namespace) -> None:
    """The re-linearisation at a seeded dispatch with and without the reuse."""
    times: dict[bool, list[float]] = {False: [], True: []}
    reused = total = 0
    worst = 0.0
    for k in intervals:
        for i, grid in enumerate(grids):
            rng = np.random.default_rng([args.seed, i, k, 2])
            n = len(grid.locations)
            grid.der_mw = rng.normal(0.0, args.der_sd, n)
            reuse_mw, grid.reuse_mw = args.reuse_kw / 1000.0, 0.0
            forecast = grid.forecast(k)  # linearised afresh
            fresh = grid._fresh
            dispatch = grid.der_mw + rng.uniform(-1.0, 1.0, n) * args.move_kw / 1000.0
            got = {}
            for reuse in (False, True) if (k + i) % 2 == 0 else (True, False):
                assert forecast.controls is not None
                controls.apply(grid.feeder, forecast.controls)
                grid._fresh, grid.reuse_mw = fresh, reuse_mw if reuse else 0.0
                before = grid.reused
                start = time.process_time()
                point = grid.linearise_at(k, dispatch)
                times[reuse].append((time.process_time() - start) * 1000.0)
                if reuse:
                    reused += grid.reused - before
                got[reuse] = point
            grid.reuse_mw = 0.0
            total += 1
            if got[False] is not None and got[True] is not None:
                diff = np.abs(np.asarray(got[True][1].dv_dp) - np.asarray(got[False][1].dv_dp))
                worst = max(worst, float(diff.max(initial=0.0)))
    print(
        f"dispatch re-linearisation (power flow and linearisation), moves within "
        f"{args.move_kw:g} kW, reuse_linearisation_kw {args.reuse_kw:g}: {total} each way"
    )
    print(f"reference (never reused):        {_quantiles(times[False])} CPU per dispatch")
    print(f"present:                         {_quantiles(times[True])} CPU per dispatch")
    ratio = sum(times[False]) / sum(times[True])
    print(
        f"ratio reference / present: {ratio:.2f}x (totals); reused {reused} of {total}; "
        f"largest difference of a reused voltage derivative {worst:.2e} pu/MW"
    )
