"""Aggregator federate: hosts a DER fleet on the HELICS bus.

Per interval k (see ``common.schedule``): BID sends one curve per location to
its market operator; REPORT reads the dispatch, runs the devices for the
interval and reports what they actually did; records the ``ders*`` tables
(``results``): with volt-var inverters half a sub-step after MEASURE, once the
utility has sent the voltages its power flow gave the fleet's locations, at
which the inverters' reactive power is theirs (``ders_pv.q_mvar``). A fleet
with DERs run by hardware reads the dispatch earlier, at RESPOND, sends those
DERs' set-points to the HIL gateway, and at REPORT uses the gateway's
readings as their output.
"""

from __future__ import annotations

import sys
import zlib

import numpy as np

from dsosim.federates.aggregator.fleet import (
    DayAheadPlan,
    DeviceReading,
    DispatchOutcome,
    Fleet,
    ev_net_mw,
    outdoor_c,
)
from dsosim.federates.aggregator.heap import keep_freed_memory
from dsosim.federates.aggregator.pv import volt_var_ratings
from dsosim.federates.aggregator.results import der_tables
from dsosim.federates.aggregator.spec_json import fleet_from_json
from dsosim.federates.common import messages as msg
from dsosim.federates.common import routes
from dsosim.federates.common.config import FederationConfig
from dsosim.federates.common.curves import BidCurve, PlacedCurve
from dsosim.federates.common.forecasts import FORECAST_COLUMNS, ForecastLog
from dsosim.federates.common.schedule import (
    DayAheadPhase,
    Phase,
    at,
    day_ahead_at,
    day_ahead_due,
    voltages_at,
)
from dsosim.federates.common.shell import FederateShell, expect, federate_main


def run(shell: FederateShell, config: FederationConfig, name: str) -> None:
    cfg = config.aggregator(name)
    bid_to = routes.bid_target(config, cfg)  # None: passive, self-dispatched at the tariff
    dispatcher = routes.dispatcher_of(config, cfg)
    utility = cfg.dso
    fleet_seed = config.seed + zlib.crc32(name.encode())
    spec = fleet_from_json(cfg.fleet)
    # volt-var inverters: the utility sends the voltages they had after MEASURE
    volt_var = bool(volt_var_ratings(spec.pvs))
    fleet = Fleet(
        spec,
        interval_s=config.time.interval_s,
        n_intervals=config.time.n_intervals,
        seed=fleet_seed,
        start_s=config.time.start_s,
    )
    if fleet.large:  # utility scale: reuse the megabytes each interval frees (heap)
        keep_freed_memory()
    if tuple(fleet.buses) != tuple(cfg.buses):
        raise ValueError(
            f"fleet buses {fleet.buses} differ from the configured locations {cfg.buses}"
        )
    if dispatcher is None:  # passive at a flat tariff: the price is known, past the run's end too
        fleet.publish_prices(0, [config.model.tariff] * fleet.forecast_reach)
    hardware = {
        d.id: (fleet.device_index(d.kind, d.bus, d.nth), d.bus) for d in config.hil_devices_of(name)
    }
    gateway = config.hil.name if hardware and config.hil else None
    da = config.iso.day_ahead
    time = config.time
    per_day = time.intervals_per_day
    gate = da.gate_intervals(time.interval_s) if da is not None else 0
    per_period = round(da.period_minutes * 60.0 / time.interval_s) if da is not None else 1
    targets = routes.day_ahead_targets(config, cfg)
    log = ForecastLog(name, per_day, per_period)
    for k in range(time.n_intervals):
        day = day_ahead_due(k, per_day, gate, time.n_intervals) if da is not None else None
        if day is not None and targets:
            shell.advance(day_ahead_at(k, DayAheadPhase.DA_OFFER, time))
            plan = fleet.day_ahead(
                day * per_day,
                per_day // per_period,
                per_period,
                pv_error=da.pv_forecast_error,
                load_error=da.load_forecast_error,
                ev_error=da.ev_forecast_error,
                temperature_error_c=da.temperature_forecast_error_c,
                seed=fleet_seed,
            )
            for target in targets:
                shell.send(target, msg.DayAheadOffer(name, plan.first, plan.offers))
            _expect(log, day, plan, {g.kind for g in fleet.groups})
        shell.advance(at(k, Phase.BID, time))
        if day is not None:
            _plan_from_day_ahead(shell, config, fleet, day * per_day, per_day)
        bids = fleet.bids(k)
        if bid_to is not None:
            shell.send(
                bid_to,
                msg.FleetBid(name, k, tuple(PlacedCurve(b, c) for b, c in sorted(bids.items()))),
            )

        measured: dict[int, DeviceReading] = {}
        if gateway is not None:
            shell.advance(at(k, Phase.RESPOND, config.time))
            setpoints, prices = _dispatch(shell, config, dispatcher, bids, k)
            _send_hardware_setpoints(shell, gateway, fleet, hardware, k, setpoints, prices)
            shell.advance(at(k, Phase.REPORT, config.time))
            measured = _hardware_readings(shell, gateway, fleet, hardware, k)
        else:
            shell.advance(at(k, Phase.REPORT, config.time))
            setpoints, prices = _dispatch(shell, config, dispatcher, bids, k)
        outcome = fleet.dispatch(k, setpoints, prices, measured)
        shell.send(utility, msg.Measurement(name, k, outcome.actual_by_bus(), setpoints))
        outcome = _with_reactive(shell, fleet, utility, voltages_at(k, time), outcome, volt_var)
        shell.record_tables(k, der_tables(name, outcome))
        if da is not None:
            _observe(log, k, outcome)
            shell.record(k, "forecasts", FORECAST_COLUMNS, log.rows_after(k))
        shell.end_interval(k)


def _expect(log: ForecastLog, day: int, plan: DayAheadPlan, kinds: set[str]) -> None:
    """A day-ahead plan's forecasts, for the forecasts table."""
    log.expect(day, "price_usd_mwh", plan.price.tolist())
    log.expect(day, "net_mw", plan.net_mw.tolist())
    if "pv" in kinds:
        log.expect(day, "pv_mw", plan.pv_mw.tolist())
    if "inflexible" in kinds:
        log.expect(day, "load_mw", plan.load_mw.tolist())
    if "ev" in kinds:
        log.expect(day, "ev_mw", plan.ev_mw.tolist())
    if "hvac" in kinds:
        log.expect(day, "hvac_mw", plan.hvac_mw.tolist())
        log.expect(day, "outdoor_c", plan.outdoor_c.tolist())


def _with_reactive(
    shell: FederateShell,
    fleet: Fleet,
    utility: str,
    when: float,
    outcome: DispatchOutcome,
    volt_var: bool,
) -> DispatchOutcome:
    """With volt-var inverters (``volt_var``), at ``when`` (half a sub-step
    after MEASURE): the voltages the utility's power flow gave the fleet's
    locations, and so the inverters' reactive power."""
    if not volt_var:
        return outcome
    shell.advance(when)
    got = shell.receive(allowed_senders=[utility])
    v = expect(got, msg.LocationVoltages, outcome.interval, [utility])[utility]
    return outcome.with_pv_reactive(fleet.volt_var_mvar(v.v_pu))


def _observe(log: ForecastLog, k: int, outcome: DispatchOutcome) -> None:
    """What the fleet did and was paid in interval ``k``, for the forecasts table."""
    paid = outcome.prices[np.isfinite(outcome.prices)]
    if len(paid):
        log.observe(k, "price_usd_mwh", float(paid.mean()))
    log.observe(k, "net_mw", float(outcome.actual_mw.sum()))
    if "pv" in outcome.by_type:
        log.observe(k, "pv_mw", outcome.total("pv", "available_mw"))
    if "inflexible" in outcome.by_type:
        log.observe(k, "load_mw", outcome.total("inflexible", "demand_mw"))
    if "ev" in outcome.by_type:
        log.observe(k, "ev_mw", ev_net_mw(outcome))
    if "hvac" in outcome.by_type:
        log.observe(k, "hvac_mw", outcome.total("hvac", "power_mw"))
        log.observe(k, "outdoor_c", outdoor_c(outcome))


def _plan_from_day_ahead(
    shell: FederateShell, config: FederationConfig, fleet: Fleet, first: int, per_day: int
) -> None:
    """The day's published day-ahead prices replace the fleet's learned price
    forecast for the day's intervals (each period's price for its intervals);
    ``first``: the day's first interval."""
    iso = config.iso.name
    prices = expect(shell.receive(allowed_senders=[iso]), msg.DayAheadPrices, first, [iso])[iso]
    per_period = per_day // len(prices.lmp)
    lmp = np.repeat(np.asarray(prices.lmp, dtype=float), per_period).tolist()
    fleet.publish_prices(first, lmp)


def _dispatch(
    shell: FederateShell,
    config: FederationConfig,
    dispatcher: str | None,
    bids: dict[str, BidCurve],
    k: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """This interval's set-points and prices: from the dispatcher, or (passive
    fleets) what the bids do at the flat tariff."""
    received = shell.receive(allowed_senders=[dispatcher] if dispatcher else [])
    if dispatcher is None:
        tariff = config.model.tariff
        return {b: c.quantity_at(tariff) for b, c in bids.items()}, dict.fromkeys(bids, tariff)
    dispatch = [m for m in received if isinstance(m, msg.Dispatch) and m.interval == k]
    if len(dispatch) != 1 or len(received) != 1:
        raise RuntimeError(
            f"interval {k}: expected one dispatch from {dispatcher!r}, got "
            f"{[(m.KIND, m.interval) for m in received]}"
        )
    return dict(dispatch[0].setpoints_mw), dict(dispatch[0].prices)


def _send_hardware_setpoints(
    shell: FederateShell,
    gateway: str,
    fleet: Fleet,
    hardware: dict[str, tuple[int, str]],
    k: int,
    setpoints: dict[str, float],
    prices: dict[str, float],
) -> None:
    """Each hardware DER's share of its bus set-point, as the fleet plans it,
    and what the simulated DER can physically do (the plausibility bound)."""
    plan = fleet.plan(k, setpoints)
    soc = {}
    for device, (index, _) in hardware.items():
        _, _, _, device_soc = fleet.device_rating(index)
        if device_soc is not None:
            soc[device] = device_soc
    ranges = {d: fleet.device_range(k, i) for d, (i, _) in hardware.items()}
    shell.send(
        gateway,
        msg.HilSetpoints(
            shell.name,
            k,
            {d: float(plan[i]) for d, (i, _) in hardware.items()},
            {d: float(prices[bus]) for d, (_, bus) in hardware.items()},
            soc,
            {d: lo for d, (lo, _) in ranges.items()},
            {d: hi for d, (_, hi) in ranges.items()},
        ),
    )


def _hardware_readings(
    shell: FederateShell, gateway: str, fleet: Fleet, hardware: dict[str, tuple[int, str]], k: int
) -> dict[int, DeviceReading]:
    """The gateway's readings as fleet measurements; availability follows them."""
    got = expect(shell.receive(allowed_senders=[gateway]), msg.HilReadings, k, [gateway])[gateway]
    assert isinstance(got, msg.HilReadings)
    unknown = sorted((set(got.actual_mw) | set(got.unavailable)) - set(hardware))
    if unknown:
        raise msg.MessageError(
            gateway, "hil_readings", f"devices {unknown} are not hardware of {shell.name}"
        )
    for device, (index, _) in hardware.items():
        fleet.set_available(index, device not in got.unavailable)
    return {hardware[d][0]: DeviceReading(mw, got.soc.get(d)) for d, mw in got.actual_mw.items()}


def main(argv: list[str] | None = None) -> int:
    return federate_main(
        "aggregator", lambda shell, config, name, base: run(shell, config, name), argv
    )


if __name__ == "__main__":
    sys.exit(main())
