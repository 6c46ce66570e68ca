"""Utility federate of one LDA: the grid operator, plus whatever market roles
the organisational model places at the utility (see ``common.routes``).

Per interval k (see ``common.schedule``):

* BID: forecast power flow and linearisation; the grid model goes to an
  independent market operator if the model has one;
* AGGREGATE: as DMO (models 3, 5) the LDA's bid from the DER bids; without a
  market inside the LDA (baseline, models 1-2) the utility's own fixed bid;
* DISPATCH: the ISO's interface award; as DMO the dispatch of the award; as
  DERM under an ISO-run DER market (model 2) the awards turned into
  set-points, overridden where the feeder would be violated;
* MEASURE: the DERs' actual output, the power flow, the meter reading.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from dsosim.federates.aggregator.pv import volt_var_ratings
from dsosim.federates.aggregator.spec_json import fleet_from_json
from dsosim.federates.common import messages as msg
from dsosim.federates.common import routes
from dsosim.federates.common.config import FederationConfig
from dsosim.federates.common.curves import BidCurve
from dsosim.federates.common.forecasts import FORECAST_COLUMNS, ForecastLog
from dsosim.federates.common.scale import TdScale
from dsosim.federates.common.schedule import (
    DayAheadPhase,
    Phase,
    at,
    day_ahead_at,
    day_ahead_due,
)
from dsosim.federates.common.shell import FederateShell, expect, federate_main
from dsosim.federates.dso.grid import Forecast, GridOperator
from dsosim.federates.markets.derm_override import relinearised_overrides
from dsosim.federates.markets.dmo_factory import make_dmo
from dsosim.federates.markets.grid_model import to_message
from dsosim.federates.markets.host import send_dispatch, send_interface_bid, take_day_ahead
from dsosim.federates.markets.lda_market import Limits
from dsosim.federates.markets.location import Location
from dsosim.federates.markets.nodal_dmo import LINEARISATION_COLUMNS


def run(shell: FederateShell, config: FederationConfig, name: str, base_dir: Path) -> None:
    # One BLAS thread: a federation runs several processes per core, and the
    # DSO's BLAS work (matrix-vector products over every node and branch per
    # DER) is too small to gain from threads that spin waiting for a core
    # (`dsosim bench feeder`: 4x the CPU time of the LDA market's rows at
    # 10,000 buses on a busy 2-core machine).
    threadpool_limits(limits=1)
    cfg = config.dso(name)
    fleets = {a: config.aggregator(a).buses for a in cfg.aggregators}
    grid = GridOperator(
        cfg,
        fleets,
        config.time,
        seed=config.seed,
        base_dir=base_dir,
        volt_var_mva={a: _volt_var_ratings(config.aggregator(a).fleet) for a in cfg.aggregators},
    )
    in_market = [a for a in cfg.aggregators if routes.bids_in_market(config, config.aggregator(a))]
    dmo = (
        make_dmo(config, cfg, grid.locations) if routes.local_dmo_of(config, cfg) == name else None
    )
    is_derm = routes.derm_of(config, cfg) == name and dmo is None  # model 2
    model_to = routes.grid_model_target(config, cfg)
    limits = Limits.planning(cfg.limits)  # the DERM plans with the margin
    element_index = {(loc.aggregator, loc.bus): i for i, loc in enumerate(grid.locations)}
    da = config.iso.day_ahead
    time = config.time
    per_day = time.intervals_per_day
    gate = da.gate_intervals(time.interval_s) if da is not None else 0
    periods = round(1440.0 / da.period_minutes) if da is not None else 1
    log = ForecastLog(name, per_day, per_day // periods)
    offering = [
        a for a in cfg.aggregators if name in routes.day_ahead_targets(config, config.aggregator(a))
    ]
    for k in range(time.n_intervals):
        day = day_ahead_due(k, per_day, gate, time.n_intervals) if da is not None else None
        if da is not None and day is not None:
            shell.advance(day_ahead_at(k, DayAheadPhase.DA_BID, time))
            offers = expect(
                shell.receive(allowed_senders=offering), msg.DayAheadOffer, day * per_day, offering
            )
            intervals = (day * per_day + np.arange(per_day)).reshape(periods, -1)
            fixed = grid.day_ahead_bid(intervals, da.load_forecast_error, day, config.seed)
            log.expect(day, "load_mw", grid.day_ahead_load_mw)
            curves = day_ahead_curve(fixed, offers, grid.td, grid.locations)
            shell.send(cfg.iso, msg.DayAheadBid(name, day * per_day, cfg.td_bus, curves))
            if dmo is not None:
                take_day_ahead(dmo, offers, per_day)
        shell.advance(at(k, Phase.BID, time))
        forecast = grid.forecast(k)
        if model_to is not None:
            shell.send(model_to, to_message(name, k, forecast.state, forecast.sens))

        shell.advance(at(k, Phase.AGGREGATE, config.time))
        if dmo is not None:
            bids = expect(shell.receive(allowed_senders=in_market), msg.FleetBid, k, in_market)
            send_interface_bid(
                shell, dmo, k, bids, forecast.state, forecast.sens, iso=cfg.iso, td_bus=cfg.td_bus
            )
        elif routes.local_dmo_of(config, cfg) is None:
            shell.send(cfg.iso, msg.InterfaceBid(name, k, cfg.td_bus, grid.utility_bid(in_market)))

        shell.advance(at(k, Phase.DISPATCH, config.time))
        received = shell.receive(allowed_senders=[cfg.iso])
        expected_kinds = (msg.Award, msg.FleetAward) if is_derm else (msg.Award,)
        for m in received:
            if not isinstance(m, expected_kinds):
                raise msg.MessageError(
                    m.sender, "kind", f"{m.KIND} is not what {name} expects at DISPATCH"
                )
        awards = [m for m in received if isinstance(m, msg.Award)]
        award = expect(awards, msg.Award, k, [cfg.iso])[cfg.iso]
        if dmo is not None:
            # the utility owns the feeder: its market re-linearises at the dispatch
            dmo.relinearise = functools.partial(grid.linearise_at, k)
            send_dispatch(shell, dmo, k, award)
            grid.use_planning(dmo.priced_on)
        if is_derm:
            by_agg = _fleet_awards(received, k, in_market)
            _override_and_dispatch(shell, k, by_agg, grid, forecast, limits, element_index)

        shell.advance(at(k, Phase.MEASURE, config.time))
        got = expect(
            shell.receive(allowed_senders=list(cfg.aggregators)),
            msg.Measurement,
            k,
            cfg.aggregators,
        )
        td_flow, allocation, tables = grid.measure(
            k,
            {a: m.actual_mw for a, m in got.items()},
            {a: m.setpoint_mw for a, m in got.items()},
            in_market,
            award.lmp,
            award.cleared_mw,
            tariff=config.model.tariff,
        )
        shell.send(cfg.iso, msg.Meter(name, k, cfg.td_bus, td_flow, allocation))
        shell.record_tables(k, tables)
        if da is not None:
            log.observe(k, "load_mw", grid.measured_load_mw)
            shell.record(k, "forecasts", FORECAST_COLUMNS, log.rows_after(k))
        shell.end_interval(k)


def _volt_var_ratings(fleet: dict[str, Any]) -> dict[str, float]:
    """MVA of volt-var inverters per bus of a fleet's config (the fleet is
    parsed only if some PV system runs volt-var)."""
    if not any(isinstance(d, dict) and d.get("volt_var") for d in fleet.get("pvs") or ()):
        return {}
    return volt_var_ratings(fleet_from_json(fleet).pvs)


def day_ahead_curve(
    fixed: Sequence[BidCurve],
    offers: Mapping[str, msg.DayAheadOffer],
    td: TdScale,
    locations: Sequence[Location],
) -> tuple[BidCurve, ...]:
    """The LDA's day-ahead bid per period (T-D scale): the feeder forecast
    (``fixed``) plus every aggregator's offer at each of its locations. Not
    feeder-constrained (losses and limits of the DERs' dispatch are left to
    real time); an offer for a location the aggregator does not serve is an error."""
    known = {(loc.aggregator, loc.bus) for loc in locations}
    per_period: list[list[BidCurve]] = [[c] for c in fixed]
    for agg, m in sorted(offers.items()):
        for bus, curves in sorted(m.offers.items()):
            if (agg, bus) not in known:
                raise msg.MessageError(
                    agg, "day_ahead_offer.offers", f"{bus!r} is not a location of {agg!r}"
                )
            if len(curves) != len(fixed):
                raise msg.MessageError(
                    agg,
                    "day_ahead_offer.offers",
                    f"{len(curves)} periods at {bus!r}, expected {len(fixed)}",
                )
            for p, curve in enumerate(curves):
                per_period[p].append(td.curve_to_td(curve))
    return tuple(BidCurve.combine(curves) for curves in per_period)


def _fleet_awards(
    received: list[msg.Message], k: int, in_market: list[str]
) -> dict[str, msg.FleetAward]:
    """Model 2: exactly one ISO award per market aggregator for interval ``k``."""
    by_agg: dict[str, msg.FleetAward] = {}
    for m in received:
        if isinstance(m, msg.FleetAward):
            if m.interval != k or m.aggregator in by_agg or m.aggregator not in in_market:
                raise msg.MessageError(
                    m.sender,
                    "fleet_award.aggregator",
                    f"unexpected award for {m.aggregator!r} at interval {m.interval}",
                )
            by_agg[m.aggregator] = m
    missing = sorted(set(in_market) - set(by_agg))
    if missing:
        raise RuntimeError(f"interval {k}: no ISO award for {missing}")
    return by_agg


def _override_and_dispatch(
    shell: FederateShell,
    k: int,
    by_agg: dict[str, msg.FleetAward],
    grid: GridOperator,
    forecast: Forecast,
    limits: Limits,
    element_index: dict[tuple[str, str], int],
) -> None:
    """Model 2: the ISO's awards, as feasible set-points, to the aggregators,
    decided on the feeder re-linearised at them (the utility owns it)."""
    decided = relinearised_overrides(
        {a: m.awards_mw for a, m in by_agg.items()},
        scale=grid.td,
        der_index=element_index,
        state=forecast.state,
        sens=forecast.sens,
        limits=limits,
        relinearise=functools.partial(grid.linearise_at, k),
    )
    grid.use_planning(decided.sens)
    setpoints = decided.setpoints
    shell.record(
        k,
        "linearisation",
        LINEARISATION_COLUMNS,
        [(k, grid.name, decided.iterations, decided.change_mw, decided.converged, math.nan)],
    )
    rows = []
    for agg in sorted(by_agg):
        shell.send(agg, msg.Dispatch(shell.name, k, setpoints[agg], dict(by_agg[agg].prices)))
        rows += [
            (k, grid.name, agg, b, grid.td.to_feeder(by_agg[agg].awards_mw[b]), mw)
            for b, mw in setpoints[agg].items()
        ]
    shell.record(
        k,
        "overrides",
        ("interval", "dso", "aggregator", "location", "award_mw", "setpoint_mw"),
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    return federate_main("dso", run, argv)


if __name__ == "__main__":
    sys.exit(main())
