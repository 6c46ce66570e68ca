"""Price-quantity bid curves: the one shape every bid in dsosim takes.

Convention (used by every role and message):

* quantities are **net demand** in MW: positive = withdrawal from the grid,
  negative = injection. A battery discharging or a PV system producing is a
  negative quantity.
* a curve is a fixed part ``base_mw`` (taken at any price, up to the price
  cap) plus **blocks** ``(price, mw)``: "increase my net demand by ``mw``
  if the price is at or below ``price``". Blocks are sorted by price,
  highest first (non-increasing), and ``mw > 0``.

So the net demand at price ``p`` is ``base_mw + sum(mw for price >= p)``:
a non-increasing step function of price. A supply offer fits the same form:
a battery that would discharge 1 MW above $40/MWh bids ``base_mw = -1`` and
a block ``(40, 1)`` (it takes the MW back, i.e. does not discharge, when the
price is at or below $40/MWh).

Prices are in $/MWh and must lie in ``[PRICE_FLOOR, PRICE_CAP]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, pairwise
from operator import itemgetter
from typing import Generic, TypeVar

import numpy as np

PRICE_FLOOR = -1000.0
"""Lowest admissible bid price, $/MWh."""
PRICE_CAP = 10000.0
"""Highest admissible bid price, $/MWh; also the value of lost load used
when a market interval cannot be served."""
MAX_ABS_MW = 1.0e5
"""Largest magnitude of any quantity in a curve, MW: a sanity bound that
catches unit mistakes (kW sent as MW) without limiting any real system."""


class CurveError(ValueError):
    """A bid curve breaks the convention; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class BidCurve:
    """Net-demand bid curve: ``base_mw`` plus price-ordered blocks.

    Examples
    --------
    >>> c = BidCurve(base_mw=-1.0, blocks=((40.0, 1.0), (20.0, 2.0)))
    >>> c.quantity_at(50.0), c.quantity_at(30.0), c.quantity_at(10.0)
    (-1.0, 0.0, 2.0)
    """

    base_mw: float
    blocks: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`CurveError` naming the first offending field."""
        if len(self.blocks) >= _CHECK_AT_ONCE and _plainly_valid(self.base_mw, self.blocks):
            return
        if not _finite(self.base_mw):
            raise CurveError("base_mw", f"must be a finite number, got {self.base_mw!r}")
        if abs(self.base_mw) > MAX_ABS_MW:
            raise CurveError("base_mw", f"|{self.base_mw}| MW exceeds {MAX_ABS_MW:g} MW")
        previous = math.inf
        total = abs(self.base_mw)
        for i, block in enumerate(self.blocks):
            if len(block) != 2:
                raise CurveError(f"blocks[{i}]", "must be a (price, mw) pair")
            price, mw = block
            if not _finite(price):
                raise CurveError(f"blocks[{i}].price", f"must be finite, got {price!r}")
            if not PRICE_FLOOR <= price <= PRICE_CAP:
                raise CurveError(
                    f"blocks[{i}].price",
                    f"{price} $/MWh is outside [{PRICE_FLOOR:g}, {PRICE_CAP:g}]",
                )
            if not _finite(mw) or mw <= 0.0:
                raise CurveError(f"blocks[{i}].mw", f"must be finite and > 0, got {mw!r}")
            if price > previous:
                raise CurveError(
                    f"blocks[{i}].price",
                    f"curve is not monotonic: {price} follows {previous} "
                    "(block prices must be non-increasing)",
                )
            previous = price
            total += mw
        if total > MAX_ABS_MW:
            raise CurveError("blocks", f"total quantity {total:g} MW exceeds {MAX_ABS_MW:g} MW")

    @property
    def min_mw(self) -> float:
        """Net demand at the price cap (the least the bidder will take)."""
        return self.base_mw

    @property
    def max_mw(self) -> float:
        """Net demand at the price floor (the most the bidder will take)."""
        return self.base_mw + sum(map(itemgetter(1), self.blocks))  # the blocks in order

    def quantity_at(self, price: float) -> float:
        """Net demand, MW, at a given price (blocks priced >= price are taken)."""
        return self.base_mw + sum(mw for p, mw in self.blocks if p >= price)

    def scaled(self, factor: float) -> BidCurve:
        """The same curve with every quantity multiplied by ``factor`` (> 0)."""
        if not (_finite(factor) and factor > 0.0):
            raise CurveError("scale", f"must be finite and > 0, got {factor!r}")
        return BidCurve(self.base_mw * factor, tuple((p, mw * factor) for p, mw in self.blocks))

    @staticmethod
    def combine(curves: Iterable[BidCurve]) -> BidCurve:
        """Horizontal sum of curves (blocks merged, equal prices pooled)."""
        base = 0.0
        pooled: dict[float, float] = {}
        for curve in curves:
            base += curve.base_mw
            for price, mw in curve.blocks:
                pooled[price] = pooled.get(price, 0.0) + mw
        return BidCurve(base, tuple(sorted(pooled.items(), key=lambda b: -b[0])))

    @staticmethod
    def many(
        base_mw: np.ndarray, price: np.ndarray, mw: np.ndarray, start: np.ndarray
    ) -> list[BidCurve]:
        """Curves ``i = 0, 1, ...`` of ``base_mw[i]`` and the blocks
        ``(price[j], mw[j])``, ``start[i] <= j < start[i + 1]`` (float
        arrays; ``start`` has one entry more than ``base_mw``). Every check of
        :meth:`validate` is made at once on the arrays; only when one may
        fail are the curves built (and checked) one by one, so the error
        names the first offending field as before."""
        prices, mws, bases = price.tolist(), mw.tolist(), base_mw.tolist()
        cuts = start.tolist()
        pairs = pairwise(cuts)
        if not _all_valid(base_mw, price, mw, start):
            return [
                BidCurve(b, tuple(zip(prices[a:z], mws[a:z])))
                for b, (a, z) in zip(bases, pairs, strict=True)
            ]
        return [
            _unchecked(b, tuple(zip(prices[a:z], mws[a:z])))
            for b, (a, z) in zip(bases, pairs, strict=True)
        ]

    @staticmethod
    def from_points(points: Sequence[tuple[float, float]], base_mw: float) -> BidCurve:
        """Build a curve from ``(price, net_demand_mw)`` points of a demand
        function sampled at decreasing prices, starting from ``base_mw`` at the
        price cap. Quantity increments below 1e-9 MW are dropped."""
        blocks: list[tuple[float, float]] = []
        level = base_mw
        for price, q in points:
            step = q - level
            if step > 1e-9:
                blocks.append((price, step))
                level = q
        return BidCurve(base_mw, tuple(blocks))


Place = TypeVar("Place")


@dataclass(frozen=True)  # no slots: a frozen slotted generic cannot be built via its alias
class PlacedCurve(Generic[Place]):
    """A bid curve and where it is: the one "curve plus where" record.

    ``at`` is a feeder location or DER element (``str``) inside an LDA, a
    transmission bus (``int``) in the DC-OPF, or a
    :class:`~dsosim.federates.common.parties.BidKey` at the ISO. ``owner``
    names who bids, for error messages; it is never priced.
    """

    at: Place
    curve: BidCurve
    owner: str = ""


_CHECK_AT_ONCE = 64
"""Curves with at least this many blocks are checked with numpy first (below, the
loop is as fast: measured by `dsosim bench iso`'s last line and by hand)."""


def _plainly_valid(base_mw: float, blocks: tuple[tuple[float, float], ...]) -> bool:
    """True only if every check of :meth:`BidCurve.validate` passes (plain
    ``int``/``float`` values, finite, prices in range and non-increasing,
    quantities > 0, the total within ``MAX_ABS_MW`` summed in the same order),
    decided on arrays; False says nothing: the checks are then made one by one,
    and name the first failure."""
    try:
        if type(base_mw) not in (float, int) or not math.isfinite(base_mw):  # not a bool
            return False
        if set(map(len, blocks)) != {2}:
            return False
        if not set(map(type, chain.from_iterable(blocks))) <= {float, int}:
            return False
        values = np.fromiter(chain.from_iterable(blocks), float, 2 * len(blocks))
        start = abs(float(base_mw))
    except (TypeError, OverflowError):
        return False
    price, mw = values[0::2], values[1::2]
    # the running total exactly as validate adds it: |base| first, then block by block
    total = np.cumsum(np.concatenate(([start], mw)))[-1]
    # NaN fails every comparison (min and max propagate it), an infinite price
    # the range and an infinite quantity the total: no separate finiteness test
    return bool(
        price.min() >= PRICE_FLOOR
        and price.max() <= PRICE_CAP
        and mw.min() > 0.0
        and not (price[1:] > price[:-1]).any()
        and total <= MAX_ABS_MW
    )


def _unchecked(base_mw: float, blocks: tuple[tuple[float, float], ...]) -> BidCurve:
    """A curve built without :meth:`BidCurve.validate` (its values checked already)."""
    curve = object.__new__(BidCurve)
    object.__setattr__(curve, "base_mw", base_mw)
    object.__setattr__(curve, "blocks", blocks)
    return curve


def _all_valid(base_mw: np.ndarray, price: np.ndarray, mw: np.ndarray, start: np.ndarray) -> bool:
    """True only if every curve of :meth:`BidCurve.many` passes
    :meth:`BidCurve.validate`: finite bases within ``MAX_ABS_MW``, prices in
    range and non-increasing within each curve, quantities > 0, each curve's
    total within ``MAX_ABS_MW`` with a margin far above any difference the
    order of the additions makes; False says nothing."""
    n, m = len(base_mw), len(price)
    if len(start) != n + 1 or len(mw) != m or int(start[0]) != 0 or int(start[-1]) != m:
        return False
    base = np.abs(base_mw)
    if n and not base.max() <= MAX_ABS_MW:  # NaN fails too
        return False
    if m == 0:
        return True
    # NaN fails every comparison, an infinite price the range, an infinite quantity the total
    if not (price.min() >= PRICE_FLOOR and price.max() <= PRICE_CAP and mw.min() > 0.0):
        return False
    rising = price[1:] > price[:-1]
    inner = start[1:-1]
    rising[inner[(inner > 0) & (inner < m)] - 1] = False  # one curve's last, the next's first
    if rising.any():
        return False
    total = base + np.add.reduceat(np.append(mw, 0.0), start[:-1])
    total[start[:-1] == start[1:]] = base[start[:-1] == start[1:]]  # curves without blocks
    return bool(total.max() <= MAX_ABS_MW * (1.0 - 1e-9))


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


BID_COLUMNS = ("interval", "bidder", "receiver", "location", "base_mw", "prices", "mws")
"""Columns of the ``bids`` result table: one row per bid curve, recorded by the
market that receives it (``prices`` and ``mws`` are the blocks, highest price
first)."""


def bid_row(
    interval: int, bidder: str, receiver: str, location: str, curve: BidCurve
) -> tuple[object, ...]:
    """One ``bids`` row (see :data:`BID_COLUMNS`)."""
    return (
        interval,
        bidder,
        receiver,
        location,
        curve.base_mw,
        [p for p, _ in curve.blocks],
        [q for _, q in curve.blocks],
    )
