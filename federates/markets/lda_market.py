"""The DSO's market role for its local distribution area (LDA): feeder-constrained
aggregation of DER bids into one bid at the T-D interface, and disaggregation of
the ISO's award into DER dispatch with distribution LMPs (DLMPs).

Both are linear programmes (HiGHS) on the linearisation of the feeder at the
current operating point (:class:`~dsosim.federates.dso.feeder.FeederState` and
:class:`~dsosim.federates.dso.feeder.Sensitivities`):

* a DER's net demand ``P_i`` is the sum of the curves located at it: the curves'
  ``base_mw`` plus the dispatched part ``x_b`` of each block, ``0 <= x_b <= mw_b``;
  DERs without a curve keep their operating-point set-point ``P0_i``;
* voltages ``v = v0 + dV/dP (P - P0)`` stay in ``[vmin, vmax]`` at monitored
  nodes; loadings ``L0 + dL/dP (P - P0) <= max_loading`` (two rows, one per
  one-sided slope, where the feeder reports a kink: see ``Sensitivities``);
  every network row is soft, with a slack priced at ``violation_penalty``, so a
  limit already violated at the operating point never makes the LP infeasible:
  if the DERs can bring it back within the limit they are made to, at any
  price; if no dispatch of the bids can, the row is reported as *relaxed* (the
  DSO must act outside the market) and, if it is a thermal row, held at its
  value at the operating point ("no worse than now"): the DERs may relieve
  it, never add to it;
* the head (substation) net demand is
  ``P_head = fixed_mw + sum_i [P0_i + dPsub/dP_i (P_i - P0_i)]``, where
  ``fixed_mw`` is the head power not due to the DERs: inflexible load plus
  losses at the operating point (:func:`fixed_head_mw` gives it from a state).

Rows that cannot reach their limit anywhere in the box of block quantities are
dropped before the LP is built (exact: they cannot bind), so the LP stays small.

DLMP convention
---------------
Writing every network row as ``g_k(P) <= 0`` with multiplier ``mu_k >= 0``
($/h per unit of the row: pu of voltage or fraction of rating), the price of net
demand at DER ``i`` is

    DLMP_i = lambda * dPsub/dP_i + sum_k mu_k * dg_k/dP_i

``lambda`` (energy) is the price of net demand at the head: the T-D LMP when
the award is what the feeder's bids ask at that LMP, else the head price of the
local block that is split to meet the award (the dual of the head balance);
the LMP again where that dual is the imbalance penalty with no imbalance
taken (no block is marginal: see ``clear_lda``).
The loss component is ``lambda * (dPsub/dP_i - 1)`` and the congestion/voltage
component is the sum. A DER that consumes where it relieves
a binding limit (``dg/dP < 0``, e.g. consumption under an over-voltage) sees a
lower price; every partially dispatched block has ``DLMP = its price``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Literal, NamedTuple, TypeAlias

import highspy
import numpy as np

from dsosim.federates.common.blocks import PlacementError, flatten
from dsosim.federates.common.config import LimitsConfig
from dsosim.federates.common.curves import PRICE_CAP, PRICE_FLOOR, BidCurve, PlacedCurve
from dsosim.federates.dso.feeder import FeederState, Sensitivities
from dsosim.federates.markets.parametric import ParametricLp, PivotError

ConstraintKind = Literal["vmax", "vmin", "thermal"]
DerCurve: TypeAlias = PlacedCurve[str]
"""An aggregator's bid at one DER element of the feeder (MW at the DER):
``at`` is the element, ``owner`` the aggregator."""

_EPS_PRICE = 1e-4
"""$/MWh: the price sweep evaluates this far below each breakpoint, where the
dispatch is unique and is the curve's quantity *at* the breakpoint price
(blocks are taken at prices at or below theirs). Steps narrower than this in
price may be merged into their neighbour."""
SWEEP_PRICE_BOUND = _EPS_PRICE / 10.0
"""$/MWh: how far a breakpoint of the interface bid may lie from where the
same sweep puts it with HiGHS solving every step (the method until the
sweep's steps became :mod:`~dsosim.federates.markets.parametric` pivots).
A breakpoint between block prices is ``d / d1`` from the basis's reduced
costs, whose rounding grows as the slope ``d1`` shrinks: the two methods'
roundings differ, not their steps. A tenth of the sweep's own price
resolution (``_EPS_PRICE``). The sweep's first LP is HiGHS's, from scratch
as before (where rows are held by their slacks, the vertex within the
solvers' tolerances differs: the pivots' own start was measured 2.4e-8 MW
of demand away), and the pivots go on from its basis. Measured: at most
3.4e-9 $/MWh on the study's recorded bids (evening, midday and night),
1.9e-8 in its evening peak's bids table (3 h; every other table identical),
8e-7 on 480 random feeders with prices on a coarse grid
(``tests/test_lda_hot_path.py``)."""
SWEEP_MW_BOUND = 1e-7
"""MW: the same for the quantity of each block. Where rows are held by their
slacks, the two methods' vertices agree only within the solvers' tolerances
(the pivots' own start was 2.4e-8 MW of demand from HiGHS's, above): measured
2.6e-8 MW on one of the 96 bids of the study's 07:00-08:00 (``dsosim bench
lda --hours 1 --start-hour 7``), identical everywhere else; 0.1 W, a hundred
units of the 1e-9 MW the sweep rounds demands to (``_round_mw``). It was
1e-8, which that hour broke."""
_log = logging.getLogger(__name__)
_COEF_TOL = 1e-7
"""Sensitivities below this (pu/MW, loading/MW) are finite-difference noise."""
_MW_TOL = 1e-6
_MONOTONE_TOL_MW = 1e-3
"""Largest fall of the aggregate curve, per MW of demand plus one, taken as LP
round-off (see ``_curve_from_points``). Exact optimal dispatches are monotone
in the price whatever the degeneracy (LP theory), so a fall is the solver's
tolerance: HiGHS keeps rows in pu to 1e-7, which through sensitivities as
small as ~1e-4 pu/MW is up to 1e-3 MW of head demand. Measured: 2.5e-4 MW at
-4.78 $/MWh on the study's 220-bus feeder once the inverters' volt-var
response entered the rows (the study stopped there under the former 1e-4),
1.05e-5 MW on IEEE 13. A larger fall is flattened too, but logged as a
warning naming its size and price: it is the sweep's numerical trouble where
rows are held only by their slacks (penalty 1e9 next to block costs of 1e4:
4.4e-3 MW at 4,367 $/MWh, 0.3 % of the head demand, once in a day of the
study), not a market outcome; ``AggregatedBid.flattened_mw`` says how much."""
FORCED_DUAL = 1e-3
"""Fraction of the violation penalty above which a row's dual is no price
(see ``_clearing``)."""
_KINK_TOL = 0.1
"""Relative difference of one-sided loading slopes that calls for two rows (a
kink: current through zero or a change of the most loaded phase); below it the
difference is curvature over ``delta_mw`` and the central slope is used."""


class LdaError(ValueError):
    """Inputs that do not fit together (unknown DER, mismatched state) or an LP
    that HiGHS could not solve."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Feeder limits the LDA market enforces, and the prices of breaking them.

    ``violation_penalty`` ($/h per pu of voltage, or per unit of loading, beyond a
    limit) must dwarf what any bid gains from a violation: 1e9 covers bids up to
    the price cap through sensitivities down to ~1e-5 pu/MW.
    ``imbalance_penalty`` ($/MWh) prices head net demand away from the award in
    :func:`clear_lda`; above the whole bid price range, so the award is met
    whenever the network allows it.
    """

    vmin_pu: float = 0.95
    vmax_pu: float = 1.05
    max_loading: float = 1.0
    violation_penalty: float = 1.0e9
    imbalance_penalty: float = 1.0e5

    def __post_init__(self) -> None:
        if not self.vmin_pu < self.vmax_pu:
            raise LdaError(f"limits: vmin_pu {self.vmin_pu} must be below vmax_pu {self.vmax_pu}")
        if not self.max_loading > 0.0:
            raise LdaError(f"limits: max_loading must be > 0, got {self.max_loading}")
        if not (self.violation_penalty > 0.0 and self.imbalance_penalty > 0.0):
            raise LdaError("limits: penalties must be > 0")

    @classmethod
    def planning(cls, config: LimitsConfig) -> Limits:
        """The limits a market operator plans within: the LDA's voltage band
        narrowed on each side by its operating margin and the control margin
        of its regulators and switched capacitors (``dso.controls``), and the
        loading limit narrowed by what the same margin does to currents: a
        constant-power element (a DER, a constant-power load) draws
        ``I = S / V``, so a voltage planned at ``vmin + m`` that the controls
        or the forecast leave ``m`` lower raises its current by
        ``m / (vmin + m)`` of itself; the planned loading limit is
        ``max_loading x (1 - m / (vmin + m))``."""
        margin = config.operating_margin_pu + (config.control_margin_pu or 0.0)
        low = config.vmin_pu + margin
        return cls(
            vmin_pu=low,
            vmax_pu=config.vmax_pu - margin,
            max_loading=config.max_loading * (1.0 - margin / low),
        )


class NetworkConstraint(NamedTuple):
    """One network row at the LP solution (linearised values). A named tuple:
    a feeder reports hundreds per clearing (every node past a voltage limit
    no DER can fix), and a tuple is built four times faster than a frozen
    dataclass."""

    kind: ConstraintKind
    element: str
    """Node name (voltage rows) or branch name (thermal rows)."""
    value: float
    """Linearised voltage (pu) or loading at the solution."""
    limit: float
    dual: float
    """``mu_k``: $/h per pu (voltage) or per unit of loading, >= 0."""
    violation: float
    """How far past the limit the solution stays (> 0 only if relaxed)."""


@dataclass(frozen=True, slots=True, eq=False)
class AggregatedBid:
    """The feeder's bid at the T-D interface and how it was built."""

    curve: BidCurve
    fixed_mw: float
    relaxed: tuple[NetworkConstraint, ...]
    """Rows violated whatever the DERs do (left out of the LP, dual 0), and any
    row the LP left violated at some price (worst violation over the prices)."""
    n_rows: int
    """Network rows kept in the LP after screening."""
    n_lp_solves: int
    """LPs solved (prices where the unconstrained dispatch broke a row)."""
    flattened_mw: float = 0.0
    """The largest fall of the swept demand that was flattened to keep the
    curve monotone (see ``_MONOTONE_TOL_MW``)."""


@dataclass(frozen=True, slots=True, eq=False)
class LdaClearing:
    """Dispatch of the DER bids against the award, with DLMPs.

    Per-curve arrays follow the order of the curves given; per-DER arrays follow
    ``der_names`` (the feeder's attach order: ``der_mw`` goes straight to
    ``Feeder.set_der_mw``).
    """

    award_mw: float
    lmp: float
    head_mw: float
    """Linearised head net demand of the dispatch."""
    shortfall_mw: float
    """``award_mw - head_mw``: > 0 when less demand than awarded could be
    scheduled (the rest is imbalance); ~0 when the award is met."""
    dispatch_mw: np.ndarray
    """Net demand dispatched per curve, MW (``base_mw`` + taken blocks)."""
    der_names: tuple[str, ...]
    der_mw: np.ndarray
    """Net demand set-point per DER element, MW."""
    energy_price: float
    """``lambda``, $/MWh at the head."""
    dlmp: np.ndarray
    dlmp_energy: np.ndarray
    dlmp_loss: np.ndarray
    dlmp_congestion: np.ndarray
    binding: tuple[NetworkConstraint, ...]
    """Rows at their limit with a non-zero dual."""
    relaxed: tuple[NetworkConstraint, ...]
    """Rows violated whatever the DERs do (left out, dual 0) and any the LP
    left violated (dual = the penalty: no market price)."""
    welfare: float
    """Sum of block prices times dispatched MW, $/h (bid value of the dispatch)."""
    repriced: bool = False
    """Whether the energy price was put at the LMP because the head
    balance's dual was the imbalance penalty with no imbalance taken
    (:func:`clear_lda`); the price before was LMP + that penalty."""


def fixed_head_mw(state: FeederState) -> float:
    """Head power not due to the DERs at an operating point: substation import
    minus the DER set-points (inflexible load plus all losses)."""
    return float(state.substation_p_mw - np.sum(state.der_mw))


# --------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True, eq=False)
class _Rows:
    """Network rows ``const + coef @ x <= limit`` over the block columns."""

    kind: tuple[ConstraintKind, ...]
    element: tuple[str, ...]
    limit: np.ndarray
    const: np.ndarray
    coef: np.ndarray  # (rows, blocks) in the sign of the row
    grad: np.ndarray  # (rows, DERs): d(row)/dP_i, for the DLMPs
    sign: np.ndarray  # +1 for <= rows of the quantity, -1 for vmin rows


@dataclass(frozen=True, slots=True, eq=False)
class _Problem:
    """Blocks as LP columns and the network rows that can bind."""

    der_names: tuple[str, ...]
    price: np.ndarray  # per block, $/MWh
    size: np.ndarray  # per block, MW
    der_of: np.ndarray  # per block, DER index
    curve_of: np.ndarray  # per block, curve index
    weight: np.ndarray  # per block, dPsub/dP of its DER
    head0: float  # head net demand with no block taken
    der_base: np.ndarray  # per DER, net demand with no block taken
    curve_base: np.ndarray  # per curve, base_mw
    dpsub: np.ndarray  # per DER
    rows: _Rows
    stuck: tuple[NetworkConstraint, ...]  # violated rows no DER can move


def _build(
    curves: Sequence[DerCurve],
    state: FeederState,
    sens: Sensitivities,
    fixed_mw: float,
    limits: Limits,
) -> _Problem:
    _check_inputs(state, sens, fixed_mw)
    der_pos = {name: i for i, name in enumerate(sens.der_names)}
    p0 = np.asarray(state.der_mw, dtype=float)
    try:
        blocks = flatten(curves, der_pos, "DER", f"feeder {state.feeder} ({', '.join(der_pos)})")
    except PlacementError as exc:
        raise LdaError(str(exc)) from None
    der_base = np.where(blocks.has_curve, blocks.base_mw, p0)
    dpsub = np.asarray(sens.dpsub_dp, dtype=float)
    if np.any(dpsub <= 0.0):
        raise LdaError(f"dPsub/dP must be > 0 at every DER, got {dpsub}")
    der_of_a = blocks.place
    offset = der_base - p0  # dP of each DER with no block taken
    head0 = float(fixed_mw + p0.sum() + dpsub @ offset)
    size_a = blocks.mw
    rows, stuck = _screened_rows(state, sens, limits, offset, der_of_a, size_a)
    return _Problem(
        der_names=sens.der_names,
        price=blocks.price,
        size=size_a,
        der_of=der_of_a,
        curve_of=blocks.curve,
        weight=dpsub[der_of_a],
        head0=head0,
        der_base=der_base,
        curve_base=np.array([c.curve.base_mw for c in curves]),
        dpsub=dpsub,
        rows=rows,
        stuck=stuck,
    )


def _check_inputs(state: FeederState, sens: Sensitivities, fixed_mw: float) -> None:
    if state.node_names != sens.node_names or state.branch_names != sens.branch_names:
        raise LdaError("state and sensitivities come from different feeder models")
    if state.der_names != sens.der_names:
        raise LdaError(
            f"state has DERs {state.der_names}, sensitivities {sens.der_names}: "
            "re-linearise after attaching DERs"
        )
    if not math.isfinite(fixed_mw):
        raise LdaError(f"fixed_mw must be finite, got {fixed_mw}")


_KEPT_ROWS = 16
"""Screenings kept (the most recently used): one per LDA whose roles share
a process (several DSOs driven from one process, or the in-process bench),
so that each LDA's clearing finds its interface bid's rows."""
_LAST_ROWS: list[tuple[tuple[object, ...], tuple[_Rows, tuple[NetworkConstraint, ...]]]] = []


def _screened_rows(
    state: FeederState,
    sens: Sensitivities,
    limits: Limits,
    offset: np.ndarray,
    der_of: np.ndarray,
    size: np.ndarray,
) -> tuple[_Rows, tuple[NetworkConstraint, ...]]:
    """:func:`_network_rows`, kept for recent inputs: the interface bid and
    the clearing of its award screen the same rows (same operating point,
    linearisation, limits and blocks). The state and the sensitivities are
    immutable (frozen, read-only arrays): the same objects are the same
    inputs."""
    key = (state, sens, limits, offset.tobytes(), der_of.tobytes(), size.tobytes())
    for i, (known, rows) in enumerate(_LAST_ROWS):
        if known[0] is state and known[1] is sens and known[2] == limits and known[3:] == key[3:]:
            _LAST_ROWS.append(_LAST_ROWS.pop(i))
            return rows
    got = _network_rows(state, sens, limits, offset, der_of, size)
    _LAST_ROWS.append((key, got))
    del _LAST_ROWS[:-_KEPT_ROWS]
    return got


def _network_rows(
    state: FeederState,
    sens: Sensitivities,
    limits: Limits,
    offset: np.ndarray,
    der_of: np.ndarray,
    size: np.ndarray,
) -> tuple[_Rows, tuple[NetworkConstraint, ...]]:
    """All candidate rows, screened. Every row is written
    ``sign * quantity <= sign * limit`` (sign -1 for vmin). A row is kept if some
    DER moves it, some dispatch in the box of block quantities passes its limit
    and some dispatch satisfies it. Rows no dispatch can satisfy are reported
    apart (``stuck``, value and violation at the operating point or the least
    reachable one): penalising them at their limit would only make the market
    chase, at any price, a violation it cannot remove (IEEE 13's XFM-1 moves by
    ~0.01 of its rating per MW at 675); the DSO has to handle them outside the
    market. They stay in the LP with their limit raised to their value at the
    operating point, or to the least reachable value if higher ("no worse than
    now"), so that blocks adding to the violation are priced out like those
    that would break a healthy row (before, they were dropped, and a battery
    could charge into a standing overload: measured on the quickstart's XFM-1,
    up to 0.094 MW more than without a market at a loading of 1.43). Holding
    them at their value with no block taken instead would force every DER
    that relieves the row to its extreme (a battery to full discharge).

    Only thermal rows are held. A voltage row that no dispatch can satisfy
    is out of reach because of the regulators' and capacitors' state (the
    quickstart's 675.2 sits above the planning vmax of 1.0306 pu in 231 of
    288 intervals, day and night, at the regulator's tap): holding it at its
    value would stop PV output from rising with the sun (the operating point
    is the last interval's output), a ratchet measured as 4.8 MWh of PV
    curtailed in the quickstart instead of 1.4. Such rows are left to the
    DSO's controls, as before.

    The screening works per DER, not per block (a feeder has tens of thousands
    of candidate rows and a few blocks per DER): the box's reach of a row is
    ``sum_d max(g_d, 0) S+_d + min(g_d, 0) S-_d`` with ``S+_d``/``S-_d`` the
    DER's positive/negative block sizes summed; only the rows kept get block
    columns."""
    mon = np.flatnonzero(state.monitored)
    n_der = len(sens.der_names)
    s_pos = np.bincount(der_of, weights=np.maximum(size, 0.0), minlength=n_der)
    s_neg = np.bincount(der_of, weights=np.minimum(size, 0.0), minlength=n_der)
    with_blocks = np.bincount(der_of, minlength=n_der) > 0
    dv = _denoise(np.asarray(sens.dv_dp)[mon])
    v0 = np.asarray(state.v_pu)[mon]
    up = _denoise(np.asarray(sens.dloading_dp_up))
    down = _denoise(np.asarray(sens.dloading_dp_down))
    scale = np.maximum(np.abs(up).max(axis=1, initial=0.0), np.abs(down).max(axis=1, initial=0.0))
    kinked = (scale > 0.0) & (np.abs(up - down).max(axis=1, initial=0.0) > _KINK_TOL * scale)
    l0 = np.asarray(state.loading)
    thermal = np.where(kinked[:, None], up, (up + down) / 2.0)
    # Row groups in order: vmax per node, vmin per node, one thermal row per
    # smooth branch (the central slope) and two per kinked one (each one-sided
    # slope). vmin rows are the vmax rows negated: their reach is too.
    v_hi, v_lo, v_move = _reach(dv, offset, s_pos, s_neg, with_blocks)
    t_hi, t_lo, t_move = _reach(thermal, offset, s_pos, s_neg, with_blocks)
    k_hi, k_lo, k_move = _reach(down[kinked], offset, s_pos, s_neg, with_blocks)
    l0k = l0[kinked]
    groups: tuple[
        tuple[ConstraintKind, float, float, np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...
    ] = (
        ("vmax", 1.0, limits.vmax_pu, v0, v0 + v_hi, v0 + v_lo, v_move),
        ("vmin", -1.0, -limits.vmin_pu, -v0, -v0 - v_lo, -v0 - v_hi, v_move),
        ("thermal", 1.0, limits.max_loading, l0, l0 + t_hi, l0 + t_lo, t_move),
        ("thermal", 1.0, limits.max_loading, l0k, l0k + k_hi, l0k + k_lo, k_move),
    )
    nodes = np.asarray(state.node_names, dtype=object)[mon]
    branches = np.asarray(state.branch_names, dtype=object)
    names = (nodes, nodes, branches, branches[kinked])
    grads = (dv, dv, thermal, down[kinked])
    kinds: list[ConstraintKind] = []
    elements: list[str] = []
    picked_grad: list[np.ndarray] = []
    const, lim, sign = [], [], []
    stuck: list[NetworkConstraint] = []
    for (kind, sg, limit, value, reach_hi, reach_lo, movable), element, grad in zip(
        groups, names, grads, strict=True
    ):
        unfixable = reach_lo > limit + 1e-9
        # A thermal row no dispatch can bring within its rating is held at
        # "no worse than now": its value at the operating point (the DERs'
        # last set-points), or the least value the box reaches if that is
        # higher (the set-points left the box): the DERs may relieve it, not
        # add to it. Voltage rows are not held (see the docstring).
        hold = unfixable & (kind == "thermal")
        held = np.where(hold, np.maximum(value, reach_lo), limit)
        keep = np.flatnonzero(movable & (reach_hi > held) & (~unfixable | hold))
        bad = np.flatnonzero(unfixable)
        if len(bad):
            over, least = value[bad] - limit, reach_lo[bad] - limit
            stuck.extend(
                map(  # tuple.__new__: NetworkConstraint._make's work without its Python frame
                    tuple.__new__,
                    repeat(NetworkConstraint),
                    zip(
                        repeat(kind),
                        map(str, element[bad].tolist()),
                        (sg * value[bad]).tolist(),
                        repeat(float(sg * limit)),
                        repeat(0.0),
                        np.where(least > over, least, over).tolist(),  # max(over, least)
                    ),
                )
            )
        kinds.extend([kind] * len(keep))
        elements.extend(element[keep])
        picked_grad.append(sg * grad[keep])
        const.append(value[keep] + sg * (grad[keep] @ offset))
        lim.append(held[keep])
        sign.append(np.full(len(keep), sg))
    grad_kept = np.vstack(picked_grad)
    rows = _Rows(
        kind=tuple(kinds),
        element=tuple(elements),
        limit=np.concatenate(lim),
        const=np.concatenate(const),
        coef=grad_kept[:, der_of],
        grad=grad_kept,
        sign=np.concatenate(sign),
    )
    return rows, tuple(stuck)


def _reach(
    grad: np.ndarray, offset: np.ndarray, s_pos: np.ndarray, s_neg: np.ndarray, live: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``grad`` (rows, DERs): the row's change with no block taken
    (``grad @ offset``) plus its largest and smallest change over the box of
    block quantities, and whether a DER with blocks moves it."""
    pos = np.maximum(grad, 0.0)
    neg = np.minimum(grad, 0.0)
    base = grad @ offset
    hi = base + pos @ s_pos + neg @ s_neg
    lo = base + neg @ s_pos + pos @ s_neg
    moves = (grad != 0.0) @ live  # a boolean product: any(nonzero and live) per row
    return hi, lo, moves


def _denoise(a: np.ndarray) -> np.ndarray:
    return np.where(np.abs(a) > _COEF_TOL, a, 0.0)


_WARM: tuple[tuple[str, str | int], ...] = (
    ("presolve", "off"),
    ("simplex_strategy", 4),
    ("solver", "choose"),
)
"""The LP's usual options: small LPs re-solved from a warm basis after cost
changes, so presolve and scaling only add set-up time (the basis stays primal
feasible); the primal simplex; HiGHS's own choice of solver (the simplex, for
an LP), as after an interior point fallback."""
_FALLBACKS: tuple[tuple[tuple[str, str | int], ...], ...] = (
    (("presolve", "on"), ("simplex_strategy", 1)),
    (("presolve", "off"), ("simplex_strategy", 4)),
    (("presolve", "on"), ("solver", "ipm")),
)
"""Fresh solves tried in turn when the warm one is not optimal (see ``_Lp.solve``)."""


_SPARE = threading.local()
"""HiGHS instances done with, per thread (``_Lp.release``): making one takes
longer than passing it a clearing's LP (0.4-1.3 ms against ~0.2, measured),
and ``passModel`` replaces the model, basis and solution whole (the results
are those of a new instance, bit for bit: ``dsosim bench lda``)."""


def _take_highs() -> highspy.Highs:
    spare: list[highspy.Highs] = _SPARE.__dict__.setdefault("highs", [])
    if spare:
        return spare.pop()
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    for option, setting in _WARM:
        highs.setOptionValue(option, setting)
    return highs


class _Lp:
    """The HiGHS model: block columns, one slack per network row, optionally the
    head balance with two imbalance columns. Costs are for *minimisation*."""

    def __init__(self, prob: _Problem, limits: Limits, balance: tuple[float, float] | None) -> None:
        self.prob = prob
        nb = len(prob.price)
        nr = len(prob.rows.limit)
        self.n_blocks = nb
        self.n_rows = nr
        ncol = nb + nr + (2 if balance else 0)
        nrow = nr + (1 if balance else 0)
        lower = np.zeros(ncol)
        upper = np.concatenate([prob.size, np.full(ncol - nb, highspy.kHighsInf)])
        cost = np.concatenate(
            [
                np.zeros(nb),
                np.full(nr, limits.violation_penalty),
                np.full(ncol - nb - nr, limits.imbalance_penalty),
            ]
        )
        row_lo = np.full(nrow, -highspy.kHighsInf)
        row_hi = np.empty(nrow)
        row_hi[:nr] = prob.rows.limit - prob.rows.const
        dense = np.zeros((nrow, ncol))
        dense[:nr, :nb] = prob.rows.coef
        dense[:nr, nb : nb + nr] = -np.eye(nr)
        if balance is not None:
            row_lo[nr], row_hi[nr] = balance
            dense[nr, :nb] = prob.weight
            dense[nr, nb + nr] = 1.0  # shortfall: demand below the award
            dense[nr, nb + nr + 1] = -1.0  # excess
        start, index, value = _csc(dense)
        self.highs = _take_highs()
        # the arrays as buffers (a HighsLp's vector fields convert element by
        # element: 0.8 ms for the index and value arrays of a 31 x 470 LP)
        self.highs.passModel(
            ncol,
            nrow,
            len(value),
            int(highspy.MatrixFormat.kColwise),
            int(highspy.ObjSense.kMinimize),
            0.0,
            cost,
            lower,
            upper,
            row_lo,
            row_hi,
            start[:-1],
            index,
            value,
            np.zeros(ncol, dtype=np.int32),  # continuous
        )
        self._block_idx = np.arange(nb, dtype=np.int32)
        self.dense = dense
        self.upper = upper
        self.cost_slope = np.zeros(ncol)
        self.cost_slope[:nb] = prob.weight  # d(cost)/d(lambda) of every column

    def release(self) -> None:
        """Done with the model: its HiGHS instance goes back for the next LP."""
        _SPARE.__dict__.setdefault("highs", []).append(self.highs)

    def set_block_costs(self, cost: np.ndarray) -> None:
        if self.n_blocks:
            self.highs.changeColsCost(self.n_blocks, self._block_idx, cost)

    def set_balance(self, lo: float, hi: float, allow_imbalance: bool) -> None:
        nr, nb = self.n_rows, self.n_blocks
        self.highs.changeRowBounds(nr, lo, hi)
        big = highspy.kHighsInf if allow_imbalance else 0.0
        for j in (nb + nr, nb + nr + 1):
            self.highs.changeColBounds(j, 0.0, big)

    def cost_range_below(self) -> float:
        """How far (<= 0) ``lambda`` can fall before the optimal basis of the last
        solve stops being optimal, when every column cost moves by
        ``cost_slope`` per unit of ``lambda``: parametric cost ranging. (For the
        aggregation LP: network rows have upper bounds only, no balance row.)

        With B the basic columns and N the rows not basic, the duals solve
        ``A[N, B]^T y_N = c_B`` (``y = 0`` on basic rows), so they, and the
        reduced costs ``d = c - A^T y``, are affine in ``lambda``. The basis
        stays optimal while every non-basic column keeps its sign (``d >= 0`` at
        its lower bound, ``<= 0`` at its upper) and every tight row the sign of
        its dual (``<= 0``).
        """
        status, basic = self.highs.getBasicVariables()  # type: ignore[attr-defined]
        basic_cols = np.zeros(self.dense.shape[1], dtype=bool)
        basic_cols[basic[basic >= 0]] = True
        tight_rows = np.ones(self.dense.shape[0], dtype=bool)
        tight_rows[-1 - basic[basic < 0]] = False
        m = self.dense[np.ix_(tight_rows, basic_cols)]
        if status != highspy.HighsStatus.kOk or m.shape[0] != m.shape[1]:
            return -_EPS_PRICE  # no usable basis: step by the minimum
        y_slope = np.zeros(self.dense.shape[0])
        try:
            y_slope[tight_rows] = np.linalg.solve(m.T, self.cost_slope[basic_cols])
        except np.linalg.LinAlgError:
            return -_EPS_PRICE
        d_slope = self.cost_slope - self.dense.T @ y_slope
        x, d, y = self._last
        at_upper = ~basic_cols & (x >= self.upper - 1e-9)
        at_lower = ~basic_cols & ~at_upper
        # Lowering lambda by t changes a reduced cost by -t*slope: a column at
        # its lower bound (d >= 0) turns if slope > 0, at its upper if slope < 0;
        # a tight row's dual (<= 0) turns if its slope < 0.
        tol = 1e-12 * (1.0 + np.abs(d_slope).max(initial=0.0))
        turning_col = (at_lower & (d_slope > tol)) | (at_upper & (d_slope < -tol))
        turning_row = tight_rows & (y_slope < -tol)
        room = np.concatenate(
            [d[turning_col] / d_slope[turning_col], y[turning_row] / y_slope[turning_row]]
        )
        if room.size == 0:
            return -math.inf
        return -float(np.maximum(room, 0.0).min())

    def solve(self) -> tuple[np.ndarray, np.ndarray]:
        """Column values and row duals; raises on anything not optimal."""
        self.highs.run()
        status = self.highs.getModelStatus()
        tried = [self.highs.modelStatusToString(status)]
        # The warm primal simplex without presolve can stall on the large penalty
        # costs (status "Unknown"); then solve again from scratch, first with
        # HiGHS's defaults (presolve, dual simplex), then with the primal simplex
        # (the dual one's ratio test can fail on penalties of 1e9 next to block
        # costs of 1e4: "excessive dual values", status "Not Set", measured on
        # the study's 220-bus feeder), last with the interior point method
        # (crossover gives the basis the price sweep reads). Then go back.
        for options in _FALLBACKS:
            if status == highspy.HighsModelStatus.kOptimal:
                break
            self.highs.clearSolver()
            for key, value in options:
                self.highs.setOptionValue(key, value)
            self.highs.run()
            status = self.highs.getModelStatus()
            tried.append(self.highs.modelStatusToString(status))
            for key, value in _WARM:
                self.highs.setOptionValue(key, value)
        if status != highspy.HighsModelStatus.kOptimal:
            raise LdaError(f"LDA LP not solved: {' / '.join(tried)}")
        sol = self.highs.getSolution()
        x = np.asarray(sol.col_value)
        y = np.asarray(sol.row_dual)
        self._last = (x, np.asarray(sol.col_dual), y)
        return x, y


def _csc(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nz_cols, nz_rows = np.nonzero(dense.T)
    start = np.concatenate([[0], np.cumsum(np.count_nonzero(dense, axis=0))])
    return start.astype(np.int32), nz_rows.astype(np.int32), dense[nz_rows, nz_cols]


def _constraints(
    prob: _Problem, x: np.ndarray, slack: np.ndarray, duals: np.ndarray
) -> list[NetworkConstraint]:
    rows = prob.rows
    activity = rows.const + rows.coef @ x
    return [
        NetworkConstraint(
            kind=rows.kind[r],
            element=rows.element[r],
            value=float(rows.sign[r] * activity[r]),
            limit=float(rows.sign[r] * rows.limit[r]),
            dual=float(duals[r]),
            violation=float(max(slack[r], 0.0)),
        )
        for r in range(len(rows.limit))
    ]


# ------------------------------------------------------------- aggregation


def aggregate_interface_bid(
    curves: Sequence[DerCurve],
    state: FeederState,
    sens: Sensitivities,
    fixed_mw: float,
    limits: Limits,
) -> BidCurve:
    """One net-demand curve at the feeder head that the feeder can deliver at
    every price (within the linearisation). See :func:`build_interface_bid`."""
    return build_interface_bid(curves, state, sens, fixed_mw, limits).curve


def build_interface_bid(
    curves: Sequence[DerCurve],
    state: FeederState,
    sens: Sensitivities,
    fixed_mw: float,
    limits: Limits,
) -> AggregatedBid:
    """Parametric LP in the head price ``lambda``.

    For each ``lambda`` the DSO takes the dispatch that maximises
    ``sum(price_b * x_b) - lambda * P_head(x)`` within the network rows; the
    head net demand ``D(lambda)`` of that dispatch is the bid. ``D`` is a
    non-increasing step function: constant while one LP basis stays optimal.
    The sweep starts above the price cap and walks down to the floor:

    * at each price it takes the dispatch that is optimal there, and the range
      of ``lambda`` over which it stays optimal: for the unconstrained dispatch
      (every block whose head price ``price / (dPsub/dP)`` is at least
      ``lambda``), when it breaks no row, that is down to the next block head
      price, no LP needed; otherwise the LP is solved by simplex pivots from
      the basis of the previous price (:mod:`~dsosim.federates.markets.parametric`,
      one or two pivots a step; HiGHS where a pivot fails) and the range
      follows from the basis (parametric cost ranging: reduced costs are
      affine in ``lambda``);
    * the next price is just (``_EPS_PRICE``) below the bottom of that range.

    So every step of the curve is found exactly, including steps between block
    prices where a binding row makes the feeder switch from one DER to another,
    with one evaluation per step (to the rounding of ranging: see
    ``SWEEP_PRICE_BOUND``). Head prices are clipped to the admissible range.
    """
    prob = _build(curves, state, sens, fixed_mw, limits)
    sweep = _Sweep(prob, limits)
    try:
        points, base = _swept(prob, sweep)
    finally:
        if sweep.lp is not None:
            sweep.lp.release()
    curve, flattened = _curve_from_points(points, base)
    return AggregatedBid(
        curve=curve,
        fixed_mw=float(fixed_mw),
        relaxed=tuple(sweep.relaxed.values()) + prob.stuck,
        n_rows=len(prob.rows.limit),
        n_lp_solves=sweep.n_lp,
        flattened_mw=flattened,
    )


def _swept(prob: _Problem, sweep: _Sweep) -> tuple[list[tuple[float, float]], float]:
    """The sweep of :func:`build_interface_bid`: its (price, demand) points
    and the demand above the price cap."""
    lam = PRICE_CAP + _EPS_PRICE
    slope, bottom = sweep.at(lam)
    steps = sweep.steps
    base = prob.head0 + slope
    points: list[tuple[float, float]] = []
    budget = 100 + 20 * (len(prob.price) + len(prob.rows.limit))
    while bottom >= PRICE_FLOOR - _EPS_PRICE / 2:
        budget -= 1
        if budget < 0:
            raise LdaError("interface bid: the price sweep did not terminate")
        lam = min(bottom, lam) - _EPS_PRICE
        below, next_bottom = sweep.at(lam)
        if below != slope:
            price = sweep.snap(min(max(bottom, PRICE_FLOOR), PRICE_CAP))
            points.append((price, prob.head0 + below))
        slope, bottom = below, next_bottom
        k = steps.index.get(lam)
        if k is None or k == 0 or not steps.feasible[k]:
            continue
        # Steps k-1, k-2, ..., m follow one another with no LP: each is at
        # the price just below the candidate that bottoms the one before
        # (bottom = candidate i, so the step's price is snapped to it exactly
        # and is inside the admissible range), taken in one go with the
        # same arithmetic as one by one.
        m = int(steps.run_end[k - 1]) + 1
        if m >= k or k - m > budget:
            continue
        budget -= k - m
        demand = steps.demand_a[m:k][::-1]
        taken = demand != np.concatenate(([slope], demand[:-1]))
        points.extend(
            zip(
                sweep.candidates[m:k][::-1][taken].tolist(),
                (prob.head0 + demand[taken]).tolist(),
                strict=True,
            )
        )
        lam = float(steps.prices[m])
        slope, bottom = steps.demand[m], steps.bottom[m]
    return points, base


def _pivots_from(prob: _Problem, limits: Limits, lp: _Lp) -> ParametricLp | None:
    """The sweep's LP for :class:`ParametricLp` (block columns, then one
    slack per row, then the rows' logicals), at the optimal basis HiGHS
    found for ``lp``; None if HiGHS has none to give."""
    rows = prob.rows
    nb, nr = len(prob.price), len(rows.limit)
    basis = lp.highs.getBasis()
    if not basis.valid:
        return None
    basic_status = highspy.HighsBasisStatus.kBasic
    col = np.array([s == basic_status for s in basis.col_status], dtype=bool)
    row = np.array([s == basic_status for s in basis.row_status], dtype=bool)
    upper = np.concatenate([prob.size, np.full(nr, np.inf)])
    at_upper = np.zeros(nb + 2 * nr, dtype=bool)
    at_upper[: nb + nr] = np.array(
        [s == highspy.HighsBasisStatus.kUpper for s in basis.col_status], dtype=bool
    )
    basic = np.concatenate([np.flatnonzero(col), nb + nr + np.flatnonzero(row)])
    try:
        return ParametricLp(
            np.hstack([rows.coef, -np.eye(nr)]),
            rows.limit - rows.const,
            upper,
            np.concatenate([-prob.price, np.full(nr, limits.violation_penalty)]),
            np.concatenate([prob.weight, np.zeros(nr)]),
            basic,
            at_upper,
        )
    except PivotError:
        return None


class _Sweep:
    """Optimal dispatch at a head price and the price range it is optimal over."""

    def __init__(self, prob: _Problem, limits: Limits) -> None:
        self.prob = prob
        self.limits = limits
        self.lp: _Lp | None = None
        self.pivots: ParametricLp | None = None
        self.n_lp = 0
        self.relaxed: dict[tuple[str, str], NetworkConstraint] = {}
        head_price = np.clip(prob.price / prob.weight, PRICE_FLOOR, PRICE_CAP)
        self.candidates = np.unique(head_price)  # ascending
        self._snapped = {c: c for c in self.candidates.tolist()}
        self._steps: _Steps | None = None

    def snap(self, lam: float) -> float:
        """A breakpoint found by ranging, put exactly on the block head price it
        is (it differs from it by rounding only)."""
        exact = self._snapped.get(lam)
        if exact is not None:
            return exact  # a block head price already (the nearest one: distance 0)
        if len(self.candidates):
            k = int(np.argmin(np.abs(self.candidates - lam)))
            if abs(self.candidates[k] - lam) <= 1e-7 * max(1.0, abs(lam)):
                return float(self.candidates[k])
        return lam

    @property
    def steps(self) -> _Steps:
        """The unconstrained dispatch at every step between block prices."""
        if self._steps is None:
            self._steps = _Steps(self.prob, self.candidates)
        return self._steps

    def at(self, lam: float) -> tuple[float, float]:
        """(head demand minus ``head0``, lowest price where the dispatch is still
        optimal); the dispatch is optimal on ``[bottom, lam]``."""
        if self._steps is None:
            self._steps = _Steps(self.prob, self.candidates)
        step = self._steps.index.get(lam)
        if step is not None and self._steps.feasible[step]:
            return self._steps.demand[step], self._steps.bottom[step]
        prob = self.prob
        cost = lam * prob.weight - prob.price
        if step is None:
            x = np.where(cost < 0.0, prob.size, 0.0)
            rows = prob.rows
            if not np.any(rows.const + rows.coef @ x > rows.limit + 1e-9):
                k = int(np.searchsorted(self.candidates, lam)) - 1  # highest candidate < lam
                bottom = float(self.candidates[k]) if k >= 0 else -math.inf
                return _round_mw(prob.weight @ x), bottom
        return self._solve(lam, cost)

    def _solve(self, lam: float, cost: np.ndarray) -> tuple[float, float]:
        prob, rows = self.prob, self.prob.rows
        nb = len(prob.price)
        self.n_lp += 1
        cols: np.ndarray | None = None
        if self.pivots is not None:
            try:
                cols, duals, _ = self.pivots.solve(lam)
                below = self.pivots.range_below()
            except PivotError:
                cols = None
        if cols is None:
            # HiGHS: the first LP of the sweep (from scratch, as every step's
            # was before the pivots: where rows are held by their slacks the
            # vertex within the solvers' tolerances is HiGHS's, measured 2.4e-8
            # MW of demand away from the pivots' own start), and any step the
            # pivots refuse; the pivots go on from its basis
            if self.lp is None:
                self.lp = _Lp(prob, self.limits, balance=None)
            self.lp.set_block_costs(cost)
            cols, duals = self.lp.solve()
            below = self.lp.cost_range_below()
            self.pivots = _pivots_from(prob, self.limits, self.lp)
        x = cols[:nb]
        slack = cols[nb : nb + len(rows.limit)]
        if np.any(slack > 1e-7):
            self._record_relaxed(x, slack, -duals)
        return _round_mw(prob.weight @ x), lam + below

    def _record_relaxed(self, x: np.ndarray, slack: np.ndarray, mu: np.ndarray) -> None:
        for con in _constraints(self.prob, x, slack, mu):
            key = (con.kind, con.element)
            if con.violation > 1e-7 and (
                key not in self.relaxed or self.relaxed[key].violation < con.violation
            ):
                self.relaxed[key] = con


_ROUNDING = 4.0 * np.finfo(float).eps
"""Per summand, a bound on how far two floating-point sums of the same terms
in different orders (or a BLAS product and a cumulative sum) can be apart,
relative to the sum of the terms' magnitudes: each is within ``n u`` of the
exact sum (``u`` = eps/2, Higham's bound for recursive summation, any order,
with or without fused multiply-add), so they are within ``2 n u``; twice that
for margin."""


class _Steps:
    """The unconstrained dispatch at every price the sweep steps to between
    block head prices, all at once.

    After a step that needs no LP the sweep's next price is ``c - _EPS_PRICE``
    for a block head price ``c`` (the ``bottom`` of that step). At those
    prices the unconstrained dispatch takes every block with
    ``price * w - price_b < 0``: a set that only grows as the price falls (the
    rounded product is monotone in the price, ``w > 0``), so each block enters
    once, and the network rows' activity and the head demand at every price
    are cumulative sums over blocks in their order of entry, instead of one
    matrix product per price.

    The results are those of evaluating each price on its own
    (``_Sweep.at``'s general branch) exactly, not approximately: the sums
    differ from that branch's products by rounding only (bounded by
    ``_ROUNDING``), and where the bound leaves a row's comparison with its
    limit, or the rounding of the demand to 1e-9 MW, undecided, that price
    is evaluated as the general branch does.
    """

    __slots__ = (
        "bottom",
        "demand",
        "demand_a",
        "feasible",
        "index",
        "n_exact",
        "prices",
        "run_end",
    )

    def __init__(self, prob: _Problem, candidates: np.ndarray) -> None:
        prices = candidates - _EPS_PRICE  # ascending, as the candidates
        n = len(prices)
        entry = _entries(prices, prob.weight, prob.price)  # taken at step k iff k < entry
        order = np.argsort(-entry, kind="stable")
        # blocks taken at step k: the first n_taken[k] in entry order
        n_taken = len(entry) - np.searchsorted(np.sort(entry), np.arange(n), side="right")
        last = n_taken - 1
        some = n_taken > 0

        def cumulative(terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Sum and sum of magnitudes of the first n_taken terms (last axis)."""
            total = np.cumsum(terms, axis=-1)[..., last]
            magnitude = np.cumsum(np.abs(terms), axis=-1)[..., last]
            return np.where(some, total, 0.0), np.where(some, magnitude, 0.0)

        bound_scale = _ROUNDING * (len(order) + 2)
        rows = prob.rows
        feasible = np.ones(n, dtype=bool)
        undecided = np.zeros(n, dtype=bool)
        if len(rows.limit):
            act, mag = cumulative(rows.coef[:, order] * prob.size[order])
            act = rows.const[:, None] + act
            bound = bound_scale * (mag + np.abs(rows.const)[:, None])
            threshold = (rows.limit + 1e-9)[:, None]
            broken = np.any(act - bound > threshold, axis=0)
            safe = np.all(act + bound <= threshold, axis=0)
            feasible = safe
            undecided = ~broken & ~safe
        head, mag = cumulative(prob.weight[order] * prob.size[order])
        scaled = head * 1e9
        # distance to the nearest rounding boundary (half a 1e-9 MW unit)
        tie = np.abs(scaled - np.floor(scaled) - 0.5)
        undecided |= feasible & (
            (tie <= 2e9 * bound_scale * mag + 4.0 * _ROUNDING * np.abs(scaled))
            | (head == 0.0)  # the sign of a zero depends on the order of the sum
            | (np.abs(scaled) >= 2.0**52)  # beyond exact integers (4.5e6 MW)
        )
        below = np.searchsorted(candidates, prices) - 1
        self.index: dict[float, int] = dict(  # price -> step
            zip(prices.tolist(), range(n), strict=True)
        )
        # whether the unconstrained dispatch breaks no row (else an LP decides)
        self.feasible: list[bool] = feasible.tolist()
        # head demand minus head0 (as _round_mw), where feasible
        # (away from a tie, this is round(head, 9): see _round_mw)
        self.demand: list[float] = (np.rint(scaled) / 1e9).tolist()
        # the highest block head price below the step's price (-inf if none)
        self.bottom: list[float] = np.where(below >= 0, candidates[below], -math.inf).tolist()
        exact = np.flatnonzero(undecided).tolist()
        self.n_exact = len(exact)  # steps evaluated one by one
        for k in exact:
            x = np.where(entry > k, prob.size, 0.0)
            self.feasible[k] = not np.any(rows.const + rows.coef @ x > rows.limit + 1e-9)
            self.demand[k] = _round_mw(prob.weight @ x)
        # Runs the sweep can take at once (``_swept``): step i follows step
        # i + 1 when step i + 1's bottom is candidate i (and i is the index its
        # price finds); ``chained[i]``: that holds and step i needs no LP.
        # ``run_end[i]``: the highest j <= i where it fails (-1 if none).
        self.prices = prices
        self.demand_a = np.array(self.demand)
        chained = np.array(self.feasible, dtype=bool)
        chained[:-1] &= (below[1:] == np.arange(n - 1)) & (prices[:-1] != prices[1:])
        self.run_end = np.maximum.accumulate(np.where(chained, -1, np.arange(n)))


def _entries(prices: np.ndarray, weight: np.ndarray, price: np.ndarray) -> np.ndarray:
    """Per block, at how many of the ascending ``prices`` the unconstrained
    dispatch takes it (``p * weight - price < 0``, evaluated exactly as
    ``_Sweep.at`` does): since that holds for a leading run of prices, the
    count is where the run ends, found from the block's head price and
    corrected by evaluating the condition on either side of it (rounding can
    put the head price a position off)."""
    n = len(prices)
    entry = np.searchsorted(prices, price / weight)
    if n == 0:
        return entry
    for _ in range(n + 1):
        taken_before = prices[np.maximum(entry - 1, 0)] * weight - price < 0.0
        taken_at = prices[np.minimum(entry, n - 1)] * weight - price < 0.0
        early = (entry > 0) & ~taken_before  # the run ends before entry
        late = (entry < n) & taken_at  # ... or after it
        if not (early.any() or late.any()):
            return entry
        entry = entry - early + late
    raise AssertionError("block entry prices did not settle")  # the condition is monotone


def _round_mw(mw: float | np.ndarray) -> float:
    """Head demand to 1e-9 MW: LP round-off must not make two evaluations of the
    same dispatch look like a step."""
    return round(float(mw), 9)


def _curve_from_points(points: list[tuple[float, float]], base_mw: float) -> tuple[BidCurve, float]:
    """Sort by price (high to low), keep the demand from falling as the price
    falls (a fall is the LP's tolerance: flattened, and logged beyond
    ``_MONOTONE_TOL_MW``), drop noise steps and build the curve. Returns the
    curve and the largest fall flattened, MW."""
    if points:
        pq = np.array(points)
        rise = pq[:, 1] > np.concatenate(([base_mw], pq[:-1, 1])) + _MW_TOL
        if np.all(pq[1:, 0] <= pq[:-1, 0]) and np.all(rise):
            # in price order already (the stable sort below keeps it), every
            # point above the last by more than _MW_TOL: the loop below would
            # keep them all and flatten nothing
            curve = BidCurve.from_points(points, base_mw)
            assert all(a[0] >= b[0] for a, b in zip(curve.blocks, curve.blocks[1:]))
            return curve, 0.0
    ordered = sorted(points, key=lambda pq: -pq[0])
    cleaned: list[tuple[float, float]] = []
    level = base_mw
    flattened = 0.0
    for price, q in ordered:
        fall = level - q
        if fall > flattened:
            flattened = fall
            if fall > _MONOTONE_TOL_MW * (1.0 + abs(level)):
                _log.warning(
                    "interface bid: swept demand falls by %.3g MW (from %.6f) at %.2f $/MWh: "
                    "flattened (LP tolerance where rows are held by their slacks)",
                    fall,
                    level,
                    price,
                )
        if q > level + _MW_TOL:
            level = q
            cleaned.append((price, q))
    curve = BidCurve.from_points(cleaned, base_mw)
    assert all(a[0] >= b[0] for a, b in zip(curve.blocks, curve.blocks[1:]))
    return curve, flattened


# --------------------------------------------------------------- clearing


def clear_lda(
    award_mw: float,
    lmp: float,
    curves: Sequence[DerCurve],
    state: FeederState,
    sens: Sensitivities,
    fixed_mw: float,
    limits: Limits,
    *,
    price_taker: bool = False,
) -> LdaClearing:
    """Dispatch the blocks so the head net demand meets the ISO's award, at the
    highest bid value the network rows allow, and price every DER location.
    ``price_taker``: stop after the first LP (the dispatch the feeder's bids
    want at the LMP, ``lambda = lmp``) whatever its head demand.

    Up to three LPs, warm-started:

    1. *price taker*: maximise ``sum(price_b x_b) - lmp * P_head(x)`` with no
       head balance. If its head demand is the award (the award came from this
       feeder's bid at this LMP and no local block is split), that is the
       dispatch and ``lambda = lmp``. Solving it first keeps ``lambda`` at the
       T-D price instead of an arbitrary point between two block prices, where
       the dual of an equality balance would be degenerate.
    2. *award*: the same with ``P_head(x) = award``; imbalance columns priced at
       ``imbalance_penalty`` keep it feasible. ``lambda = lmp - dual`` is the
       head price of the marginal local block.
    3. if the network cannot deliver the award (``shortfall_mw`` reports the
       gap), the dispatch is the deliverable one nearest the award, priced
       without the imbalance penalty: the price taker's if it already reaches
       that point (``lambda = lmp``), else the LP with the balance moved to the
       deliverable head demand. That point is on a network limit, so the split
       of its marginal price between ``lambda`` and the ``mu_k`` is then not
       unique; HiGHS returns one vertex of it.

    The prices are those of the solution, less the duals that are no price
    (``_forced``: rows the LP broke, rows held at a dual near the violation
    penalty or moving some DER's price by more than the price cap). The
    energy price is the LMP where the head balance's dual is the imbalance
    penalty with no imbalance taken (see ``_clearing``).
    """
    if not (math.isfinite(award_mw) and math.isfinite(lmp)):
        raise LdaError(f"award {award_mw} MW and LMP {lmp} $/MWh must be finite")
    prob = _build(curves, state, sens, fixed_mw, limits)
    target = award_mw - prob.head0
    tol = _MW_TOL * (1.0 + abs(award_mw))
    separable = _separable_taker(prob, lmp, limits)
    if separable is not None:
        taker_mw = float(prob.weight @ separable[0][: len(prob.price)])
        if price_taker or abs(taker_mw - target) <= tol:
            return _clearing(prob, award_mw, lmp, *separable, len(prob.price), 0, limits)
    lp = _Lp(prob, limits, balance=(-highspy.kHighsInf, highspy.kHighsInf))
    try:
        cols, duals = _clear_lp(lp, lmp, target, tol, price_taker)
    finally:
        lp.release()
    nb, nr = len(prob.price), len(prob.rows.limit)
    return _clearing(prob, award_mw, lmp, cols, duals, nb, nr, limits)


def _forced(
    prob: _Problem,
    cols: np.ndarray,
    duals: np.ndarray,
    nb: int,
    nr: int,
    limits: Limits,
) -> np.ndarray:
    """Rows whose dual is no market price: one the LP broke (slack > 0: its
    dual is the violation penalty), one whose dual comes near the penalty (a
    degenerate vertex, or two rows pulling against each other: measured duals
    of ~1e8 and DLMPs of +-3e7 $/MWh), and one whose dual alone moves some
    DER's price by more than the price cap (no admissible bid is worth it)."""
    if not nr:
        return np.zeros(0, dtype=bool)
    slack = cols[nb : nb + nr]
    mu = -duals[:nr]
    reach = mu * np.abs(prob.rows.grad).max(axis=1, initial=0.0)
    return (slack > 1e-7) | (mu >= FORCED_DUAL * limits.violation_penalty) | (reach > PRICE_CAP)


def _clear_lp(
    lp: _Lp, lmp: float, target: float, tol: float, price_taker: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The LPs of :func:`clear_lda` (see there) on the model ``lp``: the
    columns and duals of the one that decides."""
    prob = lp.prob
    lp.set_balance(-highspy.kHighsInf, highspy.kHighsInf, allow_imbalance=False)
    lp.set_block_costs(lmp * prob.weight - prob.price)
    nb, nr = lp.n_blocks, lp.n_rows
    taker = lp.solve()
    taker_mw = float(prob.weight @ taker[0][:nb])
    if price_taker or abs(taker_mw - target) <= tol:
        return taker
    lp.set_balance(target, target, allow_imbalance=True)
    cols, duals = lp.solve()
    if abs(cols[nb + nr] - cols[nb + nr + 1]) <= tol:
        return cols, duals
    deliverable = float(prob.weight @ cols[:nb])
    if abs(taker_mw - deliverable) <= tol:
        # The price taker already goes as far toward the award as the network
        # allows: its dispatch is the closest one, priced at the LMP.
        return taker
    lp.set_balance(deliverable, deliverable, allow_imbalance=False)
    return lp.solve()


_SEPARABLE_MARGIN = 1e-5
"""$/MWh: a block cost this close to zero leaves the price taker's LP to
HiGHS. Its dual feasibility tolerance is 1e-7: a block whose cost is
negative by less may stay at 0 (measured: HiGHS and the separable optimum
differ in about half of the cases with a cost in [1e-8, 1e-7), in none of
739 in [1e-7, 1e-6), with block prices up to 9,999 $/MWh beside them)."""


def _separable_taker(
    prob: _Problem, lmp: float, limits: Limits
) -> tuple[np.ndarray, np.ndarray] | None:
    """The price taker's LP solution (columns and row duals, as ``_Lp.solve``
    gives them) where it needs no solver: with no network row left after
    screening, that LP is separable (each block alone against its cost
    ``lmp * w - price``; the head balance row is free and the imbalance
    columns are fixed at 0), and where no cost is within ``_SEPARABLE_MARGIN``
    of zero its optimum is unique: every block at its upper bound if its cost
    is negative, else at 0, the free row's dual 0. HiGHS returns exactly that
    (a non-basic column sits exactly on its bound; its scale factors are
    powers of two), so the clearing is the one it would give, bit for bit
    (tested against the reference, on random cases and on every clearing of
    a study run). None where that does not hold: network rows, a cost near
    zero, or an LMP of zero (the sign of the zero dual would reach the
    energy price)."""
    if len(prob.rows.limit) or lmp == 0.0:
        return None
    cost = lmp * prob.weight - prob.price
    if np.any(np.abs(cost) <= _SEPARABLE_MARGIN):
        return None
    cols = np.zeros(len(cost) + 2)
    cols[: len(cost)] = np.where(cost < 0.0, prob.size, 0.0)
    return cols, np.zeros(1)


def _clearing(
    prob: _Problem,
    award_mw: float,
    lmp: float,
    cols: np.ndarray,
    duals: np.ndarray,
    nb: int,
    nr: int,
    limits: Limits,
) -> LdaClearing:
    x = cols[:nb]
    slack = cols[nb : nb + nr]
    # HiGHS duals are d(min cost)/d(row bound): <= 0 on a binding <= row, so
    # mu = -dual. For a partly taken block (zero reduced cost)
    #   lmp*w - price - w*dual_balance - coef.dual_rows = 0
    #   => price = w*(lmp - dual_balance) + coef.mu, so lambda = lmp - dual_balance.
    mu = -duals[:nr]
    energy = lmp - float(duals[nr])
    head = prob.head0 + float(prob.weight @ x)
    der_mw = prob.der_base + np.bincount(prob.der_of, weights=x, minlength=len(prob.der_base))
    dispatch = prob.curve_base + np.bincount(
        prob.curve_of, weights=x, minlength=len(prob.curve_base)
    )
    constraints = _constraints(prob, x, slack, mu)
    # A row the LP had to break (slack > 0) is priced at the violation penalty:
    # that dual says "any price" and is no market signal (it made DLMPs of
    # ~1e9 $/MWh where DERs could only partly relieve an overload). Such rows
    # are reported as relaxed, like those no dispatch can satisfy, and leave
    # the DLMPs, as does the imbalance penalty when the award cannot be met.
    # The same holds for rows held at their limit whose duals come near the
    # penalty (a degenerate vertex, or two rows pulling against each other)
    # and rows whose dual alone moves some DER's price beyond the price cap
    # (``_forced``).
    forced = _forced(prob, cols, duals, nb, nr, limits)
    priced = np.where(forced, 0.0, mu)
    congestion = prob.rows.grad.T @ priced if nr else np.zeros(len(prob.der_names))
    repriced = False
    if len(cols) > nb + nr and float(np.abs(cols[nb + nr :]).max()) > 1e-7:
        energy = lmp
    elif len(duals) > nr and abs(float(duals[nr])) >= (1.0 - 1e-6) * limits.imbalance_penalty:
        # The head balance's dual at the imbalance penalty with no imbalance
        # taken: the award is the only head demand the network leaves the
        # bids (the study's 07:30 in LDA 1: a vmax row that only every DER
        # at its extreme meets; the award is that extreme's head demand), or
        # the edge of what they can deliver, and the imbalance column is as
        # good as any block at zero. No block is marginal there; the dual
        # says "any price", and the head price is the LMP, as when the award
        # cannot be met (before: LMP + 100,000 $/MWh, charged to every DER).
        energy, repriced = lmp, True
    scale = 1e-9 * (1.0 + np.abs(prob.price).max(initial=0.0))  # max is exact: as a loop
    return LdaClearing(
        award_mw=float(award_mw),
        lmp=float(lmp),
        head_mw=head,
        shortfall_mw=float(award_mw - head),
        dispatch_mw=_frozen(dispatch),
        der_names=prob.der_names,
        der_mw=_frozen(der_mw),
        energy_price=energy,
        dlmp=_frozen(energy * prob.dpsub + congestion),
        dlmp_energy=_frozen(np.full(len(prob.der_names), energy)),
        dlmp_loss=_frozen(energy * (prob.dpsub - 1.0)),
        dlmp_congestion=_frozen(congestion),
        binding=tuple(
            c for c, f in zip(constraints, forced, strict=True) if c.dual > scale and not f
        ),
        relaxed=tuple(c for c, f in zip(constraints, forced, strict=True) if f) + prob.stuck,
        welfare=float(prob.price @ x),
        repriced=repriced,
    )


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    a.flags.writeable = False
    return a
