"""The shell side of hosting a DMO: the same two exchanges whichever federate
holds the market (the utility in models 3 and 5, the independent operator in
4 and 6). The market role itself (``NodalDmo`` / ``P2pDmo``) stays plain
Python; this module only moves its inputs and outputs through the shell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dsosim.federates.common import messages as msg
from dsosim.federates.common.shell import FederateShell
from dsosim.federates.dso.feeder import FeederState, Sensitivities
from dsosim.federates.markets import day_ahead
from dsosim.federates.markets.nodal_dmo import NodalDmo


def send_interface_bid(
    shell: FederateShell,
    dmo: NodalDmo,
    k: int,
    bids: Mapping[str, msg.FleetBid],
    state: FeederState,
    sens: Sensitivities,
    *,
    iso: str,
    td_bus: int,
) -> None:
    """AGGREGATE: the LDA's one bid at the T-D interface, from its fleets' bids."""
    fleet_bids = {a: {b.at: b.curve for b in m.bids} for a, m in bids.items()}
    curve, tables = dmo.interface_bid(k, fleet_bids, state, sens)
    shell.send(iso, msg.InterfaceBid(shell.name, k, td_bus, curve))
    shell.record_tables(k, tables)


def take_day_ahead(
    dmo: NodalDmo,
    offers: Mapping[str, msg.DayAheadOffer],
    per_day: int,
    points: Sequence[day_ahead.Point],
) -> None:
    """The aggregators' day-ahead offers, and the feeder forecast per period
    the LDA's day-ahead bid was built on, for the DMO to clear and settle
    their schedules."""
    if not offers:
        return
    m = next(iter(offers.values()))
    if len(points) != len(next(iter(m.offers.values()))):
        raise msg.MessageError(
            m.sender,
            "day_ahead_offer.offers",
            f"{len(next(iter(m.offers.values())))} periods, the feeder forecast has {len(points)}",
        )
    dmo.take_day_ahead(
        m.interval,
        per_day // len(points),
        {a: dict(o.offers) for a, o in offers.items()},
        points,
    )


def send_dispatch(shell: FederateShell, dmo: NodalDmo, k: int, award: msg.Award) -> None:
    """DISPATCH: set-points and DLMPs that meet the ISO's award, to each aggregator."""
    # a day-ahead schedule of the LDA, or a day-ahead price (a market ran)
    da = (award.da_mw, award.da_lmp) if award.da_mw or award.da_lmp else None
    dispatch, tables = dmo.dispatch(k, award.lmp, award.cleared_mw, da)
    for agg, (setpoints, prices) in sorted(dispatch.items()):
        shell.send(agg, msg.Dispatch(shell.name, k, setpoints, prices))
    shell.record_tables(k, tables)
