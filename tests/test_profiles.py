"""Daily profiles: bounds, peak times, resolution consistency, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from dsosim.federates.common import profiles

DAY = 288  # 5-minute intervals
LOADS = (profiles.residential_load, profiles.commercial_load, profiles.wholesale_load)


def _hour_of_max(values: np.ndarray, interval_s: float = 300.0) -> float:
    return float(profiles.interval_hours(len(values), interval_s)[np.argmax(values)])


def _hour_of_min(values: np.ndarray, interval_s: float = 300.0) -> float:
    return float(profiles.interval_hours(len(values), interval_s)[np.argmin(values)])


def test_interval_hours_are_interval_midpoints() -> None:
    assert profiles.interval_hours(4, 21_600.0).tolist() == [3.0, 9.0, 15.0, 21.0]
    assert profiles.interval_hours(2, 3600.0, start_s=23 * 3600.0).tolist() == [23.5, 0.5]


@pytest.mark.parametrize("shape", LOADS)
def test_load_shapes_are_per_unit_of_peak(shape) -> None:
    values = shape(DAY, 300.0, 0)
    assert values.shape == (DAY,)
    assert values.min() > 0.2
    # interval averages sit just below the instantaneous peak of 1
    assert 0.99 < values.max() <= 1.0


def test_residential_peaks_in_the_evening_and_bottoms_at_night() -> None:
    values = profiles.residential_load(DAY, 300.0, 0)
    assert 18.0 <= _hour_of_max(values) <= 21.0
    assert 1.0 <= _hour_of_min(values) <= 5.0
    hours = profiles.interval_hours(DAY)
    morning = values[(hours > 6.5) & (hours < 8.5)].max()
    late_morning = values[(hours > 9.5) & (hours < 11.0)].min()
    assert morning > late_morning  # a morning bump, not a monotone ramp


def test_commercial_is_a_daytime_plateau() -> None:
    values = profiles.commercial_load(DAY, 300.0, 0)
    hours = profiles.interval_hours(DAY)
    assert 11.0 <= _hour_of_max(values) <= 17.0
    assert values[(hours >= 9.0) & (hours < 17.0)].min() > 0.85
    assert values[(hours < 5.0) | (hours >= 22.0)].max() < 0.4


def test_wholesale_peaks_late_afternoon_with_shallow_night_valley() -> None:
    values = profiles.wholesale_load(DAY, 300.0, 0)
    assert 16.0 <= _hour_of_max(values) <= 20.0
    assert 1.0 <= _hour_of_min(values) <= 6.0
    assert 0.5 < values.min() < 0.7  # a system load never drops like one house


@pytest.mark.parametrize("shape", LOADS)
def test_load_shapes_repeat_daily(shape) -> None:
    two_days = shape(2 * DAY, 300.0, 0)
    np.testing.assert_array_equal(two_days[:DAY], two_days[DAY:])


@pytest.mark.parametrize("shape", [*LOADS, profiles.pv_output])
def test_hourly_values_are_averages_of_five_minute_values(shape) -> None:
    fine = shape(DAY, 300.0, 7)
    coarse = shape(24, 3600.0, 7)
    np.testing.assert_allclose(fine.reshape(24, 12).mean(axis=1), coarse, rtol=0, atol=1e-12)


def test_load_noise_is_seeded_and_optional() -> None:
    plain = profiles.residential_load(DAY, 300.0, 1)
    noisy = profiles.residential_load(DAY, 300.0, 1, noise=0.05)
    again = profiles.residential_load(DAY, 300.0, 1, noise=0.05)
    other = profiles.residential_load(DAY, 300.0, 2, noise=0.05)
    np.testing.assert_array_equal(noisy, again)
    assert not np.array_equal(noisy, plain)
    assert not np.array_equal(noisy, other)
    np.testing.assert_array_equal(plain, profiles.residential_load(DAY, 300.0, 2))
    with pytest.raises(ValueError, match="noise"):
        profiles.residential_load(DAY, 300.0, 1, noise=-0.1)


def test_pv_clear_sky_is_zero_at_night_and_peaks_at_solar_noon() -> None:
    values = profiles.pv_clear_sky(DAY, 300.0)
    hours = profiles.interval_hours(DAY)
    assert np.all(values[(hours < 4.5) | (hours > 19.5)] == 0.0)
    assert 11.5 <= _hour_of_max(values) <= 12.5
    assert 0.7 < values.max() <= 1.0
    # symmetric about solar noon
    np.testing.assert_allclose(values, values[::-1], atol=1e-3)


def test_pv_winter_days_are_shorter_and_lower() -> None:
    summer = profiles.pv_clear_sky(DAY, 300.0, day_of_year=172)
    winter = profiles.pv_clear_sky(DAY, 300.0, day_of_year=355)
    assert winter.max() < summer.max()
    assert np.count_nonzero(winter) < np.count_nonzero(summer)


def test_pv_clouds_only_remove_output_and_more_cloudiness_removes_more() -> None:
    clear = profiles.pv_clear_sky(DAY, 300.0)
    assert np.array_equal(profiles.pv_output(DAY, 300.0, 5, cloudiness=0.0), clear)
    light = profiles.pv_output(DAY, 300.0, 5, cloudiness=0.2)
    heavy = profiles.pv_output(DAY, 300.0, 5, cloudiness=0.8)
    assert np.all(heavy <= light + 1e-15)
    assert np.all(light <= clear + 1e-15)
    assert heavy.sum() < light.sum() < clear.sum()
    assert np.all(heavy >= 0.25 * clear - 1e-15)  # opacity 0.75 leaves a quarter


def test_pv_clouds_are_seeded() -> None:
    a = profiles.pv_output(DAY, 300.0, 11)
    np.testing.assert_array_equal(a, profiles.pv_output(DAY, 300.0, 11))
    assert not np.array_equal(a, profiles.pv_output(DAY, 300.0, 12))


def test_pv_rejects_bad_cloudiness() -> None:
    with pytest.raises(ValueError, match="cloudiness"):
        profiles.pv_output(DAY, 300.0, 0, cloudiness=1.5)


def test_bad_grid_is_rejected() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        profiles.residential_load(DAY, 0.0)
    with pytest.raises(ValueError, match="n_intervals"):
        profiles.commercial_load(-1, 300.0)


# ------------------------------------------------------- weather and usage


def test_daily_temperature_hits_its_extremes_at_the_given_hours_and_is_periodic() -> None:
    hours = np.array([5.0, 10.0, 15.0, 22.0, 29.0])
    t = profiles.daily_temperature(hours, 20.0, 30.0)
    assert t[:3].tolist() == pytest.approx([20.0, 25.0, 30.0])  # half way at 10:00
    assert t[3] == pytest.approx(25.0)  # half way down after 7 of 14 falling hours
    assert t[4] == pytest.approx(20.0)  # 29 h = 05:00 the next day
    fine = profiles.daily_temperature(np.linspace(0, 24, 2401), 20.0, 30.0)
    assert fine.min() == pytest.approx(20.0) and fine.max() == pytest.approx(30.0)
    assert np.abs(np.diff(fine)).max() < 0.02  # continuous, including midnight
    with pytest.raises(ValueError):
        profiles.daily_temperature(hours, 30.0, 20.0)


def test_hot_water_draw_averages_one_and_peaks_morning_and_evening() -> None:
    hours = (np.arange(1440) + 0.5) / 60.0
    draw = profiles.hot_water_draw(hours)
    assert draw.mean() == pytest.approx(1.0, abs=1e-9)
    assert 6.0 <= hours[np.argmax(draw)] <= 8.0
    assert draw[(hours > 18) & (hours < 21)].max() > 2.0
    assert draw[(hours > 1) & (hours < 4)].max() < 0.3


def test_ar1_paths_are_seeded_unit_variance_and_autocorrelated() -> None:
    a = profiles.ar1_paths(200, 500, 300.0, 3600.0, 4)
    np.testing.assert_array_equal(a, profiles.ar1_paths(200, 500, 300.0, 3600.0, 4))
    assert a.shape == (500, 200)
    assert a.std() == pytest.approx(1.0, abs=0.05)
    lag1 = np.mean(a[1:] * a[:-1])
    assert lag1 == pytest.approx(np.exp(-300.0 / 3600.0), abs=0.03)
