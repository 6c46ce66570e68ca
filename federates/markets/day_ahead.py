"""The LDA market's day-ahead side (layered models, plain Python): per
day-ahead period, the LDA's bid built from its aggregators' day-ahead offers
on the feeder forecast for that period, and, once the ISO has cleared the
day, the DER locations' day-ahead schedules and day-ahead DLMPs.

Both are the real-time market's own functions (``lda_market``) on another
operating point: ``build_interface_bid`` for the bid, ``clear_lda`` for the
schedules. The operating point of a period is the feeder at the period's
forecast load with each offering DER at its offer's quantity at a reference
price (the utility's guess of the period's price: ``reference_der_mw``),
solved and linearised by the feeder's owner (``GridOperator.day_ahead_points``).
So the day-ahead bid prices the feeder's losses, voltages and loadings
exactly as the real-time one does, within the linearisation's error at that
point, and within the forecast's error of what then happens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dsosim.federates.common import messages as msg
from dsosim.federates.common.curves import BidCurve, PlacedCurve
from dsosim.federates.common.scale import TdScale
from dsosim.federates.dso.feeder import FeederState, Sensitivities
from dsosim.federates.markets.lda_market import (
    DerCurve,
    Limits,
    build_interface_bid,
    clear_lda,
    fixed_head_mw,
)
from dsosim.federates.markets.location import Location

Offers = Mapping[str, Mapping[str, Sequence[BidCurve]]]
"""aggregator -> location -> one curve per period (feeder scale)."""

DAY_AHEAD_DISPATCH_COLUMNS = (
    "interval",
    "dso",
    "aggregator",
    "location",
    "da_mw",
    "da_dlmp",
    "da_dlmp_energy",
    "da_dlmp_loss",
    "da_dlmp_congestion",
)
"""``day_ahead_dispatch``: per interval and DER location, the day-ahead
schedule (feeder scale) and the day-ahead DLMP it settles at, split as the
real-time DLMPs are (``dispatch`` table)."""


@dataclass(frozen=True, slots=True, eq=False)
class Point:
    """The feeder forecast of one day-ahead period, linearised."""

    state: FeederState
    sens: Sensitivities


@dataclass(frozen=True, slots=True)
class Schedule:
    """One DER location's day-ahead schedule (feeder scale) and its price."""

    mw: float
    dlmp: float
    energy: float
    loss: float
    congestion: float


def check_offers(
    offers: Mapping[str, msg.DayAheadOffer], locations: Sequence[Location], periods: int
) -> None:
    """Every offer is at a location of its aggregator, one curve per period."""
    known = {(loc.aggregator, loc.bus) for loc in locations}
    for agg, m in sorted(offers.items()):
        for bus, curves in sorted(m.offers.items()):
            if (agg, bus) not in known:
                raise msg.MessageError(
                    agg, "day_ahead_offer.offers", f"{bus!r} is not a location of {agg!r}"
                )
            if len(curves) != periods:
                raise msg.MessageError(
                    agg,
                    "day_ahead_offer.offers",
                    f"{len(curves)} periods at {bus!r}, expected {periods}",
                )


def placed(offers: Offers, locations: Sequence[Location], period: int) -> list[DerCurve]:
    """The offers of one period as curves at the feeder's DER elements."""
    return [
        PlacedCurve(loc.element, offers[loc.aggregator][loc.bus][period], owner=loc.aggregator)
        for loc in locations
        if loc.bus in offers.get(loc.aggregator, {})
    ]


def reference_der_mw(
    offers: Offers, locations: Sequence[Location], prices: Sequence[float | None]
) -> list[np.ndarray]:
    """Per period, the DERs' net demand the feeder forecast is solved at: each
    offer's quantity at the period's reference price; DERs without an offer,
    or every DER of a period without a price, at zero (not forecast)."""
    out = []
    for p, price in enumerate(prices):
        mw = np.zeros(len(locations))
        if price is not None:
            for i, loc in enumerate(locations):
                curves = offers.get(loc.aggregator, {}).get(loc.bus)
                if curves is not None:
                    mw[i] = curves[p].quantity_at(price)
        out.append(mw)
    return out


def lda_bid(
    points: Sequence[Point],
    offers: Offers,
    locations: Sequence[Location],
    limits: Limits,
    td: TdScale,
) -> tuple[BidCurve, ...]:
    """The LDA's day-ahead bid, one curve per period at the T-D bus (x scale):
    the real-time interface bid (``build_interface_bid``) of the period's
    offers on the period's feeder forecast, within the same limits."""
    out = []
    for p, point in enumerate(points):
        built = build_interface_bid(
            placed(offers, locations, p),
            point.state,
            point.sens,
            fixed_head_mw(point.state),
            limits,
        )
        out.append(td.curve_to_td(built.curve))
    return tuple(out)


def schedules(
    point: Point,
    offers: Offers,
    locations: Sequence[Location],
    period: int,
    award_mw: float,
    lmp: float,
    limits: Limits,
) -> dict[Location, Schedule]:
    """The DER locations' day-ahead schedules for one period: the real-time
    clearing (``clear_lda``) of the LDA's day-ahead award (feeder scale) at
    the day-ahead LMP on the period's forecast, with day-ahead DLMPs."""
    curves = placed(offers, locations, period)
    clearing = clear_lda(
        award_mw, lmp, curves, point.state, point.sens, fixed_head_mw(point.state), limits
    )
    pos = {name: i for i, name in enumerate(clearing.der_names)}
    out = {}
    for loc in locations:
        if loc.bus not in offers.get(loc.aggregator, {}):
            continue
        i = pos[loc.element]
        out[loc] = Schedule(
            float(clearing.der_mw[i]),
            float(clearing.dlmp[i]),
            float(clearing.dlmp_energy[i]),
            float(clearing.dlmp_loss[i]),
            float(clearing.dlmp_congestion[i]),
        )
    return out
