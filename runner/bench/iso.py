"""ISO real-time clear with N LDA interface curves: CPU per clear against the
same clears with every bid column in the QP, same run.

case118 (quadratic costs) with one interface curve per LDA at the study's
T-D buses (``configs/scenarios/study.toml``), each ``--blocks`` blocks at
distinct prices (the study's LDA markets bid 250-300 each), and the case's
loads scaled by a seeded daily shape with noise. Every interval is cleared
by one warm :class:`~dsosim.federates.iso.dcopf.DcOpf` as the ISO federate
does; the reference is a second DcOpf whose QP holds every bid column
(``clearing.BID_WINDOW`` = inf: the QP as it was before it kept only the
bids near their bus's price). Both clear the same inputs; the largest LMP
difference between them is printed. CPU time per clear (this process's),
median after the first ``--warm`` clears.

A second reference times the same clears with the curve flattening as it
was before it went to numpy (``iso_reference.flatten``: one Python append per
block), so the gain of that change shows in the same run ("loop flatten");
and the last lines time checking one interface curve's blocks (BidCurve's
validation) at once against block by block, and decoding the interface bids
from the wire with their blocks read at once against one by one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit

import numpy as np

from dsosim.federates.common import curves as curves_module
from dsosim.federates.common import messages as msg
from dsosim.federates.common.curves import BidCurve
from dsosim.federates.iso.case import load_case
from dsosim.federates.iso.dcopf import BusCurve, DcOpf, clearing
from dsosim.runner.bench import iso_reference

TD_BUSES = (59, 116, 90, 80, 54, 42, 15, 49)
"""The study's T-D buses, in the order of its LDAs."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ldas", default="1,2,4,8", help="LDA counts to run, comma-separated (at most 8)"
    )
    parser.add_argument("--blocks", type=int, default=300, help="blocks per interface curve")
    parser.add_argument("--intervals", type=int, default=60, help="clears per LDA count")
    parser.add_argument("--warm", type=int, default=5, help="first clears not timed")
    parser.add_argument("--seed", type=int, default=1)


def _inputs(
    n_lda: int, blocks: int, intervals: int, seed: int
) -> list[tuple[np.ndarray, list[BusCurve]]]:
    case = load_case("case118")
    rng = np.random.default_rng(seed)
    out = []
    for k in range(intervals):
        shape = 0.85 + 0.15 * np.sin(2 * np.pi * (k / 288.0 - 0.25))
        load = case.bus_pd_mw * shape * rng.uniform(0.98, 1.02, case.n_bus)
        curves = []
        for i in range(n_lda):
            price = np.sort(rng.uniform(5.0, 60.0, blocks))[::-1]
            mw = rng.uniform(0.01, 0.2, blocks)
            base = 15.0 + 3.0 * i + rng.normal(0.0, 0.5)
            curve = BidCurve(base, tuple(zip(price.tolist(), mw.tolist(), strict=True)))
            curves.append(BusCurve(TD_BUSES[i], curve, f"lda{i + 1}"))
        out.append((load, curves))
    return out


def _run(
    inputs: list[tuple[np.ndarray, list[BusCurve]]], warm: int
) -> tuple[float, list[np.ndarray], int]:
    """Median CPU ms per clear (after ``warm``), every LMP vector, QP columns at the end."""
    opf = DcOpf(load_case("case118"))
    times, lmps = [], []
    for k, (load, curves) in enumerate(inputs):
        start = time.process_time()
        result = opf.clear(load, curves)
        if k >= warm:
            times.append(time.process_time() - start)
        if result.status != "optimal":
            raise RuntimeError(f"clear {k}: {result.status} {result.message}")
        lmps.append(result.lmp)
    qp_cols = opf._qp.getNumCol() if opf._qp is not None else 0
    return 1000.0 * statistics.median(times), lmps, qp_cols


def handle(args: argparse.Namespace) -> int:
    try:
        counts = [int(x) for x in args.ldas.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1 or max(counts) > len(TD_BUSES):
        print(f"error: --ldas takes counts from 1 to {len(TD_BUSES)}", file=sys.stderr)
        return 2
    if args.blocks < 1 or args.intervals <= args.warm or args.warm < 0:
        print("error: need --blocks >= 1 and --intervals > --warm >= 0", file=sys.stderr)
        return 2
    print(
        f"{'LDAs':>4} {'bids':>6} {'QP cols':>8} {'ms/clear':>9} "
        f"{'loop flatten':>13} {'ratio':>6} "
        f"{'every bid in QP':>16} {'QP cols':>8} {'ratio':>6} {'max |dLMP|':>11}"
    )
    window, flatten = clearing.BID_WINDOW, clearing.flatten
    for n in counts:
        inputs = _inputs(n, args.blocks, args.intervals, args.seed)
        ms, lmps, cols = _run(inputs, args.warm)
        clearing.flatten = iso_reference.flatten
        try:
            loop_ms, loop_lmps, _ = _run(inputs, args.warm)
        finally:
            clearing.flatten = flatten
        clearing.BID_WINDOW = float("inf")
        try:
            ref_ms, ref_lmps, ref_cols = _run(inputs, args.warm)
        finally:
            clearing.BID_WINDOW = window
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(lmps, ref_lmps, strict=True))
        if any(a.tobytes() != b.tobytes() for a, b in zip(lmps, loop_lmps, strict=True)):
            print(f"error: {n} LDAs: LMPs differ with the loop flattening", file=sys.stderr)
            return 1
        print(
            f"{n:>4} {n * args.blocks:>6} {cols:>8} {ms:>9.2f} {loop_ms:>13.2f} "
            f"{loop_ms / ms:>6.2f} {ref_ms:>16.2f} {ref_cols:>8} {ref_ms / ms:>6.2f} {diff:>11.1e}"
        )
    print(
        "(CPU ms per clear, median; 'loop flatten': the same clears with the per-block "
        "flattening, LMPs bit for bit the same; the last reference's QP holds every bid column)"
    )
    print(_validation_line(args.blocks, args.seed))
    print(_decode_line(max(counts), args.blocks, args.seed))
    return 0


def _decode_line(n_lda: int, blocks: int, seed: int) -> str:
    """Milliseconds for the ISO to decode ``n_lda`` interface bids from the
    wire, the blocks read at once against one by one (same messages)."""
    curves = _inputs(n_lda, blocks, 1, seed)[0][1]
    raws = [(msg.encode(msg.InterfaceBid(c.owner, 0, c.at, c.curve)), c.owner) for c in curves]

    def per_interval() -> float:
        number = 20
        runs = timeit.repeat(
            lambda: [msg.decode(raw, source=sender) for raw, sender in raws],
            number=number,
            repeat=5,
        )
        return 1e3 * min(runs) / number

    at_once = per_interval()
    plain_pairs = msg._plain_pairs
    msg._plain_pairs = lambda raw: None
    try:
        one_by_one = per_interval()
    finally:
        msg._plain_pairs = plain_pairs
    return (
        f"decoding {n_lda} interface bids of {blocks} blocks: {at_once:.2f} ms with the blocks "
        f"read at once, {one_by_one:.2f} ms one by one (ratio {one_by_one / at_once:.2f}; "
        "wall, best of 5)"
    )


def _validation_line(blocks: int, seed: int) -> str:
    """Microseconds to build (and so check) one curve of ``blocks`` blocks."""
    rng = np.random.default_rng(seed)
    price = np.sort(rng.uniform(5.0, 60.0, blocks))[::-1].tolist()
    pairs = tuple(zip(price, rng.uniform(0.01, 0.2, blocks).tolist(), strict=True))
    number = 200

    def per_curve() -> float:
        return (
            1e6 * min(timeit.repeat(lambda: BidCurve(1.0, pairs), number=number, repeat=5)) / number
        )

    at_once = per_curve()
    threshold = curves_module._CHECK_AT_ONCE
    curves_module._CHECK_AT_ONCE = sys.maxsize
    try:
        one_by_one = per_curve()
    finally:
        curves_module._CHECK_AT_ONCE = threshold
    return (
        f"BidCurve of {blocks} blocks: {at_once:.1f} us checked at once, "
        f"{one_by_one:.1f} us block by block (ratio {one_by_one / at_once:.2f}; wall, best of 5)"
    )
