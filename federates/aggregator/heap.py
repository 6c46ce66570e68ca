"""Keep the memory a large fleet frees for its next interval (glibc only).

An interval of a utility-scale fleet allocates and frees dozens of arrays of
one to two megabytes (100,000 devices make about 200,000 offer blocks).
glibc serves blocks that large with ``mmap`` or trims the heap after them, so
the kernel maps and zero-fills every page of them again in the next
interval: measured at 100,000 devices, 1,300-2,700 page faults and 2-6 ms of
system time per interval of about 40 ms, and none with the thresholds below.
:func:`keep_freed_memory` raises glibc's mmap and trim thresholds
(``mallopt``), so those blocks are reused from the heap: the process keeps up
to ``trim_mb`` of freed memory instead of returning it at once. A process
setting, so the aggregator federate calls it for a large fleet only
(:attr:`Fleet.large <dsosim.federates.aggregator.fleet.Fleet.large>`).
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameters (``malloc.h``)."""


def keep_freed_memory(*, mmap_mb: int = 32, trim_mb: int = 256) -> bool:
    """Blocks below ``mmap_mb`` come from the heap, and up to ``trim_mb`` of
    free memory at its top is kept; True if glibc took both settings (False
    elsewhere: other C libraries, other systems, where nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mmap_ok = mallopt(M_MMAP_THRESHOLD, mmap_mb << 20) == 1
    return mallopt(M_TRIM_THRESHOLD, trim_mb << 20) == 1 and mmap_ok
