"""Figures over several seeds: each column's mean and 95 % interval.

``dsosim compare --seeds N`` runs every model on the seeds ``s, s+1, ...,
s+N-1`` (``s`` the scenario's own seed, :func:`seed_list`): each seed draws
new DER fleets, clouds, load forecast errors and device responses. Per model
and numeric column the comparison reports the mean over the seeds and a
Student-t interval for that mean::

    mean +- t(0.975, N-1) * sd / sqrt(N)        (sd with N-1 degrees of freedom)

It assumes the per-seed values are independent draws of one distribution
(they are: one seed each) and is exact for normal ones; with few seeds it
is wide, as it should be. With one seed there is no interval (NaN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
LO, HI = "_lo", "_hi"
"""Suffixes of a column's interval bounds in the aggregated table."""


def seed_list(first: int, n: int) -> list[int]:
    """The seeds of an N-seed comparison: ``first, first+1, ..., first+n-1``."""
    if n < 1:
        raise ValueError(f"--seeds must be >= 1, got {n}")
    if first < 0:
        raise ValueError(f"seed must be >= 0, got {first}")
    return list(range(first, first + n))


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Mean and half width of the Student-t interval of the mean; NaN values
    are left out (a failed run), and the half width is NaN below two values."""
    x = np.asarray([v for v in values if v == v], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan
    half = float(
        stats.t.ppf(0.5 + confidence / 2.0, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    )
    return mean, half


def aggregate(runs: pd.DataFrame, *, by: str = "model") -> pd.DataFrame:
    """One row per ``by`` value from per-run rows (one per model and seed).

    Numeric columns become the mean (same name) and the interval bounds
    (``<col>_lo``, ``<col>_hi``); ``complete`` is true only if every run was;
    ``seeds`` counts the runs; other text columns keep their first value.
    Row order is the order of first appearance of each ``by`` value."""
    out = []
    skip = {by, "seed", "complete"}
    numeric = [
        c
        for c in runs.columns
        if c not in skip
        and pd.api.types.is_numeric_dtype(runs[c])
        and not pd.api.types.is_bool_dtype(runs[c])
    ]
    for key, group in runs.groupby(by, sort=False):
        row: dict[str, object] = {by: key, "seeds": len(group)}
        if "complete" in group:
            row["complete"] = bool(group["complete"].fillna(False).astype(bool).all())
        for c in runs.columns:
            if c in skip or c in numeric:
                continue
            row[c] = group[c].iloc[0]
        for c in numeric:
            mean, half = t_interval(group[c].tolist())
            row[c] = mean
            row[c + LO] = mean - half
            row[c + HI] = mean + half
        out.append(row)
    return pd.DataFrame(out)


def with_intervals(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``columns`` of an aggregated table as text ``mean [lo, hi]`` (for
    printing and the HTML report)."""
    shown = pd.DataFrame(index=table.index)
    for c in columns:
        if c not in table:
            continue
        if c + LO not in table:
            shown[c] = table[c]
            continue
        shown[c] = [
            _fmt(m) if lo != lo else f"{_fmt(m)} [{_fmt(lo)}, {_fmt(hi)}]"
            for m, lo, hi in zip(table[c], table[c + LO], table[c + HI], strict=True)
        ]
    return shown


def _fmt(x: float) -> str:
    return f"{x:.4g}" if x == x else ""
