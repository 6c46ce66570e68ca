"""What a DC-OPF clear returns: dispatch, prices (LMPs with energy and
congestion components), flows; and the checks that read a result
(congestion rent, which LMPs are unique)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TypeAlias

import numpy as np

from dsosim.federates.common.curves import PlacedCurve
from dsosim.federates.iso.case import TransmissionCase

BusCurve: TypeAlias = PlacedCurve[int]
"""A bid curve at a transmission bus: ``at`` is the case bus number (one of
``TransmissionCase.bus_ids``), ``owner`` who bids (reported, never priced)."""


@dataclass(frozen=True, eq=False)
class OpfResult:
    """The outcome of one market clearing; arrays are read-only.

    Bus arrays are aligned with ``case.bus_ids``, generator arrays with the
    case's generators (0 MW when out of service), branch arrays with its
    branches (0 MW when out of service).

    Attributes
    ----------
    status
        ``"optimal"``; ``"load_shed"`` if some load could not be served;
        ``"over_supply"`` if some injection could not be absorbed;
        ``"approximate"`` if HiGHS's QP solver did not converge and the
        result is that of the LP with quadratic costs linearised at the
        previous dispatch (see ``message``); ``"failed"`` if the solver gave
        no solution (arrays are then NaN).
    lmp, lmp_energy, lmp_congestion
        Locational marginal price and its energy (reference-bus) and
        congestion components, $/MWh (see the module docstring).
    gen_mw, branch_flow_mw
        Dispatch and branch flows (MW, positive from ``F_BUS`` to ``T_BUS``).
    binding
        Indices of branches loaded to their rating (in either direction).
    branch_shadow_price
        What one more MW of a branch's rating would save, $/MWh (the
        magnitude of the dual of its flow limit; 0 when not binding or
        unlimited).
    total_cost
        Generator cost, $/h, constant terms included, as MATPOWER and
        pandapower count it (over in-service generators).
    objective
        The optimised quantity: generator cost minus the value of cleared bid
        blocks plus the cost of shed and spill, $/h.
    message
        Empty, or why the result is approximate or failed.
    curve_mw
        Net demand cleared for each input curve (``base_mw`` + cleared
        blocks), same order as the curves. Blocks of several curves at the
        same bus and price share a marginal clearing pro rata.
    shed_mw, spill_mw
        Load shed and surplus spilled at each bus, MW.
    withdrawal_mw
        Net withdrawal at each bus by everything but generators: fixed load
        + shunt + cleared curves - shed + spill. With ``gen_mw`` it settles
        the market: ``sum(lmp * withdrawal_mw) - sum(lmp[gen] * gen_mw) ==
        congestion_rent(result)``.
    price_setter
        True at buses where a generator, a bid block group or a slack is
        strictly inside its limits, so that the LMP there equals its
        marginal price (see :func:`lmp_is_unique`).
    solve_seconds
        Wall time of the HiGHS run(s).
    """

    case: TransmissionCase = field(repr=False)
    status: str
    lmp: np.ndarray
    lmp_energy: np.ndarray
    lmp_congestion: np.ndarray
    gen_mw: np.ndarray
    branch_flow_mw: np.ndarray
    binding: np.ndarray
    branch_shadow_price: np.ndarray
    total_cost: float
    objective: float
    curve_mw: np.ndarray
    shed_mw: np.ndarray
    spill_mw: np.ndarray
    withdrawal_mw: np.ndarray
    price_setter: np.ndarray
    solve_seconds: float
    message: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value.setflags(write=False)


def congestion_rent(result: OpfResult) -> float:
    """Merchandising surplus of the network, $/h: ``sum_l flow_l *
    (lmp[to_l] - lmp[from_l])``.

    It is what the ISO keeps when it charges buyers and pays sellers at
    their LMPs, so ``sum(lmp * withdrawal_mw) - sum(lmp[gen_bus] * gen_mw)
    - congestion_rent(result) == 0`` (the balance rows guarantee it).
    """
    case = result.case
    on = case.branch_status
    flow = result.branch_flow_mw[on]
    diff = result.lmp[case.branch_to_idx[on]] - result.lmp[case.branch_from_idx[on]]
    return float(np.sum(flow * diff))


def lmp_is_unique(result: OpfResult, *, rcond: float = 1e-10) -> np.ndarray:
    """Which LMPs are fixed by the optimality conditions (True) and which are
    not (False: any value in some interval is an equally valid price).

    The LMPs are the duals ``lambda`` of the balance rows. Stationarity in the
    bus angles reads, at every bus, ``sum over unconstrained branches of
    b * (lambda_k - lambda_other)`` plus a free term per binding branch (its
    shadow price) ``= 0``: Kirchhoff's current law in a network where
    unconstrained branches are conductances and binding branches carry any
    current. A price setter (``result.price_setter``) fixes ``lambda`` at its
    bus. A bus's LMP is unique when every solution of this homogeneous system
    vanishes there; e.g. a bus with no load and no generation between two
    binding branches is not (the case118 bus 9 between lines 8-9 and 9-10).
    Generators at a limit only bound the price, so they are not counted:
    the answer errs on the side of "not unique".

    Dense linear algebra (an SVD of a matrix of the size of the network):
    milliseconds for case118, about a minute for case2869pegase.
    """
    from scipy.linalg import null_space

    case = result.case
    nb = case.n_bus
    on = case.branch_status
    binding = np.zeros(case.n_branch, dtype=bool)
    binding[result.binding] = True
    b = np.where(on, 1.0 / (case.branch_x * case.branch_tap), 0.0)
    f, t = case.branch_from_idx, case.branch_to_idx
    free = np.flatnonzero(on & ~binding)
    bound = np.flatnonzero(on & binding)
    scale = float(np.median(np.abs(b[on]))) if on.any() else 1.0
    pins = np.flatnonzero(result.price_setter)
    m = np.zeros((nb + len(pins), nb + len(bound)))
    np.add.at(m, (f[free], f[free]), b[free])
    np.add.at(m, (f[free], t[free]), -b[free])
    np.add.at(m, (t[free], t[free]), b[free])
    np.add.at(m, (t[free], f[free]), -b[free])
    m[f[bound], nb + np.arange(len(bound))] += scale
    m[t[bound], nb + np.arange(len(bound))] -= scale
    m[nb + np.arange(len(pins)), pins] = scale
    basis = null_space(m, rcond=rcond)
    return ~np.any(np.abs(basis[:nb]) > 1e-8, axis=1)
