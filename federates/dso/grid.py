"""The utility's role as grid operator (DGO) and load-serving entity of one LDA,
in plain Python (no HELICS). It is the same in every organisational model:

* **forecast**: at the start of each interval it sets the feeder to the
  interval's *forecast* load with the DERs at their last measured output,
  solves OpenDSS and linearises the feeder there (the grid model a market
  operator inside the LDA needs);
* **bid**: where no market runs inside the LDA (baseline, models 1-2) it bids
  the LDA's forecast net demand that no DER bid covers (inflexible load,
  losses, passive DERs) to the ISO as a fixed quantity;
* **measure**: with the *actual* load (forecast times a seeded error) and the
  DERs' actual response it solves OpenDSS and reports voltages, loadings,
  losses, violations and the metered T-D flow, with each market participant's
  deviation from its set-point (its share of the imbalance);
* **ex-post check**: each interval, once metered, the power flow of the
  *dispatch* (every DER at its set-point) at the interval's forecast load,
  with the regulators and capacitors free to move from their compiled state
  (another valid resting point than the one the market linearised at). Its
  violations, and the market-physics gap (largest difference between the
  voltages and losses the linearised feeder predicted for that dispatch and
  those of this power flow), are the ``expost`` table. The load and
  the DERs are those the market planned for, so the check isolates the
  market's model of the feeder from forecast and response errors;
* **retail**: customers pay it the T-D LMP for what they actually consumed;
  DERs outside any market (passive) pay, or are paid, the flat tariff for
  their net demand (net metering).

``scale``: the modelled feeder stands for ``scale`` similar feeders under the
same T-D substation. Everything at the T-D interface (bids, awards, metered
flow, money) is multiplied by it; feeder physics stay per feeder.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dsosim.federates.common import ledger
from dsosim.federates.common.config import DsoConfig, TimeSettings
from dsosim.federates.common.curves import BidCurve
from dsosim.federates.common.parties import Party
from dsosim.federates.common.profiles import commercial_load, residential_load
from dsosim.federates.common.scale import TdScale
from dsosim.federates.common.tables import Tables
from dsosim.federates.dso import controls
from dsosim.federates.dso.feeder import Feeder, FeederState, Sensitivities
from dsosim.federates.dso.voltvar import VoltVar, VoltVarResult
from dsosim.federates.markets.location import Location

FEEDER_COLUMNS = (
    "interval",
    "hours",
    "dso",
    "scale",
    "converged",
    "power_flow_converged",
    "control_iterations_exceeded",
    "forecast_reused",
    "message",
    "head_mw",
    "td_flow_mw",
    "scheduled_mw",
    "imbalance_mw",
    "losses_mw",
    "inflexible_mw",
    "der_mw",
    "vmin_pu",
    "vmax_pu",
    "max_loading",
    "voltage_violations",
    "thermal_violations",
    "der_q_mvar",
    "voltvar_iterations",
    "voltvar_converged",
)
VOLTAGE_COLUMNS = ("interval", "dso", "node", "v_pu")
BRANCH_COLUMNS = ("interval", "dso", "branch", "loading")
EXPOST_COLUMNS = (
    "interval",
    "dso",
    "converged",
    "vmin_pu",
    "vmax_pu",
    "voltage_violations",
    "thermal_violations",
    "losses_mw",
    "predicted_losses_mw",
    "predicted_vmin_pu",
    "predicted_vmax_pu",
    "gap_v_pu",
    "gap_node",
    "gap_losses_mw",
    "gap_lin_v_pu",
    "gap_lin_losses_mw",
    "taps_moved",
    "der_q_mvar",
)
DER_LOCATION_COLUMNS = (
    "interval",
    "dso",
    "aggregator",
    "location",
    "setpoint_mw",
    "actual_mw",
    "deviation_mw",
    "q_mvar",
    "v_pu",
)


@dataclass(frozen=True)
class _Linearised:
    """A linearisation computed afresh and the point it was taken at: what a
    later one compares with to reuse it."""

    p_w: np.ndarray
    q_var: np.ndarray
    """Every load's and DER's P (W) and Q (var) (:meth:`Feeder.load_powers`)."""
    controls: controls.ControlState
    slopes: np.ndarray
    """Volt-var curve slope at every location (the segments it is on)."""
    sens: Sensitivities


class GridError(ValueError):
    """An aggregator's bid or measurement does not fit the LDA."""


@dataclass(frozen=True)
class Forecast:
    """The feeder at the forecast operating point of an interval."""

    state: FeederState
    sens: Sensitivities
    controls: controls.ControlState | None = None
    """Regulator taps and capacitor states the linearisation was taken at."""


class GridOperator:
    """Feeder, forecast, metering and retail of one LDA."""

    def __init__(
        self,
        config: DsoConfig,
        fleets: Mapping[str, Sequence[str]],
        time: TimeSettings,
        *,
        seed: int,
        base_dir: Path,
        volt_var_mva: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        """``volt_var_mva``: aggregator -> bus -> apparent-power rating (MVA)
        of the volt-var inverters there (the utility's interconnection record;
        :func:`dsosim.federates.aggregator.pv.volt_var_ratings`)."""
        self.config = config
        self.name = config.name
        self.hours = time.interval_s / 3600.0
        self.td = TdScale(config.scale)
        self.feeder = Feeder(
            base_dir / config.feeder,
            name=config.name,
            vmin=config.limits.vmin_pu,
            vmax=config.limits.vmax_pu,
            voltage_basis=config.voltage_basis,
        )
        self.locations = [Location(a, b) for a in sorted(fleets) for b in sorted(fleets[a])]
        known = set(self.feeder.buses)
        for loc in self.locations:
            if loc.bus not in known:
                raise GridError(
                    f"aggregator {loc.aggregator!r} has DERs at bus {loc.bus!r}, "
                    f"which is not a bus of feeder {config.feeder}"
                )
            self.feeder.attach_der(loc.element, loc.bus)
        self.index = {(loc.aggregator, loc.bus): i for i, loc in enumerate(self.locations)}
        vv = volt_var_mva or {}
        for agg, buses in vv.items():
            for bus in buses:
                if (agg, bus) not in self.index:
                    raise GridError(
                        f"volt-var inverters of {agg!r} at {bus!r}: not a DER location of "
                        f"LDA {self.name}"
                    )
        ratings = [float(vv.get(loc.aggregator, {}).get(loc.bus, 0.0)) for loc in self.locations]
        volt_var = VoltVar(self.feeder, [loc.bus for loc in self.locations], ratings)
        self.volt_var = volt_var if volt_var.any else None
        """The inverters' volt-var in every power flow (None: there is none)."""
        self._vv_last: VoltVarResult | None = None
        n = time.n_intervals
        shapes = {"residential": residential_load, "commercial": commercial_load}
        shape = (
            shapes[config.load_profile](n, time.interval_s, start_s=time.start_s)
            if config.load_profile in shapes
            else np.ones(n)
        )
        if config.load_profile == "feeder":
            shape = self._own_shapes(time)
        self.profile = shape * config.load_scale
        """Load multipliers per interval: one per interval, or, with the
        feeder's own load shapes, one per interval and load."""
        rng = np.random.default_rng([seed, zlib.crc32(config.name.encode())])
        self.load_error = (
            rng.normal(0.0, config.load_forecast_error, n)
            if config.load_forecast_error
            else np.zeros(n)
        )
        self.der_mw = np.zeros(len(self.locations))  # last measured DER output (operating point)
        self.forecast_point: Forecast | None = None
        self.planning_point: Forecast | None = None
        """The linearisation the market finally dispatched on (the forecast's
        unless the market re-linearised at its dispatch): the ex-post check
        compares with its prediction."""
        self._forecast_reused = False
        self._points: list[Forecast] = []
        self.reuse_mw = config.reuse_linearisation_kw / 1000.0
        """Move (MW, Mvar) within which a forecast or a dispatch point reuses
        the last linearisation computed afresh (0: never; :meth:`_reusable`)."""
        self._fresh: _Linearised | None = None
        """The last linearisation computed afresh and where."""
        self.reused = 0
        """Linearisations reused (since the start)."""
        self.linearised = 0
        """Linearisations computed afresh at a forecast or dispatch point."""
        self.day_ahead_load_mw: list[float] = []
        """The feeder's load (feeder scale) per period of the last day-ahead bid."""
        self.measured_load_mw = 0.0
        """The feeder's load at the last :meth:`measure`."""
        self.measured_v_loc = np.full(len(self.locations), np.nan)
        """Local voltage (pu) per DER location at the last :meth:`measure`
        (with volt-var inverters on the feeder; NaN without)."""

    def _own_shapes(self, time: TimeSettings) -> np.ndarray:
        """Every load's own load shape over the run's intervals (loads without
        one follow the residential profile), (intervals, loads)."""
        n = time.n_intervals
        year = time.start.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        first = (time.start - year).total_seconds()
        own, has = self.feeder.load_shapes(first + np.arange(n) * time.interval_s, time.interval_s)
        rest = residential_load(n, time.interval_s, start_s=time.start_s)
        return np.where(has[None, :], own, rest[:, None])

    def _solve(self, *, controls: bool = True) -> FeederState:
        """One power flow at the loads and DER outputs set, with the volt-var
        inverters on their curve (:mod:`.voltvar`) if there are any."""
        if self.volt_var is None:
            return self.feeder.solve(controls=controls)
        state, self._vv_last = self.volt_var.solve(controls=controls)
        return state

    def _settle(self, *, controls: bool = True) -> bool:
        """:meth:`_solve` without reading the state back (read what is needed
        with the feeder's ``solved_*`` methods): whether the power flow
        converged."""
        if self.volt_var is None:
            return self.feeder.solve_flow(controls=controls)
        self._vv_last = self.volt_var.settle(controls=controls)
        return self.feeder.solved_flow_ok()

    def _linearise(self, state: FeederState) -> Sensitivities:
        """The feeder's linearisation at ``state`` (the last solve), with the
        volt-var inverters' response folded in if there are any."""
        if self.volt_var is None:
            return self.feeder.sensitivities()
        # the closed loop computes the headrooms of its own derivatives: those
        # of the open loop only where it keeps it (no inverter on a slope)
        open_loop = self.feeder.sensitivities(headrooms=False)
        sens = self.volt_var.closed_loop(state, open_loop)
        return self.feeder.with_headrooms(sens) if sens is open_loop else sens

    def _vv_columns(self) -> tuple[float, int, bool]:
        """(DER reactive power injected, Mvar; volt-var power flows; converged)
        of the last :meth:`_solve`."""
        r = self._vv_last
        if self.volt_var is None or r is None:
            return 0.0, 0, True
        return float(r.q_mvar.sum()), r.iterations, r.converged

    # ----------------------------------------------------------- forecast
    def forecast(self, interval: int) -> Forecast:
        """Solve and linearise the feeder at the interval's forecast point.

        If that power flow diverges, its numbers mean nothing: the previous
        interval's forecast is used again (and the interval's ``feeder`` row
        says so). After OpenDSS #485 (controls hunting) the power flow at the
        controls' last positions is valid and is used."""
        self.feeder.set_load_multipliers(self.profile[interval])
        self.feeder.set_der_mw(self.der_mw)
        state = self._solve()
        self._forecast_reused = not state.power_flow_converged and self.forecast_point is not None
        if not self._forecast_reused:
            now = controls.read(self.feeder)
            self.forecast_point = Forecast(state, self._linearisation(state, now), now)
        assert self.forecast_point is not None
        self.planning_point = self.forecast_point
        self._points = [self.forecast_point]
        return self.forecast_point

    def _day_ahead_levels(
        self, intervals: np.ndarray, error: float, day: int, seed: int
    ) -> list[np.ndarray]:
        """The loads' day-ahead forecast per period: the period's mean
        forecast times a seeded day-ahead error (sd ``error``, one per
        period). ``intervals``: (periods, intervals per period)."""
        rng = np.random.default_rng([seed, zlib.crc32(self.name.encode()), 104729, day])
        errors = rng.normal(0.0, error, len(intervals)) if error else np.zeros(len(intervals))
        last = len(self.profile) - 1
        return [
            np.mean(self.profile[np.minimum(period, last)], axis=0) * (1.0 + e)
            for period, e in zip(intervals, errors)
        ]

    def day_ahead_bid(
        self, intervals: np.ndarray, error: float, day: int, seed: int
    ) -> tuple[BidCurve, ...]:
        """The LDA's day-ahead bid without DERs in its market (baseline,
        models 1-2), one fixed curve per period (scaled): the head power of
        the feeder with its loads at the day-ahead forecast
        (``_day_ahead_levels``), DERs not forecast (at zero output; their
        real-time output settles as deviation). One power flow per period."""
        self.feeder.set_der_mw(np.zeros(len(self.locations)))
        curves = []
        self.day_ahead_load_mw = []
        for level in self._day_ahead_levels(intervals, error, day, seed):
            self.feeder.set_load_multipliers(level)
            state = self._solve()
            curves.append(BidCurve(round(self.td.to_td(state.substation_p_mw), 9)))
            self.day_ahead_load_mw.append(state.load_mw)
        return tuple(curves)

    def day_ahead_points(
        self,
        intervals: np.ndarray,
        error: float,
        day: int,
        seed: int,
        der_mw: Sequence[np.ndarray],
    ) -> list[tuple[FeederState, Sensitivities]]:
        """The feeder forecast the layered models' day-ahead bid is built on,
        one per period: loads at the day-ahead forecast (the same draw as
        ``day_ahead_bid``), the DERs at ``der_mw`` (per period, the feeder's
        order), the regulators and capacitors responding; its power flow and
        linearisation, as at a real-time forecast. A period whose power flow
        diverges is an error (its numbers would mean nothing)."""
        points = []
        self.day_ahead_load_mw = []
        levels = self._day_ahead_levels(intervals, error, day, seed)
        for p, (level, ders) in enumerate(zip(levels, der_mw, strict=True)):
            self.feeder.set_load_multipliers(level)
            self.feeder.set_der_mw(ders)
            state = self._solve()
            if not state.power_flow_converged:
                raise GridError(
                    f"{self.name}: the day-ahead power flow of day {day} period {p} "
                    f"did not converge ({state.message})"
                )
            points.append((state, self._linearise(state)))
            self.day_ahead_load_mw.append(state.load_mw)
        return points

    def linearise_at(
        self, interval: int, der_mw: np.ndarray
    ) -> tuple[FeederState, Sensitivities] | None:
        """The feeder at the interval's forecast load with the DERs at
        ``der_mw`` (a dispatch), the regulators and capacitors responding to
        it, and its linearisation there; this becomes the planning point the
        ex-post check compares with. None if the power flow diverged."""
        self.feeder.set_load_multipliers(self.profile[interval])
        self.feeder.set_der_mw(der_mw)
        state = self._solve()
        if not state.power_flow_converged:
            return None
        now = controls.read(self.feeder)
        self.planning_point = Forecast(state, self._linearisation(state, now), now)
        self._points.append(self.planning_point)
        return self.planning_point.state, self.planning_point.sens

    def _slopes(self, state: FeederState) -> np.ndarray:
        """The volt-var curve's slope at every location at ``state`` (as the
        closed loop takes them; none without volt-var)."""
        vv = self.volt_var
        if vv is None:
            return np.zeros(0)
        return np.where(vv.active, vv.slopes(vv.local_voltages(state)), 0.0)

    def _linearisation(self, state: FeederState, now: controls.ControlState) -> Sensitivities:
        """The feeder's linearisation at ``state`` (the last :meth:`_solve`,
        at controls ``now``): the last one computed afresh if it may stand
        for it (:meth:`_reusable`), else computed afresh."""
        powers = self.feeder.load_powers()
        slopes = self._slopes(state)
        sens = self._reusable(powers, now, slopes)
        if sens is not None:
            self.reused += 1
            return sens
        sens = self._linearise(state)
        self.linearised += 1
        self._fresh = _Linearised(powers[0], powers[1], now, slopes, sens)
        return sens

    def _reusable(
        self,
        powers: tuple[np.ndarray, np.ndarray],
        now: controls.ControlState,
        slopes: np.ndarray,
    ) -> Sensitivities | None:
        """The last linearisation computed afresh, to stand for one at an
        operating point with every load's and DER's P and Q ``powers`` (W,
        var; :meth:`Feeder.load_powers`), controls ``now`` and volt-var slopes
        ``slopes``, if the approximation ``reuse_linearisation_kw`` allows
        it (bounded in docs/models.md, "Reusing a linearisation", and checked
        by tests/test_reuse_linearisation.py): no load's or DER's active or
        reactive power moved by more than ``reuse_mw`` from where it was
        taken, the regulators' taps and the capacitors are where they were,
        and every volt-var inverter is on the same segment of its curve. A
        copy (the same arrays, another object: the point the market priced
        on is found by identity). None: linearise afresh."""
        fresh = self._fresh
        if fresh is None or not self.reuse_mw > 0.0 or now != fresh.controls:
            return None
        tol = self.reuse_mw * 1.0e6
        p_w, q_var = powers
        if p_w.shape != fresh.p_w.shape or not np.array_equal(slopes, fresh.slopes):
            return None
        if np.abs(p_w - fresh.p_w).max(initial=0.0) > tol:
            return None
        if np.abs(q_var - fresh.q_var).max(initial=0.0) > tol:
            return None
        return replace(fresh.sens)

    def check_at(
        self, interval: int, der_mw: np.ndarray, *, linearise: bool
    ) -> tuple[FeederState, Sensitivities | None] | None:
        """The feeder at the interval's forecast load with the DERs at
        ``der_mw``, the regulators and capacitors responding, and (if asked)
        its linearisation there: a check that leaves no trace (the controls
        go back where they were; neither the forecast nor the planning point
        changes). None if the power flow diverged."""
        saved = controls.read(self.feeder)
        try:
            self.feeder.set_load_multipliers(self.profile[interval])
            self.feeder.set_der_mw(der_mw)
            state = self._solve()
            if not state.power_flow_converged:
                return None
            return state, self._linearise(state) if linearise else None
        finally:
            controls.apply(self.feeder, saved)

    def use_planning(self, sens: Sensitivities | None) -> None:
        """The market priced its dispatch on ``sens`` (one of this interval's
        linearisations): the ex-post check compares with that one."""
        for point in self._points:
            if point.sens is sens:
                self.planning_point = point

    def utility_bid(self, market_aggregators: Sequence[str]) -> BidCurve:
        """Fixed T-D bid (scaled) for what no DER bid covers: the forecast head
        power minus the market DERs at their operating point."""
        assert self.forecast_point is not None, "forecast() first"
        state = self.forecast_point.state
        market = sum(
            self.der_mw[i]
            for i, loc in enumerate(self.locations)
            if loc.aggregator in market_aggregators
        )
        return BidCurve(self.td.to_td(state.substation_p_mw - market))

    # ------------------------------------------------------------- retail
    def _retail(
        self,
        interval: int,
        load_mw: float,
        der: np.ndarray,
        market_aggregators: Sequence[str],
        lmp: float,
        tariff: float,
    ) -> list[ledger.Payment]:
        market, me, td, h = f"retail:{self.name}", Party.utility(self.name), self.td, self.hours
        pay = [
            ledger.Payment(
                interval,
                market,
                Party.customers(self.name),
                me,
                "energy",
                td.to_td(load_mw),
                lmp,
                h,
            )
        ]
        for i, loc in enumerate(self.locations):
            if loc.aggregator not in market_aggregators:
                pay.append(
                    ledger.Payment(
                        interval,
                        market,
                        Party.agg(loc.aggregator),
                        me,
                        f"tariff@{loc.bus}",
                        td.to_td(float(der[i])),
                        tariff,
                        h,
                    )
                )
        return pay

    # ------------------------------------------------------------ measure
    def measure(
        self,
        interval: int,
        actual: Mapping[str, Mapping[str, float]],
        setpoints: Mapping[str, Mapping[str, float]],
        market_aggregators: Sequence[str],
        lmp: float,
        scheduled_mw: float,
        *,
        tariff: float,
    ) -> tuple[float, dict[Party, float], Tables]:
        """Power flow with the actual response. Returns the metered T-D flow
        (scaled MW) against the ISO's total schedule at the interface, the
        deviation allocation (party -> scaled MW) of the
        market participants off their set-points, and the result tables."""
        der = np.zeros(len(self.locations))
        target = np.zeros(len(self.locations))
        for agg, values in actual.items():
            for bus, mw in values.items():
                if (agg, bus) not in self.index:
                    raise GridError(
                        f"aggregator {agg!r} reported output at unknown location {bus!r}"
                    )
                der[self.index[(agg, bus)]] = mw
                target[self.index[(agg, bus)]] = setpoints[agg][bus]
        missing = sorted({loc.aggregator for loc in self.locations} - set(actual))
        if missing:
            raise GridError(f"{self.name}: no measurement from {missing}")
        multiplier = self.profile[interval] * (1.0 + self.load_error[interval])
        self.feeder.set_load_multipliers(multiplier)
        self.feeder.set_der_mw(der)
        state = self._solve()
        q_total, vv_iterations, vv_converged = self._vv_columns()
        q_loc = np.zeros(len(self.locations))
        v_loc = np.full(len(self.locations), np.nan)
        if self.volt_var is not None and self._vv_last is not None:
            q_loc, v_loc = self._vv_last.q_mvar, self._vv_last.v_pu
        self.der_mw = der
        self.measured_load_mw = state.load_mw
        self.measured_v_loc = np.array(v_loc, dtype=float)  # a copy: the ex-post check solves again
        expost = self.expost(interval, target)
        td_flow = self.td.to_td(state.substation_p_mw)
        allocation: dict[Party, float] = {}
        for i, loc in enumerate(self.locations):
            if loc.aggregator in market_aggregators:
                party = Party.agg(loc.aggregator)
                allocation[party] = allocation.get(party, 0.0) + self.td.to_td(der[i] - target[i])
        k, h, s = interval, self.hours, self.td.factor
        monitored = state.v_pu[state.monitored]
        tables: Tables = {
            "feeder": (
                FEEDER_COLUMNS,
                [
                    (
                        k,
                        h,
                        self.name,
                        s,
                        bool(state.converged),
                        bool(state.power_flow_converged),
                        bool(state.control_iterations_exceeded),
                        self._forecast_reused,
                        state.message,
                        state.substation_p_mw,
                        td_flow,
                        scheduled_mw,
                        td_flow - scheduled_mw,
                        state.losses_mw,
                        state.load_mw,
                        float(der.sum()),
                        float(monitored.min()),
                        float(monitored.max()),
                        float(np.max(state.loading)) if len(state.loading) else 0.0,
                        int(state.n_voltage_violations),
                        int(state.n_thermal_violations),
                        q_total,
                        vv_iterations,
                        vv_converged,
                    )
                ],
            ),
            "voltages": (
                VOLTAGE_COLUMNS,
                [
                    (k, self.name, n, float(v))
                    for n, v in zip(state.node_names, state.v_pu, strict=True)
                ],
            ),
            "branches": (
                BRANCH_COLUMNS,
                [
                    (k, self.name, n, float(x))
                    for n, x in zip(state.branch_names, state.loading, strict=True)
                ],
            ),
            "expost": (EXPOST_COLUMNS, [expost]),
            "der_locations": (
                DER_LOCATION_COLUMNS,
                [
                    (
                        k,
                        self.name,
                        loc.aggregator,
                        loc.bus,
                        float(target[i]),
                        float(der[i]),
                        float(der[i] - target[i]),
                        float(q_loc[i]),
                        float(v_loc[i]),
                    )
                    for i, loc in enumerate(self.locations)
                ],
            ),
            "settlements": (
                ledger.COLUMNS,
                [
                    p.row()
                    for p in self._retail(k, state.load_mw, der, market_aggregators, lmp, tariff)
                ],
            ),
        }
        return td_flow, allocation, tables

    def location_voltages(self, aggregator: str) -> dict[str, float]:
        """The local voltage (pu) of each of ``aggregator``'s locations in the
        last measured power flow, where the volt-var inverters sat at their
        fixed point (what they measured)."""
        return {
            loc.bus: float(self.measured_v_loc[i])
            for i, loc in enumerate(self.locations)
            if loc.aggregator == aggregator
        }

    # ------------------------------------------------------------ ex post
    def expost(self, interval: int, setpoints: np.ndarray) -> tuple[object, ...]:
        """The ex-post check of the dispatch ``setpoints`` (MW per location):
        one ``expost`` row (see the module doc). Two power flows at the
        interval's forecast load with the DERs at ``setpoints``: from the
        controls' compiled state with the controls free (violations and the
        market-physics gap), and at the control state the market's
        linearisation was taken at, frozen (``gap_lin_*``: the linearisation's
        own error). The feeder's controls are put back where they were, so
        the operating history is untouched."""
        feeder = self.feeder
        saved = controls.read(feeder)
        saved_q = None if self.volt_var is None else self.volt_var.q_mvar
        feeder.set_load_multipliers(self.profile[interval])
        feeder.set_der_mw(setpoints)
        controls.apply(feeder, feeder.compiled_controls)
        state = self._solve()
        q_expost = self._vv_columns()[0]
        moved = sum(
            round(abs(a[2] - b[2]) / r.step_pu)
            for a, b, r in zip(
                controls.read(feeder).taps, saved.taps, controls.regulators(feeder), strict=True
            )
        )
        plan = self.planning_point
        same: tuple[np.ndarray, float] | None = None  # its voltages and losses
        if plan is not None and plan.controls is not None:
            controls.apply(feeder, plan.controls)
            if self._settle(controls=False):
                same = feeder.solved_voltages(), feeder.solved_losses_mw()
        controls.apply(feeder, saved)
        if self.volt_var is not None and saved_q is not None:
            self.volt_var.q_mvar = saved_q
            feeder.set_der_mvar(-saved_q)
        mon = state.monitored
        v = state.v_pu[mon]
        row: list[object] = [
            interval,
            self.name,
            bool(state.converged),
            float(v.min()),
            float(v.max()),
            int(state.n_voltage_violations),
            int(state.n_thermal_violations),
            state.losses_mw,
        ]
        nan = float("nan")
        if plan is None:
            return (*row, nan, nan, nan, nan, "", nan, nan, nan, moved, q_expost)
        v_pred, loss_pred = predict(plan.state, plan.sens, setpoints)
        gap = np.abs(v_pred[mon] - v)
        worst = int(np.argmax(gap))
        nodes = np.asarray(state.node_names, dtype=object)[mon]
        lin_v = lin_loss = nan
        if same is not None:
            lin_v = float(np.max(np.abs(v_pred[mon] - same[0][mon])))
            lin_loss = loss_pred - same[1]
        return (
            *row,
            loss_pred,
            float(v_pred[mon].min()),
            float(v_pred[mon].max()),
            float(gap[worst]),
            str(nodes[worst]),
            loss_pred - state.losses_mw,
            lin_v,
            lin_loss,
            moved,
            q_expost,
        )


def predict(
    state: FeederState, sens: Sensitivities, der_mw: np.ndarray
) -> tuple[np.ndarray, float]:
    """Voltages (pu, every node) and losses (MW) the linearised feeder predicts
    with the DERs at ``der_mw``: ``v0 + dV/dP dP`` and the head power
    ``P0 + dPsub/dP dP`` less the load at the operating point and the DERs."""
    d = np.asarray(der_mw, dtype=float) - state.der_mw
    v = state.v_pu + sens.dv_dp @ d
    head = state.substation_p_mw + float(sens.dpsub_dp @ d)
    return v, head - state.load_mw - float(np.sum(der_mw))
