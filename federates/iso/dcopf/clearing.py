"""The ISO's market clearing: a DC optimal power flow with bid curves, on HiGHS.

One :class:`DcOpf` is built per transmission case and re-cleared every market
interval with new fixed loads and new bid curves. The HiGHS model is built
once; a re-clear only changes the nodal balance right-hand sides and the
costs and bounds of a pool of bid columns, then warm-starts from the previous
basis. That is what makes a 5-minute real-time market over thousands of
buses and many DER bids cheap enough to run inside a co-simulation step.

Formulation (B-theta, all quantities in MW and $/h)
---------------------------------------------------
Variables: bus angles ``theta`` scaled by the base MVA (``theta_mw =
baseMVA * theta_rad``, so that a branch flow is ``b * (theta_mw[f] -
theta_mw[t])`` with ``b = 1 / (x * tap)`` in per unit; without the scaling,
coefficients reach ~1e6 and HiGHS's QP solver fails on case118), generator
outputs ``pg`` in ``[PMIN, PMAX]``, an epigraph variable per generator with a
piecewise-linear cost, one column per (bus, price) bid block group ``x`` in
``[0, mw]``, and at every bus a load-shedding slack ``shed >= 0`` priced at
the value of lost load and a spill slack ``spill >= 0`` (generation that
cannot be absorbed) priced at ``-PRICE_FLOOR``.

minimise ``sum cost_g(pg) - sum price_k * x_k + voll * sum shed + spill_price * sum spill``

subject to, at each bus ``i`` (one equality row per bus; its dual is the LMP)::

    sum_{g at i} pg - sum_{k at i} x_k + shed_i - spill_i - (Bbus theta_mw)_i
        = fixed_load_i + GS_i + sum_{curves at i} base_mw - shift_injection_i

and ``-rate <= flow <= rate`` on every in-service branch with a finite
rating (one ranged row per branch: both directions), the angle difference
limits of the case, and ``theta_mw = 0`` at one reference bus per island.
A phase shifter with angle ``s`` carries ``flow = b * (dtheta - s)``: the
constant part enters the balance rows as a fixed injection pair.

Why B-theta and not PTDF: the B-theta matrix stays as sparse as the network
(a few nonzeros per bus), while a PTDF matrix is dense (4582 x 2869 for
case2869pegase); rebuilding nothing between intervals, the sparse model
re-solves in milliseconds.

Quadratic costs
---------------
Linear and piecewise-linear costs give an LP, solved by HiGHS's dual simplex
and warm-started from the previous basis. Quadratic costs give a convex QP,
for which HiGHS has an active-set solver; started cold it walks from an
all-shed vertex of a zero-cost LP and can cycle on the degeneracy there. So
a second HiGHS instance holds the QP, and each clear first solves the LP
with quadratic costs replaced by their tangents at the previous dispatch
(warm simplex, a few pivots), then hot-starts the QP from that optimum with
the units that were inside their limits marked inactive: when the set of
binding limits has not changed, one Newton step reaches the QP optimum.
The QP leaves out the shed/spill columns the LP did not use (added back,
and the QP re-solved, if a price shows they are needed). Should the QP
solver still fail, the LP solution is returned with status
``"approximate"`` and a message; it has not happened in the tests and
stress runs (library cases up to case_ACTIVSg2000, random loads, bids and
ratings).

Prices
------
``lmp`` is the dual of the nodal balance row, in $/MWh, with the sign of
"one more MW of load at this bus raises the cost by lmp". ``lmp_energy`` is the
LMP at the reference bus of the bus's island (in a lossless DC model this is
the system marginal energy price), and ``lmp_congestion = lmp - lmp_energy``
(there is no loss component). Slacks make every interval feasible, so an
interval with too little supply, or a bus islanded from all generation,
reports ``status == "load_shed"``, the MW shed per bus, and LMP equal to
the value of lost load where load is shed; a surplus that cannot be absorbed
reports ``"over_supply"`` with LMP at ``PRICE_FLOOR``.

Degenerate duals: where the optimum is primal-degenerate the price is not
unique (a generator exactly at a cost breakpoint or at a limit with no
marginal unit, a bus with neither injection nor withdrawal between two
congested branches, an island with no load and no generation). HiGHS then
returns the duals of its final basis: a valid price, inside the interval of
valid prices, but which one may depend on the starting basis, i.e. on the
intervals cleared before. :meth:`DcOpf.reset` drops the basis to make a
clear independent of history. :func:`lmp_is_unique` tells which LMPs of a
result are unique.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from dsosim.federates.common.blocks import flatten
from dsosim.federates.common.curves import PRICE_CAP, PRICE_FLOOR
from dsosim.federates.iso.case import PW_LINEAR, REF, TransmissionCase
from dsosim.federates.iso.dcopf.result import BusCurve, OpfResult
from dsosim.federates.iso.dcopf.solver import Statuses, _add_columns, _Mirror, _run, _solution
from dsosim.federates.iso.dcopf.status import (
    _INF,
    QP_FEASIBILITY_TOL,
    QP_REGULARIZATION,
    SLACK_TOL_MW,
    STATUS_APPROXIMATE,
    STATUS_FAILED,
    STATUS_LOAD_SHED,
    STATUS_OPTIMAL,
    STATUS_OVER_SUPPLY,
)

BID_WINDOW = 1.0
"""$/MWh: bid columns priced this close to their bus's LP price are in the QP
(:meth:`DcOpf._solve_qp`) ..."""
BID_WINDOW_SHARE = 0.02
"""... or within this share of that price, whichever is wider; the others
join the QP only when its prices say they must."""


@dataclass(frozen=True, eq=False)
class PeriodModel:
    """The single-period LP as assembled (before any bids), for models that
    repeat it over several periods (the day-ahead market).

    Columns ``[theta | pg | epigraph | shed | spill]`` at the offsets below;
    rows ``[balance (one per bus) | flow limits | angle limits | epigraphs]``.
    ``gen_*`` describe the ``pg`` columns (in-service generators, case order);
    flows are ``bf @ theta - br_shift_mw`` over branches ``br_on``, and rows
    ``row_flow + i`` limit branch ``br_on[flow_limited[i]]``.
    """

    a: sp.csc_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    col_lo: np.ndarray
    col_hi: np.ndarray
    cost: np.ndarray
    col_pg: int
    col_epi: int
    col_shed: int
    col_spill: int
    gen_on: np.ndarray
    gen_c1: np.ndarray
    gen_c2: np.ndarray
    cost_offset: float
    row_flow: int
    flow_limited: np.ndarray
    br_on: np.ndarray
    bf: sp.csr_matrix
    br_shift_mw: np.ndarray
    island_ref: np.ndarray
    islands: np.ndarray

    @property
    def n_col(self) -> int:
        return int(self.a.shape[1])

    @property
    def n_row(self) -> int:
        return int(self.a.shape[0])


@dataclass
class BidLayout:
    """Where this interval's bid blocks sit in the model."""

    block_curve: np.ndarray  # curve index of each block
    block_group: np.ndarray  # group (column) index of each block
    block_mw: np.ndarray
    group_bus: np.ndarray
    group_price: np.ndarray
    group_mw: np.ndarray
    group_cols: np.ndarray


class DcOpf:
    """DC optimal power flow market clearing for one transmission case.

    Parameters
    ----------
    case
        The transmission case; its topology, ratings and costs are fixed for
        the life of the object (build a new one after an outage).
    voll
        Value of lost load, $/MWh: the price of load shedding.
    spill_price
        Price of spilling surplus, $/MWh (so the LMP falls to ``-spill_price``
        where surplus is spilled).
    binding_tol_mw
        A branch within this many MW of its rating counts as binding.

    Examples
    --------
    >>> from dsosim.federates.iso.case import load_case
    >>> case = load_case("case9")
    >>> opf = DcOpf(case)
    >>> result = opf.clear(case.bus_pd_mw, [])
    >>> result.status, round(float(result.lmp[0]), 2)
    ('optimal', 24.04)
    """

    def __init__(
        self,
        case: TransmissionCase,
        *,
        voll: float = PRICE_CAP,
        spill_price: float = -PRICE_FLOOR,
        binding_tol_mw: float = 1e-5,
    ) -> None:
        if not (math.isfinite(voll) and voll > 0.0):
            raise ValueError(f"voll must be finite and > 0, got {voll!r}")
        if not (math.isfinite(spill_price) and spill_price >= 0.0):
            raise ValueError(f"spill_price must be finite and >= 0, got {spill_price!r}")
        self.case = case
        self.voll = float(voll)
        self.spill_price = float(spill_price)
        self.binding_tol_mw = float(binding_tol_mw)
        self._bus_pos = {int(b): i for i, b in enumerate(case.bus_ids)}
        self._prepare_network()
        self._prepare_generators()
        self._build_model()
        self._pool: dict[int, list[int]] = {}
        self._active_bid_cols = np.zeros(0, dtype=np.int32)
        # per LP column: the bus row of a bid column (-1 otherwise), its price and MW now
        n = self._lp.getNumCol()
        self._bid_bus = np.full(n, -1, dtype=np.int64)
        self._bid_price = np.zeros(n)
        self._bid_mw = np.zeros(n)
        self._rhs = self._current_rhs()

    # ------------------------------------------------------------------ build

    def _prepare_network(self) -> None:
        case = self.case
        nb = case.n_bus
        on = np.flatnonzero(case.branch_status)
        f, t = case.branch_from_idx[on], case.branch_to_idx[on]
        b = 1.0 / (case.branch_x[on] * case.branch_tap[on])
        n_on = len(on)
        incidence = sp.csr_matrix(
            (
                np.r_[np.ones(n_on), -np.ones(n_on)],
                (np.r_[np.arange(n_on), np.arange(n_on)], np.r_[f, t]),
            ),
            shape=(n_on, nb),
        )
        self._br_on = on
        self._br_b = b
        self._bf = sp.diags(b) @ incidence  # flow (MW) per unit of theta_mw
        self._bbus = (incidence.T @ self._bf).tocsc()
        shift_mw = b * np.deg2rad(case.branch_shift_deg[on]) * case.base_mva
        self._br_shift_mw = shift_mw  # flow = bf @ theta_mw - shift_mw
        self._shift_rhs = -(incidence.T @ shift_mw)  # added to the balance right-hand sides
        self._islands = self._find_islands(f, t)

    def _find_islands(self, f: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Island label per bus, and one reference bus per island (kept in
        ``self._island_ref``): the case's reference bus if the island has
        one, else the bus with the most in-service generating capacity."""
        case = self.case
        nb = case.n_bus
        graph = sp.coo_matrix((np.ones(len(f)), (f, t)), shape=(nb, nb))
        n_islands, labels = connected_components(graph, directed=False)
        capacity = np.zeros(nb)
        gen_on = case.gen_status
        np.add.at(capacity, case.gen_bus_idx[gen_on], np.maximum(case.gen_pmax_mw[gen_on], 0.0))
        refs = np.empty(n_islands, dtype=np.int64)
        for island in range(n_islands):
            members = np.flatnonzero(labels == island)
            is_ref = members[case.bus_type[members] == REF]
            if len(is_ref):
                refs[island] = is_ref[0]
            else:
                capped = np.where(np.isfinite(capacity[members]), capacity[members], 1e30)
                refs[island] = members[int(np.argmax(capped))]
        self._island_ref = refs
        return labels

    def _prepare_generators(self) -> None:
        case = self.case
        on = np.flatnonzero(case.gen_status)
        self._gen_on = on
        self._gen_pwl = on[case.gen_cost_model[on] == PW_LINEAR]
        poly = case.gen_cost_poly[on]
        is_poly = case.gen_cost_model[on] != PW_LINEAR
        self._gen_c2 = np.where(is_poly, poly[:, 0], 0.0)
        self._gen_c1 = np.where(is_poly, poly[:, 1], 0.0)
        self._cost_offset = float(np.sum(poly[is_poly, 2]))

    def _build_model(self) -> None:
        """Assemble the HiGHS model: columns [theta | pg | epigraph | shed | spill],
        rows [balance | flow limits | angle limits | epigraph segments]."""
        case = self.case
        nb, ng, npwl = case.n_bus, len(self._gen_on), len(self._gen_pwl)
        self._col_theta = 0
        self._col_pg = nb
        self._col_epi = nb + ng
        self._col_shed = nb + ng + npwl
        self._col_spill = self._col_shed + nb
        n_col = self._col_spill + nb

        blocks_a: list[sp.spmatrix] = []
        row_lo: list[np.ndarray] = []
        row_hi: list[np.ndarray] = []

        # nodal balance
        gen_bus = case.gen_bus_idx[self._gen_on]
        cg = sp.csr_matrix((np.ones(ng), (gen_bus, np.arange(ng))), shape=(nb, ng))
        eye = sp.identity(nb, format="csr")
        balance = sp.hstack([-self._bbus, cg, sp.csr_matrix((nb, npwl)), eye, -eye])
        blocks_a.append(balance)
        zero_rhs = self._balance_rhs(case.bus_pd_mw, np.zeros(nb))
        row_lo.append(zero_rhs)
        row_hi.append(zero_rhs.copy())

        # branch flow limits, both directions in one ranged row
        rate = case.branch_rate_mw[self._br_on]
        limited = np.flatnonzero(np.isfinite(rate))
        self._row_flow = nb
        self._flow_limited = limited
        blocks_a.append(sp.hstack([self._bf[limited], sp.csr_matrix((len(limited), n_col - nb))]))
        row_lo.append(-rate[limited] + self._br_shift_mw[limited])
        row_hi.append(rate[limited] + self._br_shift_mw[limited])

        # angle difference limits (MATPOWER's ANGMIN/ANGMAX on theta_f - theta_t)
        amin = case.branch_angmin_deg[self._br_on]
        amax = case.branch_angmax_deg[self._br_on]
        angled = np.flatnonzero(np.isfinite(amin) | np.isfinite(amax))
        if len(angled):
            diff = sp.diags(1.0 / self._br_b[angled]) @ self._bf[angled]  # theta_f - theta_t
            blocks_a.append(sp.hstack([diff, sp.csr_matrix((len(angled), n_col - nb))]))
            scale = np.pi / 180.0 * case.base_mva
            row_lo.append(np.where(np.isfinite(amin[angled]), amin[angled] * scale, -_INF))
            row_hi.append(np.where(np.isfinite(amax[angled]), amax[angled] * scale, _INF))

        # piecewise-linear cost epigraphs: epi_g - slope * pg >= y_k - slope * x_k
        epi_rows, epi_lo = self._epigraph_rows(n_col)
        if epi_rows is not None:
            blocks_a.append(epi_rows)
            row_lo.append(epi_lo)
            row_hi.append(np.full(len(epi_lo), _INF))

        a = sp.vstack(blocks_a).tocsc()
        a.sort_indices()
        lower, upper, cost = self._column_data(n_col)
        lo, hi = np.concatenate(row_lo), np.concatenate(row_hi)
        self.period_model = PeriodModel(
            a=a,
            row_lo=lo,
            row_hi=hi,
            col_lo=lower,
            col_hi=upper,
            cost=cost,
            col_pg=self._col_pg,
            col_epi=self._col_epi,
            col_shed=self._col_shed,
            col_spill=self._col_spill,
            gen_on=self._gen_on,
            gen_c1=self._gen_c1,
            gen_c2=self._gen_c2,
            cost_offset=self._cost_offset,
            row_flow=self._row_flow,
            flow_limited=self._flow_limited,
            br_on=self._br_on,
            bf=self._bf.tocsr(),
            br_shift_mw=self._br_shift_mw,
            island_ref=self._island_ref,
            islands=self._islands,
        )
        self._build_highs(a, lo, hi, lower, upper, cost)

    def _epigraph_rows(self, n_col: int) -> tuple[sp.csr_matrix | None, np.ndarray]:
        rows, cols, vals, lo = [], [], [], []
        r = 0
        pg_pos = {int(g): k for k, g in enumerate(self._gen_on)}
        for e, g in enumerate(self._gen_pwl):
            points = self.case.gen_cost_pwl[g]
            x, y = points[:, 0], points[:, 1]
            slopes = np.diff(y) / np.diff(x)
            for k, slope in enumerate(slopes):
                rows += [r, r]
                cols += [self._col_epi + e, self._col_pg + pg_pos[int(g)]]
                vals += [1.0, -slope]
                lo.append(y[k] - slope * x[k])
                r += 1
        if r == 0:
            return None, np.zeros(0)
        return sp.csr_matrix((vals, (rows, cols)), shape=(r, n_col)), np.asarray(lo)

    def _column_data(self, n_col: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        case = self.case
        nb = case.n_bus
        lower = np.full(n_col, -_INF)
        upper = np.full(n_col, _INF)
        cost = np.zeros(n_col)
        lower[self._island_ref] = 0.0
        upper[self._island_ref] = 0.0
        pg = slice(self._col_pg, self._col_epi)
        lower[pg] = np.clip(case.gen_pmin_mw[self._gen_on], -_INF, _INF)
        upper[pg] = np.clip(case.gen_pmax_mw[self._gen_on], -_INF, _INF)
        cost[pg] = self._gen_c1
        cost[self._col_epi : self._col_shed] = 1.0
        slack = slice(self._col_shed, self._col_spill + nb)
        lower[slack] = 0.0
        cost[self._col_shed : self._col_spill] = self.voll
        cost[self._col_spill : self._col_spill + nb] = self.spill_price
        return lower, upper, cost

    def _build_highs(
        self,
        a: sp.csc_matrix,
        row_lo: np.ndarray,
        row_hi: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        cost: np.ndarray,
    ) -> None:
        """One LP instance always; a second, QP instance when some generator
        has a quadratic cost (see :meth:`_solve_qp` for why two)."""
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = a.shape[1], a.shape[0]
        lp.col_cost_ = cost
        lp.col_lower_ = lower
        lp.col_upper_ = upper
        lp.row_lower_ = row_lo
        lp.row_upper_ = row_hi
        lp.offset_ = self._cost_offset
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = a.indptr.astype(np.int32)
        lp.a_matrix_.index_ = a.indices.astype(np.int32)
        lp.a_matrix_.value_ = a.data.astype(float)
        self._quadratic = np.flatnonzero(self._gen_c2 > 0.0)
        self._pg_cols = np.arange(self._col_pg, self._col_epi, dtype=np.int32)
        model = highspy.HighsModel()
        model.lp_ = lp
        self._lp = self._new_highs(model)
        self._qp: highspy.Highs | None = None
        self._mirror: _Mirror | None = None
        if len(self._quadratic):
            self._qp = self._new_highs(self._qp_model(a, lp))
            self._mirror = _Mirror(self._qp, self._col_shed, lp.num_col_)
            self._qp.setOptionValue("qp_allow_hot_start", True)
            # The default regularisation (1e-7 on every diagonal entry, theta included)
            # shifts the LMPs by ~1e-5 $/MWh and keeps the solver cycling at degenerate
            # optima with load shedding; 1e-10 does neither.
            self._qp.setOptionValue("qp_regularization_value", QP_REGULARIZATION)
            # HiGHS checks a hot start and the QP optimum against 1e-7 absolute; on
            # thousands of buses the LP optimum and the QP's own result miss that by
            # ~1e-7 MW, and the QP is then restarted cold or reported failed.
            self._qp.setOptionValue("primal_feasibility_tolerance", QP_FEASIBILITY_TOL)
            self._qp.setOptionValue("dual_feasibility_tolerance", QP_FEASIBILITY_TOL)
            self._qp.setOptionValue("qp_iteration_limit", max(1000, 20 * len(self._gen_on)))
        self._pg_prev: np.ndarray | None = None
        self._lp_warm = False

    def _qp_model(self, a: sp.csc_matrix, lp: highspy.HighsLp) -> highspy.HighsModel:
        """The QP: the LP's model without the shed/spill columns (the last ones;
        see :meth:`_solve_qp`), plus the Hessian. Its active-set solver costs
        grow with the number of columns, so absent columns are cheaper than
        columns fixed at zero."""
        n = self._col_shed
        sub = a[:, :n].tocsc()
        qp = highspy.HighsLp()
        qp.num_col_, qp.num_row_ = n, lp.num_row_
        qp.col_cost_ = np.asarray(lp.col_cost_)[:n]
        qp.col_lower_ = np.asarray(lp.col_lower_)[:n]
        qp.col_upper_ = np.asarray(lp.col_upper_)[:n]
        qp.row_lower_ = np.asarray(lp.row_lower_)
        qp.row_upper_ = np.asarray(lp.row_upper_)
        qp.offset_ = self._cost_offset
        qp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        qp.a_matrix_.start_ = sub.indptr.astype(np.int32)
        qp.a_matrix_.index_ = sub.indices.astype(np.int32)
        qp.a_matrix_.value_ = sub.data.astype(float)
        model = highspy.HighsModel()
        model.lp_ = qp
        model.hessian_ = self._hessian(n)
        return model

    def _hessian(self, n_col: int) -> highspy.HighsHessian:
        """Diagonal Hessian ``2 * c2`` on the generator columns (HiGHS
        minimises ``c'x + x'Qx/2``)."""
        cols = (self._col_pg + self._quadratic).astype(np.int32)
        hessian = highspy.HighsHessian()
        hessian.dim_ = n_col
        hessian.format_ = highspy.HessianFormat.kTriangular
        hessian.start_ = np.searchsorted(cols, np.arange(n_col + 1)).astype(np.int32)
        hessian.index_ = cols
        hessian.value_ = 2.0 * self._gen_c2[self._quadratic]
        return hessian

    def _new_highs(self, model: highspy.HighsModel) -> highspy.Highs:
        highs = highspy.Highs()
        highs.setOptionValue("output_flag", False)
        # Presolve would hide the basis between re-solves and rewrite the duals.
        highs.setOptionValue("presolve", "off")
        highs.setOptionValue("random_seed", 0)
        highs.setOptionValue("threads", 1)
        status = highs.passModel(model)
        if status != highspy.HighsStatus.kOk:
            raise RuntimeError(
                f"HiGHS rejected the DC-OPF model of case {self.case.name}: {status}"
            )
        return highs

    # ------------------------------------------------------------------ clear

    @property
    def bid_columns(self) -> int:
        """Size of the pool of bid columns (it grows only when an interval
        needs more (bus, price) groups at a bus than any interval before)."""
        return sum(len(pool) for pool in self._pool.values())

    def reset(self) -> None:
        """Forget the solvers' bases and the previous dispatch: the next clear
        starts cold and does not depend on the intervals cleared before."""
        for highs in (self._lp, self._qp):
            if highs is not None:
                highs.clearSolver()
        self._lp.setOptionValue("simplex_dual_edge_weight_strategy", -1)
        self._lp_warm = False
        self._pg_prev = None
        if self._mirror is not None:  # nor on which bids the QP held (nor their order)
            bids = np.flatnonzero(self._bid_bus >= 0)
            self._mirror.remove(bids[self._mirror.present(bids)])

    def clear(self, fixed_load_mw: np.ndarray, curves: Sequence[BusCurve] = ()) -> OpfResult:
        """Clear one market interval.

        Parameters
        ----------
        fixed_load_mw
            Price-inelastic load at each bus, MW, aligned with
            ``case.bus_ids`` (``case.bus_pd_mw`` for the case's own loads).
        curves
            Bid curves at transmission buses; any number per bus.

        Returns
        -------
        OpfResult
            Never raises on an infeasible interval: see ``status``.
        """
        load = np.asarray(fixed_load_mw, dtype=float)
        if load.shape != (self.case.n_bus,):
            raise ValueError(
                f"fixed_load_mw has shape {load.shape}; expected ({self.case.n_bus},), "
                "aligned with case.bus_ids"
            )
        bad = np.flatnonzero(~np.isfinite(load))
        if len(bad):
            raise ValueError(f"fixed_load_mw is not finite at bus {self.case.bus_ids[bad[0]]}")
        base_by_bus, layout = self._place_bids(curves)
        rhs = self._balance_rhs(load, base_by_bus)
        nb = self.case.n_bus
        rows = np.arange(nb, dtype=np.int32)
        self._lp.changeRowsBounds(nb, rows, rhs, rhs)  # type: ignore[attr-defined]
        self._rhs = rhs  # the QP's are set when its bid columns are chosen (_solve_qp)
        started = time.perf_counter()
        solved = self._solve()
        elapsed = time.perf_counter() - started
        if solved is None:
            return self._failed(load, base_by_bus, len(curves), elapsed)
        x, duals, note = solved
        return self.result_from_solution(x, duals, note, load, base_by_bus, curves, layout, elapsed)

    def _balance_rhs(self, load: np.ndarray, base_by_bus: np.ndarray) -> np.ndarray:
        return load + self.case.bus_gs_mw + base_by_bus + self._shift_rhs

    def balance_rhs(self, load: np.ndarray, base_by_bus: np.ndarray) -> np.ndarray:
        """Right-hand sides of the nodal balance rows for fixed load ``load`` and
        the curves' fixed parts ``base_by_bus`` (MW per bus)."""
        return self._balance_rhs(load, base_by_bus)

    def _solve(self) -> tuple[np.ndarray, np.ndarray, str] | None:
        """Solve; return LP-indexed column values, row duals and a note (empty
        when the solution is exact), or None."""
        if self._qp is None:
            return (*_solution(self._lp), "") if self._run_lp() else None
        self._set_tangent_costs()
        if not self._run_lp():
            return None  # the QP has the same feasible set: it is infeasible too
        solved = self._solve_qp()
        if solved is not None:
            x, duals = solved
            self._pg_prev = x[self._col_pg : self._col_epi]
            return x, duals, ""
        x, duals = _solution(self._lp)
        self._pg_prev = x[self._col_pg : self._col_epi]
        note = (
            "HiGHS's QP solver did not converge: dispatch and prices are those of the LP "
            "with quadratic costs linearised at the previous dispatch"
        )
        return x, duals, note

    def _run_lp(self) -> bool:
        """Run the LP. Once it has a basis, pricing switches from dual steepest
        edge to Dantzig: a warm re-solve takes few pivots, and re-priced bid
        columns would otherwise make HiGHS recompute every edge weight (one
        solve per row: ~0.3 s on case2869pegase with a few thousand bids)."""
        solved = _run(self._lp)
        if solved and not self._lp_warm:
            self._lp.setOptionValue("simplex_dual_edge_weight_strategy", 0)
            self._lp_warm = True
        return solved

    def _set_tangent_costs(self) -> None:
        """LP costs of quadratic generators: their marginal cost at the
        previous dispatch (or at a merit-order estimate on the first clear)."""
        if self._pg_prev is None:
            self._pg_prev = self._merit_order_guess()
        q = self._quadratic
        cost = self._gen_c1[q] + 2.0 * self._gen_c2[q] * self._pg_prev[q]
        self._lp.changeColsCost(len(q), self._pg_cols[q], cost)

    def _merit_order_guess(self) -> np.ndarray:
        """Dispatch of an economic dispatch without network, for the first
        clear only: which units are likely to be marginal (inside their limits)."""
        lo = self.case.gen_pmin_mw[self._gen_on]
        hi = self.case.gen_pmax_mw[self._gen_on]
        demand = float(np.sum(self._current_rhs()))
        c1, c2 = self._gen_c1, np.maximum(self._gen_c2, 1e-9)

        def output(price: float) -> np.ndarray:
            return np.clip((price - c1) / (2.0 * c2), lo, hi)

        low, high = -abs(PRICE_FLOOR), self.voll
        for _ in range(100):
            mid = 0.5 * (low + high)
            low, high = (mid, high) if output(mid).sum() < demand else (low, mid)
        return output(0.5 * (low + high))

    def _current_rhs(self) -> np.ndarray:
        return np.asarray(self._lp.getLp().row_lower_[: self.case.n_bus])

    def _solve_qp(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Solve the QP by HiGHS's active-set solver, hot-started at the LP optimum.

        HiGHS's QP solver starts cold from a feasible point of a zero-cost LP
        (all load shed, here) and can stall on its degeneracy. Hot-started from
        a feasible point and a basis, it only moves the working set. The LP
        optimum with tangent costs is such a point; in its basis, quadratic
        units that were inside their limits at the previous optimum are
        marked inactive, so one Newton step in their subspace reaches the new
        optimum when the working set has not changed.

        The shed and spill slacks are the other source of degeneracy (many
        columns at zero, interchangeable when load is shed). The QP has them
        only where the LP used them (or holds them in its basis); a missing
        slack whose price says it should be used (LMP above the value of lost
        load, or below minus the spill price) is added and the QP solved
        again, so the final solution is optimal for the full problem.

        Bid columns likewise (:meth:`_wanted_bids`): the solver's work grows
        with the columns at a bound (each one a constraint in its working
        set), and interface bids bring thousands, nearly all far from their
        bus's price. The QP has the bids the LP holds in its basis, takes
        partly, or prices near their bus's LP price; the others are fixed
        where the LP left them (their MW moved to the balance rows' right-hand
        side). A fixed bid on the wrong side of its bus's QP price (taken
        above it, or left below it) is added and the QP solved again; so the
        result is optimal for the full problem, as with every bid present.
        """
        mirror = self._mirror
        assert self._qp is not None and mirror is not None
        nb = self.case.n_bus
        x_lp, duals_lp = _solution(self._lp)
        basis = self._lp.getBasis()
        col_status, row_status = basis.col_status, basis.row_status
        basic = self._lp.getBasicVariables()[1]  # type: ignore[attr-defined]
        is_basic = np.zeros(self._lp.getNumCol(), dtype=bool)
        is_basic[basic[basic >= 0]] = True
        slack = slice(self._col_shed, self._col_spill + nb)
        wanted = (x_lp[slack] > SLACK_TOL_MW) | is_basic[slack]
        bids = np.flatnonzero(self._bid_bus >= 0)
        want_bid = self._wanted_bids(bids, x_lp, duals_lp[:nb], is_basic)
        row_lp = np.asarray(self._lp.getSolution().row_value)
        starts = (self._crafted_statuses(col_status), col_status)
        tol = 1e-6 * max(1.0, self.voll, self.spill_price)  # QP duals are this accurate
        for attempt in range(6):
            self._open_qp_slacks(wanted)
            fixed, fixed_mw = self._open_qp_bids(bids, want_bid, x_lp)
            held = np.bincount(self._bid_bus[fixed], fixed_mw, minlength=nb)
            rhs = self._rhs + held
            rows = np.arange(nb, dtype=np.int32)
            self._qp.changeRowsBounds(nb, rows, rhs, rhs)  # type: ignore[attr-defined]
            row_value = row_lp.copy()
            row_value[:nb] += held
            solved = self._run_qp_hot(x_lp, row_value, row_status, starts)
            if solved is None:
                return None
            x, duals = solved
            x[fixed] = fixed_mw
            lmp = duals[:nb]
            more = np.r_[lmp > self.voll + tol, lmp < -self.spill_price - tol] & ~wanted
            price, at_bus = self._bid_price[fixed], lmp[self._bid_bus[fixed]]
            taken = fixed_mw > 0.0
            wrong = np.where(taken, price < at_bus - tol, price > at_bus + tol)
            wrong &= self._bid_mw[fixed] > 0.0  # a column switched off cannot move
            if not more.any() and not wrong.any():
                return x, duals
            wanted |= more
            if attempt >= 2:  # prices moved far from the LP's: every bid in the QP
                want_bid[:] = True
            else:
                want_bid[np.searchsorted(bids, fixed[wrong])] = True
        return None

    def _wanted_bids(
        self, bids: np.ndarray, x_lp: np.ndarray, lmp_lp: np.ndarray, is_basic: np.ndarray
    ) -> np.ndarray:
        """Bid columns the QP needs (mask over ``bids``): basic in the LP,
        taken partly, or priced within ``BID_WINDOW`` of their bus's LP price."""
        x, mw, price = x_lp[bids], self._bid_mw[bids], self._bid_price[bids]
        inside = (x > SLACK_TOL_MW) & (x < mw - SLACK_TOL_MW)
        lmp = lmp_lp[self._bid_bus[bids]]
        near = np.abs(price - lmp) <= np.maximum(BID_WINDOW, BID_WINDOW_SHARE * np.abs(lmp))
        return is_basic[bids] | inside | (near & (mw > 0.0))

    def _open_qp_bids(
        self, bids: np.ndarray, want: np.ndarray, x_lp: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Give the QP the bid columns wanted (with their cost and bounds now)
        and take the others out; return the ones out and the MW they are
        fixed at (where the LP left them: 0 or their whole block)."""
        mirror = self._mirror
        assert mirror is not None
        present = mirror.present(bids)
        mirror.remove(bids[present & ~want])
        add = bids[want & ~present]
        if len(add):
            n = len(add)
            mirror.add(
                add,
                -self._bid_price[add],
                np.zeros(n),
                self._bid_mw[add],
                self._bid_bus[add],
                -np.ones(n),
            )
        fixed = bids[~want]
        return fixed, np.clip(x_lp[fixed], 0.0, self._bid_mw[fixed])

    def _open_qp_slacks(self, wanted: np.ndarray) -> None:
        """Give the QP the slack columns in ``wanted`` (shed then spill, per
        bus) with bounds [0, inf); slacks it has but that are not wanted are
        fixed at 0."""
        mirror = self._mirror
        assert mirror is not None
        nb = self.case.n_bus
        lp_cols = np.arange(self._col_shed, self._col_spill + nb)
        missing = lp_cols[wanted & (mirror.qp_of[lp_cols] < 0)]
        if len(missing):
            is_shed = missing < self._col_spill
            bus = np.where(is_shed, missing - self._col_shed, missing - self._col_spill)
            cost = np.where(is_shed, self.voll, self.spill_price)
            value = np.where(is_shed, 1.0, -1.0)
            mirror.add(missing, cost, np.zeros(len(missing)), np.zeros(len(missing)), bus, value)
        present = lp_cols[mirror.qp_of[lp_cols] >= 0]
        upper = np.where(wanted[present - self._col_shed], _INF, 0.0)
        mirror.change_bounds(present, np.zeros(len(present)), upper)

    def _run_qp_hot(
        self,
        x_lp: np.ndarray,
        row_value: np.ndarray,
        row_status: Statuses,
        starts: tuple[Statuses, Statuses],
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """One QP solve from the LP optimum (``row_value``: the QP rows'
        activity there): first with the crafted basis, then with the plain LP
        basis, then cold."""
        mirror = self._mirror
        assert self._qp is not None and mirror is not None
        for col_status in starts:
            mirror.hot_start(x_lp, row_value, col_status, row_status)
            if _run(self._qp, retry_cold=False):
                return mirror.solution()
        self._qp.clearSolver()
        return mirror.solution() if _run(self._qp, retry_cold=False) else None

    def _crafted_statuses(self, col_status: Statuses) -> Statuses:
        """The LP basis with quadratic units that were inside their limits at
        the previous optimum marked inactive (``kNonbasic``) instead of at a bound."""
        assert self._pg_prev is not None
        q = self._quadratic
        lo = self.case.gen_pmin_mw[self._gen_on][q]
        hi = self.case.gen_pmax_mw[self._gen_on][q]
        p = self._pg_prev[q]
        tol = 1e-6 * np.maximum(1.0, np.abs(p))
        interior = q[(p > lo + tol) & (p < hi - tol)]
        crafted = list(col_status)
        at_bound = (highspy.HighsBasisStatus.kLower, highspy.HighsBasisStatus.kUpper)
        for j in (self._col_pg + interior).tolist():
            if crafted[j] in at_bound:
                crafted[j] = highspy.HighsBasisStatus.kNonbasic
        return crafted

    def group_bids(self, curves: Sequence[BusCurve]) -> tuple[np.ndarray, BidLayout]:
        """Sum the curves' base MW per bus and pool their blocks into one
        group per (bus, price); the layout's ``group_cols`` is left empty."""
        blocks = flatten(curves, self._bus_pos, "bus", f"case {self.case.name}")
        base_by_bus, bus, price, mw = blocks.base_mw, blocks.place, blocks.price, blocks.mw
        group_bus: np.ndarray
        group_price: np.ndarray
        group_mw: np.ndarray
        block_group: np.ndarray
        if len(mw):
            # groups in (bus, price) order, as np.unique(axis=1) gives them, by one lexsort
            order = np.lexsort((price, bus))
            s_bus, s_price = bus[order], price[order]
            new = np.empty(len(order), dtype=bool)
            new[0] = True
            new[1:] = (s_bus[1:] != s_bus[:-1]) | (s_price[1:] != s_price[:-1])
            block_group = np.empty(len(order), dtype=np.int64)
            block_group[order] = np.cumsum(new) - 1
            group_bus = s_bus[new].astype(np.int64)
            group_price = s_price[new]
            group_mw = np.bincount(block_group, weights=mw, minlength=len(group_bus))
        else:
            block_group = np.zeros(0, dtype=np.int64)
            group_bus = np.zeros(0, dtype=np.int64)
            group_price = np.zeros(0)
            group_mw = np.zeros(0)
        layout = BidLayout(
            blocks.curve,
            block_group,
            mw,
            group_bus,
            group_price,
            group_mw,
            np.zeros(0, dtype=np.int32),
        )
        return base_by_bus, layout

    def _place_bids(self, curves: Sequence[BusCurve]) -> tuple[np.ndarray, BidLayout]:
        """Group the curves' blocks and load them into the pool of bid
        columns: one column per (bus, price) group."""
        base_by_bus, layout = self.group_bids(curves)
        layout.group_cols = self._assign_columns(layout.group_bus)
        self._load_bid_columns(layout.group_cols, layout.group_price, layout.group_mw)
        return base_by_bus, layout

    def _assign_columns(self, group_bus: np.ndarray) -> np.ndarray:
        """Column index for each group (groups are sorted by bus); new columns
        are added to a bus's pool only when it has fewer than it needs."""
        cols = np.empty(len(group_bus), dtype=np.int32)
        if len(group_bus) == 0:
            return cols
        buses, starts, counts = np.unique(group_bus, return_index=True, return_counts=True)
        new_bus: list[int] = []
        for bus, start, count in zip(buses.tolist(), starts.tolist(), counts.tolist()):
            pool = self._pool.setdefault(bus, [])
            missing = count - len(pool)
            if missing > 0:
                first = self._lp.getNumCol() + len(new_bus)
                pool.extend(range(first, first + missing))
                new_bus.extend([bus] * missing)
            cols[start : start + count] = pool[:count]
        if new_bus:
            self._add_bid_columns(np.asarray(new_bus, dtype=np.int32))
        return cols

    def _add_bid_columns(self, bus: np.ndarray) -> None:
        """New bid columns, switched off; the QP gets them when it needs them
        (:meth:`_solve_qp`)."""
        n = len(bus)
        zeros = np.zeros(n)
        first = self._lp.getNumCol()
        _add_columns(self._lp, zeros, zeros, zeros, bus, -np.ones(n))
        self._bid_bus = np.r_[self._bid_bus, bus.astype(np.int64)]
        self._bid_price = np.r_[self._bid_price, zeros]
        self._bid_mw = np.r_[self._bid_mw, zeros]
        if self._mirror is not None:
            self._mirror.grow(first + n)

    def _load_bid_columns(self, cols: np.ndarray, price: np.ndarray, mw: np.ndarray) -> None:
        """Re-price and re-bound the pool: this interval's groups get
        ``cost = -price`` and ``[0, mw]``; last interval's other columns are
        switched off (``[0, 0]``, cost 0). Columns are passed to HiGHS in
        increasing order (it sorts them otherwise)."""
        order = np.argsort(cols)
        cols, price, mw = cols[order], price[order], mw[order]
        stale = np.setdiff1d(self._active_bid_cols, cols, assume_unique=True).astype(np.int32)
        z = np.zeros(len(stale))
        changes = ((stale, z, z, z), (cols, -price, np.zeros(len(cols)), mw))
        for which, cost, lower, upper in changes:
            if len(which) == 0:
                continue
            self._lp.changeColsCost(len(which), which, cost)
            self._lp.changeColsBounds(len(which), which, lower, upper)
            self._bid_price[which] = -cost
            self._bid_mw[which] = upper
            if self._mirror is not None:  # the QP's bid columns present now
                here = self._mirror.present(which)
                if here.any():
                    self._mirror.change_costs(which[here], cost[here])
                    self._mirror.change_bounds(which[here], lower[here], upper[here])
        self._active_bid_cols = cols

    # ------------------------------------------------------------------ results

    def result_from_solution(
        self,
        x: np.ndarray,
        duals: np.ndarray,
        note: str,
        load: np.ndarray,
        base_by_bus: np.ndarray,
        curves: Sequence[BusCurve],
        layout: BidLayout,
        elapsed: float,
        held: np.ndarray | None = None,
    ) -> OpfResult:
        """The result of one period from a solution of this period's columns
        (``x``: the :class:`PeriodModel` columns, then the bid columns at
        ``layout.group_cols``) and rows (``duals``). ``held``: in-service
        generators (by position among ``PeriodModel.gen_on``) held by a
        constraint outside the period (a ramp limit), which set no price."""
        case = self.case
        nb = case.n_bus
        theta = x[self._col_theta : self._col_theta + nb]
        gen_mw = np.zeros(case.n_gen)
        gen_mw[self._gen_on] = x[self._col_pg : self._col_epi]
        flow = np.zeros(case.n_branch)
        flow[self._br_on] = self._bf @ theta - self._br_shift_mw
        shed = np.maximum(x[self._col_shed : self._col_spill], 0.0)
        spill = np.maximum(x[self._col_spill : self._col_spill + nb], 0.0)

        lmp = duals[:nb].copy()
        energy = lmp[self._island_ref][self._islands]
        shadow = np.zeros(case.n_branch)
        # |dual|: a binding upper limit has a dual <= 0, a binding lower one >= 0
        shadow[self._br_on[self._flow_limited]] = np.abs(
            duals[self._row_flow : self._row_flow + len(self._flow_limited)]
        )

        group_x = (
            np.clip(x[layout.group_cols], 0.0, layout.group_mw)
            if len(layout.group_cols)
            else np.zeros(0)
        )
        cleared_blocks = (
            group_x[layout.block_group] * layout.block_mw / layout.group_mw[layout.block_group]
            if len(layout.block_mw)
            else np.zeros(0)
        )
        curve_mw = np.array([bid.curve.base_mw for bid in curves], dtype=float)
        if len(cleared_blocks):
            curve_mw += np.bincount(
                layout.block_curve, weights=cleared_blocks, minlength=len(curves)
            )
        bid_by_bus = base_by_bus.copy()
        if len(cleared_blocks):
            np.add.at(bid_by_bus, layout.group_bus, group_x)
        withdrawal = load + case.bus_gs_mw + bid_by_bus - shed + spill

        rate = case.branch_rate_mw
        binding = np.flatnonzero(
            case.branch_status & np.isfinite(rate) & (np.abs(flow) >= rate - self.binding_tol_mw)
        )
        total_cost = case.generator_cost(gen_mw)
        status = STATUS_APPROXIMATE if note else STATUS_OPTIMAL
        if shed.max(initial=0.0) > SLACK_TOL_MW:
            status = STATUS_LOAD_SHED
        elif spill.max(initial=0.0) > SLACK_TOL_MW:
            status = STATUS_OVER_SUPPLY
        return OpfResult(
            case=case,
            status=status,
            lmp=lmp,
            lmp_energy=energy,
            lmp_congestion=lmp - energy,
            gen_mw=gen_mw,
            branch_flow_mw=flow,
            binding=binding,
            branch_shadow_price=shadow,
            total_cost=total_cost,
            objective=total_cost
            + self.voll * float(shed.sum())
            + self.spill_price * float(spill.sum())
            - float(np.dot(layout.group_price, group_x)),
            curve_mw=curve_mw,
            shed_mw=shed,
            spill_mw=spill,
            withdrawal_mw=withdrawal,
            price_setter=self._price_setters(gen_mw, layout, group_x, shed, spill, held),
            solve_seconds=elapsed,
            message=note,
        )

    def _price_setters(
        self,
        gen_mw: np.ndarray,
        layout: BidLayout,
        group_x: np.ndarray,
        shed: np.ndarray,
        spill: np.ndarray,
        held: np.ndarray | None = None,
    ) -> np.ndarray:
        case = self.case
        setter = (shed > SLACK_TOL_MW) | (spill > SLACK_TOL_MW)
        on = self._gen_on
        p = gen_mw[on]
        tol = 1e-6 * np.maximum(1.0, np.abs(p))
        inside = (p > case.gen_pmin_mw[on] + tol) & (p < case.gen_pmax_mw[on] - tol)
        if held is not None:
            inside &= ~held
        for k in np.flatnonzero(inside & (case.gen_cost_model[on] == PW_LINEAR)):
            breakpoints = case.gen_cost_pwl[on[k]][:, 0]
            inside[k] = bool(np.all(np.abs(breakpoints - p[k]) > tol[k]))
        setter[case.gen_bus_idx[on[inside]]] = True
        if len(group_x):
            partial = (group_x > SLACK_TOL_MW) & (group_x < layout.group_mw - SLACK_TOL_MW)
            setter[layout.group_bus[partial]] = True
        return setter

    def _failed(
        self, load: np.ndarray, base_by_bus: np.ndarray, n_curves: int, elapsed: float
    ) -> OpfResult:
        case = self.case
        nan_bus = np.full(case.n_bus, np.nan)
        lp_status = self._lp.modelStatusToString(self._lp.getModelStatus())
        status = lp_status
        if self._qp is not None and self._lp.getModelStatus() == highspy.HighsModelStatus.kOptimal:
            status = "QP: " + self._qp.modelStatusToString(self._qp.getModelStatus())
        return OpfResult(
            case=case,
            status=STATUS_FAILED,
            lmp=nan_bus,
            lmp_energy=nan_bus.copy(),
            lmp_congestion=nan_bus.copy(),
            gen_mw=np.full(case.n_gen, np.nan),
            branch_flow_mw=np.full(case.n_branch, np.nan),
            binding=np.zeros(0, dtype=np.int64),
            branch_shadow_price=np.full(case.n_branch, np.nan),
            total_cost=math.nan,
            objective=math.nan,
            curve_mw=np.full(n_curves, np.nan),
            shed_mw=nan_bus.copy(),
            spill_mw=nan_bus.copy(),
            withdrawal_mw=load + case.bus_gs_mw + base_by_bus,
            price_setter=np.zeros(case.n_bus, dtype=bool),
            solve_seconds=elapsed,
            message=f"HiGHS: {status}",
        )
