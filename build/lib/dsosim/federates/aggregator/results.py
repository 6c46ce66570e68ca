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


def _value(x: Any) -> Any:
    if isinstance(x, (np.integer, np.bool_)):
        return int(x)
    return float(x)


def der_tables(aggregator: str, outcome: DispatchOutcome) -> Tables:
    """Every table row of one interval's outcome."""
    k = outcome.interval
    tables: Tables = {}
    tables["ders_bus"] = (
        BUS_COLUMNS,
        [
            (
                k,
                aggregator,
                bus,
                float(outcome.prices[i]),
                float(outcome.requested_mw[i]),
                float(outcome.target_mw[i]),
                float(outcome.actual_mw[i]),
                float(outcome.baseline_mw[i]),
                float(outcome.actual_mw[i] - outcome.requested_mw[i]),
            )
            for i, bus in enumerate(outcome.buses)
        ],
    )
    source = "published" if outcome.published else "learned"
    tables["price_forecast"] = (
        FORECAST_COLUMNS,
        [
            (
                k,
                aggregator,
                bus,
                source,
                float(outcome.expected_price[i]),
                float(outcome.prices[i]),
                float(outcome.forecast_low[i]),
                float(outcome.forecast_high[i]),
            )
            for i, bus in enumerate(outcome.buses)
        ],
    )
    type_rows = []
    for kind, t in outcome.by_type.items():
        at = np.flatnonzero(t.devices > 0)
        for i in at:
            type_rows.append(
                (
                    k,
                    aggregator,
                    outcome.buses[i],
                    kind,
                    int(t.devices[i]),
                    float(t.baseline_mw[i]),
                    float(t.min_mw[i]),
                    float(t.max_mw[i]),
                    float(t.dispatched_mw[i]),
                    float(t.actual_mw[i]),
                )
            )
        names = tuple(t.state)
        kinded = t.table in KIND_TABLES
        columns = KEY + (("kind",) if kinded else ()) + ("devices",) + names
        rows = [
            (
                k,
                aggregator,
                outcome.buses[i],
                *((kind,) if kinded else ()),
                int(t.devices[i]),
                *(_value(t.state[n][i]) for n in names),
            )
            for i in at
        ]
        if t.table in tables:
            tables[t.table][1].extend(rows)
        else:
            tables[t.table] = (columns, rows)
    tables["ders"] = (TYPE_COLUMNS, type_rows)
    return tables
