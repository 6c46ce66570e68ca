"""The day-ahead market: a multi-period DC-OPF with ramp limits and offers."""

from __future__ import annotations

import numpy as np
import pytest

from dsosim.federates.common.curves import BidCurve
from dsosim.federates.iso.case import (
    PW_LINEAR,
    RAMP_30,
    RAMP_AGC,
    case_from_tables,
    load_case,
    pwl_cost,
    read_matpower,
)
from dsosim.federates.iso.dayahead import (
    DayAheadMarket,
    offer_case,
    offer_error_bound,
)
from dsosim.federates.iso.dcopf import BusCurve, DcOpf, congestion_rent, lmp_is_unique

CASE9 = load_case("case9")


def test_offers_are_exact_at_breakpoints_and_within_the_stated_bound() -> None:
    case = load_case("case118")
    offers = offer_case(case, segments=5)
    bound = offer_error_bound(case, segments=5)
    on = np.flatnonzero(case.gen_status)
    assert np.all(offers.gen_cost_model[on] == PW_LINEAR)
    worst_price = worst_cost = 0.0
    for g in on.tolist():
        c2, c1, c0 = case.gen_cost_poly[g]
        lo, hi = case.gen_pmin_mw[g], case.gen_pmax_mw[g]
        d = (hi - lo) / 5
        p = np.linspace(lo, hi, 1001)
        offered = np.array([pwl_cost(offers.gen_cost_pwl[g], float(x)) for x in p])
        true = (c2 * p + c1) * p + c0
        gap = offered - true
        assert gap.min() > -1e-9  # above the quadratic (secants of a convex function)
        assert gap.max() <= c2 * d**2 / 4 + 1e-9
        worst_cost = max(worst_cost, gap.max() / (c2 * d**2 / 4))
        points = offers.gen_cost_pwl[g]
        slopes = np.diff(points[:, 1]) / np.diff(points[:, 0])
        for k, slope in enumerate(slopes):
            x = np.linspace(points[k, 0], points[k + 1, 0], 50)
            marginal = 2 * c2 * x + c1
            assert np.abs(slope - marginal).max() <= bound[g] + 1e-9
            worst_price = max(worst_price, np.abs(slope - marginal).max() / bound[g])
    # the bounds are tight (not loose enough to hide a wrong conversion)
    assert worst_cost > 0.99 and worst_price > 0.49


def test_one_period_without_ramps_is_the_real_time_clearing() -> None:
    offers = offer_case(CASE9)
    day = DayAheadMarket(CASE9, periods=1)
    bid = BusCurve(5, BidCurve(-10.0, ((60.0, 30.0), (20.0, 20.0))), "dso")
    result = day.clear(CASE9.bus_pd_mw[None, :], [[bid]])
    single = DcOpf(offers).clear(CASE9.bus_pd_mw, [bid])
    assert result.status == "optimal"
    np.testing.assert_allclose(result.lmp[0], single.lmp, atol=1e-9)
    np.testing.assert_allclose(result.periods[0].curve_mw, single.curve_mw, atol=1e-9)
    assert result.total_cost == pytest.approx(single.total_cost, rel=1e-12)


def test_ramp_limits_hold_and_couple_the_periods() -> None:
    case = load_case("case118")
    nt = 6
    shape = np.array([0.6, 0.6, 1.0, 1.0, 0.6, 1.0])
    load = np.outer(shape, case.bus_pd_mw)
    free = DayAheadMarket(case, periods=nt, default_ramp_pu_per_h=100.0).clear(load)
    tight = DayAheadMarket(case, periods=nt, default_ramp_pu_per_h=0.05).clear(load)
    ramp = 0.05 * case.gen_pmax_mw
    steps = np.abs(np.diff(tight.gen_mw, axis=0))
    assert np.all(steps <= ramp + 1e-6)
    assert np.abs(np.diff(free.gen_mw, axis=0)).max() > ramp.max()  # ramps do bind
    assert tight.total_cost > free.total_cost
    # a ramp-held unit sets no price: prices are not just each hour's own merit order
    assert np.abs(tight.lmp - free.lmp).max() > 1.0
    for period in tight.periods:  # every period's money still closes
        withdrawals = float(np.sum(period.lmp * period.withdrawal_mw))
        payments = float(np.sum(period.lmp[case.gen_bus_idx] * period.gen_mw))
        assert withdrawals - payments == pytest.approx(congestion_rent(period), abs=1e-6)


def test_initial_dispatch_limits_the_first_period() -> None:
    nt = 2
    load = np.tile(CASE9.bus_pd_mw, (nt, 1))
    market = DayAheadMarket(CASE9, periods=nt, default_ramp_pu_per_h=0.1)
    start = np.array([10.0, 10.0, 10.0])
    result = market.clear(load, initial_mw=start)
    assert np.all(np.abs(result.gen_mw[0] - start) <= 0.1 * CASE9.gen_pmax_mw + 1e-6)


def test_case_ramp_columns_are_read() -> None:
    tables = read_matpower("case9")
    gen = np.zeros((3, 21))
    gen[:, : tables.gen.shape[1]] = tables.gen[:, :21]
    gen[0, RAMP_30] = 10.0  # MW in 30 min -> 20 MW/h
    gen[1, RAMP_AGC] = 1.0  # MW/min -> 60 MW/h
    case = case_from_tables(tables.replace(gen=gen))
    market = DayAheadMarket(case, periods=2, default_ramp_pu_per_h=0.25)
    np.testing.assert_allclose(market.ramp_mw_per_h, [20.0, 60.0, 0.25 * case.gen_pmax_mw[2]])
    assert np.all(np.isnan(load_case("case118").gen_ramp_mw_per_h))  # stock cases: none


def test_bad_input_is_named() -> None:
    market = DayAheadMarket(CASE9, periods=2)
    with pytest.raises(ValueError, match=r"shape \(9,\); expected \(2, 9\)"):
        market.clear(CASE9.bus_pd_mw)
    bad = np.tile(CASE9.bus_pd_mw, (2, 1))
    bad[1, 4] = np.nan
    with pytest.raises(ValueError, match="not finite in period 1 at bus 5"):
        market.clear(bad)
    with pytest.raises(ValueError, match="bids has 1 periods; expected 2"):
        market.clear(np.tile(CASE9.bus_pd_mw, (2, 1)), [[]])
    with pytest.raises(ValueError, match="periods must be an integer"):
        DayAheadMarket(CASE9, periods=0)


# ----------------------------------------------------------------------------- PyPSA reference


@pytest.mark.slow
@pytest.mark.reference
@pytest.mark.parametrize("ramp_pu", [0.5, 0.08])
def test_matches_pypsa_on_case118(ramp_pu: float) -> None:
    """24 hours of case118 with congestion, ramps (binding in the second
    case) and 8 price-responsive interface bids: PyPSA (linopy + HiGHS) on
    pandapower's import of the same case gives the same prices and cost."""
    pytest.importorskip("pypsa")
    pytest.importorskip("pandapower")
    from dsosim.runner.bench.da import make_problem, solve_dsosim, solve_pypsa

    problem = make_problem("case118", periods=24, bids=8, ramp_pu_per_h=ramp_pu)
    market = problem.market()
    _, ours = solve_dsosim(problem, market)
    theirs = solve_pypsa(problem, market)
    assert ours.status == "optimal"
    assert sum(len(p.binding) for p in ours.periods) > 0  # congestion appears
    if ramp_pu < 0.1:
        steps = np.abs(np.diff(ours.gen_mw, axis=0))
        assert np.any(steps >= market.ramp_mw_per_h - 1e-6)  # ramps bind
    unique = np.stack([lmp_is_unique(p) for p in ours.periods])
    # with ramps binding, fewer units are free to set a price: fewer unique LMPs
    assert unique.mean() > (0.9 if ramp_pu > 0.1 else 0.6)
    assert np.abs(ours.lmp - theirs.lmp)[unique].max() < 1e-3
    assert ours.objective == pytest.approx(theirs.objective, rel=1e-6)
    # the prices vary over the day and across buses (a meaningful comparison)
    assert np.ptp(ours.lmp) > 1.0
