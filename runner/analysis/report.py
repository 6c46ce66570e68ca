"""Plots and a self-contained HTML report of a model comparison."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from dsosim.federates.common.config import LimitsConfig
from dsosim.federates.recorder.summary import read_table
from dsosim.runner.analysis.seeds import HI, LO, with_intervals

PLOTS = ("prices.png", "voltages.png", "dispatch.png", "imbalance.png", "batteries.png")
UNITS = {
    "total_cost": "$",
    "generation_cost": "$",
    "der_revenue": "$",
    "settlement_residual": "$",
    "buyers_paid": "$",
    "sellers_received": "$",
    "congestion_rent": "$",
    "imbalance_charges": "$",
    "dmo_surplus": "$",
    "dmo_loss_rent": "$",
    "dmo_congestion_rent": "$",
    "dmo_mismatch": "$",
    "dmo_imbalance": "$",
    "expost_voltage_violations": "node-intervals",
    "expost_thermal_violations": "branch-intervals",
    "expost_vmax_pu": "pu",
    "gap_v_pu": "pu",
    "gap_lin_v_pu": "pu",
    "gap_losses_mw": "MW",
    "gap_lin_losses_mw": "MW",
    "mean_lmp": "$/MWh",
    "dlmp_spread": "$/MWh",
    "vmin_pu": "pu",
    "vmax_pu": "pu",
    "losses_mwh": "MWh",
    "imbalance_mwh": "MWh",
    "pv_curtailed_mwh": "MWh",
    "voltage_violations": "node-intervals",
    "thermal_violations": "branch-intervals",
    "bytes": "bytes",
    "bytes_per_interval": "bytes",
    "wall_s": "s",
}
"""Units of the comparison's columns, shown in the report's headers."""
DECIMALS = {"$": 2, "$/MWh": 3, "pu": 4, "MWh": 3, "s": 1}


def _hours(frame: pd.DataFrame, interval_h: float) -> pd.Series:
    return frame["interval"] * interval_h


def voltage_bands(out: Path, models: list[str]) -> list[tuple[float, float]]:
    """The voltage bands (vmin, vmax, pu) the compared runs' LDAs were held to,
    from each model's federation.json."""
    bands = set()
    for m in models:
        path = out / f"model-{m}" / "federation.json"
        if path.is_file():
            for dso in json.loads(path.read_text())["dsos"]:
                limits = LimitsConfig.model_validate(dso.get("limits", {}))
                bands.add((limits.vmin_pu, limits.vmax_pu))
    return sorted(bands)


def _style(i: int) -> dict[str, Any]:
    """Line style of the i-th model: lines that coincide stay visible (the
    first drawn widest, a dash pattern each)."""
    return {"lw": max(0.8, 3.2 - 0.4 * i), "ls": ("-", "--", "-.", ":")[i % 4], "zorder": 2 + i}


def plot_all(out: Path, models: list[str], *, into: Path | None = None) -> list[Path]:
    """Price, voltage-envelope, DER-dispatch, imbalance and battery (state of
    charge against the price) plots over the run of the runs in
    ``out/model-<m>/``, written into ``into`` (default ``out``)."""
    runs = {m: out / f"model-{m}" / "results" for m in models}
    into = out if into is None else into
    feeder = {m: read_table(r, "feeder") for m, r in runs.items()}
    interval_h = next((float(f["hours"].iloc[0]) for f in feeder.values() if not f.empty), 1 / 12)
    paths = []

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, (m, r) in enumerate(runs.items()):
        iface = read_table(r, "interface")
        if not iface.empty:
            ax.plot(_hours(iface, interval_h), iface["lmp"], label=f"LMP, model {m}", **_style(i))
        disp = read_table(r, "dispatch")
        if not disp.empty:
            g = disp.groupby("interval")["dlmp"]
            x = g.mean().index * interval_h
            ax.fill_between(
                x, g.min().values, g.max().values, alpha=0.15, label=f"DLMP range, model {m}"
            )
    ax.set(xlabel="hour", ylabel="$/MWh", title="T-D LMP and distribution LMPs")
    ax.legend(fontsize=7, ncol=2)
    paths.append(_save(fig, into / "prices.png"))

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, (m, f) in enumerate(feeder.items()):
        if not f.empty:
            style = _style(i)
            (line,) = ax.plot(_hours(f, interval_h), f["vmax_pu"], label=f"model {m}", **style)
            ax.plot(_hours(f, interval_h), f["vmin_pu"], color=line.get_color(), **style)
    bands = voltage_bands(out, models)
    for vmin, vmax in bands:
        for limit in (vmin, vmax):
            ax.axhline(limit, color="k", lw=0.8, ls=":")
    shown = ", ".join(f"{vmin:g}-{vmax:g}" for vmin, vmax in bands)
    ax.set(
        xlabel="hour",
        ylabel="pu",
        title=f"Feeder voltage envelope (upper and lower line per model; band {shown} pu)",
    )
    ax.legend(fontsize=7, ncol=2)
    paths.append(_save(fig, into / "voltages.png"))

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, (m, f) in enumerate(feeder.items()):
        if not f.empty:
            ax.plot(_hours(f, interval_h), f["der_mw"], label=f"model {m}", **_style(i))
    ax.axhline(0, color="k", lw=0.6)
    ax.set(
        xlabel="hour",
        ylabel="MW per feeder (net demand)",
        title="DER net dispatch on the modelled feeder",
    )
    ax.legend(fontsize=7, ncol=2)
    paths.append(_save(fig, into / "dispatch.png"))

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, (m, r) in enumerate(runs.items()):
        imb = read_table(r, "imbalance")
        if not imb.empty:
            ax.plot(_hours(imb, interval_h), imb["imbalance_mw"], label=f"model {m}", **_style(i))
    ax.axhline(0, color="k", lw=0.6)
    ax.set(
        xlabel="hour",
        ylabel="MW at the T-D bus",
        title="Imbalance: metered T-D flow minus ISO schedule",
    )
    ax.legend(fontsize=7, ncol=2)
    paths.append(_save(fig, into / "imbalance.png"))
    paths.append(_batteries(runs, interval_h, into / "batteries.png"))
    return paths


def _batteries(runs: dict[str, Path], interval_h: float, path: Path) -> Path:
    """Every battery's state of charge together (stored over capacity), per
    model, above the T-D price it answered: arbitrage shows as charging in the
    price valleys and discharging at the peaks."""
    fig, (soc_ax, lmp_ax) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for m, r in runs.items():
        bat = read_table(r, "ders_battery")
        if not bat.empty:
            g = bat.groupby("interval")[["energy_mwh", "capacity_mwh"]].sum()
            soc_ax.plot(g.index * interval_h, g["energy_mwh"] / g["capacity_mwh"], lw=1.0)
            soc_ax.lines[-1].set_label(f"model {m}")
        iface = read_table(r, "interface")
        if not iface.empty:
            lmp_ax.plot(_hours(iface, interval_h), iface["lmp"], lw=0.8, label=f"model {m}")
    soc_ax.set(ylabel="state of charge", title="Batteries: state of charge, all fleets together")
    soc_ax.legend(fontsize=7, ncol=4)
    lmp_ax.set(xlabel="hour", ylabel="T-D LMP, $/MWh")
    lmp_ax.legend(fontsize=7, ncol=4)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    # no timestamps in the metadata: the same comparison gives the same bytes
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def _number(value: float, unit: str | None) -> str:
    if unit in DECIMALS:
        return f"{value:,.{DECIMALS[unit]}f}"
    if value == round(value):
        return f"{value:,.0f}"
    return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.1f}"


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison as the report shows it: numbers with thousands
    separators and fixed decimals per unit, units in the headers."""
    out = pd.DataFrame(index=table.index)
    for column in table.columns:
        unit = UNITS.get(column)
        values = table[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            values = values.map(lambda x, u=unit: "" if pd.isna(x) else _number(float(x), u))
        out[f"{column} ({unit})" if unit else column] = values
    return out


def write_html(
    out: Path,
    table: pd.DataFrame,
    scenario: str,
    plots: list[Path],
    *,
    seeds: list[int] | None = None,
) -> Path:
    """One HTML file with the table and the plots embedded (no external files).
    A table aggregated over seeds (``seeds.aggregate``) shows each figure as
    ``mean [lo, hi]``."""
    if seeds is not None and len(seeds) > 1:
        keep = [c for c in table.columns if not c.endswith((LO, HI))]
        shown = with_intervals(table, keep)
        note = (
            f"<p>Every model on seeds {seeds[0]} to {seeds[-1]} ({len(seeds)} runs each; each "
            "seed draws new fleets, clouds, forecast errors and responses). Each figure is the "
            "mean over the seeds and, in brackets, its 95 % Student-t interval "
            "(mean &plusmn; t<sub>0.975, N-1</sub> sd/&radic;N). Plots show the first seed.</p>"
        )
    else:
        shown, note = readable(table), ""
    images = "\n".join(
        f'<figure><img alt="{p.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{p.stem}</figcaption></figure>'
        for p in plots
    )
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>dsosim comparison: {html.escape(scenario)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #bbb;padding:3px 6px;text-align:right}}th{{background:#eee}}
img{{max-width:100%}}figure{{margin:1em 0}}</style></head><body>
<h1>DSO organisational models compared</h1>
<p>Scenario <code>{html.escape(scenario)}</code>: every model on the same case, seed and DER fleets.
Columns are defined in <code>docs/models.md</code>;
<code>settlement_residual</code> is zero when the books close.</p>
{note}
{shown.to_html(index=False, na_rep="")}
{images}
</body></html>
"""
    path = out / "report.html"
    path.write_text(body, encoding="utf-8")
    return path
