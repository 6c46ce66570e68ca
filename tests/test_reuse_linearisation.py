"""Reusing a linearisation (``reuse_linearisation_kw``).

At every forecast and every dispatch point, the utility reuses its last
linearisation computed afresh when no load's or DER location's active or
reactive power moved by more than the threshold (``reuse_linearisation_kw``:
off by default, 10 kW bounded here) from where it was taken, no regulator
tap or capacitor moved and every volt-var inverter is on the same segment of
its curve (``GridOperator._reusable``).
The bound, checked here on the eight study feeders and on IEEE 123 (with
volt-var inverters), from night, midday and evening forecasts, at dispatch
points moved by the threshold at every DER location (all up, all down,
random signs) and at eight of them, and at the next forecasts (5, 10 and 20
minutes on: the loads move): wherever the reuse applies, the reused
sensitivities against those computed afresh at that point

* predict the voltage changes of any move of at most the threshold at every
  DER location within 3e-4 pu (measured 2.1e-4) and differ by at most 4e-3
  pu/MW in any voltage derivative (measured 2.7e-3; the largest derivatives
  are 0.04-0.08 pu/MW);
* differ by at most 0.02 in any DER's marginal head-power factor (the
  DLMP's loss component is the energy price times this factor less one: it
  moves by at most 2 % of the energy price; measured 0.013) and predict such
  a move's head power within 3e-3 MW (measured 1.9e-3);
* predict such a move's branch loadings within 0.3 of rating (measured
  0.25): a loading is a current's magnitude, kinked where the current
  reverses, and the largest differences are on the first lines of a feeder
  whose flow the move (0.45 MW in all) reverses.

docs/models.md ("Reusing a linearisation") gives what this does to the study's
prices and voltages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsosim.federates.common.config import REUSE_LINEARISATION_KW, DsoConfig, TimeSettings
from dsosim.federates.dso import controls
from dsosim.federates.dso.feeder import Sensitivities
from dsosim.federates.dso.grid import GridOperator, _Linearised
from dsosim.runner.bench.linearise import DEFAULT_SCENARIO, _grids
from tests.test_byof import ROOT, SHARED

DELTA_MW = 0.01
"""The threshold bounded here (10 kW; the default is REUSE_LINEARISATION_KW, off)."""
INTERVALS = (40, 144, 200)
"""03:20 (night), 12:00 (PV: volt-var inverters on their slopes), 16:40."""
IEEE123_BUSES = (
    "1", "7", "9", "11", "19", "20", "28", "29", "33", "35", "37", "42", "46", "49", "52", "56",
    "60", "62", "65", "69", "71", "76", "80", "83", "86", "88", "94", "96", "100", "104", "111",
    "114",
)  # fmt: skip


def _ieee123() -> GridOperator:
    master = SHARED / "ieee123" / "IEEE123Master.dss"
    if not master.is_file():
        pytest.skip("shared feeder ieee123 not available")
    config = DsoConfig(
        name="ieee123",
        iso="iso",
        feeder=str(master),
        td_bus=5,
        scale=1.0,
        load_forecast_error=0.0,
        aggregators=("a",),
    )
    time = TimeSettings(interval_s=300.0, n_intervals=288)
    volt_var = {"a": {b: 0.05 for b in IEEE123_BUSES[::2]}}
    return GridOperator(
        config, {"a": IEEE123_BUSES}, time, seed=1, base_dir=Path("/"), volt_var_mva=volt_var
    )


@pytest.fixture(scope="module")
def grids(tmp_path_factory: pytest.TempPathFactory) -> list[GridOperator]:
    folder = tmp_path_factory.mktemp("study")
    made = [*_grids(ROOT / DEFAULT_SCENARIO, folder), _ieee123()]
    for grid in made:
        assert grid.reuse_mw == REUSE_LINEARISATION_KW / 1000.0  # the default: off
        grid.reuse_mw = DELTA_MW
    return made


def _moves(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    some = np.zeros(n)
    some[rng.choice(n, min(8, n), replace=False)] = rng.choice([-1.0, 1.0], min(8, n))
    return [np.ones(n), -np.ones(n), rng.choice([-1.0, 1.0], n), some]


def _reusable(grid: GridOperator, fresh: _Linearised) -> bool:
    """Whether the grid's last solve may reuse ``fresh`` (at the default threshold)."""
    grid._fresh, grid.reuse_mw = fresh, DELTA_MW
    state = grid.feeder.solved_state()
    now = controls.read(grid.feeder)
    return grid._reusable(grid.feeder.load_powers(), now, grid._slopes(state)) is not None


def _differences(before: Sensitivities, after: Sensitivities, monitored: np.ndarray) -> np.ndarray:
    """Against ``after``: the largest change ``before`` predicts differently for
    any move of at most DELTA_MW at every DER location, of a monitored voltage
    (pu), the head power (MW) and a loading (of rating); the largest
    difference of a voltage derivative (pu/MW) and of a marginal head-power
    factor."""
    dv = (np.asarray(after.dv_dp) - np.asarray(before.dv_dp))[monitored]
    dp = np.asarray(after.dpsub_dp) - np.asarray(before.dpsub_dp)
    dl = [
        np.asarray(getattr(after, f)) - np.asarray(getattr(before, f))
        for f in ("dloading_dp_up", "dloading_dp_down")
    ]
    return np.array(
        [
            DELTA_MW * np.abs(dv).sum(axis=1).max(initial=0.0),
            DELTA_MW * np.abs(dp).sum(),
            DELTA_MW * max(np.abs(x).sum(axis=1).max(initial=0.0) for x in dl),
            np.abs(dv).max(initial=0.0),
            np.abs(dp).max(initial=0.0),
        ]
    )


def test_reused_sensitivities_stay_within_the_stated_bound(grids: list[GridOperator]) -> None:
    reused: dict[str, int] = {}
    next_forecasts = 0
    worst = np.zeros(5)
    for g_index, grid in enumerate(grids):
        assert grid.reuse_mw == DELTA_MW
        n = len(grid.locations)
        for k in INTERVALS:
            rng = np.random.default_rng([7, g_index, k])
            grid.der_mw = rng.normal(0.0, 0.03, n)
            grid.reuse_mw = 0.0
            grid.forecast(k)
            fresh = grid._fresh
            assert fresh is not None
            points = []
            for move in _moves(rng, n):  # dispatches near the forecast
                step = DELTA_MW * (1.0 - 1e-9) * move  # the threshold, less rounding
                # from the forecast's taps (the regulators' resting point depends
                # on where they start), linearised afresh at the moved point
                controls.apply(grid.feeder, fresh.controls)
                grid.reuse_mw = 0.0
                got = grid.linearise_at(k, grid.der_mw + step)
                assert got is not None
                points.append((got, _reusable(grid, fresh)))
            for later in (1, 2, 4):  # the next forecasts: the loads move
                controls.apply(grid.feeder, fresh.controls)
                grid.reuse_mw = 0.0
                f = grid.forecast(k + later)
                ok = _reusable(grid, fresh)
                next_forecasts += ok
                points.append(((f.state, f.sens), ok))
            for (state, after), ok in points:
                if ok:
                    reused[grid.name] = reused.get(grid.name, 0) + 1
                    mon = np.asarray(state.monitored, dtype=bool)
                    worst = np.maximum(worst, _differences(fresh.sens, after, mon))
    # every feeder had points the reuse applies to (others moved a tap or a
    # volt-var segment, or a load beyond the threshold)
    assert set(reused) == {g.name for g in grids}, reused
    assert next_forecasts >= len(grids), next_forecasts
    v_move, head_move, loading_move, v_entry, loss_factor = worst
    assert v_move <= 3e-4  # measured 2.08e-4
    assert v_entry <= 4e-3  # 2.75e-3
    assert loss_factor <= 0.02  # 0.0127
    assert head_move <= 3e-3  # 1.87e-3
    assert loading_move <= 0.3  # 0.251


def test_reuse_is_refused_beyond_the_threshold_and_when_a_control_moved(
    grids: list[GridOperator],
) -> None:
    grid = grids[0]
    n = len(grid.locations)
    k = INTERVALS[-1]
    grid.der_mw = np.full(n, 0.01)
    grid.reuse_mw = 0.0
    forecast = grid.forecast(k)
    grid.reuse_mw = DELTA_MW
    fresh = grid._fresh
    assert fresh is not None and fresh.sens is forecast.sens
    reused = grid.reused
    # within the threshold: the forecast's derivatives, in another object
    near = grid.der_mw.copy()
    near[3] += 0.9 * DELTA_MW
    state, sens = grid.linearise_at(k, near) or (None, None)
    assert state is not None and sens is not None
    assert sens is not forecast.sens and sens.dv_dp is forecast.sens.dv_dp
    assert grid.reused == reused + 1 and grid.planning_point is not None
    grid.use_planning(sens)
    assert grid.planning_point.state is state  # the ex-post check compares with this point
    grid.use_planning(forecast.sens)
    assert grid.planning_point is forecast
    # one location beyond it: linearised afresh
    far = grid.der_mw.copy()
    far[3] += 1.5 * DELTA_MW
    _, sens_far = grid.linearise_at(k, far) or (None, None)
    assert sens_far is not None and sens_far.dv_dp is not forecast.sens.dv_dp
    assert grid.reused == reused + 1 and grid._fresh is not None and grid._fresh.sens is sens_far
    # a control moved since: linearised afresh
    moved = controls.ControlState(
        taps=tuple((x, w, t + 0.00625) for x, w, t in fresh.controls.taps),
        capacitors=fresh.controls.capacitors,
    )
    assert fresh.controls.taps
    grid._fresh = fresh
    powers, slopes = (fresh.p_w, fresh.q_var), fresh.slopes  # its own point
    assert grid._reusable(powers, fresh.controls, slopes) is not None
    assert grid._reusable(powers, moved, slopes) is None
    # a load beyond the threshold: linearised afresh
    p_w = powers[0].copy()
    p_w[0] += 1.5 * DELTA_MW * 1e6
    assert grid._reusable((p_w, powers[1]), fresh.controls, slopes) is None


def test_zero_threshold_always_linearises_afresh(grids: list[GridOperator]) -> None:
    grid = grids[1]
    n = len(grid.locations)
    k = INTERVALS[0]
    grid.reuse_mw, reused = 0.0, grid.reused
    grid.der_mw = np.zeros(n)
    forecast = grid.forecast(k)
    again = grid.forecast(k)
    got = grid.linearise_at(k, grid.der_mw)
    assert got is not None and got[1].dv_dp is not forecast.sens.dv_dp
    assert again.sens.dv_dp is not forecast.sens.dv_dp
    assert grid.reused == reused
    grid.reuse_mw = DELTA_MW
