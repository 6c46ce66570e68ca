"""Transmission events (outages, load steps, extra supply): validation, the
schedule per interval, and what the ISO's clearing makes of them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dsosim.federates.common.config import IsoConfig, IsoInterface, TimeSettings, TransmissionEvent
from dsosim.federates.common.curves import BidCurve
from dsosim.federates.common.parties import BidKey, Party
from dsosim.federates.iso.case import load_case
from dsosim.federates.iso.events import EventError, EventSchedule, check_events
from dsosim.federates.iso.wholesale import IsoBid, WholesaleMarket

TIME = TimeSettings(interval_s=1800.0, n_intervals=8)  # half-hour intervals
OUTAGE = TransmissionEvent(kind="generator_outage", gen=1, start_hour=1.0, end_hour=2.0)
WIND = TransmissionEvent(
    kind="supply_offer", name="wind", bus=9, mw=400.0, price=-20.0, start_hour=2.5, end_hour=3.0
)
LOW = TransmissionEvent(kind="load_scale", factor=0.5, start_hour=0.5, end_hour=1.5)
BID = [IsoBid(BidKey("lda5", Party.dmo("lda5")), BidCurve(10.0))]


def _market(*events: TransmissionEvent) -> WholesaleMarket:
    config = IsoConfig(
        name="iso",
        case="case9",
        load_profile="flat",
        interfaces=(IsoInterface(dso="lda5", td_bus=5),),
        events=events,
    )
    return WholesaleMarket(config, TIME, seed=1)


def _rows(clearing, name):
    cols, rows = clearing.tables[name]
    return [dict(zip(cols, r, strict=True)) for r in rows]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (dict(kind="generator_outage", start_hour=1.0, end_hour=2.0), "needs gen"),
        (dict(kind="load_scale", factor=2.0, gen=1, start_hour=0, end_hour=1), "takes no gen"),
        (dict(kind="supply_offer", bus=9, mw=1.0, start_hour=0, end_hour=1), "needs price"),
        (dict(kind="load_scale", factor=2.0, start_hour=2.0, end_hour=1.0), "after start_hour"),
        (dict(kind="supply_offer", bus=9, mw=1, price=-5000, start_hour=0, end_hour=1), "price"),
    ],
)
def test_event_fields_are_validated(fields: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        TransmissionEvent(**fields)


def test_events_must_fit_the_case() -> None:
    case = load_case("case9")
    bad_gen = TransmissionEvent(kind="generator_outage", gen=3, start_hour=0, end_hour=1)
    with pytest.raises(EventError, match=r"events\[1\]\.gen: 3 is not a generator"):
        check_events(case, [LOW, bad_gen])
    bad_bus = WIND.model_copy(update={"bus": 42})
    with pytest.raises(EventError, match=r"events\[0\]\.bus: bus 42 is not in case"):
        check_events(case, [bad_bus])
    every = [OUTAGE.model_copy(update={"gen": g}) for g in range(3)]
    with pytest.raises(EventError, match="every generator"):
        check_events(case, every)


def test_schedule_per_interval_starts_inclusive_and_ends_exclusive() -> None:
    schedule = EventSchedule(load_case("case9"), [OUTAGE, WIND, LOW], TIME.interval_s)
    got = [schedule.at(k) for k in range(8)]  # hours 0, 0.5, ..., 3.5
    assert [e.names for e in got] == [
        (),
        ("event2",),
        ("event0", "event2"),
        ("event0",),
        (),
        ("wind",),
        (),
        (),
    ]
    assert [e.load_factor for e in got[:4]] == [1.0, 0.5, 0.5, 1.0]
    assert got[2].outages == frozenset({1}) and got[4].outages == frozenset()
    assert got[5].supply == (("wind", 9, BidCurve(-400.0, ((-20.0, 400.0),))),)


def test_an_outage_raises_the_price_and_the_unit_produces_nothing() -> None:
    market = _market(OUTAGE)
    before, during = market.clear(0, BID), market.clear(2, BID)
    lmp = [_rows(c, "interface")[0]["lmp"] for c in (before, during)]
    assert lmp[1] > lmp[0] + 5.0
    gens = {r["gen"]: r["mw"] for r in _rows(during, "generators")}
    assert gens[1] == 0.0 and gens[0] > 0 and gens[2] > 0
    assert _rows(during, "iso")[0]["events"] == "event0"
    assert market.clear(4, BID).tables["iso"][1][0][-1] == ""  # over: back to normal


def test_supply_offer_sets_a_negative_price_and_is_paid_it() -> None:
    market = _market(WIND)
    clearing = market.clear(5, BID)
    assert _rows(clearing, "interface")[0]["lmp"] == pytest.approx(-20.0, abs=1e-6)
    ledger = _rows(clearing, "settlements")
    wind = [r for r in ledger if r["payee"] == "gen:event-wind"]
    assert len(wind) == 1 and wind[0]["price"] == pytest.approx(-20.0, abs=1e-6)
    assert 0.0 < wind[0]["mw"] <= 400.0
    into = sum(r["amount"] for r in ledger if r["payee"] == "iso")
    out = sum(r["amount"] for r in ledger if r["payer"] == "iso")
    assert into - out == pytest.approx(_rows(clearing, "iso")[0]["congestion_rent"], abs=1e-6)


def test_load_scale_scales_the_fixed_load() -> None:
    market = _market(LOW)
    assert market.fixed_load(1).sum() == pytest.approx(0.5 * market.fixed_load(0).sum())
