"""Result tables of one aggregator interval (what the federate records).

Rows are per bus, aggregated over the devices there (never per device, to
keep messages small), with stable column types: ``int`` for counts,
``float`` for everything else.

* ``ders_bus``: per bus: the price and set-point received, the set-point
  clipped into the curve, what the fleet did and would have done without a
  market; ``deviation_mw = actual - setpoint``.
* ``ders``: per bus and device type: devices, no-market baseline (this
  interval's no-market action from the present state, not a separate
  no-market trajectory), the
  deliverable range offered, the type's share of the set-point
  (``dispatched_mw``) and what the devices did (``actual_mw``: response
  error and comfort overrides included).
* ``price_forecast``: per bus: the price the fleet expected for this
  interval before it came (``expected_price``), the price it received,
  ``source`` (``learned`` or ``published``: a day-ahead price) and the
  lowest and highest price it expects over its planning horizon after the
  interval (``prices``: what batteries, EVs and thermostats plan against).
* ``ders_battery``, ``ders_pv``, ``ders_ev``, ``ders_thermal`` (with
  ``kind``: hvac, water_heater) and ``ders_load`` (``kind``: inflexible,
  curtailable, shiftable): per bus, each type's state and flows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dsosim.federates.aggregator.fleet import DispatchOutcome
from dsosim.federates.common.tables import Tables

KEY = ("interval", "aggregator", "bus")
BUS_COLUMNS = (
    *KEY,
    "price",
    "setpoint_mw",
    "target_mw",
    "actual_mw",
    "baseline_mw",
    "deviation_mw",
)
FORECAST_COLUMNS = (
    *KEY,
    "source",
    "expected_price",
    "price",
    "horizon_low",
    "horizon_high",
)
TYPE_COLUMNS = (
    *KEY,
    "type",
    "devices",
    "baseline_mw",
    "min_mw",
    "max_mw",
    "dispatched_mw",
    "actual_mw",
)
KIND_TABLES = ("ders_thermal", "ders_load")
"""Tables shared by several device types, told apart by a ``kind`` column."""


def _column(values: Any, at: Any = None) -> list[Any]:
    """A column of Python values: ``int`` for integer and boolean arrays,
    ``float`` otherwise (``at``: the entries to take)."""
    a = np.asarray(values)
    if at is not None:
        a = a[at]
    if a.dtype.kind in "biu":
        return a.astype(np.int64).tolist()
    return a.astype(float).tolist()


def der_tables(aggregator: str, outcome: DispatchOutcome) -> Tables:
    """Every table row of one interval's outcome."""
    k = outcome.interval
    tables: Tables = {}
    buses = outcome.buses
    n = len(buses)
    ks, aggs = [k] * n, [aggregator] * n
    prices, requested = _column(outcome.prices), _column(outcome.requested_mw)
    tables["ders_bus"] = (
        BUS_COLUMNS,
        list(
            zip(
                ks,
                aggs,
                buses,
                prices,
                requested,
                _column(outcome.target_mw),
                _column(outcome.actual_mw),
                _column(outcome.baseline_mw),
                _column(outcome.actual_mw - outcome.requested_mw),
                strict=True,
            )
        ),
    )
    source = "published" if outcome.published else "learned"
    tables["price_forecast"] = (
        FORECAST_COLUMNS,
        list(
            zip(
                ks,
                aggs,
                buses,
                [source] * n,
                _column(outcome.expected_price),
                prices,
                _column(outcome.forecast_low),
                _column(outcome.forecast_high),
                strict=True,
            )
        ),
    )
    type_rows: list[tuple[Any, ...]] = []
    for kind, t in outcome.by_type.items():
        at = np.flatnonzero(t.devices > 0)
        m = len(at)
        where = [buses[i] for i in at.tolist()]
        devices = _column(t.devices, at)
        type_rows.extend(
            zip(
                [k] * m,
                [aggregator] * m,
                where,
                [kind] * m,
                devices,
                _column(t.baseline_mw, at),
                _column(t.min_mw, at),
                _column(t.max_mw, at),
                _column(t.dispatched_mw, at),
                _column(t.actual_mw, at),
                strict=True,
            )
        )
        state_names = tuple(t.state)
        kinded = t.table in KIND_TABLES
        columns = KEY + (("kind",) if kinded else ()) + ("devices",) + state_names
        rows = list(
            zip(
                [k] * m,
                [aggregator] * m,
                where,
                *(([kind] * m,) if kinded else ()),
                devices,
                *(_column(t.state[name], at) for name in state_names),
                strict=True,
            )
        )
        if t.table in tables:
            tables[t.table][1].extend(rows)
        else:
            tables[t.table] = (columns, rows)
    tables["ders"] = (TYPE_COLUMNS, type_rows)
    return tables
