"""``dsosim run SCENARIO [--out DIR] [--hours H]``: build, launch, summarise."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from dsosim.runner.build.federation import BuildResult, build
from dsosim.runner.build.models import add_model_argument
from dsosim.runner.build.scenario import ScenarioError
from dsosim.runner.launch import build_and_launch

HEADLINES = (
    ("intervals", "market intervals"),
    ("mean_td_lmp", "mean LMP at T-D buses, $/MWh"),
    ("generation_cost", "generation cost, $"),
    ("td_energy_mwh", "energy scheduled at T-D buses, MWh"),
    ("imbalance_mwh", "|imbalance| at T-D buses, MWh"),
    ("losses_mwh", "feeder losses (scaled), MWh"),
    ("voltage_violations", "node-intervals outside the voltage band"),
    ("thermal_violations", "branch-intervals above rating"),
    ("der_revenue", "DER revenue, $"),
    ("settlement_residual", "settlement residual, $ (0 = books close)"),
    ("ledger_refused", "payments refused from the books (ledger_refused)"),
    ("messages", "market messages"),
    ("rt_lag_p99_ms", "real time: grant lag behind wall clock p99, ms"),
    ("hil_answered", "hardware: device-intervals answered"),
    ("hil_fallback", "hardware: device-intervals on fallback"),
    ("hil_rtt_p99_ms", "hardware: set-point round trip p99, ms"),
)


def progress_bar(total: int, *, quiet: bool) -> tqdm:
    """Intervals done, elapsed time and ETA on one line (tqdm); a terminal
    sees it redrawn every second, a log file a line every 30 s."""
    return tqdm(
        total=total,
        unit="interval",
        disable=quiet,
        file=sys.stderr,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        dynamic_ncols=True,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario")
    p.add_argument("--out", default=None, help="output folder (default: runs/<scenario file stem>)")
    p.add_argument("--hours", type=float, default=None, help="override the scenario's hours")
    add_model_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def handle(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path("runs") / Path(args.scenario).stem
    try:
        built = build(args.scenario, out, hours=args.hours, model=args.model)
    except (ScenarioError, ValueError, OSError) as exc:
        print(f"dsosim run: {exc}", file=sys.stderr)
        return 2
    n = built.config.time.n_intervals
    first = [built]

    def make() -> BuildResult:
        """The build above, then (on a retry) a fresh one on a new port."""
        return (
            first.pop() if first else build(args.scenario, out, hours=args.hours, model=args.model)
        )

    print(
        f"running {built.config.name}: {n} intervals, "
        f"{len(built.config.federate_names())} federates "
        f"(helics run --path={built.runner})",
        flush=True,
    )

    bar = progress_bar(n, quiet=args.quiet)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        built, outcome = build_and_launch(make, on_progress=progress)
    except KeyboardInterrupt:
        print("dsosim run: interrupted; federation stopped", file=sys.stderr)
        return 130
    finally:
        bar.close()
    if not outcome.ok:
        print(
            f"dsosim run: FAILED after {outcome.wall_s:.1f} s\n{outcome.failure}", file=sys.stderr
        )
        print(f"results written so far (marked incomplete): {built.results_dir}", file=sys.stderr)
        return 1
    print(f"done in {outcome.wall_s:.1f} s; results in {built.results_dir}")
    for key, label in HEADLINES:
        if key in outcome.summary:
            print(f"  {label:45s} {outcome.summary[key]}")
    return 0
