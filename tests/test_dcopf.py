"""DC-OPF market clearing on a hand-worked 3-bus case.

Network (baseMVA 100, every line x = 0.1 pu, so all three have b = 10 pu)::

        G1 (bus 1)  ---- line 1-2 ----  G2 (bus 2)
              \\                          /
           line 1-3                  line 2-3
                \\                      /
                   load 150 MW (bus 3)

With three equal reactances, 1 MW sent from bus 1 to bus 3 splits 2/3 on
line 1-3 and 1/3 on the path 1-2-3; from bus 2 to bus 3: 2/3 on 2-3 and
1/3 on 2-1-3. Bus 1 is the reference bus.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from dsosim.federates.common.curves import PRICE_CAP, BidCurve
from dsosim.federates.iso.case import MatpowerTables, TransmissionCase, case_from_tables
from dsosim.federates.iso.dcopf import BusCurve, DcOpf, OpfResult, congestion_rent
from dsosim.runner import cli

LINES = ((1, 2), (1, 3), (2, 3))


def three_bus(
    *, rate13: float = 0.0, costs: tuple[tuple[float, ...], ...] = ((0, 10, 0), (0, 30, 0))
) -> TransmissionCase:
    """The 3-bus case; ``costs`` are (c2, c1, c0) of G1 and G2, both 0..200 MW."""
    bus = np.array(
        [
            [b, 3 if b == 1 else 1, 150.0 if b == 3 else 0.0, 0, 0, 0, 1, 1, 0, 230, 1, 1.1, 0.9]
            for b in (1, 2, 3)
        ]
    )
    gen = np.array([[b, 0, 0, 100, -100, 1, 100, 1, 200.0, 0.0] for b in (1, 2)])
    branch = np.array(
        [
            [f, t, 0.0, 0.1, 0.0, rate13 if (f, t) == (1, 3) else 0.0, 0, 0, 0, 0, 1, -360, 360]
            for f, t in LINES
        ]
    )
    gencost = np.array([[2, 0, 0, 3, *c] for c in costs], dtype=float)
    return case_from_tables(MatpowerTables("three_bus", 100.0, bus, gen, branch, gencost))


def flows(result: OpfResult) -> dict[tuple[int, int], float]:
    return {line: float(f) for line, f in zip(LINES, result.branch_flow_mw, strict=True)}


def settlement_residual(case: TransmissionCase, result: OpfResult) -> float:
    """Buyers paid - sellers received - congestion rent ($/h): must be 0."""
    paid = float(np.sum(result.lmp * result.withdrawal_mw))
    received = float(np.sum(result.lmp[case.gen_bus_idx] * result.gen_mw))
    return paid - received - congestion_rent(result)


def test_uncongested_cheapest_unit_serves_everything() -> None:
    # G1 ($10) has room for all 150 MW: one price everywhere, no congestion.
    # Flows: 2/3 * 150 = 100 MW on 1-3, 1/3 * 150 = 50 MW on 1-2 and on 2-3.
    case = three_bus()
    result = DcOpf(case).clear(case.bus_pd_mw)
    assert result.status == "optimal"
    np.testing.assert_allclose(result.gen_mw, [150.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(result.lmp, [10.0, 10.0, 10.0], atol=1e-6)
    np.testing.assert_allclose(result.lmp_congestion, 0.0, atol=1e-6)
    f = flows(result)
    assert f[(1, 3)] == pytest.approx(100.0) and f[(1, 2)] == pytest.approx(50.0)
    assert f[(2, 3)] == pytest.approx(50.0)
    assert result.total_cost == pytest.approx(1500.0)
    assert len(result.binding) == 0
    assert congestion_rent(result) == pytest.approx(0.0, abs=1e-6)


def test_congested_line_splits_prices() -> None:
    # Line 1-3 limited to 80 MW. Flow on 1-3 = 2/3 P1 + 1/3 P2 with P1 + P2 = 150
    # => P1/3 + 50 = 80 => P1 = 90, P2 = 60; cost 90*10 + 60*30 = 2700 $/h.
    # Flows: 1-2: 90/3 - 60/3 = 10; 2-3: 90/3 + 2*60/3 = 70.
    # LMPs: bus 1 = 10 (G1 marginal), bus 2 = 30 (G2 marginal). One more MW at
    # bus 3 with flow 1-3 held at 80: dP1 = -1, dP2 = +2 => 50 $/MWh.
    case = three_bus(rate13=80.0)
    result = DcOpf(case).clear(case.bus_pd_mw)
    assert result.status == "optimal"
    np.testing.assert_allclose(result.gen_mw, [90.0, 60.0], atol=1e-6)
    np.testing.assert_allclose(result.lmp, [10.0, 30.0, 50.0], atol=1e-6)
    # energy component = price at the reference bus 1; congestion = the rest
    np.testing.assert_allclose(result.lmp_energy, [10.0, 10.0, 10.0], atol=1e-6)
    np.testing.assert_allclose(result.lmp_congestion, [0.0, 20.0, 40.0], atol=1e-6)
    f = flows(result)
    assert (f[(1, 2)], f[(1, 3)], f[(2, 3)]) == pytest.approx((10.0, 80.0, 70.0))
    assert result.binding.tolist() == [1]
    assert result.total_cost == pytest.approx(2700.0)
    # rent = 10*(30-10) + 80*(50-10) + 70*(50-30) = 4800 = 150*50 - 2700
    assert congestion_rent(result) == pytest.approx(4800.0)
    assert settlement_residual(case, result) == pytest.approx(0.0, abs=1e-6)


def test_quadratic_costs_equalise_marginal_costs() -> None:
    # MC1 = 10 + 0.1 P1, MC2 = 20 + 0.1 P2, P1 + P2 = 150
    # => P1 = 125, P2 = 25, lambda = 22.5; cost = 0.05*125^2 + 1250 + 5 (c0)
    #    + 0.05*25^2 + 500 + 7 (c0) = 781.25 + 1255 + 31.25 + 507 = 2574.5 $/h.
    case = three_bus(costs=((0.05, 10, 5), (0.05, 20, 7)))
    result = DcOpf(case).clear(case.bus_pd_mw)
    assert result.status == "optimal"
    np.testing.assert_allclose(result.gen_mw, [125.0, 25.0], atol=1e-5)
    np.testing.assert_allclose(result.lmp, 22.5, atol=1e-5)
    assert result.total_cost == pytest.approx(2574.5)


def test_demand_bid_sets_the_price() -> None:
    # A block "100 MW if the price is <= $25" at bus 3 (no line limit). G1 fills
    # to its 200 MW limit, so 50 MW of the block clear; the next unit, G2 at
    # $30, is dearer than the block: the block is marginal, LMP = 25.
    case = three_bus()
    curves = [BusCurve(3, owner="dso", curve=BidCurve(0.0, ((25.0, 100.0),)))]
    result = DcOpf(case).clear(case.bus_pd_mw, curves)
    np.testing.assert_allclose(result.lmp, 25.0, atol=1e-6)
    assert result.curve_mw.tolist() == pytest.approx([50.0])
    np.testing.assert_allclose(result.gen_mw, [200.0, 0.0], atol=1e-6)
    # objective = generator cost - value of the cleared block = 2000 - 25*50
    assert result.objective == pytest.approx(2000.0 - 1250.0)


def test_supply_offer_relieves_congestion() -> None:
    # Congested case plus a DER offer at bus 3: base -40 MW with the block
    # (15, 40), i.e. it sells up to 40 MW above $15. Selling s MW at bus 3,
    # G1 alone gives flow 1-3 = 2/3 (150 - s) <= 80 => s >= 30. At s = 30 the
    # line binds and the offer is marginal: LMP3 = 15, LMP1 = 10. Shadow price
    # mu of line 1-3: LMP3 = 10 + 2/3 mu => mu = 7.5; bus 2 (1/3 of an
    # injection there flows on 1-3): LMP2 = 10 + mu/3 = 12.5.
    case = three_bus(rate13=80.0)
    curves = [BusCurve(3, owner="der", curve=BidCurve(-40.0, ((15.0, 40.0),)))]
    result = DcOpf(case).clear(case.bus_pd_mw, curves)
    assert result.status == "optimal"
    np.testing.assert_allclose(result.lmp, [10.0, 12.5, 15.0], atol=1e-6)
    assert result.curve_mw.tolist() == pytest.approx([-30.0])
    np.testing.assert_allclose(result.gen_mw, [120.0, 0.0], atol=1e-6)
    assert result.branch_shadow_price[1] == pytest.approx(7.5, abs=1e-6)
    assert settlement_residual(case, result) == pytest.approx(0.0, abs=1e-6)


def test_curves_at_one_bus_share_a_marginal_block_pro_rata() -> None:
    # Two owners bid (25, 60) and (25, 40) at bus 3: as in the single-block
    # test, 50 MW clear at $25, split 60:40 => 30 and 20 MW.
    case = three_bus()
    curves = [
        BusCurve(3, owner="a", curve=BidCurve(0.0, ((25.0, 60.0),))),
        BusCurve(3, owner="b", curve=BidCurve(0.0, ((25.0, 40.0),))),
    ]
    result = DcOpf(case).clear(case.bus_pd_mw, curves)
    assert result.curve_mw.tolist() == pytest.approx([30.0, 20.0])


def test_insufficient_supply_sheds_load_at_voll() -> None:
    # 450 MW of load against 400 MW of generation: 50 MW shed; with no line
    # limit the next MW anywhere would be shed too, so every LMP = VOLL.
    case = three_bus()
    result = DcOpf(case).clear(np.array([0.0, 0.0, 450.0]))
    assert result.status == "load_shed"
    assert result.shed_mw.sum() == pytest.approx(50.0)
    np.testing.assert_allclose(result.lmp, PRICE_CAP, rtol=1e-9)
    np.testing.assert_allclose(result.gen_mw, [200.0, 200.0], atol=1e-6)
    assert settlement_residual(case, result) == pytest.approx(0.0, abs=1e-3)


def test_islanded_bus_is_reported_not_raised() -> None:
    # Lines 1-3 and 2-3 out: bus 3 (150 MW) is an island without generation.
    # Its load is shed at VOLL; buses 1-2 still clear (20 MW at bus 2 from G1).
    base = three_bus()
    case = base.replace(branch_status=np.array([True, False, False]))
    result = DcOpf(case).clear(np.array([0.0, 20.0, 150.0]))
    assert result.status == "load_shed"
    np.testing.assert_allclose(result.shed_mw, [0.0, 0.0, 150.0], atol=1e-6)
    np.testing.assert_allclose(result.lmp, [10.0, 10.0, PRICE_CAP], rtol=1e-9)
    # the island's own bus is its price reference: no congestion component
    assert result.lmp_energy[2] == pytest.approx(PRICE_CAP)
    np.testing.assert_allclose(result.gen_mw, [20.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(result.branch_flow_mw, [20.0, 0.0, 0.0], atol=1e-6)


def test_reclearing_reuses_the_model_and_matches_a_fresh_clear() -> None:
    case = three_bus(rate13=80.0, costs=((0.05, 10, 0), (0.02, 20, 0)))
    opf = DcOpf(case)
    rng = np.random.default_rng(7)
    for _ in range(5):
        load = case.bus_pd_mw * rng.uniform(0.8, 1.2, case.n_bus)
        n_owners = int(rng.integers(1, 4))
        curves = [
            BusCurve(
                int(rng.integers(1, 4)),
                owner=f"o{k}",
                curve=BidCurve(0.0, ((float(rng.uniform(15, 40)), 10.0),)),
            )
            for k in range(n_owners)
        ]
        warm = opf.clear(load, curves)
        cold = DcOpf(case).clear(load, curves)
        assert warm.status == cold.status == "optimal"
        np.testing.assert_allclose(warm.lmp, cold.lmp, atol=1e-6)
        np.testing.assert_allclose(warm.gen_mw, cold.gen_mw, atol=1e-6)
        np.testing.assert_allclose(warm.curve_mw, cold.curve_mw, atol=1e-6)
    # at most 3 curves of one block each were ever placed: the pool stays small
    assert opf.bid_columns <= 3 * 3


def test_bid_column_pool_is_reused_across_intervals() -> None:
    # Three blocks at distinct prices need three columns at bus 3; a later
    # interval with one block leaves two idle (switched off, not deleted), and
    # the next interval with three blocks reuses them.
    case = three_bus()
    opf = DcOpf(case)

    def curves(prices: list[float]) -> list[BusCurve]:
        return [
            BusCurve(3, owner=f"o{k}", curve=BidCurve(0.0, ((p, 10.0),)))
            for k, p in enumerate(prices)
        ]

    first = opf.clear(case.bus_pd_mw, curves([40.0, 25.0, 5.0]))
    assert opf.bid_columns == 3
    # G1 at $10 serves the $40 and $25 blocks, not the $5 one
    assert first.curve_mw.tolist() == pytest.approx([10.0, 10.0, 0.0])
    second = opf.clear(case.bus_pd_mw, curves([25.0]))
    assert opf.bid_columns == 3
    assert second.curve_mw.tolist() == pytest.approx([10.0])
    # the idle columns must not clear anything: load is 150 + 10 MW
    assert second.gen_mw.sum() == pytest.approx(160.0)
    third = opf.clear(case.bus_pd_mw, curves([5.0, 40.0, 12.0]))
    assert opf.bid_columns == 3
    assert third.curve_mw.tolist() == pytest.approx([0.0, 10.0, 10.0])


def test_unknown_curve_bus_is_rejected_with_owner() -> None:
    case = three_bus()
    with pytest.raises(ValueError, match="'dso7'.*bus 42"):
        DcOpf(case).clear(case.bus_pd_mw, [BusCurve(42, owner="dso7", curve=BidCurve(1.0))])


def test_load_vector_must_align_with_buses() -> None:
    case = three_bus()
    with pytest.raises(ValueError, match="aligned with case.bus_ids"):
        DcOpf(case).clear(np.zeros(2))


# ----------------------------------------------------------------------------- dsosim opf


def run_opf_command(argv: list[str]) -> int:
    return cli.main(argv)


def test_opf_command_writes_one_row_per_bus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lmp.csv"
    assert run_opf_command(["opf", "case9", "--line-limit-mw", "120", "--out", str(out)]) == 0
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["bus"]) for r in rows] == list(range(1, 10))
    lmp = np.array([float(r["lmp"]) for r in rows])
    parts = np.array([float(r["lmp_energy"]) + float(r["lmp_congestion"]) for r in rows])
    np.testing.assert_allclose(parts, lmp, atol=1e-6)
    assert np.ptp(lmp) > 1.0  # the 120 MW cap congests case9
    printed = capsys.readouterr().out
    assert "status optimal" in printed and "total cost" in printed


def test_opf_command_bad_case_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_opf_command(["opf", "case_no_such_grid", "--out", str(tmp_path / "x.csv")]) == 2
    assert "no such case" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
