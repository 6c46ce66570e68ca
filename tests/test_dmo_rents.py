"""The DMO's surplus split into loss rent, congestion and voltage rent, and
linearisation mismatch (``recorder.summary.dmo_rents``): each term comes from
its own payments, and together they are the surplus the ledger shows."""

from __future__ import annotations

import pandas as pd
import pytest

from dsosim.federates.common import ledger
from dsosim.federates.markets.nodal_dmo import DISPATCH_COLUMNS
from dsosim.federates.recorder.summary import dmo_rents, settlement_balance
from tests.test_operator import BIDS, _operator


@pytest.mark.parametrize("vmax", [1.05, 1.035])
def test_rents_add_up_to_the_surplus(vmax: float) -> None:
    op = _operator(vmax=vmax)
    rows, dispatch = [], []
    for k, lmp, shift in ((100, 25.0, 0.0), (140, 12.0, 0.3), (200, 40.0, -0.2)):
        curve, _ = op.interface_bid(k, BIDS)
        op.dispatch(k, lmp, curve.quantity_at(lmp) + shift)  # shift: an award off the curve
        rows += op.dmo_tables["settlements"][1]
        dispatch += op.dmo_tables["dispatch"][1]
    frame = pd.DataFrame(rows, columns=ledger.COLUMNS)
    surplus = settlement_balance(frame, pd.DataFrame())["dmo_surplus"]
    parts = dmo_rents(frame, pd.DataFrame(dispatch, columns=DISPATCH_COLUMNS))
    total = sum(parts[k] for k in ("dmo_loss_rent", "dmo_congestion_rent", "dmo_mismatch"))
    assert parts["dmo_imbalance"] == 0.0
    assert total == pytest.approx(surplus, abs=0.02)  # each term rounded to the cent
    # DERs that inject where losses fall pay a negative loss component: a rent
    # of either sign, but not nothing
    assert parts["dmo_loss_rent"] != 0.0
    if vmax < 1.04:
        assert parts["dmo_congestion_rent"] != 0.0
