"""The DC-OPF against pandapower's rundcopp, an independent implementation.

Both sides get the same MATPOWER arrays (see ``bench_opf.pandapower_net``).
LMPs must agree within 1e-3 $/MWh wherever the LMP is unique, and total
generator cost within 1e-6 relative. Where the optimality conditions leave a
price free (``lmp_is_unique``), each solver may return a different valid
price, so those buses are skipped explicitly: they must be buses with
neither load nor generation, and few.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dsosim.federates.iso.case import (
    RATE_A,
    MatpowerTables,
    TransmissionCase,
    case_from_tables,
    read_matpower,
)
from dsosim.federates.iso.dcopf import DcOpf, OpfResult, lmp_is_unique
from dsosim.runner.bench import opf as bench_opf
from dsosim.runner.bench.opf import pandapower_net, run_pandapower

pytest.importorskip("pandapower")
pytestmark = pytest.mark.reference

# (branches to limit, fraction of their uncongested flow): the most loaded
# branches that are not bridges are limited, as far as the case stays feasible.
CONGESTION = {"case9": (3, 0.7), "case14": (4, 0.7), "case30": (1, 0.9), "case118": (8, 0.7)}


def is_bridge(case: TransmissionCase, branch: int) -> bool:
    """Would taking this branch out split the network?"""
    on = case.branch_status.copy()

    def islands(status: np.ndarray) -> int:
        f, t = case.branch_from_idx[status], case.branch_to_idx[status]
        graph = coo_matrix((np.ones(len(f)), (f, t)), shape=(case.n_bus, case.n_bus))
        return int(connected_components(graph, directed=False)[0])

    before = islands(on)
    on[branch] = False
    return islands(on) > before


def congested(
    tables: MatpowerTables, case: TransmissionCase, flows: np.ndarray, n: int, fraction: float
) -> MatpowerTables:
    """Limit the ``n`` most loaded non-bridge branches to ``fraction`` of their flow."""
    order = np.argsort(-np.abs(flows), kind="stable")
    chosen = [int(b) for b in order if case.branch_status[b] and not is_bridge(case, int(b))][:n]
    branch = tables.branch.copy()
    branch[chosen, RATE_A] = np.round(fraction * np.abs(flows[chosen]), 1)
    return tables.replace(branch=branch)


def solve_both(tables: MatpowerTables) -> tuple[TransmissionCase, OpfResult, np.ndarray, float]:
    case = case_from_tables(tables)
    result = DcOpf(case).clear(case.bus_pd_mw)
    net = pandapower_net(tables)
    _, lam = run_pandapower(net, case.bus_ids, case.bus_pd_mw)
    return case, result, lam, float(net.res_cost)


def assert_prices_agree(case: TransmissionCase, result: OpfResult, lam: np.ndarray) -> None:
    unique = lmp_is_unique(result)
    free = np.flatnonzero(~unique)
    has_gen = np.zeros(case.n_bus, dtype=bool)
    has_gen[case.gen_bus_idx[case.gen_status]] = True
    # what is skipped is exactly the documented kind of bus, and not much
    assert not np.any(case.bus_pd_mw[free] != 0.0), case.bus_ids[free]
    assert not np.any(has_gen[free]), case.bus_ids[free]
    assert len(free) <= max(1, case.n_bus // 20), case.bus_ids[free]
    np.testing.assert_allclose(result.lmp[unique], lam[unique], rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", sorted(CONGESTION))
def test_uncongested_prices_and_cost_match(name: str) -> None:
    tables = read_matpower(name)
    case, result, lam, pp_cost = solve_both(tables)
    assert result.status == "optimal"
    assert_prices_agree(case, result, lam)
    assert result.total_cost == pytest.approx(pp_cost, rel=1e-6)


@pytest.mark.parametrize("name", sorted(CONGESTION))
def test_congested_prices_and_cost_match(name: str) -> None:
    tables = read_matpower(name)
    base = case_from_tables(tables)
    flows = DcOpf(base).clear(base.bus_pd_mw).branch_flow_mw
    n, fraction = CONGESTION[name]
    case, result, lam, pp_cost = solve_both(congested(tables, base, flows, n, fraction))
    assert result.status == "optimal"
    assert len(result.binding) >= 2
    assert np.ptp(result.lmp) > 1.0  # congestion separates the prices
    assert_prices_agree(case, result, lam)
    assert result.total_cost == pytest.approx(pp_cost, rel=1e-6)


def test_price_between_two_binding_lines_is_flagged_not_compared() -> None:
    # case118 with every line capped at 218 MW: lines 8-9 and 9-10 both bind and
    # bus 9 has neither load nor generation, so its LMP can be anything between
    # its neighbours' prices (the solvers indeed return different ones).
    tables = read_matpower("case118")
    branch = tables.branch.copy()
    branch[:, RATE_A] = np.where(
        (branch[:, RATE_A] == 0) | (branch[:, RATE_A] > 218), 218, branch[:, RATE_A]
    )
    case, result, lam, pp_cost = solve_both(tables.replace(branch=branch))
    assert result.status == "optimal"
    unique = lmp_is_unique(result)
    assert not unique[case.bus_index(9)]
    assert_prices_agree(case, result, lam)
    assert result.total_cost == pytest.approx(pp_cost, rel=1e-6)


def test_benchmark_command_runs(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(cases="case9", repeats=1, intervals=2, seed=3, cost_seed=None)
    assert bench_opf.handle(args) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("| case | pandapower ms (median) |")
    row = table.splitlines()[2].split("|")
    assert row[1].strip() == "case9"
    assert float(row[5]) < 1e-3  # max |LMP diff|
