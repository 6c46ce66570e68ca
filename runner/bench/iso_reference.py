"""Reference for ``dsosim bench iso``: the curve flattening of
``common/blocks.py`` as it was before it went to numpy (one Python append per
block), kept verbatim so the benchmark times the ISO's clear with both in the
same run, and tests/test_blocks.py checks that the current one returns the
same arrays bit for bit. Not used by any federate; do not edit (a change here
moves the reference)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dsosim.federates.common.blocks import Blocks, PlacementError
from dsosim.federates.common.curves import Place, PlacedCurve


def flatten(
    curves: Sequence[PlacedCurve[Place]], positions: Mapping[Place, int], kind: str, among: str
) -> Blocks:
    n = len(positions)
    base = np.zeros(n)
    has_curve = np.zeros(n, dtype=bool)
    curve_of: list[int] = []
    place_of: list[int] = []
    price: list[float] = []
    size: list[float] = []
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
        for p, mw in placed.curve.blocks:
            curve_of.append(c)
            place_of.append(pos)
            price.append(p)
            size.append(mw)
    return Blocks(
        curve=np.asarray(curve_of, dtype=np.int64),
        place=np.asarray(place_of, dtype=np.int64),
        price=np.asarray(price, dtype=float),
        mw=np.asarray(size, dtype=float),
        base_mw=base,
        has_curve=has_curve,
    )
