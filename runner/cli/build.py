"""``dsosim build SCENARIO --out DIR``: write the federation config and runner file."""

from __future__ import annotations

import argparse
import sys

from dsosim.runner.build.federation import build
from dsosim.runner.build.models import add_model_argument
from dsosim.runner.build.scenario import ScenarioError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--hours", type=float, default=None, help="override the scenario's hours")
    add_model_argument(p)
    p.add_argument("--port", type=int, default=None, help="broker port (default: a free one)")
    p.add_argument(
        "--portable",
        action="store_true",
        help="relative paths and `python` as interpreter (for checked-in runner files)",
    )


def handle(args: argparse.Namespace) -> int:
    try:
        result = build(
            args.scenario,
            args.out,
            hours=args.hours,
            model=args.model,
            port=args.port,
            portable=args.portable,
        )
    except (ScenarioError, ValueError, OSError) as exc:
        print(f"dsosim build: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {result.federation} and {result.runner}")
    print(f"launch with: helics run --path={result.runner}")
    return 0
