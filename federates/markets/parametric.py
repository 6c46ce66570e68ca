"""A bounded primal simplex for a small LP whose costs move with one parameter.

The LDA market's interface bid sweeps the head price ``lambda`` down from the
price cap and needs, at each of a few hundred prices, the optimal basis of

    min (c0 + lambda c1) @ z   s.t.   A z <= b,   0 <= z <= u

from the basis optimal at the previous price, which is one or two pivots away.
HiGHS does those pivots, but every ``run`` pays an O(nonzeros) set-up (scaling,
copies, checks: ~0.1 ms at 400 columns and 6 rows, ~0.3 ms at 31 rows,
measured) that is most of a step; HiGHS offers cost ranging per column
(``getRanging``) but no parametric solve along a direction of costs, and no
single pivot. The LPs here have at most a few tens of rows, so the simplex is
written directly on the dense matrix: each iteration factorises the basis
afresh (LAPACK, no updates to drift), prices every column (Dantzig's rule),
and takes a Harris ratio test (bounded, with bound flips).

It is a plain textbook method with no recovery of its own: anything unusual
(a singular basis, no progress within the iteration limit, an unbounded ray)
raises :class:`PivotError`, and the caller falls back to HiGHS.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.lapack import dgetrf, dgetrs

DUAL_TOL = 1e-7
"""A reduced cost further than this on the wrong side of zero makes its
column enter (HiGHS's dual feasibility tolerance, which the sweep's steps
were measured with)."""
PRIMAL_TOL = 1e-9
"""Bound violation the ratio test may leave on a basic variable (Harris)."""
_PIVOT_TOL = 1e-9
"""Smallest entry of the pivot column taken as a pivot."""


class PivotError(ArithmeticError):
    """The simplex could not finish: the caller solves with HiGHS instead."""


class ParametricLp:
    """``min (c0 + lambda c1) @ z``, ``a @ z <= b``, ``0 <= z <= upper``.

    Row ``r`` gets a logical column ``e_r`` (the room to its bound), so a basis
    is ``m`` of the ``n + m`` columns; a non-basic column sits at its lower
    bound (0) or its upper one (finite). Duals follow HiGHS's convention for
    a minimisation: ``y = B^-T c_B``, reduced costs ``d = c - A^T y``, so a
    tight row's dual (minus its logical's reduced cost) is ``<= 0``.
    """

    def __init__(
        self,
        a: np.ndarray,
        b: np.ndarray,
        upper: np.ndarray,
        c0: np.ndarray,
        c1: np.ndarray,
        basic: np.ndarray,
        at_upper: np.ndarray,
    ) -> None:
        m, n = a.shape
        self.n, self.m = n, m
        self.full = np.hstack([a, np.eye(m)])
        self._full_t = np.ascontiguousarray(self.full.T)
        self.b = np.asarray(b, dtype=float)
        self.upper = np.concatenate([upper, np.full(m, np.inf)])
        self._unbounded = ~np.isfinite(self.upper)
        self.c0 = np.concatenate([c0, np.zeros(m)])
        self.c1 = np.concatenate([c1, np.zeros(m)])
        self.max_iter = 50 + 2 * (n + m)
        self.set_basis(basic, at_upper)

    def set_basis(self, basic: np.ndarray, at_upper: np.ndarray) -> None:
        """``basic``: the ``m`` basic columns (logicals are ``n + r``);
        ``at_upper``: per column (``n + m``), non-basic at its upper bound."""
        self.basic = np.array(basic, dtype=np.int64)
        self.at_upper = np.array(at_upper, dtype=bool)
        self.at_upper[self.basic] = False
        if len(self.basic) != self.m or np.any(~np.isfinite(self.upper[self.at_upper])):
            raise PivotError("not a basis")
        self.nonbasic = np.ones(self.n + self.m, dtype=bool)
        self.nonbasic[self.basic] = False
        self._factored: tuple[np.ndarray, np.ndarray] | None = None

    def solve(self, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pivot from the current basis to one optimal at ``lam``; returns the
        columns ``z`` (``n``), the row duals ``y`` (``m``) and the reduced costs
        (``n + m``; a logical's is minus its row's dual)."""
        c = self.c0 + lam * self.c1
        full, upper = self.full, self.upper
        basic, at_upper, nonbasic = self.basic, self.at_upper, self.nonbasic
        iterations = 0
        while True:  # per basis: factorise, price, then bound flips until a pivot
            if self._factored is None:  # a new basis (else the last solve's last)
                self._factored = self._factor()
            lu, piv = self._factored
            y = self._solve_t(lu, piv, c[basic])
            d = c - self._full_t @ y
            turning = self._turning_mask()
            # > 0: the column should enter (from its lower or its upper bound):
            # beyond the tolerance, or at all if it is turning (the fall of the
            # price only takes it further the wrong way: a column left there
            # would stop the sweep, ranging finding no room below the price)
            wrong = np.where(at_upper, d, -d)
            wrong[~turning] -= DUAL_TOL
            wrong[basic] = 0.0
            entering = wrong > 0.0
            if entering.any() and self._flip_all(entering, lu, piv):
                wrong[entering] = 0.0
            xb = self._solve(lu, piv, self.b - full @ self._zn())
            moved = False  # whether bound flips updated xb (by their steps)
            while True:
                iterations += 1
                if iterations > self.max_iter:
                    raise PivotError("iteration limit")
                q = int(np.argmax(wrong))
                if wrong[q] <= 0.0:
                    self._d = d
                    z = self._zn()
                    z[basic] = self._solve(lu, piv, self.b - full @ z) if moved else xb
                    return z[: self.n], y, d
                wrong[q] = 0.0
                # the entering column moves by t >= 0 up from 0 or down from its
                # upper bound; the basic values change by delta * t
                delta = self._solve(lu, piv, full[:, q])
                if not at_upper[q]:
                    delta = -delta
                ub = upper[basic]
                down = delta < -_PIVOT_TOL
                up = (delta > _PIVOT_TOL) & np.isfinite(ub)
                loose = np.full(len(xb), np.inf)
                np.divide(xb + PRIMAL_TOL, -delta, out=loose, where=down)
                np.divide(ub - xb + PRIMAL_TOL, delta, out=loose, where=up)
                t_max = float(loose.min(initial=np.inf))
                span = float(upper[q])
                if span <= t_max:  # the entering column reaches its other bound first
                    if not np.isfinite(span):
                        raise PivotError("unbounded")
                    at_upper[q] = not at_upper[q]
                    xb = xb + delta * span
                    moved = True
                    continue
                # Harris: among rows whose exact ratio is within the loose bound,
                # the largest pivot
                exact = np.full(len(xb), np.inf)
                np.divide(xb, -delta, out=exact, where=down)
                np.divide(ub - xb, delta, out=exact, where=up)
                eligible = (down | up) & (exact <= t_max)
                if not eligible.any():
                    raise PivotError("no pivot row")
                p = int(np.argmax(np.where(eligible, np.abs(delta), -1.0)))
                leaving = int(basic[p])
                at_upper[leaving] = bool(delta[p] > 0.0)  # it left through its upper bound
                nonbasic[leaving] = True
                basic[p] = q
                at_upper[q] = False
                nonbasic[q] = False
                self._factored = None
                break

    def _zn(self) -> np.ndarray:
        """Every column at its non-basic value (basic ones at 0)."""
        return np.where(self.at_upper, self.upper, 0.0)

    def _flip_all(self, entering: np.ndarray, lu: np.ndarray, piv: np.ndarray) -> bool:
        """Move every column that should enter to its other bound at once, if
        that keeps every basic variable within its bounds (the usual case: a
        fall of the price past block prices the network rows do not stop);
        else change nothing and return False (one column at a time, with a
        ratio test)."""
        if self._unbounded[entering].any():
            return False
        self.at_upper[entering] = ~self.at_upper[entering]
        xb = self._solve(lu, piv, self.b - self.full @ self._zn())
        if np.all(xb >= -PRIMAL_TOL) and np.all(xb <= self.upper[self.basic] + PRIMAL_TOL):
            return True
        self.at_upper[entering] = ~self.at_upper[entering]
        return False

    def range_below(self) -> float:
        """How far (<= 0) ``lambda`` can fall from the last ``solve`` before its
        basis stops being optimal: reduced costs are affine in ``lambda``
        (``d1 = c1 - A^T B^-T c1_B`` per unit), a non-basic column at its lower
        bound turns where ``d`` reaches 0 falling (``d1 > 0``), one at its upper
        bound where ``d`` reaches 0 rising (``d1 < 0``)."""
        turning = self._turning_mask()
        if not turning.any():
            return -np.inf
        room = self._d[turning] / self._d1[turning]
        return -float(np.maximum(room, 0.0).min())

    def _turning_mask(self) -> np.ndarray:
        """Non-basic columns whose reduced cost moves toward the wrong side as
        ``lambda`` falls."""
        d1 = self._d1
        tol = 1e-12 * (1.0 + np.abs(d1[self.nonbasic]).max(initial=0.0))
        return self.nonbasic & np.where(self.at_upper, d1 < -tol, d1 > tol)

    def _factor(self) -> tuple[np.ndarray, np.ndarray]:
        """The basis's LU factors, and ``d1`` (the reduced costs' change per
        unit of ``lambda``, which depends on the basis only)."""
        lu, piv, info = dgetrf(self.full[:, self.basic])
        diag = np.abs(np.diag(lu))
        if info != 0 or diag.min() <= 1e-11 * max(1.0, float(diag.max())):
            raise PivotError("singular basis")
        y1 = self._solve_t(lu, piv, self.c1[self.basic])
        self._d1 = self.c1 - self._full_t @ y1
        return lu, piv

    @staticmethod
    def _solve(lu: np.ndarray, piv: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        x, info = dgetrs(lu, piv, rhs)
        if info != 0:
            raise PivotError("singular basis")
        return np.asarray(x)

    @staticmethod
    def _solve_t(lu: np.ndarray, piv: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        x, info = dgetrs(lu, piv, rhs, trans=1)
        if info != 0:
            raise PivotError("singular basis")
        return np.asarray(x)
