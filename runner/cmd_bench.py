"""``dsosim bench SUBJECT``: benchmarks that report ratios against a reference
measured in the same run (machines are shared and noisy)."""

from __future__ import annotations

import argparse
import importlib

SUBJECTS = {
    "opf": "dsosim.runner.bench_opf",
    "ders": "dsosim.runner.bench_ders",
    "hil": "dsosim.runner.bench_hil",
}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("bench", help="run a benchmark")
    subjects = parser.add_subparsers(dest="subject", required=True)
    for subject, module_name in SUBJECTS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        p = subjects.add_parser(subject, help=module.__doc__.splitlines()[0] if module.__doc__ else None)
        module.add_arguments(p)
        p.set_defaults(handler=module.run)
