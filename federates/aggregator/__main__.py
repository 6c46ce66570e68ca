"""Aggregator federate: hosts a DER fleet on the HELICS bus.

Per interval k (see ``common.schedule``): BID sends one curve per location to
its market operator; RESPOND reads the dispatch, runs the devices for the
interval and reports what they actually did; records the ``ders*`` tables
(``results``).
"""

from __future__ import annotations

import sys
import zlib

from dsosim.federates.aggregator.fleet import Fleet
from dsosim.federates.aggregator.results import der_tables
from dsosim.federates.aggregator.spec_json import fleet_from_json
from dsosim.federates.common import messages as msg
from dsosim.federates.common import routes
from dsosim.federates.common.config import FederationConfig
from dsosim.federates.common.schedule import Phase, at
from dsosim.federates.common.shell import FederateShell, federate_main


def run(shell: FederateShell, config: FederationConfig, name: str) -> None:
    cfg = config.aggregator(name)
    bid_to = routes.bid_target(config, cfg)  # None: passive, self-dispatched at the tariff
    dispatcher = routes.dispatcher_of(config, cfg)
    utility = cfg.dso
    fleet = Fleet(fleet_from_json(cfg.fleet), interval_s=config.time.interval_s,
                  n_intervals=config.time.n_intervals, seed=config.seed + zlib.crc32(name.encode()))
    if tuple(fleet.buses) != tuple(cfg.buses):
        raise ValueError(f"fleet buses {fleet.buses} differ from the configured locations {cfg.buses}")
    dt = config.time.interval_s
    for k in range(config.time.n_intervals):
        shell.advance(at(k, Phase.BID, dt))
        bids = fleet.bids(k)
        if bid_to is not None:
            shell.send(bid_to, msg.FleetBid(name, k, tuple(msg.LocatedBid(b, c) for b, c in sorted(bids.items()))))

        shell.advance(at(k, Phase.RESPOND, dt))
        received = shell.receive(allowed_senders=[dispatcher] if dispatcher else [])
        if dispatcher is None:
            tariff = config.model.tariff
            setpoints = {b: c.quantity_at(tariff) for b, c in bids.items()}
            prices = dict.fromkeys(bids, tariff)
        else:
            dispatch = [m for m in received if isinstance(m, msg.Dispatch) and m.interval == k]
            if len(dispatch) != 1 or len(received) != 1:
                raise RuntimeError(f"interval {k}: expected one dispatch from {dispatcher!r}, got "
                                   f"{[(m.KIND, m.interval) for m in received]}")
            setpoints, prices = dict(dispatch[0].setpoints_mw), dict(dispatch[0].prices)
        outcome = fleet.dispatch(k, setpoints, prices)
        shell.send(utility, msg.Measurement(name, k, outcome.actual_by_bus(), setpoints))
        shell.record_tables(k, der_tables(name, outcome))
        shell.record_traffic(k)


def main(argv: list[str] | None = None) -> int:
    return federate_main("aggregator", lambda shell, config, name, base: run(shell, config, name), argv)


if __name__ == "__main__":
    sys.exit(main())
