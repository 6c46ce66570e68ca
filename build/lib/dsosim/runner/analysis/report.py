"""Plots and a self-contained HTML report of a model comparison."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from dsosim.federates.recorder.summary import read_table

PLOTS = ("prices.png", "voltages.png", "dispatch.png", "imbalance.png")


def _hours(frame: pd.DataFrame, interval_h: float) -> pd.Series:
    return frame["interval"] * interval_h


def plot_all(out: Path, models: list[str]) -> list[Path]:
    """Price, voltage-envelope, DER-dispatch and imbalance plots over the day."""
    runs = {m: out / f"model-{m}" / "results" for m in models}
    feeder = {m: read_table(r, "feeder") for m, r in runs.items()}
    interval_h = next((float(f["hours"].iloc[0]) for f in feeder.values() if not f.empty), 1 / 12)
    paths = []

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for m, r in runs.items():
        iface = read_table(r, "interface")
        if not iface.empty:
            ax.plot(_hours(iface, interval_h), iface["lmp"], lw=1.2, label=f"LMP, model {m}")
        disp = read_table(r, "dispatch")
        if not disp.empty:
            g = disp.groupby("interval")["dlmp"]
            x = g.mean().index * interval_h
            ax.fill_between(
                x, g.min().values, g.max().values, alpha=0.15, label=f"DLMP range, model {m}"
            )
    ax.set(xlabel="hour", ylabel="$/MWh", title="T-D LMP and distribution LMPs")
    ax.legend(fontsize=7, ncol=2)
    paths.append(_save(fig, out / "prices.png"))

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for m, f in feeder.items():
        if not f.empty:
            (line,) = ax.plot(_hours(f, interval_h), f["vmax_pu"], lw=1.0, label=f"max, model {m}")
            ax.plot(_hours(f, interval_h), f["vmin_pu"], lw=1.0, ls="--", color=line.get_color())
    for band in (0.95, 1.05):
        ax.axhline(band, color="k", lw=0.8, ls=":")
    ax.set(
        xlabel="hour",
        ylabel="pu",
        title="Feeder voltage envelope (max solid, min dashed; band 0.95-1.05)",
    )
    ax.legend(fontsize=7, ncol=2)
    paths.append(_save(fig, out / "voltages.png"))

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for m, f in feeder.items():
        if not f.empty:
            ax.plot(_hours(f, interval_h), f["der_mw"], lw=1.0, label=f"model {m}")
    ax.axhline(0, color="k", lw=0.6)
    ax.set(
        xlabel="hour",
        ylabel="MW per feeder (net demand)",
        title="DER net dispatch on the modelled feeder",
    )
    ax.legend(fontsize=7, ncol=2)
    paths.append(_save(fig, out / "dispatch.png"))

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for m, r in runs.items():
        imb = read_table(r, "imbalance")
        if not imb.empty:
            ax.plot(_hours(imb, interval_h), imb["imbalance_mw"], lw=1.0, label=f"model {m}")
    ax.axhline(0, color="k", lw=0.6)
    ax.set(
        xlabel="hour",
        ylabel="MW at the T-D bus",
        title="Imbalance: metered T-D flow minus ISO schedule",
    )
    ax.legend(fontsize=7, ncol=2)
    paths.append(_save(fig, out / "imbalance.png"))
    return paths


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    # no timestamps in the metadata: the same comparison gives the same bytes
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def write_html(out: Path, table: pd.DataFrame, scenario: str, plots: list[Path]) -> Path:
    """One HTML file with the table and the plots embedded (no external files)."""
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
{table.to_html(index=False, na_rep="", float_format=lambda x: f"{x:.4g}")}
{images}
</body></html>
"""
    path = out / "report.html"
    path.write_text(body, encoding="utf-8")
    return path
