"""Peer-to-peer market (models 5-6) on hand-worked order books: orders from
curves, the DSO's price bounds, no buying from one's own curtailment offer,
the call auction, the grid check on the feeder sensitivities, settlement."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dsosim.federates.common import ledger
from dsosim.federates.common.curves import PRICE_CAP, PRICE_FLOOR, BidCurve
from dsosim.federates.markets.lda_market import Limits
from dsosim.federates.markets.location import Location
from dsosim.federates.markets.p2p_market import (
    Order,
    P2pDmo,
    block_grid_breaking_trades,
    call_auction,
    residual_curve,
    split_orders,
)
from tests.test_lda_market import linearised


def _book(orders: list[Order]) -> list[tuple[int, int, float, float]]:
    return [(o.location, o.block, round(o.mw, 9), round(o.price, 9)) for o in orders]


def test_orders_split_at_zero_without_bounds() -> None:
    curves = [
        BidCurve(0.5, ((30.0, 1.0),)),  # a load: base bought at any price, 1 MW more at 30
        BidCurve(-2.0, ((40.0, 1.0), (10.0, 0.5))),  # a battery + PV: 0.5 MW must be sold
    ]
    buys, sells = split_orders(curves)
    assert _book(buys) == [(0, -1, 0.5, PRICE_CAP), (0, 0, 1.0, 30.0)]
    assert _book(sells) == [(1, -1, 0.5, PRICE_FLOOR), (1, 1, 0.5, 10.0), (1, 0, 1.0, 40.0)]


def test_a_block_crossing_zero_is_no_buy_order() -> None:
    # Location 0: 1 MW of load under 2 MW of PV (base -1), curtailment offered at
    # 0 $/MWh for the whole 2 MW. Curtailing beyond 1 MW would make it buy from
    # peers to replace its own PV: that part is no buy order. Neither is a later
    # block at the same price; a cheaper one (a charge at -5) is.
    curves = [
        BidCurve(-1.0, ((0.0, 2.0), (0.0, 0.3), (-5.0, 0.4))),
        BidCurve(-2.0, ((0.0, 2.0),)),  # a PV system elsewhere
    ]
    buys, sells = split_orders(curves)
    assert _book(buys) == [(0, 2, 0.4, -5.0)]
    assert _book(sells) == [(0, 0, 1.0, 0.0), (1, 0, 2.0, 0.0)]
    trades, price = call_auction(buys, sells)
    assert trades == [] and price is None  # -5 < 0: the PV stays on both sides


def test_bounds_cap_bids_and_floor_asks_at_the_dso_prices() -> None:
    # head prices: bid x / lf, ask x / lf; reference 20, band 0
    curves = [BidCurve(1.0), BidCurve(-1.0)]  # inflexible load, must-run PV
    lf = np.array([1.05, 0.95])
    buys, sells = split_orders(curves, lf, p_ref=20.0)
    assert _book(buys) == [(0, -1, 1.0, 20.0)]  # the cap / 1.05 capped at 20
    assert _book(sells) == [(1, -1, 1.0, 20.0)]  # the floor / 0.95 floored at 20
    trades, price = call_auction(buys, sells)
    assert price == 20.0 and [t.mw for t in trades] == [1.0]


def test_no_trade_below_what_the_dso_pays_the_seller() -> None:
    # Without bounds a battery bidding 17 to charge buys PV offered at 0 at 8.5,
    # below the 20 the DSO would pay the PV. With the bounds no trade clears.
    curves = [BidCurve(0.0, ((17.0, 1.0),)), BidCurve(-1.0, ((0.0, 1.0),))]
    trades, price = call_auction(*split_orders(curves))
    assert price == 8.5 and trades[0].mw == 1.0
    trades, price = call_auction(*split_orders(curves, np.ones(2), p_ref=20.0))
    assert trades == [] and price is None


def test_hand_worked_book_with_and_without_bounds() -> None:
    curves = [
        BidCurve(0.0, ((30.0, 1.0), (22.0, 2.0))),
        BidCurve(-1.5, ((10.0, 1.5),)),
        BidCurve(-1.0, ((21.0, 1.0),)),
        BidCurve(-1.0, ((24.0, 1.0),)),
    ]
    # unbounded: 30 x 10 (1 MW), 22 x 10 (0.5), 22 x 21 (1); price (22 + 21) / 2
    trades, price = call_auction(*split_orders(curves))
    assert [(t.buy.price, t.sell.price, t.mw) for t in trades] == [
        (30.0, 10.0, 1.0),
        (22.0, 10.0, 0.5),
        (22.0, 21.0, 1.0),
    ]
    assert price == 21.5
    # reference 20, band 3: bids capped at 23 (30 -> 23, 22 stays), asks floored
    # at 20 (10 -> 20): 23 x 20 (1), 22 x 20 (0.5), 22 x 21 (1); price 21.5,
    # inside [20, 23]
    trades, price = call_auction(*split_orders(curves, np.ones(4), p_ref=20.0, band=3.0))
    assert [(t.buy.price, t.sell.price, t.mw) for t in trades] == [
        (23.0, 20.0, 1.0),
        (22.0, 20.0, 0.5),
        (22.0, 21.0, 1.0),
    ]
    assert price == 21.5


def test_a_location_never_trades_with_itself() -> None:
    buys = [Order(0, -1, 1.0, 30.0)]
    sells = [Order(0, 0, 1.0, 10.0), Order(1, 0, 0.5, 20.0)]
    trades, price = call_auction(buys, sells)
    assert [(t.sell.location, t.mw) for t in trades] == [(1, 0.5)] and price == 25.0


def test_residual_curve_keeps_bought_on_and_sold_off() -> None:
    curve = BidCurve(-1.0, ((30.0, 1.0), (20.0, 2.0)))  # block 0 below zero, block 1 above
    left = residual_curve(curve, {0: 0.4, 1: 0.5})
    assert left.base_mw == pytest.approx(-0.5)  # 0.5 MW bought is now consumed for sure
    assert left.blocks == (
        (30.0, pytest.approx(0.6)),  # 0.4 MW sold can no longer be withdrawn
        (20.0, pytest.approx(1.5)),
    )


def test_grid_check_cuts_a_trade_that_leaves_an_over_voltage_out_of_reach() -> None:
    # One node at 1.050 pu (limit 1.045), two locations: far PV (d0, -0.01 pu per
    # MW of net demand) injecting 2 MW with 2 MW of curtailment offered at 0, and
    # a near load (d1, -0.001 pu/MW). Without trades curtailing the far PV can
    # bring the node to 1.030. Selling the 2 MW to the near load makes them firm:
    # the best reachable is 1.050. Cut 0.5 MW: 1.050 - 0.01 x 0.5 = 1.045.
    state, sens = linearised([1.05], [[-0.01, -0.001]], der_mw=[-2.0, 2.0])
    curves = [BidCurve(-2.0, ((0.0, 2.0),)), BidCurve(2.0)]
    buys, sells = split_orders(curves, np.ones(2), p_ref=20.0)
    trades, _ = call_auction(buys, sells)
    assert [t.mw for t in trades] == [2.0]
    block_grid_breaking_trades(trades, curves, state, sens, np.array([0, 1]), Limits(vmax_pu=1.045))
    assert trades[0].mw == pytest.approx(1.5, abs=1e-6)
    assert trades[0].blocked_mw == pytest.approx(0.5, abs=1e-6)


def test_grid_check_leaves_trades_the_flexibility_can_still_absorb() -> None:
    # The same over-voltage, but a third location (d2, -0.02 pu/MW) can still
    # consume 1 MW more: 1.050 - 0.02 = 1.030 is within reach with the trade.
    state, sens = linearised([1.05], [[-0.01, -0.001, -0.02]], der_mw=[-2.0, 2.0, 0.0])
    curves = [BidCurve(-2.0, ((0.0, 2.0),)), BidCurve(2.0), BidCurve(0.0, ((5.0, 1.0),))]
    trades, _ = call_auction(*split_orders(curves, np.ones(3), p_ref=20.0))
    block_grid_breaking_trades(
        trades, curves, state, sens, np.array([0, 1, 2]), Limits(vmax_pu=1.045)
    )
    assert sum(t.mw for t in trades) == pytest.approx(2.0)
    assert all(t.blocked_mw == 0.0 for t in trades)


def test_settlement_pays_each_side_its_location_price() -> None:
    # lf: buyer 1.04, seller 0.98; reference 25. Buyer pays 25 x 1.04 in all (what
    # the DSO would charge it), seller gets 25 x 0.98 (what the DSO would pay),
    # the DMO keeps the loss charge 25 x 0.06.
    state, sens = linearised([1.0], [[0.0, 0.0]], dpsub=[1.04, 0.98], der_mw=[1.0, -1.0])
    buyer, seller = Location("a", "d0"), Location("b", "d1")
    names = (buyer.element, seller.element)
    sens, state = replace(sens, der_names=names), replace(state, der_names=names)
    dmo = P2pDmo("lda", [buyer, seller], ["a", "b"], scale=1.0, limits=Limits(), hours=1.0)
    dmo._p_ref = 25.0
    tables: dict = {}
    left = dmo.local_stage(
        0, [(buyer, BidCurve(1.0)), (seller, BidCurve(-1.0))], state, sens, tables
    )
    assert [c.base_mw for _, c in left] == [1.0, -1.0]
    cols, rows = tables["trades"]
    row = dict(zip(cols, rows[0], strict=True))
    assert row["mw"] == 1.0 and row["head_price"] == 25.0
    assert row["price"] == pytest.approx(25.0 * 0.98)
    assert row["loss_charge"] == pytest.approx(25.0 * 0.06)
    pays = [dict(zip(ledger.COLUMNS, r, strict=True)) for r in tables["settlements"][1]]
    paid = sum(p["amount"] for p in pays if p["payer"] == "agg:a")
    got = sum(p["amount"] for p in pays if p["payee"] == "agg:b")
    assert paid == pytest.approx(25.0 * 1.04) and got == pytest.approx(25.0 * 0.98)
    assert dmo.firm_mw(buyer) == 1.0 and dmo.firm_mw(seller) == -1.0


def test_no_trade_before_a_reference_price_is_known() -> None:
    state, sens = linearised([1.0], [[0.0, 0.0]])
    dmo = P2pDmo(
        "lda",
        [Location("a", "x"), Location("b", "y")],
        ["a", "b"],
        scale=1.0,
        limits=Limits(),
        hours=1.0,
    )
    tables: dict = {}
    pairs = [(Location("a", "x"), BidCurve(1.0)), (Location("b", "y"), BidCurve(-1.0))]
    assert dmo.local_stage(0, pairs, state, sens, tables) == pairs
    assert tables["trades"][1] == []
