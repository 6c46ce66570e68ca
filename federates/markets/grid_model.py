"""The feeder limits an independent market operator needs, as a message.

In models 4 and 6 the market inside the LDA is run by an operator that does
not own the feeder model. Each interval the utility sends it the feeder
linearised at the forecast operating point (monitored nodes only): enough to
build the same feeder-constrained bids and DLMPs as the utility would, and
nothing about the network's topology or impedances.
"""

from __future__ import annotations

import numpy as np

from dsosim.federates.common.messages import GridModel
from dsosim.federates.dso.feeder import FeederState, Sensitivities


def to_message(
    sender: str,
    interval: int,
    state: FeederState,
    sens: Sensitivities,
    day_ahead_period: int | None = None,
) -> GridModel:
    m = state.monitored
    nodes = tuple(n for n, keep in zip(state.node_names, m, strict=True) if keep)
    return GridModel(
        sender,
        interval,
        tuple(sens.der_names),
        nodes,
        tuple(state.branch_names),
        tuple(float(v) for v in state.v_pu[m]),
        tuple(float(x) for x in state.loading),
        tuple(float(x) for x in state.der_mw),
        float(state.substation_p_mw),
        tuple(tuple(float(x) for x in row) for row in sens.dv_dp[m]),
        tuple(tuple(float(x) for x in row) for row in sens.dloading_dp_up),
        tuple(tuple(float(x) for x in row) for row in sens.dloading_dp_down),
        tuple(float(x) for x in sens.dpsub_dp),
        day_ahead_period,
    )


def from_message(
    model: GridModel, *, vmin: float, vmax: float
) -> tuple[FeederState, Sensitivities]:
    """Rebuild the state and sensitivities the LDA market role works on."""
    n_node, n_branch, n_der = len(model.node_names), len(model.branch_names), len(model.der_names)
    v = np.asarray(model.v_pu, dtype=float)
    loading = np.asarray(model.loading, dtype=float)
    up = np.asarray(model.dloading_up, dtype=float).reshape(n_branch, n_der)
    down = np.asarray(model.dloading_down, dtype=float).reshape(n_branch, n_der)
    dv = np.asarray(model.dv_dp, dtype=float).reshape(n_node, n_der)
    state = FeederState(
        feeder=model.sender,
        converged=True,
        control_iterations_exceeded=False,
        message="",
        node_names=model.node_names,
        v_pu=v,
        monitored=np.ones(n_node, dtype=bool),
        branch_names=model.branch_names,
        loading=loading,
        losses_mw=float("nan"),
        substation_p_mw=model.substation_p_mw,
        substation_q_mvar=float("nan"),
        load_mw=float("nan"),
        der_names=model.der_names,
        der_mw=np.asarray(model.der_mw, dtype=float),
        vmin=vmin,
        vmax=vmax,
        n_voltage_violations=int(np.count_nonzero((v < vmin) | (v > vmax))),
        n_thermal_violations=int(np.count_nonzero(loading > 1.0)),
    )
    sens = Sensitivities(
        der_names=model.der_names,
        node_names=model.node_names,
        branch_names=model.branch_names,
        dv_dp=dv,
        dloading_dp=(up + down) / 2.0,
        dloading_dp_up=up,
        dloading_dp_down=down,
        dpsub_dp=np.asarray(model.dpsub_dp, dtype=float),
        delta_mw=float("nan"),
        vmin=vmin,
        vmax=vmax,
        injection_headroom_mw=np.full(n_der, np.inf),
        consumption_headroom_mw=np.full(n_der, np.inf),
    )
    return state, sens
