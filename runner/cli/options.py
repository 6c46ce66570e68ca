"""Options several commands share (``run``, ``build``, ``compare``)."""

from __future__ import annotations

import argparse


def add_time_arguments(p: argparse.ArgumentParser) -> None:
    """``--hours`` and ``--start-hour``: which part of the scenario's time to run."""
    p.add_argument("--hours", type=float, default=None, help="override the scenario's hours")
    p.add_argument(
        "--start-hour",
        type=float,
        default=None,
        help="start at this hour of the scenario's start date (e.g. 16 with --hours 4 "
        "for the evening peak); profiles, weather and devices follow the clock",
    )
