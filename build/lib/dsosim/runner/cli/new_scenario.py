"""``dsosim new-scenario --feeder MASTER.dss [--case CASE] [--td-bus N] --out FILE.toml``:
inspect a utility's feeder(s) and write a complete, commented scenario."""

from __future__ import annotations

import argparse
import sys

from dsosim.federates.dso.feeder import FeederError
from dsosim.federates.iso.case import CaseError
from dsosim.runner.build.scenario import ScenarioError
from dsosim.runner.feeders.new_scenario import MAX_DER_BUSES, NewScenarioError, write_new_scenario

DESCRIPTION = (
    "Inspect each feeder (buses, phases, voltage bases, loads, own PV/storage, "
    "regulators, capacitors, source) and write a scenario that attaches it at a T-D bus of "
    "the transmission case, with two aggregators placed over its load buses."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--feeder",
        action="append",
        required=True,
        metavar="MASTER.dss",
        help="OpenDSS master file; repeat for several LDAs (one DSO each)",
    )
    p.add_argument(
        "--case",
        default="case9",
        help="MATPOWER case name (case9, case118, ...) or a .m file (default case9)",
    )
    p.add_argument(
        "--td-bus",
        action="append",
        type=int,
        default=[],
        metavar="N",
        help="T-D bus of the case per --feeder, in order (default: the case's "
        "largest load buses, one per feeder)",
    )
    p.add_argument("--out", required=True, metavar="FILE.toml", help="scenario file to write")
    p.add_argument("--name", default=None, help="scenario name (default: from the feeder files)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument("--interval-minutes", type=float, default=5.0)
    p.add_argument(
        "--max-der-buses",
        type=int,
        default=MAX_DER_BUSES,
        help=f"DER buses per aggregator on large feeders (default {MAX_DER_BUSES})",
    )
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")


def handle(args: argparse.Namespace) -> int:
    try:
        made = write_new_scenario(
            args.feeder,
            args.out,
            case=args.case,
            td_buses=args.td_bus,
            name=args.name,
            seed=args.seed,
            hours=args.hours,
            interval_minutes=args.interval_minutes,
            max_der_buses=args.max_der_buses,
            force=args.force,
        )
    except (NewScenarioError, FeederError, CaseError, ScenarioError) as exc:
        print(f"dsosim new-scenario: {exc}", file=sys.stderr)
        return 2
    for a in made.attached:
        print(f"{a.report.master}: LDA {a.lda} at bus {a.td_bus} of {made.case}, scale {a.scale}")
        for line in a.report.summary_lines():
            print(f"  {line}")
        for note in a.report.warnings:
            print(f"  NOTE: {note}")
    print(f"wrote {made.path}; run it with: dsosim run {made.path}")
    return 0
