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

import numpy as np

from dsosim.federates.common import ledger
from dsosim.federates.common.config import IsoConfig, TimeSettings
from dsosim.federates.common.curves import PlacedCurve
from dsosim.federates.common.parties import ISO, BidKey, Party, Role
from dsosim.federates.common.profiles import wholesale_load
from dsosim.federates.common.tables import Rows, Tables
from dsosim.federates.iso.case import load_case
from dsosim.federates.iso.dcopf import BusCurve, DcOpf, congestion_rent
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


IsoBid = PlacedCurve[BidKey]
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
            self.profile = wholesale_load(time.n_intervals, time.interval_s)
        self._schedules: dict[tuple[int, BidKey], tuple[float, float]] = {}

    def fixed_load(self, interval: int) -> np.ndarray:
        factor = self.events.at(interval).load_factor
        return self.case.bus_pd_mw * self.config.load_scale * self.profile[interval] * factor

    def _opf_for(self, outages: frozenset[int]) -> DcOpf:
        """The market model with these generators out (built on first use)."""
        if outages not in self._opfs:
            self._opfs[outages] = DcOpf(without(self.case, outages))
        return self._opfs[outages]

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
            pay.append(
                ledger.Payment(k, "iso", bid.at.party, ISO, "energy", line.cleared_mw, line.lmp, h)
            )
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
        for i, bus in enumerate(self.case.bus_ids):
            if served[i] != 0.0:
                pay.append(
                    ledger.Payment(
                        k,
                        "iso",
                        Party.load(int(bus)),
                        ISO,
                        "energy",
                        float(served[i]),
                        float(lmp[i]),
                        h,
                    )
                )
        gen_rows: Rows = []
        for g, (bus, mw) in enumerate(zip(self.case.gen_bus, res.gen_mw, strict=True)):
            gen_rows.append((k, g, int(bus), float(mw)))
            if mw != 0.0:
                pay.append(
                    ledger.Payment(
                        k,
                        "iso",
                        ISO,
                        Party.gen(g),
                        "energy",
                        float(mw),
                        float(lmp[self.bus_index[int(bus)]]),
                        h,
                    )
                )
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
        out.tables["iso"] = (
            ISO_COLUMNS,
            [
                (
                    k,
                    h,
                    res.status,
                    float(res.total_cost) * h,
                    float(congestion_rent(res)) * h,
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
