"""From device offers to one curve per bus, and from a bus set-point back to
device powers.

* **Assembly**: every device's least net demand adds up to the bus's
  ``base_mw``; its blocks are sorted by bus, then price (highest first).
* **Reduction**: a bus with more than ``max_blocks`` distinct prices has its
  blocks pooled into ``max_blocks`` bands of equal quantity (consecutive in
  price order), each offered at its quantity-weighted mean price. The curve
  stays monotonic and deliverable (same range, same total), a band's price
  is off by at most the spread of its own prices, and the message and the
  DSO's clearing stay the same size whatever the number of devices. Blocks
  of equal price are always pooled (exactly, at that price).
* **Fill**: a bus that is dispatched ``x`` above its base takes its
  original (unpooled) blocks in price order, highest first, pro rata among
  equal prices: the devices that would move at the clearing price are the
  ones that move.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dsosim.federates.aggregator.group import (
    BusSums,
    FloatArray,
    GroupOffer,
    IntArray,
    sorted_bus_sums,
)
from dsosim.federates.common.curves import PRICE_CAP, PRICE_FLOOR

BoolArray = NDArray[np.bool_]

EPS_MW = 1e-9
"""Blocks smaller than this are dropped (a curve block must be > 0 MW)."""


@dataclass(slots=True)
class FleetOffer:
    """The fleet's offer for one interval, as arrays."""

    interval: int
    groups: list[GroupOffer]
    dev_lo: FloatArray
    dev_hi: FloatArray
    dev_base: FloatArray
    bus_lo: FloatArray
    bus_hi: FloatArray
    blk_per_bus: IntArray  # blocks at each bus; they are sorted by bus, then price descending
    blk_price: FloatArray
    blk_mw: FloatArray
    blk_owner: IntArray  # fleet-wide device index of each block
    curve_price: FloatArray  # pooled bus curves, same order
    curve_mw: FloatArray
    curve_start: IntArray  # pooled blocks of bus i are [curve_start[i], curve_start[i + 1])
    runs: PriceRuns | None = None  # None when there are no blocks

    @property
    def blk_bus(self) -> IntArray:
        """Each block's bus (each bus repeated as often as it has blocks)."""
        return np.repeat(np.arange(len(self.blk_per_bus)), self.blk_per_bus)


class BlockOwners:
    """The fleet-wide device index and bus of every block the groups offer,
    in group order, kept while each group offers the same ``owner`` array
    (the same object: every group but a withdrawn device's keeps one)."""

    def __init__(self) -> None:
        self._arrays: list[IntArray] = []
        self.owner: IntArray = np.zeros(0, dtype=np.intp)
        self.bus: IntArray = np.zeros(0, dtype=np.intp)
        self._tags: tuple[NDArray[np.uint64], int, int] | None = None
        self._top: int | None = None

    def tags(self) -> tuple[NDArray[np.uint64], int, int]:
        """Each block's sort-key tag, ``bus | 0 | index`` from the high bits
        down (see :func:`bus_price_order`; the index is the block's in group
        order), the bits left for the price between them and the index bits
        (price bits below 24: no tags, sort by ``lexsort``)."""
        if self._tags is None:
            n = len(self.owner)
            index_bits = (n - 1).bit_length() if n else 0
            bus_bits = max(int(self.bus.max()).bit_length(), 1) if n else 1
            price_bits = 64 - index_bits - bus_bits
            tag = np.arange(n, dtype=np.uint64)
            if n and int(self.bus.min()) >= 0 and price_bits >= 24:
                tag |= self.bus.astype(np.uint64) << np.uint64(price_bits + index_bits)
            else:
                price_bits = 0
            self._tags = (tag, price_bits, index_bits)
        return self._tags

    def top_bus(self) -> int:
        """The highest bus of a block (kept with the tags)."""
        if self._top is None:
            self._top = int(self.bus.max())
        return self._top

    def of(self, groups: list[GroupOffer], dev_bus: IntArray) -> tuple[IntArray, IntArray]:
        same = len(self._arrays) == len(groups) and all(
            a is g.owner for a, g in zip(self._arrays, groups, strict=True)
        )
        if not same:
            offsets = np.cumsum([0] + [len(g.lo) for g in groups])
            self.owner = np.concatenate(
                [g.owner + off for g, off in zip(groups, offsets, strict=False)]
            ).astype(np.intp)
            self.bus = dev_bus[self.owner]
            self._arrays = [g.owner for g in groups]  # held, so no other array takes their ids
            self._tags = None
            self._top = None
        return self.owner, self.bus


def assemble(
    interval: int,
    groups: list[GroupOffer],
    bus_sums: BusSums,
    max_blocks: int,
    owners: BlockOwners | None = None,
) -> FleetOffer:
    """The fleet's offer from its groups' (in fleet order), with the devices'
    buses and their per-bus sums in ``bus_sums`` (and the blocks' owners kept
    in ``owners`` from one interval to the next)."""
    dev_bus, n_bus = bus_sums.bus, bus_sums.n_bus
    owners = owners or BlockOwners()
    all_owner, _ = owners.of(groups, dev_bus)
    dev_lo = np.concatenate([g.lo for g in groups])
    dev_hi = np.concatenate([g.hi for g in groups])
    dev_base = np.clip(np.concatenate([g.base for g in groups]), dev_lo, dev_hi)
    price = np.concatenate([g.price for g in groups])
    mw = np.concatenate([g.mw for g in groups])
    np.clip(price, PRICE_FLOOR, PRICE_CAP, out=price)  # +inf (no later chance) -> the cap
    # the blocks kept, in order (by bus, then price highest first), and their prices
    kept, price, per_bus = _sort_kept(owners, np.flatnonzero(mw > EPS_MW), price, n_bus)
    mw, owner = np.take(mw, kept), np.take(all_owner, kept)  # take: a faster gather
    # sorted by bus: the bus column is each bus repeated as often as it has blocks
    # (not needed to pool a utility-scale fleet's curves, see _curves_and_runs)
    bus = None if bus_sums.sparse else np.repeat(np.arange(n_bus), per_bus)
    # the device range is its least net demand plus the blocks kept
    dev_hi = dev_lo + np.bincount(owner, mw, minlength=len(dev_lo))
    runs = None
    if len(mw):
        c_bus, c_price, c_mw, runs = _curves_and_runs(
            bus, price, mw, per_bus, max_blocks, bus_sums.sparse
        )
    else:
        c_bus, c_price, c_mw = np.zeros(0, dtype=np.intp), price, mw
    return FleetOffer(
        interval=interval,
        groups=groups,
        dev_lo=dev_lo,
        dev_hi=dev_hi,
        dev_base=dev_base,
        bus_lo=bus_sums.sum(dev_lo),
        bus_hi=bus_sums.sum(dev_hi),
        blk_per_bus=per_bus,
        blk_price=price,
        blk_mw=mw,
        blk_owner=owner,
        curve_price=c_price,
        curve_mw=c_mw,
        curve_start=np.searchsorted(c_bus, np.arange(n_bus + 1)),
        runs=runs,
    )


def bus_price_order(bus: IntArray, price: FloatArray) -> IntArray:
    """The permutation ``np.lexsort((-price, bus))`` gives (by bus, then price
    highest first, ties in index order), several times faster on large fleets.

    A stable sort of floats is numpy's timsort, and even an unstable argsort
    is slower than sorting plain integers in place (SIMD where the CPU has
    it). So each block gets one unique 64-bit integer key, sorted in place:
    ``bus | price | index`` from the high bits down, where ``price`` is the
    top bits of the price's order-preserving integer image (the float's bits
    with the sign handled, so integers compare as the floats do; ``-0.0`` is
    made ``0.0`` first, as lexsort compares them equal) and the index in the
    low bits makes the key unique, so equal prices keep index order. Prices
    that agree in the bits kept but differ below them (closer than about one
    part in 2**(price bits - 12), e.g. 1e-9 relative with 42 bits) would come out in
    index order: such runs are found after the sort and re-sorted exactly.
    Falls back to ``lexsort`` for small inputs, NaN prices, negative buses,
    or too few bits left for the price."""
    return _bus_price_sort(bus, price, None)[0]


def _bus_price_sort(
    bus: IntArray, price: FloatArray, n_bus: int | None
) -> tuple[IntArray, FloatArray, IntArray]:
    """:func:`bus_price_order`, the prices in that order, and with ``n_bus``
    the blocks per bus (read off the sorted keys; empty without ``n_bus``)."""
    n = len(price)
    neg = np.negative(price)
    neg += 0.0  # -0.0 -> 0.0 (lexsort compares them equal)
    index_bits = (n - 1).bit_length()
    bus_bits = max(int(bus.max()).bit_length(), 1) if n else 1
    price_bits = 64 - index_bits - bus_bits
    if n < 4096 or np.isnan(neg.max()) or int(bus.min()) < 0 or price_bits < 24:
        order = np.lexsort((-price, bus))
        per_bus = np.bincount(bus, minlength=n_bus) if n_bus is not None else np.zeros(0, np.intp)
        return order, price[order], per_bus
    tag = np.arange(n, dtype=np.uint64)
    tag |= bus.astype(np.uint64) << np.uint64(price_bits + index_bits)
    top = int(bus.max())
    order, ordered, per_bus = _tagged_sort(
        neg, tag, (price_bits, index_bits), price, top, top + 1 if n_bus is None else n_bus
    )
    return order, ordered, per_bus if n_bus is not None else np.zeros(0, dtype=np.intp)


def _sort_kept(
    owners: BlockOwners, kept: IntArray, price: FloatArray, n_bus: int
) -> tuple[IntArray, FloatArray, IntArray]:
    """The blocks ``kept`` (indices in group order) by bus, then price
    (``price[i]`` of block ``i``) highest first, ties in index order: the
    sorted indices, their prices and the blocks per bus. The order of
    ``lexsort((-price[kept], bus[kept]))``, by one sort of integer keys whose
    low bits are the block's own index (:meth:`BlockOwners.tags`), so the
    sorted keys give the indices without a gather through ``kept``."""
    tag, price_bits, index_bits = owners.tags()
    neg = np.negative(np.take(price, kept))
    neg += 0.0  # -0.0 -> 0.0 (lexsort compares them equal)
    if len(kept) < 4096 or price_bits == 0 or np.isnan(neg.max()):
        bus = owners.bus[kept]
        order = np.lexsort((neg, bus))
        return kept[order], price[kept[order]], np.bincount(bus, minlength=n_bus)
    top = owners.top_bus()  # buses above it have no blocks
    return _tagged_sort(neg, np.take(tag, kept), (price_bits, index_bits), price, top, n_bus)


def _tagged_sort(
    neg: FloatArray,
    tag: NDArray[np.uint64],
    bits: tuple[int, int],
    price: FloatArray,
    top: int,
    n_bus: int,
) -> tuple[IntArray, FloatArray, IntArray]:
    """Sort blocks of negated prices ``neg`` (no NaN, no -0.0) and tags
    ``bus | 0 | index`` (``tag``, the price's bits left zero; ``bits``: the
    price and index bits, buses at most ``top``): the indices in order,
    ``price[index]`` in that order and the blocks per bus ``0 .. n_bus - 1``
    (see :func:`bus_price_order`; ``neg`` is overwritten)."""
    n = len(neg)
    price_bits, index_bits = bits
    key = _order_image(neg)
    key >>= np.uint64(64 - price_bits)
    key <<= np.uint64(index_bits)
    key |= tag
    key.sort()
    order = (key & np.uint64((1 << index_bits) - 1)).view(np.int64).astype(np.intp, copy=False)
    # where each bus's keys start
    cuts = np.searchsorted(
        key, np.arange(1, top + 1, dtype=np.uint64) << np.uint64(price_bits + index_bits)
    )
    per_bus = np.diff(np.concatenate(([0], cuts, np.full(n_bus - top, n))))
    # prices cut to the same top bits but not equal: re-sort those runs exactly
    key >>= np.uint64(index_bits)
    ordered = np.take(price, order)
    suspect = key[1:] == key[:-1]
    suspect &= ordered[1:] != ordered[:-1]
    if suspect.any():
        _fix_near_ties(order, key, ordered, price, np.flatnonzero(suspect), bits)
    return order, ordered, per_bus


def _order_image(values: FloatArray) -> NDArray[np.uint64]:
    """Floats (no NaN, no -0.0) as unsigned integers that compare as they do:
    every bit of a negative float flipped, only the sign bit of the others."""
    raw = values.view(np.int64)
    image = raw >> 63
    image |= np.int64(-(2**63))
    image ^= raw
    return image.view(np.uint64)


def _fix_near_ties(
    order: IntArray,
    run_key: IntArray,
    ordered: FloatArray,
    price: FloatArray,
    pairs: IntArray,
    bits: tuple[int, int] | None,
) -> None:
    """Re-sort, by (-price, index), each run of equal ``run_key`` that holds a
    pair ``(i, i + 1)`` of ``pairs`` (arrays in sorted order; ``order`` and
    ``ordered = price[order]`` in place): the runs' entries gathered, sorted
    by (run, -price, index) and written back.

    With ``bits`` (the key's price and index bits, :func:`_tagged_sort`) the
    entries of a run share the top price bits of their order-preserving
    image, so the bits below them order the prices: one sort of integer keys
    ``run | low image bits | index`` (where they fit in 64 bits and the
    entries are many), else one ``lexsort`` of the three."""
    at_pairs = run_key[pairs]  # ascending, as the runs lie
    first = np.empty(len(at_pairs), dtype=bool)
    first[:1] = True
    np.not_equal(at_pairs[1:], at_pairs[:-1], out=first[1:])
    keys = at_pairs[first]  # one per run to re-sort
    start = np.searchsorted(run_key, keys, side="left")
    length = np.searchsorted(run_key, keys, side="right") - start
    # the runs' positions, run after run: start of each run plus 0 .. length - 1
    run = np.repeat(np.arange(len(keys)), length)
    at = np.arange(len(run)) - np.repeat(np.cumsum(length) - length, length) + start[run]
    members = order[at]
    low_bits = 64 - bits[0] if bits is not None else 64
    index_bits = bits[1] if bits is not None else 64
    fits = low_bits + index_bits + max((len(keys) - 1).bit_length(), 1) <= 64
    if fits and len(at) >= 4096:  # (fewer: lexsort's three passes cost less than the steps)
        neg = np.negative(np.take(price, members))
        neg += 0.0  # -0.0 -> 0.0, as the sort's keys had it
        key = _order_image(neg)
        key &= np.uint64((1 << low_bits) - 1)
        key <<= np.uint64(index_bits)
        key |= members.astype(np.uint64)
        key |= run.astype(np.uint64) << np.uint64(low_bits + index_bits)
        key.sort()
        key &= np.uint64((1 << index_bits) - 1)
        order[at] = key.view(np.int64)
    else:
        order[at] = members[np.lexsort((members, -ordered[at], run))]
    ordered[at] = price[order[at]]


def pool(
    bus: IntArray, price: FloatArray, mw: FloatArray, n_bus: int, max_blocks: int
) -> tuple[IntArray, FloatArray, FloatArray]:
    """Blocks sorted by bus then price descending -> at most ``max_blocks``
    per bus (see module docstring)."""
    if len(mw) == 0:
        return bus, price, mw
    per_bus = np.bincount(bus, minlength=n_bus)
    c_bus, c_price, c_mw, _ = _curves_and_runs(bus, price, mw, per_bus, max_blocks, False)
    return c_bus, c_price, c_mw


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where each bus's blocks and each (bus, price) run start, in blocks
    sorted by bus then price highest first."""

    bus_at: IntArray
    """Blocks before each bus (``n_bus + 1`` entries: bus ``b`` holds blocks
    ``bus_at[b] .. bus_at[b + 1] - 1``)."""
    firsts: IntArray
    """The first block of each bus that has any."""
    new_price: BoolArray
    """True where a run starts (a bus's first block, or a new price)."""
    starts: IntArray
    """The block each run starts at."""
    run_at: IntArray
    """Runs before each bus (``n_bus + 1`` entries)."""


def _layout(price: FloatArray, per_bus: IntArray) -> _Layout:
    bus_at = np.zeros(len(per_bus) + 1, dtype=np.intp)
    np.cumsum(per_bus, out=bus_at[1:])
    firsts = bus_at[:-1][per_bus > 0]
    new_price = np.empty(len(price), dtype=bool)
    new_price[0] = True
    np.not_equal(price[1:], price[:-1], out=new_price[1:])
    new_price[firsts] = True
    starts = np.flatnonzero(new_price)
    return _Layout(bus_at, firsts, new_price, starts, np.searchsorted(starts, bus_at))


def _curves_and_runs(
    bus: IntArray | None,
    price: FloatArray,
    mw: FloatArray,
    per_bus: IntArray,
    max_blocks: int,
    sliced: bool,
) -> tuple[IntArray, FloatArray, FloatArray, PriceRuns]:
    """The pooled bus curves (:func:`pool`: bus, price, MW of each pooled
    block) and the price runs the fill shares (:class:`PriceRuns`) of blocks
    sorted by bus then price, ``per_bus`` of them at each bus (at least one
    block). With ``sliced`` (a utility-scale fleet: few buses, many blocks
    each), values that are one per bus are applied bus by bus to slices
    instead of repeated over the blocks, and each bus's total is summed by
    :func:`sorted_bus_sums`; the same operations on the same values. ``bus``
    (each block's) may be None when ``sliced``."""
    at = _layout(price, per_bus)
    runs = _price_runs(mw, at, sliced)
    distinct = np.diff(at.run_at)  # distinct prices per bus
    big = distinct > max_blocks
    if not big.any():  # every price its own pooled block, at every bus: the runs
        starts, g_mw = at.starts, runs.mw
    else:
        if bus is None and not sliced:
            bus = np.repeat(np.arange(len(per_bus)), per_bus)
        band = _bands(bus, mw, max_blocks, per_bus, at, sliced)
        # a new pooled block at every new bus, and at a new price (small buses) or band (big)
        new = np.empty(len(mw), dtype=bool)
        new[0] = True
        if big.all():
            np.not_equal(band[1:], band[:-1], out=new[1:])
        else:
            new[1:] = np.where(np.repeat(big, per_bus)[1:], band[1:] != band[:-1], at.new_price[1:])
        new[at.firsts] = True
        starts = np.flatnonzero(new)
        g_mw = np.add.reduceat(mw, starts)
    g_price = np.add.reduceat(price * mw, starts) / g_mw
    hi, lo = np.maximum.reduceat(price, starts), np.minimum.reduceat(price, starts)
    g_price = np.where(hi == lo, hi, np.clip(g_price, lo, hi))
    # each pooled block's bus: pooled blocks lie within a bus, in bus order
    c_bus = np.repeat(np.arange(len(per_bus)), np.diff(np.searchsorted(starts, at.bus_at)))
    return c_bus, g_price, g_mw, runs


def _bands(
    bus: IntArray | None,
    mw: FloatArray,
    max_blocks: int,
    per_bus: IntArray,
    at: _Layout,
    sliced: bool,
) -> IntArray:
    """Each block's band: where the middle of its quantity falls along its bus's
    total, in ``max_blocks`` equal parts (``sliced``: see :func:`_curves_and_runs`)."""
    cum = np.cumsum(mw)
    n_bus = len(per_bus)
    if sliced:
        total = sorted_bus_sums(mw, per_bus)
        within = np.empty_like(mw)
        cuts = at.bus_at.tolist()
        for b in np.flatnonzero(per_bus).tolist():
            a, z = cuts[b], cuts[b + 1]
            np.subtract(cum[a:z], cum[a] - mw[a], out=within[a:z])
    else:
        assert bus is not None
        total = np.bincount(bus, mw, minlength=n_bus)
        start = at.firsts
        before = np.repeat(cum[start] - mw[start], per_bus[per_bus > 0])
        within = np.subtract(cum, before, out=before)
    # quantity up to the middle of the block: cum - before - 0.5 * mw, in place
    within -= np.multiply(mw, 0.5, out=cum)
    if sliced:
        for b in np.flatnonzero(per_bus).tolist():
            within[cuts[b] : cuts[b + 1]] /= total[b]
    else:
        within /= np.repeat(total, per_bus)
    within *= max_blocks
    band = within.astype(np.intp)
    np.minimum(band, max_blocks - 1, out=band)
    return band


@dataclass(frozen=True, slots=True)
class PriceRuns:
    """The blocks of a :class:`FleetOffer` as runs of one bus and one price,
    the units :func:`fill` shares pro rata (the same every fill of an offer)."""

    length: IntArray
    """Blocks in each run (runs are consecutive, in block order)."""
    bus: IntArray
    mw: FloatArray
    before: FloatArray
    """MW of the bus's runs before this one (higher prices, taken first)."""
    per_bus: IntArray | None = None
    """Runs at each bus (``bus`` is each bus repeated as often), if known."""


def _price_runs(mw: FloatArray, at: _Layout, sliced: bool) -> PriceRuns:
    starts = at.starts
    length = np.empty(len(starts), dtype=starts.dtype)  # np.diff(np.append(starts, len(mw)))
    np.subtract(starts[1:], starts[:-1], out=length[:-1])
    length[-1] = len(mw) - starts[-1]
    g_mw = np.add.reduceat(mw, starts)
    per_bus = np.diff(at.run_at)
    g_bus = np.repeat(np.arange(len(per_bus)), per_bus)
    before = np.cumsum(g_mw)
    before -= g_mw  # taken before the run, counted over all buses
    has = np.flatnonzero(per_bus)
    if sliced:  # less what the bus's first run had before it, bus by bus
        cuts = at.run_at.tolist()
        for b in has.tolist():
            a = cuts[b]
            before[a : cuts[b + 1]] -= before[a]  # a scalar, read before the slice changes
    else:
        before -= np.repeat(before[at.run_at[has]], per_bus[has])
    return PriceRuns(length, g_bus, g_mw, before, per_bus)


def fill(offer: FleetOffer, extra: FloatArray) -> FloatArray:
    """MW taken from each device's blocks when bus ``i`` takes ``extra[i]``
    above its base: blocks in price order, pro rata among equal prices."""
    n_dev = len(offer.dev_lo)
    runs = offer.runs
    if runs is None:
        return np.zeros(n_dev)
    # each run's bus's extra: repeated bus by bus (runs lie in bus order), or gathered
    share = np.take(extra, runs.bus) if runs.per_bus is None else np.repeat(extra, runs.per_bus)
    share -= runs.before
    share /= runs.mw
    np.clip(share, 0.0, 1.0, out=share)
    taken = np.repeat(share, runs.length)
    taken *= offer.blk_mw
    return np.bincount(offer.blk_owner, taken, minlength=n_dev)
