"""Registry of ``dsosim`` subcommands: each module exposes ``add_parser(sub)``.

Only the chosen command's module is imported: the others only list their
name and help line. So ``dsosim hil-device`` on a lab PC starts without
loading OpenDSS, pandas or HiGHS (which the market commands import).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("dsosim.runner.cmd_build", "write federation.json and a helics runner.json for a scenario"),
    "run": ("dsosim.runner.cmd_run", "build a scenario and run it as a HELICS federation"),
    "opf": ("dsosim.runner.cmd_opf", "clear one DC-OPF snapshot and write the LMPs"),
    "bench": ("dsosim.runner.cmd_bench", "run a benchmark"),
    "compare": ("dsosim.runner.cmd_compare",
                "run a scenario under the baseline and models 1-6 and compare them"),
    "new-scenario": ("dsosim.runner.cmd_new_scenario",
                     "inspect OpenDSS feeder(s) and write a runnable, commented scenario"),
    "synth-feeder": ("dsosim.runner.cmd_synth_feeder",
                     "write a synthetic radial OpenDSS feeder of a chosen size (for scale tests)"),
    "hil-device": ("dsosim.runner.cmd_hil_device",
                   "emulate HIL devices (battery, PV) that connect to a HIL gateway"),
    "hil-keys": ("dsosim.runner.cmd_hil_keys", "write CURVE key pairs for the HIL gateway and its devices"),
}


def register(sub: argparse._SubParsersAction, argv: Sequence[str] | None = None) -> None:  # type: ignore[type-arg]
    """Add every command; import the module of the one named in ``argv``
    (all of them when ``argv`` is None)."""
    chosen = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for name, (module_name, help_line) in COMMANDS.items():
        if argv is None or name == chosen:
            importlib.import_module(module_name).add_parser(sub)
        else:
            sub.add_parser(name, help=help_line)
