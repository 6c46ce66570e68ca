"""Where a DER bid sits on a feeder: an aggregator's fleet at one bus."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """One DER element on the feeder: an aggregator's fleet at one bus."""

    aggregator: str
    bus: str

    @property
    def element(self) -> str:
        return f"{self.aggregator}_{self.bus}".replace(".", "_")
