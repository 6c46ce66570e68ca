"""Expected prices: what an aggregator believes the market will pay, per bus
and time-of-day slot, and the order statistics devices price their offers
from.

The belief starts from a prior and is exponentially smoothed with every
price received in dispatch. Buses that received identical price sequences
share one row, so the common case of one price for the whole feeder keeps
one row to sort per interval however many buses and devices there are.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


def order_stat(sorted_rows: FloatArray, rows: IntArray, position: FloatArray) -> FloatArray:
    """Value at fractional ``position`` along ascending ``sorted_rows[rows]``,
    linearly interpolated and clamped to the row.

    >>> order_stat(np.array([[1.0, 2.0, 4.0]]), np.array([0, 0]), np.array([0.5, 5.0])).tolist()
    [1.5, 4.0]
    """
    last = sorted_rows.shape[1] - 1
    x = np.clip(position, 0.0, last)
    i0 = np.floor(x).astype(np.intp)
    i1 = np.minimum(i0 + 1, last)
    w = x - i0
    r = rows.reshape(rows.shape + (1,) * (x.ndim - rows.ndim))
    return sorted_rows[r, i0] * (1.0 - w) + sorted_rows[r, i1] * w


class PriceEstimate:
    """Expected price per bus and time-of-day slot, exponentially smoothed
    (``label[bus]`` -> ``rows[label]``; groups only ever split)."""

    def __init__(self, n_bus: int, prior: FloatArray, smoothing: float) -> None:
        self.label = np.zeros(n_bus, dtype=np.intp)
        self.rows = prior[None, :].copy()
        self.smoothing = smoothing

    @property
    def slots(self) -> int:
        return self.rows.shape[1]

    def full(self) -> FloatArray:
        """The estimate as a ``(n_bus, n_slots)`` array."""
        return self.rows[self.label]

    def update(self, bus_idx: IntArray, prices: FloatArray, slot: int) -> None:
        """Smooth ``prices`` received at buses ``bus_idx`` into ``slot``."""
        if len(bus_idx) == 0:
            return
        got = np.zeros(len(self.label), dtype=bool)
        got[bus_idx] = True
        price = np.zeros(len(self.label))
        price[bus_idx] = prices
        order = np.lexsort((price, got, self.label))
        lab, g, pr = self.label[order], got[order], price[order]
        new = np.empty(len(order), dtype=bool)
        new[0] = True
        new[1:] = (lab[1:] != lab[:-1]) | (g[1:] != g[:-1]) | (pr[1:] != pr[:-1])
        first = order[new]  # one representative bus per new group
        rows = self.rows[self.label[first]]
        a = self.smoothing
        upd = got[first]
        rows[upd, slot] = (1.0 - a) * rows[upd, slot] + a * price[first][upd]
        self.label[order] = np.cumsum(new) - 1
        self.rows = rows


class Outlook:
    """Expected prices of the intervals after ``t``, as devices need them.

    Built once per interval; every query takes the buses of the devices
    asking and works on the distinct estimate rows among them.
    """

    def __init__(self, estimate: PriceEstimate, t: int) -> None:
        self.est = estimate
        self.t = t
        self._cum: FloatArray | None = None
        self._prefix: tuple[int, IntArray, FloatArray] | None = None

    def ahead(self, n: int) -> FloatArray:
        """Every row's expected prices of the next ``n`` intervals (t+1 ... t+n)."""
        slots = (self.t + 1 + np.arange(n)) % self.est.slots
        return self.est.rows[:, slots]

    def sorted_ahead(self, buses: IntArray, n: int) -> tuple[FloatArray, IntArray]:
        """Next ``n`` expected prices sorted ascending, one row per distinct
        estimate among ``buses``, and each bus's row."""
        rows, row_of = np.unique(self.est.label[buses], return_inverse=True)
        est = self.est.rows[rows]
        if n != self.est.slots:
            est = est[:, (self.t + 1 + np.arange(n)) % self.est.slots]
        # With a one-day horizon the future is every slot once, in any order.
        return np.sort(est, axis=1), row_of

    def mean_ahead(self, buses: IntArray, n: int) -> FloatArray:
        """Mean expected price of the next ``n`` intervals, per bus in ``buses``."""
        return self.ahead(n).mean(axis=1)[self.est.label[buses]]

    def order_stat_ahead(self, buses: IntArray, m: IntArray, position: FloatArray) -> FloatArray:
        """The ``position``-th smallest (0-based, fractional positions
        interpolated, clamped to ``[0, m - 1]``) of the next ``m`` expected
        prices, per query; ``m = 0`` (no later interval) gives +inf.

        Each row of expected prices is sorted once (with the time index of
        every sorted entry); the ``i``-th smallest of the first ``m`` is the
        sorted entry where the running count of time indices below ``m``
        first exceeds ``i``. That is one ``(queries, width)`` pass, however
        different the queries' windows are.
        """
        out = np.full(len(m), np.inf)
        has = m > 0
        if not has.any():
            return out
        width = min(int(m[has].max()), self.est.slots)
        order, sorted_f = self._sorted(width)
        mm = np.minimum(m[has], width)
        x = np.clip(position[has], 0.0, mm - 1)
        i0 = np.floor(x).astype(np.intp)
        i1 = np.minimum(i0 + 1, mm - 1)
        w = x - i0
        row = self.est.label[buses[has]]
        count = np.cumsum(order[row] < mm[:, None], axis=1)  # (queries, width)
        j0 = np.argmax(count > i0[:, None], axis=1)
        j1 = np.argmax(count > i1[:, None], axis=1)
        out[has] = sorted_f[row, j0] * (1.0 - w) + sorted_f[row, j1] * w
        return out

    def _sorted(self, width: int) -> tuple[IntArray, FloatArray]:
        """Every row's next ``width`` expected prices, sorted, with their time index."""
        if self._prefix is None or self._prefix[0] < width:
            f = self.ahead(width)
            order = np.argsort(f, axis=1, kind="stable")
            self._prefix = (width, order, np.take_along_axis(f, order, axis=1))
        # A wider cache serves as well: entries past a query's window are not counted.
        _, order, sorted_f = self._prefix
        return order, sorted_f
