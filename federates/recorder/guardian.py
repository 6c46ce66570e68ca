"""The recorder's guardian: says "incomplete" for a recorder that was killed.

A recorder that is stopped in any catchable way writes its own verdict. One
that is SIGKILLed cannot: ``helics run`` does exactly that to every federate
when it gets SIGINT (and exits 0), and so do the OOM killer and ``kill -9``.
The recorder therefore starts this small process, in a session of its own so
that nothing aimed at the federation reaches it, holding the read end of a
pipe that only the recorder writes to. When the pipe closes, the recorder has
ended; if ``summary.json`` still says ``running`` (its own verdict never came),
the guardian summarises what is on disk and marks the run incomplete with a
generic reason (``store.KILLED_RECORDER``), which ``dsosim run`` replaces with
the failing federate's name when it knows it. A recorder that was told to stop
writes its reason first (``ResultStore.announce_stop``); if it died before
summarising, the guardian summarises under that reason. It imports only the
standard library until then.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path


def start(results_dir: Path) -> subprocess.Popen[bytes]:
    """Start the guardian of the recorder writing ``results_dir`` (call after
    the folder is claimed). Keep the returned object alive as long as the
    recorder runs: its pipe is what the guardian watches."""
    return subprocess.Popen(
        [sys.executable, "-m", "dsosim.federates.recorder.guardian", str(results_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    results = Path(args[0])
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    sys.stdin.buffer.read()  # until the recorder ends, however it ends
    try:
        current = json.loads((results / "summary.json").read_text())
    except (OSError, ValueError):
        return 0
    if current.get("status") not in ("running", "incomplete"):
        return 0
    from dsosim.federates.recorder.store import (
        KILLED_RECORDER,
        is_bare_verdict,
        mark_incomplete,
    )
    from dsosim.federates.recorder.summary import summarise

    if current.get("status") == "running":
        mark_incomplete(results, KILLED_RECORDER, summarise, only_if=_still_running)
    elif is_bare_verdict(current):
        # it said why it stopped, then died before summarising: keep its reason
        mark_incomplete(results, str(current.get("error")), summarise, only_if=is_bare_verdict)
    return 0


def _still_running(summary: dict[str, object]) -> bool:
    return summary.get("status") == "running"


if __name__ == "__main__":
    sys.exit(main())
