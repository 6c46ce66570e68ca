"""How a federation process ends when it is told to, or when its launcher goes.

Every process of a federation (the broker and each federate) is started by
``helics run``. Two things must hold whatever signal reaches whom:

* **nothing outlives its launcher.** ``helics run`` does not pass SIGTERM or
  SIGHUP on to its children (they would be orphaned and run to the end), so
  each process asks the kernel for a signal when its parent dies
  (``PR_SET_PDEATHSIG``, Linux): :func:`die_with_parent`.
* **a stop is a clean stop.** SIGTERM, SIGHUP and SIGINT are taken by a
  watcher thread (:class:`StopSignals`), not by the main thread, which may be
  blocked inside HELICS (a time request) where a Python handler never runs.
  The watcher raises a HELICS *global error* naming this process and the
  signal: the main thread's blocked call returns with that error, the
  federate writes what it has (the recorder: results so far and an incomplete
  ``summary.json`` with the reason), and every peer stops within
  milliseconds. If the process has not ended ``grace_s`` later it exits hard.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dsosim.federates.common.log import federate_log

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent exits.
    Returns False where that is not available (then the launcher's watchdog,
    which kills the whole process group, is the only guard)."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the parent died before we asked
        os.kill(os.getpid(), sig)
    return True


class StopSignals:
    """Turn SIGTERM/SIGHUP/SIGINT into one clean, named stop.

    The signals get a no-op Python handler and a wake-up pipe
    (``signal.set_wakeup_fd``): whichever thread the kernel delivers a signal
    to (numpy's and HELICS's threads included), its number lands in the pipe
    and the watcher thread acts at once, even while the main thread is blocked
    inside HELICS. ``on_stop(reason)`` runs in the watcher thread (e.g. raise a
    HELICS global error); the process then gets ``grace_s`` seconds to finish
    before it exits with 128 + signal. A second signal ends it at once.
    Call :meth:`start` from the main thread.
    """

    def __init__(self, name: str, *, grace_s: float = 15.0) -> None:
        self.name = name
        self.grace_s = grace_s
        self.reason: str | None = None
        self.signal: int | None = None
        self._on_stop: Callable[[str], None] | None = None
        self._lock = threading.Lock()
        self._parent = os.getppid()

    def start(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            signal.signal(sig, _ignore)
        threading.Thread(
            target=self._watch, args=(read_fd,), name=f"{self.name}-signals", daemon=True
        ).start()
        return self

    def on_stop(self, action: Callable[[str], None] | None) -> None:
        """What to do when a stop signal comes (replaces any earlier action);
        if the signal already came, do it now."""
        with self._lock:
            self._on_stop = action
            reason = self.reason
        if reason is not None and action is not None:
            action(reason)

    def _watch(self, read_fd: int) -> None:
        sig = _next_signal(read_fd)
        reason = f"{self.name} stopped by {signal.Signals(sig).name}"
        if sig == signal.SIGTERM and self._parent_ended():
            reason = f"{self.name} stopped: its parent process (helics run) ended"
        with self._lock:
            self.reason, self.signal = reason, sig
            action = self._on_stop
        federate_log(self.name).warning(reason)
        if action is None:
            os._exit(128 + sig)  # nothing joined yet: nothing to write
        timer = threading.Timer(self.grace_s, os._exit, args=(128 + sig,))
        timer.daemon = True
        timer.start()
        try:
            action(reason)
        except Exception as exc:  # the stop must happen whatever the action does
            federate_log(self.name).error("stop action failed: %s", exc)
        os._exit(128 + _next_signal(read_fd))

    def _parent_ended(self, wait_s: float = 0.5) -> bool:
        """Did the parent die (the kernel's parent-death signal)? Its end and
        our re-parenting may lag the signal a little: look for a moment."""
        deadline = time.monotonic() + wait_s
        while True:
            if os.getppid() != self._parent or _is_zombie(self._parent):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _ignore(signum: int, frame: object) -> None:
    """The Python-level handler: the watcher thread does the work."""


def _next_signal(read_fd: int) -> int:
    """Block until one of the stop signals arrives; return its number."""
    while True:
        data = os.read(read_fd, 1)
        if data and data[0] in STOP_SIGNALS:
            return data[0]


class AlreadyRunning(RuntimeError):
    """Another live process holds the lock (a second run of the same folder)."""


def hold_lock(path: Path, what: str) -> int:
    """Take an exclusive lock on ``path`` for the life of this process (the
    kernel releases it when the process ends, however it ends). Raises
    :class:`AlreadyRunning` naming the holder's pid if another process has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise AlreadyRunning(f"{what} is already in use by process {holder}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
