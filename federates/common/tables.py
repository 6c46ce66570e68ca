"""Result rows as the roles produce them, before the recorder writes them."""

from __future__ import annotations

Row = tuple[object, ...]
Rows = list[Row]
Tables = dict[str, tuple[tuple[str, ...], Rows]]
"""Table name -> (column names, rows)."""

TABLES_BY_ROLE: dict[str, tuple[str, ...]] = {
    "any": ("traffic", "realtime"),
    # forecast against actual: the ISO (load, prices), utilities (feeder), fleets
    "forecaster": ("forecasts",),
    "iso": (
        "market",
        "iso",
        "generators",
        "interface",
        "awards",
        "bids",
        "imbalance",
        "settlements",
        "day_ahead",
        "day_ahead_iso",
        "day_ahead_awards",
    ),
    # the utility: its feeder, and (models 2, 3, 5) the LDA market it runs
    "dso": ("feeder", "voltages", "branches", "der_locations", "expost", "overrides", "unwound"),
    # whoever runs an LDA market: the utility or the independent operator
    "dmo": (
        "bids",
        "dispatch",
        "linearisation",
        "constraints",
        "settlements",
        "trades",
        "day_ahead_dispatch",
    ),
    "aggregator": (
        "ders",
        "ders_bus",
        "ders_battery",
        "ders_pv",
        "ders_ev",
        "ders_thermal",
        "ders_load",
        "price_forecast",
    ),
    "hil": ("hil", "hil_answers", "hil_gateway"),
    # written by the recorder itself (payments it kept out of the books), never sent
    "recorder": ("ledger_refused",),
}
"""The result tables each kind of federate writes. The recorder refuses rows of
any other table from it (``RecorderConfig.writers``, built from this): a new
table must be declared here, next to the role that writes it."""
