"""Result rows as the roles produce them, before the recorder writes them."""

from __future__ import annotations

Row = tuple[object, ...]
Rows = list[Row]
Tables = dict[str, tuple[tuple[str, ...], Rows]]
"""Table name -> (column names, rows)."""
