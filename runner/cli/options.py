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


def add_processes_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="N",
        help="run the federates in N processes, each still its own federate "
        "(default: the scenario's `processes`; 0: one process per federate)",
    )
