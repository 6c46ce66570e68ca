"""The utility's power flows as they were before this round's speed-up (main
of 30 Nov 2026, 16:30 UTC), kept as the reference ``dsosim bench voltvar``
times the present ones against in the same run, and checks them equal to.

The same engine calls in the same order, one at a time: every load's kW and
kvar set through the classic ``Loads`` API at every call (also when they
are set already), each DER's kW and reactive power likewise (the latter
through OpenDSSDirect.py's checked calls), each
DER element's power read one by one for the metered load, and the
regulators and switched capacitors looked up again at every read of the
control state, and the ex-post check's frozen power flow read back as a
whole state (loadings and metering included) where it needs its voltages
and losses. :func:`installed` puts them in place on one utility (its
feeder's methods, and ``controls.read`` while the block runs).
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from dsosim.federates.dso import controls
from dsosim.federates.dso.feeder import Feeder, FeederError
from dsosim.federates.dso.grid import GridOperator, predict


def set_load_multipliers(self: Feeder, m: np.ndarray | float) -> None:
    given = np.asarray(m, dtype=float)
    if given.ndim > 1 or (given.ndim == 1 and given.shape != self._base_kw.shape):
        raise FeederError(
            f"feeder {self.name}: {given.shape} multipliers for {len(self._loads)} loads"
        )
    factors = np.broadcast_to(given, self._base_kw.shape)
    if not np.all(np.isfinite(factors)) or np.any(factors < 0.0):
        raise FeederError(f"feeder {self.name}: load multipliers must be finite and >= 0")
    self._kw_now = self._base_kw * factors
    self._kvar_now = self._base_kvar * factors
    loads = self._circuit.Loads
    lib = loads._lib
    select, set_kw, set_kvar = lib.Loads_Set_idx, lib.Loads_Set_kW, lib.Loads_Set_kvar
    for i, (kw, kvar) in enumerate(
        zip(self._kw_now.tolist(), self._kvar_now.tolist(), strict=True), start=1
    ):
        select(i)
        set_kw(kw)
        set_kvar(kvar)
    loads._check_for_error(None)


def set_der_mw(self: Feeder, values: Any) -> None:
    mw = np.asarray(values, dtype=float)
    if mw.shape != (len(self._der_names),):
        raise FeederError(
            f"feeder {self.name}: {mw.shape} DER values for {len(self._der_names)} DERs"
        )
    if not np.all(np.isfinite(mw)):
        raise FeederError(f"feeder {self.name}: DER set-points must be finite")
    for idx, value in zip(self._der_idx, mw):
        self._set_der_kw(idx, value * 1000.0)
    self._der_mw = mw.copy()


def set_der_mvar(self: Feeder, values: Any) -> None:
    mvar = np.asarray(values, dtype=float)
    if mvar.shape != (len(self._der_names),):
        raise FeederError(
            f"feeder {self.name}: {mvar.shape} DER values for {len(self._der_names)} DERs"
        )
    if not np.all(np.isfinite(mvar)):
        raise FeederError(f"feeder {self.name}: DER reactive powers must be finite")
    loads = self._dss.Loads
    for idx, value in zip(self._der_idx, mvar.tolist()):
        kvar = value * 1000.0
        if kvar:
            if self._der_kvar.get(idx) == kvar:
                continue
            loads.Idx(idx)
            loads.kvar(kvar)
            self._der_kvar[idx] = kvar
        elif self._der_kvar.pop(idx, None) is not None:
            loads.Idx(idx)
            loads.PF(1.0)


def _metered_load_mw(self: Feeder, substation_mw: float, losses_mw: float) -> float:
    loads = self._dss.Loads
    element = self._dss.CktElement
    der_kw = 0.0
    for idx in self._der_idx:
        loads.Idx(idx)
        der_kw += element.TotalPowers()[0]
    return substation_mw - losses_mw - der_kw / 1000.0


def read(feeder: Feeder) -> controls.ControlState:
    dss = feeder.engine
    taps = []
    for r in controls.regulators(feeder):
        dss.Transformers.Name(r.transformer)
        dss.Transformers.Wdg(r.winding)
        taps.append((r.transformer, r.winding, float(dss.Transformers.Tap())))
    caps = []
    for c in controls.switched_capacitors(feeder):
        dss.Capacitors.Name(c)
        caps.append((c, tuple(int(s) for s in dss.Capacitors.States())))
    return controls.ControlState(tuple(taps), tuple(caps))


def expost(self: GridOperator, interval: int, setpoints: np.ndarray) -> tuple[object, ...]:
    """The ex-post check as it was: its frozen power flow read back as a whole state."""
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
    same = None
    if plan is not None and plan.controls is not None:
        controls.apply(feeder, plan.controls)
        same = self._solve(controls=False)
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
    if same is not None and same.power_flow_converged:
        lin_v = float(np.max(np.abs(v_pred[mon] - same.v_pu[mon])))
        lin_loss = loss_pred - same.losses_mw
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


def install(grid: GridOperator) -> None:
    """The reference methods on ``grid``'s feeder, for good (``controls.read``
    is put in place by :func:`installed` around each use)."""
    feeder = grid.feeder
    for name, fn in (
        ("set_load_multipliers", set_load_multipliers),
        ("set_der_mw", set_der_mw),
        ("set_der_mvar", set_der_mvar),
        ("_metered_load_mw", _metered_load_mw),
    ):
        setattr(feeder, name, types.MethodType(fn, feeder))
    grid.expost = types.MethodType(expost, grid)


@contextmanager
def installed() -> Iterator[None]:
    """The reference ``controls.read`` for the duration of the block."""
    present = controls.read
    controls.read = read
    try:
        yield
    finally:
        controls.read = present
