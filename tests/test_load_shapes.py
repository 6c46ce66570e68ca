"""A feeder's own load shapes (``load_profile = "feeder"``): read as OpenDSS
reads them, averaged over each market interval, and followed by the grid
operator's power flows; new-scenario picks them where they cover a day (the
IEEE European LV feeder's 1-minute shapes, read in place from the shared
feeders), not where they span a year."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from dsosim.federates.common.config import DsoConfig, TimeSettings
from dsosim.federates.common.profiles import residential_load
from dsosim.federates.dso.feeder import Feeder
from dsosim.federates.dso.grid import GridOperator
from dsosim.runner.feeders.inspect import inspect_feeder
from tests.test_byof import SHARED, _shared

LV = SHARED / "lv-european"

SHAPED = """\
Clear
New Circuit.shapes basekv=12.47 pu=1.0 phases=3 bus1=src MVAsc3=200 MVAsc1=180
New Line.l1 bus1=src bus2=a r1=0.3 x1=0.6 r0=0.6 x0=1.2 units=km length=1 normamps=400
New Loadshape.quarter npts=96 minterval=15 mult=(file=quarter.txt)
New Loadshape.actual npts=24 interval=1 mult=(file=actual.csv) useactual=yes
New Loadshape.hours npts=3 hour=[0 12 24] mult=[0.2 1.0 0.2]
New Load.q bus1=a.1 phases=1 kv=7.2 kw=100 pf=0.95 daily=quarter
New Load.act bus1=a.2 phases=1 kv=7.2 kw=50 pf=0.95 yearly=actual
New Load.h bus1=a.3 phases=1 kv=7.2 kw=80 pf=0.95 duty=hours
New Load.none bus1=a phases=3 kv=12.47 kw=200 pf=0.95
New Load.fixed bus1=a.1 phases=1 kv=7.2 kw=30 pf=0.95 daily=quarter status=fixed
Set VoltageBases=[12.47]
CalcVoltageBases
"""


@pytest.fixture
def shaped(tmp_path: Path) -> tuple[Feeder, np.ndarray, np.ndarray]:
    quarter = 0.5 + 0.5 * np.sin(np.arange(96) / 96 * 2 * np.pi)
    actual = np.linspace(10.0, 80.0, 24)
    (tmp_path / "quarter.txt").write_text("\n".join(f"{v:.6f}" for v in quarter))
    (tmp_path / "actual.csv").write_text("\n".join(f"{v:.6f}" for v in actual))
    (tmp_path / "Master.dss").write_text(SHAPED)
    return Feeder(tmp_path / "Master.dss", name="shapes"), quarter, actual


def test_own_shapes_are_read_as_opendss_reads_them(
    shaped: tuple[Feeder, np.ndarray, np.ndarray],
) -> None:
    feeder, quarter, actual = shaped
    names = [ld.name.lower() for ld in feeder.loads]
    # hourly intervals from 01:00: four quarter-hour points each
    times = 3600.0 * np.arange(1, 5)
    mult, has = feeder.load_shapes(times, 3600.0)
    assert dict(zip(names, has, strict=True)) == {
        "q": True,
        "act": True,
        "h": True,
        "none": False,
        "fixed": False,  # status=fixed: OpenDSS applies no shape to it
    }
    q, act, h = (names.index(n) for n in ("q", "act", "h"))
    # OpenDSS holds point i (from 1) at i intervals: hour k's samples at
    # k:00, k:15, k:30 and k:45 are points 4k .. 4k+3
    for row, hour in enumerate(range(1, 5)):
        want = quarter[4 * hour - 1 : 4 * hour + 3].mean()
        assert mult[row, q] == pytest.approx(want, rel=1e-6)
        # useactual: the values are kW (OpenDSS sets the load's kW to the
        # shape's peak when compiling); one sample an hour: point k at k:00
        assert feeder.loads[act].kw == pytest.approx(actual.max())
        assert mult[row, act] == pytest.approx(actual[hour - 1] / actual.max(), rel=1e-6)
    # an hour array is interpolated linearly: 0.2 at 00:00 to 1.0 at 12:00
    at = (times[:, None] + np.arange(60) * 60.0) / 3600.0
    assert mult[:, h] == pytest.approx((0.2 + 0.8 * at / 12.0).mean(axis=1), rel=1e-6)
    assert np.all(mult[:, ~has] == 1.0)
    # a shape repeats after its end (a daily shape, the next day)
    again, _ = feeder.load_shapes(times + 86400.0, 3600.0)
    np.testing.assert_allclose(again[:, q], mult[:, q])


def test_the_grid_operator_follows_the_lv_european_feeders_own_shapes() -> None:
    """With ``load_profile = "feeder"`` each of the 55 loads follows its own
    1-minute shape from the feeder's files (their 5-minute means here,
    computed from the files directly), and the power flow draws it."""
    feeder_file = _shared("lv-european/Master.dss")
    config = DsoConfig(
        name="lv",
        iso="iso",
        feeder=str(feeder_file),
        td_bus=5,
        scale=1.0,
        load_profile="feeder",
        load_forecast_error=0.0,
        aggregators=("a",),
    )
    time = TimeSettings(interval_s=300.0, n_intervals=288, start=datetime(2026, 6, 1))
    grid = GridOperator(config, {"a": ("34",)}, time, seed=1, base_dir=Path("/"))
    assert grid.profile.shape == (288, 55)
    text = (LV / "Loads.txt").read_text()
    shape_of = {
        line.split()[1].split(".")[1].lower(): line.split("Yearly=Shape_")[1].split()[0]
        for line in text.splitlines()
        if line.startswith("New Load.")
    }
    folder = LV / "Daily_1min_100profiles"
    for j, load in enumerate(grid.feeder.loads):
        minutes = np.loadtxt(folder / f"load_profile_{shape_of[load.name.lower()]}.txt")
        # the value OpenDSS uses at minute m is point m (point 1440 at 00:00);
        # the master sets useactual=no and every load is 1 kW: values are multipliers
        at = np.roll(minutes, 1).reshape(288, 5).mean(axis=1)
        assert load.kw == pytest.approx(1.0)
        np.testing.assert_allclose(grid.profile[:, j], at, rtol=1e-9)
    flat = residential_load(288, 300.0)
    assert not np.allclose(grid.profile, flat[:, None])
    evening = int(np.argmax(grid.profile.sum(axis=1)))
    forecast = grid.forecast(evening)
    engine = grid.feeder.engine
    for j, load in enumerate(grid.feeder.loads):
        engine.Loads.Name(load.name)
        assert engine.Loads.kW() == pytest.approx(grid.profile[evening, j] * load.kw)
    # what the loads draw (constant power, but above vmaxpu OpenDSS makes them
    # impedances: the source is at 1.05 pu) is the shapes' total within 5 %
    wanted = float(np.sum(grid.profile[evening] * [ld.kw for ld in grid.feeder.loads])) / 1e3
    assert forecast.state.load_mw == pytest.approx(wanted, rel=0.05)
    assert wanted < 0.9 * float(np.sum([ld.kw for ld in grid.feeder.loads])) / 1e3


def test_new_scenario_follows_daily_shapes_not_yearly_ones() -> None:
    lv = inspect_feeder(_shared("lv-european/Master.dss"))
    assert lv.own_shapes is not None
    assert lv.own_shapes.n_loads == 55 and lv.own_shapes.daily
    assert any('load_profile = "feeder"' in w for w in lv.warnings)
    ckt7 = inspect_feeder(_shared("epri-ckt7/Master_ckt7.dss"))
    assert ckt7.own_shapes is not None and not ckt7.own_shapes.daily
    assert ckt7.own_shapes.longest_h == pytest.approx(8760.0)
