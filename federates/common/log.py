"""Federate log lines: ``[name] message``, one setup for every federate."""

from __future__ import annotations

import logging
import sys


def federate_log(name: str) -> logging.Logger:
    """A federate's log: lines ``[name] message``, information on stdout and
    problems on stderr (the launcher reads both), each written as it comes."""
    log = logging.getLogger(f"dsosim.federate.{name}")
    if not log.handlers:
        fmt = logging.Formatter(f"[{name}] %(message)s")
        out = logging.StreamHandler(sys.stdout)
        out.addFilter(lambda record: record.levelno < logging.WARNING)
        err = logging.StreamHandler(sys.stderr)
        err.setLevel(logging.WARNING)
        for handler in (out, err):
            handler.setFormatter(fmt)
            log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log
