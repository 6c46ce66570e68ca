"""Utility federate of one LDA: the grid operator, plus whatever market roles
the organisational model places at the utility (see ``common.routes``).

Per interval k (see ``common.schedule``):

* BID: forecast power flow and linearisation; the grid model goes to an
  independent market operator if the model has one;
* AGGREGATE: as DMO (models 3, 5) the LDA's bid from the DER bids; without a
  market inside the LDA (baseline, models 1-2) the utility's own fixed bid;
* DISPATCH: the ISO's interface award; as DMO the dispatch of the award; as
  DERM under an ISO-run DER market (model 2) the awards turned into
  set-points, overridden where the feeder would be violated; for an
  independent market operator (models 4, 6) the feeder linearised at each
  dispatch it asks about (the same re-linearisation its own market does);
* MEASURE: the DERs' actual output, the power flow, the meter reading; to
  each aggregator with volt-var inverters the voltages its locations had.
"""

from __future__ import annotations

import functools
import itertools
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from dsosim.federates.aggregator.pv import volt_var_ratings
from dsosim.federates.aggregator.spec_json import fleet_from_json
from dsosim.federates.common import messages as msg
from dsosim.federates.common import routes
from dsosim.federates.common.config import FederationConfig, LimitsConfig
from dsosim.federates.common.forecasts import FORECAST_COLUMNS, ForecastLog
from dsosim.federates.common.schedule import (
    Clock,
    DayAheadPhase,
    Phase,
    at,
    day_ahead_at,
    day_ahead_due,
    round_trip_at,
)
from dsosim.federates.common.shell import FederateShell, expect, federate_main
from dsosim.federates.dso.feeder import FeederState, Sensitivities
from dsosim.federates.dso.grid import Forecast, GridOperator
from dsosim.federates.dso.unwound import UNWOUND_COLUMNS, ForwardCheck
from dsosim.federates.markets import day_ahead
from dsosim.federates.markets.derm_override import relinearised_overrides
from dsosim.federates.markets.dmo_factory import make_dmo
from dsosim.federates.markets.grid_model import to_message
from dsosim.federates.markets.host import send_dispatch, send_interface_bid, take_day_ahead
from dsosim.federates.markets.lda_market import Limits
from dsosim.federates.markets.nodal_dmo import LINEARISATION_COLUMNS, NodalDmo


def run(shell: FederateShell, config: FederationConfig, name: str, base_dir: Path) -> None:
    # One BLAS thread: a federation runs several processes per core, and the
    # DSO's BLAS work (matrix-vector products over every node and branch per
    # DER) is too small to gain from threads that spin waiting for a core
    # (`dsosim bench feeder`: 4x the CPU time of the LDA market's rows at
    # 10,000 buses on a busy 2-core machine).
    threadpool_limits(limits=1)
    cfg = config.dso(name)
    grid = utility_grid(config, name, base_dir)
    volt_var_fleets = sorted(
        a for a in cfg.aggregators if _volt_var_ratings(config.aggregator(a).fleet)
    )
    in_market = [a for a in cfg.aggregators if routes.bids_in_market(config, config.aggregator(a))]
    dmo = (
        make_dmo(config, cfg, grid.locations) if routes.local_dmo_of(config, cfg) == name else None
    )
    is_derm = routes.derm_of(config, cfg) == name and dmo is None  # model 2
    model_to = routes.grid_model_target(config, cfg)
    limits = Limits.planning(cfg.limits)  # the DERM plans with the margin
    element_index = {(loc.aggregator, loc.bus): i for i, loc in enumerate(grid.locations)}
    time = config.time
    day_ahead = _UtilityDayAhead(shell, config, name, grid, dmo, limits, element_index, model_to)
    for k in range(time.n_intervals):
        day_ahead.before(k)
        shell.advance(at(k, Phase.BID, time))
        forecast = grid.forecast(k)
        day_ahead.at_bid(k, forecast)
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
        day_ahead.at_dispatch(k, award)
        if model_to is not None:
            _answer_round_trips(shell, grid, k, model_to, forecast, time)
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
        for agg in volt_var_fleets:  # what their inverters measured (reactive power)
            shell.send(agg, msg.LocationVoltages(name, k, grid.location_voltages(agg)))
        shell.record_tables(k, tables)
        day_ahead.at_measure(k)
        shell.end_interval(k)


class _UtilityDayAhead:
    """The utility's part in the day-ahead market (nothing without one): at
    each gate closure, the LDA's day-ahead bid from its feeder forecast and
    the aggregators' offers sent to it (layered models; its DMO keeps them to
    settle); in models 1-2 the aggregators' schedules from the ISO, checked
    on the feeder every interval (``unwound``); the forecasts table."""

    def __init__(
        self,
        shell: FederateShell,
        config: FederationConfig,
        name: str,
        grid: GridOperator,
        dmo: NodalDmo | None,
        limits: Limits,
        element_index: dict[tuple[str, str], int],
        operator: str | None,
    ) -> None:
        self.shell, self.config, self.name, self.grid, self.dmo = shell, config, name, grid, dmo
        self.limits, self.operator = limits, operator
        self.seen_lmp: dict[int, float] = {}
        """The last real-time LMP seen in each period of the day (the
        reference price of the day-ahead feeder forecast)."""
        self.last_lmp: float | None = None
        self.cfg = config.dso(name)
        self.da = config.iso.day_ahead
        time = config.time
        self.per_day = time.intervals_per_day
        self.gate = self.da.gate_intervals(time.interval_s) if self.da is not None else 0
        self.periods = round(1440.0 / self.da.period_minutes) if self.da is not None else 1
        self.log = ForecastLog(name, self.per_day, self.per_day // self.periods)
        targets = {
            a: routes.day_ahead_targets(config, config.aggregator(a)) for a in self.cfg.aggregators
        }
        self.offering = [a for a, t in targets.items() if name in t]
        at_iso = [a for a, t in targets.items() if self.cfg.iso in t]
        self.forward = (
            ForwardCheck(name, grid.td, element_index, _physical(self.cfg.limits), self.per_day)
            if self.da is not None and at_iso
            else None
        )
        self.day: int | None = None

    def before(self, k: int) -> None:
        """DA_BID, if a day-ahead market closes before interval ``k``."""
        da, time = self.da, self.config.time
        self.day = (
            None if da is None else day_ahead_due(k, self.per_day, self.gate, time.n_intervals)
        )
        if da is None or self.day is None:
            return
        shell, grid, first = self.shell, self.grid, self.day * self.per_day
        self.shell.advance(day_ahead_at(k, DayAheadPhase.DA_BID, time))
        offers = expect(
            shell.receive(allowed_senders=self.offering), msg.DayAheadOffer, first, self.offering
        )
        intervals = (first + np.arange(self.per_day)).reshape(self.periods, -1)
        error, seed = da.load_forecast_error, self.config.seed
        if not self.offering:  # no DER market in the LDA: the feeder forecast alone
            curves = grid.day_ahead_bid(intervals, error, self.day, seed)
        else:
            # the layered models: the LDA market's bid on the feeder forecast
            day_ahead.check_offers(offers, grid.locations, self.periods)
            plain = {a: dict(m.offers) for a, m in offers.items()}
            ref = day_ahead.reference_der_mw(plain, grid.locations, self._reference_prices())
            points = [
                day_ahead.Point(state, sens)
                for state, sens in grid.day_ahead_points(intervals, error, self.day, seed, ref)
            ]
            curves = day_ahead.lda_bid(points, plain, grid.locations, self.limits, grid.td)
            if self.dmo is not None:
                take_day_ahead(self.dmo, offers, self.per_day, points)
            elif self.operator is not None:  # models 4, 6: the operator clears the schedules
                for p, point in enumerate(points):
                    model = to_message(self.name, first, point.state, point.sens, p)
                    shell.send(self.operator, model)
        self.log.expect(self.day, "load_mw", grid.day_ahead_load_mw)
        shell.send(self.cfg.iso, msg.DayAheadBid(self.name, first, self.cfg.td_bus, curves))

    def _reference_prices(self) -> list[float | None]:
        """Per period, the price the day-ahead feeder forecast places the
        offering DERs at: the last real-time LMP seen in that period of the
        day, else the last one seen; none before the first interval (the
        DERs then at zero)."""
        return [self.seen_lmp.get(p, self.last_lmp) for p in range(self.periods)]

    def at_bid(self, k: int, forecast: Forecast) -> None:
        """Models 1-2: the day's schedules (after its market), and the check
        of this interval's on the forecast."""
        if self.forward is None:
            return
        iso = self.cfg.iso
        if self.day is not None:
            got = self.shell.receive(allowed_senders=[iso])
            schedules = expect(got, msg.DayAheadSchedules, self.day * self.per_day, [iso])[iso]
            self.forward.take(schedules)
        power_flow = functools.partial(self._check_at, k)
        self.forward.check(k, forecast.state, forecast.sens, power_flow)

    def _check_at(
        self, k: int, der_mw: np.ndarray, linearise: bool
    ) -> tuple[FeederState, Sensitivities | None] | None:
        return self.grid.check_at(k, der_mw, linearise=linearise)

    def at_dispatch(self, k: int, award: msg.Award) -> None:
        if self.da is not None:
            self.seen_lmp[(k % self.per_day) // (self.per_day // self.periods)] = award.lmp
            self.last_lmp = award.lmp
        if self.forward is not None:
            self.shell.record(k, "unwound", UNWOUND_COLUMNS, self.forward.rows(k, award.lmp))

    def at_measure(self, k: int) -> None:
        if self.da is not None:
            self.log.observe(k, "load_mw", self.grid.measured_load_mw)
            self.shell.record(k, "forecasts", FORECAST_COLUMNS, self.log.rows_after(k))


def _physical(limits: LimitsConfig) -> Limits:
    """The feeder's own limits, without the margins a market plans within:
    what it can carry."""
    return Limits(vmin_pu=limits.vmin_pu, vmax_pu=limits.vmax_pu, max_loading=limits.max_loading)


def utility_grid(config: FederationConfig, name: str, base_dir: Path) -> GridOperator:
    """The utility ``name``'s feeder role, set up from the federation's
    config as its federate does (the benches build theirs here too)."""
    cfg = config.dso(name)
    return GridOperator(
        cfg,
        {a: config.aggregator(a).buses for a in cfg.aggregators},
        config.time,
        seed=config.seed,
        base_dir=base_dir,
        volt_var_mva={a: _volt_var_ratings(config.aggregator(a).fleet) for a in cfg.aggregators},
    )


def _volt_var_ratings(fleet: dict[str, Any]) -> dict[str, float]:
    """MVA of volt-var inverters per bus of a fleet's config (the fleet is
    parsed only if some PV system runs volt-var)."""
    if not any(isinstance(d, dict) and d.get("volt_var") for d in fleet.get("pvs") or ()):
        return {}
    return volt_var_ratings(fleet_from_json(fleet).pvs)


def _answer_round_trips(
    shell: FederateShell,
    grid: GridOperator,
    k: int,
    operator: str,
    forecast: Forecast,
    time: Clock,
) -> None:
    """DISPATCH, for an independent market operator (``host.UtilityRoundTrip``):
    the feeder linearised at each dispatch it sends (the forecast load, the
    controls free to respond: ``GridOperator.linearise_at``, as for the
    utility's own market), until it says which linearisation it priced its
    dispatch on (``PricedOn``), which the ex-post check then compares with."""
    points: list[Sensitivities | None] = [forecast.sens]
    n_der = len(grid.locations)
    for j in itertools.count(1):
        shell.advance(round_trip_at(k, 2 * j - 1, time))
        got = shell.receive(allowed_senders=[operator])
        if len(got) != 1 or got[0].interval != k:
            raise RuntimeError(
                f"interval {k}: expected one linearise_at or priced_on from {operator!r} "
                f"at round trip {j}, got {sorted((m.KIND, m.interval) for m in got)}"
            )
        m = got[0]
        if isinstance(m, msg.PricedOn):
            if m.iteration >= len(points) or points[m.iteration] is None:
                raise msg.MessageError(
                    m.sender, "priced_on.iteration", f"{m.iteration}: no such linearisation"
                )
            grid.use_planning(points[m.iteration])
            return
        if not isinstance(m, msg.LineariseAt):
            raise msg.MessageError(m.sender, "kind", f"{m.KIND} is not expected at DISPATCH")
        if m.iteration != j or len(m.der_mw) != n_der:
            raise msg.MessageError(
                m.sender,
                "linearise_at",
                f"request {m.iteration} with {len(m.der_mw)} DERs, expected {j} with {n_der}",
            )
        point = grid.linearise_at(k, np.asarray(m.der_mw, dtype=float))
        if point is None:
            points.append(None)
            shell.send(operator, msg.NoLinearisation(shell.name, k, j))
        else:
            points.append(point[1])
            shell.send(operator, to_message(shell.name, k, *point))


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
