"""Settlement parties and bid keys: their text forms (what the tables and the
wire carry) read back to the same records, and malformed ones are refused."""

from __future__ import annotations

import msgpack
import pytest

from dsosim.federates.common import messages as msg
from dsosim.federates.common.parties import ISO, BidKey, Party, PartyError, Role

PARTIES = [
    (ISO, "iso"),
    (Party.dmo("lda5"), "dmo:lda5"),
    (Party.utility("lda5"), "utility:lda5"),
    (Party.customers("lda5"), "customers:lda5"),
    (Party.agg("agg_solar"), "agg:agg_solar"),
    (Party.gen(3), "gen:3"),
    (Party.load(675), "load:675"),
]


@pytest.mark.parametrize(("party", "text"), PARTIES)
def test_party_text_round_trip(party: Party, text: str) -> None:
    assert str(party) == text
    assert Party.parse(text) == party


def test_operators_are_the_iso_and_the_dmos() -> None:
    assert [p.is_operator for p, _ in PARTIES] == [True, True, False, False, False, False, False]


@pytest.mark.parametrize("text", ["", "agg", "agg:", ":x", "dso:lda5", "iso:x", "AGG:x"])
def test_malformed_party_is_refused(text: str) -> None:
    with pytest.raises(PartyError, match="party"):
        Party.parse(text)


def test_only_the_iso_has_no_name() -> None:
    with pytest.raises(PartyError, match="only the ISO"):
        Party(Role.AGG)
    with pytest.raises(PartyError, match="only the ISO"):
        Party(Role.ISO, "x")


def test_parties_and_keys_sort_as_their_text() -> None:
    parties = [Party.agg("a_b"), Party.agg("a"), Party.dmo("x"), ISO, Party.utility("a")]
    assert [str(p) for p in sorted(parties)] == sorted(str(p) for p in parties)
    keys = [
        BidKey("lda5", Party.utility("lda5")),
        BidKey("lda5", Party.dmo("lda5")),
        BidKey("lda5", Party.agg("agg"), "675"),
        BidKey("lda10", Party.agg("agg"), "6"),
    ]
    assert [str(k) for k in sorted(keys)] == sorted(str(k) for k in keys)


def test_bid_key_text_forms() -> None:
    assert str(BidKey("lda5", Party.dmo("lda5"))) == "lda5"
    assert str(BidKey("lda5", Party.utility("lda5"))) == "lda5/utility"
    assert str(BidKey("lda5", Party.agg("agg_solar"), "675")) == "agg_solar/675"
    with pytest.raises(PartyError, match="only aggregators give a location"):
        BidKey("lda5", Party.agg("agg_solar"))
    with pytest.raises(PartyError, match="only aggregators give a location"):
        BidKey("lda5", Party.dmo("lda5"), "675")
    with pytest.raises(PartyError, match="does not bid"):
        BidKey("lda5", ISO)


def test_meter_with_a_malformed_party_is_rejected() -> None:
    raw = msgpack.packb(
        {
            "v": msg.SCHEMA_VERSION,
            "kind": "meter",
            "sender": "lda1",
            "interval": 0,
            "td_bus": 5,
            "actual_mw": 1.0,
            "allocation": {"aggregator1": 0.5},
        }
    )
    with pytest.raises(msg.MessageError, match="allocation key: party 'aggregator1'"):
        msg.decode(raw, source="lda1")
