"""``dsosim bench SUBJECT``: benchmarks that report ratios against a reference
measured in the same run (machines are shared and noisy)."""

from __future__ import annotations

import argparse
import importlib

# subject -> module under dsosim.runner.bench (each gives add_arguments and handle)
SUBJECTS = (
    "opf",
    "da",
    "ders",
    "iso",
    "hil",
    "scale",
    "phases",
    "feeder",
    "linearise",
    "lda",
    "voltvar",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    subjects = parser.add_subparsers(dest="subject", required=True)
    for subject in SUBJECTS:
        module_name = f"dsosim.runner.bench.{subject}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        first_line = module.__doc__.splitlines()[0] if module.__doc__ else None
        p = subjects.add_parser(subject, help=first_line)
        module.add_arguments(p)


def handle(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"dsosim.runner.bench.{args.subject}")
    return int(module.handle(args) or 0)
