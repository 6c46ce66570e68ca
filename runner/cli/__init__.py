"""dsosim: co-simulate and compare the organisational models of distribution markets.

Run ``dsosim COMMAND --help`` for a command's options; docs/ and the README
explain scenarios, models and results.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

# Every command: (module under dsosim.runner.cli, one help line). The help line
# lives here only; each module gives ``add_arguments(parser)`` and ``handle(args)``
# (and optionally ``DESCRIPTION``). Only the chosen command's module is
# imported, so ``dsosim hil-device`` on a lab PC starts without loading
# OpenDSS, pandas or HiGHS.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "build a scenario and run it as a HELICS federation"),
    "build": ("build", "write federation.json and a helics runner.json for a scenario"),
    "compare": ("compare", "run a scenario under the baseline and models 1-6 and compare them"),
    "new-scenario": (
        "new_scenario",
        "inspect OpenDSS feeder(s) and write a runnable, commented scenario",
    ),
    "opf": ("opf", "clear one DC-OPF snapshot and write the LMPs"),
    "bench": ("bench", "run a benchmark (ratios against a reference measured in the same run)"),
    "synth-feeder": (
        "synth_feeder",
        "write a synthetic radial OpenDSS feeder of a chosen size (for scale tests)",
    ),
    "hil-device": (
        "hil_device",
        "emulate HIL devices (battery, PV) that connect to a HIL gateway",
    ),
    "hil-keys": ("hil_keys", "write CURVE key pairs for the HIL gateway and its devices"),
    "replay": ("replay", "rerun a recorded HIL run as a pure simulation with the recorded answers"),
}


def package_version() -> str:
    """The installed dsosim version (``unknown`` when run from a bare checkout)."""
    try:
        return version("dsosim")
    except PackageNotFoundError:
        return "unknown"


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], argv: Sequence[str] | None
) -> None:
    """Add every command; import the module of the one named in ``argv``
    (all of them when ``argv`` is None)."""
    chosen = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for name, (module_name, help_line) in COMMANDS.items():
        if argv is not None and name != chosen:
            sub.add_parser(name, help=help_line)
            continue
        module = importlib.import_module(f"dsosim.runner.cli.{module_name}")
        parser = sub.add_parser(
            name,
            help=help_line,
            description=getattr(module, "DESCRIPTION", help_line),
        )
        module.add_arguments(parser)
        parser.set_defaults(handler=module.handle)


def make_parser(argv: Sequence[str] | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsosim", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dsosim {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub, argv)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Known errors are the command's own (exit code 2);
    anything unexpected is reported in a few lines with the traceback in a log
    file (``errors.report_unexpected``, exit code 1), never on the terminal."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = make_parser(argv).parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(f"dsosim {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from dsosim.runner.cli.errors import report_unexpected

        return report_unexpected(args.command, args, argv, exc)


if __name__ == "__main__":
    sys.exit(main())
