"""``dsosim synth-feeder --buses N --seed S --out DIR``: write a synthetic feeder."""

from __future__ import annotations

import argparse
import sys

from dsosim.runner.feeders.synthetic import SyntheticFeederError, generate_feeder


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--buses", type=int, required=True, help="primary buses of the radial tree")
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same files)")
    p.add_argument("--out", required=True, help="folder to write Master.dss and its files into")
    p.add_argument("--pv", type=int, default=0, help="PV systems already on the feeder")
    p.add_argument("--storage", type=int, default=0, help="storage elements already on the feeder")
    p.add_argument("--crlf", action="store_true", help="Windows line endings")


def handle(args: argparse.Namespace) -> int:
    try:
        made = generate_feeder(
            args.buses, args.seed, args.out, n_pv=args.pv, n_storage=args.storage, crlf=args.crlf
        )
    except SyntheticFeederError as exc:
        print(f"dsosim synth-feeder: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"dsosim synth-feeder: --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {made.master}: {made.n_buses} buses, {made.n_loads} loads, "
        f"{made.total_kw / 1000.0:.2f} MW peak"
    )
    return 0
