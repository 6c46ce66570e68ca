"""``dsosim compare SCENARIO --out DIR [--seeds N] [--jobs J]``: every
organisational model, side by side (over N seeds: means and 95 % intervals)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from dsosim.runner.analysis.compare import run_models
from dsosim.runner.analysis.report import plot_all, write_html
from dsosim.runner.analysis.seeds import aggregate, seed_list, with_intervals
from dsosim.runner.build.models import MODEL_NAMES, canonical_model
from dsosim.runner.build.scenario import ScenarioError, load_scenario
from dsosim.runner.cli.options import add_time_arguments

SHOWN = (
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
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario")
    p.add_argument(
        "--out", required=True, help="output folder (comparison.csv, plots, report.html)"
    )
    add_time_arguments(p)
    p.add_argument(
        "--models",
        nargs="+",
        default=list(MODEL_NAMES),
        type=canonical_model,  # layered = 3, as dsosim run --model takes it
        choices=MODEL_NAMES,
        metavar="MODEL",
        help=f"models to run: {', '.join(MODEL_NAMES)} or layered (default: all)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="run every model on N seeds (the scenario's seed, +1, ...) and report each "
        "column's mean and 95 %% t-interval (default 1: the scenario's seed only)",
    )
    p.add_argument("--jobs", type=int, default=1, help="federations run at once (default 1)")


def handle(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        seeds = seed_list(load_scenario(args.scenario)[0].seed, args.seeds)
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    except (ScenarioError, ValueError, OSError) as exc:
        print(f"dsosim compare: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    args.models = list(dict.fromkeys(args.models))  # 3 and layered: one run

    def done(label: str, row: dict) -> None:
        state = "ok" if row.get("complete") else f"FAILED: {row.get('failure')}"
        print(f"  model {label:16s} {row.get('wall_s', 0):6.1f} s  {state}", flush=True)

    many = len(seeds) > 1
    print(
        f"comparing {len(args.models)} models on {args.scenario}"
        + (f", seeds {seeds[0]}-{seeds[-1]}, {args.jobs} at a time" if many else ""),
        flush=True,
    )
    try:
        runs = run_models(
            Path(args.scenario),
            out,
            models=args.models,
            hours=args.hours,
            start_hour=args.start_hour,
            on_done=done,
            seeds=seeds if many else None,
            jobs=args.jobs,
        )
    except (ScenarioError, ValueError, OSError) as exc:
        print(f"dsosim compare: {exc}", file=sys.stderr)
        return 2
    if many:
        runs.to_csv(out / "runs.csv", index=False)
        table = aggregate(runs)
        plots = plot_all(out / f"seed-{seeds[0]}", list(args.models), into=out)
        shown: pd.DataFrame = with_intervals(table, SHOWN)
    else:
        table = runs
        plots = plot_all(out, list(args.models))
        shown = table[[c for c in SHOWN if c in table]]
    table.to_csv(out / "comparison.csv", index=False)
    report = write_html(out, table, str(args.scenario), plots, seeds=seeds)
    print(shown.to_string(index=False))
    extra = " and runs.csv (one row per model and seed)" if many else ""
    print(f"wrote {out / 'comparison.csv'}{extra}, {len(plots)} plots, {report}")
    return 0 if bool(table["complete"].all()) else 1
