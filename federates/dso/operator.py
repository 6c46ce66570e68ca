"""The DSO's role in the layered (total DSO) model: grid operator, DMO and DERM
of one local distribution area, in plain Python (no HELICS).

Per interval it

1. **aggregates**: sets the feeder to the interval's *forecast* load with the
   DERs at their last measured output, solves OpenDSS, linearises the feeder
   there and turns all aggregator bids into ONE feeder-constrained curve at
   the feeder head (``lda_market.aggregate_interface_bid``), multiplied by the
   LDA's ``scale`` for the T-D interface;
2. **dispatches**: divides the ISO's award by ``scale`` and clears the LDA
   market (``lda_market.clear_lda``): set-points and DLMPs per DER location;
3. **measures**: sets the *actual* load (forecast times a seeded error) and
   the DERs' actual response, solves OpenDSS, and reports voltages, loadings,
   losses, violations and the T-D flow against the ISO schedule (imbalance),
   and settles the LDA.

``scale``: the modelled feeder stands for ``scale`` similar feeders under the
same T-D substation. Everything at the T-D interface (bid, award, metered
flow, money) is multiplied by it; feeder physics stay per feeder.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsosim.federates.common import ledger
from dsosim.federates.common.config import DsoConfig, TimeSettings
from dsosim.federates.common.curves import BidCurve
from dsosim.federates.common.profiles import commercial_load, residential_load
from dsosim.federates.dso.feeder import Feeder
from dsosim.federates.dso.lda_market import (
    LdaClearing,
    Limits,
    LocatedCurve,
    aggregate_interface_bid,
    clear_lda,
    fixed_head_mw,
)

Rows = list[tuple[object, ...]]
Tables = dict[str, tuple[tuple[str, ...], Rows]]

FEEDER_COLUMNS = ("interval", "hours", "dso", "scale", "converged", "head_mw", "td_flow_mw",
                  "scheduled_mw", "imbalance_mw", "losses_mw", "inflexible_mw", "der_mw", "vmin_pu",
                  "vmax_pu", "max_loading", "voltage_violations", "thermal_violations")
VOLTAGE_COLUMNS = ("interval", "dso", "node", "v_pu")
BRANCH_COLUMNS = ("interval", "dso", "branch", "loading")
DISPATCH_COLUMNS = ("interval", "dso", "aggregator", "location", "setpoint_mw", "actual_mw",
                    "deviation_mw", "dlmp", "dlmp_energy", "dlmp_loss", "dlmp_congestion")
BID_COLUMNS = ("interval", "bidder", "receiver", "location", "base_mw", "prices", "mws")


class LdaError(ValueError):
    """An aggregator's bid or measurement does not fit the LDA."""


@dataclass(frozen=True)
class Location:
    """One DER element on the feeder: an aggregator's fleet at one bus."""

    aggregator: str
    bus: str

    @property
    def element(self) -> str:
        return f"{self.aggregator}_{self.bus}".replace(".", "_")


class DistributionOperator:
    """Grid operator + DMO + DERM of one LDA (the layered/total-DSO model)."""

    def __init__(self, config: DsoConfig, fleets: Mapping[str, Sequence[str]], time: TimeSettings,
                 *, seed: int, base_dir: Path) -> None:
        self.config = config
        self.name = config.name
        self.hours = time.interval_s / 3600.0
        self.scale = config.scale
        self.limits = Limits(vmin_pu=config.limits.vmin_pu, vmax_pu=config.limits.vmax_pu,
                             max_loading=config.limits.max_loading)
        self.feeder = Feeder(base_dir / config.feeder, name=config.name,
                             vmin=config.limits.vmin_pu, vmax=config.limits.vmax_pu,
                             voltage_basis=config.voltage_basis)
        self.locations = [Location(a, b) for a in sorted(fleets) for b in sorted(fleets[a])]
        known = set(self.feeder.buses)
        for loc in self.locations:
            if loc.bus not in known:
                raise LdaError(f"aggregator {loc.aggregator!r} has DERs at bus {loc.bus!r}, "
                               f"which is not a bus of feeder {config.feeder}")
            self.feeder.attach_der(loc.element, loc.bus)
        self.index = {(loc.aggregator, loc.bus): i for i, loc in enumerate(self.locations)}
        n = time.n_intervals
        shapes = {"residential": residential_load, "commercial": commercial_load}
        self.profile = shapes[config.load_profile](n, time.interval_s) if config.load_profile in shapes \
            else np.ones(n)
        rng = np.random.default_rng([seed, zlib.crc32(config.name.encode())])
        self.load_error = rng.normal(0.0, config.load_forecast_error, n) if config.load_forecast_error \
            else np.zeros(n)
        self.der_mw = np.zeros(len(self.locations))  # last measured DER output (operating point)
        self._pending: dict[str, object] = {}

    # ------------------------------------------------------------ 1. bids
    def interface_bid(self, interval: int, fleet_bids: Mapping[str, Mapping[str, BidCurve]]) -> tuple[BidCurve, Tables]:
        """The LDA's scaled curve at the T-D bus, from every aggregator's bids."""
        curves = self._located(fleet_bids)
        self.feeder.set_load_multipliers(self.profile[interval])
        self.feeder.set_der_mw(self.der_mw)
        state = self.feeder.solve()
        sens = self.feeder.sensitivities()
        fixed = fixed_head_mw(state)
        feeder_curve = aggregate_interface_bid(curves, state, sens, fixed, self.limits)
        self._pending = {"curves": curves, "state": state, "sens": sens, "fixed": fixed}
        td_curve = feeder_curve.scaled(self.scale)
        rows = [(interval, c.owner, self.name, self.locations[self._der_index(c)].bus, c.curve.base_mw,
                 [p for p, _ in c.curve.blocks], [q for _, q in c.curve.blocks]) for c in curves]
        rows.append((interval, self.name, "iso", "td", td_curve.base_mw,
                     [p for p, _ in td_curve.blocks], [q for _, q in td_curve.blocks]))
        return td_curve, {"bids": (BID_COLUMNS, rows)}

    def _located(self, fleet_bids: Mapping[str, Mapping[str, BidCurve]]) -> list[LocatedCurve]:
        expected = {loc.aggregator for loc in self.locations}
        if set(fleet_bids) != expected:
            raise LdaError(f"{self.name}: bids expected from {sorted(expected)}, got {sorted(fleet_bids)}")
        curves = []
        for loc in self.locations:
            bids = fleet_bids[loc.aggregator]
            if loc.bus not in bids:
                raise LdaError(f"aggregator {loc.aggregator!r} sent no bid for its location {loc.bus!r}")
            curves.append(LocatedCurve(owner=loc.aggregator, der=loc.element, curve=bids[loc.bus]))
        for agg, bids in fleet_bids.items():
            extra = sorted(set(bids) - {loc.bus for loc in self.locations if loc.aggregator == agg})
            if extra:
                raise LdaError(f"aggregator {agg!r} bid at {extra}, where it has no registered DERs")
        return curves

    def _der_index(self, curve: LocatedCurve) -> int:
        return next(i for i, loc in enumerate(self.locations) if loc.element == curve.der)

    # --------------------------------------------------------- 2. dispatch
    def dispatch(self, interval: int, lmp: float, cleared_mw: float) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
        """Set-points and prices per aggregator, meeting the ISO's award."""
        p = self._pending
        clearing: LdaClearing = clear_lda(cleared_mw / self.scale, lmp, p["curves"], p["state"], p["sens"],
                                          p["fixed"], self.limits)
        self._pending.update(clearing=clearing, lmp=lmp, scheduled=cleared_mw)
        out: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
        for i, loc in enumerate(self.locations):
            setpoints, prices = out.setdefault(loc.aggregator, ({}, {}))
            setpoints[loc.bus] = float(clearing.dispatch_mw[i])
            prices[loc.bus] = float(clearing.dlmp[i])
        return out

    # ---------------------------------------------------------- 3. measure
    def measure(self, interval: int, actual: Mapping[str, Mapping[str, float]]) -> tuple[float, Tables]:
        """Power flow with the actual response; returns the metered T-D flow (scaled MW)."""
        der = np.zeros(len(self.locations))
        for agg, values in actual.items():
            for bus, mw in values.items():
                if (agg, bus) not in self.index:
                    raise LdaError(f"aggregator {agg!r} reported output at unknown location {bus!r}")
                der[self.index[(agg, bus)]] = mw
        missing = sorted({loc.aggregator for loc in self.locations} - set(actual))
        if missing:
            raise LdaError(f"{self.name}: no measurement from {missing}")
        multiplier = self.profile[interval] * (1.0 + self.load_error[interval])
        self.feeder.set_load_multipliers(multiplier)
        self.feeder.set_der_mw(der)
        state = self.feeder.solve()
        self.der_mw = der
        p = self._pending
        clearing: LdaClearing = p["clearing"]  # type: ignore[assignment]
        lmp, scheduled = float(p["lmp"]), float(p["scheduled"])  # type: ignore[arg-type]
        td_flow = state.substation_p_mw * self.scale
        inflexible = state.load_mw
        k, h, s = interval, self.hours, self.scale
        tables: Tables = {}
        tables["feeder"] = (FEEDER_COLUMNS, [(
            k, h, self.name, s, bool(state.converged), state.substation_p_mw, td_flow, scheduled,
            td_flow - scheduled, state.losses_mw, inflexible, float(der.sum()),
            float(np.min(state.v_pu[state.monitored])), float(np.max(state.v_pu[state.monitored])),
            float(np.max(state.loading)) if len(state.loading) else 0.0,
            int(state.n_voltage_violations), int(state.n_thermal_violations),
        )])
        tables["voltages"] = (VOLTAGE_COLUMNS, [(k, self.name, n, float(v))
                                                for n, v in zip(state.node_names, state.v_pu, strict=True)])
        tables["branches"] = (BRANCH_COLUMNS, [(k, self.name, n, float(x))
                                               for n, x in zip(state.branch_names, state.loading, strict=True)])
        tables["dispatch"] = (DISPATCH_COLUMNS, [
            (k, self.name, loc.aggregator, loc.bus, float(clearing.dispatch_mw[i]), float(der[i]),
             float(der[i] - clearing.dispatch_mw[i]), float(clearing.dlmp[i]), float(clearing.dlmp_energy[i]),
             float(clearing.dlmp_loss[i]), float(clearing.dlmp_congestion[i]))
            for i, loc in enumerate(self.locations)
        ])
        market, me = f"lda:{self.name}", f"dso:{self.name}"
        pay = [ledger.Payment(k, market, f"customers:{self.name}", me, "energy", inflexible * s, lmp, h)]
        for i, loc in enumerate(self.locations):
            pay.append(ledger.Payment(k, market, f"agg:{loc.aggregator}", me, f"energy@{loc.bus}",
                                      float(der[i]) * s, float(clearing.dlmp[i]), h))
        pay.append(ledger.Payment(k, market, me, "iso", "energy", scheduled, lmp, h))
        pay.append(ledger.Payment(k, market, me, "iso", "imbalance", td_flow - scheduled, lmp, h))
        tables["settlements"] = (ledger.COLUMNS, [x.row() for x in pay])
        return td_flow, tables
