"""The ISO's role: a real-time wholesale market over a transmission case.

Plain Python (no HELICS): each interval it takes the net-demand curves bid
at T-D buses, adds the case's fixed loads shaped by a daily profile, clears
the DC-OPF (``dcopf``), and produces the awards, the result rows and the
settlement ledger. Imbalance at T-D buses (metered flow minus schedule) is
settled at the LMP of the interval it happened in, once the meter arrives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np

from dsosim.federates.common import ledger
from dsosim.federates.common.config import IsoConfig, TimeSettings
from dsosim.federates.common.curves import BidCurve, PlacedCurve
from dsosim.federates.common.parties import ISO, BidKey, Party, Role
from dsosim.federates.common.profiles import wholesale_load
from dsosim.federates.common.tables import Rows, Tables
from dsosim.federates.iso.case import load_case
from dsosim.federates.iso.dayahead import DayAheadMarket, DayAheadResult
from dsosim.federates.iso.dcopf import BusCurve, DcOpf, OpfResult, congestion_rent
from dsosim.federates.iso.events import EventError, EventSchedule, without

MARKET_COLUMNS = (
    "interval",
    "bus",
    "lmp",
    "lmp_energy",
    "lmp_congestion",
    "fixed_load_mw",
    "shed_mw",
)
GEN_COLUMNS = ("interval", "gen", "bus", "mw")
ISO_COLUMNS = (
    "interval",
    "hours",
    "status",
    "generation_cost",
    "congestion_rent",
    "shed_mw",
    "fixed_load_mw",
    "bids",
    "binding_lines",
    "events",
)
INTERFACE_COLUMNS = (
    "interval",
    "hours",
    "dso",
    "td_bus",
    "lmp",
    "lmp_energy",
    "lmp_congestion",
    "cleared_mw",
    "bid_min_mw",
    "bid_max_mw",
    "bids",
)
AWARD_COLUMNS = (
    "interval",
    "key",
    "party",
    "dso",
    "td_bus",
    "lmp",
    "cleared_mw",
    "bid_min_mw",
    "bid_max_mw",
)
IMBALANCE_COLUMNS = (
    "interval",
    "hours",
    "dso",
    "td_bus",
    "scheduled_mw",
    "actual_mw",
    "imbalance_mw",
    "price",
)


DA_MARKET_COLUMNS = (
    "interval",
    "day",
    "period",
    "bus",
    "lmp",
    "lmp_energy",
    "lmp_congestion",
    "forecast_load_mw",
)
DA_AWARD_COLUMNS = ("interval", "day", "period", "dso", "party", "td_bus", "lmp", "cleared_mw")
DA_ISO_COLUMNS = (
    "interval",
    "day",
    "status",
    "generation_cost",
    "congestion_rent",
    "forecast_load_mwh",
)
"""No solve time: results are byte-identical across reruns (``dsosim bench da`` times it)."""


@dataclass(frozen=True)
class DaySchedule:
    """A cleared day: per period, the awards per bid key, the dispatch, the
    fixed load as forecast and served, the prices and flows."""

    result: DayAheadResult
    awards: dict[BidKey, np.ndarray]  # per key, MW per period
    served: np.ndarray  # (periods, buses): withdrawal other than the bids
    forecast_load_mw: np.ndarray  # (periods,): the case's fixed load as forecast, MW


IsoBid: TypeAlias = PlacedCurve[BidKey]
"""One curve the ISO clears at a T-D bus: ``at`` is its key, whose it is (the
party that settles it) and at which LDA's interface."""


@dataclass(frozen=True)
class AwardLine:
    """What the ISO cleared for one bid."""

    td_bus: int
    lmp: float
    lmp_energy: float
    lmp_congestion: float
    cleared_mw: float


@dataclass
class Clearing:
    """What one interval's clearing produced."""

    status: str
    awards: dict[BidKey, AwardLine]
    tables: Tables = field(default_factory=dict)


class WholesaleMarket:
    """DC-OPF market clearing with T-D interfaces (one per DSO)."""

    def __init__(self, config: IsoConfig, time: TimeSettings, *, seed: int) -> None:
        self.config = config
        self.hours = time.interval_s / 3600.0
        case = load_case(config.case)
        self.case = case.with_rating_cap(config.line_limit_mw) if config.line_limit_mw else case
        self.opf = DcOpf(self.case)
        try:
            self.events = EventSchedule(self.case, config.events, time.interval_s)
        except EventError as exc:
            raise ValueError(f"ISO {config.name!r}: {exc}") from None
        self._opfs: dict[frozenset[int], DcOpf] = {frozenset(): self.opf}
        self.bus_index = {int(b): i for i, b in enumerate(self.case.bus_ids)}
        # the settlement parties of the case's loads and generators, made once
        self._load_party = [Party.load(int(b)) for b in self.case.bus_ids]
        self._gen_party = [Party.gen(g) for g in range(self.case.n_gen)]
        for iface in config.interfaces:
            if iface.td_bus not in self.bus_index:
                raise ValueError(
                    f"T-D bus {iface.td_bus} of {iface.dso!r} is not a bus of case {config.case!r} "
                    f"(buses: {min(self.bus_index)}..{max(self.bus_index)})"
                )
        self.interfaces = {i.dso: i.td_bus for i in config.interfaces}
        if config.load_profile == "flat":
            self.profile = np.ones(time.n_intervals)
        else:
            self.profile = wholesale_load(time.n_intervals, time.interval_s, start_s=time.start_s)
        self._schedules: dict[tuple[int, BidKey], tuple[float, float]] = {}
        self.seed = seed
        self.per_day = time.intervals_per_day
        self.da: DayAheadMarket | None = None
        self.days: dict[int, DaySchedule] = {}
        da = config.day_ahead
        if da is not None:
            periods = round(1440.0 / da.period_minutes)
            self.per_period = round(da.period_minutes * 60.0 / time.interval_s)
            self.da = DayAheadMarket(
                self.case,
                periods=periods,
                period_h=da.period_minutes / 60.0,
                segments=da.segments,
                default_ramp_pu_per_h=da.ramp_pu_per_h,
            )
            # whole days of profile, the last day included
            n_days = -(-time.n_intervals // self.per_day)
            if config.load_profile != "flat":
                self.profile = wholesale_load(n_days * self.per_day, time.interval_s)
            else:
                self.profile = np.ones(n_days * self.per_day)

    def fixed_load(self, interval: int) -> np.ndarray:
        factor = self.events.at(interval).load_factor
        return self.case.bus_pd_mw * self.config.load_scale * self.profile[interval] * factor

    def _opf_for(self, outages: frozenset[int]) -> DcOpf:
        """The market model with these generators out (built on first use)."""
        if outages not in self._opfs:
            self._opfs[outages] = DcOpf(without(self.case, outages))
        return self._opfs[outages]

    # ------------------------------------------------------------ day ahead

    def forecast_load(self, day: int) -> np.ndarray:
        """The ISO's day-ahead forecast of the case's fixed loads, (periods,
        buses): each period's mean profile with a seeded relative error."""
        assert self.da is not None and self.config.day_ahead is not None
        first = day * self.per_day
        shape = self.profile[first : first + self.per_day].reshape(self.da.periods, -1).mean(1)
        rng = np.random.default_rng([self.seed, 7919, day])
        error = rng.normal(0.0, self.config.day_ahead.load_forecast_error, self.da.periods)
        factor = shape * (1.0 + error)
        return np.outer(factor, self.case.bus_pd_mw * self.config.load_scale)

    def clear_day_ahead(
        self, day: int, bids: Mapping[BidKey, Sequence[BidCurve]]
    ) -> dict[str, tuple[tuple[str, ...], Rows]]:
        """Clear the day-ahead market of ``day``: one curve per period from
        each bid key (at its LDA's T-D bus) beside the forecast fixed loads.
        The schedules then settle every interval of the day (see :meth:`clear`)."""
        assert self.da is not None
        keys = sorted(bids)
        unknown = sorted({k.lda for k in keys} - set(self.interfaces))
        if unknown:
            raise ValueError(f"day {day}: day-ahead bids for unknown LDAs {unknown}")
        for key in keys:
            if len(bids[key]) != self.da.periods:
                raise ValueError(
                    f"day {day}: {key} bid {len(bids[key])} periods, expected {self.da.periods}"
                )
        per_period = [
            [BusCurve(self.interfaces[k.lda], bids[k][p], owner=str(k)) for k in keys]
            for p in range(self.da.periods)
        ]
        load = self.forecast_load(day)
        initial = None
        if day - 1 in self.days:
            initial = self.days[day - 1].result.periods[-1].gen_mw
        result = self.da.clear(load, per_period, initial_mw=initial)
        if result.status == "failed":
            raise RuntimeError(f"day {day}: the day-ahead market failed: {result.message}")
        awards = {
            k: np.array([result.periods[p].curve_mw[j] for p in range(self.da.periods)])
            for j, k in enumerate(keys)
        }
        served = np.stack([period.withdrawal_mw for period in result.periods])
        for k, mw in awards.items():
            served[:, self.bus_index[self.interfaces[k.lda]]] -= mw
        self.days[day] = DaySchedule(result, awards, served, load.sum(axis=1))
        self.days.pop(day - 2, None)
        return self._day_ahead_tables(day, result, awards, load)

    def _day_ahead_tables(
        self,
        day: int,
        result: DayAheadResult,
        awards: Mapping[BidKey, np.ndarray],
        load: np.ndarray,
    ) -> dict[str, tuple[tuple[str, ...], Rows]]:
        k = day * self.per_day
        market: Rows = []
        for p, period in enumerate(result.periods):
            for i, b in enumerate(self.case.bus_ids):
                market.append(
                    (
                        k,
                        day,
                        p,
                        int(b),
                        float(period.lmp[i]),
                        float(period.lmp_energy[i]),
                        float(period.lmp_congestion[i]),
                        float(load[p, i]),
                    )
                )
        award_rows: Rows = []
        for key, mw in sorted(awards.items()):
            bus = self.interfaces[key.lda]
            for p in range(len(mw)):
                lmp = float(result.periods[p].lmp[self.bus_index[bus]])
                award_rows.append((k, day, p, key.lda, str(key.party), bus, lmp, float(mw[p])))
        h = result.period_h
        rent = sum(congestion_rent(period) for period in result.periods) * h
        iso_row = (
            k,
            day,
            result.status,
            float(result.total_cost),
            float(rent),
            float(load.sum() * h),
        )
        return {
            "day_ahead": (DA_MARKET_COLUMNS, market),
            "day_ahead_awards": (DA_AWARD_COLUMNS, award_rows),
            "day_ahead_iso": (DA_ISO_COLUMNS, [iso_row]),
        }

    def day_ahead_of(self, interval: int) -> tuple[DaySchedule, int] | None:
        """The day schedule covering ``interval`` and its period, if any."""
        if self.da is None:
            return None
        day = self.days.get(interval // self.per_day)
        if day is None:
            return None
        return day, (interval % self.per_day) // self.per_period

    def day_ahead_prices(self, day: int, lda: str) -> tuple[float, ...]:
        """The day-ahead LMP of each period of ``day`` at the LDA's T-D bus."""
        result = self.days[day].result
        i = self.bus_index[self.interfaces[lda]]
        return tuple(float(period.lmp[i]) for period in result.periods)

    def da_position(self, interval: int, lda: str) -> tuple[float, float]:
        """(MW, $/MWh): the LDA's day-ahead schedule for ``interval``'s period
        and its day-ahead LMP; (0, 0) without a day-ahead market."""
        found = self.day_ahead_of(interval)
        if found is None:
            return 0.0, 0.0
        day, p = found
        mw = sum(float(a[p]) for key, a in day.awards.items() if key.lda == lda)
        lmp = float(day.result.periods[p].lmp[self.bus_index[self.interfaces[lda]]])
        return mw, lmp

    def _settle(
        self,
        pay: list[ledger.Payment],
        k: int,
        payer: Party,
        payee: Party,
        mw: float,
        lmp: float,
        da: tuple[float, float] | None,
    ) -> None:
        """``mw`` at ``lmp``; with a day-ahead schedule ``da = (MW, price)``
        (MW in the payer-to-payee direction), the schedule at its day-ahead
        price and only the deviation at ``lmp`` (two settlements)."""
        h = self.hours
        if da is not None and da[0] != 0.0:
            pay.append(ledger.Payment(k, "iso", payer, payee, "day_ahead", da[0], da[1], h))
            mw -= da[0]
        if mw != 0.0:
            pay.append(ledger.Payment(k, "iso", payer, payee, "energy", mw, lmp, h))

    def _da_bid(self, day: DaySchedule | None, p: int, key: BidKey) -> tuple[float, float] | None:
        if day is None or key not in day.awards:
            return None
        bus = self.bus_index[self.interfaces[key.lda]]
        return float(day.awards[key][p]), float(day.result.periods[p].lmp[bus])

    @staticmethod
    def _retained(res: OpfResult, day: DaySchedule | None, p: int) -> float:
        """What the ISO keeps per hour: the congestion rent; with two
        settlements, the period's day-ahead rent plus the real-time flows'
        departure from the day-ahead flows valued at real-time price differences."""
        retained = float(congestion_rent(res))
        if day is None:
            return retained
        period = day.result.periods[p]
        case = period.case
        on = case.branch_status
        diff = res.lmp[case.branch_to_idx[on]] - res.lmp[case.branch_from_idx[on]]
        return (
            retained
            + float(congestion_rent(period))
            - float(np.sum(period.branch_flow_mw[on] * diff))
        )

    def clear(self, interval: int, bids: Sequence[IsoBid]) -> Clearing:
        """Clear one interval: every bid at its LDA's T-D bus, beside the
        case's fixed loads. Each LDA must have at least one bid."""
        missing = sorted(set(self.interfaces) - {b.at.lda for b in bids})
        if missing:
            raise ValueError(f"interval {interval}: no bid from {missing}")
        unknown = sorted({b.at.lda for b in bids} - set(self.interfaces))
        if unknown:
            raise ValueError(f"interval {interval}: bids for unknown LDAs {unknown}")
        bids = sorted(bids, key=lambda b: b.at)
        curves = [BusCurve(self.interfaces[b.at.lda], b.curve, owner=str(b.at)) for b in bids]
        now = self.events.at(interval)
        supply = [BusCurve(bus, c, owner=name) for name, bus, c in now.supply]
        fixed = self.fixed_load(interval)
        res = self._opf_for(now.outages).clear(fixed, curves + supply)
        lmp = res.lmp
        out = Clearing(status=res.status, awards={})
        k, h = interval, self.hours
        found = self.day_ahead_of(k)
        day, p = found if found is not None else (None, 0)
        pay: list[ledger.Payment] = []
        award_rows: Rows = []
        for bid, curve, cleared in zip(bids, curves, res.curve_mw[: len(curves)], strict=True):
            i = self.bus_index[curve.at]
            line = AwardLine(
                curve.at,
                float(lmp[i]),
                float(res.lmp_energy[i]),
                float(res.lmp_congestion[i]),
                float(cleared),
            )
            out.awards[bid.at] = line
            self._schedules[(k, bid.at)] = (line.cleared_mw, line.lmp)
            award_rows.append(
                (
                    k,
                    str(bid.at),
                    str(bid.at.party),
                    bid.at.lda,
                    curve.at,
                    line.lmp,
                    line.cleared_mw,
                    bid.curve.min_mw,
                    bid.curve.max_mw,
                )
            )
            da_bid = self._da_bid(day, p, bid.at)
            self._settle(pay, k, bid.at.party, ISO, line.cleared_mw, line.lmp, da_bid)
        iface_rows: Rows = []
        for lda, bus in sorted(self.interfaces.items()):
            i = self.bus_index[bus]
            mine = [r for r in award_rows if r[3] == lda]
            iface_rows.append(
                (
                    k,
                    h,
                    lda,
                    bus,
                    float(lmp[i]),
                    float(res.lmp_energy[i]),
                    float(res.lmp_congestion[i]),
                    sum(r[6] for r in mine),
                    sum(r[7] for r in mine),
                    sum(r[8] for r in mine),
                    len(mine),
                )
            )
        # Everything withdrawn at a bus except the bids: fixed load net of
        # shedding, shunts, spilled surplus. Charged at the LMP like any load.
        served = res.withdrawal_mw.copy()
        for curve, cleared in zip(curves + supply, res.curve_mw, strict=True):
            served[self.bus_index[curve.at]] -= cleared
        for curve, cleared in zip(supply, res.curve_mw[len(curves) :], strict=True):
            if cleared != 0.0:  # an event's supply is paid the LMP like a generator
                pay.append(
                    ledger.Payment(
                        k,
                        "iso",
                        ISO,
                        Party(Role.GEN, f"event-{curve.owner}"),
                        "energy",
                        -float(cleared),
                        float(lmp[self.bus_index[curve.at]]),
                        h,
                    )
                )
        for i in range(self.case.n_bus):
            da_load = (
                (float(day.served[p, i]), float(day.result.periods[p].lmp[i]))
                if day is not None
                else None
            )
            if served[i] != 0.0 or da_load is not None:
                self._settle(
                    pay, k, self._load_party[i], ISO, float(served[i]), float(lmp[i]), da_load
                )
        gen_rows: Rows = []
        for g, (bus, mw) in enumerate(zip(self.case.gen_bus, res.gen_mw, strict=True)):
            gen_rows.append((k, g, int(bus), float(mw)))
            at_bus = self.bus_index[int(bus)]
            da_gen = (
                (float(day.result.periods[p].gen_mw[g]), float(day.result.periods[p].lmp[at_bus]))
                if day is not None
                else None
            )
            if mw != 0.0 or da_gen is not None:
                self._settle(pay, k, ISO, self._gen_party[g], float(mw), float(lmp[at_bus]), da_gen)
        out.tables["market"] = (
            MARKET_COLUMNS,
            [
                (
                    k,
                    int(b),
                    float(lmp[i]),
                    float(res.lmp_energy[i]),
                    float(res.lmp_congestion[i]),
                    float(fixed[i]),
                    float(res.shed_mw[i]),
                )
                for i, b in enumerate(self.case.bus_ids)
            ],
        )
        out.tables["generators"] = (GEN_COLUMNS, gen_rows)
        out.tables["interface"] = (INTERFACE_COLUMNS, iface_rows)
        out.tables["awards"] = (AWARD_COLUMNS, award_rows)
        # what the ISO keeps: the congestion rent; with two settlements, the
        # day-ahead rent of the period plus the real-time flows' deviation from
        # the day-ahead flows valued at real-time price differences
        retained = self._retained(res, day, p)
        out.tables["iso"] = (
            ISO_COLUMNS,
            [
                (
                    k,
                    h,
                    res.status,
                    float(res.total_cost) * h,
                    retained * h,
                    float(res.shed_mw.sum()),
                    float(fixed.sum()),
                    len(curves),
                    len(res.binding),
                    ",".join(now.names),
                )
            ],
        )
        out.tables["settlements"] = (ledger.COLUMNS, [p.row() for p in pay])
        return out

    def settle_imbalance(
        self,
        interval: int,
        metered: Mapping[str, tuple[float, Mapping[Party, float]]],
        holders: Mapping[str, Party],
    ) -> Tables:
        """Settle each LDA's metered T-D flow against its schedules, at that
        interval's LMP. ``metered[lda] = (flow_mw, allocation)``: the meter
        operator names parties responsible for part of the deviation (e.g.
        aggregators off their set-points); the rest is charged to the LDA's
        schedule holder ``holders[lda]``."""
        rows: Rows = []
        pay: list[ledger.Payment] = []
        schedules = {
            key: self._schedules.pop((k, key))
            for (k, key) in list(self._schedules)
            if k == interval
        }
        for lda in sorted(self.interfaces):
            if lda not in metered:
                raise ValueError(f"interval {interval}: no meter reading from {lda!r}")
            mine = [schedules[key] for key in sorted(schedules) if key.lda == lda]
            scheduled = sum(mw for mw, _ in mine)
            price = mine[0][1] if mine else 0.0
            actual, allocation = metered[lda]
            deviation = actual - scheduled
            rows.append(
                (
                    interval,
                    self.hours,
                    lda,
                    self.interfaces[lda],
                    scheduled,
                    actual,
                    deviation,
                    price,
                )
            )
            remainder = deviation
            for party, mw in sorted(allocation.items()):
                pay.append(
                    ledger.Payment(interval, "iso", party, ISO, "imbalance", mw, price, self.hours)
                )
                remainder -= mw
            pay.append(
                ledger.Payment(
                    interval, "iso", holders[lda], ISO, "imbalance", remainder, price, self.hours
                )
            )
        return {
            "imbalance": (IMBALANCE_COLUMNS, rows),
            "settlements": (ledger.COLUMNS, [p.row() for p in pay]),
        }
