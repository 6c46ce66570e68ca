"""``dsosim run SCENARIO [--out DIR] [--hours H]``: build, launch, summarise."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tqdm import tqdm

from dsosim.federates.common.lifecycle import AlreadyRunning, hold_lock
from dsosim.runner.build.federation import BuildResult, build
from dsosim.runner.build.models import add_model_argument
from dsosim.runner.build.scenario import ScenarioError
from dsosim.runner.cli.options import add_processes_argument, add_time_arguments
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
    add_time_arguments(p)
    add_model_argument(p)
    add_processes_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=None,
        metavar="S",
        help="stop the federation after S wall-clock seconds (results so far kept, "
        "marked incomplete); exit code 124",
    )


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds: {text!r}")
    return value


LOCK_FILE = ".run.lock"


def _say(text: str, *, err: bool = False) -> None:
    """Print; if the reader went away (``dsosim run ... | head -1``), keep
    running silently: the results still land in the output folder."""
    stream = sys.stderr if err else sys.stdout
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def handle(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path("runs") / Path(args.scenario).stem
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = hold_lock(out / LOCK_FILE, f"output folder {out}")
    except AlreadyRunning as exc:
        _say(f"dsosim run: {exc} (another dsosim run); choose another --out", err=True)
        return 2
    except OSError as exc:
        _say(f"dsosim run: --out {out}: {exc.strerror or exc}", err=True)
        return 2
    try:
        return _run(args, out)
    finally:
        os.close(lock)


def _build(args: argparse.Namespace, out: Path) -> BuildResult:
    return build(
        args.scenario,
        out,
        hours=args.hours,
        start_hour=args.start_hour,
        model=args.model,
        processes=args.processes,
    )


def _run(args: argparse.Namespace, out: Path) -> int:
    try:
        built = _build(args, out)
    except (ScenarioError, ValueError, OSError) as exc:
        _say(f"dsosim run: {exc}", err=True)
        return 2
    n = built.config.time.n_intervals
    first = [built]

    def make() -> BuildResult:
        """The build above, then (on a retry) a fresh one on a new port."""
        return first.pop() if first else _build(args, out)

    _say(
        f"running {built.config.name}: {n} intervals, "
        f"{len(built.config.federate_names())} federates "
        f"(helics run --path={built.runner})"
    )

    bar = progress_bar(n, quiet=args.quiet)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        built, outcome = build_and_launch(make, on_progress=progress, timeout_s=args.timeout)
    finally:
        try:
            bar.close()
        except BrokenPipeError:
            pass
    if not outcome.ok:
        _say(f"dsosim run: FAILED after {outcome.wall_s:.1f} s\n{outcome.failure}", err=True)
        if outcome.summary.get("status") == "incomplete":
            _say(f"results written so far (marked incomplete): {built.results_dir}", err=True)
        return outcome.returncode if outcome.stopped else 1
    _say(f"done in {outcome.wall_s:.1f} s; results in {built.results_dir}")
    for key, label in HEADLINES:
        if key in outcome.summary:
            _say(f"  {label:45s} {outcome.summary[key]}")
    return 0
