"""The QP holds only the bid columns near their bus's price (the others
fixed where the LP left them, brought in when the QP's prices say so), and
clears exactly as with every bid column in it: case118 (quadratic costs)
with eight interface curves of 300 blocks each, loads jumping by up to 25 %
between intervals so that prices move past the window and fixed bids must
join the QP."""

from __future__ import annotations

import numpy as np
import pytest

from dsosim.federates.common.curves import BidCurve
from dsosim.federates.iso.case import load_case
from dsosim.federates.iso.dcopf import BusCurve, DcOpf, OpfResult, clearing

TD_BUSES = (59, 116, 90, 80, 54, 42, 15, 49)


def _intervals(n: int) -> list[tuple[np.ndarray, list[BusCurve]]]:
    case = load_case("case118")
    rng = np.random.default_rng(7)
    out = []
    for k in range(n):
        load = case.bus_pd_mw * rng.uniform(0.75, 1.25) * rng.uniform(0.97, 1.03, case.n_bus)
        curves = []
        for i, bus in enumerate(TD_BUSES):
            price = np.sort(rng.uniform(0.0, 80.0, 300))[::-1]
            mw = rng.uniform(0.01, 0.3, 300)
            curve = BidCurve(20.0 + 5.0 * i + k % 3, tuple(zip(price.tolist(), mw.tolist())))
            curves.append(BusCurve(bus, curve, f"lda{i}"))
        out.append((load, curves))
    return out


def _clear_all(intervals: list[tuple[np.ndarray, list[BusCurve]]]) -> tuple[list[OpfResult], int]:
    opf = DcOpf(load_case("case118"))
    solves = 0
    run = opf._run_qp_hot

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal solves
        solves += 1
        return run(*args, **kwargs)

    opf._run_qp_hot = counted  # type: ignore[method-assign]
    results = [opf.clear(load, curves) for load, curves in intervals]
    assert opf._qp is not None
    return results, solves


def test_a_qp_with_the_bids_near_the_price_clears_as_one_with_every_bid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    intervals = _intervals(12)
    narrow, solves = _clear_all(intervals)
    assert solves > len(intervals)  # some clears brought fixed bids into the QP
    monkeypatch.setattr(clearing, "BID_WINDOW", np.inf)  # every bid in the QP
    full, full_solves = _clear_all(intervals)
    assert full_solves == len(intervals)
    for a, b in zip(narrow, full, strict=True):
        assert a.status == b.status == "optimal"
        np.testing.assert_allclose(a.lmp, b.lmp, rtol=0, atol=1e-6)
        np.testing.assert_allclose(a.gen_mw, b.gen_mw, rtol=0, atol=1e-5)
        np.testing.assert_allclose(a.curve_mw, b.curve_mw, rtol=0, atol=1e-5)
        assert a.objective == pytest.approx(b.objective, rel=1e-9)


def test_reset_leaves_no_bid_in_the_qp_and_clears_as_a_fresh_model() -> None:
    intervals = _intervals(4)
    opf = DcOpf(load_case("case118"))
    for load, curves in intervals[:3]:
        opf.clear(load, curves)
    assert opf._mirror is not None
    bids = np.flatnonzero(opf._bid_bus >= 0)
    assert opf._mirror.present(bids).any()
    opf.reset()
    assert not opf._mirror.present(bids).any()
    again = opf.clear(*intervals[3])
    fresh = DcOpf(load_case("case118")).clear(*intervals[3])
    np.testing.assert_allclose(again.lmp, fresh.lmp, rtol=0, atol=1e-6)
    np.testing.assert_allclose(again.curve_mw, fresh.curve_mw, rtol=0, atol=1e-5)
