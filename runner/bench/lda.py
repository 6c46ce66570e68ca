"""LDA market hot path: interface bids and clearings against the reference implementation.

The scenario (default the study: 8 LDAs) runs for ``--hours`` in one process
(the in-process bench's ``roles`` mode, no HELICS), and every call the DMOs
make to ``build_interface_bid`` and ``clear_lda`` (real-time and day-ahead) is
recorded with its inputs. The recorded calls are then replayed ``--repeats``
times through the reference implementation (``lda_reference``: the module as
it was before the hot-path work) and through the current ``lda_market``,
alternating which goes first, and the table gives the milliseconds per
interface bid and per clearing of each (the best of the repeats, wall and
CPU), their ratio, and whether every result is identical: every field, arrays
byte for byte, everything else by its ``repr`` (exact for floats).

The machine may be shared: the load average is printed with the figures; the
ratio, measured in the same run on the same inputs, moves much less than the
absolute times.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from dsosim.federates.markets import day_ahead, lda_market, nodal_dmo
from dsosim.runner.bench import lda_reference

STUDY = Path(__file__).resolve().parents[2] / "configs" / "scenarios" / "study.toml"
KINDS = ("bid", "clear")
Call = tuple[str, tuple[Any, ...], dict[str, Any]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        default=str(STUDY),
        help="scenario whose DMO calls are recorded (default: the study, 8 LDAs)",
    )
    parser.add_argument(
        "--hours", type=float, default=2.0, help="simulated hours recorded (default: %(default)s)"
    )
    parser.add_argument(
        "--start-hour",
        type=float,
        default=None,
        help="hour of the day the run starts (default: the scenario's; the feeders' limits "
        "bind around midday, where the interface bids need LPs)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="replays of every call per side (default: 3)"
    )


@contextmanager
def recording(calls: list[Call]) -> Iterator[None]:
    """Record the DMOs' calls to the LDA market (the modules that make them
    import the functions by name, so those names are wrapped)."""
    wrapped: list[tuple[ModuleType, str, Callable[..., Any]]] = []

    def recorder(kind: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append((kind, args, kwargs))
            return func(*args, **kwargs)

        return call

    try:
        for module in (nodal_dmo, day_ahead):
            for name, kind in (("build_interface_bid", "bid"), ("clear_lda", "clear")):
                wrapped.append((module, name, getattr(module, name)))
                setattr(module, name, recorder(kind, getattr(module, name)))
        yield
    finally:
        for module, name, func in wrapped:
            setattr(module, name, func)


def record(scenario: str | Path, hours: float, start_hour: float | None = None) -> list[Call]:
    """Run the scenario in one process and return the DMOs' calls in order."""
    from dsosim.runner.bench.inprocess import measure
    from dsosim.runner.build.federation import build

    calls: list[Call] = []
    with tempfile.TemporaryDirectory(prefix="dsosim-bench-lda-") as tmp:
        build(scenario, tmp, hours=hours, start_hour=start_hour)
        with recording(calls):
            measure(Path(tmp) / "federation.json", "roles")
    return calls


@dataclass
class Timing:
    wall_s: dict[str, float]
    cpu_s: dict[str, float]


def replay(module: ModuleType, calls: list[Call]) -> tuple[Timing, list[Any]]:
    """Every call through ``module``; time per kind and the results."""
    funcs = {"bid": module.build_interface_bid, "clear": module.clear_lda}
    wall = dict.fromkeys(KINDS, 0.0)
    cpu = dict.fromkeys(KINDS, 0.0)
    results = []
    for kind, args, kwargs in calls:
        t, c = time.perf_counter(), time.process_time()
        results.append(funcs[kind](*args, **kwargs))
        wall[kind] += time.perf_counter() - t
        cpu[kind] += time.process_time() - c
    return Timing(wall, cpu), results


def fields(result: Any) -> list[tuple[str, bytes | str]]:
    """A result's fields, arrays as bytes (with dtype and shape), else repr."""
    out: list[tuple[str, bytes | str]] = []
    for name in result.__slots__:
        value = getattr(result, name)
        if isinstance(value, np.ndarray):
            out.append((name, f"{value.dtype}{value.shape}".encode() + value.tobytes()))
        else:
            out.append((name, repr(value)))
    return out


def differences(ours: list[Any], theirs: list[Any], calls: list[Call]) -> list[str]:
    """Calls whose results differ, naming the fields."""
    out = []
    for k, (a, b, (kind, _, _)) in enumerate(zip(ours, theirs, calls, strict=True)):
        differ = [n for (n, x), (_, y) in zip(fields(a), fields(b), strict=True) if x != y]
        if differ:
            out.append(f"call {k} ({kind}): {', '.join(differ)}")
    return out


def handle(args: argparse.Namespace) -> int:
    if args.repeats < 1 or args.hours <= 0.0:
        print("error: need --repeats >= 1 and --hours > 0", file=sys.stderr)
        return 2
    from dsosim.runner.build.scenario import ScenarioError

    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    try:
        calls = record(args.scenario, args.hours, args.start_hour)
    except ScenarioError as exc:
        print(f"dsosim bench lda: {exc}", file=sys.stderr)
        return 2
    if not calls:
        print(f"dsosim bench lda: {args.scenario} has no nodal DMO calls", file=sys.stderr)
        return 2
    count = {kind: sum(1 for c in calls if c[0] == kind) for kind in KINDS}
    print(
        f"recorded {count['bid']} interface bids and {count['clear']} clearings "
        f"({Path(args.scenario).name}, {args.hours:g} h"
        + (f" from {args.start_hour:g}:00)" if args.start_hour is not None else ")")
    )
    sides = {"reference": lda_reference, "current": lda_market}
    best: dict[str, Timing] = {}
    results: dict[str, list[Any]] = {}
    for r in range(args.repeats):
        for side in sorted(sides, reverse=r % 2 == 1):
            timing, results[side] = replay(sides[side], calls)
            if side not in best:
                best[side] = timing
            else:
                for kind in KINDS:
                    best[side].wall_s[kind] = min(best[side].wall_s[kind], timing.wall_s[kind])
                    best[side].cpu_s[kind] = min(best[side].cpu_s[kind], timing.cpu_s[kind])
    diff = differences(results["current"], results["reference"], calls)
    print(f"{'ms per call':<16}{'reference':>12}{'current':>12}{'ratio':>8}   (wall; cpu)")
    for kind, label in (("bid", "interface bid"), ("clear", "clearing")):
        n = max(count[kind], 1)
        ref, cur = best["reference"], best["current"]
        rw, cw = 1e3 * ref.wall_s[kind] / n, 1e3 * cur.wall_s[kind] / n
        rc, cc = 1e3 * ref.cpu_s[kind] / n, 1e3 * cur.cpu_s[kind] / n
        print(
            f"{label:<16}{rw:>12.2f}{cw:>12.2f}{rw / max(cw, 1e-9):>8.1f}"
            f"   ({rc:.2f} -> {cc:.2f} ms CPU, {rc / max(cc, 1e-9):.1f}x)"
        )
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    if diff:
        print(f"results differ in {len(diff)} of {len(calls)} calls:")
        for line in diff[:20]:
            print(f"  {line}")
        return 1
    print(f"results identical in all {len(calls)} calls")
    return 0
