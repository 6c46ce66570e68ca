"""``dsosim compare SCENARIO --out DIR``: every organisational model, side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsosim.runner.analysis.compare import run_models
from dsosim.runner.analysis.report import plot_all, write_html
from dsosim.runner.build.models import MODEL_NAMES, canonical_model
from dsosim.runner.build.scenario import ScenarioError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario")
    p.add_argument(
        "--out", required=True, help="output folder (comparison.csv, plots, report.html)"
    )
    p.add_argument("--hours", type=float, default=None, help="override the scenario's hours")
    p.add_argument(
        "--models",
        nargs="+",
        default=list(MODEL_NAMES),
        type=canonical_model,  # layered = 3, as dsosim run --model takes it
        choices=MODEL_NAMES,
        metavar="MODEL",
        help=f"models to run: {', '.join(MODEL_NAMES)} or layered (default: all)",
    )


def handle(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.models = list(dict.fromkeys(args.models))  # 3 and layered: one run

    def done(model: str, row: dict) -> None:
        state = "ok" if row.get("complete") else f"FAILED: {row.get('failure')}"
        print(f"  model {model:8s} {row.get('wall_s', 0):6.1f} s  {state}", flush=True)

    print(f"comparing {len(args.models)} models on {args.scenario}", flush=True)
    try:
        table = run_models(
            Path(args.scenario), out, models=args.models, hours=args.hours, on_done=done
        )
    except (ScenarioError, ValueError, OSError) as exc:
        print(f"dsosim compare: {exc}", file=sys.stderr)
        return 2
    table.to_csv(out / "comparison.csv", index=False)
    plots = plot_all(out, list(args.models))
    report = write_html(out, table, str(args.scenario), plots)
    shown = [
        "model",
        "total_cost",
        "der_revenue",
        "mean_lmp",
        "dlmp_spread",
        "voltage_violations",
        "thermal_violations",
        "losses_mwh",
        "imbalance_mwh",
        "settlement_residual",
        "messages",
        "iso_bids",
    ]
    print(table[[c for c in shown if c in table]].to_string(index=False))
    print(f"wrote {out / 'comparison.csv'}, {len(plots)} plots, {report}")
    return 0 if bool(table["complete"].all()) else 1
