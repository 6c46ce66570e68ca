"""The parametric simplex (the interface bid's sweep steps) against HiGHS
through scipy's linprog: optimal at every price of a falling sweep, feasible,
and optimal over the whole range it reports."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog

from dsosim.federates.markets.parametric import ParametricLp, PivotError


def _lp(seed: int, n: int = 30, m: int = 6):
    """Blocks with finite sizes and costs ``lam * w - price``, one slack per
    row priced high (always feasible, bounded), rows that bind."""
    rng = np.random.default_rng(seed)
    coef = rng.normal(0.0, 1.0, (m, n)) * (rng.random((m, n)) < 0.6)
    size = rng.uniform(0.1, 2.0, n)
    a = np.hstack([coef, -np.eye(m)])
    b = rng.uniform(-1.0, 3.0, m)
    upper = np.concatenate([size, np.full(m, np.inf)])
    c0 = np.concatenate([-np.round(rng.uniform(-50.0, 150.0, n), 1), np.full(m, 1e6)])
    c1 = np.concatenate([rng.uniform(0.9, 1.1, n), np.zeros(m)])
    return a, b, upper, c0, c1


def _cold(a, b, upper, c0, c1, lam):
    m, n = a.shape
    nb = n - m
    taken = (c0 + lam * c1)[:nb] < 0.0
    act = a[:, :nb][:, taken] @ upper[:nb][taken]
    at_upper = np.zeros(n + m, dtype=bool)
    at_upper[:nb] = taken
    basic = np.where(act > b, nb + np.arange(m), n + np.arange(m))
    return ParametricLp(a, b, upper, c0, c1, basic, at_upper)


def _optimum(a, b, upper, c0, c1, lam) -> float:
    res = linprog(
        c0 + lam * c1,
        A_ub=a,
        b_ub=b,
        bounds=list(zip(np.zeros(len(upper)), [None if np.isinf(u) else u for u in upper])),
        method="highs",
    )
    assert res.status == 0
    return float(res.fun)


@pytest.mark.parametrize("seed", range(12))
def test_every_step_of_a_falling_sweep_is_optimal(seed: int) -> None:
    a, b, upper, c0, c1 = _lp(seed)
    lam = 200.0
    lp = _cold(a, b, upper, c0, c1, lam)
    steps = 0
    while lam > -100.0 and steps < 200:
        z, y, _ = lp.solve(lam)
        cost = c0 + lam * c1
        assert np.all(a @ z <= b + 1e-8)
        assert np.all(z >= -1e-9) and np.all(z <= upper + 1e-9)
        best = _optimum(a, b, upper, c0, c1, lam)
        assert cost @ z == pytest.approx(best, rel=1e-9, abs=1e-7)
        # the duals certify it: y <= 0 (rows are <=), and c - A^T y is >= 0 at
        # columns at 0, <= 0 at columns at their upper bound
        assert np.all(y <= 1e-9)
        d = cost - a.T @ y
        assert np.all(d[z <= 1e-9] >= -1e-6)
        assert np.all(d[z >= upper - 1e-9] <= 1e-6)
        below = lp.range_below()
        assert below <= 0.0
        if np.isfinite(below) and below < -1e-6:
            # the same dispatch stays optimal over the range the basis reports
            inside = lam + 0.5 * below
            assert (c0 + inside * c1) @ z == pytest.approx(
                _optimum(a, b, upper, c0, c1, inside), rel=1e-9, abs=1e-7
            )
        lam = (lam + below if np.isfinite(below) else -100.0) - 1e-4
        steps += 1
    assert steps > 5


def test_a_singular_start_is_refused() -> None:
    a, b, upper, c0, c1 = _lp(0)
    m, n = a.shape
    basic = np.full(m, 0)  # the same column m times
    with pytest.raises(PivotError):
        ParametricLp(a, b, upper, c0, c1, basic, np.zeros(n + m, dtype=bool)).solve(0.0)


def test_an_unbounded_ray_is_refused() -> None:
    # min -z with z >= 0 unbounded above and no row that stops it
    a = np.zeros((1, 1))
    lp = ParametricLp(
        a,
        np.ones(1),
        np.full(1, np.inf),
        -np.ones(1),
        np.zeros(1),
        np.array([1]),
        np.zeros(2, dtype=bool),
    )
    with pytest.raises(PivotError):
        lp.solve(0.0)
