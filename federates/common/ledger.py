"""Settlement ledger rows: every payment as ``payer -> payee``.

Parties are roles, named ``kind:name``: ``iso``, ``dmo:lda1`` (the market
operator inside an LDA, whoever holds the role), ``utility:lda1`` (grid
operator and load-serving entity), ``customers:lda1``, ``agg:agg1``,
``gen:3``, ``load:5``. A negative amount is a payment the other way. Market
operators (the ISO and the DMOs) are flagged so the books can be closed: see
``recorder.summary.settlement_balance``.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields

OPERATOR_PREFIXES = ("iso", "dmo:")


@dataclass(frozen=True, slots=True)
class Payment:
    interval: int
    market: str
    payer: str
    payee: str
    item: str
    mw: float
    price: float
    hours: float

    @property
    def amount(self) -> float:
        """$ paid by ``payer`` to ``payee``: price x energy."""
        return self.price * self.mw * self.hours

    def row(self) -> tuple[object, ...]:
        return (*astuple(self), self.amount, is_operator(self.payer), is_operator(self.payee))


COLUMNS = (*(f.name for f in fields(Payment)), "amount", "payer_is_operator", "payee_is_operator")


def is_operator(party: str) -> bool:
    return party == "iso" or party.startswith("dmo:")
