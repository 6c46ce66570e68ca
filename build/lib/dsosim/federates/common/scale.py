"""Feeder to T-D interface: the one place quantities change scale.

An LDA's modelled feeder stands for ``factor`` similar feeders under the same
T-D substation. Everything at the T-D interface (bids, awards, metered flow,
money) is the feeder's quantity times ``factor``; feeder physics, DER
set-points and the LDA market stay per feeder.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsosim.federates.common.curves import BidCurve


@dataclass(frozen=True, slots=True)
class TdScale:
    """How many modelled feeders an LDA stands for at its T-D bus."""

    factor: float

    def __post_init__(self) -> None:
        if not self.factor > 0.0:
            raise ValueError(f"T-D scale must be > 0, got {self.factor!r}")

    def to_td(self, mw: float) -> float:
        """A feeder quantity (MW, or MW x price) as seen at the T-D bus."""
        return mw * self.factor

    def to_feeder(self, mw: float) -> float:
        """A T-D quantity (an award) for the one modelled feeder."""
        return mw / self.factor

    def curve_to_td(self, curve: BidCurve) -> BidCurve:
        """A feeder's bid curve as bid at the T-D bus."""
        return curve.scaled(self.factor)
