"""Independent market operator federate of one LDA (models 4 and 6).

Hosts the DMO (and DERM) role an independent entity holds. It owns no feeder
model: each interval the utility sends it the feeder limits as a grid model
(``GridModel``), and it runs the same market roles the utility would.

Per interval k: AGGREGATE reads the grid model and the DER bids and sends
the LDA's bid to the ISO; DISPATCH reads the award, clears it, and, like the
utility's market in models 3 and 5, clears again on the feeder linearised at
its dispatch until it stops moving: each re-linearisation is a round trip to
the utility inside DISPATCH (``host.UtilityRoundTrip``); then it sends the
set-points, and tells the utility which linearisation it priced them on.
"""

from __future__ import annotations

import sys

from dsosim.federates.common import messages as msg
from dsosim.federates.common import routes
from dsosim.federates.common.config import DsoConfig, FederationConfig, independent_name
from dsosim.federates.common.schedule import Phase, at
from dsosim.federates.common.shell import FederateShell, expect, federate_main
from dsosim.federates.markets import day_ahead
from dsosim.federates.markets.dmo_factory import make_dmo
from dsosim.federates.markets.grid_model import from_message
from dsosim.federates.markets.host import (
    UtilityRoundTrip,
    send_dispatch,
    send_interface_bid,
    take_day_ahead,
)
from dsosim.federates.markets.location import Location


def run(shell: FederateShell, config: FederationConfig, name: str) -> None:
    cfg = next(d for d in config.dsos if independent_name(d.name) == name)
    locations = [
        Location(a, b) for a in sorted(cfg.aggregators) for b in sorted(config.aggregator(a).buses)
    ]
    dmo = make_dmo(config, cfg, locations)
    in_market = [a for a in cfg.aggregators if routes.bids_in_market(config, config.aggregator(a))]
    per_day = config.time.intervals_per_day
    for k in range(config.time.n_intervals):
        shell.advance(at(k, Phase.AGGREGATE, config.time))
        received = shell.receive(allowed_senders=[cfg.name, *in_market])
        # day-ahead offers (at a gate closure before this interval) and the
        # feeder forecast per period the LDA's day-ahead bid was built on: to
        # clear and settle the DERs' day-ahead schedules
        offers = [m for m in received if isinstance(m, msg.DayAheadOffer)]
        forecasts = [
            m for m in received if isinstance(m, msg.GridModel) and m.day_ahead_period is not None
        ]
        if offers:
            first = offers[0].interval
            take_day_ahead(
                dmo,
                expect(offers, msg.DayAheadOffer, first, in_market),
                per_day,
                _day_ahead_points(forecasts, first, cfg),
            )
        elif forecasts:
            raise msg.MessageError(cfg.name, "grid_model", "a day-ahead forecast without offers")
        received = [
            m
            for m in received
            if not isinstance(m, msg.DayAheadOffer)
            and not (isinstance(m, msg.GridModel) and m.day_ahead_period is not None)
        ]
        grid = expect(
            [m for m in received if isinstance(m, msg.GridModel)], msg.GridModel, k, [cfg.name]
        )[cfg.name]
        bids = expect(
            [m for m in received if not isinstance(m, msg.GridModel)], msg.FleetBid, k, in_market
        )
        state, sens = from_message(grid, vmin=cfg.limits.vmin_pu, vmax=cfg.limits.vmax_pu)
        send_interface_bid(shell, dmo, k, bids, state, sens, iso=cfg.iso, td_bus=cfg.td_bus)

        shell.advance(at(k, Phase.DISPATCH, config.time))
        award = expect(shell.receive(allowed_senders=[cfg.iso]), msg.Award, k, [cfg.iso])[cfg.iso]
        trip = UtilityRoundTrip(
            shell, cfg.name, k, config.time, sens, vmin=cfg.limits.vmin_pu, vmax=cfg.limits.vmax_pu
        )
        dmo.relinearise = trip
        send_dispatch(shell, dmo, k, award)
        trip.finish(dmo.priced_on)
        shell.end_interval(k)


def _day_ahead_points(
    models: list[msg.GridModel], first: int, cfg: DsoConfig
) -> list[day_ahead.Point]:
    """The utility's day-ahead feeder forecast, one grid model per period of
    the day starting at ``first``, in period order."""
    by_period = {m.day_ahead_period: m for m in models if m.interval == first}
    if len(by_period) != len(models) or sorted(by_period) != list(range(len(models))):
        raise msg.MessageError(
            cfg.name,
            "grid_model.day_ahead_period",
            f"expected periods 0..{len(models) - 1} of the day at interval {first}, got "
            f"{sorted((m.interval, m.day_ahead_period) for m in models)}",
        )
    return [
        day_ahead.Point(*from_message(m, vmin=cfg.limits.vmin_pu, vmax=cfg.limits.vmax_pu))
        for _, m in sorted(by_period.items())
    ]


def main(argv: list[str] | None = None) -> int:
    return federate_main("imo", lambda shell, config, name, base: run(shell, config, name), argv)


if __name__ == "__main__":
    sys.exit(main())
