"""Who settles and what the ISO clears: settlement parties and bid keys.

A :class:`Party` is a role with a name: ``iso``, ``dmo:lda1`` (the market
operator inside an LDA, whoever holds the role), ``utility:lda1`` (grid
operator and load-serving entity), ``customers:lda1``, ``agg:agg1``,
``gen:3``, ``load:5``. A :class:`BidKey` names one curve the ISO clears at a
T-D bus: an LDA's market operator's (``lda5``), the utility's (``lda5/utility``)
or an aggregator's at one feeder location (``agg_solar/675``).

Both are built here and nowhere else; their text form (``str()``) is what
the result tables and the wire carry, and :meth:`Party.parse` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """The kind of a settlement party."""

    ISO = "iso"
    DMO = "dmo"
    UTILITY = "utility"
    CUSTOMERS = "customers"
    AGG = "agg"
    GEN = "gen"
    LOAD = "load"


OPERATORS = frozenset({Role.ISO, Role.DMO})
"""Market operators: they keep what buyers pay beyond what sellers receive."""


class PartyError(ValueError):
    """A party's text form is not ``role:name`` (or ``iso``)."""


@dataclass(frozen=True, slots=True)
class Party:
    """One settlement party: a role and, except for the ISO, a name."""

    role: Role
    name: str = ""

    def __post_init__(self) -> None:
        if (self.role is Role.ISO) != (self.name == ""):
            raise PartyError(f"party {self.role}:{self.name!r}: only the ISO has no name")

    def __str__(self) -> str:
        return self.role.value if self.role is Role.ISO else f"{self.role.value}:{self.name}"

    def __lt__(self, other: Party) -> bool:
        """Parties sort by their text form (as the result tables do)."""
        return str(self) < str(other)

    @property
    def is_operator(self) -> bool:
        return self.role in OPERATORS

    @classmethod
    def parse(cls, text: str) -> Party:
        if text == Role.ISO.value:
            return ISO
        role, sep, name = text.partition(":")
        if not sep or not name or role not in Role.__members__.values() or role == Role.ISO:
            raise PartyError(
                f"party {text!r} must be 'iso' or ROLE:NAME with ROLE one of "
                f"{sorted(r.value for r in Role if r is not Role.ISO)}"
            )
        return cls(Role(role), name)

    @classmethod
    def dmo(cls, lda: str) -> Party:
        return cls(Role.DMO, lda)

    @classmethod
    def utility(cls, lda: str) -> Party:
        return cls(Role.UTILITY, lda)

    @classmethod
    def customers(cls, lda: str) -> Party:
        return cls(Role.CUSTOMERS, lda)

    @classmethod
    def agg(cls, aggregator: str) -> Party:
        return cls(Role.AGG, aggregator)

    @classmethod
    def gen(cls, index: int) -> Party:
        return cls(Role.GEN, str(index))

    @classmethod
    def load(cls, bus: int) -> Party:
        return cls(Role.LOAD, str(bus))


ISO = Party(Role.ISO)


@dataclass(frozen=True, slots=True)
class BidKey:
    """One curve the ISO clears at LDA ``lda``'s T-D bus, bid by ``party``:
    the LDA's market operator, its utility, or an aggregator at feeder
    ``location`` (aggregators only)."""

    lda: str
    party: Party
    location: str = ""

    def __post_init__(self) -> None:
        if self.party.role not in (Role.DMO, Role.UTILITY, Role.AGG):
            raise PartyError(f"bid key: {self.party} does not bid at a T-D bus")
        if (self.party.role is Role.AGG) != (self.location != ""):
            raise PartyError(
                f"bid key {self.party} at {self.lda}: only aggregators give a location"
            )

    def __str__(self) -> str:
        if self.party.role is Role.AGG:
            return f"{self.party.name}/{self.location}"
        if self.party.role is Role.UTILITY:
            return f"{self.lda}/utility"
        return self.lda

    def __lt__(self, other: BidKey) -> bool:
        """Keys sort by their text form (the ISO's column order)."""
        return str(self) < str(other)
