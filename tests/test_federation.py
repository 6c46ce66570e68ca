"""Real federations launched through ``helics run`` (broker on a free port).

Who talks to whom each interval (see docs/timing.md)::

    agg_solar ──FleetBid──►  lda5 ──InterfaceBid──► iso
    agg_storage ─FleetBid─►   │  ◄──────Award──────  │
         ◄────Dispatch──────  │                      │
         ────Measurement────► │ ──────Meter────────► │
    every federate ── result rows ──► recorder
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.federation import ROOT, SCENARIOS, run_scenario, table

pytestmark = pytest.mark.federation
QUICKSTART = SCENARIOS / "quickstart.toml"
HOURS = 3.0


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory):
    built, outcome = run_scenario(QUICKSTART, tmp_path_factory.mktemp("base"), hours=HOURS)
    assert outcome.ok, outcome.failure
    return built, outcome


def test_run_completes_with_every_table(base_run) -> None:
    built, outcome = base_run
    n = int(HOURS * 12)
    assert outcome.summary["complete"] is True
    assert outcome.summary["intervals"] == n
    volts = table(built.results_dir, "voltages")
    per_interval = volts.groupby("interval")["node"].nunique()
    assert len(per_interval) == n and per_interval.min() == per_interval.max() > 30
    for name in (
        "market",
        "interface",
        "imbalance",
        "feeder",
        "dispatch",
        "bids",
        "ders",
        "settlements",
        "traffic",
    ):
        assert len(table(built.results_dir, name)) >= n, name
    # every table with an interval carries its simulated date and time (scenario start)
    market = table(built.results_dir, "market")
    start = pd.Timestamp("2026-07-20 00:00")
    assert (market["timestamp"] == start + pd.to_timedelta(market["interval"] * 300, "s")).all()


def test_constraints_table_names_the_rows_that_shaped_each_clearing(base_run) -> None:
    built, _ = base_run
    rows = table(built.results_dir, "constraints")
    assert set(rows["status"]) <= {"binding", "relaxed"} and len(rows) > 0
    binding = rows[rows["status"] == "binding"]
    # a binding row is at its limit with a market price
    assert (binding["dual"] > 0.0).all()
    assert np.allclose(binding["value"], binding["limit"], atol=1e-6)
    # a relaxed row is past its rating at the operating point or held at any price
    relaxed = rows[rows["status"] == "relaxed"]
    past = np.where(
        relaxed["kind"] == "vmin",
        relaxed["limit"] - relaxed["value"],
        relaxed["value"] - relaxed["limit"],
    )
    assert ((past > -1e-9) | (relaxed["dual"] > 0.0)).all()
    # a dispatched DER sees the binding rows in its DLMP's congestion part
    dispatch = table(built.results_dir, "dispatch")
    congested = dispatch[dispatch["dlmp_congestion"].abs() > 1e-9]["interval"].unique()
    assert set(congested) <= set(binding["interval"])


def test_energy_balances_at_the_td_interface(base_run) -> None:
    built, _ = base_run
    feeder = table(built.results_dir, "feeder")
    # OpenDSS power balance at the feeder head: loads + DER net demand + losses
    np.testing.assert_allclose(
        feeder["head_mw"],
        feeder["inflexible_mw"] + feeder["der_mw"] + feeder["losses_mw"],
        atol=2e-3,
    )
    np.testing.assert_allclose(
        feeder["td_flow_mw"], feeder["head_mw"] * feeder["scale"], rtol=1e-12
    )
    # the ISO settles exactly the imbalance the DSO metered, interval by interval
    imb = table(built.results_dir, "imbalance").set_index("interval").sort_index()
    f = feeder.set_index("interval").sort_index()
    np.testing.assert_allclose(imb["actual_mw"], f["td_flow_mw"], rtol=1e-12)
    np.testing.assert_allclose(imb["scheduled_mw"], f["scheduled_mw"], rtol=1e-12)
    np.testing.assert_allclose(imb["imbalance_mw"], f["td_flow_mw"] - f["scheduled_mw"], atol=1e-9)
    # the schedule is what the ISO awarded
    iface = table(built.results_dir, "interface").set_index("interval").sort_index()
    np.testing.assert_allclose(iface["cleared_mw"], f["scheduled_mw"], rtol=1e-12)
    # imbalance comes from load forecast error and response, so it is small but not zero
    rel = (imb["imbalance_mw"].abs() / imb["scheduled_mw"].abs()).median()
    assert 0 < rel < 0.1


def test_settlements_balance(base_run) -> None:
    built, outcome = base_run
    s = outcome.summary
    assert s["buyers_paid"] > 0
    assert abs(s["settlement_residual"]) <= 1e-6 * s["buyers_paid"]
    assert abs(s["unreconciled"]) <= 1e-6 * s["buyers_paid"]
    on_disk = json.loads((built.results_dir / "summary.json").read_text())
    assert on_disk == s


def test_lmp_moves_when_the_dso_bid_moves(base_run, tmp_path: Path) -> None:
    built, _ = base_run
    bigger = tmp_path / "bigger.toml"
    bigger.write_text(
        QUICKSTART.read_text()
        .replace("scale = 10", "scale = 30")
        .replace('"../feeders/', f'"{(SCENARIOS.parent / "feeders").as_posix()}/')
    )
    built2, outcome = run_scenario(bigger, tmp_path / "out", hours=1.0)
    assert outcome.ok, outcome.failure
    a = table(built.results_dir, "interface").set_index("interval")
    b = table(built2.results_dir, "interface").set_index("interval")
    common = b.index
    assert (b["bid_max_mw"] > a.loc[common, "bid_max_mw"] * 2.5).all()
    assert (b["lmp"] > a.loc[common, "lmp"] + 0.05).all()


def _digests(results: Path) -> dict[str, str]:
    return {
        str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(results.rglob("*"))
        if p.is_file()
    }


def test_same_scenario_same_bytes(tmp_path: Path) -> None:
    first, o1 = run_scenario(QUICKSTART, tmp_path / "a", hours=1.0)
    second, o2 = run_scenario(QUICKSTART, tmp_path / "b", hours=1.0)
    assert o1.ok and o2.ok
    d1, d2 = _digests(first.results_dir), _digests(second.results_dir)
    assert len(d1) > 10 and d1 == d2


def _rogue(interval: int, mode: str):
    def edit(spec: dict) -> None:
        for fed in spec["federates"]:
            if fed["name"] == "agg_solar":
                fed["exec"] = (
                    f"{fed['exec'].split()[0]} -u {ROOT / 'tests' / 'rogue_aggregator.py'} "
                    f"federation.json agg_solar {interval} {mode}"
                )
                fed["env"] = {"PYTHONPATH": str(ROOT)}

    return edit


def test_malformed_bid_stops_the_federation_cleanly(tmp_path: Path) -> None:
    start = time.perf_counter()
    built, outcome = run_scenario(
        QUICKSTART, tmp_path, hours=1.0, edit_runner=_rogue(4, "nan"), timeout_s=120, processes=0
    )
    assert time.perf_counter() - start < 60
    assert not outcome.ok and outcome.returncode != 0
    assert "agg_solar" in outcome.failure and "blocks[0].price" in outcome.failure
    summary = json.loads((built.results_dir / "summary.json").read_text())
    assert summary["complete"] is False and "agg_solar" in summary["error"]
    recorded = table(built.results_dir, "interface")["interval"].unique()
    assert sorted(recorded) == [0, 1, 2, 3]


def test_killed_federate_stops_the_run_and_keeps_flushed_results(tmp_path: Path) -> None:
    start = time.perf_counter()
    built, outcome = run_scenario(
        QUICKSTART, tmp_path, hours=2.0, edit_runner=_rogue(15, "kill"), timeout_s=120, processes=0
    )
    assert time.perf_counter() - start < 60
    assert not outcome.ok
    assert outcome.failure.startswith("agg_solar: process failed")
    summary = json.loads((built.results_dir / "summary.json").read_text())
    assert summary["complete"] is False and summary["status"] == "incomplete"
    assert "agg_solar" in summary["error"]
    # the first simulated hour was flushed before the crash and stays readable
    assert summary["intervals"] >= 12
    assert set(range(12)) <= set(table(built.results_dir, "feeder")["interval"])


def test_checked_in_runners_are_in_sync(tmp_path: Path) -> None:
    from dsosim.runner.build.checked_in import RUNS, regenerate

    # regenerate into a copy of the folder layout, so relative paths compare equal
    (tmp_path / "configs").mkdir()
    for folder in ("feeders", "scenarios", "models"):
        (tmp_path / "configs" / folder).symlink_to(ROOT / "configs" / folder)
    regenerate(tmp_path)
    for run in RUNS:
        for name in ("runner.json", "federation.json"):
            fresh, shipped = tmp_path / run.out / name, ROOT / run.out / name
            assert shipped.is_file() and fresh.read_text() == shipped.read_text(), (
                f"{run.out}/{name} is stale: run "
                "`python -m dsosim.runner.build.checked_in` from the repository root"
            )
