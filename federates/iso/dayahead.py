"""The ISO's day-ahead market: a multi-period DC-OPF over the next day, on HiGHS.

Once per simulated day the ISO clears every period of the next day at once
(hourly by default; the period is configurable). Each period is the
real-time market's own single-period model (:class:`~dsosim.federates.iso.
dcopf.clearing.PeriodModel`: the same sparse B-theta formulation, costs,
ratings, angle limits, shed and spill slacks), repeated block-diagonally;
the periods are coupled by generator ramp limits::

    -R_g * h <= pg[t, g] - pg[t-1, g] <= R_g * h          t = 1 .. T-1

(and, given the dispatch the day starts from, ``pg[0, g]`` within ``R_g * h``
of it), with ``h`` the period length in hours and ``R_g`` MW per hour.
Bid curves are given per period; each (period, bus, price) group of blocks
is one column. The objective is the sum over periods of the hourly cost,
so the dual of period ``t``'s balance row at bus ``i`` is the LMP in $/MWh;
money over the day is ``h`` times the hourly figures.

Offers, not quadratic costs
---------------------------
Day-ahead markets clear offer curves: stepwise or piecewise-linear, never
quadratic. A generator with a quadratic cost ``c2 p^2 + c1 p + c0`` offers
the piecewise-linear curve through ``segments`` + 1 equally spaced points of
that cost on ``[PMIN, PMAX]`` (:func:`offer_case`), so the day is an LP
(HiGHS dual simplex). The curve is exact at its breakpoints and above the
quadratic between them by at most ``c2 * d**2 / 4`` $/h, ``d = (PMAX -
PMIN) / segments``; a segment's price is the quadratic's marginal cost at its
midpoint, within ``c2 * d`` $/MWh of it anywhere on the segment
(:func:`offer_error_bound`; tested). Why not the QP: HiGHS's only QP solver
is an active-set method; started cold on 24 hours of case118 (1,300
quadratic columns) it needs seconds, and with the shed/spill slacks it did
not finish in minutes.

Ramp rates come from the case's MATPOWER ramp columns
(:attr:`TransmissionCase.gen_ramp_mw_per_h`); where the case gives none, as
in the stock library cases (case9 ... case118 carry zeros), the market
applies ``default_ramp_pu_per_h`` x ``PMAX`` per hour (default
:data:`DEFAULT_RAMP_PU_PER_H`).

Not modelled (stated, not approximated): unit commitment (minimum up and
down times, start-up costs; every unit is on and may run anywhere in
``[PMIN, PMAX]``), reserves, losses.

Prices are split as in real time: ``lmp_energy`` is the LMP at the island's
reference bus, ``lmp_congestion = lmp - lmp_energy``. Each period's result is
an :class:`~dsosim.federates.iso.dcopf.OpfResult`, so
:func:`~dsosim.federates.iso.dcopf.lmp_is_unique` and
:func:`~dsosim.federates.iso.dcopf.congestion_rent` apply to it; a generator
held at a ramp limit sets no price there.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import highspy
import numpy as np
import scipy.sparse as sp

from dsosim.federates.common.curves import PRICE_CAP, PRICE_FLOOR
from dsosim.federates.iso.case import POLYNOMIAL, PW_LINEAR, TransmissionCase
from dsosim.federates.iso.dcopf import (
    STATUS_FAILED,
    STATUS_LOAD_SHED,
    STATUS_OPTIMAL,
    STATUS_OVER_SUPPLY,
    BusCurve,
    DcOpf,
    OpfResult,
)
from dsosim.federates.iso.dcopf.clearing import BidLayout

DEFAULT_RAMP_PU_PER_H = 0.5
"""Ramp rate, per unit of ``PMAX`` per hour, of a generator whose case gives none."""

RAMP_TOL_MW = 1e-6
"""A generator within this many MW of a ramp limit is held by it."""

DEFAULT_SEGMENTS = 10
"""Segments of the piecewise-linear offer that stands for a quadratic cost."""


def offer_case(case: TransmissionCase, segments: int = DEFAULT_SEGMENTS) -> TransmissionCase:
    """The case with every quadratic generator cost replaced by its
    piecewise-linear offer: ``segments`` equal segments on ``[PMIN, PMAX]``
    through points of the quadratic (linear costs are kept as they are).

    Examples
    --------
    >>> from dsosim.federates.iso.case import load_case
    >>> offers = offer_case(load_case("case9"), segments=4)
    >>> offers.gen_cost_pwl[0][:, 0].tolist()
    [10.0, 72.5, 135.0, 197.5, 260.0]
    """
    if not (isinstance(segments, int) and segments >= 1):
        raise ValueError(f"segments must be an integer >= 1, got {segments!r}")
    on = case.gen_status
    c2 = case.gen_cost_poly[:, 0]
    quadratic = np.flatnonzero(on & (case.gen_cost_model == POLYNOMIAL) & (c2 != 0.0))
    if len(quadratic) == 0:
        return case
    model = case.gen_cost_model.copy()
    pwl = list(case.gen_cost_pwl)
    for g in quadratic.tolist():
        lo, hi = float(case.gen_pmin_mw[g]), float(case.gen_pmax_mw[g])
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
            raise ValueError(
                f"case {case.name}: gen row {g + 1} has a quadratic cost but no finite "
                f"output range [{lo}, {hi}] to lay its offer segments on"
            )
        a2, a1, a0 = case.gen_cost_poly[g]
        x = np.linspace(lo, hi, segments + 1)
        pwl[g] = np.column_stack([x, (a2 * x + a1) * x + a0])
        model[g] = PW_LINEAR
    return case.replace(gen_cost_model=model, gen_cost_pwl=tuple(pwl))


def offer_error_bound(case: TransmissionCase, segments: int = DEFAULT_SEGMENTS) -> np.ndarray:
    """Per generator, the most its offer's price departs from the quadratic's
    marginal cost on a segment, $/MWh (``c2 * d``; 0 for linear costs). The
    offer's cost departs by at most a quarter of this times ``d``."""
    d = (case.gen_pmax_mw - case.gen_pmin_mw) / segments
    quadratic = (case.gen_cost_model == POLYNOMIAL) & case.gen_status
    return np.where(quadratic, np.abs(case.gen_cost_poly[:, 0]) * np.where(quadratic, d, 0.0), 0.0)


@dataclass(frozen=True, eq=False)
class DayAheadResult:
    """A cleared day.

    Attributes
    ----------
    periods
        One :class:`OpfResult` per period (hourly figures: MW and $/h).
    period_h
        Length of a period, hours.
    status
        ``"optimal"``; ``"load_shed"`` / ``"over_supply"`` if any period shed
        load / spilled surplus; ``"failed"`` if HiGHS found no solution (the
        periods' arrays are then NaN).
    ramp_mw_per_h
        The ramp rate applied to each generator (case order), MW per hour.
    total_cost
        Generator cost over the day, $ (constant terms included).
    objective
        Generator cost minus the value of cleared bids plus slack costs, $.
    build_seconds, solve_seconds
        Wall time to assemble the model and to solve it.
    """

    case: TransmissionCase = field(repr=False)
    periods: tuple[OpfResult, ...]
    period_h: float
    status: str
    ramp_mw_per_h: np.ndarray
    total_cost: float
    objective: float
    build_seconds: float
    solve_seconds: float
    message: str = ""

    @property
    def lmp(self) -> np.ndarray:
        """LMPs, $/MWh, shape (periods, buses)."""
        return np.stack([p.lmp for p in self.periods])

    @property
    def lmp_energy(self) -> np.ndarray:
        return np.stack([p.lmp_energy for p in self.periods])

    @property
    def lmp_congestion(self) -> np.ndarray:
        return np.stack([p.lmp_congestion for p in self.periods])

    @property
    def gen_mw(self) -> np.ndarray:
        """Dispatch, MW, shape (periods, generators)."""
        return np.stack([p.gen_mw for p in self.periods])


class DayAheadMarket:
    """Multi-period DC-OPF market clearing with ramp limits for one case.

    Parameters
    ----------
    case
        The transmission case (quadratic costs are cleared as piecewise-linear
        offers: :func:`offer_case`; ``result.case`` is that offer case).
    segments
        Segments of those offers.
    periods
        Number of periods cleared at once (24 for hourly periods of a day).
    period_h
        Length of one period, hours.
    ramp_mw_per_h
        Ramp rate per generator (case order), MW per hour; ``inf`` means
        unlimited. Default: the case's ramp rates, and
        ``default_ramp_pu_per_h * PMAX`` where it has none.
    default_ramp_pu_per_h
        See above.
    voll, spill_price
        As for :class:`DcOpf`.

    Examples
    --------
    >>> from dsosim.federates.iso.case import load_case
    >>> case = load_case("case9")
    >>> market = DayAheadMarket(case, periods=3)
    >>> day = market.clear(np.tile(case.bus_pd_mw, (3, 1)))
    >>> day.status, day.lmp.shape, round(float(day.lmp[0, 0]), 2)
    ('optimal', (3, 9), 24.04)
    """

    def __init__(
        self,
        case: TransmissionCase,
        *,
        periods: int = 24,
        period_h: float = 1.0,
        segments: int = DEFAULT_SEGMENTS,
        ramp_mw_per_h: np.ndarray | None = None,
        default_ramp_pu_per_h: float = DEFAULT_RAMP_PU_PER_H,
        voll: float = PRICE_CAP,
        spill_price: float = -PRICE_FLOOR,
    ) -> None:
        if not (isinstance(periods, int) and periods >= 1):
            raise ValueError(f"periods must be an integer >= 1, got {periods!r}")
        if not (math.isfinite(period_h) and period_h > 0.0):
            raise ValueError(f"period_h must be finite and > 0, got {period_h!r}")
        if not (math.isfinite(default_ramp_pu_per_h) and default_ramp_pu_per_h > 0.0):
            raise ValueError(
                f"default_ramp_pu_per_h must be finite and > 0, got {default_ramp_pu_per_h!r}"
            )
        self.source_case = case
        self.case = offer_case(case, segments)
        self.segments = segments
        self.periods = periods
        self.period_h = float(period_h)
        self._opf = DcOpf(self.case, voll=voll, spill_price=spill_price)
        self._model = self._opf.period_model
        self.ramp_mw_per_h = self._ramps(ramp_mw_per_h, default_ramp_pu_per_h)
        self._static = self._assemble()

    # ------------------------------------------------------------------ set-up

    def _ramps(self, given: np.ndarray | None, default_pu: float) -> np.ndarray:
        case = self.case
        if given is not None:
            ramp = np.asarray(given, dtype=float)
            if ramp.shape != (case.n_gen,):
                raise ValueError(
                    f"ramp_mw_per_h has shape {ramp.shape}; expected ({case.n_gen},), "
                    "one per generator of the case"
                )
            bad = np.flatnonzero(np.isnan(ramp) | (ramp <= 0.0))
            if len(bad):
                raise ValueError(f"ramp_mw_per_h[{bad[0]}] must be > 0, got {ramp[bad[0]]!r}")
            return ramp.copy()
        from_case = (
            case.gen_ramp_mw_per_h
            if case.gen_ramp_mw_per_h is not None
            else np.full(case.n_gen, np.nan)
        )
        default = default_pu * np.abs(case.gen_pmax_mw)
        default = np.where(np.isfinite(default) & (default > 0.0), default, np.inf)
        return np.where(np.isnan(from_case), default, from_case)

    def _assemble(self) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The day's matrix without bid columns: periods block-diagonal, then
        the ramp rows between consecutive periods; and the ramp rows' limits."""
        m = self._model
        nt, nc = self.periods, m.n_col
        blocks = sp.kron(sp.identity(nt, format="csr"), m.a, format="csr")
        ramp = self.ramp_mw_per_h[m.gen_on] * self.period_h
        ramped = np.flatnonzero(np.isfinite(ramp))
        self._ramped = ramped
        rows, cols, vals = [], [], []
        r = 0
        for t in range(1, nt):
            for k in ramped.tolist():
                rows += [r, r]
                cols += [t * nc + m.col_pg + k, (t - 1) * nc + m.col_pg + k]
                vals += [1.0, -1.0]
                r += 1
        ramp_rows = sp.csr_matrix((vals, (rows, cols)), shape=(r, nt * nc))
        a = sp.vstack([blocks, ramp_rows], format="csc")
        limit = np.tile(ramp[ramped], nt - 1)
        return a, -limit, limit, np.tile(m.col_lo, nt), np.tile(m.col_hi, nt)

    # ------------------------------------------------------------------ clear

    def clear(
        self,
        fixed_load_mw: np.ndarray,
        bids: Sequence[Sequence[BusCurve]] = (),
        initial_mw: np.ndarray | None = None,
    ) -> DayAheadResult:
        """Clear the day.

        Parameters
        ----------
        fixed_load_mw
            Price-inelastic load, MW, shape (periods, buses), buses aligned
            with ``case.bus_ids``.
        bids
            Per period, the bid curves at transmission buses (empty: none in
            any period).
        initial_mw
            Dispatch the day starts from (one value per generator, case
            order): the first period is then ramp-limited from it.
        """
        started = time.perf_counter()
        load = self._check_load(fixed_load_mw)
        per_period = self._check_bids(bids)
        m, nt, nb = self._model, self.periods, self.case.n_bus
        grouped = [self._opf.group_bids(curves) for curves in per_period]
        a, lo, hi, col_lo, col_hi = self._static
        rhs = np.concatenate(
            [np.r_[self._opf.balance_rhs(load[t], grouped[t][0]), m.row_lo[nb:]] for t in range(nt)]
        )
        rhs_hi = np.concatenate(
            [np.r_[self._opf.balance_rhs(load[t], grouped[t][0]), m.row_hi[nb:]] for t in range(nt)]
        )
        row_lo, row_hi = np.r_[rhs, lo], np.r_[rhs_hi, hi]
        # bid columns: one per (period, bus, price) group
        n_static = a.shape[1]
        bid_rows: list[int] = []
        bid_cost: list[float] = []
        bid_hi: list[float] = []
        for t, (_, layout) in enumerate(grouped):
            layout.group_cols = (
                n_static + len(bid_rows) + np.arange(len(layout.group_bus))
            ).astype(np.int32)
            bid_rows.extend((t * m.n_row + layout.group_bus).tolist())
            bid_cost.extend((-layout.group_price).tolist())
            bid_hi.extend(layout.group_mw.tolist())
        n_bid = len(bid_rows)
        bid_matrix = sp.csc_matrix(
            (-np.ones(n_bid), (np.asarray(bid_rows, dtype=np.int64), np.arange(n_bid))),
            shape=(a.shape[0], n_bid),
        )
        a = sp.hstack([a, bid_matrix], format="csc")
        cost = np.r_[np.tile(m.cost, nt), bid_cost]
        col_lo = np.r_[col_lo, np.zeros(n_bid)]
        col_hi = np.r_[col_hi, bid_hi]
        if initial_mw is not None:
            a, row_lo, row_hi = self._initial_ramp(a, row_lo, row_hi, initial_mw)
        highs = self._highs(a, row_lo, row_hi, col_lo, col_hi, cost)
        built = time.perf_counter()
        highs.run()
        solved = time.perf_counter()
        if highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return self._failed(highs, load, grouped, per_period, built - started, solved - built)
        solution = highs.getSolution()
        x = np.asarray(solution.col_value)
        duals = np.asarray(solution.row_dual)
        return self._result(x, duals, load, grouped, per_period, built - started, solved - built)

    def _check_load(self, fixed_load_mw: np.ndarray) -> np.ndarray:
        load = np.asarray(fixed_load_mw, dtype=float)
        shape = (self.periods, self.case.n_bus)
        if load.shape != shape:
            raise ValueError(
                f"fixed_load_mw has shape {load.shape}; expected {shape} "
                "(periods x buses, buses aligned with case.bus_ids)"
            )
        bad = np.argwhere(~np.isfinite(load))
        if len(bad):
            t, i = bad[0]
            raise ValueError(
                f"fixed_load_mw is not finite in period {t} at bus {self.case.bus_ids[i]}"
            )
        return load

    def _check_bids(self, bids: Sequence[Sequence[BusCurve]]) -> list[Sequence[BusCurve]]:
        if len(bids) == 0:
            return [() for _ in range(self.periods)]
        if len(bids) != self.periods:
            raise ValueError(
                f"bids has {len(bids)} periods; expected {self.periods} (one list per period)"
            )
        return list(bids)

    def _initial_ramp(
        self, a: sp.csc_matrix, row_lo: np.ndarray, row_hi: np.ndarray, initial_mw: np.ndarray
    ) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray]:
        m = self._model
        start = np.asarray(initial_mw, dtype=float)
        if start.shape != (self.case.n_gen,) or not np.all(np.isfinite(start)):
            raise ValueError(
                f"initial_mw must hold {self.case.n_gen} finite values (one per generator)"
            )
        k = self._ramped
        ramp = self.ramp_mw_per_h[m.gen_on][k] * self.period_h
        before = start[m.gen_on][k]
        rows = sp.csr_matrix(
            (np.ones(len(k)), (np.arange(len(k)), m.col_pg + k)), shape=(len(k), a.shape[1])
        )
        return (
            sp.vstack([a, rows], format="csc"),
            np.r_[row_lo, before - ramp],
            np.r_[row_hi, before + ramp],
        )

    def _highs(
        self,
        a: sp.csc_matrix,
        row_lo: np.ndarray,
        row_hi: np.ndarray,
        col_lo: np.ndarray,
        col_hi: np.ndarray,
        cost: np.ndarray,
    ) -> highspy.Highs:
        m, nt = self._model, self.periods
        assert not np.any(m.gen_c2), "the offer case has no quadratic costs"
        a.sort_indices()
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = a.shape[1], a.shape[0]
        lp.col_cost_ = cost
        lp.col_lower_ = col_lo
        lp.col_upper_ = col_hi
        lp.row_lower_ = row_lo
        lp.row_upper_ = row_hi
        lp.offset_ = m.cost_offset * nt
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = a.indptr.astype(np.int32)
        lp.a_matrix_.index_ = a.indices.astype(np.int32)
        lp.a_matrix_.value_ = a.data.astype(float)
        model = highspy.HighsModel()
        model.lp_ = lp
        highs = highspy.Highs()
        highs.setOptionValue("output_flag", False)
        highs.setOptionValue("random_seed", 0)
        highs.setOptionValue("threads", 1)
        status = highs.passModel(model)
        if status != highspy.HighsStatus.kOk:
            raise RuntimeError(
                f"HiGHS rejected the day-ahead model of case {self.case.name}: {status}"
            )
        return highs

    # ------------------------------------------------------------------ results

    def _held(self, x: np.ndarray) -> np.ndarray:
        """Per period, generators (positions in ``gen_on``) at a ramp limit
        towards the previous or the next period."""
        m, nt = self._model, self.periods
        pg = np.stack([x[t * m.n_col + m.col_pg : t * m.n_col + m.col_epi] for t in range(nt)])
        ramp = self.ramp_mw_per_h[m.gen_on] * self.period_h
        held = np.zeros_like(pg, dtype=bool)
        if nt > 1:
            at_limit = np.abs(np.diff(pg, axis=0)) >= ramp - RAMP_TOL_MW
            held[1:] |= at_limit
            held[:-1] |= at_limit
        return held

    def _result(
        self,
        x: np.ndarray,
        duals: np.ndarray,
        load: np.ndarray,
        grouped: list[tuple[np.ndarray, BidLayout]],
        per_period: list[Sequence[BusCurve]],
        build_s: float,
        solve_s: float,
    ) -> DayAheadResult:
        m, nt = self._model, self.periods
        held = self._held(x)
        results = []
        for t in range(nt):
            base, layout = grouped[t]
            cols = np.r_[np.arange(t * m.n_col, (t + 1) * m.n_col), layout.group_cols]
            x_t = x[cols]
            local = _relocated(layout, m.n_col)
            d_t = duals[t * m.n_row : (t + 1) * m.n_row]
            results.append(
                self._opf.result_from_solution(
                    x_t, d_t, "", load[t], base, per_period[t], local, solve_s, held[t]
                )
            )
        statuses = {r.status for r in results}
        status = STATUS_OPTIMAL
        for worse in (STATUS_OVER_SUPPLY, STATUS_LOAD_SHED):
            if worse in statuses:
                status = worse
        h = self.period_h
        return DayAheadResult(
            case=self.case,
            periods=tuple(results),
            period_h=h,
            status=status,
            ramp_mw_per_h=self.ramp_mw_per_h,
            total_cost=h * sum(r.total_cost for r in results),
            objective=h * sum(r.objective for r in results),
            build_seconds=build_s,
            solve_seconds=solve_s,
        )

    def _failed(
        self,
        highs: highspy.Highs,
        load: np.ndarray,
        grouped: list[tuple[np.ndarray, BidLayout]],
        per_period: list[Sequence[BusCurve]],
        build_s: float,
        solve_s: float,
    ) -> DayAheadResult:
        text = highs.modelStatusToString(highs.getModelStatus())
        m = self._model
        nan_x = np.full(m.n_col, np.nan)
        nan_d = np.full(m.n_row, np.nan)
        results = []
        for t in range(self.periods):
            base, layout = grouped[t]
            local = _relocated(layout, m.n_col)
            x_t = np.r_[nan_x, np.full(len(local.group_cols), np.nan)]
            results.append(
                self._opf.result_from_solution(
                    x_t, nan_d, f"HiGHS: {text}", load[t], base, per_period[t], local, solve_s
                )
            )
        return DayAheadResult(
            case=self.case,
            periods=tuple(results),
            period_h=self.period_h,
            status=STATUS_FAILED,
            ramp_mw_per_h=self.ramp_mw_per_h,
            total_cost=math.nan,
            objective=math.nan,
            build_seconds=build_s,
            solve_seconds=solve_s,
            message=f"HiGHS: {text}",
        )


def _relocated(layout: BidLayout, n_col: int) -> BidLayout:
    """The layout with its group columns numbered after one period's columns
    (as in the period's own solution vector)."""
    import dataclasses

    k = len(layout.group_bus)
    return dataclasses.replace(layout, group_cols=(n_col + np.arange(k)).astype(np.int32))
