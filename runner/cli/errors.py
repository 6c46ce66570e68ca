"""The last line of defence of every ``dsosim`` command: an unexpected
exception becomes a short message and a log file, never a traceback on the
terminal.

Known, user-facing errors (a bad scenario field, a feeder that does not
compile) are reported by each command itself with exit code 2. Anything else
reaching :func:`report_unexpected` is a defect or an input nobody foresaw: the
user gets one paragraph naming the command, the input file(s), the object
involved and where the full traceback was written (``dsosim-error.log`` in
the command's output folder when there is one, else a temporary file), and
exit code 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TextIO

# Arguments that name what a command reads, in the order they are quoted.
INPUT_ARGS = ("scenario", "feeder", "case", "master", "connect", "dir")
LOG_NAME = "dsosim-error.log"


def inputs_of(args: argparse.Namespace) -> list[str]:
    """The input files (or addresses) a command was given, as typed."""
    found: list[str] = []
    for key in INPUT_ARGS:
        value = getattr(args, key, None)
        if value is None:
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            if item not in (None, "") and str(item) not in found:
                found.append(str(item))
    return found


def log_folder(args: argparse.Namespace) -> Path | None:
    """The command's output folder, if it has one that exists or can be made
    (``--out DIR``; for ``--out FILE.ext`` its folder)."""
    out = getattr(args, "out", None)
    if not out:
        return None
    path = Path(out)
    folder = path.parent if path.suffix and not path.is_dir() else path
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if folder.is_dir() and os.access(folder, os.W_OK) else None


def where_raised(exc: BaseException) -> str:
    """``module.function (line N)`` of the innermost frame in dsosim's own code
    (the object the failure happened in), or of the innermost frame at all."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if _is_ours(f.filename)]
    if not (ours or frames):
        return "?"
    frame = (ours or frames)[-1]
    return f"{Path(frame.filename).stem}.{frame.name} (line {frame.lineno})"


def _package_roots() -> tuple[str, ...]:
    import dsosim.federates
    import dsosim.runner

    return tuple(
        str(Path(p).resolve())
        for pkg in (dsosim.runner, dsosim.federates)
        for p in getattr(pkg, "__path__", ())
    )


def _is_ours(filename: str) -> bool:
    resolved = str(Path(filename).resolve())
    return any(resolved.startswith(root + os.sep) for root in _package_roots())


def write_log(command: str, argv: list[str], exc: BaseException, folder: Path | None) -> Path:
    """Write the full traceback; return where it went."""
    text = (
        f"dsosim {command}: unexpected error at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n"
        f"command line: dsosim {' '.join(argv)}\n"
        f"working directory: {os.getcwd()}\n\n" + "".join(traceback.format_exception(exc))
    )
    if folder is not None:
        path = folder / LOG_NAME
        try:
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            pass
    handle, name = tempfile.mkstemp(prefix="dsosim-error-", suffix=".log")
    with os.fdopen(handle, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(name)


def describe(exc: BaseException) -> str:
    """The exception in one line: its type and message (first line only)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def report_unexpected(
    command: str,
    args: argparse.Namespace,
    argv: list[str],
    exc: BaseException,
    stream: TextIO | None = None,
) -> int:
    """Print the short account of an unexpected failure; return exit code 1."""
    stream = stream if stream is not None else sys.stderr
    try:
        log = str(write_log(command, argv, exc, log_folder(args)))
    except OSError as log_error:  # not even a temporary file: say so, still no traceback
        log = f"(could not be written: {log_error})"
    inputs = inputs_of(args)
    print(
        f"dsosim {command}: unexpected error: {describe(exc)}\n"
        f"  input: {', '.join(inputs) if inputs else '(none)'}\n"
        f"  in: {where_raised(exc)}\n"
        f"  full traceback: {log}\n"
        "  This is a defect of dsosim or an input it does not yet check: please report it "
        "with the log file.",
        file=stream,
    )
    return 1
