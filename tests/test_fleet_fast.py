"""The fleet's fast per-interval path gives bit-for-bit what the plain
reference path gives: the block order from one integer sort against
``np.lexsort``, the fill's price runs kept from assembly against runs
recomputed per fill, order statistics from sorted prefixes against the
running-count search, PV irradiance per orientation against per device,
thermal decay kept across intervals against recomputed, per-bus sums by
sparse matrix against ``np.bincount``, per-bus extremes by ``reduceat``
against ``ufunc.at``. The references
below are the implementations the fast ones replaced (kept here verbatim)."""

from __future__ import annotations

import hashlib
import platform
import sys

import numpy as np
import pytest
from numpy.typing import NDArray

from dsosim.federates.aggregator import group, heap, offers, prices, pv, thermal
from dsosim.federates.aggregator.fleet import Fleet
from dsosim.federates.aggregator.population import HomeMix, home_devices
from dsosim.federates.aggregator.solar import sky_table
from dsosim.federates.aggregator.specs import (
    FleetSpec,
    FlexLoadSpec,
    InflexibleLoadSpec,
    ShiftableLoadSpec,
    SiteSpec,
)
from dsosim.federates.common.arrays import FloatArray, IntArray

DAY = 288
SITE = SiteSpec()
SKY = sky_table(SITE, ["flat", "south", "east", "west"])


# ------------------------------------------------------------- references


def _lexsort_order(bus: IntArray, price: FloatArray) -> IntArray:
    return np.lexsort((-price, bus))


def _lexsort_sort(
    bus: IntArray, price: FloatArray, n_bus: int | None
) -> tuple[IntArray, FloatArray, IntArray]:
    order = np.lexsort((-price, bus))
    per_bus = np.bincount(bus, minlength=n_bus or 0)
    return order, price[order], per_bus


def _lexsort_kept(
    owners: offers.BlockOwners, kept: IntArray, price: FloatArray, n_bus: int
) -> tuple[IntArray, FloatArray, IntArray]:
    bus = owners.bus[kept]
    order = np.lexsort((-price[kept], bus))
    return kept[order], price[kept][order], np.bincount(bus, minlength=n_bus)


def _reference_pool(
    bus: IntArray,
    price: FloatArray,
    mw: FloatArray,
    n_bus: int,
    max_blocks: int,
    first: NDArray[np.bool_],
    new_price: NDArray[np.bool_],
    per_bus: IntArray,
    sparse: bool,
) -> tuple[IntArray, FloatArray, FloatArray]:
    start = np.flatnonzero(first)
    distinct = np.zeros(n_bus, dtype=np.intp)
    distinct[bus[start]] = np.add.reduceat(new_price.view(np.int8), start, dtype=np.intp)
    cum = np.cumsum(mw)
    before = np.repeat(cum[start] - mw[start], np.diff(np.append(start, len(mw))))
    total = np.bincount(bus, mw, minlength=n_bus)
    within = cum - before - 0.5 * mw
    band = np.minimum((within / total[bus] * max_blocks).astype(np.intp), max_blocks - 1)
    big = distinct[bus] > max_blocks
    new = first.copy()
    new[1:] |= np.where(big[1:], band[1:] != band[:-1], new_price[1:])
    starts = np.flatnonzero(new)
    g_mw = np.add.reduceat(mw, starts)
    g_price = np.add.reduceat(price * mw, starts) / g_mw
    hi, lo = np.maximum.reduceat(price, starts), np.minimum.reduceat(price, starts)
    g_price = np.where(hi == lo, hi, np.clip(g_price, lo, hi))
    return bus[starts], g_price, g_mw


def _reference_run_starts(
    bus: IntArray, price: FloatArray
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    first = np.empty(len(bus), dtype=bool)
    first[0] = True
    np.not_equal(bus[1:], bus[:-1], out=first[1:])
    new_price = np.empty(len(bus), dtype=bool)
    new_price[0] = True
    np.not_equal(price[1:], price[:-1], out=new_price[1:])
    new_price |= first
    return first, new_price


def _reference_curves_and_runs(
    bus: IntArray,
    price: FloatArray,
    mw: FloatArray,
    per_bus: IntArray,
    max_blocks: int,
    sliced: bool,
) -> tuple[IntArray, FloatArray, FloatArray, offers.PriceRuns]:
    first, new_price = _reference_run_starts(bus, price)
    c_bus, c_price, c_mw = _reference_pool(
        bus, price, mw, len(per_bus), max_blocks, first, new_price, per_bus, sliced
    )
    return c_bus, c_price, c_mw, _reference_price_runs(bus, mw, new_price)


def _reference_price_runs(
    bus: IntArray, mw: FloatArray, new_price: NDArray[np.bool_]
) -> offers.PriceRuns:
    starts = np.flatnonzero(new_price)
    length = np.diff(np.append(starts, len(mw)))
    g_mw = np.add.reduceat(mw, starts)
    g_bus = bus[starts]
    before = np.cumsum(g_mw) - g_mw
    first = np.flatnonzero(np.concatenate(([True], g_bus[1:] != g_bus[:-1])))
    bus_first = np.repeat(first, np.diff(np.append(first, len(g_mw))))
    before -= before[bus_first]
    return offers.PriceRuns(length, g_bus, g_mw, before)


def _reference_fill(offer: offers.FleetOffer, extra: FloatArray) -> FloatArray:
    n_dev = len(offer.dev_lo)
    if len(offer.blk_mw) == 0:
        return np.zeros(n_dev)
    bus, price, mw = offer.blk_bus, offer.blk_price, offer.blk_mw
    new = np.empty(len(mw), dtype=bool)
    new[0] = True
    new[1:] = (bus[1:] != bus[:-1]) | (price[1:] != price[:-1])
    group = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    g_mw = np.add.reduceat(mw, starts)
    g_bus = bus[starts]
    before = np.cumsum(g_mw) - g_mw
    first = np.flatnonzero(np.concatenate(([True], g_bus[1:] != g_bus[:-1])))
    bus_first = np.repeat(first, np.diff(np.append(first, len(g_mw))))
    before -= before[bus_first]
    share = np.clip((extra[g_bus] - before) / g_mw, 0.0, 1.0)
    return np.bincount(offer.blk_owner, mw * share[group], minlength=n_dev)


def _reference_order_stat(
    sorted_rows: FloatArray, rows: IntArray, position: FloatArray
) -> FloatArray:
    last = sorted_rows.shape[1] - 1
    x = np.clip(position, 0.0, last)
    i0 = np.floor(x).astype(np.intp)
    i1 = np.minimum(i0 + 1, last)
    w = x - i0
    r = rows.reshape(rows.shape + (1,) * (x.ndim - rows.ndim))
    return sorted_rows[r, i0] * (1.0 - w) + sorted_rows[r, i1] * w


def _reference_order_stat_ahead(
    self: prices.Outlook, buses: IntArray, m: IntArray, position: FloatArray
) -> FloatArray:
    out = np.full(len(m), np.inf)
    has = m > 0
    if not has.any():
        return out
    width = min(int(m[has].max()), self.est.slots)
    order, sorted_f = self._sorted(width)
    mm = np.minimum(m[has], width)
    x = np.clip(position[has], 0.0, mm - 1)
    i0 = np.floor(x).astype(np.intp)
    i1 = np.minimum(i0 + 1, mm - 1)
    w = x - i0
    row = self.est.label[buses[has]]
    count = np.cumsum(order[row] < mm[:, None], axis=1)
    j0 = np.argmax(count > i0[:, None], axis=1)
    j1 = np.argmax(count > i1[:, None], axis=1)
    out[has] = sorted_f[row, j0] * (1.0 - w) + sorted_f[row, j1] * w
    return out


def _reference_available(self: pv.PvSystems, t: int) -> dict[str, FloatArray]:
    n = len(self.rating)
    avail = np.zeros(n)  # profiles are kept for the systems that follow one
    avail[self.profiled] = self.rating[self.profiled] * self.profile[:, t]
    poa, t_cell, clipped = np.zeros(n), np.full(n, np.nan), np.zeros(n)
    m = self.modelled
    if m.any() and self.weather is not None:
        g = self.weather.poa[self.orient[m], t, :]
        tc = pv.cell_temperature(g, self.weather.temp_air[t][None, :])
        pdc = pv.dc_power(g, tc, self.pdc0[m, None], self.gamma[m, None])
        free = pv.ac_unclipped(pdc, self.rating[m, None])
        pac = np.minimum(free, self.rating[m, None])
        avail[m] = pac.mean(axis=1)
        clipped[m] = (free - pac).mean(axis=1)
        poa[m], t_cell[m] = g.mean(axis=1), tc.mean(axis=1)
    q = np.where(self.volt_var, pv.volt_var(self.voltage), 0.0) * self.rating
    avail = np.minimum(avail, np.sqrt(np.maximum(self.rating**2 - q**2, 0.0)))
    return {
        "available_mw": avail,
        "clipped_mw": clipped,
        "irradiance_w_m2": poa,
        "cell_temp_c": t_cell,
        "q_mvar": q,
    }


def _reference_response(self: thermal.ThermalLoads, g: FloatArray) -> tuple[FloatArray, FloatArray]:
    a = np.exp(-g * self.dt_h / self.capacity)
    return a, self.sign * self.cop * -np.expm1(-g * self.dt_h / self.capacity) / g


def _reference_extreme(sums: group.BusSums, values: FloatArray, *, largest: bool) -> FloatArray:
    return group.per_bus_extreme(sums.bus, values, sums.n_bus, largest=largest)


def _use_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offers, "bus_price_order", _lexsort_order)
    monkeypatch.setattr(offers, "_bus_price_sort", _lexsort_sort)
    monkeypatch.setattr(offers, "_sort_kept", _lexsort_kept)
    monkeypatch.setattr(offers, "_curves_and_runs", _reference_curves_and_runs)
    monkeypatch.setattr(offers, "fill", _reference_fill)
    monkeypatch.setattr(prices, "order_stat", _reference_order_stat)
    monkeypatch.setattr(prices.Outlook, "order_stat_ahead", _reference_order_stat_ahead)
    monkeypatch.setattr(pv.PvSystems, "_available", _reference_available)
    monkeypatch.setattr(thermal.ThermalLoads, "_response", _reference_response)
    monkeypatch.setattr(group.BusSums, "extreme", _reference_extreme)
    # the battery module imported order_stat by name
    from dsosim.federates.aggregator import battery

    monkeypatch.setattr(battery, "order_stat", _reference_order_stat)


# ------------------------------------------------------------------ fleet


def _mixed_fleet() -> Fleet:
    """Every device type at every bus, volt-var inverters, enough devices
    (about 3,000 blocks per interval at most buses) for the fast block
    order to be used rather than its small-input fallback."""
    buses = [f"bus{i}" for i in range(7)]
    mix = HomeMix(pv=0.5, battery=0.3, ev=0.4, v2g=0.5, hvac=0.6, water_heater=0.4, volt_var=0.3)
    got = home_devices(dict.fromkeys(buses, 300), mix, SITE, np.random.default_rng(8))
    spec = FleetSpec(
        batteries=tuple(got.batteries),
        pvs=tuple(got.pvs),
        evs=tuple(got.evs),
        hvacs=tuple(got.hvacs),
        water_heaters=tuple(got.water_heaters),
        inflexible_loads=tuple(InflexibleLoadSpec(b, 0.01) for b in buses),
        flex_loads=tuple(FlexLoadSpec(b, 0.01, value_per_mwh=70.0) for b in buses[::2]),
        shiftable_loads=tuple(ShiftableLoadSpec(b, 0.01, 0.003, 22.0, 6.0) for b in buses[1::2]),
        price_prior=tuple(20.0 + 15.0 * np.sin(np.arange(24) / 24 * 2 * np.pi - 2.0)),
        site=SITE,
        sky=SKY,
    )
    return Fleet(spec, interval_s=300.0, n_intervals=DAY, seed=5)


def _day_digest() -> tuple[str, int]:
    """SHA-256 over every curve, device plan and dispatch outcome of a day,
    with per-bus prices, a published window, voltages and an unavailable
    device along the way; and the most blocks seen in one interval."""
    fleet = _mixed_fleet()
    h = hashlib.sha256()
    rng = np.random.default_rng(2)
    most = 0

    def feed(values: object) -> None:
        h.update(np.ascontiguousarray(np.asarray(values, dtype=float)).tobytes())

    fleet.set_available(3, False)
    for t in range(DAY):
        if t == 60:
            fleet.publish_prices(120, (40.0 + 10.0 * np.sin(np.arange(48) / 6.0)).tolist())
        if t == 100:
            fleet.set_voltages({b: 1.0 + 0.012 * i for i, b in enumerate(fleet.buses)})
        if t == 150:
            fleet.set_available(3, True)
        offer = fleet._offer(t)
        most = max(most, len(offer.blk_mw))
        bids = fleet.bids(t)
        for c in bids.values():
            feed([c.base_mw, *(x for block in c.blocks for x in block)])
        price = 30.0 + 20.0 * np.sin(2 * np.pi * t / DAY) + rng.normal(0.0, 5.0)
        pick = t % 4
        setpoints = {
            b: (
                c.quantity_at(price)
                if pick == 0
                else c.min_mw
                if pick == 1
                else c.max_mw
                if pick == 2
                else c.base_mw + 0.5 * (c.max_mw - c.base_mw)
            )
            for b, c in bids.items()
        }
        feed(fleet.plan(t, setpoints))
        out = fleet.dispatch(
            t, setpoints, {b: float(price + 0.3 * i) for i, b in enumerate(fleet.buses)}
        )
        for name in ("target_mw", "actual_mw", "baseline_mw", "expected_price"):
            feed(getattr(out, name))
        feed(out.forecast_low)
        feed(out.forecast_high)
        for kind in sorted(out.by_type):
            o = out.by_type[kind]
            for arr in (o.baseline_mw, o.min_mw, o.max_mw, o.dispatched_mw, o.actual_mw):
                feed(arr)
            for name in sorted(o.state):
                feed(o.state[name])
    return h.hexdigest(), most


def test_the_fast_path_gives_the_reference_paths_bits_over_a_day(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(group, "SPARSE_FROM", 0)  # per-bus sums by sparse matrix
    fast, most = _day_digest()
    assert most > 4096  # the fast block order ran (smaller inputs use lexsort)
    _use_references(monkeypatch)
    monkeypatch.setattr(group, "SPARSE_FROM", 10**12)  # np.bincount
    assert offers.bus_price_order is _lexsort_order  # the references are in place
    reference, _ = _day_digest()
    assert fast == reference


@pytest.mark.parametrize("sparse", [False, True])
def test_pooling_gives_the_reference_bits_whichever_buses_are_pooled(sparse: bool) -> None:
    """Buses with more distinct prices than ``max_blocks`` (banded), fewer
    (every price its own block), and both at once, with ties, some buses
    without blocks; per-bus values repeated over the blocks, and applied bus
    by bus to slices (``sparse``: a utility-scale fleet)."""
    rng = np.random.default_rng(3)
    cases = ([40, 300, 7, 0, 90], [5, 9, 3], [200, 400, 100], [3000, 0, 2500, 0, 0], [0, 5000, 10])
    for sizes in cases:  # the last two sort by integer keys (4,096 blocks or more)
        bus = np.repeat(np.arange(len(sizes)), sizes)
        price = np.round(rng.uniform(-20.0, 60.0, len(bus)), 1)
        mw = rng.uniform(1e-6, 0.01, len(bus))
        order, price, per_bus = offers._bus_price_sort(bus, price, len(sizes))
        mw = mw[order]
        assert per_bus.tolist() == sizes
        got = offers._curves_and_runs(bus, price, mw, per_bus, 16, sparse)
        want = _reference_curves_and_runs(bus, price, mw, per_bus, 16, sparse)
        for a, b in zip(got[:3], want[:3], strict=True):
            assert a.tobytes() == b.tobytes()
        for name in ("length", "bus", "mw", "before"):
            assert getattr(got[3], name).tobytes() == getattr(want[3], name).tobytes()


def test_block_order_resolves_prices_closer_than_its_key_keeps() -> None:
    """Prices a few ulps apart share the key's price bits; the order is
    still lexsort's (runs re-sorted exactly)."""
    rng = np.random.default_rng(11)
    n = 20000
    bus = rng.integers(0, 5, n).astype(np.intp)
    price = 12.5 + rng.integers(-3, 4, n) * np.spacing(12.5)
    price[::7] = rng.uniform(-10.0, 50.0, len(price[::7]))
    price[::11] = -0.0
    assert np.array_equal(offers.bus_price_order(bus, price), np.lexsort((-price, bus)))
    # more buses than the key can hold next to the index: the plain lexsort
    wide = rng.integers(0, 2**40, n).astype(np.intp)
    assert np.array_equal(offers.bus_price_order(wide, price), np.lexsort((-price, wide)))


def test_near_tie_runs_resort_alike_by_integer_keys_and_by_lexsort(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The near-tie runs re-sorted by one integer sort, and by the lexsort
    it falls back to (forced here), both give lexsort's order."""
    rng = np.random.default_rng(13)
    n = 40000
    bus = rng.integers(0, 9, n).astype(np.intp)
    price = rng.choice([12.5, -3.25, 40.0], n) + rng.integers(-40, 41, n) * np.spacing(40.0)
    price[::17] = -0.0
    price[::19] = 0.0
    want = np.lexsort((-price, bus))
    calls: list[bool] = []
    real = offers._fix_near_ties

    def spy(*args: object, force_lexsort: bool = False) -> None:
        calls.append(force_lexsort)
        bits = None if force_lexsort else args[5]
        real(*args[:5], bits)  # type: ignore[arg-type]

    monkeypatch.setattr(offers, "_fix_near_ties", spy)
    assert np.array_equal(offers.bus_price_order(bus, price), want)
    monkeypatch.setattr(offers, "_fix_near_ties", lambda *a: spy(*a, force_lexsort=True))
    assert np.array_equal(offers.bus_price_order(bus, price), want)
    assert calls == [False, True]  # both runs had near ties to re-sort


def test_kept_blocks_sort_as_lexsort_with_near_ties_and_empty_buses() -> None:
    """The fleet's block order from keys tagged with each block's own index
    (only the blocks kept, some buses without any) is lexsort's, prices a few
    ulps apart and signed zeros included."""
    rng = np.random.default_rng(12)
    n = 30000
    bus = rng.integers(0, 6, n).astype(np.intp)
    bus[bus == 4] = 5  # bus 4 offers nothing
    price = 12.5 + rng.integers(-3, 4, n) * np.spacing(12.5)
    price[::7] = rng.uniform(-10.0, 50.0, len(price[::7]))
    price[::11] = -0.0
    price[::13] = 0.0
    owner = np.arange(n, dtype=np.intp)
    groups = [group.GroupOffer(price, price, price, price, price, owner)]
    owners = offers.BlockOwners()
    owners.of(groups, bus)
    for kept in (np.arange(n), np.flatnonzero(rng.random(n) < 0.6), np.arange(0, n, 9)):
        got = offers._sort_kept(owners, kept, price, 7)
        want = _lexsort_kept(owners, kept, price, 7)
        for a, b in zip(got, want, strict=True):
            assert a.tobytes() == b.tobytes()
        assert got[2][4] == 0 and got[2][6] == 0


def test_a_utility_scale_fleet_is_told_apart_and_glibc_keeps_its_freed_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fleets from ``SPARSE_FROM`` devices are ``large`` (sparse per-bus
    sums; their federate keeps freed memory); glibc accepts the settings."""
    assert not _mixed_fleet().large
    monkeypatch.setattr(group, "SPARSE_FROM", 100)
    fleet = _mixed_fleet()
    assert fleet.large and fleet._bus_sums._matrix is not None
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert heap.keep_freed_memory() is glibc


@pytest.mark.parametrize("sparse", [False, True])
def test_per_bus_sums_and_extremes_give_bincounts_and_ufunc_ats_bits(sparse: bool) -> None:
    """Per-bus sums (the sparse product called without scipy's wrapper) are
    ``np.bincount``'s bits, sorted or not, some buses without devices; per-bus
    extremes are ``per_bus_extreme``'s with NaN, infinities and signed zeros;
    per-bus counts are ``np.bincount``'s."""
    rng = np.random.default_rng(21)
    for ordered in (True, False):
        bus = rng.integers(0, 6, 5000).astype(np.intp)
        bus[bus == 2] = 3  # bus 2 has no device
        if ordered:
            bus.sort()
        sums = group.BusSums(bus, 7, sparse=sparse)
        values = rng.normal(0.0, 1e3, len(bus)) * rng.random(len(bus)) ** 9
        for v in (values, values[::-1], values.astype(np.float32)):
            want = np.bincount(bus, v, minlength=7)
            assert sums.sum(v).tobytes() == want.tobytes()
        temp = rng.normal(22.0, 3.0, len(bus))
        cases = [temp, np.where(bus == 3, -0.0, temp), temp.copy(), temp.copy()]
        cases[2][[5, 900]] = np.nan
        cases[3][bus == 5] = np.inf
        for v in cases:
            for largest in (False, True):
                with np.errstate(invalid="ignore"):  # NaN
                    got = sums.extreme(v, largest=largest)
                    want = group.per_bus_extreme(bus, v, 7, largest=largest)
                assert got.tobytes() == want.tobytes()
        fixed = values.copy()
        fixed.flags.writeable = False
        first = sums.sum_fixed(fixed)
        first[:] = 0.0  # a copy: the kept sums stay
        assert sums.sum_fixed(fixed).tobytes() == np.bincount(bus, fixed, minlength=7).tobytes()
        changing = values.copy()
        for _ in range(2):  # writeable: summed anew
            assert sums.sum_fixed(changing).tobytes() == sums.sum(changing).tobytes()
            changing *= 2.0
        for mask in (values > 0.0, np.zeros(len(bus), bool), np.ones(len(bus), bool)):
            want_count = np.bincount(bus[mask], minlength=7)
            assert sums.count_true(mask).tolist() == want_count.tolist()
            assert sums.count_true(mask).dtype == np.int64
        with pytest.raises(ValueError):
            group.BusSums(bus, 7, sparse=True).sum(values[:-1])
    # the second call reuses the buffers the first kept, the third grows them
    for per_bus in ([0, 3000, 0, 2500, 1], [0, 1500, 0, 1250, 0], [7000, 0, 1]):
        values = rng.random(sum(per_bus)) ** 7
        bus = np.repeat(np.arange(len(per_bus)), per_bus)
        got = group.sorted_bus_sums(values, np.array(per_bus))
        assert got.tobytes() == np.bincount(bus, values, minlength=len(per_bus)).tobytes()


def test_price_windows_copy_what_indexing_gives_in_its_layout() -> None:
    """``PriceEstimate.window`` (slices) gives ``rows[:, intervals % slots]``
    bit for bit and in the same column-major layout, so a mean along a row
    adds in the same order (a row-major copy sums pairwise: other bits)."""
    est = prices.PriceEstimate(3, np.arange(288.0), 0.1)
    for n_rows in (1, 3, 25):
        est._rows = np.random.default_rng(n_rows).normal(30.0, 9.0, (n_rows, 288))
        for first in (0, 5, 287, 288, 1000):
            for n in (1, 12, 283, 288, 289, 600):
                got, want = est.window(first, n), est.rows[:, (first + np.arange(n)) % 288]
                assert got.strides == want.strides
                assert got.tobytes(order="A") == want.tobytes(order="A")
                assert got.mean(axis=1).tobytes() == want.mean(axis=1).tobytes()


def test_an_ev_past_its_last_prepared_session_is_an_error() -> None:
    """EV sessions are read through flat indices; a car that leaves its last
    prepared session raises instead of reading the next car's first one."""
    from types import SimpleNamespace

    from dsosim.federates.aggregator.ev import Evs

    evs = _mixed_fleet().group("ev")
    assert isinstance(evs, Evs)
    last = evs.arrive.shape[1] - 1
    evs.sess[:] = last
    evs.plugged[:] = True
    t = int(evs.depart[0, last]) - 1  # the first car leaves at the end of t
    tick = SimpleNamespace(t=t)
    net = np.zeros(len(evs.bus))
    with pytest.raises(IndexError, match="past the last daily session"):
        evs.apply(tick, None, net)  # type: ignore[arg-type]
