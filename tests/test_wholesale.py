"""The ISO's wholesale market role, without HELICS: awards, books, imbalance."""

from __future__ import annotations

import numpy as np
import pytest

from dsosim.federates.common.config import IsoConfig, IsoInterface, TimeSettings
from dsosim.federates.common.curves import BidCurve
from dsosim.federates.iso.wholesale import WholesaleMarket

TIME = TimeSettings(interval_s=300.0, n_intervals=4)


def _market(line_limit: float | None = None) -> WholesaleMarket:
    config = IsoConfig(name="iso", case="case9", line_limit_mw=line_limit, load_profile="flat",
                       interfaces=(IsoInterface(dso="lda5", td_bus=5), IsoInterface(dso="lda7", td_bus=7)))
    return WholesaleMarket(config, TIME, seed=1)


BIDS = {"lda5": BidCurve(20.0, ((30.0, 5.0), (22.0, 5.0))), "lda7": BidCurve(-5.0, ((40.0, 3.0),))}


def _table(clearing, name):  # noqa: ANN001, ANN202
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
    for dso, curve in BIDS.items():
        td_bus, lmp, energy, congestion, cleared = clearing.awards[dso]
        assert energy + congestion == pytest.approx(lmp)
        # each award is on its curve at its LMP (blocks at the LMP may be split)
        assert curve.quantity_at(lmp + 1e-6) - 1e-9 <= cleared <= curve.quantity_at(lmp - 1e-6) + 1e-9
    assert clearing.awards["lda5"][4] > 20.0  # some of lda5's blocks clear at ~24 $/MWh


def test_lmp_rises_with_the_dso_bid() -> None:
    market = _market()
    low = market.clear(0, BIDS).awards["lda5"][1]
    more = dict(BIDS, lda5=BidCurve(60.0, BIDS["lda5"].blocks))
    high = market.clear(1, more).awards["lda5"][1]
    assert high > low + 0.1


def test_imbalance_settled_at_the_interval_lmp() -> None:
    market = _market()
    clearing = market.clear(0, BIDS)
    scheduled, lmp = clearing.awards["lda5"][4], clearing.awards["lda5"][1]
    tables = market.settle_imbalance(0, {"lda5": scheduled + 3.0, "lda7": clearing.awards["lda7"][4]})
    rows = dict((r[2], r) for r in tables["imbalance"][1])
    assert rows["lda5"][6] == pytest.approx(3.0) and rows["lda7"][6] == pytest.approx(0.0)
    cols, pay = tables["settlements"]
    amount = dict(zip(cols, pay[0], strict=True))["amount"]
    assert amount == pytest.approx(lmp * 3.0 * 300 / 3600)


def test_missing_bid_or_meter_is_an_error() -> None:
    market = _market()
    with pytest.raises(ValueError, match=r"no bid from \['lda7'\]"):
        market.clear(0, {"lda5": BIDS["lda5"]})
    market.clear(0, BIDS)
    with pytest.raises(ValueError, match="no meter reading from 'lda7'"):
        market.settle_imbalance(0, {"lda5": 1.0})


def test_unknown_td_bus_rejected() -> None:
    config = IsoConfig(name="iso", case="case9", interfaces=(IsoInterface(dso="x", td_bus=99),))
    with pytest.raises(ValueError, match="T-D bus 99 of 'x' is not a bus of case 'case9'"):
        WholesaleMarket(config, TIME, seed=1)


def test_fixed_load_follows_profile() -> None:
    config = IsoConfig(name="iso", case="case9", interfaces=(IsoInterface(dso="x", td_bus=5),))
    market = WholesaleMarket(config, TimeSettings(interval_s=3600.0, n_intervals=24), seed=1)
    totals = np.array([market.fixed_load(k).sum() for k in range(24)])
    assert totals.argmin() in range(1, 6) and totals.argmax() in range(15, 21)
