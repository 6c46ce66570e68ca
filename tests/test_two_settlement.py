"""Two settlements in federations: the ISO's day-ahead market before each day,
day-ahead schedules paid at day-ahead prices, real-time deviations at
real-time prices; the books close in every model.

Who talks to whom (per day, at its gate closure)::

    aggregators --DayAheadOffer (curves per location and hour)--> ISO (models 1-2)
                                          or utility and DMO (3-6)  (DA_OFFER)
    utility (per LDA) --DayAheadBid (one curve per hour)--> ISO   (DA_BID)
    ISO: multi-period DC-OPF on its forecast loads + the bids     (DA_CLEAR)
    then every interval: ISO --Award (with da_mw, da_lmp)--> utility / DMO
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsosim.federates.common.config import IsoConfig, IsoInterface, TimeSettings
from dsosim.federates.common.curves import BidCurve, PlacedCurve
from dsosim.federates.common.parties import BidKey, Party
from dsosim.federates.iso.wholesale import WholesaleMarket
from dsosim.federates.recorder.summary import settlement_balance
from tests.federation import SCENARIOS, run_scenario, table

TWO = SCENARIOS / "two-settlement.toml"


def _ledger(rows: list[tuple[object, ...]]):
    import pandas as pd

    from dsosim.federates.common import ledger

    return pd.DataFrame(rows, columns=ledger.COLUMNS)


def test_role_two_settlements_close_the_books() -> None:
    """The wholesale role alone: a day cleared ahead, every interval settled
    against it; buyers - sellers = what the ISO keeps, interval by interval,
    with real-time prices and quantities away from the day-ahead ones."""
    from dsosim.federates.common.config import DayAheadConfig

    time = TimeSettings(interval_s=900.0, n_intervals=96)
    config = IsoConfig(
        name="iso",
        case="case14",
        line_limit_mw=40.0,
        interfaces=(IsoInterface(dso="a", td_bus=9), IsoInterface(dso="b", td_bus=14)),
        day_ahead=DayAheadConfig(load_forecast_error=0.05),
    )
    market = WholesaleMarket(config, time, seed=3)
    holders = {"a": Party.utility("a"), "b": Party.utility("b")}
    da_bids = {
        BidKey(lda, holders[lda]): [BidCurve(20.0 + h % 7, ((30.0, 5.0),)) for h in range(24)]
        for lda in ("a", "b")
    }
    tables = market.clear_day_ahead(0, da_bids)
    assert len(tables["day_ahead"][1]) == 24 * 14
    rng = np.random.default_rng(0)
    rows, iso_rows = [], []
    for k in range(96):
        bids = [
            PlacedCurve(BidKey("a", holders["a"]), BidCurve(rng.uniform(10, 30), ((40.0, 8.0),))),
            PlacedCurve(BidKey("b", holders["b"]), BidCurve(rng.uniform(10, 30))),
            PlacedCurve(BidKey("b", Party.agg("x"), "n1"), BidCurve(-3.0, ((25.0, 6.0),))),
        ]
        clearing = market.clear(k, bids)
        rows += clearing.tables["settlements"][1]
        iso_rows += clearing.tables["iso"][1]
    import pandas as pd

    from dsosim.federates.iso.wholesale import ISO_COLUMNS

    ledger = _ledger(rows)
    assert set(ledger["item"]) == {"day_ahead", "energy"}
    # not a trivial case: congestion in both markets, real-time prices off the day-ahead ones
    iso_frame = pd.DataFrame(iso_rows, columns=ISO_COLUMNS)
    assert (iso_frame["binding_lines"] > 0).any()
    assert any(r[4] > 1e-3 for r in tables["day_ahead_iso"][1])
    energy = ledger[ledger["item"] == "energy"]
    da_rows = ledger[ledger["item"] == "day_ahead"]
    assert not np.allclose(energy["price"].mean(), da_rows["price"].mean())
    balance = settlement_balance(ledger, iso_frame)
    assert balance["buyers_paid"] > 0
    assert abs(balance["settlement_residual"]) <= 1e-6 * balance["buyers_paid"]
    # the day-ahead schedule of the holder is paid at the day-ahead price
    first = ledger[(ledger["interval"] == 5) & (ledger["payer"] == "utility:a")]
    da = first[first["item"] == "day_ahead"].iloc[0]
    award = next(r for r in tables["day_ahead_awards"][1] if r[3] == "a" and r[2] == 1)
    assert da["mw"] == pytest.approx(award[7]) and da["price"] == pytest.approx(award[6])
    # the aggregator has no day-ahead position: all its energy settles in real time
    assert set(ledger[ledger["payer"] == "agg:x"]["item"]) == {"energy"}


def test_role_an_aggregator_bidding_at_the_iso_holds_a_day_ahead_schedule() -> None:
    """Models 1-2: an aggregator's day-ahead offer per location clears at the
    ISO; every interval of the period pays its schedule at the day-ahead price
    and only its real-time award's deviation from it at the real-time LMP."""
    from dsosim.federates.common.config import DayAheadConfig

    time = TimeSettings(interval_s=900.0, n_intervals=96)
    config = IsoConfig(
        name="iso",
        case="case14",
        interfaces=(IsoInterface(dso="a", td_bus=9),),
        day_ahead=DayAheadConfig(load_forecast_error=0.0),
    )
    market = WholesaleMarket(config, time, seed=3)
    utility, agg = BidKey("a", Party.utility("a")), BidKey("a", Party.agg("x"), "n1")
    battery = BidCurve(-5.0, ((1000.0, 5.0), (1.0, 5.0)))  # sells 5 MW above 1000, buys below 1
    da_bids = {utility: [BidCurve(20.0)] * 24, agg: [battery] * 24}
    tables = market.clear_day_ahead(0, da_bids)
    scheduled = [r for r in tables["day_ahead_awards"][1] if r[4] == "agg:x"]
    assert len(scheduled) == 24 and all(r[7] == 0.0 for r in scheduled)  # idle at case14 prices
    da_bids[agg] = [BidCurve(-2.0)] * 24  # a firm 2 MW sale every hour
    tables = market.clear_day_ahead(0, da_bids)
    da_price = {r[2]: r[6] for r in tables["day_ahead_awards"][1] if r[4] == "agg:x"}
    clearing = market.clear(
        5, [PlacedCurve(utility, BidCurve(20.0)), PlacedCurve(agg, BidCurve(-3.0))]
    )
    mine = [r for r in clearing.tables["settlements"][1] if r[2] == "agg:x"]
    items = {r[4]: (r[5], r[6]) for r in mine}
    assert items["day_ahead"] == pytest.approx((-2.0, da_price[1]))  # interval 5: hour 1
    assert items["energy"] == pytest.approx((-1.0, clearing.awards[agg].lmp))


@pytest.mark.federation
@pytest.mark.slow
@pytest.mark.parametrize("model", ["layered", "1", "4"])
def test_two_days_of_two_settlements(model: str, tmp_path: Path) -> None:
    built, outcome = run_scenario(TWO, tmp_path / model, hours=26, timeout_s=600, model=model)
    s = outcome.summary
    assert s["complete"] is True and s["intervals"] == 26 * 12
    results = built.results_dir
    da_iso = table(results, "day_ahead_iso")
    assert list(da_iso["day"]) == [0, 1]  # one market per day, day 2 before its first interval
    assert list(da_iso["interval"]) == [0, 288] and (da_iso["status"] == "optimal").all()
    prices = table(results, "day_ahead")
    assert prices.groupby("day")["period"].nunique().tolist() == [24, 24]
    assert prices["lmp"].std() > 0.1  # prices move over the day
    ledger = table(results, "settlements")
    iso = ledger[ledger["market"] == "iso"]
    assert (iso["item"] == "day_ahead").any() and (iso["item"] == "energy").any()
    # the books close across both settlements, and the ISO's and DMOs' views agree
    assert abs(s["settlement_residual"]) <= 1e-6 * s["buyers_paid"]
    assert abs(s["unreconciled"]) <= 1e-6 * s["buyers_paid"]
    # the LDA's day-ahead position in hour 13 of day 0, settled every interval of that hour
    awards = table(results, "day_ahead_awards")
    lda_awards = awards[~awards["party"].str.startswith("agg:")]
    hour = lda_awards[(lda_awards["day"] == 0) & (lda_awards["period"] == 13)].iloc[0]
    da_rows = iso[(iso["item"] == "day_ahead") & (iso["payer"] == hour["party"])]
    in_hour = da_rows[(da_rows["interval"] >= 156) & (da_rows["interval"] < 168)]
    assert len(in_hour) == 12
    assert np.allclose(in_hour["mw"], hour["cleared_mw"])
    assert np.allclose(in_hour["price"], hour["lmp"])
    # the aggregators offered day-ahead: to the ISO (model 1), or to the LDA,
    # whose market operator settles each location's schedule at the day-ahead
    # price, constant over the period, and its deviation at the DLMP
    if model == "1":
        mine = awards[awards["party"].str.startswith("agg:")]
        assert set(mine["party"]) == {"agg:agg_solar", "agg:agg_storage"}
        assert (mine["cleared_mw"].abs() > 1e-3).sum() > 10
        agg_da = iso[(iso["item"] == "day_ahead") & iso["payer"].str.startswith("agg:")]
    else:
        assert set(awards["party"]) == {"dmo:lda5"}
        agg_da = ledger[ledger["item"].str.startswith("day_ahead@")]
        assert (agg_da["market"] == "lda:lda5").all() and (agg_da["payee"] == "dmo:lda5").all()
        td = table(results, "interface").set_index("interval")
        assert (agg_da["price"] != agg_da["interval"].map(td["lmp"])).any()  # not the RT price
        # each schedule is the LDA market's day-ahead clearing on the feeder
        # forecast, settled at its day-ahead DLMP; the feeder prices them apart
        dd = table(results, "day_ahead_dispatch")
        paid = agg_da.assign(
            aggregator=agg_da["payer"].str.removeprefix("agg:"),
            location=agg_da["item"].str.removeprefix("day_ahead@"),
        ).merge(dd, on=["interval", "aggregator", "location"], validate="one_to_one")
        assert len(paid) == len(agg_da)
        assert np.allclose(paid["price"], paid["da_dlmp"])
        assert np.allclose(paid["mw"], paid["da_mw"] * 10.0)  # the scenario's scale
        assert (dd.groupby("interval")["da_dlmp"].nunique() > 1).mean() > 0.5
        parts = ("dmo_loss_rent", "dmo_congestion_rent", "dmo_mismatch", "dmo_imbalance")
        assert sum(s[k] for k in parts) == pytest.approx(s["dmo_surplus"], abs=0.05)
    assert len(agg_da) > 100 and (agg_da["mw"].abs() > 1e-3).any()
    # (at the ISO an aggregator's locations settle as rows of the same item: compare sets)
    per_interval = agg_da.groupby(["payer", "item", "interval"]).agg(
        mw=("mw", lambda x: tuple(sorted(x))), price=("price", "max")
    )
    hourly = per_interval.reset_index().assign(hour=lambda f: f["interval"] // 12)
    hourly = hourly.groupby(["payer", "item", "hour"])
    assert (hourly["mw"].nunique() == 1).all() and (hourly["price"].nunique() == 1).all()
    # model 1: the utility checks the aggregators' schedules on its feeder every
    # interval; it can only move a schedule toward zero
    if model == "1":
        unwound = table(results, "unwound")
        assert len(unwound) == 26 * 12 * 9  # every interval, the nine aggregator locations
        same_side = unwound["carried_mw"] * unwound["da_mw"] >= 0
        smaller = unwound["carried_mw"].abs() <= unwound["da_mw"].abs() + 1e-9
        assert same_side.all() and smaller.all()
        assert np.allclose(unwound["unwound_mw"], unwound["da_mw"] - unwound["carried_mw"])
        # the same check on the feeder's power flow, likewise
        assert unwound["carried_pf_mw"].notna().all() and unwound["pf_converged"].all()
        assert (unwound["carried_pf_mw"] * unwound["da_mw"] >= 0).all()
        assert (unwound["carried_pf_mw"].abs() <= unwound["da_mw"].abs() + 1e-9).all()
        assert (unwound["unwound_pf_mw"].abs() > 1e-3).any()
    else:
        assert not (results / "unwound").exists()
    # forecasts beside what happened, from the ISO, the utility and each aggregator
    forecasts = table(results, "forecasts")
    assert set(forecasts["source"]) == {"iso", "lda5", "agg_solar", "agg_storage"}
    load = forecasts[(forecasts["quantity"] == "load_mw") & (forecasts["source"] == "lda5")]
    assert len(load) == 26 and (load["forecast"] != load["actual"]).all()


@pytest.mark.federation
@pytest.mark.slow
def test_gate_closure_the_day_before_and_a_byte_identical_rerun(tmp_path: Path) -> None:
    """Day 1's market closes at 10:00 of day 0 (``gate_closure_hours = 14``):
    the aggregators offer in the gap before interval 120, day 0's before
    interval 0. The same scenario and seed run twice give the same bytes."""
    import hashlib

    feeder = (SCENARIOS.parent / "feeders" / "ieee13" / "Master.dss").resolve()
    text = TWO.read_text().replace('"../feeders/ieee13/Master.dss"', json_str(feeder))
    text = text.replace(
        "load_forecast_error = 0.03\n", "load_forecast_error = 0.03\ngate_closure_hours = 14\n"
    )
    scenario = tmp_path / "gate.toml"
    scenario.write_text(text)

    def parts(results: Path) -> dict[str, str]:
        return {
            str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(results.rglob("part-*.parquet"))
        }

    runs = []
    for name in ("first", "second"):
        built, outcome = run_scenario(scenario, tmp_path / name, hours=25, timeout_s=600, model="4")
        assert outcome.summary["complete"] is True, outcome.failure
        runs.append(built.results_dir)
    traffic = table(runs[0], "traffic")
    offers = traffic[traffic["kind"] == "day_ahead_offer"]
    assert sorted(set(offers["interval"])) == [0, 120]
    assert set(offers["federate"]) == {"agg_solar", "agg_storage"}
    assert list(table(runs[0], "day_ahead_iso")["day"]) == [0, 1]
    s = outcome.summary
    assert abs(s["settlement_residual"]) <= 1e-6 * s["buyers_paid"]
    first = parts(runs[0])
    assert len(first) >= 20 and "forecasts/part-00001.parquet" in first
    assert parts(runs[1]) == first


def json_str(path: Path) -> str:
    import json

    return json.dumps(str(path))


@pytest.mark.federation
@pytest.mark.slow
@pytest.mark.parametrize("model", ["baseline", "2", "5", "6"])
def test_the_books_close_across_both_settlements(model: str, tmp_path: Path) -> None:
    """The models the two-day test leaves out, over the first day-ahead
    market's first three hours: both settlements in every party's ledger, and
    the books close (the ISO's, each DMO's, their views of each other)."""
    built, outcome = run_scenario(TWO, tmp_path / model, hours=3, timeout_s=600, model=model)
    s = outcome.summary
    assert s["complete"] is True, outcome.failure
    ledger = table(built.results_dir, "settlements")
    assert abs(s["settlement_residual"]) <= 1e-6 * s["buyers_paid"]
    assert abs(s["unreconciled"]) <= 1e-6 * s["buyers_paid"]
    day_ahead = ledger[ledger["item"].str.startswith("day_ahead")]
    payers = {p.split(":")[0] for p in day_ahead["payer"]}
    if model == "baseline":  # the utility holds the LDA's schedule: its forecast load
        assert "utility" in payers and "agg" not in payers
    else:  # the aggregators' schedules settle too: at the ISO (2) or with the DMO (5, 6)
        assert "agg" in payers
    if model in ("5", "6"):
        parts = ("dmo_loss_rent", "dmo_congestion_rent", "dmo_mismatch", "dmo_imbalance")
        assert sum(s[k] for k in parts) == pytest.approx(s["dmo_surplus"], abs=0.05)
