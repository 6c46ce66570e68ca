"""``dsosim build SCENARIO --out DIR``: write the federation config and runner file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsosim.runner.build.federation import build
from dsosim.runner.build.models import add_model_argument
from dsosim.runner.build.scenario import ScenarioError
from dsosim.runner.cli.options import add_processes_argument, add_time_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario")
    p.add_argument("--out", required=True, help="output folder")
    add_time_arguments(p)
    add_model_argument(p)
    p.add_argument("--port", type=int, default=None, help="broker port (default: a free one)")
    p.add_argument(
        "--hosts",
        default=None,
        metavar="HOSTS.toml",
        help="spread the federation over machines: one runner file per host (docs/deploy.md)",
    )
    add_processes_argument(p)
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
            start_hour=args.start_hour,
            model=args.model,
            port=args.port,
            portable=args.portable,
            hosts=args.hosts,
            processes=args.processes,
        )
    except (ScenarioError, ValueError, OSError) as exc:
        print(f"dsosim build: {exc}", file=sys.stderr)
        return 2
    if args.hosts is None:
        print(f"wrote {result.federation} and {result.runner}")
        print(f"launch with: helics run --path={result.runner}")
        return 0
    print(f"wrote one folder per host under {args.out}; on each host, in any order:")
    for runner in sorted(Path(args.out).glob("*/runner.json")):
        print(f"  {runner.parent.name}: helics run --path={runner}")
    print(f"results are written on the recorder's host, in {result.results_dir}")
    return 0
