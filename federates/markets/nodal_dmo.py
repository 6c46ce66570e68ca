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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dsosim.federates.common import ledger
from dsosim.federates.common.curves import BidCurve, PlacedCurve
from dsosim.federates.common.parties import ISO, Party
from dsosim.federates.common.scale import TdScale
from dsosim.federates.common.tables import Rows, Tables
from dsosim.federates.dso.feeder import FeederState, Sensitivities
from dsosim.federates.markets.lda_market import (
    DerCurve,
    Limits,
    build_interface_bid,
    clear_lda,
    fixed_head_mw,
)
from dsosim.federates.markets.location import Location as Located

BID_COLUMNS = ("interval", "bidder", "receiver", "location", "base_mw", "prices", "mws")
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
        self._pending: _Pending | None = None

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
                    (
                        interval,
                        loc.aggregator,
                        str(Party.dmo(self.lda)),
                        loc.bus,
                        c.base_mw,
                        [p for p, _ in c.blocks],
                        [q for _, q in c.blocks],
                    )
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
            pairs, curves, state, sens, built.fixed_mw, float(built.fixed_mw + float(passive))
        )
        td_curve = self.td.curve_to_td(built.curve)
        tables["bids"][1].append(
            (
                interval,
                str(Party.dmo(self.lda)),
                str(ISO),
                "td",
                td_curve.base_mw,
                [p for p, _ in td_curve.blocks],
                [q for _, q in td_curve.blocks],
            )
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
        clearing = clear_lda(
            self.td.to_feeder(cleared_mw), lmp, p.curves, p.state, p.sens, p.fixed_mw, self.limits
        )
        pos = {name: i for i, name in enumerate(p.sens.der_names)}
        out: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
        rows: Rows = []
        me, market, h, td = Party.dmo(self.lda), f"lda:{self.lda}", self.hours, self.td
        da_mw, da_lmp = da if da is not None else (0.0, 0.0)
        pay = [
            ledger.Payment(interval, market, me, ISO, "energy", cleared_mw - da_mw, lmp, h),
            *(
                [ledger.Payment(interval, market, me, ISO, "day_ahead", da_mw, da_lmp, h)]
                if da_mw
                else []
            ),
            ledger.Payment(
                interval,
                market,
                Party.utility(self.lda),
                me,
                "energy",
                td.to_td(p.utility_mw),
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
            pay.append(
                ledger.Payment(
                    interval,
                    market,
                    Party.agg(loc.aggregator),
                    me,
                    f"energy@{loc.bus}",
                    td.to_td(mw - self.firm_mw(loc)),
                    price,
                    h,
                )
            )
        return out, {
            "dispatch": (DISPATCH_COLUMNS, rows),
            "settlements": (ledger.COLUMNS, [x.row() for x in pay]),
        }
