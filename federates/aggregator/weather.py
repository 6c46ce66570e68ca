"""The weather a fleet runs in, evaluated from a precomputed :class:`SkyTable`
with numpy only (no pvlib at federate start; see ``solar``).

Every interval is sampled every 60 s (``profiles.sample_times``); PV output is
computed per sample and averaged, because inverter clipping is not linear in
irradiance. Clouds: the seeded cloud-cover process of
``profiles.cloud_cover`` blends the clear and the overcast sky per sample.
Temperature: the table's daily cycle plus a seeded offset that drifts
linearly from one midnight to the next (zero over the first day). Days after
the first repeat the table's sun (the clear-sky
day changes by well under 1 % a day) under new clouds and temperatures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsosim.federates.aggregator.specs import SiteSpec, SkyTable
from dsosim.federates.common import profiles
from dsosim.federates.common.arrays import FloatArray

SECONDS_PER_DAY = 86_400.0
CLOUD_TIME_CONSTANT_S = 1800.0


@dataclass(frozen=True)
class Weather:
    """Sky and air over a run: ``poa[o, k, j]`` W/m2 on orientation ``o`` at
    sample ``j`` of interval ``k``; ``temp_air[k, j]`` degC."""

    orientations: tuple[str, ...]
    poa: FloatArray
    temp_air: FloatArray

    def index(self, orientation: str) -> int:
        try:
            return self.orientations.index(orientation)
        except ValueError:
            raise ValueError(
                f"the fleet's sky has no {orientation!r} orientation (it has {self.orientations})"
            ) from None

    def interval_means(self, orientation: str) -> FloatArray:
        """Mean irradiance on ``orientation`` per interval, W/m2."""
        return self.poa[self.index(orientation)].mean(axis=1)


def _periodic(values: FloatArray, step_s: float, offset_s: float, t_s: FloatArray) -> FloatArray:
    """Linear interpolation of daily-periodic samples at ``offset + i * step``."""
    n = len(values)
    x = ((t_s - offset_s) / step_s) % n
    i0 = np.floor(x).astype(np.intp) % n
    w = x - np.floor(x)
    return values[i0] * (1.0 - w) + values[(i0 + 1) % n] * w


def run_weather(
    sky: SkyTable, site: SiteSpec, *, n_intervals: int, interval_s: float, seed: int
) -> Weather:
    """Evaluate ``sky`` over ``n_intervals`` intervals of ``interval_s``, with
    clouds and day-to-day temperature offsets drawn from ``seed``."""
    t = profiles.sample_times(n_intervals, interval_s, 0.0)
    clear = np.array(sky.poa_clear, dtype=float)
    overcast = np.array(sky.poa_overcast, dtype=float)
    poa_clear = np.stack([_periodic(r, sky.step_s, sky.offset_s, t) for r in clear])
    if sky.clouds and site.cloudiness > 0.0 and t.size:
        cover = profiles.cloud_cover(
            t, 0.0, site.cloudiness, CLOUD_TIME_CONSTANT_S, np.random.SeedSequence([seed, 1])
        )
        poa_ov = np.stack([_periodic(r, sky.step_s, sky.offset_s, t) for r in overcast])
        poa = poa_clear * (1.0 - cover) + poa_ov * cover
    else:
        poa = poa_clear
    temp = _periodic(np.array(sky.temp_air_c, dtype=float), sky.step_s, sky.offset_s, t)
    # Offsets at each midnight, linear in between (no jump); the first day
    # keeps the table's temperatures.
    days = t / SECONDS_PER_DAY
    n_days = int(days.max(initial=0.0)) + 2
    at_midnight = np.random.default_rng([seed, 2]).normal(0.0, site.temp_day_sd_c, n_days)
    at_midnight[:2] = 0.0
    offset = np.interp(days, np.arange(n_days, dtype=float), at_midnight)
    return Weather(sky.orientations, poa, temp + offset)
