"""Fault sweep, what crosses the bus: size bounds before decoding, table names
that cannot leave the results folder, money only from those who own it, and
forged senders (issue: nothing lost, nothing left running, nobody in who does
not belong). Each case here was a defect reproduced on main."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from dsosim.federates.common import messages as msg
from dsosim.federates.common import shell
from dsosim.federates.common.config import RecorderConfig
from dsosim.federates.recorder.__main__ import entitled
from dsosim.federates.recorder.store import ResultStore
from dsosim.runner.build.federation import recorder_config
from dsosim.runner.build.models import load_model


def _raw(kind: str, sender: str = "agg_solar", **fields) -> bytes:
    return msgpack.packb({"v": 1, "kind": kind, "sender": sender, "interval": 0, **fields})


@pytest.mark.parametrize("table", ["../../somewhere/escaped", "/tmp/abs", "Dispatch", "a" * 80])
def test_table_name_that_leaves_the_results_folder_is_refused(table: str, tmp_path: Path) -> None:
    raw = _raw("rows", table=table, columns=["interval"], rows=[[0]])
    with pytest.raises(msg.MessageError, match=r"'agg_solar'.*rows\.table.*not a table name"):
        msg.decode(raw, source="agg_solar")
    store = ResultStore(tmp_path / "results")
    with pytest.raises(ValueError, match="not a table name"):
        store.add(table, ("interval",), [(0,)])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["results", "summary.json"]


def test_a_million_block_bid_is_refused_before_it_is_built() -> None:
    """The issue's 19 MB bid kept the DSO at 4.5 GB for 400 s; the decoder now
    refuses any list longer than MAX_ARRAY_LEN while unpacking."""
    blocks = [[10.0, 0.001]] * (msg.MAX_ARRAY_LEN + 1)
    raw = _raw("fleet_bid", bids=[["675", [0.0, blocks]]])
    with pytest.raises(msg.MessageError, match=r"'agg_solar'.*payload"):
        msg.decode(raw, source="agg_solar")


def test_a_located_curve_has_at_most_max_blocks_per_curve() -> None:
    blocks = [[100.0 - i * 0.01, 0.001] for i in range(msg.MAX_BLOCKS_PER_CURVE + 1)]
    raw = _raw("fleet_bid", bids=[["675", [0.0, blocks]]])
    with pytest.raises(msg.MessageError, match=r"bids\[0\]\.curve\.blocks: 1001 blocks"):
        msg.decode(raw, source="agg_solar")
    ok = [[100.0 - i * 0.01, 0.001] for i in range(msg.MAX_BLOCKS_PER_CURVE)]
    assert len(msg.decode(_raw("fleet_bid", bids=[["675", [0.0, ok]]]), source="agg_solar").bids)


def test_message_bytes_are_bounded_before_decoding(monkeypatch) -> None:
    raw = _raw("done")
    monkeypatch.setattr(msg, "MAX_MESSAGE_BYTES", len(raw) - 1)
    with pytest.raises(msg.MessageError, match=r"payload: \d+ bytes; at most"):
        msg.decode(raw, source="agg_solar")


def test_a_measurement_of_1e12_mw_is_refused_naming_the_sender() -> None:
    raw = _raw("measurement", actual_mw={"675": 1e12}, setpoint_mw={"675": 0.1})
    with pytest.raises(
        msg.MessageError, match=r"from 'agg_solar' rejected: measurement\.actual_mw\[675\]"
    ):
        msg.decode(raw, source="agg_solar")


def _rows(sender: str, table: str, markets: list[str]) -> msg.TableRows:
    cols = ("interval", "market", "payer", "payee", "amount")
    rows = tuple((0, m, "iso", f"agg:{sender}", 1000.0) for m in markets)
    return msg.TableRows(sender, 0, table, cols, rows)


@pytest.fixture(scope="module")
def recorder() -> RecorderConfig:
    from dsosim.federates.common.config import DsoConfig

    dso = DsoConfig.model_construct(name="lda5")
    return recorder_config([dso], load_model("4"), ["agg_solar", "agg_storage"])


def test_an_aggregator_cannot_book_itself_a_payment(recorder: RecorderConfig) -> None:
    with pytest.raises(msg.MessageError, match=r"'agg_solar'.*may not write table 'settlements'"):
        entitled(recorder, _rows("agg_solar", "settlements", ["iso"]))


def test_settlement_rows_only_for_markets_their_writer_runs(recorder: RecorderConfig) -> None:
    entitled(recorder, _rows("iso", "settlements", ["iso"]))
    entitled(recorder, _rows("lda5", "settlements", ["retail:lda5"]))
    entitled(recorder, _rows("lda5_imo", "settlements", ["dlmp:lda5", "p2p:lda5"]))
    with pytest.raises(msg.MessageError, match=r"'lda5'.*rows\[1\]\.market.*'iso'"):
        entitled(recorder, _rows("lda5", "settlements", ["retail:lda5", "iso"]))
    with pytest.raises(msg.MessageError, match=r"'iso'.*'retail:lda5'"):
        entitled(recorder, _rows("iso", "settlements", ["retail:lda5"]))
    with pytest.raises(msg.MessageError, match=r"'lda5_imo'.*'retail:lda9'"):
        entitled(recorder, _rows("lda5_imo", "settlements", ["retail:lda9"]))


def test_each_federate_writes_only_the_tables_of_its_kind(recorder: RecorderConfig) -> None:
    entitled(recorder, _rows("agg_solar", "ders", ["x"]))
    entitled(recorder, _rows("lda5", "voltages", ["x"]))
    entitled(recorder, _rows("lda5_imo", "dispatch", ["x"]))
    for sender in ("iso", "lda5", "lda5_imo", "agg_storage"):
        entitled(recorder, _rows(sender, "traffic", ["x"]))
    with pytest.raises(msg.MessageError, match=r"'agg_solar'.*may not write table 'market'"):
        entitled(recorder, _rows("agg_solar", "market", ["x"]))  # a forged LMP
    with pytest.raises(msg.MessageError, match=r"'lda5_imo'.*may not write table 'voltages'"):
        entitled(recorder, _rows("lda5_imo", "voltages", ["x"]))  # not its feeder
    with pytest.raises(msg.MessageError, match=r"'iso'.*may not write table 'ders'"):
        entitled(recorder, _rows("iso", "ders", ["x"]))
    with pytest.raises(msg.MessageError, match=r"table 'made_up' is not one this federation"):
        entitled(recorder, _rows("iso", "made_up", ["x"]))


def test_a_forged_original_source_is_refused(monkeypatch) -> None:
    """A sender can set a message's original source; the core records the real one."""
    monkeypatch.setattr(shell.h, "helicsMessageGetSource", lambda m: "agg_storage")
    monkeypatch.setattr(shell.h, "helicsMessageGetOriginalSource", lambda m: "agg_solar")
    with pytest.raises(msg.MessageError, match="claims to come from 'agg_solar' but was sent"):
        shell.sender_of(object())
    monkeypatch.setattr(shell.h, "helicsMessageGetOriginalSource", lambda m: "agg_storage")
    assert shell.sender_of(object()) == "agg_storage"


def test_helics_ids_in_a_failure_are_named(tmp_path: Path) -> None:
    """HELICS reports a stopped federate as 'lost comms with 1879048196'; the
    broker prints which federate each id is, and the launcher names it."""
    from dsosim.runner.launch import helics_ids, name_ids

    (tmp_path / "dsosim-broker.log").write_text(
        "[broker] executing\nfederation ids: 131076=lda5 1879048196=lda5 131072=iso\n"
    )
    ids = helics_ids(tmp_path)
    text = name_ids("stopped by the federation: lost comms with 1879048196", ids)
    assert text == "stopped by the federation: lost comms with 1879048196 (lda5)"
    assert name_ids("interval 1234567 of 99", ids) == "interval 1234567 of 99"


def test_every_table_the_readme_lists_is_declared_for_its_writers() -> None:
    """The recorder refuses undeclared tables: each documented table must be
    declared (``TABLES_BY_ROLE``), and each declared one documented."""
    from dsosim.federates.common.tables import TABLES_BY_ROLE
    from tests.test_models import _readme_tables

    declared = {t for tables in TABLES_BY_ROLE.values() for t in tables}
    listed = set(_readme_tables())
    prefixes = [n[:-1] for n in listed if n.endswith("*")]
    assert sorted(n for n in listed if not n.endswith("*") and n not in declared) == []
    assert all(any(t.startswith(p) for t in declared) for p in prefixes)
    assert (
        sorted(t for t in declared if t not in listed and not t.startswith(tuple(prefixes))) == []
    )
