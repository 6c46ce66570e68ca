"""Helpers of the fault sweep (tests/test_faults*.py): start a federation as a
user would, wait until it is really running, hurt it, and check that nothing
it started is left and that its results say what happened."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.federation import ROOT, SCENARIOS

QUICKSTART = SCENARIOS / "quickstart.toml"
DSOSIM = [sys.executable, "-c", "import sys; from dsosim.runner.cli import main; sys.exit(main())"]


def dsosim_run(out: Path, *extra: str, hours: float = 48.0) -> subprocess.Popen[str]:
    """``dsosim run`` of the quickstart in its own process (and session, so a
    signal meant for it never reaches the test runner), one process per federate."""
    return subprocess.Popen(
        [
            *DSOSIM,
            "run",
            str(QUICKSTART),
            "--out",
            str(out),
            "--hours",
            str(hours),
            "--processes",
            "0",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def helics_run(folder: Path) -> subprocess.Popen[str]:
    """``helics run`` of a built folder, as a user launches a checked-in runner."""
    from dsosim.runner.launch import helics_command

    return subprocess.Popen(
        [helics_command(), "run", "--path=runner.json"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_interruptible,
    )


def _interruptible() -> None:
    """SIGINT back to its default in the child, as in a terminal: a shell
    starts a background job with SIGINT ignored, a test suite started that way
    passes it on, and a `helics run` that ignores SIGINT never sees the
    user's Ctrl-C the faults tests send it (measured: the run went on to
    complete)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def summary(results: Path) -> dict[str, Any]:
    try:
        return json.loads((results / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_running(folder: Path, *, intervals: int = 12, timeout_s: float = 240.0) -> None:
    """Until the recorder of the federation in ``folder`` has flushed at least
    ``intervals`` intervals (it is past start-up and writing results)."""
    log = folder / "recorder.log"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        done = [
            int(line.split()[2].split("/")[0]) for line in text.splitlines() if "progress" in line
        ]
        if done and max(done) >= intervals:
            return
        time.sleep(0.2)
    raise AssertionError(f"federation in {folder} never got going:\n{text[-2000:]}")


def processes_in(folder: Path) -> list[str]:
    """Processes (other than this one) whose working folder is ``folder``:
    every process of a federation runs there."""
    folder = folder.resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == folder:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{entry.name}: {cmd[:160]}")
        except OSError:
            continue
    return found


def no_orphans(folder: Path, *, within_s: float = 30.0) -> list[str]:
    """Wait up to ``within_s`` for every process of the federation to end;
    returns what is still alive (empty: none)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        alive = processes_in(folder)
        if not alive:
            return []
        time.sleep(0.2)
    return processes_in(folder)


def kill_all_in(folder: Path) -> None:
    """Test clean-up: SIGKILL whatever still runs in ``folder`` (only processes
    this test started run there)."""
    for line in processes_in(folder):
        try:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


def pid_of(folder: Path, name: str) -> int:
    """Pid of federate ``name`` of the federation running in ``folder``."""
    for line in processes_in(folder):
        if f"--name {name}" in line:
            return int(line.split(":")[0])
    raise AssertionError(f"no federate {name!r} running in {folder}")


def build_quickstart(folder: Path, *, hours: float):
    """The quickstart built into ``folder`` on a free port (as ``dsosim build``),
    one process per federate (so that one federate's process can be hurt alone)."""
    from dsosim.runner.build.federation import build, free_port

    return build(QUICKSTART, folder, hours=hours, port=free_port(), processes=0)
