"""Price expectations: what an aggregator believes the market will pay, per
bus and interval, and the order statistics devices price their offers from.

The forecast is learned from the run's own prices (:class:`PriceEstimate`):

* **before a time-of-day slot has been seen**, the expected price is a
  regression ``alpha + beta * x(slot)`` on the *prior* ``x`` (the fleet's
  ``price_prior``: a level, or a daily shape such as the price level times the
  ISO's published system load forecast, see ``FleetSpec``), fitted by
  exponentially weighted least squares to every price received so far (memory
  ``price_memory_h``). The prior itself counts as ``prior_weight``
  observations with ``price = x``, at its mean plus and minus 10 % (so
  ``alpha = 0, beta = 1`` until prices arrive, a flat prior learns a level
  first, and a slope once prices have spread);
* **once a slot has been seen** (on an earlier day, or earlier today for the
  slots a 24-hour horizon reaches tomorrow), its expected price is the
  exponentially smoothed price of that slot: the first price replaces the
  regression, later ones enter with weight ``max(price_smoothing, 1/n)``.

Buses that received identical price sequences share one row, so the common
case of one price for the whole feeder keeps one row to learn and sort per
interval however many buses and devices there are.

**Published prices (the day-ahead interface).** :meth:`PriceEstimate.publish`
fixes the expected price of given future intervals (a day-ahead market's
prices for the next day, say): where a published price exists it replaces
the learned one in every outlook, for every bus. Learning carries on from the
prices actually received, so intervals past the published window still get
the learned forecast. ``Fleet.publish_prices`` is the entry point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dsosim.federates.common.arrays import FloatArray, IntArray


def order_stat(sorted_rows: FloatArray, rows: IntArray, position: FloatArray) -> FloatArray:
    """Value at fractional ``position`` along ascending ``sorted_rows[rows]``,
    linearly interpolated and clamped to the row.

    >>> order_stat(np.array([[1.0, 2.0, 4.0]]), np.array([0, 0]), np.array([0.5, 5.0])).tolist()
    [1.5, 4.0]
    """
    width = sorted_rows.shape[1]
    x = np.clip(position, 0.0, width - 1)
    i0 = x.astype(np.intp)  # x >= 0: truncation is the floor
    i1 = i0 + 1
    np.minimum(i1, width - 1, out=i1)
    w = np.subtract(x, i0, out=x)
    start = (rows * width).reshape(rows.shape + (1,) * (x.ndim - rows.ndim))
    i0 += start
    i1 += start
    flat = sorted_rows.ravel()
    # flat[i0] * (1 - w) + flat[i1] * w, in place
    upper = np.take(flat, i1)
    upper *= w
    out = np.take(flat, i0)
    out *= np.subtract(1.0, w, out=w)
    out += upper
    return out


class PriceEstimate:
    """Learned expected price per bus and interval (see the module docstring).

    ``label[bus]`` -> row; each row holds its regression statistics, its
    smoothed price per slot and how often each slot was seen. Groups of buses
    only ever split (when their prices differ).
    """

    def __init__(
        self,
        n_bus: int,
        prior: FloatArray,
        smoothing: float,
        *,
        memory: float = 288.0,
        prior_weight: float = 12.0,
        n_intervals: int = 0,
    ) -> None:
        self.x = np.asarray(prior, dtype=float).copy()
        self.label = np.zeros(n_bus, dtype=np.intp)
        self.smoothing = smoothing
        self.decay = float(np.exp(-1.0 / memory))
        # the prior as pseudo-observations (y = x) that never fade: half at its
        # mean minus 10 % of it (at least 1 $/MWh), half at its mean plus that, so
        # a flat prior still pins beta to 1 and a shaped one yields to the prices
        mean = float(self.x.mean())
        spread = max(0.1 * abs(mean), 1.0)
        w = prior_weight
        self._prior_stats = np.array([w, w * mean, w * mean, w * (mean**2 + spread**2), 0.0])
        self._prior_stats[4] = self._prior_stats[3]
        self.stats = np.zeros((1, 5))  # S0, Sx, Sy, Sxx, Sxy of the prices received
        self.smoothed = np.zeros((1, len(self.x)))
        self.seen = np.zeros((1, len(self.x)), dtype=np.int64)
        self.published = np.full(n_intervals, np.nan)
        self._any_published = False  # whether ``published`` holds a finite price
        self._rows: FloatArray | None = None

    @property
    def slots(self) -> int:
        return len(self.x)

    def coefficients(self) -> FloatArray:
        """``(alpha, beta)`` of every row's regression, shape ``(rows, 2)``."""
        s0, sx, sy, sxx, sxy = (self.stats + self._prior_stats).T
        beta = (s0 * sxy - sx * sy) / (s0 * sxx - sx * sx)
        return np.column_stack([(sy - beta * sx) / s0, beta])

    @property
    def rows(self) -> FloatArray:
        """Every row's learned expected price per slot, ``(rows, slots)``."""
        if self._rows is None:
            c = self.coefficients()
            fit = c[:, :1] + c[:, 1:] * self.x[None, :]
            self._rows = np.where(self.seen > 0, self.smoothed, fit)
        return self._rows

    def full(self) -> FloatArray:
        """The learned estimate as a ``(n_bus, n_slots)`` array."""
        return self.rows[self.label]

    def publish(self, first: int, prices: Sequence[float]) -> None:
        """Expected prices of intervals ``first, first + 1, ...`` are these
        (e.g. day-ahead prices), for every bus; intervals past the ones this
        estimate covers (``n_intervals``) are ignored."""
        values = np.asarray(prices, dtype=float)
        if first < 0 or values.ndim != 1 or not np.all(np.isfinite(values)):
            raise ValueError(
                f"published prices need a first interval >= 0 (got {first}) and finite "
                f"values in one sequence"
            )
        end = min(first + len(values), len(self.published))
        if end > first:
            self.published[first:end] = values[: end - first]
            self._any_published = True

    def window(self, first: int, n: int) -> FloatArray:
        """Every row's learned price of intervals ``first ... first + n - 1``:
        ``rows[:, intervals % slots]`` copied slice by slice, in the column-major
        layout that indexing gives (sums along a row add in that order)."""
        rows, slots = self.rows, self.slots
        out = np.empty((len(rows), n), order="F")
        a, done = first % slots, 0
        while done < n:
            take = min(n - done, slots - a)
            out[:, done : done + take] = rows[:, a : a + take]
            done += take
            a = 0
        return out

    def forecast(self, buses: IntArray, intervals: IntArray) -> FloatArray:
        """Expected price per bus (rows) and absolute interval (columns)."""
        out = self.rows[self.label[buses]][:, intervals % self.slots]
        pub = self.published_at(intervals)
        if pub is not None:
            out = np.where(np.isfinite(pub)[None, :], pub[None, :], out)
        return out

    def published_at(self, intervals: IntArray) -> FloatArray | None:
        if not self._any_published:
            return None
        n = len(self.published)
        inside = intervals < n
        pub = np.full(len(intervals), np.nan)
        pub[inside] = self.published[intervals[inside]]
        return pub if np.any(np.isfinite(pub)) else None

    def update(self, bus_idx: IntArray, prices: FloatArray, slot: int) -> None:
        """Learn ``prices`` received at buses ``bus_idx`` in time-of-day ``slot``."""
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
        old = self.label[first]
        stats, smoothed, seen = self.stats[old], self.smoothed[old], self.seen[old]
        upd = got[first]
        y, x = price[first][upd], self.x[slot]
        stats[upd] *= self.decay
        stats[upd] += np.column_stack(
            [np.ones_like(y), np.full_like(y, x), y, np.full_like(y, x * x), x * y]
        )
        n = seen[upd, slot] + 1
        w = np.maximum(self.smoothing, 1.0 / n)
        smoothed[upd, slot] += w * (y - smoothed[upd, slot])
        seen[upd, slot] = n
        self.label[order] = np.cumsum(new) - 1
        self.stats, self.smoothed, self.seen = stats, smoothed, seen
        self._rows = None


class Outlook:
    """Expected prices of the intervals after ``t``, as devices need them.

    Built once per interval; every query takes the buses of the devices
    asking and works on the distinct estimate rows among them.
    """

    def __init__(self, estimate: PriceEstimate, t: int) -> None:
        self.est = estimate
        self.t = t
        self._prefix: tuple[int, IntArray, FloatArray] | None = None
        self._ahead: dict[int, FloatArray] = {}

    def ahead(self, n: int) -> FloatArray:
        """Every row's expected prices of the next ``n`` intervals (t+1 ... t+n);
        computed once per ``n`` (do not modify)."""
        out = self._ahead.get(n)
        if out is None:
            out = self.est.window(self.t + 1, n)
            pub = self.est.published_at(self.t + 1 + np.arange(n))
            if pub is not None:
                out = np.where(np.isfinite(pub)[None, :], pub[None, :], out)
            self._ahead[n] = out
        return out

    def now(self, buses: IntArray) -> FloatArray:
        """Expected price of interval ``t`` itself, per bus in ``buses``."""
        return self.est.forecast(buses, np.array([self.t]))[:, 0]

    def _distinct_rows(self, buses: IntArray) -> tuple[IntArray, IntArray]:
        """``np.unique(label[buses], return_inverse=True)`` without a sort: the
        labels are row numbers, fewer than the buses."""
        label = self.est.label[buses]
        present = np.zeros(len(self.est.stats), dtype=bool)  # one per row
        present[label] = True
        renumber = np.cumsum(present) - 1
        return np.flatnonzero(present), renumber[label]

    def sorted_ahead(self, buses: IntArray, n: int) -> tuple[FloatArray, IntArray]:
        """Next ``n`` expected prices sorted ascending, one row per distinct
        estimate among ``buses``, and each bus's row."""
        rows, row_of = self._distinct_rows(buses)
        intervals = self.t + 1 + np.arange(n)
        if n == self.est.slots and self.est.published_at(intervals) is None:
            # With a one-day horizon the future is every slot once, in any order.
            return np.sort(self.est.rows[rows], axis=1), row_of
        return np.sort(self.ahead(n)[rows], axis=1), row_of

    def cycle_windows(self, buses: IntArray, n: int) -> tuple[list[FloatArray], IntArray]:
        """The next ``n`` expected prices cut the way a storage cycle sees
        them, one row per distinct estimate among ``buses``, and each bus's row.

        With the *valley* the lowest expected price (first if tied) and the
        *peak* the highest, four windows, each starting at ``t + 1``:

        0. **to the valley**: energy held now is sold before it can be bought
           back there, so it is worth one of these prices;
        1. **to the first peak after the valley**: energy sold now is bought
           back there at the latest;
        2. **to the peak**: room filled now is filled before that, where the
           energy would be sold;
        3. **to the first valley after the peak**: energy bought now is sold
           there at the latest.

        Windows 0 and 3 (values) are sorted ascending and padded at the low end
        with their lowest price; 1 and 2 (costs) are sorted ascending and padded
        at the high end with their highest. All are ``n`` wide, so positions
        counted over the whole horizon (``n - k`` for the ``k``-th highest,
        ``k - 1`` for the ``k``-th lowest) clamp to the window's extreme when
        the window is shorter.
        """
        rows, row_of = self._distinct_rows(buses)
        f = self.ahead(n)[rows]
        col = np.arange(n)[None, :]
        valley, peak = np.argmin(f, axis=1), np.argmax(f, axis=1)
        after_valley = np.where(col >= valley[:, None], f, -np.inf)
        after_peak = np.where(col >= peak[:, None], f, np.inf)
        ends = (valley, np.argmax(after_valley, axis=1), peak, np.argmin(after_peak, axis=1))
        out = []
        for k, end in enumerate(ends):
            inside = col <= end[:, None]
            if k in (0, 3):
                w = np.sort(np.where(inside, f, -np.inf), axis=1)
                out.append(np.maximum(w, np.where(inside, f, np.inf).min(axis=1, keepdims=True)))
            else:
                w = np.sort(np.where(inside, f, np.inf), axis=1)
                out.append(np.minimum(w, np.where(inside, f, -np.inf).max(axis=1, keepdims=True)))
        return out, row_of

    def mean_ahead(self, buses: IntArray, n: int) -> FloatArray:
        """Mean expected price of the next ``n`` intervals, per bus in ``buses``."""
        return self.ahead(n).mean(axis=1)[self.est.label[buses]]

    def order_stat_ahead(self, buses: IntArray, m: IntArray, position: FloatArray) -> FloatArray:
        """The ``position``-th smallest (0-based, fractional positions
        interpolated, clamped to ``[0, m - 1]``) of the next ``m`` expected
        prices, per query; ``m = 0`` (no later interval) gives +inf.

        Each row of expected prices is sorted once (with the time index of
        every sorted entry). The first ``m`` of a row, sorted, are its sorted
        entries whose time index is below ``m``, in order. Per distinct (row,
        ``m``) pair among the queries, one ``(pairs, width)`` pass marks those
        entries; every query reads its two neighbours off the marked positions
        (the entries are never laid out). The pairs are at most rows x width
        however many devices ask.
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
        pair_key = row * (width + 1) + mm
        present = np.zeros(len(order) * (width + 1), dtype=bool)
        present[pair_key] = True
        pairs = np.flatnonzero(present)
        pair_of = np.cumsum(present) - 1
        p_row, p_m = np.divmod(pairs, width + 1)
        # (pairs, width), flattened: whether each sorted entry is among the pair's first m.
        # A pair's row holds exactly m of them (the time indices are a permutation), so
        # the marked entries, in order, are each pair's first m sorted, pair after pair.
        inside = (order[p_row] < p_m[:, None]).ravel()
        marked = np.flatnonzero(inside)
        first = np.cumsum(p_m) - p_m  # where each pair's entries start among the marked
        q = pair_of[pair_key]
        at = np.take(marked, np.tile(first[q], 2) + np.concatenate([i0, i1]))
        # a marked position in pair q's row: the same column of q's estimate row, sorted
        span = order.shape[1]  # at least width: a wider cache serves as well
        at += np.tile((p_row[q] - q) * span, 2)
        value = np.take(sorted_f, at)
        n = len(q)
        out[has] = value[:n] * (1.0 - w) + value[n:] * w
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
