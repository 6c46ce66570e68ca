"""Launch a built federation through ``helics run`` and watch it finish.

``helics run`` starts every process of the runner file, writes each one's
output to ``<name>.log`` beside it, and kills the rest when one exits
non-zero. The gaps it leaves are closed here: a federate killed by a signal
is not a failure for ``helics run`` (we also require ``summary.json`` to say
the run is complete); stopping ``helics run`` itself must stop its children
(it runs in its own process group, which we signal as a whole); a signal to
the launcher (SIGTERM, SIGHUP, SIGINT) or ``timeout_s`` stops the federation
and marks the results incomplete with the reason; and if the launcher is
killed outright (SIGKILL) its watchdog (``runner.watchdog``) does the same.
Results are only ever marked when this run started writing them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsosim.federates.broker import ID_MAP_PREFIX
from dsosim.federates.recorder.store import mark_incomplete, verdict_missing
from dsosim.federates.recorder.summary import summarise
from dsosim.runner.watchdog import group_alive

BROKER_LOG = "dsosim-broker"

PROGRESS = re.compile(r"progress (\d+)/(\d+)")
FAILED_PROCESS = re.compile(r"Process (\S+) has failed")


@dataclass(frozen=True)
class LaunchOutcome:
    ok: bool
    returncode: int
    wall_s: float
    summary: dict[str, Any]
    failure: str | None
    stopped: str | None = None
    """Why the launcher stopped the federation (a signal, the time-out)."""


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


HELICS_RUN = """\
import contextlib, io, sys
sys.modules["helics_cli_extras"] = None
with contextlib.redirect_stdout(io.StringIO()):
    from helics.cli import cli
sys.argv[0] = "helics"
sys.exit(cli())
"""
"""``helics run`` as the ``helics`` command runs it, less its start-up cost: the
CLI module imports its optional web-interface package (Flask, SQLAlchemy:
about 0.5 s of CPU, measured) only to print its version, so it is imported
here as if that package were not installed (which the CLI supports: it then
notes, on stdout, that it is missing; that note is dropped). Every process
of the federation waits for this one to start, so its start-up is the
federation's."""


def helics_run(runner: Path) -> list[str]:
    """The command that runs ``helics run --path=runner`` (see :data:`HELICS_RUN`)."""
    return [sys.executable, "-c", HELICS_RUN, "run", f"--path={runner.name}"]


def helics_command() -> str:
    """The ``helics`` CLI of this environment (next to this interpreter first)."""
    beside = Path(sys.executable).with_name("helics")
    if beside.exists():
        return str(beside)
    found = shutil.which("helics")
    if found is None:
        raise FileNotFoundError("the `helics` command was not found; install dsosim's dependencies")
    return found


class Stopped(Exception):
    """The launcher was told to stop (a signal) or ran out of time."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While launching, SIGTERM, SIGHUP and SIGINT raise :class:`Stopped` (so
    the federation is stopped and the results marked) instead of killing the
    launcher and orphaning the federation."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    fired: list[int] = []

    def raise_stopped(signum: int, frame: object) -> None:
        if fired:  # already stopping: a second signal must not cut the clean-up short
            return
        fired.append(signum)
        name = signal.Signals(signum).name
        raise Stopped(f"dsosim run interrupted by {name}", 128 + signum)

    previous = {sig: signal.signal(sig, raise_stopped) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stamp(results_dir: Path) -> str:
    """Identity of ``summary.json`` now: the recorder replaces the file when it
    starts writing (after every federate has joined), so a changed stamp means
    the results folder belongs to this run."""
    try:
        st = (results_dir / "summary.json").stat()
    except OSError:
        return "none"
    return f"{st.st_ino}:{st.st_mtime_ns}"


class Watchdog:
    """A process in its own session that stops the federation's process group
    if this launcher dies without saying it is done (SIGKILL)."""

    def __init__(self, pgid: int, results_dir: Path, before: str, log: Path) -> None:
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dsosim.runner.watchdog",
                    f"--pgid={pgid}",
                    f"--results={results_dir.resolve()}",
                    f"--launcher={os.getpid()}",
                    f"--stamp={before}",
                ],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=log.parent,
            )

    def release(self) -> None:
        """The launcher is done with its federation: the watchdog exits."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"done\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def launch(
    runner: Path,
    results_dir: Path,
    *,
    recorder: str = "recorder",
    on_progress: Callable[[int, int], None] | None = None,
    timeout_s: float | None = None,
) -> LaunchOutcome:
    """Run ``helics run --path=runner`` to the end; never leaves processes behind.

    A stop signal or ``timeout_s`` stops the federation (the recorder writes
    what it has) and the outcome says why; ``summary.json`` is then marked
    incomplete with that reason.
    """
    folder = runner.parent
    for old in folder.glob("*.log"):
        old.unlink()
    before = stamp(results_dir)
    start = time.perf_counter()
    stopped: Stopped | None = None
    with stop_on_signals():
        proc = subprocess.Popen(
            helics_run(runner),
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        watchdog = Watchdog(proc.pid, results_dir, before, folder / "watchdog.out")
        try:
            output = _follow(proc, folder / f"{recorder}.log", on_progress, timeout_s, start)
        except Stopped as exc:
            stopped, output = exc, ""
            stop_group(proc)
        except BaseException:
            stop_group(proc)
            watchdog.release()
            raise
        watchdog.release()
    wall = time.perf_counter() - start
    summary = _read_summary(results_dir)
    ours = stamp(results_dir) != before
    if stopped is not None:
        reason = f"{stopped.reason}; the federation was stopped"
        if ours:
            summary = mark_incomplete(results_dir, stopped.reason, summarise)
        else:
            reason += " before it started (no results written)"
        return LaunchOutcome(False, stopped.code, wall, summary, reason, stopped.reason)
    ok = proc.returncode == 0 and ours and summary.get("complete") is True
    failure = None if ok else _failure(folder, output, proc.returncode, summary)
    if not ours and not ok:
        failure = f"{failure}\n(no results written: the federation never started)"
    elif not ok and verdict_missing(summary) and results_dir.is_dir():
        # The recorder was killed before it could write its final summary
        # (helics run kills every process once one fails): do it for it, in
        # place of its guardian's generic reason, naming the failure.
        reason = failure or "run did not complete"
        summary = mark_incomplete(results_dir, reason, summarise, only_if=verdict_missing)
    elif not ok and summary.get("status") == "incomplete" and helics_ids(folder):
        # the recorder's reason may name a federate by its HELICS id only
        named = name_ids(str(summary.get("error", "")), helics_ids(folder))
        if named != summary.get("error"):
            summary = mark_incomplete(results_dir, named, summarise)
    return LaunchOutcome(ok, proc.returncode, wall, summary, failure)


def _follow(
    proc: subprocess.Popen[str],
    log: Path,
    on_progress: Callable[[int, int], None] | None,
    timeout_s: float | None,
    start: float,
) -> str:
    """Wait for helics run, reporting progress; its output when it ends."""
    seen = -1
    while True:
        try:
            output, _ = proc.communicate(timeout=0.5)
            return output
        except subprocess.TimeoutExpired:
            pass
        if on_progress is not None and log.exists():
            for m in PROGRESS.finditer(log.read_text(errors="replace")):
                done, total = int(m.group(1)), int(m.group(2))
                if done > seen:
                    seen = done
                    on_progress(done, total)
        if timeout_s is not None and time.perf_counter() - start > timeout_s:
            raise Stopped(f"timed out after {timeout_s:g} s (--timeout)", 124)


def stop_group(proc: subprocess.Popen[str], *, grace_s: float = 20.0) -> None:
    """Stop helics run and every process it started (its whole group): SIGTERM
    first, which every federate turns into a clean, named stop (the recorder
    writes what it has), then SIGKILL whatever is left after ``grace_s``."""
    pgid = proc.pid  # helics run leads its own session and group
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not group_alive(pgid):
                break
            time.sleep(0.1)
        else:
            continue
        break
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
    return name_ids("\n".join(lines), helics_ids(folder))


def helics_ids(folder: Path) -> dict[str, str]:
    """HELICS federate and core ids -> federate names, as the broker printed
    them once everyone had joined (``federates.broker``)."""
    log = folder / f"{BROKER_LOG}.log"
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return {}
    for line in text.splitlines():
        if ID_MAP_PREFIX in line:
            pairs = (p.split("=", 1) for p in line.split(ID_MAP_PREFIX, 1)[1].split())
            return {i: n for i, n in pairs}
    return {}


def name_ids(text: str, ids: dict[str, str]) -> str:
    """``lost comms with 1879048196`` -> ``lost comms with 1879048196 (lda5)``."""
    if not ids:
        return text
    return re.sub(r"\b(\d{6,})\b", lambda m: f"{m[1]} ({ids[m[1]]})" if m[1] in ids else m[1], text)
