"""The launcher's watchdog: stops the federation if ``dsosim run`` dies.

A signal that can be caught (SIGTERM, SIGHUP, SIGINT) is handled by the
launcher itself. SIGKILL cannot be: so the launcher starts this small process
in its own session, holding the read end of a pipe. When the launcher ends
normally it writes ``done``; if the pipe closes without it, the launcher was
killed, and the watchdog stops the federation's whole process group (SIGTERM,
then SIGKILL after a grace period) and marks the results incomplete with the
reason. It ignores the signals a terminal or ``timeout`` sends, so only the
launcher's end triggers it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

DONE = b"done"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pgid: int, *, grace_s: float = 20.0) -> None:
    """SIGTERM the group (federates stop cleanly and write what they have),
    SIGKILL whatever is left after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_alive(pgid):
                return
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsosim.runner.watchdog")
    parser.add_argument("--pgid", type=int, required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--launcher", type=int, required=True, help="pid of dsosim run")
    parser.add_argument(
        "--stamp", default="", help="summary.json's stamp before the launch (see launch.stamp)"
    )
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    data = sys.stdin.buffer.read()
    if data.strip() == DONE:
        return 0
    print(
        f"launcher {args.launcher} ended without stopping its federation: stopping it", flush=True
    )
    stop_group(args.pgid)
    from dsosim.federates.recorder.store import mark_incomplete
    from dsosim.federates.recorder.summary import summarise

    reason = f"the launcher (pid {args.launcher}) was killed; its watchdog stopped the federation"
    from dsosim.runner.launch import stamp

    # only results this run started writing are marked (never a previous run's)
    if Path(args.results).is_dir() and stamp(Path(args.results)) != args.stamp:
        mark_incomplete(args.results, reason, summarise)
    print(reason, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
