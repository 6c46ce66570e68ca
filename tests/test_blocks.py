"""Curve flattening (common/blocks.py) and BidCurve.max_mw: bit for bit what
the plain per-block loops they replaced give (the flattening's is kept as the
benchmark's reference, runner/bench/iso_reference.py); long curves checked at
once exactly as block by block."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest

from dsosim.federates.common.blocks import PlacementError, flatten
from dsosim.federates.common.curves import BidCurve, PlacedCurve
from dsosim.runner.bench import iso_reference


def _curves(rng: np.random.Generator, n_curves: int, max_blocks: int) -> list[PlacedCurve[str]]:
    out = []
    for c in range(n_curves):
        n = int(rng.integers(0, max_blocks + 1))
        prices = np.sort(rng.uniform(-50.0, 300.0, n))[::-1].tolist()
        if n and c % 3 == 0:
            prices[0] = math.ceil(prices[0])  # an int price, as a hand-written curve may have
        mws = rng.uniform(1e-4, 3.0, n).tolist()
        curve = BidCurve(float(rng.normal(0.0, 5.0)), tuple(zip(prices, mws, strict=True)))
        out.append(PlacedCurve(f"p{int(rng.integers(0, 7))}", curve, f"owner{c}"))
    return out


@pytest.mark.parametrize(("n_curves", "max_blocks"), [(0, 0), (1, 0), (8, 300), (250, 4)])
def test_flatten_is_the_per_block_loop(n_curves: int, max_blocks: int) -> None:
    rng = np.random.default_rng(n_curves + max_blocks)
    positions = {f"p{i}": i for i in range(7)}
    curves = _curves(rng, n_curves, max_blocks)
    got = flatten(curves, positions, "place", "test")
    ref = iso_reference.flatten(curves, positions, "place", "test")
    for name in ("curve", "place", "price", "mw", "base_mw", "has_curve"):
        a, b = getattr(got, name), getattr(ref, name)
        assert a.dtype == b.dtype, name
        assert a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), name


def test_flatten_names_a_curve_at_an_unknown_place() -> None:
    curves = [PlacedCurve("p9", BidCurve(1.0, ((10.0, 1.0),)), "lda3")]
    with pytest.raises(PlacementError, match="curve 0 of 'lda3': place 'p9' is not a place of x"):
        flatten(curves, {"p0": 0}, "place", "x")


def test_max_mw_is_the_sum_in_block_order() -> None:
    rng = np.random.default_rng(5)
    for placed in _curves(rng, 40, 300):
        curve = placed.curve
        assert curve.max_mw == curve.base_mw + sum(mw for _, mw in curve.blocks)


def _outcome(base: object, blocks: object) -> str:
    try:
        BidCurve(base, blocks)  # type: ignore[arg-type]
    except Exception as exc:  # the outcome itself is compared
        return f"{type(exc).__name__}: {exc}"
    return "valid"


def _long_curves() -> list[tuple[object, list[object]]]:
    rng = np.random.default_rng(11)
    n = 64
    good = list(
        zip(
            np.sort(rng.uniform(-900, 9000, n))[::-1].tolist(),
            rng.uniform(0.1, 5, n).tolist(),
            strict=True,
        )
    )
    cases: list[tuple[object, list[object]]] = [
        (3.0, list(good)),
        (-2, list(good)),
        (0.0, [(50, 1)] * n),
    ]
    bad_blocks: list[object] = [
        (math.nan, 1.0),
        (math.inf, 1.0),
        (-math.inf, 1.0),
        (10.0, -math.inf),
        (10.0, math.nan),
        (10.0, math.inf),
        (True, 1.0),
        (np.float64(10.0), 1.0),
        (10.0, 0.0),
        (10.0, -1.0),
        (20000.0, 1.0),
        (-2000.0, 1.0),
        (10.0, 1.0, 2.0),
        (10.0,),
        "ab",
        7,
        ("10", 1.0),
        (10**400, 1.0),
        (10.0, 2e5),
    ]
    for i, block in enumerate(bad_blocks):
        blocks = list(good)
        blocks[(7 * i) % n] = block
        cases.append((1.0, blocks))
    swapped = list(good)
    swapped[10], swapped[11] = swapped[11], swapped[10]  # not monotonic
    cases.append((1.0, swapped))
    for base in (math.nan, True, 2e5, "1", 10**400, 99_999.0):  # the last: the total too large
        cases.append((base, list(good)))
    return cases


def test_long_curves_checked_at_once_exactly_as_block_by_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dsosim.federates.common import curves

    cases = _long_curves()
    at_once = [_outcome(base, tuple(blocks)) for base, blocks in cases]
    assert [curves._plainly_valid(base, tuple(b)) for base, b in cases[:3]] == [True] * 3  # type: ignore[arg-type]
    monkeypatch.setattr(curves, "_CHECK_AT_ONCE", 10**9)
    one_by_one = [_outcome(base, tuple(blocks)) for base, blocks in cases]
    assert at_once == one_by_one
    assert at_once[:3] == ["valid"] * 3
    assert all(o != "valid" for o in at_once[3:]), at_once


def _many_outcome(base: np.ndarray, price: np.ndarray, mw: np.ndarray, start: list[int]) -> object:
    try:
        got = BidCurve.many(base, price, mw, np.array(start))
    except Exception as exc:  # the outcome itself is compared
        return f"{type(exc).__name__}: {exc}"
    return [(c.base_mw, c.blocks) for c in got]


def _one_by_one(base: np.ndarray, price: np.ndarray, mw: np.ndarray, start: list[int]) -> object:
    try:
        got = [
            BidCurve(b, tuple(zip(price[x:z].tolist(), mw[x:z].tolist(), strict=True)))
            for b, x, z in zip(base.tolist(), start[:-1], start[1:], strict=True)
        ]
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return [(c.base_mw, c.blocks) for c in got]


def test_many_curves_checked_at_once_exactly_as_one_by_one() -> None:
    """BidCurve.many (a fleet's bus curves from arrays) gives the curves, or
    the error, that building them one by one gives; valid sets take the
    checked-at-once path (empty curves, a price rising from one curve to the
    next and a total just inside the bound are valid)."""
    from dsosim.federates.common import curves

    rng = np.random.default_rng(4)
    start = [0, 5, 5, 12, 20, 20]
    m = start[-1]
    price = np.concatenate(
        [np.sort(rng.uniform(-900.0, 9000.0, b - a))[::-1] for a, b in pairwise(start)]
    )
    mw = rng.uniform(1e-6, 2.0, m)
    base = rng.uniform(-5.0, 5.0, len(start) - 1)
    good = [(base, price, mw)]
    edge = base.copy()
    edge[2] = 100_000.0 - float(mw[5:12].sum()) - 1.0  # total just inside MAX_ABS_MW
    good.append((edge, price, mw))
    for b, p, q in good:
        assert curves._all_valid(b, p, q, np.array(start))
        assert _many_outcome(b, p, q, start) == _one_by_one(b, p, q, start)
    bad: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for j, value in [(3, math.nan), (7, math.inf), (19, -math.inf), (0, 20000.0), (13, -2000.0)]:
        p = price.copy()
        p[j] = value
        bad.append((base, p, mw))
    p = price.copy()
    p[8], p[9] = p[9], p[8]  # not monotonic inside a curve
    bad.append((base, p, mw))
    for j, value in [(4, 0.0), (6, -1.0), (12, math.nan), (15, math.inf), (1, 2e5)]:
        q = mw.copy()
        q[j] = value
        bad.append((base, price, q))
    for i, value in [(0, math.nan), (4, 2e5), (1, -math.inf), (3, 99_999.0)]:
        b = base.copy()
        b[i] = value
        bad.append((b, price, mw))
    for b, p, q in bad:
        want = _one_by_one(b, p, q, start)
        assert isinstance(want, str), (b, p, q)
        assert _many_outcome(b, p, q, start) == want
