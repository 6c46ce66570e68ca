"""The market operator role inside an LDA, as the organisational model says."""

from __future__ import annotations

from collections.abc import Sequence

from dsosim.federates.common import routes
from dsosim.federates.common.config import DsoConfig, FederationConfig
from dsosim.federates.markets.lda_market import Limits
from dsosim.federates.markets.location import Location
from dsosim.federates.markets.nodal_dmo import NodalDmo
from dsosim.federates.markets.p2p_market import P2pDmo


def make_dmo(config: FederationConfig, dso: DsoConfig, locations: Sequence[Location]) -> NodalDmo:
    """Nodal (models 3-4) or peer-to-peer (5-6) market over the LDA's
    market participants (utility-owned DERs excluded where the utility is DMO)."""
    bidders = [a for a in dso.aggregators if routes.bids_in_market(config, config.aggregator(a))]
    mine = [loc for loc in locations if loc.aggregator in bidders]
    limits = Limits.planning(dso.limits)
    cls = P2pDmo if config.model.local_market == "p2p" else NodalDmo
    return cls(
        dso.name,
        mine,
        bidders,
        scale=dso.scale,
        limits=limits,
        hours=config.time.interval_s / 3600.0,
    )
