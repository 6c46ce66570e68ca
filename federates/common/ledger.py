"""Settlement ledger rows: every payment as ``payer -> payee``.

Parties are :class:`~dsosim.federates.common.parties.Party` records, written
to the table in their text form (``iso``, ``dmo:lda1``, ``agg:agg1``, ...). A
negative amount is a payment the other way. Market operators (the ISO and the
DMOs) are flagged so the books can be closed: see
``recorder.summary.settlement_balance``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from operator import itemgetter

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


@dataclass(frozen=True, slots=True)
class SanityBound:
    """What no payment of a federation can exceed, derived from its case at
    build: ``max_mw x max_price x hours``, with ``max_mw`` twice the case's
    installed generation plus its load (no flow of energy in the federation
    comes near it) and ``max_price`` the widest price the bid curves and the
    ISO's value of lost load allow. A payment beyond it is a bug or bad data,
    never a result."""

    max_mw: float
    max_price: float

    def amount(self, hours: float) -> float:
        """The largest amount a payment over ``hours`` can have."""
        return self.max_mw * self.max_price * hours


def refusal(
    row: Sequence[object], bound: SanityBound | None, columns: Sequence[str] = COLUMNS
) -> str | None:
    """Why a settlement row is refused, naming the parties and the interval;
    None if it is acceptable. Refused: any non-finite or non-numeric amount,
    MW, price or hours; hours <= 0; and, with a ``bound``, an amount beyond
    it. MW and price are not bounded one by one: a distribution price's
    congestion component can legitimately be far above the price cap on a
    small quantity (the amount stays small)."""
    values = dict(zip(columns, row, strict=False))

    def who() -> str:  # only for a refused row (the recorder screens every row)
        return (
            f"interval {values.get('interval')!r}: {values.get('payer')!r} -> "
            f"{values.get('payee')!r} ({values.get('market')!r} {values.get('item')!r})"
        )

    numbers: dict[str, float] = {}
    for name in ("mw", "price", "hours", "amount"):
        v = values.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"{who()}: {name} {v!r} is not a finite number"
        numbers[name] = float(v)
    if numbers["hours"] <= 0:
        return f"{who()}: hours {numbers['hours']!r} must be > 0"
    if bound is None:
        return None
    limit = bound.amount(numbers["hours"])
    if abs(numbers["amount"]) > limit:
        return (
            f"{who()}: amount {numbers['amount']:.6g} $ beyond the sanity bound {limit:.6g} $ "
            f"derived from the case"
        )
    return None


def _all_acceptable(
    rows: Sequence[Sequence[object]], bound: SanityBound | None, columns: Sequence[str]
) -> bool:
    """Whether :func:`refusal` accepts every row, checked column by column at C
    speed (the recorder screens thousands of rows an interval); False means
    some row may be refused, and the row-by-row screen says which and why."""
    at = {c: i for i, c in enumerate(columns)}
    if not all(name in at for name in ("mw", "price", "hours", "amount")):
        return False
    if set(map(len, rows)) - {len(columns)}:
        return False
    mw, price, hours, amount = (
        list(map(itemgetter(at[name]), rows)) for name in ("mw", "price", "hours", "amount")
    )
    values = mw + price + hours + amount
    # bool is a subclass of int: it is refused, so only exact float and int pass
    if set(map(type, values)) - {float, int} or not all(map(math.isfinite, values)):
        return False
    if not all(h > 0 for h in hours):
        return False
    if bound is None:
        return True
    return all(abs(float(a)) <= bound.amount(float(h)) for a, h in zip(amount, hours, strict=True))


REFUSED_COLUMNS = ("interval", "market", "payer", "payee", "item", "reason")
"""The ``ledger_refused`` table: payments the recorder kept out of the books."""


def screen(
    rows: Sequence[Sequence[object]],
    bound: SanityBound | None,
    columns: Sequence[str] = COLUMNS,
) -> tuple[list[Sequence[object]], list[tuple[object, ...]]]:
    """Split settlement rows into accepted ones and refused ones
    (:data:`REFUSED_COLUMNS`)."""
    if _all_acceptable(rows, bound, columns):
        return list(rows), []
    good: list[Sequence[object]] = []
    refused: list[tuple[object, ...]] = []
    for row in rows:
        why = refusal(row, bound, columns)
        if why is None:
            good.append(row)
            continue
        v = dict(zip(columns, row, strict=False))
        refused.append(
            (
                v.get("interval") if isinstance(v.get("interval"), int) else -1,
                str(v.get("market")),
                str(v.get("payer")),
                str(v.get("payee")),
                str(v.get("item")),
                why,
            )
        )
    return good, refused
