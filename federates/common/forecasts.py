"""The ``forecasts`` table: what a party forecast for each day-ahead period
beside what then happened, one row per period and quantity.

A federate registers a day's forecasts when it makes them (at the day-ahead
gate closure), observes the actual value every interval, and gets the rows
of a period once its last interval is observed: the period's forecast and
the mean of the actual values over its intervals. Periods the run does not
reach are not recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

from dsosim.federates.common.tables import Rows

FORECAST_COLUMNS = ("interval", "day", "period", "source", "quantity", "forecast", "actual")
"""``interval``: the period's first interval; ``source``: who forecast (the
ISO, a utility, an aggregator); ``quantity``: what, with its unit."""


class ForecastLog:
    """Forecasts per (day, period, quantity) and the actuals that meet them."""

    def __init__(self, source: str, per_day: int, per_period: int) -> None:
        if per_day % per_period:
            raise ValueError(f"a period ({per_period} intervals) must divide a day ({per_day})")
        self.source = source
        self.per_day = per_day
        self.per_period = per_period
        self._forecast: dict[tuple[int, str], float] = {}  # (first interval of period, quantity)
        self._actual: dict[tuple[int, str], list[float]] = {}

    def expect(self, day: int, quantity: str, per_period: Sequence[float]) -> None:
        """The forecast of ``quantity`` for every period of ``day``."""
        first = day * self.per_day
        for p, value in enumerate(per_period):
            self._forecast[(first + p * self.per_period, quantity)] = float(value)

    def observe(self, interval: int, quantity: str, value: float) -> None:
        """The actual value of ``quantity`` in ``interval`` (kept only where a
        forecast covers it)."""
        start = interval - interval % self.per_period
        if (start, quantity) in self._forecast:
            self._actual.setdefault((start, quantity), []).append(float(value))

    def rows_after(self, interval: int) -> Rows:
        """Rows of the periods whose last interval is ``interval`` (and forget them)."""
        if (interval + 1) % self.per_period:
            return []
        start = interval + 1 - self.per_period
        rows: Rows = []
        for key in sorted(k for k in self._forecast if k[0] == start):
            values = self._actual.pop(key, [])
            forecast = self._forecast.pop(key)
            if len(values) != self.per_period:
                continue  # not observed throughout (the run started or stopped inside it)
            rows.append(
                (
                    start,
                    start // self.per_day,
                    (start % self.per_day) // self.per_period,
                    self.source,
                    key[1],
                    forecast,
                    sum(values) / len(values),
                )
            )
        return rows
