"""Books that cannot lie: the ledger refuses non-finite and absurd payments,
naming parties and interval, and the summary never reports a closing residual
when an amount is invalid."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from dsosim.federates.common import ledger
from dsosim.federates.common.parties import Party
from dsosim.federates.recorder.store import ResultStore
from dsosim.federates.recorder.summary import summarise

P = Party.parse
BOUND = ledger.SanityBound(max_mw=2000.0, max_price=10000.0)
H = 1 / 12


def _row(mw: float, price: float = 30.0, hours: float = H, interval: int = 11) -> tuple:
    return ledger.Payment(
        interval, "dmo:lda5", P("agg:agg_storage"), P("dmo:lda5"), "energy", mw, price, hours
    ).row()


def test_ordinary_payments_pass() -> None:
    assert ledger.refusal(_row(0.166), BOUND) is None
    assert ledger.refusal(_row(-1999.0, -1000.0), BOUND) is None


@pytest.mark.parametrize(
    ("row", "words"),
    [
        (_row(math.nan), "mw nan is not a finite number"),
        (_row(0.1, math.inf), "price inf is not a finite number"),
        (_row(9.9e150, 30.0), "amount 2.475e+151 $ beyond the sanity bound 1.66667e+06 $"),
        (_row(2001.0, 1e4), "amount 1.6675e+06 $ beyond the sanity bound"),
        (_row(10.0, 30.0, 0.0), "hours 0.0 must be > 0"),
    ],
)
def test_refusal_names_parties_interval_and_what(row: tuple, words: str) -> None:
    why = ledger.refusal(row, BOUND)
    assert why is not None
    assert why.startswith("interval 11: 'agg:agg_storage' -> 'dmo:lda5' ('dmo:lda5' 'energy')")
    assert words in why


def test_amount_bound_scales_with_hours() -> None:
    assert BOUND.amount(H) == pytest.approx(2000 * 10000 / 12)
    # a distribution price far above the cap on a small quantity is a small amount
    assert ledger.refusal(_row(0.1, 2.3e6), BOUND) is None
    row = list(_row(1.0))
    row[ledger.COLUMNS.index("amount")] = 1e12
    assert "amount 1e+12 $ beyond the sanity bound" in (ledger.refusal(row, BOUND) or "")


def test_screen_splits_rows() -> None:
    good, refused = ledger.screen([_row(1.0), _row(math.nan, interval=12)], BOUND)
    assert good == [_row(1.0)]
    assert len(refused) == 1 and refused[0][:5] == (
        12,
        "dmo:lda5",
        "agg:agg_storage",
        "dmo:lda5",
        "energy",
    )
    assert "mw nan" in str(refused[0][-1])


def _with(row: tuple, **values: object) -> tuple:
    out = list(row)
    for name, value in values.items():
        out[ledger.COLUMNS.index(name)] = value
    return tuple(out)


@pytest.mark.parametrize(
    "bad",
    [
        _row(math.nan),
        _row(0.1, math.inf),
        _row(2001.0, 1e4),
        _row(10.0, 30.0, 0.0),
        _row(10.0, 30.0, -H),
        _with(_row(1.0), mw=True),  # a bool is no number
        _with(_row(1.0), price="30"),
        _with(_row(1.0), hours=None),
        _with(_row(1.0), amount=10**13),  # an int amount beyond the bound
        _row(1.0)[:-1],  # a row too short
    ],
)
@pytest.mark.parametrize("bound", [BOUND, None])
def test_screen_of_many_rows_is_the_row_by_row_screen(bad: tuple, bound) -> None:
    """The column-wise check that passes whole batches at once accepts exactly
    what ``refusal`` accepts, row by row; ints pass as numbers."""
    rows = [_row(1.0), _with(_row(2.0), mw=2, price=30, hours=1, amount=60), bad, _row(-3.0)]
    good, refused = ledger.screen(rows, bound)
    expected = [r for r in rows if ledger.refusal(r, bound) is None]
    assert good == expected
    assert [r[-1] for r in refused] == [
        ledger.refusal(r, bound) for r in rows if ledger.refusal(r, bound) is not None
    ]
    clean = [r for r in rows if r is not bad]
    assert ledger.screen(clean, bound) == (clean, [])


def _results(tmp: Path, settlements: list[tuple], refused: list[tuple]) -> Path:
    store = ResultStore(tmp, flush_every=1)
    store.add(
        "iso",
        ("interval", "hours", "generation_cost", "congestion_rent", "shed_mw", "status", "bids"),
        [(0, H, 25.0, 0.0, 0.0, "optimal", 3)],
    )
    store.add("settlements", ledger.COLUMNS, settlements)
    if refused:
        store.add("ledger_refused", ledger.REFUSED_COLUMNS, refused)
    store.end_interval(0)
    store.finish(complete=True, error=None, summarise=summarise)
    return tmp


def _balanced() -> list[tuple]:
    def pay(payer: str, payee: str, mw: float) -> tuple:
        return ledger.Payment(0, "iso", P(payer), P(payee), "energy", mw, 30.0, H).row()

    return [pay("load:5", "iso", 10.0), pay("iso", "gen:1", 10.0)]


def test_summary_residual_is_zero_only_for_valid_books(tmp_path: Path) -> None:
    ok = summarise(_results(tmp_path / "ok", _balanced(), []))
    assert ok["settlement_residual"] == 0.0 and "ledger_refused" not in ok
    # a refused payment: the books are incomplete, so no residual is claimed
    _, refused = ledger.screen([_row(math.nan)], BOUND)
    bad = summarise(_results(tmp_path / "refused", _balanced(), refused))
    assert bad["settlement_residual"] is None and bad["ledger_refused"] == 1
    # a NaN amount that reached the table some other way (pandas sums skip NaN)
    nan_row = ledger.Payment(0, "iso", P("load:5"), P("iso"), "energy", math.nan, 30.0, H).row()
    worse = summarise(_results(tmp_path / "nan", [*_balanced(), nan_row], []))
    assert worse["settlement_residual"] is None and worse["ledger_refused"] == 1
    assert pd.read_parquet(tmp_path / "nan" / "settlements")["amount"].isna().sum() == 1
