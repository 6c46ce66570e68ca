"""Volt-var of the DERs' inverters in the utility's power flow.

A volt-var inverter is autonomous local control: it sets its reactive power
from the voltage at its own terminals (IEEE 1547-2018, category B default
curve, :data:`dsosim.federates.aggregator.pv.VOLT_VAR_V` / ``VOLT_VAR_Q``),
settling within seconds, well inside a 5-minute interval. Its reactive power
therefore belongs to the power flow, not to the market: every power flow the
utility solves (forecast, re-linearisation, the measured interval, the
ex-post check) finds the fixed point ``Q_i = S_i q(V_i(Q))`` of every DER
location ``i`` with ``S_i`` the apparent-power rating of its volt-var
inverters (the utility's interconnection record: it sets the curve) and
``V_i`` the mean of the location's bus voltages (pu of the phase base, what
the feeder's violations are counted on).

The DER elements are OpenDSS loads (:meth:`Feeder.attach_der`), which
OpenDSS's own ``InvControl`` cannot drive (it controls PVSystem and Storage
elements); the fixed point is iterated here, as ``InvControl`` does inside
the control loop: each step solves the power flow at the present ``Q`` and
moves every location along a per-location secant (quasi-Newton) estimate of
``dQ/dV dV/dQ``, which converges where plain substitution oscillates (a far
bus on a weak feeder has a loop gain above 1). Converged when every
location's ``|q(V(Q)) - Q|`` is at most ``tolerance_pu`` (default 1e-3) of
its rating: a voltage error of 1.4e-4 pu on the curve's slope, about
OpenDSS's own solution tolerance. A test holds the result to OpenDSS's
``InvControl`` on a PVSystem.

The linearisation (:meth:`Feeder.sensitivities`) is taken with the reactive
powers frozen at the fixed point; the ex-post check measures what that
leaves out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsosim.federates.aggregator.pv import VOLT_VAR_Q, VOLT_VAR_V
from dsosim.federates.dso.feeder import Feeder, FeederState

_STEP_GAIN_MIN = -50.0


@dataclass(frozen=True, slots=True, eq=False)
class VoltVarResult:
    """The reactive powers of one power flow."""

    q_mvar: np.ndarray
    """Reactive power injected per DER location, Mvar (+ = injected)."""
    v_pu: np.ndarray
    """Local voltage per DER location, pu, at that power flow."""
    iterations: int
    """Power flows solved."""
    converged: bool
    residual_mvar: float
    """Largest ``|q(V) S - Q|`` at the returned power flow."""


class VoltVar:
    """The volt-var inverters of a feeder's DER locations (attach order)."""

    def __init__(
        self,
        feeder: Feeder,
        buses: Sequence[str],
        ratings_mva: Sequence[float],
        *,
        curve_v: Sequence[float] = VOLT_VAR_V,
        curve_q: Sequence[float] = VOLT_VAR_Q,
        tolerance_pu: float = 1e-3,
        max_iterations: int = 40,
    ) -> None:
        self.feeder = feeder
        self.ratings = np.asarray(ratings_mva, dtype=float)
        if len(self.ratings) != len(buses) or len(buses) != len(feeder.der_names):
            raise ValueError(
                f"feeder {feeder.name}: {len(self.ratings)} volt-var ratings and "
                f"{len(buses)} buses for {len(feeder.der_names)} DER locations"
            )
        if not np.all(np.isfinite(self.ratings)) or np.any(self.ratings < 0.0):
            raise ValueError(f"feeder {feeder.name}: volt-var ratings must be >= 0 MVA")
        if list(curve_v) != sorted(curve_v) or len(curve_v) != len(curve_q):
            raise ValueError("volt-var curve: voltages must increase, one Q per voltage")
        self.curve_v = np.asarray(curve_v, dtype=float)
        self.curve_q = np.asarray(curve_q, dtype=float)
        self.tolerance_pu = float(tolerance_pu)
        self.max_iterations = int(max_iterations)
        # a reading is "bus.node" or, read line to line, "bus.node.node"
        at: dict[str, list[int]] = {}
        for i, n in enumerate(feeder.node_names):
            at.setdefault(n.split(".", 1)[0].lower(), []).append(i)
        self.active = self.ratings > 0.0
        self._nodes = []
        for bus, active in zip(buses, self.active.tolist(), strict=True):
            idx = np.asarray(at.get(bus.lower(), ()), dtype=np.intp)
            if active and not len(idx):
                raise ValueError(f"feeder {feeder.name}: no voltage reading at bus {bus!r}")
            self._nodes.append(idx)
        self.q_mvar = np.zeros(len(self.ratings))
        """The last fixed point (warm start of the next)."""

    @property
    def any(self) -> bool:
        """Some location has volt-var inverters."""
        return bool(self.active.any())

    def local_voltages(self, state: FeederState) -> np.ndarray:
        """Mean voltage (pu) of every DER location's bus at ``state``."""
        return np.array([float(state.v_pu[idx].mean()) if len(idx) else 1.0 for idx in self._nodes])

    def curve(self, v_pu: np.ndarray) -> np.ndarray:
        """Reactive power injected, Mvar, at local voltages ``v_pu``."""
        return np.interp(v_pu, self.curve_v, self.curve_q) * self.ratings

    def solve(self, *, controls: bool = True) -> tuple[FeederState, VoltVarResult]:
        """Solve the feeder with every inverter on its curve (see the module
        doc); the DERs' active power is whatever was set. Not converged
        (power flow diverged, or ``max_iterations`` reached) is reported in
        the result, never raised; the state is then the last power flow's."""
        feeder = self.feeder
        tol = np.maximum(self.tolerance_pu * self.ratings, 1e-9)
        q = np.where(self.active, self.q_mvar, 0.0)
        gain = np.zeros(len(q))
        last: tuple[np.ndarray, np.ndarray] | None = None
        for iteration in range(1, self.max_iterations + 1):
            feeder.set_der_mvar(-q)
            state = feeder.solve(controls=controls)
            v = self.local_voltages(state)
            if not state.power_flow_converged:
                return state, VoltVarResult(q, v, iteration, False, float("nan"))
            f = self.curve(v)
            h = f - q
            residual = float(np.abs(h).max()) if len(h) else 0.0
            if np.all(np.abs(h) <= tol):
                self.q_mvar = q
                return state, VoltVarResult(q, v, iteration, True, residual)
            if last is not None:
                dq, df = q - last[0], f - last[1]
                moved = np.abs(dq) > 1e-9
                gain = np.where(
                    moved, np.clip(df / np.where(moved, dq, 1.0), _STEP_GAIN_MIN, 0.0), gain
                )
            last = (q, f)
            q = np.where(self.active, q + h / (1.0 - gain), 0.0)
        self.q_mvar = last[0] if last is not None else q
        return state, VoltVarResult(last[0] if last else q, v, self.max_iterations, False, residual)
