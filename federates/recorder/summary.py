"""Headline metrics of a run, computed from the result tables on disk.

Used by the recorder when it finishes (``summary.json``) and by the runner to
print a short report. Every figure is derived from the recorded tables, so a
reader can recompute it with pandas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


def read_table(results_dir: str | Path, table: str) -> pd.DataFrame:
    """One result table (all its part files), or an empty frame."""
    folder = Path(results_dir) / table
    if not folder.is_dir() or not any(folder.glob("part-*.parquet")):
        return pd.DataFrame()
    return pd.read_parquet(folder)


def _r(x: float, digits: int = 6) -> float:
    return float(round(float(x), digits))


def summarise(results_dir: str | Path) -> dict[str, Any]:
    """Headline metrics; see README "Results" for each field's definition."""
    t = {name: read_table(results_dir, name) for name in
         ("iso", "interface", "imbalance", "feeder", "dispatch", "settlements", "traffic")}
    out: dict[str, Any] = {}
    iso, interface, feeder = t["iso"], t["interface"], t["feeder"]
    out["intervals"] = int(iso["interval"].nunique()) if not iso.empty else 0
    if not iso.empty:
        hours = iso["hours"]
        out["generation_cost"] = _r((iso["generation_cost"]).sum(), 2)
        out["congestion_rent"] = _r(iso["congestion_rent"].sum(), 2)
        out["shed_mwh"] = _r((iso["shed_mw"] * hours).sum())
        out["infeasible_intervals"] = int((iso["status"] != "optimal").sum())
    if not interface.empty:
        out["mean_td_lmp"] = _r(interface["lmp"].mean(), 4)
        out["td_energy_mwh"] = _r((interface["cleared_mw"] * interface["hours"]).sum())
    imb = t["imbalance"]
    if not imb.empty:
        out["imbalance_mwh"] = _r((imb["imbalance_mw"].abs() * imb["hours"]).sum())
    if not feeder.empty:
        out["losses_mwh"] = _r((feeder["losses_mw"] * feeder["scale"] * feeder["hours"]).sum())
        out["voltage_violations"] = int(feeder["voltage_violations"].sum())
        out["thermal_violations"] = int(feeder["thermal_violations"].sum())
        out["nonconverged_intervals"] = int((~feeder["converged"]).sum())
        out["vmin_pu"] = _r(feeder["vmin_pu"].min())
        out["vmax_pu"] = _r(feeder["vmax_pu"].max())
    s = t["settlements"]
    if not s.empty:
        out.update(settlement_balance(s, iso))
    traffic = t["traffic"]
    if not traffic.empty:
        out["messages"] = int(traffic["messages"].sum())
        out["bytes"] = int(traffic["bytes"].sum())
    return out


def settlement_balance(ledger: pd.DataFrame, iso: pd.DataFrame) -> dict[str, Any]:
    """Close the books.

    Every ledger row is a payment ``payer -> payee`` of ``amount`` $ in one
    ``market``. Market operators (``operator`` column true for their side)
    keep what buyers pay beyond what sellers receive. For the wholesale market
    that surplus must equal the congestion rent computed from line flows and
    price differences (an independent figure the ISO records), plus the
    imbalance charges it collected; for an LDA market it is the DSO's surplus.
    ``settlement_residual`` = buyers paid - sellers received - congestion rent
    - operator surpluses, and is zero when the books close.
    """
    paid = ledger.loc[~ledger["payer_is_operator"], "amount"].sum()
    received = ledger.loc[~ledger["payee_is_operator"], "amount"].sum()
    iso_rows = ledger[ledger["market"] == "iso"]
    imbalance_net = iso_rows.loc[iso_rows["item"] == "imbalance", "amount"].sum()
    lda = ledger[ledger["market"] != "iso"]
    dso_in = lda.loc[lda["payee"].str.startswith("dso:"), "amount"].sum()
    dso_out = lda.loc[lda["payer"].str.startswith("dso:"), "amount"].sum()
    dso_surplus = dso_in - dso_out
    congestion = iso["congestion_rent"].sum() if not iso.empty else 0.0
    # Reconciliation: the DSO's own record of what it owes the ISO must match
    # the ISO's record of what it charged the DSO.
    iso_view = iso_rows.loc[iso_rows["payer"].str.startswith("dso:") | iso_rows["payee"].str.startswith("dso:")]
    lda_view = lda.loc[lda["payee"].eq("iso") | lda["payer"].eq("iso")]
    unreconciled = _net(iso_view, "iso") - _net(lda_view, "iso")
    residual = paid - received - congestion - imbalance_net - dso_surplus
    return {
        "buyers_paid": _r(paid, 2),
        "sellers_received": _r(received, 2),
        "imbalance_charges": _r(imbalance_net, 2),
        "dso_surplus": _r(dso_surplus, 2),
        "der_revenue": _r(-ledger.loc[ledger["payer"].str.startswith("agg:"), "amount"].sum()
                          + ledger.loc[ledger["payee"].str.startswith("agg:"), "amount"].sum(), 2),
        "settlement_residual": _r(residual, 4),
        "unreconciled": _r(unreconciled, 4),
    }


def _net(rows: pd.DataFrame, party: str) -> float:
    """Net receipts of ``party`` in these rows."""
    return float(rows.loc[rows["payee"] == party, "amount"].sum()
                 - rows.loc[rows["payer"] == party, "amount"].sum())
