"""Curve flattening (common/blocks.py) and BidCurve.max_mw: bit for bit what
the plain per-block loops they replaced give (the flattening's is kept as the
benchmark's reference, runner/bench/iso_reference.py); long curves checked at
once exactly as block by block."""

from __future__ import annotations

import math

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
