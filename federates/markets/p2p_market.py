"""Peer-to-peer market inside an LDA (models 5 and 6), in plain Python.

Each interval, before anything goes to the ISO:

1. **Reference price.** A participant's outside option is the DSO: it can buy
   at location ``i`` at the DLMP ``p_ref x lf_i`` and sell there at the same
   price, where ``p_ref`` is the T-D price the DMO expects (the LMP of the
   interval before: the auction runs before the ISO clears) and
   ``lf_i = dPsub/dP_i`` the location's marginal loss factor (the loss
   component is the DSO's network charge here; the layered models have no
   other distribution tariff). Prices in the auction are *head prices*:
   a bid or ask ``x`` at location ``i`` is ``x / lf_i`` at the substation.
   Until a first LMP is known (interval 0) nobody trades.
2. **Orders.** Every location's net-demand curve splits at zero net demand
   into *sell orders* (the blocks, or the part of the base, below zero: ask =
   block price; a negative base not covered by blocks asks the price floor)
   and *buy orders* (blocks above zero, bid = block price; a positive base
   bids the price cap). A block that crosses zero net demand is one offer to
   undo the location's own injection (curtailing PV, absorbing it in a
   battery): its part above zero, and every later block at its price, would
   buy from peers to replace the location's own output, so they are not
   buy orders. Bounds: bids are capped at ``p_ref + band`` and asks floored at
   ``p_ref`` (head prices), so nobody buys from peers above what the DSO
   charges nor sells below what the DSO pays (``band`` is the network charge
   the DSO would levy on energy bought through it beyond losses: 0 here).
3. **Call auction.** Buys sorted by head bid (highest first), sells by head
   ask (lowest first), ties by location order; matched while bid >= ask; a
   location never trades with itself. One uniform head price ``p`` for all
   trades: the midpoint of the last matched bid and ask, so
   ``p_ref <= p <= p_ref + band``.
4. **Grid check (the DMO as grid operator), on the feeder sensitivities.**
   Traded quantities become firm: the buyer's traded blocks are consumed
   whatever the nodal market does next, the seller's traded supply cannot be
   withdrawn. For every monitored voltage and branch row the DMO computes the
   best value the untraded flexibility of every location can still reach
   (each location anywhere in its residual range, the linearised feeder);
   a row that the trades push past its limit (and that was within reach
   without them) gets the trade that worsens it most per MW cut back, just
   enough, until every row is within reach again. This is exact for each
   limit on its own; joint feasibility of all rows is then the nodal
   market's (which relaxes and reports a row it cannot meet).
5. **Settlement.** The seller receives ``p x lf_s`` per MW (its location's
   price), the buyer pays that to the seller plus the loss charge
   ``p x (lf_b - lf_s)`` to the DMO: in all ``p x lf_b``.
6. **Residual.** What is left of each curve, with the inflexible load and
   losses, goes through the nodal machinery (feeder-constrained aggregate bid
   to the ISO, dispatch with DLMPs) exactly as in models 3-4; each location
   pays its DLMP only on its net demand beyond its firm trades.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsosim.federates.common import ledger
from dsosim.federates.common.curves import PRICE_CAP, PRICE_FLOOR, BidCurve
from dsosim.federates.common.parties import Party
from dsosim.federates.common.tables import Rows, Tables
from dsosim.federates.dso.feeder import FeederState, Sensitivities
from dsosim.federates.markets.lda_market import Limits
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
    "head_price",
    "reference_price",
)
_TOL = 1e-9
_LF_MIN = 0.5
"""Loss factors below this (a location whose consumption barely reaches the
substation) are taken as this in the price conversion; real feeders stay
within a few percent of 1."""


@dataclass
class Order:
    location: int  # index into the located pairs
    block: int  # block index in the curve, -1 for the base
    mw: float
    price: float  # head bid (buy) or head ask (sell)


@dataclass
class Trade:
    buy: Order
    sell: Order
    mw: float
    blocked_mw: float = 0.0


def split_orders(
    curves: list[BidCurve],
    loss_factors: np.ndarray | None = None,
    p_ref: float | None = None,
    band: float = 0.0,
) -> tuple[list[Order], list[Order]]:
    """Buy and sell orders of every curve at head prices, within the DSO's
    bounds when ``p_ref`` is given (see the module doc, step 2)."""
    lf = np.ones(len(curves)) if loss_factors is None else np.maximum(loss_factors, _LF_MIN)
    buys: list[Order] = []
    sells: list[Order] = []

    def bid(i: int, price: float) -> float:
        x = price / lf[i]
        return x if p_ref is None else min(x, p_ref + band)

    def ask(i: int, price: float) -> float:
        x = price / lf[i]
        return x if p_ref is None else max(x, p_ref)

    for i, curve in enumerate(curves):
        level = curve.base_mw
        if level > 0:
            buys.append(Order(i, -1, level, bid(i, PRICE_CAP)))
        uncovered = -level - sum(mw for _, mw in curve.blocks)
        if uncovered > _TOL:
            sells.append(Order(i, -1, uncovered, ask(i, PRICE_FLOOR)))
        undo_price: float | None = None  # price of the block that crossed zero
        for j, (price, mw) in enumerate(curve.blocks):
            below = min(mw, max(0.0, -level))  # part of the block under zero net demand
            if below > _TOL:
                sells.append(Order(i, j, below, ask(i, price)))
            if below > _TOL and mw - below > _TOL:
                undo_price = price
            above = mw - below
            if above > _TOL and (undo_price is None or price < undo_price):
                buys.append(Order(i, j, above, bid(i, price)))
            level += mw
    buys.sort(key=lambda o: (-o.price, o.location, o.block))
    sells.sort(key=lambda o: (o.price, o.location, o.block))
    return buys, sells


def call_auction(buys: list[Order], sells: list[Order]) -> tuple[list[Trade], float | None]:
    """Uniform-price call auction; returns the trades and the price (None: no
    trade). A buy is never matched with a sell of its own location: such a
    pair is skipped (the next sell is tried)."""
    trades: list[Trade] = []
    left_s = [o.mw for o in sells]
    last: tuple[float, float] | None = None
    first_open = 0  # sells before this are used up
    for b in buys:
        want = b.mw
        for si in range(first_open, len(sells)):
            if want <= _TOL:
                break
            s = sells[si]
            if b.price < s.price:
                break
            if left_s[si] <= _TOL or s.location == b.location:
                continue
            q = min(want, left_s[si])
            trades.append(Trade(b, s, q))
            last = (b.price, s.price)
            want -= q
            left_s[si] -= q
        while first_open < len(sells) and left_s[first_open] <= _TOL:
            first_open += 1
    if last is None:
        return [], None
    return trades, (last[0] + last[1]) / 2.0


class P2pDmo(NodalDmo):
    """Peer-to-peer local market, then the residual through the nodal market."""

    band: float = 0.0
    """Network charge ($/MWh, head price) the DSO levies on energy bought
    through it beyond losses: the width of the P2P price band."""

    _p_ref: float | None = None

    def dispatch(
        self,
        interval: int,
        lmp: float,
        cleared_mw: float,
        da: tuple[float, float] | None = None,
    ) -> tuple[dict[str, tuple[dict[str, float], dict[str, float]]], Tables]:
        self._p_ref = float(lmp)  # the next auction's reference price
        return super().dispatch(interval, lmp, cleared_mw, da)

    def local_stage(
        self,
        interval: int,
        pairs: list[tuple[Located, BidCurve]],
        state: FeederState,
        sens: Sensitivities,
        tables: Tables,
    ) -> list[tuple[Located, BidCurve]]:
        self._firm: dict[tuple[str, str], float] = {}
        tables["trades"] = (TRADE_COLUMNS, [])
        p_ref = self._p_ref
        if p_ref is None or not pairs:
            return pairs
        curves = [c for _, c in pairs]
        pos = {name: i for i, name in enumerate(sens.der_names)}
        der_index = np.array([pos[loc.element] for loc, _ in pairs])
        lf = np.maximum(np.asarray(sens.dpsub_dp, dtype=float)[der_index], _LF_MIN)
        buys, sells = split_orders(curves, lf, p_ref, self.band)
        trades, price = call_auction(buys, sells)
        if not trades or price is None:
            return pairs
        block_grid_breaking_trades(trades, curves, state, sens, der_index, self.limits)
        return self._settle(interval, pairs, trades, price, p_ref, lf, tables)

    def _settle(
        self,
        interval: int,
        pairs: list[tuple[Located, BidCurve]],
        trades: list[Trade],
        price: float,
        p_ref: float,
        lf: np.ndarray,
        tables: Tables,
    ) -> list[tuple[Located, BidCurve]]:
        rows: Rows = []
        pay: list[ledger.Payment] = []
        h, td, me, market = self.hours, self.td, Party.dmo(self.lda), f"p2p:{self.lda}"
        taken = [dict[int, float]() for _ in pairs]
        firm = np.zeros(len(pairs))
        for t in trades:
            b, sl = t.buy.location, t.sell.location
            (bloc, _), (sloc, _) = pairs[b], pairs[sl]
            seller_price = price * float(lf[sl])
            loss = price * float(lf[b] - lf[sl])
            rows.append(
                (
                    interval,
                    self.lda,
                    bloc.aggregator,
                    bloc.bus,
                    sloc.aggregator,
                    sloc.bus,
                    t.mw,
                    seller_price,
                    td.to_td(loss * t.mw) * h,
                    t.blocked_mw,
                    price,
                    p_ref,
                )
            )
            if t.mw <= _TOL:
                continue
            firm[b] += t.mw
            firm[sl] -= t.mw
            for order in (t.buy, t.sell):
                if order.block >= 0:
                    got = taken[order.location]
                    got[order.block] = got.get(order.block, 0.0) + t.mw
            pay.append(
                ledger.Payment(
                    interval,
                    market,
                    Party.agg(bloc.aggregator),
                    Party.agg(sloc.aggregator),
                    f"trade {bloc.bus}<-{sloc.bus}",
                    td.to_td(t.mw),
                    seller_price,
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
                    loss,
                    h,
                )
            )
        residual = []
        for i, (loc, curve) in enumerate(pairs):
            residual.append((loc, residual_curve(curve, taken[i])))
            self._firm[(loc.aggregator, loc.bus)] = float(firm[i])
        tables["trades"] = (TRADE_COLUMNS, rows)
        tables["settlements"] = (ledger.COLUMNS, [x.row() for x in pay])
        return residual

    def firm_mw(self, loc: Located) -> float:
        return self._firm.get((loc.aggregator, loc.bus), 0.0)


def residual_curve(curve: BidCurve, taken: dict[int, float]) -> BidCurve:
    """The curve left once the traded MW of its blocks are firm: a bought
    block (above zero net demand) is switched on, so its traded MW join the
    base; a sold block (below zero) can no longer be withdrawn, so its traded
    MW leave the curve's range. A traded base changes nothing (it was firm)."""
    base = curve.base_mw
    blocks = []
    level = curve.base_mw
    for j, (p, mw) in enumerate(curve.blocks):
        got = min(taken.get(j, 0.0), mw)
        if got > _TOL and level >= -_TOL:  # entirely above zero: bought
            base += got
        if mw - got > _TOL:
            blocks.append((p, mw - got))
        level += mw
    return BidCurve(base, tuple(blocks))


def residual_range(curve: BidCurve, taken: dict[int, float]) -> tuple[float, float]:
    """Least and most net demand a location can still reach once its trades
    are firm."""
    r = residual_curve(curve, taken)
    return r.base_mw, r.base_mw + sum(mw for _, mw in r.blocks)


def block_grid_breaking_trades(
    trades: list[Trade],
    curves: list[BidCurve],
    state: FeederState,
    sens: Sensitivities,
    der_index: np.ndarray,
    limits: Limits,
) -> None:
    """Cut trades back until every monitored row is within reach of the
    untraded flexibility on the linearised feeder (module doc, step 4)."""
    lim = limits
    p0 = np.asarray(state.der_mw, dtype=float)
    mon = np.asarray(state.monitored, dtype=bool)
    v = np.asarray(state.v_pu, dtype=float)[mon]
    dv = np.asarray(sens.dv_dp, dtype=float)[mon][:, der_index]
    dl = np.asarray(sens.dloading_dp, dtype=float)[:, der_index]
    grad = np.vstack([dv, -dv, dl])  # rows g(P) <= limit
    g0 = np.concatenate(
        [v - lim.vmax_pu, lim.vmin_pu - v, np.asarray(state.loading) - lim.max_loading]
    )
    at = p0[der_index]

    def ranges() -> tuple[np.ndarray, np.ndarray]:
        taken = [dict[int, float]() for _ in curves]
        for t in trades:
            for order in (t.buy, t.sell):
                if order.block >= 0 and t.mw > _TOL:
                    got = taken[order.location]
                    got[order.block] = got.get(order.block, 0.0) + t.mw
        lo_hi = [residual_range(c, taken[i]) for i, c in enumerate(curves)]
        return np.array([x[0] for x in lo_hi]), np.array([x[1] for x in lo_hi])

    def best(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Each row's least value over the locations' ranges."""
        return g0 + np.minimum(grad * (lo - at), grad * (hi - at)).sum(axis=1)

    reach = best(
        np.array([c.base_mw for c in curves]),
        np.array([c.base_mw + sum(mw for _, mw in c.blocks) for c in curves]),
    )
    for _ in range(4 * len(trades) + 10):
        lo, hi = ranges()
        over = best(lo, hi)
        # only rows the trades put out of reach (a row no dispatch can meet is
        # the grid operator's problem, not the market's)
        excess = np.where(reach > 1e-9, 0.0, over)
        r = int(np.argmax(excess))
        if excess[r] <= 1e-9:
            return
        effect = np.array([_trade_effect(t, grad[r]) if t.mw > _TOL else 0.0 for t in trades])
        k = int(np.argmax(effect))
        if effect[k] <= 1e-12:
            return  # no trade makes this row worse: nothing to block
        cut = min(trades[k].mw, excess[r] / effect[k] + 1e-9)
        trades[k].mw -= cut
        trades[k].blocked_mw += cut


def _trade_effect(t: Trade, row: np.ndarray) -> float:
    """How much one more MW of trade ``t`` raises a row's best reachable value:
    the buyer's least net demand rises (matters where the row rises with its
    consumption), the seller's most net demand falls (matters where the row
    falls with it)."""
    up = max(row[t.buy.location], 0.0) if t.buy.block >= 0 else 0.0
    down = max(-row[t.sell.location], 0.0) if t.sell.block >= 0 else 0.0
    return up + down
