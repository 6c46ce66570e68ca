"""The day of sky at a site, computed with pvlib: solar position, clear-sky
irradiance and its transposition to tilted PV arrays, or a measured weather
profile transposed the same way.

This runs once per fleet, when the scenario is built (``runner.placement``)
or, failing a precomputed table, when a fleet is created. pvlib (with
pandas and scipy behind it) costs about two seconds to import, so it is
imported inside the functions that need it, never at federate start: the
aggregator federate gets the table from its config and only evaluates it
with numpy (``weather``).

Models (pvlib functions in brackets):

* solar position: NREL SPA (``solarposition.get_solarposition``);
* clear sky: Ineichen-Perez with the Linke turbidity climatology of the
  site and month (``Location.get_clearsky``);
* transposition to the array plane: Hay-Davies for the clear (or measured)
  sky, isotropic for the overcast sky (``irradiance.get_total_irradiance``);
* overcast sky: Kasten and Czeplak (1980) put the global irradiance under a
  full cloud cover at 25 % of the clear-sky value; it is all diffuse.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dsosim.federates.aggregator.specs import ORIENTATIONS, SiteSpec, SkyTable
from dsosim.federates.common import profiles

CLEAR_STEP_S = 300.0
"""Resolution of a computed clear-sky day, seconds."""
OVERCAST_FRACTION = 0.25
"""Global irradiance under full overcast, fraction of clear sky (Kasten-Czeplak)."""
PROFILE_COLUMNS = ("hour", "ghi", "dni", "dhi", "temp_air")
"""Columns of a measured weather profile CSV (hourly means; ``hour`` is the
start of the hour, 0-23, local standard time; irradiance W/m2, degC)."""
DECIMALS = 3
"""Table values are rounded to this many decimals (mW/m2, m degC): keeps the
federation config small and is far below any model's accuracy."""


def sky_table(
    site: SiteSpec, orientations: Sequence[str], *, profile_path: str | Path | None = None
) -> SkyTable:
    """The site's day of sky for PV arrays of the given ``orientations``.

    With ``profile_path`` (or ``site.profile``, read relative to the current
    directory), irradiance and temperature come from that measured profile
    and the fleet adds no clouds; otherwise the clear-sky day of
    ``site.day_of_year`` with the temperature cycle of ``site``.
    """
    names = tuple(sorted(set(orientations), key=list(ORIENTATIONS).index))
    path = profile_path if profile_path is not None else site.profile
    ghi: np.ndarray | None
    dni: np.ndarray | None
    dhi: np.ndarray | None
    if path is not None:
        hours, ghi, dni, dhi, temp = read_profile(path)
        step, offset = 3600.0, 1800.0
    else:
        step, offset = CLEAR_STEP_S, CLEAR_STEP_S / 2.0
        n = round(86_400.0 / step)
        hours = (offset + step * np.arange(n)) / 3600.0
        ghi = dni = dhi = None  # the clear-sky model gives them
        temp = profiles.daily_temperature(hours, site.temp_min_c, site.temp_max_c)
    clear, overcast = _plane_of_array(site, hours, names, ghi, dni, dhi)
    return SkyTable(
        step_s=step,
        offset_s=offset,
        orientations=names,
        poa_clear=tuple(_rounded(r) for r in clear),
        poa_overcast=tuple(_rounded(r) for r in overcast),
        temp_air_c=_rounded(temp),
        clouds=path is None,
    )


def _rounded(values: np.ndarray) -> tuple[float, ...]:
    return tuple(round(float(v), DECIMALS) + 0.0 for v in values)


def _plane_of_array(
    site: SiteSpec,
    hours: np.ndarray,
    names: tuple[str, ...],
    ghi: np.ndarray | None,
    dni: np.ndarray | None,
    dhi: np.ndarray | None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Plane-of-array irradiance per orientation: of the given (measured)
    sky, or of the clear sky when ``ghi`` is None; and of the overcast sky
    (equal to the first for a measured sky, whose clouds are in the data)."""
    import pandas as pd
    import pvlib

    tz = dt.timezone(dt.timedelta(hours=site.utc_offset_h))
    day = dt.datetime(2023, 1, 1, tzinfo=tz) + dt.timedelta(days=site.day_of_year - 1)
    times = pd.DatetimeIndex([day + dt.timedelta(hours=float(h)) for h in hours])
    # times carry the offset; the location needs no zone of its own
    where = pvlib.location.Location(site.latitude_deg, site.longitude_deg)
    sun = where.get_solarposition(times)
    measured = ghi is not None
    if ghi is None:
        sky = where.get_clearsky(times, model="ineichen", solar_position=sun)
        ghi, dni, dhi = (sky[c].to_numpy() for c in ("ghi", "dni", "dhi"))
    extra = pvlib.irradiance.get_extra_radiation(times).to_numpy()
    zenith, azimuth = sun["apparent_zenith"].to_numpy(), sun["azimuth"].to_numpy()
    ghi_ov = OVERCAST_FRACTION * ghi
    clear, overcast = [], []
    for name in names:
        tilt, az = _geometry(site, name)
        poa = _positive(
            pvlib.irradiance.get_total_irradiance(
                tilt,
                az,
                zenith,
                azimuth,
                dni,
                ghi,
                dhi,
                dni_extra=extra,
                albedo=site.albedo,
                model="haydavies",
            )["poa_global"]
        )
        clear.append(poa)
        if measured:
            overcast.append(poa)
            continue
        overcast.append(
            _positive(
                pvlib.irradiance.get_total_irradiance(
                    tilt,
                    az,
                    zenith,
                    azimuth,
                    np.zeros_like(ghi_ov),
                    ghi_ov,
                    ghi_ov,
                    albedo=site.albedo,
                    model="isotropic",
                )["poa_global"]
            )
        )
    return clear, overcast


def _positive(values: object) -> np.ndarray:
    return np.nan_to_num(np.maximum(np.asarray(values, dtype=float), 0.0))


def _geometry(site: SiteSpec, orientation: str) -> tuple[float, float]:
    azimuth = ORIENTATIONS[orientation]
    return (0.0, 180.0) if azimuth is None else (site.tilt_deg, azimuth)


def read_profile(path: str | Path) -> tuple[np.ndarray, ...]:
    """Read a measured weather profile: hours (mid-hour), ghi, dni, dhi, temp_air.

    The file is a CSV with the header :data:`PROFILE_COLUMNS` and one row
    per hour of one day (24 rows, hours 0 to 23 in order); lines starting
    with ``#`` are comments.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(line for line in f if not line.startswith("#")) if r]
    except OSError as exc:
        raise ValueError(f"weather profile {path}: cannot read it ({exc.strerror})") from None
    if not rows or tuple(c.strip() for c in rows[0]) != PROFILE_COLUMNS:
        raise ValueError(f"weather profile {path}: header must be {','.join(PROFILE_COLUMNS)}")
    body = rows[1:]
    if len(body) != 24:
        raise ValueError(f"weather profile {path}: needs 24 hourly rows, got {len(body)}")
    try:
        data = np.array([[float(x) for x in r] for r in body])
    except ValueError as exc:
        raise ValueError(f"weather profile {path}: {exc}") from None
    if data.shape[1] != len(PROFILE_COLUMNS) or not np.all(np.isfinite(data)):
        raise ValueError(f"weather profile {path}: every row needs {len(PROFILE_COLUMNS)} numbers")
    if not np.array_equal(data[:, 0], np.arange(24)):
        raise ValueError(f"weather profile {path}: hours must be 0, 1, ..., 23 in order")
    if np.any(data[:, 1:4] < 0.0) or np.any(data[:, 1:4] > 1500.0):
        raise ValueError(f"weather profile {path}: irradiance must be in [0, 1500] W/m2")
    hours = data[:, 0] + 0.5
    return hours, data[:, 1], data[:, 2], data[:, 3], data[:, 4]
