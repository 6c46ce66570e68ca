"""Settlement ledger rows: every payment as ``payer -> payee``.

Parties are :class:`~dsosim.federates.common.parties.Party` records, written
to the table in their text form (``iso``, ``dmo:lda1``, ``agg:agg1``, ...). A
negative amount is a payment the other way. Market operators (the ISO and the
DMOs) are flagged so the books can be closed: see
``recorder.summary.settlement_balance``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from dsosim.federates.common.parties import Party


@dataclass(frozen=True, slots=True)
class Payment:
    interval: int
    market: str
    payer: Party
    payee: Party
    item: str
    mw: float
    price: float
    hours: float

    @property
    def amount(self) -> float:
        """$ paid by ``payer`` to ``payee``: price x energy."""
        return self.price * self.mw * self.hours

    def row(self) -> tuple[object, ...]:
        return (
            self.interval,
            self.market,
            str(self.payer),
            str(self.payee),
            self.item,
            self.mw,
            self.price,
            self.hours,
            self.amount,
            self.payer.is_operator,
            self.payee.is_operator,
        )


COLUMNS = (*(f.name for f in fields(Payment)), "amount", "payer_is_operator", "payee_is_operator")
