"""Headline metrics of a run, computed from the result tables on disk.

Used by the recorder when it finishes (``summary.json``) and by the runner to
print a short report. Every figure is derived from the recorded tables, so a
reader can recompute it with pandas.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsosim.federates.common.parties import OPERATORS, Party, Role

if TYPE_CHECKING:  # pandas is imported where a summary is made: the recorder starts faster
    import pandas as pd


def read_table(results_dir: str | Path, table: str) -> pd.DataFrame:
    """One result table (all its part files), or an empty frame."""
    import pandas as pd

    folder = Path(results_dir) / table
    if not folder.is_dir() or not any(folder.glob("part-*.parquet")):
        return pd.DataFrame()
    return pd.read_parquet(folder)


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _invalid_amounts(amount: pd.Series) -> int:
    """Ledger amounts that are not finite numbers (a float column at once)."""
    if amount.dtype.kind == "f":
        import numpy as np

        return int((~np.isfinite(amount.to_numpy())).sum())
    return int((~amount.map(_finite)).sum())


def _r(x: float, digits: int = 6) -> float:
    return float(round(float(x), digits))


def summarise(results_dir: str | Path) -> dict[str, Any]:
    """Headline metrics; see README "Results" for each field's definition."""
    t = {
        name: read_table(results_dir, name)
        for name in (
            "iso",
            "interface",
            "imbalance",
            "feeder",
            "dispatch",
            "settlements",
            "traffic",
            "expost",
            "linearisation",
            "day_ahead_dispatch",
        )
    }
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
    out.update(expost_summary(t["expost"]))
    lin = t["linearisation"]
    if not lin.empty and (lin["iterations"] > 0).any():
        # the LDA market re-linearised at its dispatch (nodal_dmo): intervals
        # where it still moved after the last re-linearisation, and how far
        out["relinearised_unconverged"] = int((~lin["converged"] & (lin["iterations"] > 0)).sum())
        out["relinearised_change_max_mw"] = _r(lin["change_mw"].max())
    s = t["settlements"]
    if not s.empty:
        out.update(settlement_balance(s, iso))
        out.update(dmo_rents(s, t["dispatch"], t["day_ahead_dispatch"]))
    refused = read_table(results_dir, "ledger_refused")
    invalid = _invalid_amounts(s["amount"]) if "amount" in s else 0
    if len(refused) or invalid:
        # the books hold (or had to refuse) invalid amounts: they do not close
        out["settlement_residual"] = None
        out["ledger_refused"] = len(refused) + invalid
    traffic = t["traffic"]
    if not traffic.empty:
        out["messages"] = int(traffic["messages"].sum())
        out["bytes"] = int(traffic["bytes"].sum())
    if not iso.empty:
        out["iso_bids"] = _r(iso["bids"].mean(), 3)
    out.update(real_time_summary(results_dir))
    return out


def expost_summary(expost: pd.DataFrame) -> dict[str, Any]:
    """The ex-post physics check (``dso.grid``): violations of the dispatch in
    a power flow from the controls' compiled state, and the market-physics
    gap (largest |predicted - power flow| voltage, pu, and losses, MW per
    modelled feeder, over every interval)."""
    if expost.empty:
        return {}
    out = {
        "expost_voltage_violations": int(expost["voltage_violations"].sum()),
        "expost_thermal_violations": int(expost["thermal_violations"].sum()),
        "expost_vmax_pu": _r(expost["vmax_pu"].max()),
        "expost_vmin_pu": _r(expost["vmin_pu"].min()),
        "gap_v_pu": _r(expost["gap_v_pu"].max()),
        "gap_losses_mw": _r(expost["gap_losses_mw"].abs().max()),
        "gap_lin_v_pu": _r(expost["gap_lin_v_pu"].max()),
        "gap_lin_losses_mw": _r(expost["gap_lin_losses_mw"].abs().max()),
        "expost_taps_moved": int(expost["taps_moved"].sum()),
    }
    return {k: v for k, v in out.items() if v == v}  # no NaN: nothing predicted


def real_time_summary(results_dir: str | Path) -> dict[str, Any]:
    """Wall-clock tracking and hardware-in-the-loop figures (real-time runs
    only; they depend on the machine, so deterministic runs have none)."""
    out: dict[str, Any] = {}
    rt = read_table(results_dir, "realtime")
    if not rt.empty:
        lag = rt["lag_ms"]
        out["rt_grants"] = len(lag)
        out["rt_lag_p50_ms"] = _r(lag.quantile(0.5), 3)
        out["rt_lag_p99_ms"] = _r(lag.quantile(0.99), 3)
        out["rt_lag_max_ms"] = _r(lag.max(), 3)
    hil = read_table(results_dir, "hil")
    if not hil.empty:
        out["hil_device_intervals"] = len(hil)
        out["hil_answered"] = int((hil["fallback"] == "none").sum())
        out["hil_fallback"] = int((hil["fallback"] != "none").sum())
        rtt = hil["rtt_setpoint_ms"].dropna()
        if len(rtt):
            out["hil_rtt_p50_ms"] = _r(rtt.quantile(0.5), 3)
            out["hil_rtt_p99_ms"] = _r(rtt.quantile(0.99), 3)
    return out


def settlement_balance(ledger: pd.DataFrame, iso: pd.DataFrame) -> dict[str, Any]:
    """Close the books.

    Every ledger row is a payment ``payer -> payee`` of ``amount`` $ in one
    ``market``. Market operators (the ISO, the DMOs) keep what buyers pay
    beyond what sellers receive. For the ISO that must be the congestion rent
    (computed independently from line flows and LMP differences) plus the
    imbalance charges it collected; a DMO keeps its surplus (distribution
    congestion and loss rent, net of the imbalance it was charged).
    ``settlement_residual`` = buyers paid - sellers received - congestion rent
    - imbalance charges - DMO surpluses: zero when the books close. It is not
    zero by construction: the ISO's and each DMO's ledgers are written by
    different federates, and the ISO's congestion rent comes from flows.
    ``unreconciled``: what the ISO says the DMOs paid it for energy minus what
    the DMOs say they paid.
    """
    payer, payee, amount = ledger["payer"], ledger["payee"], ledger["amount"]
    import pandas as pd

    # a day's ledger has a few dozen parties in 10^5 rows: parse each once
    role = {text: Party.parse(text).role for text in pd.unique(pd.concat([payer, payee]))}
    payer_role, payee_role = payer.map(role), payee.map(role)
    payer_op, payee_op = payer_role.isin(OPERATORS), payee_role.isin(OPERATORS)
    paid = amount[~payer_op].sum()
    received = amount[~payee_op].sum()
    in_iso = ledger["market"] == "iso"
    imbalance = amount[in_iso & (ledger["item"] == "imbalance")].sum()
    to_dmo, from_dmo = payee_role == Role.DMO, payer_role == Role.DMO
    local = ~in_iso
    dmo_energy_dmo_view = amount[local & from_dmo & (payee_role == Role.ISO)].sum()
    energy = ledger["item"].isin(["energy", "day_ahead"])  # two settlements: both
    dmo_energy_iso_view = amount[in_iso & from_dmo & energy].sum()
    dmo_imbalance = amount[in_iso & from_dmo & (ledger["item"] == "imbalance")].sum()
    dmo_surplus = amount[local & to_dmo].sum() - amount[local & from_dmo].sum() - dmo_imbalance
    congestion = iso["congestion_rent"].sum() if not iso.empty else 0.0
    residual = paid - received - congestion - imbalance - dmo_surplus
    aggs_in, aggs_out = payee_role == Role.AGG, payer_role == Role.AGG
    return {
        "buyers_paid": _r(paid, 2),
        "sellers_received": _r(received, 2),
        "imbalance_charges": _r(imbalance, 2),
        "dmo_surplus": _r(dmo_surplus, 2),
        "der_revenue": _r(amount[aggs_in].sum() - amount[aggs_out].sum(), 2),
        "settlement_residual": _r(residual, 4),
        "unreconciled": _r(dmo_energy_iso_view - dmo_energy_dmo_view, 4),
    }


_DA_KEYS = (
    "interval",
    "aggregator",
    "location",
    "da_dlmp_energy",
    "da_dlmp_loss",
    "da_dlmp_congestion",
)


def _der_energy(rows: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """DER settlement rows (``item`` = ``prefix`` + location) as the keys of
    the dispatch tables and the energy settled, MWh."""
    import pandas as pd

    return pd.DataFrame(
        {
            "interval": rows["interval"].to_numpy(),
            "aggregator": rows["payer"].str.removeprefix("agg:").to_numpy(),
            "location": rows["item"].str.removeprefix(prefix).to_numpy(),
            "mwh": (rows["mw"] * rows["hours"]).to_numpy(),
        }
    )


def dmo_rents(
    ledger: pd.DataFrame, dispatch: pd.DataFrame, day_ahead: pd.DataFrame | None = None
) -> dict[str, Any]:
    """The DMOs' surplus split by where it comes from, each term from the
    payments that make it (not as a remainder):

    * ``dmo_loss_rent``: what DERs paid through the loss component of their
      DLMP (MW x h x ``dlmp_loss``), plus loss charges on peer-to-peer trades;
      with two settlements, real-time deviations at real-time DLMPs and
      day-ahead schedules at day-ahead DLMPs (``day_ahead``: the
      ``day_ahead_dispatch`` table), each through its own components;
    * ``dmo_congestion_rent``: through the congestion and voltage component;
    * ``dmo_mismatch``: the energy the DMO sold inside the LDA at the energy
      component of the DLMPs (day-ahead and real-time) and to
      the utility at the T-D LMP, less what it bought from the ISO: non-zero
      because the linearised feeder's head power is not the sum of what was
      charged (losses at the operating point are charged to the utility,
      marginal ones to the DERs; an award the feeder cannot meet; the bid's
      loss error);
    * ``dmo_imbalance``: minus the imbalance the DMOs were charged.

    They add up to ``dmo_surplus`` when every DMO payment is one of these
    (``tests`` check it); a payment of another kind would show as a gap."""
    if dispatch.empty:
        return {}
    # string tests on categories: a day's ledger has 10^5 rows of a few hundred
    # distinct parties and items, each tested once instead of once per row
    payee, payer, item = (ledger[c].astype("category") for c in ("payee", "payer", "item"))
    dmo_in = payee.str.startswith("dmo:") & (ledger["market"] != "iso")
    from_ders = dmo_in & payer.str.startswith("agg:")
    keys = _der_energy(ledger[from_ders & item.str.startswith("energy@")], "energy@")
    parts = keys.merge(
        dispatch[
            ["interval", "aggregator", "location", "dlmp_energy", "dlmp_loss", "dlmp_congestion"]
        ],
        on=["interval", "aggregator", "location"],
        how="left",
        validate="one_to_one",
    )
    p2p_loss = ledger["amount"][dmo_in & (item == "loss charge")].sum()
    utility = ledger["amount"][dmo_in & payer.str.startswith("utility:")].sum()
    # two settlements: DER day-ahead schedules, at their day-ahead DLMPs
    da_parts = _der_energy(ledger[from_ders & item.str.startswith("day_ahead@")], "day_ahead@")
    if da_parts.empty:
        da_energy = da_loss = da_congestion = 0.0
    else:
        if day_ahead is None or day_ahead.empty:
            raise ValueError("day-ahead DER settlements without a day_ahead_dispatch table")
        da_parts = da_parts.merge(
            day_ahead[list(_DA_KEYS)],
            on=["interval", "aggregator", "location"],
            how="left",
            validate="one_to_one",
        )
        da_energy = (da_parts["mwh"] * da_parts["da_dlmp_energy"]).sum()
        da_loss = (da_parts["mwh"] * da_parts["da_dlmp_loss"]).sum()
        da_congestion = (da_parts["mwh"] * da_parts["da_dlmp_congestion"]).sum()
    to_iso = ledger["amount"][
        (ledger["market"] != "iso") & payer.str.startswith("dmo:") & (payee == "iso")
    ].sum()
    imbalance = ledger["amount"][
        (ledger["market"] == "iso") & payer.str.startswith("dmo:") & (item == "imbalance")
    ].sum()
    return {
        "dmo_loss_rent": _r((parts["mwh"] * parts["dlmp_loss"]).sum() + p2p_loss + da_loss, 2),
        "dmo_congestion_rent": _r(
            (parts["mwh"] * parts["dlmp_congestion"]).sum() + da_congestion, 2
        ),
        "dmo_mismatch": _r(
            (parts["mwh"] * parts["dlmp_energy"]).sum() + da_energy + utility - to_iso, 2
        ),
        "dmo_imbalance": _r(-imbalance, 2),
    }
