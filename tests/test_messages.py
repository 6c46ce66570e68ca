"""Bus messages: round trips, and rejection of malformed or foreign messages."""

from __future__ import annotations

import dataclasses
import math

import msgpack
import pytest

from dsosim.federates.common import messages as msg
from dsosim.federates.common.curves import PRICE_CAP, BidCurve, CurveError, PlacedCurve
from dsosim.federates.common.parties import Party

CURVE = BidCurve(-1.5, ((40.0, 1.0), (25.0, 2.0), (-10.0, 0.5)))


@pytest.mark.parametrize(
    "record",
    [
        msg.FleetBid("agg1", 3, (PlacedCurve("675", CURVE), PlacedCurve("634", BidCurve(0.2)))),
        msg.InterfaceBid("lda1", 3, 5, CURVE.scaled(20)),
        msg.Award("iso", 3, 5, 31.25, 30.0, 1.25, -12.5),
        msg.Award("iso", 3, 5, 31.25, 30.0, 1.25, -12.5, -10.0, 28.5),
        msg.DayAheadBid("lda1", 288, 5, (CURVE.scaled(20), BidCurve(12.0))),
        msg.DayAheadPrices("iso", 288, 5, (21.5, 19.25, 30.0)),
        msg.DayAheadOffer("agg1", 288, {"634": (BidCurve(0.2), CURVE), "675": (CURVE, CURVE)}),
        msg.DayAheadSchedules(
            "iso", 288, (20.0, 21.5), {"agg1": {"634": (0.5, -1.0), "675": (0.0, 2.0)}, "agg2": {}}
        ),
        msg.Dispatch("lda1", 3, {"675": -0.5, "634": 0.1}, {"675": 31.0, "634": 32.5}),
        msg.Measurement("agg1", 3, {"675": -0.45, "634": 0.1}, {"675": -0.5, "634": 0.1}),
        msg.Meter("lda1", 3, 5, 48.2, {Party.agg("agg1"): -0.5}),
        msg.FleetAward("iso", 3, "agg1", {"675": -0.5}, {"675": 30.0}),
        msg.LineariseAt("lda1_imo", 3, 1, (0.25, -0.5)),
        msg.NoLinearisation("lda1", 3, 2),
        msg.PricedOn("lda1_imo", 3, 0),
        msg.LocationVoltages("lda1", 3, {"611": 1.041, "675": 0.987}),
        msg.TableRows("iso", 3, "market", ("interval", "lmp"), ((3, 31.25), (3, 30.0))),
        msg.RowsBatch(
            "iso",
            3,
            (
                msg.TableRows("iso", 2, "imbalance", ("interval", "mw"), ((2, -1.5),)),
                msg.TableRows("iso", 3, "market", ("interval", "lmp"), ((3, 31.25), (3, 30.0))),
            ),
        ),
    ],
)
def test_round_trip(record: msg.Message) -> None:
    raw = msg.encode(record)
    back = msg.decode(raw, source=record.sender)
    assert back == record
    assert msg.encode(back) == raw  # deterministic bytes


def _raw(**fields: object) -> bytes:
    base = {
        "v": msg.SCHEMA_VERSION,
        "kind": "interface_bid",
        "sender": "lda1",
        "interval": 0,
        "td_bus": 5,
        "curve": [1.0, [[30.0, 1.0]]],
    }
    base.update(fields)
    return msgpack.packb(base)


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"curve": [math.nan, []]}, "curve.base_mw"),
        ({"curve": [1.0, [[20.0, 1.0], [30.0, 1.0]]]}, "not monotonic"),
        ({"curve": [1.0, [[PRICE_CAP * 2, 1.0]]]}, "blocks[0].price"),
        ({"curve": [1.0, [[30.0, -1.0]]]}, "blocks[0].mw"),
        ({"curve": [1.0, [[30.0, math.inf]]]}, "blocks[0].mw"),
        ({"td_bus": "five"}, "td_bus"),
        ({"interval": -1}, "interval"),
        ({"v": 99}, "schema version"),
        ({"kind": "gossip"}, "unknown kind"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_messages_are_rejected_naming_sender_and_field(fields: dict, where: str) -> None:
    with pytest.raises(msg.MessageError) as err:
        msg.decode(_raw(**fields), source="lda1")
    assert "lda1" in str(err.value)
    assert where in str(err.value)


def test_day_ahead_messages_need_their_periods() -> None:
    raw = msgpack.packb(
        {"v": msg.SCHEMA_VERSION, "kind": "day_ahead_bid", "sender": "lda1", "interval": 0,
         "td_bus": 5, "curves": []}
    )  # fmt: skip
    with pytest.raises(msg.MessageError, match=r"lda1.*day_ahead_bid.curves: must be a non-empty"):
        msg.decode(raw, source="lda1")
    raw = msgpack.packb(
        {"v": msg.SCHEMA_VERSION, "kind": "day_ahead_prices", "sender": "iso", "interval": 0,
         "td_bus": 5, "lmp": [20.0, math.nan]}
    )  # fmt: skip
    with pytest.raises(msg.MessageError, match=r"day_ahead_prices.lmp\[1\]: must be finite"):
        msg.decode(raw, source="iso")
    raw = msgpack.packb(
        {"v": msg.SCHEMA_VERSION, "kind": "day_ahead_offer", "sender": "agg1", "interval": 0,
         "offers": {"634": [[0.1, []]], "675": [[0.1, []], [0.2, []]]}}
    )  # fmt: skip
    with pytest.raises(
        msg.MessageError, match=r"agg1.*offers\[675\]: 2 periods, the others have 1"
    ):
        msg.decode(raw, source="agg1")


def test_unknown_or_impersonating_sender_rejected() -> None:
    with pytest.raises(msg.MessageError, match="unknown sender 'lda1'"):
        msg.decode(_raw(), source="lda1", allowed_senders=["lda2"])
    with pytest.raises(msg.MessageError, match="claims to be 'lda1'"):
        msg.decode(_raw(), source="agg9")


def test_garbage_bytes_rejected() -> None:
    with pytest.raises(msg.MessageError, match="payload"):
        msg.decode(b"\xc1\xff\x00", source="agg1")


def test_duplicate_location_rejected() -> None:
    raw = msgpack.packb(
        {
            "v": 1,
            "kind": "fleet_bid",
            "sender": "a",
            "interval": 0,
            "bids": [["675", [0.0, []]], ["675", [1.0, []]]],
        }
    )
    with pytest.raises(msg.MessageError, match="duplicate location"):
        msg.decode(raw, source="a")


def test_curve_quantities_and_combination() -> None:
    assert CURVE.quantity_at(50.0) == -1.5
    assert CURVE.quantity_at(30.0) == -0.5
    assert CURVE.quantity_at(-20.0) == 2.0
    total = BidCurve.combine([CURVE, BidCurve(1.0, ((25.0, 1.0),))])
    assert total.base_mw == -0.5
    assert total.blocks == ((40.0, 1.0), (25.0, 3.0), (-10.0, 0.5))
    with pytest.raises(CurveError, match="scale"):
        CURVE.scaled(0.0)


def test_grid_model_round_trip_and_shape_check() -> None:
    model = msg.GridModel(
        "lda1",
        2,
        ("a_675",),
        ("675.1", "675.2"),
        ("line.x",),
        (1.01, 0.99),
        (0.5,),
        (-0.2,),
        3.4,
        ((0.01,), (0.012,)),
        ((0.1,),),
        ((-0.1,),),
        (1.02,),
    )
    raw = msg.encode(model)
    assert msg.decode(raw, source="lda1") == model
    bad = msgpack.unpackb(raw)
    bad["dv_dp"] = [[0.01]]  # one row for two nodes
    with pytest.raises(msg.MessageError, match="dv_dp: must be a 2 x 1 matrix"):
        msg.decode(msgpack.packb(bad), source="lda1")
    # a day-ahead forecast names its period of the day; a bad one is refused
    ahead = dataclasses.replace(model, day_ahead_period=13)
    assert msg.decode(msg.encode(ahead), source="lda1") == ahead
    bad = msgpack.unpackb(msg.encode(ahead))
    bad["day_ahead_period"] = -1
    with pytest.raises(msg.MessageError, match="day_ahead_period: must be a period number"):
        msg.decode(msgpack.packb(bad), source="lda1")


def test_result_rows_encode_as_the_generic_walk_does() -> None:
    """Rows skip the per-value walk (speed at thousands of nodes): same bytes."""
    from dataclasses import fields

    from dsosim.federates.common.messages import SCHEMA_VERSION, _to_wire

    rows = tuple((4, "lda", f"n{i}.1", 1.0 + i * 1e-6, [1.0, float(i)]) for i in range(500))
    message = msg.TableRows("lda", 4, "voltages", ("interval", "dso", "node", "v_pu", "x"), rows)
    payload = {"v": SCHEMA_VERSION, "kind": message.KIND}
    for f in fields(message):
        payload[f.name] = _to_wire(getattr(message, f.name))
    assert msg.encode(message) == msgpack.packb(payload, use_bin_type=True)
    assert msg.decode(msg.encode(message), source="lda") == message


def test_round_trip_requests_are_checked() -> None:
    """The independent operator's re-linearisation requests: a dispatch of
    finite, bounded MW and a request number from 1 (0 names the forecast
    model only in ``PricedOn``)."""
    base = {"v": msg.SCHEMA_VERSION, "kind": "linearise_at", "sender": "imo", "interval": 4}
    for fields, where in (
        ({"iteration": 0, "der_mw": [0.1]}, "linearise_at.iteration: must be >= 1"),
        ({"iteration": 1, "der_mw": [math.nan]}, r"linearise_at.der_mw\[0\]: must be finite"),
        ({"iteration": 1, "der_mw": [1e9]}, r"linearise_at.der_mw\[0\]: \|1e\+09\| MW exceeds"),
        ({"iteration": 1, "der_mw": 0.1}, "linearise_at.der_mw: must be a list"),
    ):
        with pytest.raises(msg.MessageError, match=where):
            msg.decode(msgpack.packb({**base, **fields}), source="imo")
    priced = {**base, "kind": "priced_on", "iteration": -1}
    with pytest.raises(msg.MessageError, match="priced_on.iteration: must be >= 0"):
        msg.decode(msgpack.packb(priced), source="imo")


def test_location_voltages_must_be_plausible() -> None:
    raw = msgpack.packb(
        {
            "v": msg.SCHEMA_VERSION,
            "kind": "location_voltages",
            "sender": "lda1",
            "interval": 2,
            "v_pu": {"611": 0.0},
        }
    )
    with pytest.raises(msg.MessageError, match=r"location_voltages.v_pu\[611\]: 0 pu"):
        msg.decode(raw, source="lda1")


def test_result_rows_with_numpy_values_encode_as_their_python_values() -> None:
    """Rows are packed as they are (no walk over every value): numpy scalars
    and arrays give the bytes of the Python values they hold."""
    import numpy as np

    plain = ((4, "lda", 1.25, True, [1.0, 2.0], 7), (4, "lda", 0.5, False, [3.0], 8))
    mixed = (
        (np.int64(4), "lda", np.float64(1.25), np.bool_(True), np.array([1.0, 2.0]), np.int32(7)),
        (4, np.str_("lda"), np.float32(0.5), False, (np.float64(3.0),), 8),
    )
    cols = ("interval", "dso", "x", "flag", "v", "n")
    raw = msg.encode(msg.TableRows("lda", 4, "t", cols, mixed))
    assert raw == msg.encode(msg.TableRows("lda", 4, "t", cols, plain))
    with pytest.raises(TypeError, match="cannot encode object"):
        msg.encode(msg.TableRows("lda", 4, "t", ("x",), ((object(),),)))


@pytest.mark.parametrize(
    ("parts", "where"),
    [
        ({"a": 1}, r"rows_batch.parts: must be a list of \[interval, table, columns, rows\]"),
        ([[3, "market", ["interval"]]], r"rows_batch.parts\[0\]: must be \[interval"),
        ([[3, "market", ["interval"], [[3]]], [2.5, "m", ["i"], []]], r"parts\[1\].interval"),
        ([[3, "../x", ["interval"], [[3]]]], r"parts\[0\].table: '../x' is not a table name"),
        ([[3, "market", ["interval", "lmp"], [[3, 1.0], [3]]]], r"parts\[0\].rows\[1\]: must"),
    ],
)
def test_a_malformed_rows_batch_is_refused_naming_the_part(parts: object, where: str) -> None:
    raw = msgpack.packb(
        {
            "v": msg.SCHEMA_VERSION,
            "kind": "rows_batch",
            "sender": "iso",
            "interval": 3,
            "parts": parts,
        }
    )
    with pytest.raises(msg.MessageError, match=where):
        msg.decode(raw, source="iso")


def _decoded(raw: bytes) -> str:
    try:
        m = msg.decode(raw, source="lda1")
    except msg.MessageError as exc:
        return f"refused: {exc}"
    assert isinstance(m, msg.InterfaceBid)
    assert all(type(x) is float for block in m.curve.blocks for x in block)
    return repr(m.curve)


def test_curve_blocks_read_at_once_exactly_as_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    good = [[100.0 - 0.5 * i, 0.01 + 0.001 * i] for i in range(80)]
    bads: list[object] = [
        7,
        [30.0],
        [30.0, 1.0, 2.0],
        (30.0, 1.0),
        [30, 1.0],
        [30.0, 1],
        [True, 1.0],
        [math.nan, 1.0],
        [30.0, math.inf],
        [30.0, -1.0],
        ["30", 1.0],
        [None, 1.0],
    ]
    blocks_variants = [good, [], [[30.0, 1.0]]]
    for bad in bads:  # last, below every other price: only the block itself is wrong
        blocks_variants.append([*good, bad])
    raws = [_raw(curve=[1.5, blocks]) for blocks in blocks_variants]
    at_once = [_decoded(raw) for raw in raws]
    assert msg._plain_pairs(good) is not None
    monkeypatch.setattr(msg, "_plain_pairs", lambda raw: None)
    one_by_one = [_decoded(raw) for raw in raws]
    assert at_once == one_by_one
    assert [o.startswith("refused") for o in at_once[:3]] == [False] * 3
    # a tuple travels as a list, an int is a number (read as a float by the loop)
    assert sum(o.startswith("refused") for o in at_once[3:]) == len(bads) - 3
