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

The linearisation the markets plan with is :meth:`Feeder.sensitivities`
(reactive powers frozen at the fixed point) with the inverters' response
folded in (:meth:`VoltVar.closed_loop`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from dsosim.federates.aggregator.pv import VOLT_VAR_Q, VOLT_VAR_V
from dsosim.federates.dso.feeder import (
    Feeder,
    FeederState,
    Sensitivities,
    _frozen,
    _headrooms,
)

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
        if not (tolerance_pu > 0.0 and max_iterations >= 1):
            raise ValueError(
                f"volt-var fixed point: tolerance_pu must be > 0 and max_iterations >= 1, "
                f"got {tolerance_pu} and {max_iterations}"
            )
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
        counts = np.array([len(idx) for idx in self._nodes], dtype=np.intp)
        self._by_count = [
            (pos, np.stack([self._nodes[i] for i in pos], axis=1))
            for pos in (np.flatnonzero(counts == c) for c in np.unique(counts[counts > 0]))
        ]
        """Locations by their number of readings: (locations, readings x locations)."""
        self.q_mvar = np.zeros(len(self.ratings))
        """The last fixed point (warm start of the next)."""

    @property
    def any(self) -> bool:
        """Some location has volt-var inverters."""
        return bool(self.active.any())

    def local_voltages(self, state: FeederState) -> np.ndarray:
        """Mean voltage (pu) of every DER location's bus at ``state``."""
        return self.local_voltages_of(state.v_pu)

    def local_voltages_of(self, v_pu: np.ndarray) -> np.ndarray:
        """Mean voltage (pu) of every DER location's bus, of the voltage
        readings ``v_pu`` (every node, :attr:`FeederState.v_pu` order)."""
        out = np.ones(len(self._nodes))
        for positions, nodes in self._by_count:
            # summed over the first axis: the order np.mean takes for a bus's few
            # readings, so each mean is bit-for-bit that of v_pu[idx].mean()
            out[positions] = v_pu[nodes].sum(axis=0) / nodes.shape[0]
        return out

    def _location_means(self, rows: np.ndarray) -> np.ndarray:
        """Mean over every location's readings of ``rows`` (one row per
        reading, :attr:`FeederState.v_pu` order): (locations, columns), 0 at a
        location without readings. Summed over the first axis and divided, as
        ``np.mean(axis=0)`` does, so each row is bit for bit
        ``rows[idx].mean(axis=0)``."""
        out = np.zeros((len(self._nodes), *rows.shape[1:]))
        for positions, nodes in self._by_count:
            out[positions] = rows[nodes].sum(axis=0) / nodes.shape[0]
        return out

    def curve(self, v_pu: np.ndarray) -> np.ndarray:
        """Reactive power injected, Mvar, at local voltages ``v_pu``."""
        return np.interp(v_pu, self.curve_v, self.curve_q) * self.ratings

    def solve(self, *, controls: bool = True) -> tuple[FeederState, VoltVarResult]:
        """Solve the feeder with every inverter on its curve (see the module
        doc); the DERs' active power is whatever was set. Not converged
        (power flow diverged, or ``max_iterations`` reached) is reported in
        the result, never raised; the state is then the last power flow's."""
        result = self.settle(controls=controls)
        return self.feeder.solved_state(), result

    def settle(self, *, controls: bool = True) -> VoltVarResult:
        """:meth:`solve` without reading the state back: read what is needed
        with the feeder's ``solved_*`` methods before the next solve (each
        step of the fixed point reads only the voltages)."""
        feeder = self.feeder
        tol = np.maximum(self.tolerance_pu * self.ratings, 1e-9)
        q = np.where(self.active, self.q_mvar, 0.0)
        gain = np.zeros(len(q))
        last: tuple[np.ndarray, np.ndarray] | None = None
        for iteration in range(1, self.max_iterations + 1):
            feeder.set_der_mvar(-q)
            flow_ok = feeder.solve_flow(controls=controls)
            v = self.local_voltages_of(feeder.solved_voltages())
            if not flow_ok:
                return VoltVarResult(q, v, iteration, False, float("nan"))
            f = self.curve(v)
            h = f - q
            residual = float(np.abs(h).max()) if len(h) else 0.0
            if np.all(np.abs(h) <= tol):
                self.q_mvar = q
                return VoltVarResult(q, v, iteration, True, residual)
            if last is not None:
                dq, df = q - last[0], f - last[1]
                moved = np.abs(dq) > 1e-9
                gain = np.where(
                    moved, np.clip(df / np.where(moved, dq, 1.0), _STEP_GAIN_MIN, 0.0), gain
                )
            last = (q, f)
            q = np.where(self.active, q + h / (1.0 - gain), 0.0)
        self.q_mvar = last[0] if last is not None else q
        return VoltVarResult(last[0] if last else q, v, self.max_iterations, False, residual)

    def slopes(self, v_pu: np.ndarray) -> np.ndarray:
        """dQ/dV (Mvar injected per pu) of every location's curve at ``v_pu``:
        the segment's slope (0 in the dead band and beyond the curve's ends;
        at a breakpoint, the segment above it)."""
        seg = np.clip(
            np.searchsorted(self.curve_v, v_pu, side="right") - 1, 0, len(self.curve_v) - 2
        )
        inside = (v_pu >= self.curve_v[0]) & (v_pu < self.curve_v[-1])
        dv = self.curve_v[seg + 1] - self.curve_v[seg]
        dq = self.curve_q[seg + 1] - self.curve_q[seg]
        return np.where(inside, dq / dv, 0.0) * self.ratings

    def closed_loop(
        self,
        state: FeederState,
        sens: Sensitivities,
        *,
        delta_mvar: float = 0.05,
        finite_differences: bool = False,
    ) -> Sensitivities:
        """``sens`` (taken at frozen reactive powers, the fixed point of
        ``state``) with the inverters' response folded in: a change of
        active power ``dP`` moves the local voltages, the inverters move
        their reactive power along their curve's slope ``G`` at the operating
        point, ``dQ = G (A_P dP + A_Q dQ)``, so ``dQ = (I - G A_Q)^-1 G A_P dP``
        and every derivative ``d./dP`` gains ``d./dQ dQ/dP``. ``d./dQ`` at
        frozen controls from the factorisation ``sens`` was taken with
        (:meth:`Feeder.reactive_sensitivities`: no power flow; loadings as a
        central difference of ``delta_mvar`` on the linearised currents), or
        by central finite differences of ``delta_mvar`` (two power flows per
        location on its curve's slope) where there is none or
        ``finite_differences`` (the two agree to the bound
        ``tests/test_voltvar.py`` holds). Exact for changes that stay on the
        same segments of the curves; the market's re-linearisation at its
        dispatch takes a crossed breakpoint in."""
        feeder = self.feeder
        v_loc = self.local_voltages(state)
        g = np.where(self.active, self.slopes(v_loc), 0.0)
        on = np.flatnonzero(g != 0.0)
        if not len(on):
            return sens
        mon = np.asarray(state.monitored, dtype=bool)
        analytic = None if finite_differences else feeder.reactive_sensitivities(on, delta_mvar)
        if analytic is not None:  # per Mvar drawn; injected is the other way
            dv_q, dl_q, dp_q = (-x for x in analytic)
        else:
            dv_q, dl_q, dp_q = self._reactive_fd(state, on, delta_mvar)
        a_p = self._location_means(np.asarray(sens.dv_dp))[on]
        a_q = self._location_means(dv_q)[on]
        gd = np.diag(g[on])
        k = np.linalg.solve(np.eye(len(on)) - gd @ a_q, gd @ a_p)  # dQ(on)/dP, Mvar/MW
        dv = np.asarray(sens.dv_dp) + dv_q @ k
        dl = dl_q @ k
        up_l = np.asarray(sens.dloading_dp_up) + dl
        down_l = np.asarray(sens.dloading_dp_down) + dl
        inj, cons = _headrooms(np.asarray(state.v_pu)[mon], dv[mon], sens.vmin, sens.vmax)
        return replace(
            sens,
            dv_dp=_frozen(dv),
            dloading_dp=_frozen((up_l + down_l) / 2.0),
            dloading_dp_up=_frozen(up_l),
            dloading_dp_down=_frozen(down_l),
            dpsub_dp=_frozen(np.asarray(sens.dpsub_dp) + dp_q @ k),
            injection_headroom_mw=_frozen(inj),
            consumption_headroom_mw=_frozen(cons),
        )

    def _reactive_fd(
        self, state: FeederState, on: np.ndarray, delta_mvar: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """d(readings, loadings, head MW)/dQ injected at the locations ``on``
        by central finite differences of ``delta_mvar`` (two power flows each,
        at frozen controls; the operating point is solved again after)."""
        feeder = self.feeder
        q0 = self.q_mvar.copy()
        dv_q = np.zeros((len(state.v_pu), len(on)))
        dl_q = np.zeros((len(state.loading), len(on)))
        dp_q = np.zeros(len(on))
        for c, j in enumerate(on):
            flows = []
            for sign in (1.0, -1.0):
                q = q0.copy()
                q[j] += sign * delta_mvar
                feeder.set_der_mvar(-q)
                feeder.solve_flow(controls=False)
                flows.append(feeder.solved_flows())
            (v_up, l_up, p_up), (v_dn, l_dn, p_dn) = flows
            dv_q[:, c] = (v_up - v_dn) / (2.0 * delta_mvar)
            dl_q[:, c] = (l_up - l_dn) / (2.0 * delta_mvar)
            dp_q[c] = (p_up - p_dn) / (2.0 * delta_mvar)
        feeder.set_der_mvar(-q0)
        feeder.solve(controls=False)
        return dv_q, dl_q, dp_q
