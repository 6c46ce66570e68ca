"""Who sends what to whom, derived from the organisational model alone.

Every model-specific decision of the federate shells goes through these
functions, so a model is configuration (``configs/models/*.toml``), not a
code path. Names returned are federate names (HELICS endpoints).
"""

from __future__ import annotations

from dsosim.federates.common.config import (
    AggregatorConfig,
    DsoConfig,
    FederationConfig,
    independent_name,
)


def _holder(config: FederationConfig, role: str, dso: DsoConfig) -> str | None:
    where = getattr(config.model, role)
    if where == "iso":
        return config.iso.name
    if where == "utility":
        return dso.name
    if where == "independent":
        return independent_name(dso.name)
    return None


def dmo_of(config: FederationConfig, dso: DsoConfig) -> str | None:
    """Federate holding the DMO role of an LDA (None: no market in the LDA)."""
    return _holder(config, "dmo", dso)


def local_dmo_of(config: FederationConfig, dso: DsoConfig) -> str | None:
    """Federate running a market *inside* the LDA (models 3-6), else None."""
    return dmo_of(config, dso) if config.model.local_market != "none" else None


def derm_of(config: FederationConfig, dso: DsoConfig) -> str | None:
    """Federate that sends the DERs of an LDA their set-points (None: passive).
    ``automatic`` (peer-to-peer): the market operator confirms the trades and
    the DERs follow them, so the confirmation comes from the DMO."""
    if config.model.derm == "automatic":
        return dmo_of(config, dso)
    return _holder(config, "derm", dso)


def bids_in_market(config: FederationConfig, agg: AggregatorConfig) -> bool:
    """Whether an aggregator takes part in a market: not in the baseline, and
    not where the utility operates the market it would bid in (a DMO may not
    participate in a market it operates)."""
    if config.model.dmo == "none":
        return False
    return not (agg.utility_owned and not config.model.utility_ders_may_bid)


def bid_target(config: FederationConfig, agg: AggregatorConfig) -> str | None:
    """Where an aggregator sends its FleetBid (None: it does not bid)."""
    if not bids_in_market(config, agg):
        return None
    return dmo_of(config, config.dso(agg.dso))


def day_ahead_targets(config: FederationConfig, agg: AggregatorConfig) -> list[str]:
    """Where an aggregator sends its day-ahead offer (none: it does not bid):
    the ISO where aggregators bid there (models 1-2); in the layered models
    the LDA's utility, which builds the LDA's day-ahead bid from it and its
    feeder forecast, and the LDA's market operator if that is someone else
    (it settles the aggregator's day-ahead schedule)."""
    target = bid_target(config, agg)
    if target is None:
        return []
    if target == config.iso.name:
        return [target]
    return sorted({agg.dso, target})


def dispatcher_of(config: FederationConfig, agg: AggregatorConfig) -> str | None:
    """Who sends this aggregator its Dispatch (None: it self-dispatches at the tariff)."""
    if not bids_in_market(config, agg):
        return None
    return derm_of(config, config.dso(agg.dso))


def grid_model_target(config: FederationConfig, dso: DsoConfig) -> str | None:
    """Where the utility sends its feeder model each interval: to a market
    operator inside the LDA that is not the utility itself."""
    target = local_dmo_of(config, dso)
    return target if target not in (None, dso.name) else None


def td_bidders(config: FederationConfig, dso: DsoConfig) -> list[str]:
    """Participants the ISO hears from at this LDA's T-D bus."""
    local = local_dmo_of(config, dso)
    if local is not None:
        return [local]
    bidders = [dso.name]  # the utility bids its load and losses (and passive DERs)
    if config.model.dmo == "iso":
        bidders += [
            a
            for a in dso.aggregators
            if bid_target(config, config.aggregator(a)) == config.iso.name
        ]
    return bidders
