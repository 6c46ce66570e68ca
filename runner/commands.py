"""Registry of ``dsosim`` subcommands: each module exposes ``add_parser(sub)``."""

from __future__ import annotations

import argparse
import importlib

COMMAND_MODULES = (
    "dsosim.runner.cmd_build",
    "dsosim.runner.cmd_run",
    "dsosim.runner.cmd_opf",
    "dsosim.runner.cmd_bench",
    "dsosim.runner.cmd_compare",
    "dsosim.runner.cmd_new_scenario",
    "dsosim.runner.cmd_synth_feeder",
    "dsosim.runner.cmd_hil_device",
    "dsosim.runner.cmd_hil_keys",
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not written yet
                continue
            raise
        module.add_parser(sub)
