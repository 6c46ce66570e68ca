"""Peer-to-peer market inside an LDA (models 5 and 6), in plain Python.

Each interval, before anything goes to the ISO:

1. **Orders.** Every DER location's net-demand curve splits at zero net demand
   into *sell orders* (the blocks, or the part of the base, below zero: supply
   that is given up only at or below its price, so its ask is the block price;
   a negative base not covered by blocks must sell, ask = price floor) and
   *buy orders* (blocks above zero, bid = block price; a positive base must
   buy, bid = price cap).
2. **Call auction.** Buys sorted by bid (highest first), sells by ask (lowest
   first), ties by location order; matched while bid >= ask. One uniform price
   for all trades: the midpoint of the last matched bid and ask.
3. **Grid check (the DMO as grid operator).** The trades move power between
   feeder locations. With the linearised feeder, the positions "every location
   at its traded quantity" are checked against the voltage band and branch
   ratings; while a limit is broken, the trade that worsens the most broken row
   the most per MW is cut back (blocked) just enough, or to zero. Each trade
   is then charged its losses: ``price x (dPsub/dP_buyer - dPsub/dP_seller)``
   per MW, paid by the buyer to the DMO (a credit when it reduces losses).
4. **Residual.** Traded quantities are firm: a traded buy becomes base
   consumption, a traded sell can no longer be withdrawn. What is left of
   each curve, with the inflexible load and losses, goes through the nodal
   machinery (feeder-constrained aggregate bid to the ISO, dispatch with DLMPs)
   exactly as in models 3-4.

Settlement: buyers pay sellers the auction price for traded MW; loss charges
go to the DMO; each location pays its DLMP only on its net demand beyond its
firm trades.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsosim.federates.common import ledger
from dsosim.federates.common.curves import PRICE_CAP, PRICE_FLOOR, BidCurve
from dsosim.federates.common.parties import Party
from dsosim.federates.common.tables import Rows, Tables
from dsosim.federates.dso.feeder import FeederState, Sensitivities
from dsosim.federates.markets.nodal_dmo import Located, NodalDmo

TRADE_COLUMNS = (
    "interval",
    "dso",
    "buyer",
    "buyer_location",
    "seller",
    "seller_location",
    "mw",
    "price",
    "loss_charge",
    "blocked_mw",
)
_TOL = 1e-9


@dataclass
class Order:
    location: int  # index into the located pairs
    block: int  # block index in the curve, -1 for the base
    mw: float
    price: float  # bid (buy) or ask (sell)


@dataclass
class Trade:
    buy: Order
    sell: Order
    mw: float
    blocked_mw: float = 0.0


def split_orders(curves: list[BidCurve]) -> tuple[list[Order], list[Order]]:
    """Buy and sell orders of every curve (see the module doc)."""
    buys: list[Order] = []
    sells: list[Order] = []
    for i, curve in enumerate(curves):
        level = curve.base_mw
        if level > 0:
            buys.append(Order(i, -1, level, PRICE_CAP))
        uncovered = -level - sum(mw for _, mw in curve.blocks)
        if uncovered > _TOL:
            sells.append(Order(i, -1, uncovered, PRICE_FLOOR))
        for j, (price, mw) in enumerate(curve.blocks):
            below = min(mw, max(0.0, -level))  # part of the block under zero net demand
            if below > _TOL:
                sells.append(Order(i, j, below, price))
            if mw - below > _TOL:
                buys.append(Order(i, j, mw - below, price))
            level += mw
    buys.sort(key=lambda o: (-o.price, o.location, o.block))
    sells.sort(key=lambda o: (o.price, o.location, o.block))
    return buys, sells


def call_auction(buys: list[Order], sells: list[Order]) -> tuple[list[Trade], float | None]:
    """Uniform-price call auction; returns the trades and the price (None: no trade)."""
    trades: list[Trade] = []
    bi = si = 0
    left_b = buys[0].mw if buys else 0.0
    left_s = sells[0].mw if sells else 0.0
    last: tuple[float, float] | None = None
    while bi < len(buys) and si < len(sells) and buys[bi].price >= sells[si].price:
        q = min(left_b, left_s)
        trades.append(Trade(buys[bi], sells[si], q))
        last = (buys[bi].price, sells[si].price)
        left_b -= q
        left_s -= q
        if left_b <= _TOL:
            bi += 1
            left_b = buys[bi].mw if bi < len(buys) else 0.0
        if left_s <= _TOL:
            si += 1
            left_s = sells[si].mw if si < len(sells) else 0.0
    if last is None:
        return [], None
    return trades, (last[0] + last[1]) / 2.0


class P2pDmo(NodalDmo):
    """Peer-to-peer local market, then the residual through the nodal market."""

    def local_stage(
        self,
        interval: int,
        pairs: list[tuple[Located, BidCurve]],
        state: FeederState,
        sens: Sensitivities,
        tables: Tables,
    ) -> list[tuple[Located, BidCurve]]:
        curves = [c for _, c in pairs]
        buys, sells = split_orders(curves)
        trades, price = call_auction(buys, sells)
        self._firm: dict[tuple[str, str], float] = {}
        if not trades or price is None:
            tables["trades"] = (TRADE_COLUMNS, [])
            return pairs
        pos = {name: i for i, name in enumerate(sens.der_names)}
        der_index = np.array([pos[loc.element] for loc, _ in pairs])
        self._block_infeasible(trades, pairs, state, sens, der_index)
        rows: Rows = []
        pay: list[ledger.Payment] = []
        h, td, me, market = self.hours, self.td, Party.dmo(self.lda), f"p2p:{self.lda}"
        taken_buy = [dict[int, float]() for _ in pairs]
        firm = np.zeros(len(pairs))
        for t in trades:
            b, sl = t.buy.location, t.sell.location
            (bloc, _), (sloc, _) = pairs[b], pairs[sl]
            loss = price * (sens.dpsub_dp[der_index[b]] - sens.dpsub_dp[der_index[sl]])
            rows.append(
                (
                    interval,
                    self.lda,
                    bloc.aggregator,
                    bloc.bus,
                    sloc.aggregator,
                    sloc.bus,
                    t.mw,
                    price,
                    td.to_td(loss * t.mw) * h,
                    t.blocked_mw,
                )
            )
            if t.mw <= _TOL:
                continue
            firm[b] += t.mw
            firm[sl] -= t.mw
            if t.buy.block >= 0:
                taken_buy[b][t.buy.block] = taken_buy[b].get(t.buy.block, 0.0) + t.mw
            pay.append(
                ledger.Payment(
                    interval,
                    market,
                    Party.agg(bloc.aggregator),
                    Party.agg(sloc.aggregator),
                    f"trade {bloc.bus}<-{sloc.bus}",
                    td.to_td(t.mw),
                    price,
                    h,
                )
            )
            pay.append(
                ledger.Payment(
                    interval,
                    market,
                    Party.agg(bloc.aggregator),
                    me,
                    "loss charge",
                    td.to_td(t.mw),
                    float(loss),
                    h,
                )
            )
        taken_sell = [dict[int, float]() for _ in pairs]
        for t in trades:
            if t.sell.block >= 0 and t.mw > _TOL:
                taken_sell[t.sell.location][t.sell.block] = (
                    taken_sell[t.sell.location].get(t.sell.block, 0.0) + t.mw
                )
        residual = []
        for i, (loc, curve) in enumerate(pairs):
            base = curve.base_mw + sum(taken_buy[i].values())
            blocks = []
            for j, (p, mw) in enumerate(curve.blocks):
                left = mw - taken_buy[i].get(j, 0.0) - taken_sell[i].get(j, 0.0)
                if left > _TOL:
                    blocks.append((p, left))
            residual.append((loc, BidCurve(base, tuple(blocks))))
            self._firm[(loc.aggregator, loc.bus)] = float(firm[i])
        tables["trades"] = (TRADE_COLUMNS, rows)
        tables["settlements"] = (ledger.COLUMNS, [x.row() for x in pay])
        return residual

    def firm_mw(self, loc: Located) -> float:
        return self._firm.get((loc.aggregator, loc.bus), 0.0)

    def _block_infeasible(
        self,
        trades: list[Trade],
        pairs: list[tuple[Located, BidCurve]],
        state: FeederState,
        sens: Sensitivities,
        der_index: np.ndarray,
    ) -> None:
        """Cut trades back until the traded positions respect the feeder's
        limits in the linearised model (see the module doc, step 3)."""
        lim = self.limits
        p0 = np.asarray(state.der_mw, dtype=float)
        mon = np.asarray(state.monitored, dtype=bool)
        v0 = np.asarray(state.v_pu, dtype=float)[mon]
        dv = np.asarray(sens.dv_dp, dtype=float)[mon]
        l0 = np.asarray(state.loading, dtype=float)
        dl = np.maximum(np.asarray(sens.dloading_dp_up), np.asarray(sens.dloading_dp_down))

        def position() -> np.ndarray:
            p = p0.copy()
            for i in range(len(pairs)):
                p[der_index[i]] = 0.0
            for t in trades:
                p[der_index[t.buy.location]] += t.mw
                p[der_index[t.sell.location]] -= t.mw
            return p

        def violations(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            v = v0 + dv @ (p - p0)
            load = l0 + dl @ (p - p0)
            return np.concatenate(
                [v - lim.vmax_pu, lim.vmin_pu - v, load - lim.max_loading]
            ), np.concatenate([v0 - lim.vmax_pu, lim.vmin_pu - v0, l0 - lim.max_loading])

        grad = np.vstack([dv, -dv, dl])
        for _ in range(4 * len(trades) + 10):
            over, before = violations(position())
            # only rows the trades broke (or worsened): a limit already broken
            # at the operating point is the grid operator's, not the market's
            over = np.where(before > 0, over - np.maximum(before, 0), over)
            r = int(np.argmax(over))
            if over[r] <= 1e-9:
                return
            effect = np.array(
                [
                    grad[r, der_index[t.buy.location]] - grad[r, der_index[t.sell.location]]
                    if t.mw > _TOL
                    else 0.0
                    for t in trades
                ]
            )
            k = int(np.argmax(effect))
            if effect[k] <= 1e-12:
                return  # no trade makes this row worse: nothing to block
            cut = min(trades[k].mw, over[r] / effect[k] + 1e-9)
            trades[k].mw -= cut
            trades[k].blocked_mw += cut
