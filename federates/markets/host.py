"""The shell side of hosting a DMO: the same two exchanges whichever federate
holds the market (the utility in models 3 and 5, the independent operator in
4 and 6). The market role itself (``NodalDmo`` / ``P2pDmo``) stays plain
Python; this module only moves its inputs and outputs through the shell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dsosim.federates.common import messages as msg
from dsosim.federates.common.schedule import Clock, round_trip_at
from dsosim.federates.common.shell import FederateShell
from dsosim.federates.dso.feeder import FeederState, Sensitivities
from dsosim.federates.markets import day_ahead
from dsosim.federates.markets.grid_model import from_message
from dsosim.federates.markets.nodal_dmo import RELINEARISE_MAX, NodalDmo


def send_interface_bid(
    shell: FederateShell,
    dmo: NodalDmo,
    k: int,
    bids: Mapping[str, msg.FleetBid],
    state: FeederState,
    sens: Sensitivities,
    *,
    iso: str,
    td_bus: int,
) -> None:
    """AGGREGATE: the LDA's one bid at the T-D interface, from its fleets' bids."""
    fleet_bids = {a: {b.at: b.curve for b in m.bids} for a, m in bids.items()}
    curve, tables = dmo.interface_bid(k, fleet_bids, state, sens)
    shell.send(iso, msg.InterfaceBid(shell.name, k, td_bus, curve))
    shell.record_tables(k, tables)


def take_day_ahead(
    dmo: NodalDmo,
    offers: Mapping[str, msg.DayAheadOffer],
    per_day: int,
    points: Sequence[day_ahead.Point],
) -> None:
    """The aggregators' day-ahead offers, and the feeder forecast per period
    the LDA's day-ahead bid was built on, for the DMO to clear and settle
    their schedules."""
    if not offers:
        return
    m = next(iter(offers.values()))
    if len(points) != len(next(iter(m.offers.values()))):
        raise msg.MessageError(
            m.sender,
            "day_ahead_offer.offers",
            f"{len(next(iter(m.offers.values())))} periods, the feeder forecast has {len(points)}",
        )
    dmo.take_day_ahead(
        m.interval,
        per_day // len(points),
        {a: dict(o.offers) for a, o in offers.items()},
        points,
    )


def send_dispatch(shell: FederateShell, dmo: NodalDmo, k: int, award: msg.Award) -> None:
    """DISPATCH: set-points and DLMPs that meet the ISO's award, to each aggregator."""
    # a day-ahead schedule of the LDA, or a day-ahead price (a market ran)
    da = (award.da_mw, award.da_lmp) if award.da_mw or award.da_lmp else None
    dispatch, tables = dmo.dispatch(k, award.lmp, award.cleared_mw, da)
    for agg, (setpoints, prices) in sorted(dispatch.items()):
        shell.send(agg, msg.Dispatch(shell.name, k, setpoints, prices))
    shell.record_tables(k, tables)


class UtilityRoundTrip:
    """The re-linearisation of a market operator that does not own the feeder
    (models 4 and 6), as the market role's ``relinearise``: each call sends
    the dispatch to the utility (``LineariseAt``) and waits, inside DISPATCH,
    for the feeder linearised there (``GridModel``; ``NoLinearisation`` if
    that power flow diverged). The utility does for it exactly what it does
    for its own market in models 3 and 5 (``GridOperator.linearise_at``):
    who holds the market changes who sends what, not the physics it clears
    on. :meth:`finish` tells the utility which linearisation the dispatch was
    priced on, for its ex-post check.

    One object per interval; ``forecast`` is the linearisation the interval's
    bid was built on (the grid model sent at BID)."""

    def __init__(
        self,
        shell: FederateShell,
        utility: str,
        interval: int,
        time: Clock,
        forecast: Sensitivities,
        *,
        vmin: float,
        vmax: float,
    ) -> None:
        self.shell, self.utility, self.interval, self.time = shell, utility, interval, time
        self.vmin, self.vmax = vmin, vmax
        self.points: list[Sensitivities | None] = [forecast]
        """Linearisations by request number (0: the forecast's; None: diverged)."""

    def __call__(self, der_mw: np.ndarray) -> tuple[FeederState, Sensitivities] | None:
        j = len(self.points)
        if j > RELINEARISE_MAX:
            raise RuntimeError(f"more than {RELINEARISE_MAX} re-linearisations in one interval")
        k, shell = self.interval, self.shell
        shell.send(self.utility, msg.LineariseAt(shell.name, k, j, tuple(float(x) for x in der_mw)))
        shell.advance(round_trip_at(k, 2 * j, self.time))
        got = shell.receive(allowed_senders=[self.utility])
        answer = _one_answer(got, k, j, self.utility)
        if isinstance(answer, msg.NoLinearisation):
            self.points.append(None)
            return None
        if len(answer.der_names) != len(der_mw):
            raise msg.MessageError(
                answer.sender,
                "grid_model.der_names",
                f"{len(answer.der_names)} DER locations, the dispatch has {len(der_mw)}",
            )
        state, sens = from_message(answer, vmin=self.vmin, vmax=self.vmax)
        self.points.append(sens)
        return state, sens

    def finish(self, priced_on: Sensitivities | None) -> None:
        """``PricedOn`` to the utility: the request whose linearisation
        ``priced_on`` is (0, the forecast's, if none of them)."""
        index = next((i for i, s in enumerate(self.points) if s is priced_on), 0)
        self.shell.send(self.utility, msg.PricedOn(self.shell.name, self.interval, index))


def _one_answer(
    got: list[msg.Message], k: int, j: int, utility: str
) -> msg.GridModel | msg.NoLinearisation:
    """Exactly the utility's answer to request ``j`` of interval ``k``."""
    answers = [m for m in got if isinstance(m, msg.GridModel | msg.NoLinearisation)]
    if len(got) != 1 or len(answers) != 1:
        kinds = sorted(m.KIND for m in got)
        raise RuntimeError(
            f"interval {k}: expected one grid_model or no_linearisation from {utility!r} "
            f"answering re-linearisation {j}, got {kinds}"
        )
    answer = answers[0]
    if answer.interval != k:
        raise msg.MessageError(
            answer.sender, f"{answer.KIND}.interval", f"{answer.interval}, expected {k}"
        )
    if isinstance(answer, msg.GridModel) and answer.day_ahead_period is not None:
        raise msg.MessageError(
            answer.sender, "grid_model.day_ahead_period", "a day-ahead forecast inside DISPATCH"
        )
    if isinstance(answer, msg.NoLinearisation) and answer.iteration != j:
        raise msg.MessageError(
            answer.sender, "no_linearisation.iteration", f"{answer.iteration}, expected {j}"
        )
    return answer
