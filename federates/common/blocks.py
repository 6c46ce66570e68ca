"""Placed bid curves flattened into blocks: what a market's LP needs.

The ISO's DC-OPF (curves at transmission buses) and the LDA market (curves at
DER elements of a feeder) both turn their curves into one row per block,
knowing which curve and which place each block came from, and sum the curves'
fixed parts per place. This is that step, once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from dsosim.federates.common.curves import Place, PlacedCurve


class PlacementError(ValueError):
    """A curve sits at a place the market does not have."""


@dataclass(frozen=True, slots=True, eq=False)
class Blocks:
    """Every block of a sequence of placed curves, in curve then block order."""

    curve: np.ndarray
    """Index of each block's curve."""
    place: np.ndarray
    """Position of each block's place."""
    price: np.ndarray
    """$/MWh per block."""
    mw: np.ndarray
    """MW per block."""
    base_mw: np.ndarray
    """Per place: the sum of the ``base_mw`` of the curves there."""
    has_curve: np.ndarray
    """Per place: whether any curve is there."""


def flatten(
    curves: Sequence[PlacedCurve[Place]], positions: Mapping[Place, int], kind: str, among: str
) -> Blocks:
    """Flatten ``curves`` whose places are keys of ``positions`` (place ->
    position ``0..len(positions)-1``). A curve elsewhere raises
    :class:`PlacementError` naming the curve, its owner and the place, as
    "``kind`` X is not a ``kind`` of ``among``" (e.g. bus, case ieee14)."""
    n = len(positions)
    base = np.zeros(n)
    has_curve = np.zeros(n, dtype=bool)
    pos_of = np.empty(len(curves), dtype=np.int64)
    for c, placed in enumerate(curves):
        try:
            pos = positions.get(placed.at)
        except TypeError:  # an unhashable place
            pos = None
        if pos is None:
            raise PlacementError(
                f"curve {c} of {placed.owner!r}: {kind} {placed.at!r} is not a {kind} of {among}"
            )
        has_curve[pos] = True
        base[pos] += placed.curve.base_mw
        pos_of[c] = pos
    # the blocks in one pass in C (a curve's blocks are validated (price, mw) pairs)
    counts = np.fromiter((len(placed.curve.blocks) for placed in curves), np.int64, len(curves))
    values = chain.from_iterable(chain.from_iterable(placed.curve.blocks for placed in curves))
    pairs = np.fromiter(values, float, 2 * int(counts.sum())).reshape(-1, 2)
    return Blocks(
        curve=np.repeat(np.arange(len(curves), dtype=np.int64), counts),
        place=np.repeat(pos_of, counts),
        price=pairs[:, 0].copy(),
        mw=pairs[:, 1].copy(),
        base_mw=base,
        has_curve=has_curve,
    )
