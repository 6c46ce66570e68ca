"""Run one scenario under every organisational model and compare them.

Each model runs as its own federation through ``helics run`` (same case,
same seed, same DER fleets) into ``DIR/model-<m>/``, or, over several seeds,
``DIR/seed-<s>/model-<m>/`` (``runner.analysis.seeds``), ``jobs`` at a time.
The comparison is computed from each run's result tables only.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pandas as pd

from dsosim.federates.common.curves import PRICE_CAP
from dsosim.federates.recorder.summary import read_table
from dsosim.runner.build.federation import build
from dsosim.runner.build.models import MODEL_NAMES, load_model
from dsosim.runner.launch import build_and_launch

COLUMNS = (
    "model",
    "title",
    "vision",
    "complete",
    "total_cost",
    "generation_cost",
    "der_revenue",
    "mean_lmp",
    "dlmp_spread",
    "voltage_violations",
    "thermal_violations",
    "vmin_pu",
    "vmax_pu",
    "losses_mwh",
    "imbalance_mwh",
    "pv_curtailed_mwh",
    "expost_voltage_violations",
    "expost_thermal_violations",
    "expost_vmax_pu",
    "gap_v_pu",
    "gap_losses_mw",
    "gap_lin_v_pu",
    "gap_lin_losses_mw",
    "relinearised_unconverged",
    "settlement_residual",
    "buyers_paid",
    "sellers_received",
    "congestion_rent",
    "imbalance_charges",
    "dmo_surplus",
    "da_cost",
    "rt_cost",
    "deviation_cost",
    "unwound_mwh",
    "unwound_cost",
    "unwound_pf_mwh",
    "dmo_loss_rent",
    "dmo_congestion_rent",
    "dmo_mismatch",
    "dmo_imbalance",
    "messages",
    "bytes",
    "messages_per_interval",
    "bytes_per_interval",
    "iso_bids",
    "wall_s",
)


def run_models(
    scenario: Path,
    out: Path,
    *,
    models: Sequence[str] = MODEL_NAMES,
    hours: float | None = None,
    start_hour: float | None = None,
    on_done: Callable[[str, dict[str, Any]], None] | None = None,
    seeds: Sequence[int] | None = None,
    jobs: int = 1,
) -> pd.DataFrame:
    """Run ``scenario`` under each model and return the comparison table.

    Without ``seeds``: one run per model on the scenario's seed, into
    ``out/model-<m>/``, one row per model. With ``seeds``: one run per model
    and seed, into ``out/seed-<s>/model-<m>/``, one row per run with a
    ``seed`` column (``seeds.aggregate`` turns them into means and
    intervals). ``jobs`` runs that many federations at once, each on its own
    broker port; rows come back in model-then-seed order whatever finishes
    first."""
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    tasks = [
        (m, s, out / f"model-{m}" if s is None else out / f"seed-{s}" / f"model-{m}")
        for m in models
        for s in (seeds if seeds is not None else [None])
    ]
    build_lock = threading.Lock()  # OpenDSS must not run in two threads of one process

    def one(model: str, seed: int | None, folder: Path) -> dict[str, Any]:
        def make() -> Any:
            with build_lock:
                return build(
                    scenario, folder, hours=hours, start_hour=start_hour, model=model, seed=seed
                )

        built, outcome = build_and_launch(make)
        row = metrics(built.results_dir, model, outcome.summary)
        if seed is not None:
            row["seed"] = seed
        row["wall_s"] = round(outcome.wall_s, 1)
        if not outcome.ok:
            row["complete"] = False
            row["failure"] = outcome.failure
        return row

    rows: list[dict[str, Any] | None] = [None] * len(tasks)

    def done(i: int, row: dict[str, Any]) -> None:
        rows[i] = row
        if on_done is not None:
            m, s = tasks[i][0], tasks[i][1]
            on_done(m if s is None else f"{m} seed {s}", row)

    if jobs == 1:  # no pool: OpenDSS once crashed creating an engine in a worker thread (CI)
        for i, task in enumerate(tasks):
            done(i, one(*task))
        return _ordered(pd.DataFrame(rows))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(one, *task): i for i, task in enumerate(tasks)}
        try:
            for future in as_completed(futures):
                done(futures[future], future.result())
        except BaseException:
            # runs not started yet are dropped; those running finish (or stall out)
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return _ordered(pd.DataFrame(rows))


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison's columns in their documented order."""
    first = [c for c in ("model", "seed") if c in table.columns]
    return table[
        first
        + [c for c in COLUMNS if c in table.columns and c not in first]
        + [c for c in table.columns if c not in COLUMNS and c not in first]
    ]


LDA_ROLES = ("utility", "dmo", "agg")


def lda_wholesale_costs(ledger: pd.DataFrame) -> dict[str, float]:
    """What the LDAs' parties (utilities, market operators, aggregators) paid
    the ISO, $: ``da_cost`` for day-ahead schedules at day-ahead prices,
    ``rt_cost`` for real-time energy (the whole award in a real-time-only
    run; with a day-ahead market, the deviation from the schedule at
    real-time prices), ``deviation_cost`` for metered imbalance."""
    if ledger.empty:
        return {"da_cost": math.nan, "rt_cost": math.nan, "deviation_cost": math.nan}
    lda = ledger["payer"].str.split(":").str[0].isin(LDA_ROLES)
    mine = ledger[(ledger["market"] == "iso") & (ledger["payee"] == "iso") & lda]
    by_item = mine.groupby("item")["amount"].sum()
    return {
        "da_cost": round(float(by_item.get("day_ahead", 0.0)), 2),
        "rt_cost": round(float(by_item.get("energy", 0.0)), 2),
        "deviation_cost": round(float(by_item.get("imbalance", 0.0)), 2),
    }


def unwound(table: pd.DataFrame, hours: float) -> dict[str, float]:
    """Day-ahead schedules of aggregator locations the feeder could not carry
    (``unwound`` table, models 1-2 with a day-ahead market), at the T-D
    interface: ``unwound_mwh`` their energy (sum of |MW| x h x scale) by the
    utility's linear check, ``unwound_pf_mwh`` by the same check on the
    feeder's power flow, and ``unwound_cost`` what unwinding the linear
    check's at real-time prices costs their holders beyond the day-ahead
    price, $ (sum of -unwound MW x h x scale x (LMP - day-ahead LMP)). NaN
    where nothing was checked."""
    if table.empty:
        return {"unwound_mwh": math.nan, "unwound_cost": math.nan, "unwound_pf_mwh": math.nan}
    mw = table["unwound_mw"] * table["scale"] * hours
    pf = (
        round(float((table["unwound_pf_mw"] * table["scale"] * hours).abs().sum()), 4)
        if "unwound_pf_mw" in table
        else math.nan
    )
    return {
        "unwound_mwh": round(float(mw.abs().sum()), 4),
        "unwound_cost": round(float((-mw * (table["lmp"] - table["da_lmp"])).sum()), 2),
        "unwound_pf_mwh": pf,
    }


def metrics(results: Path, model: str, summary: dict[str, Any]) -> dict[str, Any]:
    """One comparison row from a run's tables (see docs/models.md for each column)."""
    org = load_model(model)
    row: dict[str, Any] = {
        "model": model,
        "title": org.title,
        "vision": org.vision,
        "complete": bool(summary.get("complete")),
    }
    for key in (
        "generation_cost",
        "der_revenue",
        "voltage_violations",
        "thermal_violations",
        "vmin_pu",
        "vmax_pu",
        "losses_mwh",
        "imbalance_mwh",
        "expost_voltage_violations",
        "expost_thermal_violations",
        "expost_vmax_pu",
        "gap_v_pu",
        "gap_losses_mw",
        "gap_lin_v_pu",
        "gap_lin_losses_mw",
        "relinearised_unconverged",
        "settlement_residual",
        "buyers_paid",
        "sellers_received",
        "congestion_rent",
        "imbalance_charges",
        "dmo_surplus",
        "dmo_loss_rent",
        "dmo_congestion_rent",
        "dmo_mismatch",
        "dmo_imbalance",
        "messages",
        "bytes",
        "iso_bids",
    ):
        row[key] = summary.get(key, math.nan)
    row["mean_lmp"] = summary.get("mean_td_lmp", math.nan)
    # total cost: what the system spent producing energy plus the value of any
    # load it could not serve
    row["total_cost"] = round(
        summary.get("generation_cost", math.nan) + summary.get("shed_mwh", 0.0) * PRICE_CAP, 2
    )
    intervals = max(1, int(summary.get("intervals", 0)))
    row["messages_per_interval"] = (
        round(row["messages"] / intervals, 2) if row["messages"] == row["messages"] else math.nan
    )
    row["bytes_per_interval"] = (
        round(row["bytes"] / intervals, 1) if row["bytes"] == row["bytes"] else math.nan
    )
    dispatch = read_table(results, "dispatch")
    if dispatch.empty:
        row["dlmp_spread"] = math.nan  # no distribution prices in this model
    else:
        spread = dispatch.groupby(["interval", "dso"])["dlmp"].agg(lambda s: s.max() - s.min())
        row["dlmp_spread"] = round(float(spread.mean()), 4)
    row.update(lda_wholesale_costs(read_table(results, "settlements")))
    pv, feeder = read_table(results, "ders_pv"), read_table(results, "feeder")
    interval_h = float(feeder["hours"].iloc[0]) if not feeder.empty else 0.0
    row.update(unwound(read_table(results, "unwound"), interval_h))
    if not pv.empty and not feeder.empty:
        # per modelled feeder, times the LDA's scale: the LDA's curtailment
        hours, scale = float(feeder["hours"].iloc[0]), float(feeder["scale"].iloc[0])
        row["pv_curtailed_mwh"] = round(float(pv["curtailed_mw"].sum()) * hours * scale, 4)
    return row
