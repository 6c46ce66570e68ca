"""Launch a built federation through ``helics run`` and watch it finish.

``helics run`` starts every process of the runner file, writes each one's
output to ``<name>.log`` beside it, and kills the rest when one exits
non-zero. Two gaps are closed here: a federate killed by a signal is not a
failure for ``helics run`` (we also require ``summary.json`` to say the run is
complete), and stopping ``helics run`` itself must stop its children (it runs
in its own process group, which we signal as a whole).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsosim.federates.recorder.store import mark_incomplete
from dsosim.federates.recorder.summary import summarise

PROGRESS = re.compile(r"progress (\d+)/(\d+)")
FAILED_PROCESS = re.compile(r"Process (\S+) has failed")


@dataclass(frozen=True)
class LaunchOutcome:
    ok: bool
    returncode: int
    wall_s: float
    summary: dict[str, Any]
    failure: str | None


def build_and_launch(
    make: Callable[[], Any], *, attempts: int = 2, **kwargs: Any
) -> tuple[Any, LaunchOutcome]:
    """Build (``make()`` returns a ``BuildResult`` on a fresh port) and launch;
    if federates could not even join the broker (a port taken between build
    and launch on a busy machine) and no interval ran, build again once."""
    for attempt in range(attempts):
        built = make()
        outcome = launch(built.runner, built.results_dir, **kwargs)
        joined = not (
            outcome.failure
            and ("could not join" in outcome.failure or "unable to register" in outcome.failure)
        )
        if outcome.ok or joined or outcome.summary.get("intervals") or attempt == attempts - 1:
            return built, outcome
    raise AssertionError("unreachable")


def helics_command() -> str:
    """The ``helics`` CLI of this environment (next to this interpreter first)."""
    beside = Path(sys.executable).with_name("helics")
    if beside.exists():
        return str(beside)
    found = shutil.which("helics")
    if found is None:
        raise FileNotFoundError("the `helics` command was not found; install dsosim's dependencies")
    return found


def launch(
    runner: Path,
    results_dir: Path,
    *,
    recorder: str = "recorder",
    on_progress: Callable[[int, int], None] | None = None,
    timeout_s: float | None = None,
) -> LaunchOutcome:
    """Run ``helics run --path=runner`` to the end; never leaves processes behind."""
    folder = runner.parent
    for old in folder.glob("*.log"):
        old.unlink()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [helics_command(), "run", f"--path={runner.name}"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
    )
    log = folder / f"{recorder}.log"
    seen = -1
    output = ""
    try:
        while True:
            try:
                output, _ = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            if on_progress is not None and log.exists():
                for m in PROGRESS.finditer(log.read_text(errors="replace")):
                    done, total = int(m.group(1)), int(m.group(2))
                    if done > seen:
                        seen = done
                        on_progress(done, total)
            if timeout_s is not None and time.perf_counter() - start > timeout_s:
                raise TimeoutError(f"federation did not finish within {timeout_s:.0f} s")
    except BaseException:
        _stop_group(proc)
        raise
    wall = time.perf_counter() - start
    summary = _read_summary(results_dir)
    ok = proc.returncode == 0 and summary.get("complete") is True
    failure = None if ok else _failure(folder, output, proc.returncode, summary)
    if not ok and summary.get("status") != "incomplete" and results_dir.is_dir():
        # The recorder was killed before it could write its final summary
        # (helics run kills every process once one fails): do it for it.
        summary = mark_incomplete(results_dir, failure or "run did not complete", summarise)
    return LaunchOutcome(ok, proc.returncode, wall, summary, failure)


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """Stop helics run and every process it started (its whole group)."""
    if proc.poll() is not None:
        return
    pgid = os.getpgid(proc.pid)
    for sig, wait in ((signal.SIGINT, 5.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            # children may outlive helics run itself: make sure the group is gone
            os.killpg(pgid, signal.SIGKILL)
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return
        return


def _exit_code(log: Path) -> str:
    """A short hint at how a process ended, from the tail of its log."""
    try:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:]
    except OSError:
        return " (killed: no log)"
    return f" (last output: {tail[0][:200]})" if tail else " (killed by a signal: no output)"


def _read_summary(results_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((results_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def _failure(folder: Path, output: str, returncode: int, summary: dict[str, Any]) -> str:
    """Name the federate that failed and why, from its log."""
    lines = []
    for log in sorted(folder.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if "FAILED:" in line or "could not join" in line:
                lines.append(f"{log.stem}: {line.strip()}")
    for name in FAILED_PROCESS.findall(output):
        if not any(line.startswith(f"{name}:") for line in lines):
            code = _exit_code(folder / f"{name}.log")
            lines.insert(0, f"{name}: process failed{code} (helics run then stopped the others)")
    if not lines and summary.get("error"):
        lines.append(str(summary["error"]))
    if not lines:
        tail = "\n".join(output.strip().splitlines()[-15:])
        lines.append(
            f"helics run exited {returncode}; summary complete={summary.get('complete')}\n{tail}"
        )
    return "\n".join(lines)
