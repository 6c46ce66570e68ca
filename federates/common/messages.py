"""Every message that crosses the HELICS bus, as typed, versioned records.

A message is a frozen dataclass. On the wire it is a msgpack map with the
schema version ``v``, its ``kind``, the ``sender`` federate, the market
``interval`` and the record's own fields. :func:`decode` validates everything
on arrival and raises :class:`MessageError` naming the sender and the field,
so a malformed bid is rejected, never silently used.

Units: MW (net demand, positive = withdrawal), $/MWh, seconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from itertools import chain
from typing import Any, ClassVar

import msgpack

from dsosim.federates.common.curves import MAX_ABS_MW, BidCurve, CurveError, PlacedCurve
from dsosim.federates.common.parties import Party, PartyError

SCHEMA_VERSION = 1
"""Bumped whenever a record's fields change meaning; receivers reject others."""


MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""Largest message accepted, checked before it is decoded (the biggest real
ones are grid models of large feeders sent to an independent operator)."""
MAX_ARRAY_LEN = 200_000
"""Longest list or map inside a message, enforced by the decoder itself: a
bid curve of a million blocks is refused before it is built."""
MAX_BLOCKS_PER_CURVE = 1_000
"""Most blocks in one located bid curve (an aggregator's curve at one feeder
location; scenarios allow at most 200). An LDA's interface curve, which
aggregates every location, may have up to ``MAX_ARRAY_LEN``."""
TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
"""A results table name: also a folder name, so nothing that leaves it."""


class MessageError(ValueError):
    """A message failed validation. ``sender`` and ``field`` say where."""

    def __init__(self, sender: str, field_name: str, message: str) -> None:
        super().__init__(f"message from {sender!r} rejected: {field_name}: {message}")
        self.sender = sender
        self.field = field_name


# --------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class FleetBid:
    """Aggregator -> market operator: one curve per feeder location it serves
    (``at``: a bus of the feeder; on the wire ``[location, curve]``)."""

    KIND: ClassVar[str] = "fleet_bid"
    sender: str
    interval: int
    bids: tuple[PlacedCurve[str], ...]


@dataclass(frozen=True, slots=True)
class InterfaceBid:
    """DSO -> ISO: the LDA's single net-demand curve at its T-D bus (scaled)."""

    KIND: ClassVar[str] = "interface_bid"
    sender: str
    interval: int
    td_bus: int
    curve: BidCurve


@dataclass(frozen=True, slots=True)
class Award:
    """ISO -> DSO: the cleared net demand at the T-D bus and its LMP."""

    KIND: ClassVar[str] = "award"
    sender: str
    interval: int
    td_bus: int
    lmp: float
    lmp_energy: float
    lmp_congestion: float
    cleared_mw: float
    da_mw: float = 0.0
    """The LDA's day-ahead schedule for this interval's period (0 without a
    day-ahead market); the rest of ``cleared_mw`` settles at ``lmp``."""
    da_lmp: float = 0.0
    """The day-ahead LMP that schedule is paid at."""


@dataclass(frozen=True, slots=True)
class DayAheadPrices:
    """ISO -> aggregators: the published day-ahead LMPs at their LDA's T-D
    bus, one per period of the day; ``interval`` is the day's first interval."""

    KIND: ClassVar[str] = "day_ahead_prices"
    sender: str
    interval: int
    td_bus: int
    lmp: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class DayAheadBid:
    """LDA -> ISO before a day: one net-demand curve per day-ahead period at
    the T-D bus (scaled); ``interval`` is the day's first interval."""

    KIND: ClassVar[str] = "day_ahead_bid"
    sender: str
    interval: int
    td_bus: int
    curves: tuple[BidCurve, ...]


@dataclass(frozen=True, slots=True)
class DayAheadOffer:
    """Aggregator -> its day-ahead bidder (the ISO in models 1-2, the LDA's
    utility and market operator in 3-6) at gate closure: per feeder location,
    one net-demand curve per day-ahead period (per modelled feeder, like a
    ``FleetBid``); ``interval`` is the day's first interval."""

    KIND: ClassVar[str] = "day_ahead_offer"
    sender: str
    interval: int
    offers: Mapping[str, tuple[BidCurve, ...]]


@dataclass(frozen=True, slots=True)
class DayAheadSchedules:
    """ISO -> utility (models 1-2, where aggregators bid day-ahead at the ISO):
    the day-ahead schedule of each aggregator location of its LDA, MW per
    period at the T-D interface (x scale), and the LDA's day-ahead LMP per
    period; ``interval`` is the day's first interval. The utility checks
    them against its feeder (``unwound``)."""

    KIND: ClassVar[str] = "day_ahead_schedules"
    sender: str
    interval: int
    lmp: tuple[float, ...]
    schedules: Mapping[str, Mapping[str, tuple[float, ...]]]


@dataclass(frozen=True, slots=True)
class Dispatch:
    """DERM -> aggregator: net-demand set-points and prices per location."""

    KIND: ClassVar[str] = "dispatch"
    sender: str
    interval: int
    setpoints_mw: Mapping[str, float]
    prices: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Measurement:
    """Aggregator -> utility (grid operator): what the fleet actually did, per
    location (MW), and the set-point it was following."""

    KIND: ClassVar[str] = "measurement"
    sender: str
    interval: int
    actual_mw: Mapping[str, float]
    setpoint_mw: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Meter:
    """Utility -> ISO: metered T-D flow of an interval (scaled MW) and who is
    responsible for its deviation from the schedule: ``allocation`` maps a
    settlement party (on the wire in its text form, ``agg:NAME``) to its
    deviation in MW; the values sum to metered flow minus total schedule."""

    KIND: ClassVar[str] = "meter"
    sender: str
    interval: int
    td_bus: int
    actual_mw: float
    allocation: Mapping[Party, float]


@dataclass(frozen=True, slots=True)
class FleetAward:
    """ISO -> DERM (model 2): what the ISO cleared for one aggregator's
    locations, before the DERM turns it into set-points."""

    KIND: ClassVar[str] = "fleet_award"
    sender: str
    interval: int
    aggregator: str
    awards_mw: Mapping[str, float]
    prices: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class GridModel:
    """Utility -> independent market operator: the feeder limits it needs for
    this interval, as the feeder linearised at the forecast operating point.

    Arrays are row-major nested lists: ``dv_dp`` (monitored nodes x DER
    locations, pu/MW), ``dloading_up``/``dloading_down`` (branches x DER
    locations, per MW), and per DER location ``dpsub_dp`` and the operating
    point ``der_mw``; ``v_pu`` and ``loading`` at the operating point."""

    KIND: ClassVar[str] = "grid_model"
    sender: str
    interval: int
    der_names: tuple[str, ...]
    node_names: tuple[str, ...]
    branch_names: tuple[str, ...]
    v_pu: tuple[float, ...]
    loading: tuple[float, ...]
    der_mw: tuple[float, ...]
    substation_p_mw: float
    dv_dp: tuple[tuple[float, ...], ...]
    dloading_up: tuple[tuple[float, ...], ...]
    dloading_down: tuple[tuple[float, ...], ...]
    dpsub_dp: tuple[float, ...]
    day_ahead_period: int | None = None
    """None: the forecast of interval ``interval``. A period number: the
    day-ahead forecast of that period of the day starting at ``interval``,
    the one the LDA's day-ahead bid was built on (models 4 and 6: the
    operator clears the DERs' day-ahead schedules on it)."""


@dataclass(frozen=True, slots=True)
class LineariseAt:
    """Independent market operator -> utility, inside DISPATCH: the feeder
    linearised at this dispatch, please (MW per DER location, in the grid
    model's order), the interval's forecast load and the controls free to
    respond. The ``iteration``-th request of the interval (from 1); the
    answer is a ``GridModel`` at that point, or ``NoLinearisation``."""

    KIND: ClassVar[str] = "linearise_at"
    sender: str
    interval: int
    iteration: int
    der_mw: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class NoLinearisation:
    """Utility -> independent market operator: the power flow at the dispatch
    of request ``iteration`` diverged (there is no linearisation there)."""

    KIND: ClassVar[str] = "no_linearisation"
    sender: str
    interval: int
    iteration: int


@dataclass(frozen=True, slots=True)
class PricedOn:
    """Independent market operator -> utility, the last exchange of DISPATCH:
    the dispatch was priced on the linearisation of request ``iteration``
    (0: the forecast grid model), which the utility's ex-post check compares
    with."""

    KIND: ClassVar[str] = "priced_on"
    sender: str
    interval: int
    iteration: int


@dataclass(frozen=True, slots=True)
class LocationVoltages:
    """Utility -> aggregator with volt-var inverters, after MEASURE: the
    voltage (pu, the mean of the bus's phases) at each of its locations in
    the interval's measured power flow, where every volt-var inverter sits at
    its curve's fixed point: what the inverters there measured, and so the
    reactive power each of them produced (``rating x curve(v)``)."""

    KIND: ClassVar[str] = "location_voltages"
    sender: str
    interval: int
    v_pu: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class TableRows:
    """Any federate -> recorder: rows for one results table.

    ``columns`` names the row fields; values are scalars, strings or lists of
    numbers (stored as Parquet list columns).
    """

    KIND: ClassVar[str] = "rows"
    sender: str
    interval: int
    table: str
    columns: tuple[str, ...]
    rows: Sequence[Sequence[Any]]
    """As sent: any sequences (numpy values too, see ``encode``); as decoded:
    tuples."""


@dataclass(frozen=True, slots=True)
class RowsBatch:
    """Any federate -> recorder: the result rows it produced since its last
    time step, several tables (``parts``, each of this sender, in the order
    they were produced) in one message. The recorder reads them as if each
    part had come alone; one message instead of one per table saves more than
    its bytes (every message costs the sender's, the broker's and the
    recorder's HELICS cores and bindings, and the recorder gets hundreds an
    interval)."""

    KIND: ClassVar[str] = "rows_batch"
    sender: str
    interval: int
    parts: tuple[TableRows, ...]


@dataclass(frozen=True, slots=True)
class Done:
    """Any federate -> recorder: the sender finished its last interval."""

    KIND: ClassVar[str] = "done"
    sender: str
    interval: int


@dataclass(frozen=True, slots=True)
class HilSetpoints:
    """Aggregator -> HIL gateway: the set-point (MW, simulation scale) and bus
    price of each of its DERs run by hardware, the state of charge the
    simulated device starts the interval with (storage only), and the range
    ``[lo_mw, hi_mw]`` of net demand the simulated device can physically have
    this interval (rating, state of charge, sun): the plausibility bound of
    the measurement."""

    KIND: ClassVar[str] = "hil_setpoints"
    sender: str
    interval: int
    setpoints_mw: Mapping[str, float]
    prices: Mapping[str, float]
    soc: Mapping[str, float]
    lo_mw: Mapping[str, float]
    hi_mw: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class HilReadings:
    """HIL gateway -> aggregator: what each hardware DER did (MW, simulation
    scale) and its state of charge, after the fallback policy: a device
    missing from ``actual_mw`` runs as modelled; one in ``unavailable``
    delivered nothing and offers nothing until it is back."""

    KIND: ClassVar[str] = "hil_readings"
    sender: str
    interval: int
    actual_mw: Mapping[str, float]
    soc: Mapping[str, float]
    unavailable: tuple[str, ...]


Message = (
    FleetBid
    | InterfaceBid
    | DayAheadBid
    | DayAheadOffer
    | DayAheadPrices
    | DayAheadSchedules
    | Award
    | Dispatch
    | Measurement
    | Meter
    | FleetAward
    | GridModel
    | LineariseAt
    | NoLinearisation
    | PricedOn
    | LocationVoltages
    | TableRows
    | RowsBatch
    | Done
    | HilSetpoints
    | HilReadings
)
KINDS: dict[str, type] = {
    cls.KIND: cls
    for cls in (
        FleetBid,
        InterfaceBid,
        DayAheadBid,
        DayAheadOffer,
        DayAheadPrices,
        DayAheadSchedules,
        Award,
        Dispatch,
        Measurement,
        Meter,
        FleetAward,
        GridModel,
        LineariseAt,
        NoLinearisation,
        PricedOn,
        LocationVoltages,
        TableRows,
        RowsBatch,
        Done,
        HilSetpoints,
        HilReadings,
    )
}
_FIELDS: dict[str, frozenset[str]] = {
    kind: frozenset({"v", "kind"} | {f.name for f in fields(cls)}) for kind, cls in KINDS.items()
}
"""The fields a message of each kind may have (looked up per message, so made once)."""


# -------------------------------------------------------------------- encoding


def _curve_to_wire(curve: BidCurve) -> list[Any]:
    return [curve.base_mw, [list(b) for b in curve.blocks]]


def _to_wire(value: Any) -> Any:
    if isinstance(value, BidCurve):
        return _curve_to_wire(value)
    if isinstance(value, PlacedCurve):
        return [value.at, _curve_to_wire(value.curve)]
    if isinstance(value, tuple | list):
        return [_to_wire(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _to_wire(v) for k, v in sorted(value.items())}
    return value


def encode(message: Message) -> bytes:
    """Serialise a record to msgpack bytes (deterministic: maps are sorted)."""
    payload: dict[str, Any] = {"v": SCHEMA_VERSION, "kind": message.KIND}
    for f in fields(message):
        value = getattr(message, f.name)
        # Result rows hold only scalars, strings and lists of numbers, which
        # msgpack writes as they are (a tuple as the same array as a list):
        # walking thousands of them (a feeder's node voltages) cost more than
        # packing them.
        if isinstance(message, RowsBatch) and f.name == "parts":
            payload["parts"] = [[p.interval, p.table, p.columns, p.rows] for p in value]
            continue
        rows = isinstance(message, TableRows) and f.name == "rows"
        payload[f.name] = value if rows else _to_wire(value)
    return msgpack.packb(payload, use_bin_type=True, default=_numpy_value)


def _numpy_value(value: Any) -> Any:
    """What msgpack cannot pack itself in result rows: numpy scalars and
    arrays, as the Python values they hold (numpy's float64 is a float and
    packs as one already). The rows are not walked value by value: a feeder's
    node voltages are thousands of them an interval."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot encode {type(value).__name__} {value!r}")


# -------------------------------------------------------------------- decoding


@dataclass
class _Reader:
    sender: str
    data: Mapping[str, Any]
    kind: str = field(default="")

    def fail(self, name: str, message: str) -> MessageError:
        return MessageError(self.sender, f"{self.kind}.{name}" if self.kind else name, message)

    def get(self, name: str) -> Any:
        if name not in self.data:
            raise self.fail(name, "missing")
        return self.data[name]

    def number(self, name: str, value: Any | None = None) -> float:
        value = self.get(name) if value is None else value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(name, f"must be a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise self.fail(name, f"must be finite, got {value!r}")
        return float(value)

    def integer(self, name: str) -> int:
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be an integer, got {value!r}")
        return value

    def text(self, name: str, value: Any | None = None) -> str:
        value = self.get(name) if value is None else value
        if not isinstance(value, str) or not value:
            raise self.fail(name, f"must be a non-empty string, got {value!r}")
        return value

    def curve(self, name: str, value: Any, max_blocks: int = MAX_ARRAY_LEN) -> BidCurve:
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], list)):
            raise self.fail(name, "must be [base_mw, [[price, mw], ...]]")
        if len(value[1]) > max_blocks:
            raise self.fail(
                f"{name}.blocks", f"{len(value[1])} blocks; at most {max_blocks} are accepted"
            )
        base = self.number(f"{name}.base_mw", value[0])
        blocks = _plain_pairs(value[1])
        if blocks is None:
            blocks = []
            for i, block in enumerate(value[1]):
                if not (isinstance(block, list) and len(block) == 2):
                    raise self.fail(f"{name}.blocks[{i}]", "must be a [price, mw] pair")
                blocks.append(
                    (
                        self.number(f"{name}.blocks[{i}].price", block[0]),
                        self.number(f"{name}.blocks[{i}].mw", block[1]),
                    )
                )
        try:
            return BidCurve(base, tuple(blocks))
        except CurveError as exc:
            raise self.fail(f"{name}.{exc.field}", str(exc).split(": ", 1)[1]) from None

    def number_map(self, name: str, bound: float | None = None) -> dict[str, float]:
        """A map of names to finite numbers (of magnitude at most ``bound``)."""
        value = self.get(name)
        if not isinstance(value, dict):
            raise self.fail(name, "must be a map of location -> number")
        out = {
            self.text(f"{name} key", k): self.number(f"{name}[{k}]", v) for k, v in value.items()
        }
        if bound is not None:
            for k, v in out.items():
                if abs(v) > bound:
                    raise self.fail(f"{name}[{k}]", f"|{v:g}| MW exceeds {bound:g} MW")
        return out


def _plain_pairs(raw: list[Any]) -> list[tuple[float, float]] | None:
    """The blocks as ``(price, mw)`` tuples when every one is a ``[float, float]``
    pair of finite floats, the case of every well-formed message (what
    ``_Reader.number`` returns for them, without a call per value); else None,
    and the blocks are read one by one so that an error names the first bad one."""
    if set(map(type, raw)) - {list} or set(map(len, raw)) - {2}:
        return None
    values = list(chain.from_iterable(raw))
    if set(map(type, values)) - {float} or not all(map(math.isfinite, values)):
        return None
    return list(map(tuple, raw))


def decode(raw: bytes, *, source: str, allowed_senders: Sequence[str] | None = None) -> Message:
    """Parse and validate one message received from HELICS endpoint ``source``.

    ``source`` is the endpoint HELICS says the message came from; the record's
    ``sender`` must match it (a federate cannot speak for another) and, when
    ``allowed_senders`` is given, be one of them.
    """
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MessageError(
            source, "payload", f"{len(raw)} bytes; at most {MAX_MESSAGE_BYTES} are accepted"
        )
    try:
        data = msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            max_array_len=MAX_ARRAY_LEN,
            max_map_len=MAX_ARRAY_LEN,
        )
    except Exception as exc:  # msgpack raises several unrelated types
        raise MessageError(source, "payload", f"not valid msgpack ({exc})") from None
    if not isinstance(data, dict):
        raise MessageError(source, "payload", "must be a map")
    r = _Reader(source, data)
    version = r.get("v")
    if version != SCHEMA_VERSION:
        raise r.fail(
            "v", f"schema version {version!r} is not supported (expected {SCHEMA_VERSION})"
        )
    kind = r.get("kind")
    if kind not in KINDS:
        raise r.fail("kind", f"unknown kind {kind!r}; expected one of {sorted(KINDS)}")
    r.kind = kind
    sender = r.text("sender")
    if sender != source:
        raise r.fail("sender", f"claims to be {sender!r} but arrived from {source!r}")
    if allowed_senders is not None and sender not in allowed_senders:
        raise r.fail(
            "sender", f"unknown sender {sender!r}; expected one of {sorted(allowed_senders)}"
        )
    interval = r.integer("interval")
    if interval < 0:
        raise r.fail("interval", f"must be >= 0, got {interval}")
    extra = set(data) - _FIELDS[kind]
    if extra:
        raise r.fail(sorted(extra)[0], "unexpected field")
    return _DECODERS[kind](r, sender, interval)


def _decode_fleet_bid(r: _Reader, sender: str, interval: int) -> FleetBid:
    items = r.get("bids")
    if not isinstance(items, list):
        raise r.fail("bids", "must be a list of [location, curve]")
    bids = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not (isinstance(item, list) and len(item) == 2):
            raise r.fail(f"bids[{i}]", "must be [location, curve]")
        location = r.text(f"bids[{i}].location", item[0])
        if location in seen:
            raise r.fail(f"bids[{i}].location", f"duplicate location {location!r}")
        seen.add(location)
        bids.append(
            PlacedCurve(location, r.curve(f"bids[{i}].curve", item[1], MAX_BLOCKS_PER_CURVE))
        )
    return FleetBid(sender, interval, tuple(bids))


def _decode_interface_bid(r: _Reader, sender: str, interval: int) -> InterfaceBid:
    return InterfaceBid(sender, interval, r.integer("td_bus"), r.curve("curve", r.get("curve")))


def _decode_award(r: _Reader, sender: str, interval: int) -> Award:
    return Award(
        sender,
        interval,
        r.integer("td_bus"),
        r.number("lmp"),
        r.number("lmp_energy"),
        r.number("lmp_congestion"),
        r.number("cleared_mw"),
        r.number("da_mw"),
        r.number("da_lmp"),
    )


def _decode_day_ahead_prices(r: _Reader, sender: str, interval: int) -> DayAheadPrices:
    lmp = r.get("lmp")
    if not isinstance(lmp, list) or not lmp:
        raise r.fail("lmp", "must be a non-empty list of prices, one per period")
    return DayAheadPrices(
        sender,
        interval,
        r.integer("td_bus"),
        tuple(r.number(f"lmp[{i}]", v) for i, v in enumerate(lmp)),
    )


def _decode_day_ahead_bid(r: _Reader, sender: str, interval: int) -> DayAheadBid:
    curves = r.get("curves")
    if not isinstance(curves, list) or not curves:
        raise r.fail("curves", "must be a non-empty list of curves, one per period")
    return DayAheadBid(
        sender,
        interval,
        r.integer("td_bus"),
        tuple(r.curve(f"curves[{i}]", c) for i, c in enumerate(curves)),
    )


def _decode_day_ahead_offer(r: _Reader, sender: str, interval: int) -> DayAheadOffer:
    offers = r.get("offers")
    if not isinstance(offers, dict) or not offers:
        raise r.fail("offers", "must be a non-empty map of location -> curves per period")
    out: dict[str, tuple[BidCurve, ...]] = {}
    periods = None
    for location, curves in offers.items():
        name = r.text("offers key", location)
        if not isinstance(curves, list) or not curves:
            raise r.fail(f"offers[{name}]", "must be a non-empty list of curves, one per period")
        if periods is not None and len(curves) != periods:
            raise r.fail(f"offers[{name}]", f"{len(curves)} periods, the others have {periods}")
        periods = len(curves)
        out[name] = tuple(
            r.curve(f"offers[{name}][{i}]", c, MAX_BLOCKS_PER_CURVE) for i, c in enumerate(curves)
        )
    return DayAheadOffer(sender, interval, out)


def _decode_day_ahead_schedules(r: _Reader, sender: str, interval: int) -> DayAheadSchedules:
    lmp = r.get("lmp")
    if not isinstance(lmp, list) or not lmp:
        raise r.fail("lmp", "must be a non-empty list of prices, one per period")
    prices = tuple(r.number(f"lmp[{i}]", v) for i, v in enumerate(lmp))
    schedules = r.get("schedules")
    if not isinstance(schedules, dict):
        raise r.fail("schedules", "must be a map of aggregator -> location -> MW per period")
    out: dict[str, dict[str, tuple[float, ...]]] = {}
    for agg, by_bus in schedules.items():
        name = r.text("schedules key", agg)
        if not isinstance(by_bus, dict):
            raise r.fail(f"schedules[{name}]", "must be a map of location -> MW per period")
        out[name] = {}
        for bus, mws in by_bus.items():
            where = f"schedules[{name}][{r.text(f'schedules[{name}] key', bus)}]"
            if not isinstance(mws, list) or len(mws) != len(prices):
                raise r.fail(where, f"must be a list of {len(prices)} MW, one per period")
            values = tuple(r.number(f"{where}[{i}]", v) for i, v in enumerate(mws))
            if any(abs(v) > MAX_ABS_MW for v in values):
                raise r.fail(where, f"a schedule exceeds {MAX_ABS_MW:g} MW")
            out[name][bus] = values
    return DayAheadSchedules(sender, interval, prices, out)


def _decode_dispatch(r: _Reader, sender: str, interval: int) -> Dispatch:
    setpoints = r.number_map("setpoints_mw", MAX_ABS_MW)
    prices = r.number_map("prices")
    if set(prices) != set(setpoints):
        raise r.fail("prices", "must name exactly the locations of setpoints_mw")
    return Dispatch(sender, interval, setpoints, prices)


def _decode_measurement(r: _Reader, sender: str, interval: int) -> Measurement:
    actual = r.number_map("actual_mw", MAX_ABS_MW)
    setpoints = r.number_map("setpoint_mw", MAX_ABS_MW)
    if set(actual) != set(setpoints):
        raise r.fail("setpoint_mw", "must name exactly the locations of actual_mw")
    return Measurement(sender, interval, actual, setpoints)


def _decode_meter(r: _Reader, sender: str, interval: int) -> Meter:
    allocation = {}
    for text, mw in r.number_map("allocation").items():
        try:
            allocation[Party.parse(text)] = mw
        except PartyError as exc:
            raise r.fail("allocation key", str(exc)) from None
    return Meter(sender, interval, r.integer("td_bus"), r.number("actual_mw"), allocation)


def _decode_fleet_award(r: _Reader, sender: str, interval: int) -> FleetAward:
    awards, prices = r.number_map("awards_mw"), r.number_map("prices")
    if set(prices) != set(awards):
        raise r.fail("prices", "must name exactly the locations of awards_mw")
    return FleetAward(sender, interval, r.text("aggregator"), awards, prices)


def _decode_grid_model(r: _Reader, sender: str, interval: int) -> GridModel:
    names = {k: r.get(k) for k in ("der_names", "node_names", "branch_names")}
    for key, value in names.items():
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise r.fail(key, "must be a list of names")
    n_der, n_node, n_branch = (len(names[k]) for k in ("der_names", "node_names", "branch_names"))

    def vector(key: str, n: int) -> tuple[float, ...]:
        value = r.get(key)
        if not (isinstance(value, list) and len(value) == n):
            raise r.fail(key, f"must be a list of {n} numbers")
        return tuple(r.number(f"{key}[{i}]", v) for i, v in enumerate(value))

    def matrix(key: str, rows: int, cols: int) -> tuple[tuple[float, ...], ...]:
        value = r.get(key)
        if not (
            isinstance(value, list)
            and len(value) == rows
            and all(isinstance(x, list) and len(x) == cols for x in value)
        ):
            raise r.fail(key, f"must be a {rows} x {cols} matrix")
        for i, row in enumerate(value):
            for j, v in enumerate(row):
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise r.fail(f"{key}[{i}][{j}]", f"must be a finite number, got {v!r}")
        return tuple(tuple(float(v) for v in row) for row in value)

    return GridModel(
        sender,
        interval,
        tuple(names["der_names"]),
        tuple(names["node_names"]),
        tuple(names["branch_names"]),
        vector("v_pu", n_node),
        vector("loading", n_branch),
        vector("der_mw", n_der),
        r.number("substation_p_mw"),
        matrix("dv_dp", n_node, n_der),
        matrix("dloading_up", n_branch, n_der),
        matrix("dloading_down", n_branch, n_der),
        vector("dpsub_dp", n_der),
        _day_ahead_period(r),
    )


def _day_ahead_period(r: _Reader) -> int | None:
    value = r.data.get("day_ahead_period")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise r.fail("day_ahead_period", f"must be a period number >= 0 or absent, got {value!r}")
    return value


def _decode_linearise_at(r: _Reader, sender: str, interval: int) -> LineariseAt:
    value = r.get("der_mw")
    if not isinstance(value, list):
        raise r.fail("der_mw", "must be a list of numbers")
    der = tuple(r.number(f"der_mw[{i}]", v) for i, v in enumerate(value))
    for i, v in enumerate(der):
        if abs(v) > MAX_ABS_MW:
            raise r.fail(f"der_mw[{i}]", f"|{v:g}| MW exceeds {MAX_ABS_MW:g} MW")
    return LineariseAt(sender, interval, _iteration(r, first=1), der)


def _iteration(r: _Reader, *, first: int) -> int:
    it = r.integer("iteration")
    if it < first:
        raise r.fail("iteration", f"must be >= {first}, got {it}")
    return it


def _decode_no_linearisation(r: _Reader, sender: str, interval: int) -> NoLinearisation:
    return NoLinearisation(sender, interval, _iteration(r, first=1))


def _decode_priced_on(r: _Reader, sender: str, interval: int) -> PricedOn:
    return PricedOn(sender, interval, _iteration(r, first=0))


def _decode_location_voltages(r: _Reader, sender: str, interval: int) -> LocationVoltages:
    v = r.number_map("v_pu")
    for bus, x in v.items():
        if not 0.0 < x < 2.0:
            raise r.fail(f"v_pu[{bus}]", f"{x:g} pu is not a plausible voltage")
    return LocationVoltages(sender, interval, v)


def _decode_rows(r: _Reader, sender: str, interval: int) -> TableRows:
    return _table_rows(r, "", sender, interval, r.get("table"), r.get("columns"), r.get("rows"))


def _table_rows(
    r: _Reader, where: str, sender: str, interval: int, table: Any, columns: Any, rows: Any
) -> TableRows:
    """One table's rows, checked (``where``: the part of a batch they are)."""
    table = r.text(f"{where}table", table)
    if not TABLE_NAME.match(table):
        raise r.fail(
            f"{where}table", f"{table[:80]!r} is not a table name (lower-case letters, digits, _)"
        )
    if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        raise r.fail(f"{where}columns", "must be a list of column names")
    if not isinstance(rows, list):
        raise r.fail(f"{where}rows", "must be a list of rows")
    # checked at C speed (thousands of rows an interval); the slow walk only names the culprit
    if set(map(type, rows)) - {list} or set(map(len, rows)) - {len(columns)}:
        for i, row in enumerate(rows):
            if not (isinstance(row, list) and len(row) == len(columns)):
                raise r.fail(f"{where}rows[{i}]", f"must have {len(columns)} values")
    return TableRows(sender, interval, table, tuple(columns), tuple(map(tuple, rows)))


def _decode_rows_batch(r: _Reader, sender: str, interval: int) -> RowsBatch:
    parts = r.get("parts")
    if not isinstance(parts, list):
        raise r.fail("parts", "must be a list of [interval, table, columns, rows]")
    out = []
    for i, part in enumerate(parts):
        if not (isinstance(part, list) and len(part) == 4):
            raise r.fail(f"parts[{i}]", "must be [interval, table, columns, rows]")
        at, table, columns, rows = part
        if isinstance(at, bool) or not isinstance(at, int):
            raise r.fail(f"parts[{i}].interval", f"must be an integer, got {at!r}")
        out.append(_table_rows(r, f"parts[{i}].", sender, at, table, columns, rows))
    return RowsBatch(sender, interval, tuple(out))


def _decode_done(r: _Reader, sender: str, interval: int) -> Done:
    return Done(sender, interval)


def _decode_hil_setpoints(r: _Reader, sender: str, interval: int) -> HilSetpoints:
    setpoints, prices, soc = (
        r.number_map("setpoints_mw"),
        r.number_map("prices"),
        r.number_map("soc"),
    )
    if set(prices) != set(setpoints):
        raise r.fail("prices", "must name exactly the devices of setpoints_mw")
    if not set(soc) <= set(setpoints) or not all(0.0 <= x <= 1.0 for x in soc.values()):
        raise r.fail("soc", "must map devices of setpoints_mw to fractions 0..1")
    lo, hi = r.number_map("lo_mw"), r.number_map("hi_mw")
    if set(lo) != set(setpoints) or set(hi) != set(setpoints):
        raise r.fail("lo_mw", "lo_mw and hi_mw must name exactly the devices of setpoints_mw")
    bad = sorted(d for d in lo if not lo[d] <= 0.0 <= hi[d])
    if bad:
        raise r.fail("lo_mw", f"{bad[0]}: need lo_mw <= 0 <= hi_mw")
    return HilSetpoints(sender, interval, setpoints, prices, soc, lo, hi)


def _decode_hil_readings(r: _Reader, sender: str, interval: int) -> HilReadings:
    actual, soc = r.number_map("actual_mw"), r.number_map("soc")
    names = r.get("unavailable")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise r.fail("unavailable", "must be a list of device ids")
    if not all(0.0 <= x <= 1.0 for x in soc.values()):
        raise r.fail("soc", "must be fractions 0..1")
    return HilReadings(sender, interval, actual, soc, tuple(names))


_DECODERS: dict[str, Callable[[_Reader, str, int], Message]] = {
    HilSetpoints.KIND: _decode_hil_setpoints,
    HilReadings.KIND: _decode_hil_readings,
    FleetBid.KIND: _decode_fleet_bid,
    InterfaceBid.KIND: _decode_interface_bid,
    DayAheadBid.KIND: _decode_day_ahead_bid,
    DayAheadOffer.KIND: _decode_day_ahead_offer,
    DayAheadSchedules.KIND: _decode_day_ahead_schedules,
    DayAheadPrices.KIND: _decode_day_ahead_prices,
    Award.KIND: _decode_award,
    Dispatch.KIND: _decode_dispatch,
    Measurement.KIND: _decode_measurement,
    Meter.KIND: _decode_meter,
    FleetAward.KIND: _decode_fleet_award,
    GridModel.KIND: _decode_grid_model,
    LineariseAt.KIND: _decode_linearise_at,
    NoLinearisation.KIND: _decode_no_linearisation,
    PricedOn.KIND: _decode_priced_on,
    LocationVoltages.KIND: _decode_location_voltages,
    TableRows.KIND: _decode_rows,
    RowsBatch.KIND: _decode_rows_batch,
    Done.KIND: _decode_done,
}
