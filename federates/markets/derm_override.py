"""The utility as DERM under an ISO-run DER market (model 2), in plain Python.

The ISO clears DER bids without seeing the feeder. The utility turns each
award into a set-point, and overrides awards where the feeder would leave its
limits: it finds the set-points closest to the awards (least total absolute
deviation, MW) that keep the linearised voltages in band and branch loadings
within rating. The utility does not see the bids (they went to the ISO), so
an override may only curtail an award toward zero (less injection or less
consumption), which every DER can deliver. Limits the DERs
cannot fix are left soft (a slack at a high penalty) so the LP always solves.
The difference between set-point and award is the override; it shows up as
the LDA's deviation from the ISO schedule and is settled as imbalance.

The utility owns the feeder, so, as its DMO does in models 3 and 5, it
re-linearises at the set-points it decided (``relinearise``) and overrides
again there, until no set-point moves more than ``RELINEARISE_TOL_MW``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import highspy
import numpy as np

from dsosim.federates.common.scale import TdScale
from dsosim.federates.dso.feeder import FeederState, Sensitivities
from dsosim.federates.markets.lda_market import Limits
from dsosim.federates.markets.nodal_dmo import RELINEARISE_MAX, RELINEARISE_TOL_MW, Relinearise

SLACK_PENALTY = 1.0e6
"""Cost per pu (or fraction of rating) of a limit left violated, in MW of
deviation: far above any deviation, so the limits win whenever they can."""


def override(
    awards_mw: np.ndarray,
    lo_mw: np.ndarray,
    hi_mw: np.ndarray,
    der_index: Sequence[int],
    state: FeederState,
    sens: Sensitivities,
    limits: Limits,
) -> np.ndarray:
    """Set-points (MW, net demand) closest to the awards within the feeder limits.

    ``der_index[j]`` is the position, in the sensitivities, of the DER whose
    award is ``awards_mw[j]``; ``lo_mw``/``hi_mw`` bound each set-point.
    DERs not listed stay at their operating point.
    """
    n = len(awards_mw)
    if n == 0:
        return np.zeros(0)
    p0 = np.asarray(state.der_mw, dtype=float)
    mon = np.asarray(state.monitored, dtype=bool)
    v0 = np.asarray(state.v_pu, dtype=float)[mon]
    dv = np.asarray(sens.dv_dp, dtype=float)[mon][:, der_index]
    l0 = np.asarray(state.loading, dtype=float)
    dl = np.maximum(np.asarray(sens.dloading_dp_up), np.asarray(sens.dloading_dp_down))[
        :, der_index
    ]
    base = p0[list(der_index)]
    # rows: A (P - P0) <= b  for vmax, -vmin, loading
    a = np.vstack([dv, -dv, dl])
    b = np.concatenate([limits.vmax_pu - v0, v0 - limits.vmin_pu, limits.max_loading - l0])
    keep = np.any(np.abs(a) > 1e-9, axis=1)
    a, b = a[keep], b[keep]
    m = len(b)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    inf = highspy.kHighsInf
    # columns: P (n), d+ (n), d- (n), slack (m)
    cost = np.concatenate([np.zeros(n), np.ones(n), np.ones(n), np.full(m, SLACK_PENALTY)])
    lower = np.concatenate([lo_mw, np.zeros(2 * n + m)])
    upper = np.concatenate([hi_mw, np.full(2 * n + m, inf)])
    h.addVars(3 * n + m, lower, upper)
    h.changeColsCost(3 * n + m, np.arange(3 * n + m, dtype=np.int32), cost)
    # P - d+ + d- = award
    for j in range(n):
        h.addRow(
            float(awards_mw[j]),
            float(awards_mw[j]),
            3,
            np.array([j, n + j, 2 * n + j], dtype=np.int32),
            np.array([1.0, -1.0, 1.0]),
        )
    # A P - slack <= b + A P0
    for r in range(m):
        cols = np.concatenate([np.arange(n), [3 * n + r]]).astype(np.int32)
        vals = np.concatenate([a[r], [-1.0]])
        h.addRow(-inf, float(b[r] + a[r] @ base), len(cols), cols, vals)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return np.clip(awards_mw, lo_mw, hi_mw)
    return np.asarray(h.getSolution().col_value[:n], dtype=float)


def override_awards(
    awards_mw: Mapping[str, Mapping[str, float]],
    *,
    scale: TdScale,
    der_index: Mapping[tuple[str, str], int],
    state: FeederState,
    sens: Sensitivities,
    limits: Limits,
) -> dict[str, dict[str, float]]:
    """Set-points per aggregator and location (MW on the modelled feeder) for
    the ISO's awards (MW at the T-D interface, i.e. times ``scale``)."""
    return relinearised_overrides(
        awards_mw, scale=scale, der_index=der_index, state=state, sens=sens, limits=limits
    ).setpoints


@dataclass(frozen=True, slots=True)
class Overrides:
    setpoints: dict[str, dict[str, float]]
    """MW per aggregator and location (modelled feeder)."""
    sens: Sensitivities
    """The linearisation the set-points were decided on."""
    iterations: int
    """Re-linearisations at the set-points (0: none asked for)."""
    change_mw: float
    """Largest set-point move at the last re-linearisation (NaN: none)."""
    converged: bool


def relinearised_overrides(
    awards_mw: Mapping[str, Mapping[str, float]],
    *,
    scale: TdScale,
    der_index: Mapping[tuple[str, str], int],
    state: FeederState,
    sens: Sensitivities,
    limits: Limits,
    relinearise: Relinearise | None = None,
) -> Overrides:
    """:func:`override_awards`, then, with ``relinearise`` (the feeder
    owner's power flow and linearisation at a dispatch, every DER in the
    feeder's order), again on the feeder linearised at the set-points, until
    none moves more than ``RELINEARISE_TOL_MW`` (at most ``RELINEARISE_MAX``
    times). DERs without an award stay at their operating point."""
    keys = [(agg, bus) for agg in sorted(awards_mw) for bus in sorted(awards_mw[agg])]
    target = np.array([scale.to_feeder(awards_mw[a][b]) for a, b in keys])
    index = [der_index[key] for key in keys]
    lo, hi = np.minimum(target, 0.0), np.maximum(target, 0.0)
    setpoints = override(target, lo, hi, index, state, sens, limits)
    iterations, change = 0, math.nan
    while relinearise is not None and iterations < RELINEARISE_MAX:
        dispatch = np.array(state.der_mw, dtype=float)
        dispatch[index] = setpoints
        point = relinearise(dispatch)
        if point is None:
            break  # the power flow diverged: keep the last set-points
        state, sens = point
        again = override(target, lo, hi, index, state, sens, limits)
        change = float(np.max(np.abs(again - setpoints), initial=0.0))
        setpoints, iterations = again, iterations + 1
        if change <= RELINEARISE_TOL_MW:
            break
    out: dict[str, dict[str, float]] = {}
    for (agg, bus), mw in zip(keys, setpoints, strict=True):
        out.setdefault(agg, {})[bus] = float(mw)
    converged = iterations > 0 and change <= RELINEARISE_TOL_MW
    return Overrides(out, sens, iterations, change, converged)
