"""The ``dsosim`` command line: one subcommand per module in ``runner``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dsosim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from dsosim.runner import commands

    commands.register(sub, sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
