"""The LDA market's hot path gives the reference implementation's results:
the clearing byte for byte (the screened rows too); the interface bid byte
for byte where its price sweep needs no LP (``_Steps`` evaluates every step
between block prices at once), and within the sweep's stated bound
(``SWEEP_PRICE_BOUND``, ``SWEEP_MW_BOUND``) where its steps are pivots of
its own (``parametric``) instead of HiGHS solves. The reference is the
module as it was before that work (``dsosim.runner.bench.lda_reference``,
the benchmark's reference too)."""

from __future__ import annotations

import numpy as np
import pytest

from dsosim.federates.common.curves import BidCurve, PlacedCurve
from dsosim.federates.markets import lda_market, parametric
from dsosim.federates.markets.lda_market import Limits, build_interface_bid, clear_lda
from dsosim.runner.bench import lda_reference
from dsosim.runner.bench.lda import bid_gaps, bid_outside_bound, fields, repriced
from tests.test_lda_market import linearised


def _case(seed: int, n_der: int = 6, n_node: int = 8, n_branch: int = 4):
    """A random feeder linearisation whose limits bind over the bids' range,
    with prices on a coarse grid (many equal and near-equal head prices)."""
    rng = np.random.default_rng(seed)
    dv = rng.normal(0.0, 2e-3, (n_node, n_der)) * (rng.random((n_node, n_der)) < 0.7)
    up = np.abs(rng.normal(0.0, 0.05, (n_branch, n_der)))
    down = up * np.where(rng.random((n_branch, 1)) < 0.3, -1.0, 1.0)
    state, sens = linearised(
        1.0 + rng.normal(0.0, 0.01, n_node),
        dv,
        loading=rng.uniform(0.3, 0.95, n_branch),
        dl_up=up,
        dl_down=down,
        dpsub=rng.uniform(0.97, 1.06, n_der),
        der_mw=rng.normal(0.0, 0.5, n_der),
    )
    curves = []
    for i in range(n_der):
        for owner in ("a", "b")[: 1 + int(rng.random() < 0.4)]:
            k = int(rng.integers(1, 9))
            prices = np.sort(np.round(rng.uniform(-40.0, 120.0, k), int(rng.integers(0, 3))))[::-1]
            sizes = np.round(rng.uniform(0.05, 1.5, k), 3)
            curves.append(
                PlacedCurve(
                    f"d{i}",
                    BidCurve(float(rng.uniform(-1.0, 0.5)), tuple(zip(prices, sizes, strict=True))),
                    owner=owner,
                )
            )
    return curves, state, sens, float(rng.uniform(0.5, 3.0))


def _same(ours: object, theirs: object) -> None:
    assert fields(ours, theirs.__slots__) == fields(theirs)  # type: ignore[attr-defined]


def _same_unless_repriced(ours: lda_market.LdaClearing, theirs, limits: Limits) -> bool:
    """The reference's clearing where the pricing passes leave it alone (see
    ``repriced``); whether they did."""
    if repriced(ours, theirs, limits):
        return True
    _same(ours, theirs)
    return False


_REPRICED = {"clearings": 0, "repriced": 0}


@pytest.mark.parametrize("seed", range(40))
def test_bid_and_clearing_are_the_reference_ones(seed: int) -> None:
    curves, state, sens, fixed = _case(seed)
    limits = Limits(vmin_pu=0.985, vmax_pu=1.015, max_loading=1.0)
    bid = build_interface_bid(curves, state, sens, fixed, limits)
    ref = lda_reference.build_interface_bid(curves, state, sens, fixed, limits)
    assert bid_outside_bound(bid, ref) == []
    if bid.n_lp_solves == 0:
        _same(bid, ref)  # no LP: the sweep is the reference's, exactly
    for lmp in (-20.0, 15.0, 35.5, 80.0):
        for award in (bid.curve.quantity_at(lmp), bid.curve.quantity_at(lmp) + 0.3):
            _REPRICED["clearings"] += 1
            _REPRICED["repriced"] += _same_unless_repriced(
                clear_lda(award, lmp, curves, state, sens, fixed, limits),
                lda_reference.clear_lda(award, lmp, curves, state, sens, fixed, limits),
                limits,
            )


def test_most_clearings_are_compared_with_the_reference() -> None:
    """The comparison above is not idle: the energy price's fix (the
    reference's price at LMP + the imbalance penalty) leaves most of its
    clearings alone."""
    if _REPRICED["clearings"] < 320:
        pytest.skip("run with the whole module")
    assert _REPRICED["repriced"] < _REPRICED["clearings"] / 10, _REPRICED


def test_the_swept_steps_are_the_general_evaluation_also_at_ties() -> None:
    """Rows and demands put on their rounding boundaries: the all-steps
    evaluation must decide every comparison and rounding as the one-price
    evaluation does, where the rounding bound leaves it undecided."""
    rng = np.random.default_rng(7)
    exact_steps = 0
    for trial in range(30):
        curves, state, sens, fixed = _case(100 + trial)
        prob = lda_market._build(curves, state, sens, fixed, Limits(vmax_pu=1.2, vmin_pu=0.8))
        sweep = lda_market._Sweep(prob, Limits())
        prices = sweep.candidates - lda_market._EPS_PRICE
        # move each row's limit onto its activity at a random step (a tie)
        rows = prob.rows
        if len(rows.limit):
            k = int(rng.integers(len(prices)))
            x = np.where(prices[k] * prob.weight - prob.price < 0.0, prob.size, 0.0)
            tied = rows.const + rows.coef @ x - 1e-9
            rows = lda_market._Rows(
                rows.kind, rows.element, tied, rows.const, rows.coef, rows.grad, rows.sign
            )
            prob = lda_market._Problem(**{**_fields(prob), "rows": rows})
        steps = lda_market._Steps(prob, sweep.candidates)
        for k, lam in enumerate(prices.tolist()):
            x = np.where(lam * prob.weight - prob.price < 0.0, prob.size, 0.0)
            feasible = not np.any(rows.const + rows.coef @ x > rows.limit + 1e-9)
            assert steps.feasible[k] == feasible
            if feasible:
                assert repr(steps.demand[k]) == repr(round(float(prob.weight @ x), 9))
        exact_steps += steps.n_exact
    assert exact_steps > 0  # the ties were left to the one-price evaluation


def test_demand_rounding_matches_python_round_near_boundaries() -> None:
    """The vectorised rounding (rint of the value in 1e-9 MW units) is
    Python's round(x, 9) wherever the bound does not flag a tie, including
    values a few units in the last place from a boundary."""
    rng = np.random.default_rng(3)
    base = np.round(rng.uniform(-50.0, 50.0, 2000), 9) + 0.5e-9
    values = base + rng.integers(-40, 41, base.size) * np.spacing(base)
    scaled = values * 1e9
    tie = np.abs(scaled - np.floor(scaled) - 0.5)
    clear = tie > 4.0 * lda_market._ROUNDING * np.abs(scaled)
    assert 0 < clear.sum() < clear.size  # both kinds are exercised
    ours = (np.rint(scaled) / 1e9)[clear]
    assert [repr(v) for v in ours.tolist()] == [repr(round(v, 9)) for v in values[clear].tolist()]


def _fields(prob: lda_market._Problem) -> dict[str, object]:
    return {name: getattr(prob, name) for name in prob.__slots__}


@pytest.mark.parametrize("seed", range(12))
def test_clearing_without_network_rows_is_the_reference_one(seed: int) -> None:
    """No row left after screening: the price taker is solved without HiGHS
    where no block cost is near zero; with costs from 1e-8 to 1e-3 $/MWh from
    zero, an LMP of zero, and awards the taker does and does not meet."""
    rng = np.random.default_rng(seed)
    n = 6
    state, sens = linearised([1.0], [[0.0] * n], dpsub=rng.uniform(0.95, 1.05, n))
    limits = Limits()
    solved_alone = 0
    for trial in range(25):
        lmp = 0.0 if trial == 0 else float(rng.uniform(-20.0, 80.0))
        curves = []
        for i in range(n):
            prices = [*rng.uniform(-50.0, 150.0, 3).tolist(), 9999.0]
            gap = float(rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(-8.0, -3.0))
            if rng.random() < 0.25:
                prices[0] = lmp * float(sens.dpsub_dp[i]) + gap
            blocks = tuple((p, float(rng.uniform(0.1, 1.0))) for p in sorted(prices)[::-1])
            curves.append(PlacedCurve(f"d{i}", BidCurve(-0.5, blocks), owner="a"))
        prob = lda_market._build(curves, state, sens, 1.0, limits)
        solved_alone += lda_market._separable_taker(prob, lmp, limits) is not None
        bid = build_interface_bid(curves, state, sens, 1.0, limits)
        for award in (bid.curve.quantity_at(lmp), bid.curve.quantity_at(lmp) + 0.2):
            for taker in (False, True):
                _same_unless_repriced(
                    clear_lda(award, lmp, curves, state, sens, 1.0, limits, price_taker=taker),
                    lda_reference.clear_lda(
                        award, lmp, curves, state, sens, 1.0, limits, price_taker=taker
                    ),
                    limits,
                )
    assert 0 < solved_alone < 25  # both paths are exercised


LIMIT_SETS = (
    Limits(vmin_pu=0.985, vmax_pu=1.015, max_loading=1.0),
    Limits(vmin_pu=0.99, vmax_pu=1.01, max_loading=0.8),
)


@pytest.mark.parametrize(
    ("n_der", "n_node", "n_branch", "seeds"), [(6, 8, 4, 200), (20, 30, 10, 40)]
)
def test_the_swept_bid_is_the_highs_sweeps_within_the_stated_bound(
    n_der: int, n_node: int, n_branch: int, seeds: int
) -> None:
    """Random feeders whose rows bind, prices on a coarse grid (many ties):
    the sweep's own pivots give the bid the reference's HiGHS solves give,
    block for block, within SWEEP_PRICE_BOUND and SWEEP_MW_BOUND. The bound
    is not idle: breakpoints between block prices do differ by rounding."""
    solves = moved = 0
    for seed in range(seeds):
        curves, state, sens, fixed = _case(1000 + seed, n_der, n_node, n_branch)
        for limits in LIMIT_SETS:
            bid = build_interface_bid(curves, state, sens, fixed, limits)
            ref = lda_reference.build_interface_bid(curves, state, sens, fixed, limits)
            assert bid_outside_bound(bid, ref) == [], (seed, limits)
            solves += bid.n_lp_solves
            moved += bid_gaps(bid, ref) != (0.0, 0.0)
    assert solves > 10 * seeds  # the rows bind: the sweep pivots
    assert moved > 0


def test_a_step_the_pivots_cannot_take_is_solved_by_highs(monkeypatch) -> None:
    """Every step refused by the pivots (PivotError) falls back to HiGHS from
    its own basis: the reference's sweep, byte for byte; every other step
    refused: within the bound."""
    real = parametric.ParametricLp.solve
    calls = {"n": 0}

    def every_other(self, lam):
        calls["n"] += 1
        if calls["n"] % 2:
            raise parametric.PivotError("test")
        return real(self, lam)

    def never(self, lam):
        raise parametric.PivotError("test")

    limits = LIMIT_SETS[0]
    checked = 0
    for seed in range(15):
        curves, state, sens, fixed = _case(seed)
        ref = lda_reference.build_interface_bid(curves, state, sens, fixed, limits)
        if ref.n_lp_solves < 3:
            continue
        checked += 1
        monkeypatch.setattr(parametric.ParametricLp, "solve", never)
        _same(build_interface_bid(curves, state, sens, fixed, limits), ref)
        monkeypatch.setattr(parametric.ParametricLp, "solve", every_other)
        bid = build_interface_bid(curves, state, sens, fixed, limits)
        assert bid_outside_bound(bid, ref) == []
    assert checked >= 5
