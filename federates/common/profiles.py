"""Deterministic daily profiles: customer load shapes, PV output, system load.

Every public function takes ``(n_intervals, interval_s, seed, ...)`` and
returns a float array of length ``n_intervals``, one value per market
interval, in per-unit of the quantity's peak (loads) or rating (PV).

Conventions shared by all functions:

* interval ``k`` covers ``[start_s + k * interval_s, start_s + (k + 1) * interval_s)``
  seconds after midnight of day 0; clock time is taken as local solar time
  (no time zone, no daylight saving).
* a value is the **average** over its interval (sampled at most every 60 s
  and averaged), so a day at 300 s and a day at 3600 s carry the same energy
  and the shapes stay consistent whatever the market interval.
* runs longer than a day repeat the daily load shapes; the PV cloud process
  runs on continuously.
* the same arguments always give the same array; the seed only drives the
  random parts (PV clouds, optional load noise).

The shapes are smooth approximations, not measured data. Each function says
what it approximates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np

from dsosim.federates.common.arrays import FloatArray

SECONDS_PER_DAY = 86_400.0
SUBSTEP_S = 60.0
"""Finest sampling used to average a shape over an interval, seconds."""


# ----------------------------------------------------------------- helpers


def interval_hours(n_intervals: int, interval_s: float = 300.0, start_s: float = 0.0) -> FloatArray:
    """Hour of day (0 <= h < 24) at the middle of each interval.

    >>> interval_hours(4, 21_600.0).tolist()
    [3.0, 9.0, 15.0, 21.0]
    """
    _check_grid(n_intervals, interval_s)
    mid = start_s + (np.arange(n_intervals) + 0.5) * interval_s
    return (mid % SECONDS_PER_DAY) / 3600.0


def _check_grid(n_intervals: int, interval_s: float) -> None:
    if not isinstance(n_intervals, (int, np.integer)) or n_intervals < 0:
        raise ValueError(f"n_intervals must be an integer >= 0, got {n_intervals!r}")
    if not (math.isfinite(interval_s) and interval_s > 0.0):
        raise ValueError(f"interval_s must be finite and > 0, got {interval_s!r}")


def sample_times(n_intervals: int, interval_s: float, start_s: float) -> FloatArray:
    """Seconds since midnight of day 0 at the sub-samples of each interval,
    shape ``(n_intervals, k)`` with ``k`` samples evenly inside each interval."""
    _check_grid(n_intervals, interval_s)
    k = max(1, math.ceil(interval_s / SUBSTEP_S))
    offsets = (np.arange(k) + 0.5) * (interval_s / k)
    return start_s + np.arange(n_intervals)[:, None] * interval_s + offsets[None, :]


def _interval_mean(
    shape_of_hour: Callable[[FloatArray], FloatArray],
    n_intervals: int,
    interval_s: float,
    start_s: float,
) -> FloatArray:
    """Interval averages of a periodic daily shape given as a function of hour."""
    hours = (sample_times(n_intervals, interval_s, start_s) % SECONDS_PER_DAY) / 3600.0
    return shape_of_hour(hours).mean(axis=1)


def _bump(hour: FloatArray, centre_h: float, width_h: float) -> FloatArray:
    """Gaussian bump on the 24 h circle (so a bump near midnight wraps)."""
    d = (hour - centre_h + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / width_h) ** 2)


def _logistic(x: FloatArray) -> FloatArray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _peak_normalised(raw: Callable[[FloatArray], FloatArray]) -> Callable[[FloatArray], FloatArray]:
    """Scale a daily shape so that its maximum over the day (1 min grid) is 1."""
    fine = (np.arange(1440) + 0.5) / 60.0
    peak = float(raw(fine).max())
    return lambda hour: raw(hour) / peak


def _with_noise(values: FloatArray, noise: float, seed: int | None) -> FloatArray:
    """Multiply by ``1 + noise * N(0, 1)`` per interval (independent draws),
    floored at zero. ``noise = 0`` returns the values unchanged."""
    if noise < 0.0 or not math.isfinite(noise):
        raise ValueError(f"noise must be finite and >= 0, got {noise!r}")
    if noise == 0.0:
        return values
    rng = np.random.default_rng(seed)
    return np.maximum(values * (1.0 + noise * rng.standard_normal(values.shape)), 0.0)


# --------------------------------------------------------------- load shapes


def _residential_raw(hour: FloatArray) -> FloatArray:
    # Night base, a morning bump (getting up), a small midday occupancy
    # bump, and the dominant evening peak (cooking, lighting, appliances).
    return (
        0.30
        + 0.30 * _bump(hour, 7.5, 1.3)
        + 0.12 * _bump(hour, 13.0, 3.0)
        + 0.70 * _bump(hour, 19.5, 2.2)
    )


def _commercial_raw(hour: FloatArray) -> FloatArray:
    # Closed-building base (HVAC setback, refrigeration, IT), occupied
    # plateau from about 07:00 to 19:00 with a mid-afternoon cooling hump.
    occupied = _logistic((hour - 7.0) / 0.6) * _logistic((19.0 - hour) / 0.8)
    return 0.35 + 0.55 * occupied + 0.10 * occupied * _bump(hour, 15.0, 2.5)


_RESIDENTIAL = _peak_normalised(_residential_raw)
_COMMERCIAL = _peak_normalised(_commercial_raw)


def _wholesale_raw(hour: FloatArray) -> FloatArray:
    # System load as a mix of customer classes plus flat industrial load.
    return 0.30 + 0.40 * _RESIDENTIAL(hour) + 0.30 * _COMMERCIAL(hour)


_WHOLESALE = _peak_normalised(_wholesale_raw)


def residential_load(
    n_intervals: int,
    interval_s: float = 300.0,
    seed: int | None = None,
    *,
    noise: float = 0.0,
    start_s: float = 0.0,
) -> FloatArray:
    """Residential load, per unit of its daily peak.

    Approximates the typical weekday shape of residential feeders seen in
    load-research data (e.g. utility class load profiles): a night minimum
    near 0.35 pu around 03:00-04:00, a morning bump around 07:30, a midday
    plateau and the daily peak (1.0 pu) in the evening, around 19:30.
    ``noise`` (default 0) adds independent multiplicative Gaussian noise per
    interval, drawn from ``seed``.
    """
    values = _interval_mean(_RESIDENTIAL, n_intervals, interval_s, start_s)
    return _with_noise(values, noise, seed)


def commercial_load(
    n_intervals: int,
    interval_s: float = 300.0,
    seed: int | None = None,
    *,
    noise: float = 0.0,
    start_s: float = 0.0,
) -> FloatArray:
    """Commercial (office / retail) load, per unit of its daily peak.

    Approximates a weekday commercial building: about 0.35 pu when closed,
    ramps up around 07:00 and down around 19:00 (logistic edges), with the
    peak in the mid afternoon from cooling. ``noise`` as in
    :func:`residential_load`.
    """
    values = _interval_mean(_COMMERCIAL, n_intervals, interval_s, start_s)
    return _with_noise(values, noise, seed)


def wholesale_load(
    n_intervals: int,
    interval_s: float = 300.0,
    seed: int | None = None,
    *,
    noise: float = 0.0,
    start_s: float = 0.0,
) -> FloatArray:
    """Transmission-system load, per unit of its daily peak.

    Built as 40 % residential + 30 % commercial + 30 % flat industrial load,
    which gives the familiar summer-weekday system shape of a large ISO: a
    minimum of about 0.6 pu around 03:00 and a broad late-afternoon to
    evening peak around 18:30. ``noise`` as in :func:`residential_load`.
    """
    values = _interval_mean(_WHOLESALE, n_intervals, interval_s, start_s)
    return _with_noise(values, noise, seed)


# ------------------------------------------------------- weather and usage


def daily_temperature(
    hours: FloatArray, t_min: float, t_max: float, *, hour_min: float = 5.0, hour_max: float = 15.0
) -> FloatArray:
    """Outdoor air temperature over a day, degC, at hours of day ``hours``.

    Two half cosines: rising from ``t_min`` at ``hour_min`` (around dawn)
    to ``t_max`` at ``hour_max`` (mid afternoon), then falling for the
    remaining hours back to the next day's minimum: the usual asymmetric
    shape of a fair-weather day (a slow evening cool-down). Continuous and
    periodic.

    >>> daily_temperature(np.array([5.0, 15.0, 10.0]), 20.0, 30.0).tolist()
    [20.0, 30.0, 25.0]
    """
    if not t_min <= t_max:
        raise ValueError(f"t_min {t_min} must not exceed t_max {t_max}")
    if not 0.0 <= hour_min < hour_max < 24.0:
        raise ValueError("need 0 <= hour_min < hour_max < 24")
    rise = hour_max - hour_min
    since = (np.asarray(hours, dtype=float) - hour_min) % 24.0
    phase = np.where(since <= rise, since / rise, 1.0 + (since - rise) / (24.0 - rise))
    return t_min + (t_max - t_min) * 0.5 * (1.0 - np.cos(np.pi * phase))


def _hot_water_raw(hour: FloatArray) -> FloatArray:
    # Showers and kitchen: a sharp morning peak, a broad evening one and a
    # small midday use; almost nothing at night.
    return (
        0.05
        + 1.0 * _bump(hour, 7.0, 1.0)
        + 0.35 * _bump(hour, 12.5, 1.5)
        + 0.8 * _bump(hour, 19.5, 1.8)
    )


_HW_FINE = (np.arange(1440) + 0.5) / 60.0
_HW_MEAN = float(_hot_water_raw(_HW_FINE).mean())


def hot_water_draw(hours: FloatArray) -> FloatArray:
    """Domestic hot-water use at hours of day ``hours``, per unit of the
    daily mean (so it averages 1 over a day): morning peak around 07:00,
    evening peak around 19:30, a midday shoulder. Approximates the shape of
    typical residential draw profiles (e.g. the ASHRAE / NREL household
    schedules), not measured data."""
    return _hot_water_raw(np.asarray(hours, dtype=float)) / _HW_MEAN


def ar1_paths(
    n_paths: int,
    n_steps: int,
    step_s: float,
    time_constant_s: float,
    seed: int | np.random.SeedSequence | None,
) -> FloatArray:
    """``n_paths`` independent stationary Gaussian AR(1) paths (unit
    variance, correlation ``exp(-step_s / time_constant_s)`` between
    neighbours), shape ``(n_steps, n_paths)``, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    phi = math.exp(-step_s / time_constant_s)
    gain = math.sqrt(1.0 - phi * phi)
    shocks = rng.standard_normal((n_steps, n_paths))
    out = np.empty((n_steps, n_paths))
    previous = rng.standard_normal(n_paths)
    for i in range(n_steps):
        previous = phi * previous + gain * shocks[i]
        out[i] = previous
    return out


# ------------------------------------------------------------------------ PV


def _cos_zenith(t_s: FloatArray, latitude_deg: float, day_of_year: float) -> FloatArray:
    """Cosine of the solar zenith angle at times ``t_s`` (seconds since
    midnight of day 0, local solar time). Declination from Cooper (1969)."""
    doy = day_of_year + t_s / SECONDS_PER_DAY
    decl = np.radians(23.45) * np.sin(2.0 * np.pi * (284.0 + doy) / 365.0)
    hour_angle = np.radians(15.0 * ((t_s % SECONDS_PER_DAY) / 3600.0 - 12.0))
    lat = math.radians(latitude_deg)
    return math.sin(lat) * np.sin(decl) + math.cos(lat) * np.cos(decl) * np.cos(hour_angle)


def _clear_sky_pu(
    t_s: FloatArray, latitude_deg: float, day_of_year: float, pr: float
) -> FloatArray:
    """Haurwitz (1945) clear-sky global horizontal irradiance,
    ``1098 cos Z exp(-0.057 / cos Z)`` W/m2, as PV output per unit of the
    rating (1000 W/m2 at standard test conditions) times a performance
    ratio, capped at 1. Horizontal plane: no tilt or tracking."""
    cz = _cos_zenith(t_s, latitude_deg, day_of_year)
    up = cz > 0.0
    ghi = np.zeros_like(cz)
    ghi[up] = 1098.0 * cz[up] * np.exp(-0.057 / cz[up])
    return np.minimum(pr * ghi / 1000.0, 1.0)


def cloud_cover(
    t_s: FloatArray, start_s: float, cloudiness: float, time_constant_s: float, seed: int | None
) -> FloatArray:
    """Cloud cover in [0, 1] at times ``t_s``.

    A latent Gaussian Ornstein-Uhlenbeck process (unit variance, correlation
    time ``time_constant_s``) is generated on a 60 s grid from ``seed`` and
    mapped through a smoothed threshold so that the sky is overcast roughly
    a fraction ``cloudiness`` of the time: passing clouds rather than a
    validated irradiance model. The grid does not depend on the interval
    length, so one seed gives the same weather at any market resolution.
    """
    if cloudiness == 0.0:
        return np.zeros_like(t_s)
    end = float(t_s.max()) if t_s.size else start_s
    n = math.ceil((end - start_s) / SUBSTEP_S) + 2
    rng = np.random.default_rng(seed)
    phi = math.exp(-SUBSTEP_S / time_constant_s)
    shocks = rng.standard_normal(n)
    z0 = rng.standard_normal()
    # AR(1) recursion latent[i] = phi * latent[i-1] + sqrt(1 - phi^2) * shock[i],
    # started from phi * z0 (a plain loop: scipy.signal costs 2 s to import in
    # every federate process, and a day is only ~1,440 steps).
    gain = math.sqrt(1.0 - phi * phi)
    latent = np.empty(n)
    previous = z0
    for i, shock in enumerate(shocks.tolist()):
        previous = phi * previous + gain * shock
        latent[i] = previous
    grid = start_s + np.arange(n) * SUBSTEP_S
    z = np.interp(t_s, grid, latent)
    threshold = NormalDist().inv_cdf(1.0 - cloudiness) if cloudiness < 1.0 else -math.inf
    return _normal_cdf((z - threshold) / 0.25)


_erf = np.frompyfunc(math.erf, 1, 1)


def _normal_cdf(x: FloatArray) -> FloatArray:
    """Standard normal CDF, elementwise (stdlib erf; avoids importing scipy)."""
    erf = np.asarray(_erf(np.asarray(x, dtype=float) / math.sqrt(2.0)), dtype=float)
    return 0.5 * (1.0 + erf)


def pv_clear_sky(
    n_intervals: int,
    interval_s: float = 300.0,
    seed: int | None = None,
    *,
    latitude_deg: float = 35.0,
    day_of_year: float = 172.0,
    performance_ratio: float = 0.85,
    start_s: float = 0.0,
) -> FloatArray:
    """Clear-sky PV output per unit of rating (no clouds; ``seed`` unused,
    kept for the common signature). See :func:`pv_output`."""
    t = sample_times(n_intervals, interval_s, start_s)
    return _clear_sky_pu(t, latitude_deg, day_of_year, performance_ratio).mean(axis=1)


def pv_output(
    n_intervals: int,
    interval_s: float = 300.0,
    seed: int | None = 0,
    *,
    cloudiness: float = 0.3,
    cloud_opacity: float = 0.75,
    cloud_time_constant_s: float = 1800.0,
    latitude_deg: float = 35.0,
    day_of_year: float = 172.0,
    performance_ratio: float = 0.85,
    start_s: float = 0.0,
) -> FloatArray:
    """PV output per unit of rating, with seeded passing clouds.

    Clear sky: solar geometry (declination after Cooper, hour angle from
    solar time) and the Haurwitz clear-sky irradiance model on a horizontal
    plane, times a performance ratio (inverter, temperature, soiling
    losses). Defaults: 35 deg N at the June solstice, giving about 0.85 pu
    at solar noon and zero between about 19:10 and 04:50.

    Clouds: a cover fraction from :func:`cloud_cover` removes
    ``cloud_opacity`` of the output when fully overcast. ``cloudiness = 0``
    gives exactly :func:`pv_clear_sky`.
    """
    for name, value in (("cloudiness", cloudiness), ("cloud_opacity", cloud_opacity)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    if not (math.isfinite(cloud_time_constant_s) and cloud_time_constant_s > 0.0):
        raise ValueError(f"cloud_time_constant_s must be > 0, got {cloud_time_constant_s!r}")
    t = sample_times(n_intervals, interval_s, start_s)
    clear = _clear_sky_pu(t, latitude_deg, day_of_year, performance_ratio)
    if t.size == 0:
        return clear.mean(axis=1)
    cover = cloud_cover(t, start_s, cloudiness, cloud_time_constant_s, seed)
    return (clear * (1.0 - cloud_opacity * cover)).mean(axis=1)
