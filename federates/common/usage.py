"""Log lines with a process's wall clock and CPU time at the moments
``dsosim bench scale`` measures between: the federation starts executing,
the last interval is done, the process ends (with its peak memory). Stdlib
only: the broker imports it too."""

from __future__ import annotations

import resource
import time


def cpu_s() -> float:
    """CPU seconds this process used so far (user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stamp(event: str) -> str:
    """``<event> at <unix time> cpu <seconds> s``."""
    return f"{event} at {time.time():.3f} cpu {cpu_s():.3f} s"


def finished_line() -> str:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return f"{stamp('finished')} peak {peak_mb:.1f} MB"
