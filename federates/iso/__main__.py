"""ISO federate: hosts the wholesale market role on the HELICS bus.

Per interval k (see ``common.schedule``) at CLEAR it reads the bids for k at
every T-D bus (one per LDA from its market operator in the layered models;
the utility's plus each aggregator's per-location curves in the grand-central
models) and the meter readings for k-1, settles k-1's imbalance, clears k,
and sends: every utility its interface award (LMP and schedule); a separate
market operator its award; in model 1 (ISO as DERM) every aggregator its
dispatch; in model 2 the utility (DERM) each aggregator's awards.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from dsosim.federates.common import messages as msg
from dsosim.federates.common import routes
from dsosim.federates.common.config import FederationConfig
from dsosim.federates.common.curves import BID_COLUMNS, bid_row
from dsosim.federates.common.forecasts import FORECAST_COLUMNS, ForecastLog
from dsosim.federates.common.parties import BidKey, Party, Role
from dsosim.federates.common.routes import day_ahead_targets
from dsosim.federates.common.scale import TdScale
from dsosim.federates.common.schedule import (
    DayAheadPhase,
    Phase,
    at,
    day_ahead_at,
    day_ahead_due,
)
from dsosim.federates.common.shell import FederateShell, expect, federate_main
from dsosim.federates.iso.wholesale import AwardLine, Clearing, IsoBid, WholesaleMarket


def _expected(config: FederationConfig) -> dict[str, tuple[str, Party]]:
    """Bidder federate -> (LDA, settlement party) at every T-D bus."""
    out = {}
    for dso in config.dsos:
        local = routes.local_dmo_of(config, dso)
        for bidder in routes.td_bidders(config, dso):
            if bidder == local:
                out[bidder] = (dso.name, Party.dmo(dso.name))
            elif bidder == dso.name:
                out[bidder] = (dso.name, Party.utility(dso.name))
            else:
                out[bidder] = (dso.name, Party.agg(bidder))
    return out


def _holder(config: FederationConfig, lda: str) -> Party:
    """Party responsible for an LDA's imbalance beyond what the meter allocates."""
    return Party.dmo(lda) if routes.local_dmo_of(config, config.dso(lda)) else Party.utility(lda)


def run(shell: FederateShell, config: FederationConfig) -> None:
    market = WholesaleMarket(config.iso, config.time, seed=config.seed)
    expected = _expected(config)
    utilities = [d.name for d in config.dsos]
    senders = sorted(set(expected) | set(utilities))
    holders = {d.name: _holder(config, d.name) for d in config.dsos}
    n = config.time.n_intervals
    da = config.iso.day_ahead
    gate = da.gate_intervals(config.time.interval_s) if da is not None else 0
    log = ForecastLog(shell.name, market.per_day, market.per_period if da is not None else 1)
    for k in range(n + 1):
        early: list[msg.Message] = []  # meters that arrived with the day-ahead bids
        day = day_ahead_due(k, market.per_day, gate, n) if da is not None and k < n else None
        if day is not None:
            early = _day_ahead(shell, config, market, k, day, holders, senders)
            _expect_forecasts(log, market, day)
        shell.advance(at(k, Phase.CLEAR, config.time))
        bids: list[IsoBid] = []
        got: set[str] = set()
        meters: dict[str, tuple[float, dict[Party, float]]] = {}
        bid_rows: list[tuple[object, ...]] = []
        for m in [*early, *shell.receive(allowed_senders=senders)]:
            if isinstance(m, msg.Meter) and m.interval == k - 1 and m.sender in utilities:
                meters[m.sender] = (m.actual_mw, dict(m.allocation))
                continue
            if m.interval != k or k == n or m.sender not in expected or m.sender in got:
                raise msg.MessageError(
                    m.sender,
                    f"{m.KIND}.interval",
                    f"unexpected {m.KIND} for interval {m.interval} at interval {k}",
                )
            got.add(m.sender)
            lda, party = expected[m.sender]
            bid_rows.extend(_bid_rows(k, m, party))
            if isinstance(m, msg.InterfaceBid) and party.role is not Role.AGG:
                if m.td_bus != market.interfaces[lda]:
                    raise msg.MessageError(
                        m.sender,
                        "interface_bid.td_bus",
                        f"{m.td_bus} is not the T-D bus {market.interfaces[lda]} of {lda}",
                    )
                bids.append(IsoBid(BidKey(lda, party), m.curve))
            elif isinstance(m, msg.FleetBid) and party.role is Role.AGG:
                # a fleet bids for the one modelled feeder; the LDA stands for `scale` of them
                td = TdScale(config.dso(lda).scale)
                bids.extend(
                    IsoBid(BidKey(lda, party, b.at), td.curve_to_td(b.curve)) for b in m.bids
                )
            else:
                raise msg.MessageError(
                    m.sender, "kind", f"{m.KIND} is not what the ISO expects from it"
                )
        if k > 0:
            shell.record_tables(k - 1, market.settle_imbalance(k - 1, meters, holders))
        if k == n:
            break
        missing = sorted(set(expected) - got)
        if missing:
            raise RuntimeError(f"interval {k}: no bid from {missing}")
        clearing = market.clear(k, bids)
        _send_awards(shell, config, market, k, clearing.awards)
        shell.record_tables(k, clearing.tables)
        _observe(shell, log, market, k, clearing)
        shell.record(k, "bids", BID_COLUMNS, bid_rows)
        shell.end_interval(k)


def _day_ahead(
    shell: FederateShell,
    config: FederationConfig,
    market: WholesaleMarket,
    k: int,
    day: int,
    holders: Mapping[str, Party],
    senders: list[str],
) -> list[msg.Message]:
    """DA_CLEAR (before interval ``k``'s BID): every LDA's day-ahead bid (sent
    by its utility, for the LDA's schedule holder) and, where aggregators bid
    at the ISO (models 1-2), their day-ahead offers per location; the day's
    clearing, its tables. Returns the other messages received (the last
    interval's meters), for CLEAR."""
    shell.advance(day_ahead_at(k, DayAheadPhase.DA_CLEAR, config.time))
    first = day * market.per_day
    utilities = [d.name for d in config.dsos]
    offering = {
        a.name: a.dso for a in config.aggregators if config.iso.name in day_ahead_targets(config, a)
    }
    received = shell.receive(allowed_senders=senders)
    day_ahead = (msg.DayAheadBid, msg.DayAheadOffer)
    others = [m for m in received if not isinstance(m, day_ahead)]
    got = expect(
        [m for m in received if isinstance(m, msg.DayAheadBid)], msg.DayAheadBid, first, utilities
    )
    offers = expect(
        [m for m in received if isinstance(m, msg.DayAheadOffer)],
        msg.DayAheadOffer,
        first,
        sorted(offering),
    )
    bids = {}
    for lda, m in got.items():
        if m.td_bus != market.interfaces[lda]:
            raise msg.MessageError(
                m.sender,
                "day_ahead_bid.td_bus",
                f"{m.td_bus} is not the T-D bus {market.interfaces[lda]} of {lda}",
            )
        bids[BidKey(lda, holders[lda])] = m.curves
    for agg, offer in offers.items():
        lda = offering[agg]
        td = TdScale(config.dso(lda).scale)  # a fleet offers for the one modelled feeder
        known = set(config.aggregator(agg).buses)
        for bus, curves in offer.offers.items():
            if bus not in known:
                raise msg.MessageError(
                    agg, "day_ahead_offer.offers", f"{bus!r} is not a location of {agg!r}"
                )
            bids[BidKey(lda, Party.agg(agg), bus)] = [td.curve_to_td(c) for c in curves]
    shell.record_tables(first, market.clear_day_ahead(day, bids))
    # published prices: every aggregator learns its LDA's day-ahead LMPs
    for dso in config.dsos:
        lmp = market.day_ahead_prices(day, dso.name)
        for agg in dso.aggregators:
            shell.send(agg, msg.DayAheadPrices(shell.name, first, dso.td_bus, lmp))
        if any(offering.get(a) == dso.name for a in dso.aggregators):
            # the utility sees the aggregators' schedules on its feeder (``unwound``)
            schedules: dict[str, dict[str, tuple[float, ...]]] = {}
            for key, mw in sorted(market.days[day].awards.items()):
                if key.lda == dso.name and key.party.role is Role.AGG:
                    schedules.setdefault(key.party.name, {})[key.location] = tuple(mw.tolist())
            shell.send(dso.name, msg.DayAheadSchedules(shell.name, first, lmp, schedules))
    return others


def _expect_forecasts(log: ForecastLog, market: WholesaleMarket, day: int) -> None:
    """The ISO's forecasts for ``day``: its system load, and the day-ahead
    price at each T-D bus (what real time then pays there)."""
    schedule = market.days[day]
    log.expect(day, "system_load_mw", schedule.forecast_load_mw.tolist())
    for lda in sorted(market.interfaces):
        log.expect(day, f"lmp_usd_mwh@{lda}", market.day_ahead_prices(day, lda))


def _observe(
    shell: FederateShell, log: ForecastLog, market: WholesaleMarket, k: int, clearing: Clearing
) -> None:
    """What happened in interval ``k``, for the forecasts table (with a day-ahead market)."""
    if market.da is None:
        return
    log.observe(k, "system_load_mw", float(market.fixed_load(k).sum()))
    for lda in sorted(market.interfaces):
        line = next(a for key, a in clearing.awards.items() if key.lda == lda)
        log.observe(k, f"lmp_usd_mwh@{lda}", line.lmp)
    shell.record(k, "forecasts", FORECAST_COLUMNS, log.rows_after(k))


def _bid_rows(k: int, m: msg.Message, party: Party) -> list[tuple[object, ...]]:
    """``bids`` rows for what the ISO received: the utility's curve and each
    fleet curve as sent (per modelled feeder, like a fleet's bids to a DMO);
    a DMO records the curve it sends itself."""
    if isinstance(m, msg.FleetBid):
        return [bid_row(k, m.sender, "iso", b.at, b.curve) for b in m.bids]
    if isinstance(m, msg.InterfaceBid) and party.role is not Role.DMO:
        return [bid_row(k, str(party), "iso", "td", m.curve)]
    return []


def _send_awards(
    shell: FederateShell,
    config: FederationConfig,
    market: WholesaleMarket,
    k: int,
    awards: Mapping[BidKey, AwardLine],
) -> None:
    for dso in config.dsos:
        lda = dso.name
        mine = {key: a for key, a in awards.items() if key.lda == lda}
        any_line = next(iter(mine.values()))
        total = sum(a.cleared_mw for a in mine.values())
        da_mw, da_lmp = market.da_position(k, lda)
        interface = msg.Award(
            shell.name,
            k,
            dso.td_bus,
            any_line.lmp,
            any_line.lmp_energy,
            any_line.lmp_congestion,
            total,
            da_mw,
            da_lmp,
        )
        shell.send(lda, interface)  # the utility always learns its interface's price and schedule
        local = routes.local_dmo_of(config, dso)
        if local is not None and local != lda:
            shell.send(local, interface)
        for agg in dso.aggregators:
            lines = {key.location: a for key, a in mine.items() if key.party == Party.agg(agg)}
            if not lines:
                continue
            awards_mw = {loc: a.cleared_mw for loc, a in sorted(lines.items())}
            prices = {loc: a.lmp for loc, a in sorted(lines.items())}
            derm = routes.derm_of(config, dso)
            if derm is None:
                raise RuntimeError(f"{agg} bid at the ISO but {lda} has no DERM to dispatch it")
            if derm == shell.name:  # the ISO dispatches the modelled feeder's DERs directly
                setpoints = {loc: TdScale(dso.scale).to_feeder(mw) for loc, mw in awards_mw.items()}
                shell.send(agg, msg.Dispatch(shell.name, k, setpoints, prices))
            else:
                shell.send(derm, msg.FleetAward(shell.name, k, agg, awards_mw, prices))


def main(argv: list[str] | None = None) -> int:
    return federate_main("iso", lambda shell, config, name, base: run(shell, config), argv)


if __name__ == "__main__":
    sys.exit(main())
