"""Day-ahead market clearing: PyPSA building and solving the same day against dsosim.

The problem (:func:`make_problem`): a MATPOWER case (case118 by default) for
24 hourly periods, its loads following a daily shape, the ratings of its
most loaded meshed branches capped so that congestion appears, generator
ramp limits (the market's defaults: the stock case has none) and piecewise
offers for its quadratic costs (:func:`~dsosim.federates.iso.dayahead.
offer_case`), plus ``bids`` price-responsive interface bids (seeded blocks
changing every hour) at load buses, as DSOs send them.

The reference (:func:`solve_pypsa`): PyPSA (linopy + HiGHS) on the network
as pandapower imports it from the same MATPOWER arrays (its branch model:
lines and transformers with their taps and ratings), the same offers as
generator segments with the ramp limits on their sum, the bids as
negative generators with hourly prices, and the fixed loads. dsosim side:
:class:`~dsosim.federates.iso.dayahead.DayAheadMarket` built once per case
(as the ISO does), then timed on ``clear``; PyPSA is timed on building the
network and ``optimize`` (its normal use for a new day's data). Both solve
with HiGHS on one thread.

PyPSA and pandapower are test/benchmark dependencies: imported here, lazily.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dsosim.federates.common.curves import BidCurve
from dsosim.federates.iso.case import (
    RATE_A,
    CaseError,
    MatpowerTables,
    TransmissionCase,
    case_from_tables,
    read_matpower,
)
from dsosim.federates.iso.dayahead import DEFAULT_RAMP_PU_PER_H, DayAheadMarket, DayAheadResult
from dsosim.federates.iso.dcopf import BusCurve, DcOpf
from dsosim.runner.bench.opf import BenchError, pandapower_net, quiet_pandapower


@dataclass(frozen=True, eq=False)
class DaProblem:
    """One day to clear: the case tables, fixed load and bids per period."""

    tables: MatpowerTables
    case: TransmissionCase
    load_mw: np.ndarray  # (periods, buses)
    bids: tuple[tuple[BusCurve, ...], ...]
    periods: int
    period_h: float = 1.0
    ramp_pu_per_h: float = DEFAULT_RAMP_PU_PER_H

    def market(self) -> DayAheadMarket:
        return DayAheadMarket(
            self.case,
            periods=self.periods,
            period_h=self.period_h,
            default_ramp_pu_per_h=self.ramp_pu_per_h,
        )


def daily_shape(periods: int, period_h: float = 1.0) -> np.ndarray:
    """System load per unit of the case's load: low at 04:00, peak at 17:00."""
    hour = (np.arange(periods) + 0.5) * period_h
    return 0.8 + 0.15 * np.cos(2 * np.pi * (hour - 17.0) / 24.0)


def _is_bridge(case: TransmissionCase, branch: int) -> bool:
    def islands(status: np.ndarray) -> int:
        f, t = case.branch_from_idx[status], case.branch_to_idx[status]
        graph = coo_matrix((np.ones(len(f)), (f, t)), shape=(case.n_bus, case.n_bus))
        return int(connected_components(graph, directed=False)[0])

    on = case.branch_status.copy()
    before = islands(on)
    on[branch] = False
    return islands(on) > before


def congested(tables: MatpowerTables, n: int, fraction: float) -> MatpowerTables:
    """Cap the rating of the ``n`` most loaded meshed branches (at nominal
    load, no bids) at ``fraction`` of their flow, rounded to 0.1 MW."""
    case = case_from_tables(tables)
    flows = DcOpf(case).clear(case.bus_pd_mw).branch_flow_mw
    order = np.argsort(-np.abs(flows), kind="stable")
    chosen = [int(b) for b in order if case.branch_status[b] and not _is_bridge(case, int(b))][:n]
    branch = tables.branch.copy()
    branch[chosen, RATE_A] = np.round(fraction * np.abs(flows[chosen]), 1)
    return tables.replace(branch=branch)


def make_problem(
    case_name: str = "case118",
    *,
    periods: int = 24,
    bids: int = 8,
    seed: int = 1,
    congest: int = 4,
    fraction: float = 0.85,
    ramp_pu_per_h: float = DEFAULT_RAMP_PU_PER_H,
) -> DaProblem:
    """The benchmark's day (see the module docstring); seeded."""
    rng = np.random.default_rng(seed)
    tables = read_matpower(case_name)
    if congest:
        tables = congested(tables, congest, fraction)
    case = case_from_tables(tables)
    shape = daily_shape(periods)
    load = np.outer(shape, case.bus_pd_mw)
    load_buses = np.flatnonzero(case.bus_pd_mw > 10.0)
    if len(load_buses) < bids:
        raise BenchError(f"case {case_name} has fewer than {bids} buses with load above 10 MW")
    at = np.sort(rng.choice(load_buses, size=bids, replace=False))
    per_period: list[tuple[BusCurve, ...]] = []
    for t in range(periods):
        curves = []
        for k, pos in enumerate(at.tolist()):
            peak = float(case.bus_pd_mw[pos])
            # part of the bus's load becomes a price-responsive interface bid
            base = -0.1 * peak * shape[t]
            n_blocks = 6
            prices = np.sort(rng.uniform(20.0, 60.0, n_blocks))[::-1]
            mws = rng.uniform(0.05, 0.1, n_blocks) * peak
            curve = BidCurve(
                round(float(base), 6),
                tuple((round(float(p), 4), round(float(q), 6)) for p, q in zip(prices, mws)),
            )
            curves.append(BusCurve(int(case.bus_ids[pos]), curve, f"dso{k}"))
            load[t, pos] -= 0.3 * peak * shape[t]  # the responsive part left the fixed load
        per_period.append(tuple(curves))
    return DaProblem(tables, case, load, tuple(per_period), periods, ramp_pu_per_h=ramp_pu_per_h)


# ----------------------------------------------------------------------------- PyPSA side


def pandapower_branches(tables: MatpowerTables) -> tuple[np.ndarray, dict[int, int], float]:
    """The branch table of pandapower's own model of the case (lines and
    transformers as it imported them, with taps and ratings), and its bus
    numbering: (branch rows F_BUS, T_BUS, BR_X, RATE_A, TAP, SHIFT; case bus
    number -> internal bus; base MVA)."""
    import pandapower as pp

    net = pandapower_net(tables)
    with quiet_pandapower():
        pp.rundcpp(net)
    ppc = net._ppc
    branch = np.real(ppc["branch"][:, [0, 1, 3, 5, 8, 9]]).astype(float)
    lookup = net._pd2ppc_lookups["bus"]
    position = {int(b): int(lookup[int(b)]) for b in net.bus.index}
    return branch, position, float(ppc["baseMVA"])


def pypsa_network(
    problem: DaProblem,
    market: DayAheadMarket,
    branches: tuple[np.ndarray, dict[int, int], float],
) -> tuple[Any, Any, list[str]]:
    """PyPSA network of the problem on pandapower's branches
    (:func:`pandapower_branches`); returns (network, (extra_functionality,
    constant cost per period), bus names aligned with ``case.bus_ids``)."""
    import pandas as pd
    import pypsa

    branch, position, base_mva = branches
    if np.any(branch[:, 5] != 0.0):
        raise BenchError("the PyPSA reference does not model phase shifters")
    case = market.case  # the offer case: piecewise-linear costs
    nt = problem.periods
    n = pypsa.Network()
    n.set_snapshots(pd.RangeIndex(nt, name="snapshot"))
    internal = sorted(set(position.values()))
    names = [f"b{i}" for i in internal]
    n.add("Bus", names, v_nom=1.0)
    bus_name = [f"b{position[int(b)]}" for b in case.bus_ids]
    tap = np.where(branch[:, 4] == 0.0, 1.0, branch[:, 4])
    # v_nom = 1 kV and PyPSA's 1 MVA base: x in ohm is x_pu * tap / baseMVA
    n.add(
        "Line",
        [f"l{k}" for k in range(len(branch))],
        bus0=[f"b{int(f)}" for f in branch[:, 0]],
        bus1=[f"b{int(t)}" for t in branch[:, 1]],
        x=branch[:, 2] * tap / base_mva,
        r=0.0,
        s_nom=np.where(branch[:, 3] > 0.0, branch[:, 3], 1e7),
    )
    # generators: one PyPSA generator per offer segment, ramp limits on their sum
    owner: list[int] = []
    seg_names: list[str] = []
    seg_bus: list[str] = []
    seg_nom: list[float] = []
    seg_min_pu: list[float] = []
    seg_cost: list[float] = []
    constant = 0.0
    for g in np.flatnonzero(case.gen_status).tolist():
        points = case.gen_cost_pwl[g]
        x, y = points[:, 0], points[:, 1]
        lo, hi = float(case.gen_pmin_mw[g]), float(case.gen_pmax_mw[g])
        if x[0] != lo or x[-1] != hi or lo < 0.0:
            raise BenchError(f"gen row {g + 1}: offer breakpoints must span [PMIN >= 0, PMAX]")
        constant += float(y[0])
        pieces = [(f"g{g}_min", lo, 1.0, 0.0)] if lo > 0.0 else []
        slopes = np.diff(y) / np.diff(x)
        pieces += [
            (f"g{g}_s{k}", float(x[k + 1] - x[k]), 0.0, float(slope))
            for k, slope in enumerate(slopes)
        ]
        for name, nom, min_pu, cost in pieces:
            owner.append(g)
            seg_names.append(name)
            seg_bus.append(bus_name[case.gen_bus_idx[g]])
            seg_nom.append(nom)
            seg_min_pu.append(min_pu)
            seg_cost.append(cost)
    n.add(
        "Generator",
        seg_names,
        bus=seg_bus,
        p_nom=seg_nom,
        p_min_pu=seg_min_pu,
        marginal_cost=seg_cost,
    )
    # fixed load (with shunts and the bids' fixed parts)
    fixed = problem.load_mw + case.bus_gs_mw
    for t, curves in enumerate(problem.bids):
        for c in curves:
            fixed[t, case.bus_index(c.at)] += c.curve.base_mw
    loads = [f"d{i}" for i in range(case.n_bus)]
    n.add("Load", loads, bus=bus_name, p_set=pd.DataFrame(fixed, index=n.snapshots, columns=loads))
    _add_bids(n, problem, case, bus_name)
    ramp = market.ramp_mw_per_h * problem.period_h

    def extra(network: Any, snapshots: Any) -> None:
        import xarray as xr

        p = network.model["Generator-p"]
        dim = next(d for d in p.dims if d != "snapshot")
        mapping = xr.DataArray(np.asarray(owner), coords={dim: seg_names}, dims=dim, name="gen")
        total = p.sel({dim: seg_names}).groupby(mapping).sum()
        # t - (t-1) for t >= 1 (the first period has no predecessor in the day)
        step = (total - total.shift(snapshot=1)).isel(snapshot=slice(1, None))
        gens = np.unique(owner)
        limit = xr.DataArray(ramp[gens], coords={"gen": gens}, dims="gen")
        finite = np.isfinite(ramp[gens])
        if finite.any():
            sel = {"gen": gens[finite]}
            network.model.add_constraints(step.sel(sel) <= limit.sel(sel), name="ramp-up")
            network.model.add_constraints(step.sel(sel) >= -limit.sel(sel), name="ramp-down")

    return n, (extra, constant), bus_name


def _add_bids(n: Any, problem: DaProblem, case: TransmissionCase, bus_name: list[str]) -> None:
    """Each (curve, block) as a generator that may only consume: p in
    [-mw_t, 0] at marginal cost price_t (so consuming mw is worth price*mw)."""
    import pandas as pd

    nt = problem.periods
    names: list[str] = []
    buses: list[str] = []
    noms: list[float] = []
    min_pu: list[np.ndarray] = []
    prices: list[np.ndarray] = []
    for c in range(len(problem.bids[0]) if nt else 0):
        width = max(len(problem.bids[t][c].curve.blocks) for t in range(nt))
        for j in range(width):
            mw = np.zeros(nt)
            price = np.zeros(nt)
            for t in range(nt):
                blocks = problem.bids[t][c].curve.blocks
                if j < len(blocks):
                    price[t], mw[t] = blocks[j]
            p_nom = max(float(mw.max()), 1e-6)
            names.append(f"bid{c}_{j}")
            buses.append(bus_name[case.bus_index(problem.bids[0][c].at)])
            noms.append(p_nom)
            min_pu.append(-mw / p_nom)
            prices.append(price)
    if not names:
        return
    n.add(
        "Generator",
        names,
        bus=buses,
        p_nom=noms,
        p_max_pu=0.0,
        p_min_pu=pd.DataFrame(np.column_stack(min_pu), index=n.snapshots, columns=names),
        marginal_cost=pd.DataFrame(np.column_stack(prices), index=n.snapshots, columns=names),
    )


@dataclass(frozen=True)
class PypsaDay:
    seconds: float
    lmp: np.ndarray  # (periods, buses), aligned with case.bus_ids
    objective: float  # $ over the day, as dsosim counts it (constant terms included)
    gen_mw: np.ndarray  # (periods, generators): sums of each generator's segments


def solve_pypsa(
    problem: DaProblem,
    market: DayAheadMarket,
    branches: tuple[np.ndarray, dict[int, int], float] | None = None,
) -> PypsaDay:
    """Build the PyPSA network and optimise it (timed together; pandapower's
    import of the branches is not timed)."""
    if branches is None:
        branches = pandapower_branches(problem.tables)
    logging.getLogger("pypsa").setLevel(logging.ERROR)
    logging.getLogger("linopy").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        n, (extra, constant), bus_name = pypsa_network(problem, market, branches)
        status, condition = n.optimize(
            solver_name="highs",
            io_api="direct",
            extra_functionality=extra,
            solver_options={"threads": 1, "random_seed": 0, "output_flag": False},
        )
        elapsed = time.perf_counter() - started
    if status != "ok":
        raise BenchError(f"PyPSA did not solve the day: {status} ({condition})")
    lmp = n.buses_t.marginal_price[bus_name].to_numpy()
    case = market.case
    gen_mw = np.zeros((problem.periods, case.n_gen))
    p = n.generators_t.p
    for col in p.columns:
        if col.startswith("g"):
            g = int(col[1:].split("_")[0])
            gen_mw[:, g] += p[col].to_numpy()
    objective = problem.period_h * (float(n.objective) + problem.periods * constant)
    return PypsaDay(elapsed, lmp, objective, gen_mw)


def solve_dsosim(problem: DaProblem, market: DayAheadMarket) -> tuple[float, DayAheadResult]:
    started = time.perf_counter()
    result = market.clear(problem.load_mw, problem.bids)
    return time.perf_counter() - started, result


# ----------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--case", default="case118", help="MATPOWER case (default: %(default)s)")
    parser.add_argument("--bids", type=int, default=8, help="interface bids (default: 8)")
    parser.add_argument("--periods", type=int, default=24, help="hourly periods (default: 24)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs each (default: 3)")
    parser.add_argument("--seed", type=int, default=1)


def handle(args: argparse.Namespace) -> int:
    if args.repeats < 1 or args.periods < 1 or args.bids < 0:
        print("error: need --repeats >= 1, --periods >= 1, --bids >= 0", file=sys.stderr)
        return 2
    try:
        problem = make_problem(args.case, periods=args.periods, bids=args.bids, seed=args.seed)
        market = problem.market()
        branches = pandapower_branches(problem.tables)
        ours, theirs = [], []
        worst = 0.0
        for _ in range(args.repeats):
            seconds, result = solve_dsosim(problem, market)
            reference = solve_pypsa(problem, market, branches)
            ours.append(seconds)
            theirs.append(reference.seconds)
            worst = max(worst, float(np.max(np.abs(result.lmp - reference.lmp))))
    except (BenchError, CaseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(
            f"error: {exc.name} is needed (a reference dependency): pip install 'dsosim[reference]'"
        )
        return 2
    print(format_report(args, statistics.median(ours), statistics.median(theirs), worst, result))
    return 0


def format_report(
    args: argparse.Namespace, ours: float, theirs: float, worst: float, result: DayAheadResult
) -> str:
    load = _uptime()
    return "\n".join(
        [
            f"day-ahead clear, {args.case}, {args.periods} periods, {args.bids} interface bids "
            f"(median of {args.repeats})",
            "| PyPSA build+optimize s | dsosim clear s | ratio | max LMP diff $/MWh | status |",
            "|---|---|---|---|---|",
            f"| {theirs:.3f} | {ours:.3f} | {theirs / ours:.1f}x | {worst:.2e} | {result.status} |",
            f"machine load (uptime): {load}",
        ]
    )


def _uptime() -> str:
    try:
        out = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5, check=False)
        return out.stdout.strip()
    except OSError:
        return "unknown"
