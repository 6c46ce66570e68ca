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
the failing federate's name when it knows it. It imports only the standard
library until then.
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
        status = json.loads((results / "summary.json").read_text()).get("status")
    except (OSError, ValueError):
        return 0
    if status != "running":
        return 0
    from dsosim.federates.recorder.store import KILLED_RECORDER, mark_incomplete
    from dsosim.federates.recorder.summary import summarise

    mark_incomplete(results, KILLED_RECORDER, summarise, only_if=_still_running)
    return 0


def _still_running(summary: dict[str, object]) -> bool:
    return summary.get("status") == "running"


if __name__ == "__main__":
    sys.exit(main())
