"""The DMO/DERM role of a nodal distribution market (models 3 and 4), in plain
Python: all DER bids of the LDA become ONE feeder-constrained bid at the T-D
interface; the ISO's award is dispatched back to the DERs with DLMPs
(``lda_market``). Whoever hosts it (the utility, or an independent operator
that receives the grid model from the utility) calls the same methods.

Settlement (the DMO's ledger, per interval, money x ``scale``): every DER
location pays its DLMP for its set-point; the utility pays the T-D LMP for the
forecast head power no DER bid covers (inflexible load and losses at the
operating point, passive DERs at their last output); the DMO
pays the ISO the LMP for the schedule. What remains is the DMO's surplus (the
distribution congestion and loss rent).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dsosim.federates.common import ledger
from dsosim.federates.common.curves import BID_COLUMNS, BidCurve, PlacedCurve, bid_row
from dsosim.federates.common.parties import ISO, Party
from dsosim.federates.common.scale import TdScale
from dsosim.federates.common.tables import Rows, Tables
from dsosim.federates.dso.feeder import FeederState, Sensitivities
from dsosim.federates.markets import day_ahead
from dsosim.federates.markets.lda_market import (
    DerCurve,
    LdaClearing,
    Limits,
    build_interface_bid,
    clear_lda,
    fixed_head_mw,
)
from dsosim.federates.markets.location import Location as Located

LINEARISATION_COLUMNS = (
    "interval",
    "dso",
    "iterations",
    "change_mw",
    "converged",
    "head_correction_mw",
)

Relinearise = Callable[[np.ndarray], tuple[FeederState, Sensitivities] | None]
"""The feeder owner's power flow and linearisation with the DERs at a
dispatch (MW per DER, the feeder's order) and the interval's forecast load;
None if that power flow diverged."""

RELINEARISE_TOL_MW = 1e-3
"""A dispatch is at its linearisation point when no DER set-point moved more
than this between the last two clearings (1 kW: well below the response
error of any fleet)."""
RELINEARISE_MAX = 4
"""Re-linearisations per interval at most: a dispatch that a binding limit
makes hop between two vertices stops there (reported as not converged)."""
CONSTRAINT_COLUMNS = (
    "interval",
    "dso",
    "status",
    "kind",
    "element",
    "value",
    "limit",
    "dual",
    "violation",
)
"""Network rows of the final clearing that shaped it: ``binding`` (at their
limit with a market price, ``dual`` in $/h per pu or per unit of loading) and
``relaxed`` (violated whatever the DERs do, or held only at any price). A row
no dispatch can bring within its rating is held at its value at the operating
point: it shows as ``relaxed`` (with the rating as its limit) and, where it
binds, as ``binding`` with that value as its limit."""
DISPATCH_COLUMNS = (
    "interval",
    "dso",
    "aggregator",
    "location",
    "setpoint_mw",
    "dlmp",
    "dlmp_energy",
    "dlmp_loss",
    "dlmp_congestion",
)


class BidError(ValueError):
    """Bids that do not fit the LDA's registered DER locations."""


def located_curves(
    fleet_bids: Mapping[str, Mapping[str, BidCurve]],
    locations: Sequence[Located],
    bidders: Sequence[str],
) -> list[tuple[Located, BidCurve]]:
    """Pair each bid with its registered location; every bidder must bid at
    each of its locations and nowhere else."""
    if set(fleet_bids) != set(bidders):
        raise BidError(f"bids expected from {sorted(bidders)}, got {sorted(fleet_bids)}")
    out = []
    for loc in locations:
        if loc.aggregator not in fleet_bids:
            continue
        bids = fleet_bids[loc.aggregator]
        if loc.bus not in bids:
            raise BidError(
                f"aggregator {loc.aggregator!r} sent no bid for its location {loc.bus!r}"
            )
        out.append((loc, bids[loc.bus]))
    for agg, bids in fleet_bids.items():
        extra = sorted(set(bids) - {loc.bus for loc in locations if loc.aggregator == agg})
        if extra:
            raise BidError(f"aggregator {agg!r} bid at {extra}, where it has no registered DERs")
    return out


@dataclass(frozen=True, slots=True)
class _Pending:
    """What the interface bid of an interval leaves for its dispatch."""

    pairs: list[tuple[Located, BidCurve]]
    curves: list[DerCurve]
    state: FeederState
    sens: Sensitivities
    fixed_mw: float
    utility_mw: float
    passive_mw: float


@dataclass(slots=True)
class _DayAheadDay:
    """One day's offers, the feeder forecast per period, and the periods
    cleared so far (on the first interval of each that settles)."""

    per_period: int
    offers: dict[str, dict[str, tuple[BidCurve, ...]]]
    points: tuple[day_ahead.Point, ...]
    cleared: dict[int, dict[Located, day_ahead.Schedule]] = field(default_factory=dict)


class NodalDmo:
    """Nodal distribution market: aggregate, then dispatch with DLMPs."""

    def __init__(
        self,
        lda: str,
        locations: Sequence[Located],
        bidders: Sequence[str],
        *,
        scale: float,
        limits: Limits,
        hours: float,
    ) -> None:
        self.lda = lda
        self.locations = list(locations)
        self.bidders = sorted(bidders)
        self.td = TdScale(scale)
        self.limits = limits
        self.hours = hours
        self.relinearise: Relinearise | None = None
        """Set by a host that owns the feeder (the utility): the dispatch is
        then cleared again on the feeder linearised at the dispatch, until it
        stops moving (``RELINEARISE_TOL_MW``, at most ``RELINEARISE_MAX``
        times). An operator without the feeder (models 4 and 6) clears once on
        the grid model it was sent; the ex-post check reports the gap."""
        self.priced_on: Sensitivities | None = None
        """The linearisation the last dispatch was priced on."""
        self._pending: _Pending | None = None
        self._day_ahead: dict[int, _DayAheadDay] = {}

    def take_day_ahead(
        self,
        first: int,
        per_period: int,
        offers: Mapping[str, Mapping[str, Sequence[BidCurve]]],
        points: Sequence[day_ahead.Point],
    ) -> None:
        """The aggregators' day-ahead offers for the day starting at interval
        ``first`` (aggregator -> location -> one curve per period of
        ``per_period`` intervals, feeder scale) and the feeder forecast of
        each period the LDA's day-ahead bid was built on. Once the ISO's
        award is known, each location's day-ahead schedule and day-ahead DLMP
        is the period's clearing of that award on that forecast
        (``day_ahead.schedules``); the DMO settles the schedule at that DLMP
        and only the set-point's deviation from it at the real-time DLMP (two
        settlements inside the LDA)."""
        # the day running now and the next: older days are done
        for old in sorted(self._day_ahead)[:-1]:
            del self._day_ahead[old]
        self._day_ahead[first] = _DayAheadDay(
            per_period,
            {a: {b: tuple(c) for b, c in by_bus.items()} for a, by_bus in offers.items()},
            tuple(points),
        )

    def day_ahead_schedules(
        self, interval: int, da_mw: float, da_lmp: float
    ) -> dict[Located, day_ahead.Schedule]:
        """The DER locations' day-ahead schedules for ``interval`` (feeder
        scale) and their day-ahead DLMPs, from the LDA's day-ahead award
        ``da_mw`` (T-D scale) at ``da_lmp``; none without offers for it."""
        for first, day in self._day_ahead.items():
            period = (interval - first) // day.per_period
            if not 0 <= period < len(day.points):
                continue
            if period not in day.cleared:
                day.cleared[period] = day_ahead.schedules(
                    day.points[period],
                    day.offers,
                    self.locations,
                    period,
                    self.td.to_feeder(da_mw),
                    da_lmp,
                    self.limits,
                )
            return day.cleared[period]
        return {}

    def interface_bid(
        self,
        interval: int,
        fleet_bids: Mapping[str, Mapping[str, BidCurve]],
        state: FeederState,
        sens: Sensitivities,
    ) -> tuple[BidCurve, Tables]:
        """The LDA's scaled curve at the T-D bus."""
        pairs = located_curves(fleet_bids, self.locations, self.bidders)
        tables: Tables = {
            "bids": (
                BID_COLUMNS,
                [
                    bid_row(interval, loc.aggregator, str(Party.dmo(self.lda)), loc.bus, c)
                    for loc, c in pairs
                ],
            )
        }
        pairs = self.local_stage(interval, pairs, state, sens, tables)
        curves = [PlacedCurve(loc.element, c, owner=loc.aggregator) for loc, c in pairs]
        fixed = fixed_head_mw(state)
        built = build_interface_bid(curves, state, sens, fixed, self.limits)
        bidding = {c.at for c in curves}
        passive = sum(
            mw
            for name, mw in zip(state.der_names, state.der_mw, strict=True)
            if name not in bidding
        )
        self._pending = _Pending(
            pairs,
            curves,
            state,
            sens,
            built.fixed_mw,
            float(built.fixed_mw + float(passive)),
            float(passive),
        )
        td_curve = self.td.curve_to_td(built.curve)
        tables["bids"][1].append(
            bid_row(interval, str(Party.dmo(self.lda)), str(ISO), "td", td_curve)
        )
        return td_curve, tables

    def local_stage(
        self,
        interval: int,
        pairs: list[tuple[Located, BidCurve]],
        state: FeederState,
        sens: Sensitivities,
        tables: Tables,
    ) -> list[tuple[Located, BidCurve]]:
        """Hook for a market that trades inside the LDA before the residual
        goes to the ISO (peer-to-peer). The nodal market has none."""
        return pairs

    def firm_mw(self, loc: Located) -> float:
        """Net demand of a location already settled inside the LDA (trades)."""
        return 0.0

    def dispatch(
        self,
        interval: int,
        lmp: float,
        cleared_mw: float,
        da: tuple[float, float] | None = None,
    ) -> tuple[dict[str, tuple[dict[str, float], dict[str, float]]], Tables]:
        """Set-points and DLMPs per aggregator meeting the ISO's award, and the
        DMO's ledger for the interval. ``da``: the LDA's day-ahead schedule and
        price for the interval (two settlements with the ISO: the schedule at
        the day-ahead price, the rest of the award at ``lmp``)."""
        p = self._pending
        if p is None:
            raise RuntimeError(f"{self.lda}: dispatch before the interval's interface bid")
        clearing, sens, fixed, lin_row = self._clear_at_dispatch(interval, lmp, cleared_mw)
        utility_mw = fixed + p.passive_mw  # at the linearisation the dispatch was priced on
        pos = {name: i for i, name in enumerate(sens.der_names)}
        out: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
        rows: Rows = []
        me, market, h, td = Party.dmo(self.lda), f"lda:{self.lda}", self.hours, self.td
        da_mw, da_lmp = da if da is not None else (0.0, 0.0)
        # two settlements inside the LDA: each DER location's day-ahead schedule
        # at its day-ahead DLMP, and the utility's, the rest of the LDA's, at the
        # day-ahead LMP (the DMO keeps the day-ahead loss and congestion rent)
        da_at = self.day_ahead_schedules(interval, da_mw, da_lmp) if da is not None else {}
        scheduled = {loc: da_at[loc].mw if loc in da_at else 0.0 for loc, _ in p.pairs}
        da_rows: Rows = [
            (
                interval,
                self.lda,
                loc.aggregator,
                loc.bus,
                x.mw,
                x.dlmp,
                x.energy,
                x.loss,
                x.congestion,
            )
            for loc, x in sorted(da_at.items(), key=lambda t: (t[0].aggregator, t[0].bus))
        ]
        utility_da = da_mw - sum(td.to_td(mw) for mw in scheduled.values()) if da else 0.0
        utility = Party.utility(self.lda)
        pay = [
            ledger.Payment(interval, market, me, ISO, "energy", cleared_mw - da_mw, lmp, h),
            *(
                [ledger.Payment(interval, market, me, ISO, "day_ahead", da_mw, da_lmp, h)]
                if da_mw
                else []
            ),
            *(
                [ledger.Payment(interval, market, utility, me, "day_ahead", utility_da, da_lmp, h)]
                if utility_da
                else []
            ),
            ledger.Payment(
                interval,
                market,
                utility,
                me,
                "energy",
                td.to_td(utility_mw) - utility_da,
                lmp,
                h,
            ),
        ]
        for loc, _ in p.pairs:
            i = pos[loc.element]
            mw, price = float(clearing.der_mw[i]), float(clearing.dlmp[i])
            setpoints, prices = out.setdefault(loc.aggregator, ({}, {}))
            setpoints[loc.bus] = mw
            prices[loc.bus] = price
            rows.append(
                (
                    interval,
                    self.lda,
                    loc.aggregator,
                    loc.bus,
                    mw,
                    price,
                    float(clearing.dlmp_energy[i]),
                    float(clearing.dlmp_loss[i]),
                    float(clearing.dlmp_congestion[i]),
                )
            )
            if scheduled[loc]:
                pay.append(
                    ledger.Payment(
                        interval,
                        market,
                        Party.agg(loc.aggregator),
                        me,
                        f"day_ahead@{loc.bus}",
                        td.to_td(scheduled[loc]),
                        da_at[loc].dlmp,
                        h,
                    )
                )
            pay.append(
                ledger.Payment(
                    interval,
                    market,
                    Party.agg(loc.aggregator),
                    me,
                    f"energy@{loc.bus}",
                    td.to_td(mw - self.firm_mw(loc) - scheduled[loc]),
                    price,
                    h,
                )
            )
        return out, {
            "dispatch": (DISPATCH_COLUMNS, rows),
            "settlements": (ledger.COLUMNS, [x.row() for x in pay]),
            "linearisation": (LINEARISATION_COLUMNS, [lin_row]),
            "constraints": (CONSTRAINT_COLUMNS, _constraint_rows(interval, self.lda, clearing)),
            **(
                {"day_ahead_dispatch": (day_ahead.DAY_AHEAD_DISPATCH_COLUMNS, da_rows)}
                if da_rows
                else {}
            ),
        }

    def _clear_at_dispatch(
        self, interval: int, lmp: float, cleared_mw: float
    ) -> tuple[LdaClearing, Sensitivities, float, tuple[object, ...]]:
        """Clear on the forecast linearisation; with ``relinearise``, again on
        the feeder linearised at each dispatch until it stops moving. Returns
        the clearing, the linearisation it was priced on, the head power not
        due to the DERs there, and the ``linearisation`` row.

        The award was cleared on the interface bid, built on the forecast
        linearisation. Re-linearising corrects the physics of the dispatch
        (voltages, loadings, marginal losses), not the energy balance:

        * if the first clearing is the feeder's price-taking dispatch at the
          LMP (the usual case: no local block is marginal), so is every
          re-clearing, on the new linearisation; where it draws more or less
          than the award, that is the LDA's imbalance, settled as such;
        * if a local block was marginal (split to meet the award), each
          re-clearing meets the award shifted by what the new linearisation
          says the previous dispatch really draws at the head beyond what the
          forecast one said (``head_correction_mw``), with that block still
          setting the price.

        Forcing the award itself would make the DERs absorb the bid's
        linearisation error, at a price set by whichever block closes the gap
        (measured: PV curtailment at 0 $/MWh setting the LDA's energy price in
        126 of 288 intervals while the LMP was ~20)."""
        p = self._pending
        assert p is not None
        state0, sens0, fixed0 = p.state, p.sens, p.fixed_mw
        state, sens, fixed = state0, sens0, fixed0
        award = self.td.to_feeder(cleared_mw)
        clearing = clear_lda(award, lmp, p.curves, state, sens, fixed, self.limits)
        taker = abs(clearing.energy_price - lmp) <= 1e-9 * (1.0 + abs(lmp))
        iterations, change, correction = 0, math.nan, 0.0
        tried: list[tuple[LdaClearing, Sensitivities, float]] = []
        while self.relinearise is not None and iterations < RELINEARISE_MAX:
            dispatched = np.asarray(clearing.der_mw)
            point = self.relinearise(dispatched)
            if point is None:
                break  # the power flow diverged: keep the last clearing
            state, sens = point
            fixed = fixed_head_mw(state)
            correction = state.substation_p_mw - _linear_head(state0, sens0, fixed0, dispatched)
            again = clear_lda(
                award + correction,
                lmp,
                p.curves,
                state,
                sens,
                fixed,
                self.limits,
                price_taker=taker,
            )
            change = float(np.max(np.abs(again.der_mw - dispatched), initial=0.0))
            clearing, iterations = again, iterations + 1
            tried.append((again, sens, fixed))
            if change <= RELINEARISE_TOL_MW:
                break
        converged = iterations > 0 and change <= RELINEARISE_TOL_MW
        if tried and not converged:
            # The dispatch hops between vertices (a block whose price is within
            # a loss factor's change of the LMP flips in and out): they are
            # near-equal in bid value, so take the one that meets the award
            # best, on its own linearisation.
            clearing, sens, fixed = min(tried, key=lambda t: abs(t[0].shortfall_mw))
        self.priced_on = sens
        row = (interval, self.lda, iterations, change, converged, correction)
        return clearing, sens, fixed, row


def _constraint_rows(interval: int, lda: str, clearing: LdaClearing) -> list[tuple[object, ...]]:
    return [
        (interval, lda, status, c.kind, c.element, c.value, c.limit, c.dual, c.violation)
        for status, rows in (("binding", clearing.binding), ("relaxed", clearing.relaxed))
        for c in rows
    ]


def _linear_head(state: FeederState, sens: Sensitivities, fixed: float, der: np.ndarray) -> float:
    """Head net demand of DER set-points ``der`` on one linearisation."""
    p0 = np.asarray(state.der_mw, dtype=float)
    return float(fixed + p0.sum() + np.asarray(sens.dpsub_dp) @ (der - p0))
