"""LDA market hot path: interface bids and clearings against the reference implementation.

The scenario (default the study: 8 LDAs) runs for ``--hours`` in one process
(the in-process bench's ``roles`` mode, no HELICS), and every call the DMOs
make to ``build_interface_bid`` and ``clear_lda`` (real-time and day-ahead) is
recorded with its inputs. The recorded calls are then replayed ``--repeats``
times through the reference implementation (``lda_reference``: the module as
it was before the hot-path work) and through the current ``lda_market``,
alternating which goes first, and the table gives the milliseconds per
interface bid and per clearing of each (the best of the repeats, wall and
CPU), their ratio, and whether the results agree: every clearing identical
(every field, arrays byte for byte, everything else by its ``repr``, exact
for floats); every interface bid identical or within the bound the price
sweep states (``lda_market.SWEEP_PRICE_BOUND`` and ``SWEEP_MW_BOUND``: its
steps are pivots of its own since the reference solved each with HiGHS, so a
breakpoint between block prices may differ by rounding), with how many bids
are identical and the largest gaps of the others.

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


def fields(result: Any, names: tuple[str, ...] | None = None) -> list[tuple[str, bytes | str]]:
    """A result's fields (``names``, default all), arrays as bytes (with
    dtype and shape), else repr."""
    out: list[tuple[str, bytes | str]] = []
    for name in result.__slots__ if names is None else names:
        value = getattr(result, name)
        if isinstance(value, np.ndarray):
            out.append((name, f"{value.dtype}{value.shape}".encode() + value.tobytes()))
        else:
            out.append((name, repr(value)))
    return out


DIAGNOSTIC = ("relaxed", "n_lp_solves", "flattened_mw")
"""Interface bid fields that describe the sweep's path, not the bid (nothing
downstream reads them): the rows it had to relax (compared as a set of
elements: their worst violation is over the prices the sweep visited, and of
a kinked branch's two rows the worse one is kept, a tie to rounding), how
many steps it solved, the largest fall it flattened."""


def bid_outside_bound(ours: lda_market.AggregatedBid, ref: Any) -> list[str]:
    """Where the interface bid ``ours`` is not ``ref`` within the sweep's
    stated bound (``SWEEP_PRICE_BOUND``, ``SWEEP_MW_BOUND``): the same
    ``base_mw``, ``fixed_mw``, ``n_rows``, number of blocks and elements of
    relaxed rows (see ``DIAGNOSTIC``), every block's price and MW within the
    bound. Empty if it is."""
    out = []
    a, b = ours.curve, ref.curve
    if (repr(a.base_mw), repr(ours.fixed_mw), ours.n_rows) != (
        repr(b.base_mw),
        repr(ref.fixed_mw),
        ref.n_rows,
    ):
        out.append("base_mw, fixed_mw or n_rows")
    if len(a.blocks) != len(b.blocks):
        out.append(f"{len(a.blocks)} blocks, not {len(b.blocks)}")
    else:
        dp, dq = bid_gaps(ours, ref)
        if dp > lda_market.SWEEP_PRICE_BOUND:
            out.append(f"a price {dp:.3g} $/MWh away")
        if dq > lda_market.SWEEP_MW_BOUND:
            out.append(f"a quantity {dq:.3g} MW away")
    if {(c.kind, c.element) for c in ours.relaxed} != {(c.kind, c.element) for c in ref.relaxed}:
        out.append("relaxed rows")
    return out


def bid_gaps(ours: Any, ref: Any) -> tuple[float, float]:
    """Largest gap of a block's price ($/MWh) and MW between two bids with
    the same number of blocks."""
    a = np.array(ours.curve.blocks, dtype=float).reshape(-1, 2)
    b = np.array(ref.curve.blocks, dtype=float).reshape(-1, 2)
    gap = np.abs(a - b).max(axis=0, initial=0.0)
    return float(gap[0]), float(gap[1])


def differences(ours: list[Any], theirs: list[Any], calls: list[Call]) -> list[str]:
    """Calls whose results differ, naming the fields: clearings field by
    field, exactly; interface bids beyond the sweep's stated bound (see
    :func:`bid_outside_bound`)."""
    out = []
    for k, (a, b, (kind, _, _)) in enumerate(zip(ours, theirs, calls, strict=True)):
        if kind == "bid":
            differ = bid_outside_bound(a, b)
        elif repriced(a, b, calls[k][1][6]):
            continue
        else:
            differ = [
                n
                for (n, x), (_, y) in zip(fields(a, b.__slots__), fields(b), strict=True)
                if x != y
            ]
        if differ:
            out.append(f"call {k} ({kind}): {', '.join(differ)}")
    return out


def repriced(ours: lda_market.LdaClearing, ref: Any, limits: lda_market.Limits) -> bool:
    """A clearing whose prices differ from the reference's by design: its
    energy price took the imbalance penalty (``LdaClearing.repriced``)."""
    return ours.repriced or abs(ref.energy_price - ref.lmp) >= 0.5 * limits.imbalance_penalty


def bid_summary(ours: list[Any], theirs: list[Any], calls: list[Call]) -> str:
    """How many interface bids are identical to the reference (every field
    but the diagnostic ones, by repr), and the largest gaps of the others."""
    same = worst_p = worst_q = 0.0
    n = 0
    for a, b, (kind, _, _) in zip(ours, theirs, calls, strict=True):
        if kind != "bid":
            continue
        n += 1
        fa = [f for f in fields(a) if f[0] not in DIAGNOSTIC]
        fb = [f for f in fields(b) if f[0] not in DIAGNOSTIC]
        if fa == fb:
            same += 1
        elif len(a.curve.blocks) == len(b.curve.blocks):
            dp, dq = bid_gaps(a, b)
            worst_p, worst_q = max(worst_p, dp), max(worst_q, dq)
    return (
        f"interface bids: {int(same)} of {n} identical, the others within "
        f"{worst_p:.2g} $/MWh and {worst_q:.2g} MW of the reference "
        f"(bound {lda_market.SWEEP_PRICE_BOUND:g} $/MWh, {lda_market.SWEEP_MW_BOUND:g} MW)"
    )


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
    n_repriced = sum(
        repriced(a, b, call[1][6])
        for a, b, call in zip(results["current"], results["reference"], calls, strict=True)
        if call[0] == "clear"
    )
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
    print(bid_summary(results["current"], results["reference"], calls))
    if diff:
        print(f"results differ in {len(diff)} of {len(calls)} calls:")
        for line in diff[:20]:
            print(f"  {line}")
        return 1
    print(
        f"results identical in all {count['clear'] - n_repriced} clearings but {n_repriced} whose "
        f"energy price the reference put at the imbalance penalty, interface bids within the "
        f"bound in all {count['bid']}"
    )
    return 0
