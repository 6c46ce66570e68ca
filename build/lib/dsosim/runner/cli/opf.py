"""``dsosim opf CASE --out FILE.csv``: clear one DC-OPF snapshot of a transmission case.

Writes one row per bus (case bus number, LMP and its energy and congestion
components, load and shed MW) and prints the status and total cost.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys

import numpy as np

from dsosim.federates.iso.case import CaseError, load_case
from dsosim.federates.iso.dcopf import DcOpf, OpfResult

COLUMNS = ("bus", "lmp", "lmp_energy", "lmp_congestion", "load_mw", "shed_mw")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "case", metavar="CASE", help="MATPOWER case name (case9, case118, ...) or .m file"
    )
    parser.add_argument(
        "--load-scale",
        type=_positive,
        default=1.0,
        metavar="X",
        help="multiply every bus load by X (default 1)",
    )
    parser.add_argument(
        "--line-limit-mw",
        type=_positive,
        default=None,
        metavar="Y",
        help="cap every branch rating at Y MW (to congest a case)",
    )
    parser.add_argument(
        "--out", required=True, metavar="FILE.csv", help="where to write the per-bus prices"
    )


def handle(args: argparse.Namespace) -> int:
    try:
        case = load_case(args.case)
    except CaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.line_limit_mw is not None:
        case = case.with_rating_cap(args.line_limit_mw)
    load = case.bus_pd_mw * args.load_scale
    result = DcOpf(case).clear(load)
    try:
        write_csv(args.out, result, load)
    except OSError as exc:
        print(f"error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 2
    print(summary(case.name, result, args.out))
    return 1 if result.status == "failed" else 0


def write_csv(path: str, result: OpfResult, load: np.ndarray) -> None:
    case = result.case
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for i, bus in enumerate(case.bus_ids.tolist()):
            values = (
                result.lmp[i],
                result.lmp_energy[i],
                result.lmp_congestion[i],
                load[i],
                result.shed_mw[i],
            )
            writer.writerow([bus, *(_number(v) for v in values)])


def summary(name: str, result: OpfResult, out: str) -> str:
    lines = [
        f"case {name}: status {result.status}",
        f"total cost {result.total_cost:.2f} $/h",
        (
            f"LMP {np.nanmin(result.lmp):.2f} .. {np.nanmax(result.lmp):.2f} $/MWh, "
            f"{len(result.binding)} binding branches, {np.nansum(result.shed_mw):.2f} MW shed"
        ),
        f"wrote {result.case.n_bus} rows to {out}",
    ]
    if result.message:
        lines.insert(1, result.message)
    return "\n".join(lines)


def _number(value: float) -> str:
    return format(float(value), ".10g")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0.0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value
