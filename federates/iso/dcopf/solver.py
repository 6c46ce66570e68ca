"""HiGHS helpers of the DC-OPF: running a model (warm, with a cold retry),
reading a solution, adding columns, and the QP mirror that keeps the QP
instance in step with the LP's bid-column pool."""

from __future__ import annotations

import highspy
import numpy as np

Statuses = list[highspy.HighsBasisStatus]


def _run(highs: highspy.Highs, *, retry_cold: bool = True) -> bool:
    """Run HiGHS; True on an optimal solution. A stale basis can stall a warm
    start, so an LP that fails warm is retried once from scratch."""
    highs.run()
    if highs.getModelStatus() == highspy.HighsModelStatus.kOptimal:
        return True
    if not retry_cold:
        return False
    highs.clearSolver()
    highs.run()
    return highs.getModelStatus() == highspy.HighsModelStatus.kOptimal


def _solution(highs: highspy.Highs) -> tuple[np.ndarray, np.ndarray]:
    """Column values and row duals of the last solve, as arrays."""
    solution = highs.getSolution()
    return (
        np.fromiter(solution.col_value, dtype=float),
        np.fromiter(solution.row_dual, dtype=float),
    )


def _add_columns(
    highs: highspy.Highs,
    cost: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    row: np.ndarray,
    value: np.ndarray,
) -> None:
    """Add columns with one matrix entry each."""
    n = len(cost)
    status = highs.addCols(
        n,
        cost,
        lower,
        upper,
        n,
        np.arange(n, dtype=np.int32),
        row.astype(np.int32),
        value.astype(float),
    )
    if status != highspy.HighsStatus.kOk:
        raise RuntimeError(f"HiGHS could not add {n} columns: {status}")


class _Mirror:
    """The QP instance as a copy of the LP one with some LP columns absent.

    Columns are addressed by their LP index; ``qp_of[lp] = qp`` (-1 when
    absent) and ``lp_of[qp] = lp`` translate.
    """

    def __init__(self, highs: highspy.Highs, n_present: int, n_lp: int) -> None:
        self.highs = highs
        self.qp_of = np.full(n_lp, -1, dtype=np.int64)
        self.qp_of[:n_present] = np.arange(n_present)
        self.lp_of = np.arange(n_present, dtype=np.int64)

    def grow(self, n_lp: int) -> None:
        """The LP now has ``n_lp`` columns (new ones absent until added)."""
        if n_lp > len(self.qp_of):
            self.qp_of = np.r_[self.qp_of, np.full(n_lp - len(self.qp_of), -1, dtype=np.int64)]

    def add(
        self,
        lp_cols: np.ndarray,
        cost: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        row: np.ndarray,
        value: np.ndarray,
    ) -> None:
        first = self.highs.getNumCol()
        _add_columns(self.highs, cost, lower, upper, row, value)
        self.qp_of[lp_cols] = np.arange(first, first + len(lp_cols))
        self.lp_of = np.r_[self.lp_of, lp_cols]

    def remove(self, lp_cols: np.ndarray) -> None:
        """Take these (present) LP columns out of the QP; the others keep their order."""
        if len(lp_cols) == 0:
            return
        qp_cols = np.sort(self._cols(lp_cols))
        status = self.highs.deleteCols(len(qp_cols), qp_cols)
        if status != highspy.HighsStatus.kOk:
            raise RuntimeError(f"HiGHS could not delete {len(qp_cols)} columns: {status}")
        keep = np.ones(len(self.lp_of), dtype=bool)
        keep[qp_cols] = False
        self.lp_of = self.lp_of[keep]
        self.qp_of[:] = -1
        self.qp_of[self.lp_of] = np.arange(len(self.lp_of))

    def present(self, lp_cols: np.ndarray) -> np.ndarray:
        """Which of these LP columns the QP has."""
        return self.qp_of[lp_cols] >= 0

    def _cols(self, lp_cols: np.ndarray) -> np.ndarray:
        cols = self.qp_of[lp_cols]
        assert np.all(cols >= 0), "column absent from the QP"
        return cols.astype(np.int32)

    def change_costs(self, lp_cols: np.ndarray, cost: np.ndarray) -> None:
        self.highs.changeColsCost(len(lp_cols), self._cols(lp_cols), cost)

    def change_bounds(self, lp_cols: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        self.highs.changeColsBounds(len(lp_cols), self._cols(lp_cols), lower, upper)

    def hot_start(
        self,
        x_lp: np.ndarray,
        row_value: list[float] | np.ndarray,
        col_status: Statuses,
        row_status: Statuses,
    ) -> None:
        """Start from an LP point and basis. Every LP column absent here must be
        nonbasic in it (so the two bases have the same size), and ``row_value``
        the rows' activity without the absent columns."""
        solution = highspy.HighsSolution()
        solution.col_value = x_lp[self.lp_of].tolist()
        solution.row_value = list(row_value)
        solution.value_valid = True
        self.highs.setSolution(solution)
        basis = highspy.HighsBasis()
        basis.col_status = [col_status[j] for j in self.lp_of.tolist()]
        basis.row_status = row_status
        basis.valid = True
        basis.alien = False
        self.highs.setBasis(basis)

    def solution(self) -> tuple[np.ndarray, np.ndarray]:
        """Column values at LP indices (0 for absent columns) and row duals."""
        x_qp, duals = _solution(self.highs)
        x = np.zeros(len(self.qp_of))
        x[self.lp_of] = x_qp
        return x, duals
