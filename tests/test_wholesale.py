"""The ISO's wholesale market role, without HELICS: awards, books, imbalance."""

from __future__ import annotations

import numpy as np
import pytest

from dsosim.federates.common.config import IsoConfig, IsoInterface, TimeSettings
from dsosim.federates.common.curves import BidCurve
from dsosim.federates.common.parties import BidKey, Party
from dsosim.federates.iso.wholesale import AwardLine, Clearing, IsoBid, WholesaleMarket

TIME = TimeSettings(interval_s=300.0, n_intervals=4)


def _market(line_limit: float | None = None) -> WholesaleMarket:
    config = IsoConfig(
        name="iso",
        case="case9",
        line_limit_mw=line_limit,
        load_profile="flat",
        interfaces=(IsoInterface(dso="lda5", td_bus=5), IsoInterface(dso="lda7", td_bus=7)),
    )
    return WholesaleMarket(config, TIME, seed=1)


CURVES = {
    "lda5": BidCurve(20.0, ((30.0, 5.0), (22.0, 5.0))),
    "lda7": BidCurve(-5.0, ((40.0, 3.0),)),
}
BIDS = [IsoBid(BidKey(lda, Party.dmo(lda)), c) for lda, c in CURVES.items()]
HOLDERS = {"lda5": Party.dmo("lda5"), "lda7": Party.dmo("lda7")}


def _awards(clearing: Clearing) -> dict[str, AwardLine]:
    """Awards by the text form of their keys (as the awards table writes them)."""
    return {str(key): line for key, line in clearing.awards.items()}


def _table(clearing, name):
    cols, rows = clearing.tables[name]
    return [dict(zip(cols, r, strict=True)) for r in rows]


def test_books_close_under_congestion() -> None:
    market = _market(line_limit=120.0)
    clearing = market.clear(0, BIDS)
    iso = _table(clearing, "iso")[0]
    assert clearing.status == "optimal" and iso["binding_lines"] >= 1
    lmps = {r["bus"]: r["lmp"] for r in _table(clearing, "market")}
    assert max(lmps.values()) - min(lmps.values()) > 1.0  # congestion separates prices
    ledger = _table(clearing, "settlements")
    into_iso = sum(r["amount"] for r in ledger if r["payee"] == "iso")
    out_of_iso = sum(r["amount"] for r in ledger if r["payer"] == "iso")
    assert iso["congestion_rent"] > 1.0
    assert into_iso - out_of_iso == pytest.approx(iso["congestion_rent"], rel=1e-9)


def test_awards_follow_the_bid_curves() -> None:
    clearing = _market().clear(0, BIDS)
    for dso, curve in CURVES.items():
        a = _awards(clearing)[dso]
        lmp, energy, congestion, cleared = a.lmp, a.lmp_energy, a.lmp_congestion, a.cleared_mw
        assert energy + congestion == pytest.approx(lmp)
        # each award is on its curve at its LMP (blocks at the LMP may be split)
        assert (
            curve.quantity_at(lmp + 1e-6) - 1e-9 <= cleared <= curve.quantity_at(lmp - 1e-6) + 1e-9
        )
    assert _awards(clearing)["lda5"].cleared_mw > 20.0  # some of lda5's blocks clear at ~24 $/MWh


def test_many_bids_at_one_bus_share_the_lmp_and_settle_separately() -> None:
    bids = [*BIDS, IsoBid(BidKey("lda5", Party.agg("agg"), "675"), BidCurve(-1.0, ((50.0, 2.0),)))]
    clearing = _market().clear(0, bids)
    assert _awards(clearing)["agg/675"].lmp == _awards(clearing)["lda5"].lmp
    assert _awards(clearing)["agg/675"].cleared_mw == pytest.approx(
        1.0
    )  # its 50 $/MWh block clears
    parties = {r["party"] for r in _table(clearing, "awards")}
    assert parties == {"dmo:lda5", "dmo:lda7", "agg:agg"}
    assert _table(clearing, "interface")[0]["bids"] == 2


def test_lmp_rises_with_the_dso_bid() -> None:
    market = _market()
    low = _awards(market.clear(0, BIDS))["lda5"].lmp
    more = [IsoBid(BIDS[0].at, BidCurve(60.0, CURVES["lda5"].blocks)), BIDS[1]]
    high = _awards(market.clear(1, more))["lda5"].lmp
    assert high > low + 0.1


def test_imbalance_settled_at_the_interval_lmp() -> None:
    market = _market()
    clearing = market.clear(0, BIDS)
    scheduled, lmp = _awards(clearing)["lda5"].cleared_mw, _awards(clearing)["lda5"].lmp
    metered = {
        "lda5": (scheduled + 3.0, {Party.agg("x"): 1.0}),
        "lda7": (_awards(clearing)["lda7"].cleared_mw, {}),
    }
    tables = market.settle_imbalance(0, metered, HOLDERS)
    rows = dict((r[2], r) for r in tables["imbalance"][1])
    assert rows["lda5"][6] == pytest.approx(3.0) and rows["lda7"][6] == pytest.approx(0.0)
    cols, pay = tables["settlements"]
    charged = {
        (d["payer"], d["dso"] if "dso" in d else None): d["amount"]
        for d in (dict(zip(cols, p, strict=True)) for p in pay)
    }
    # the meter operator allocated 1 MW to an aggregator; the holder pays the rest
    assert charged[("agg:x", None)] == pytest.approx(lmp * 1.0 * 300 / 3600)
    assert charged[("dmo:lda5", None)] == pytest.approx(lmp * 2.0 * 300 / 3600)


def test_missing_bid_or_meter_is_an_error() -> None:
    market = _market()
    with pytest.raises(ValueError, match=r"no bid from \['lda7'\]"):
        market.clear(0, BIDS[:1])
    market.clear(0, BIDS)
    with pytest.raises(ValueError, match="no meter reading from 'lda7'"):
        market.settle_imbalance(0, {"lda5": (1.0, {})}, HOLDERS)


def test_unknown_td_bus_rejected() -> None:
    config = IsoConfig(name="iso", case="case9", interfaces=(IsoInterface(dso="x", td_bus=99),))
    with pytest.raises(ValueError, match="T-D bus 99 of 'x' is not a bus of case 'case9'"):
        WholesaleMarket(config, TIME, seed=1)


def test_fixed_load_follows_profile() -> None:
    config = IsoConfig(name="iso", case="case9", interfaces=(IsoInterface(dso="x", td_bus=5),))
    market = WholesaleMarket(config, TimeSettings(interval_s=3600.0, n_intervals=24), seed=1)
    totals = np.array([market.fixed_load(k).sum() for k in range(24)])
    assert totals.argmin() in range(1, 6) and totals.argmax() in range(15, 21)
