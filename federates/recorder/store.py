"""Results on disk: one Parquet dataset per table, plus ``summary.json``.

Rows arrive table by table and are buffered; every ``flush_every`` intervals
(and on any stop, clean or not) the buffer is written as a new part file
``<table>/part-NNNNN.parquet``. A crash therefore loses at most the unflushed
intervals, and ``summary.json`` says ``"complete": false`` until the run
really finished. ``pandas.read_parquet(results_dir / table)`` reads a table.

Files are written deterministically (no timestamps, fixed column order and
types), so the same run gives byte-identical results.

A part is written to a hidden temporary file (``.part-NNNNN.parquet.tmp``:
Arrow's dataset reader skips names starting with a dot) and renamed into
place, so a table folder is readable at every moment, even if the writer is
killed mid-write. The folder is *claimed* (earlier results removed, a
``running`` summary written) only when :meth:`ResultStore.claim` is called:
the recorder does so once every federate has joined, so a run that fails to
start never touches the previous run's results.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pyarrow is imported at the first flush: the broker imports this module
    import pyarrow as pa

SUMMARY = "summary.json"
TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
"""Table names are folder names: nothing that leaves the results folder."""
TIMESTAMP = "timestamp"


class StoreError(OSError):
    """Results could not be written (disk full, folder gone); says which table."""


class ResultStore:
    """Buffered, crash-tolerant writer of the run's result tables."""

    def __init__(
        self,
        results_dir: str | Path,
        *,
        flush_every: int = 12,
        clock: Callable[[int], datetime] | None = None,
        claim: bool = True,
    ) -> None:
        self.dir = Path(results_dir)
        self.flush_every = flush_every
        # interval -> simulated date-time: tables with an ``interval`` column
        # get a ``timestamp`` column right after it, here in one place
        self.clock = clock
        self._stamps: dict[int, datetime] = {}
        """The clock's answers so far: one datetime per interval, not one per row
        (the recorder's single largest cost per interval when it was per row)."""
        self._buffers: dict[str, tuple[tuple[str, ...], list[Sequence[Any]]]] = {}
        self._schemas: dict[str, pa.Schema] = {}
        self._parts: dict[str, int] = {}
        self.claimed = False
        self._verdict = threading.Lock()
        self._finishing = False
        if claim:
            self.claim()

    def claim(self) -> None:
        """Make the folder this run's: remove earlier results, say ``running``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        # Results of an earlier run in the same folder would mix with ours.
        for child in self.dir.iterdir():
            if child.is_dir() and (
                any(child.glob("part-*.parquet")) or any(child.glob(".part-*.tmp"))
            ):
                shutil.rmtree(child)
        (self.dir / SUMMARY).unlink(missing_ok=True)
        self.write_summary({"complete": False, "status": "running"})
        self.claimed = True

    def add(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Buffer ``rows`` (sequences of ``len(columns)`` values) of ``table``
        until the next flush; the columns of a table never change."""
        if not TABLE_NAME.match(table):
            raise ValueError(
                f"{table[:80]!r} is not a table name: it would leave the results folder"
            )
        columns = tuple(columns)
        known = self._buffers.get(table)
        if known is None:
            self._buffers[table] = (columns, list(rows))
            return
        if known[0] != columns:
            raise ValueError(f"table {table!r}: columns {columns} differ from {known[0]}")
        known[1].extend(rows)

    def _stamp(self, interval: int) -> datetime:
        stamp = self._stamps.get(interval)
        if stamp is None:
            assert self.clock is not None
            stamp = self._stamps[interval] = self.clock(interval)
        return stamp

    def _columns(
        self, table: str, columns: tuple[str, ...], rows: list[Sequence[Any]]
    ) -> dict[str, list[Any]]:
        """Buffered rows as columns (taken at C speed: the recorder's
        largest cost per interval when it went row by row); tables with an
        ``interval`` column get a ``timestamp`` column right after it."""
        widths = set(map(len, rows))
        if widths != {len(columns)}:
            raise ValueError(
                f"table {table!r}: rows of {sorted(widths)} values for {len(columns)} columns"
            )
        data = {c: list(map(itemgetter(i), rows)) for i, c in enumerate(columns)}
        if self.clock is None or "interval" not in data or TIMESTAMP in data:
            return data
        stamps = {i: self._stamp(int(i)) for i in set(data["interval"])}
        out: dict[str, list[Any]] = {}
        for c, values in data.items():
            out[c] = values
            if c == "interval":
                out[TIMESTAMP] = list(map(stamps.__getitem__, values))
        return out

    def end_interval(self, interval: int) -> None:
        if (interval + 1) % self.flush_every == 0:
            self.flush()

    def flush(self) -> None:
        for table in sorted(self._buffers):
            columns, rows = self._buffers[table]
            if not rows:
                continue
            import pyarrow.parquet as pq

            data = self._columns(table, columns, rows)
            schema = self._schemas.get(table)
            arrow = self._conform(table, data, schema) if schema else _infer(data)
            self._schemas.setdefault(table, arrow.schema)
            part = self._parts.get(table, 0)
            folder = self.dir / table
            folder.mkdir(exist_ok=True)
            target = folder / f"part-{part:05d}.parquet"
            _write_part(arrow, target, table, pq)
            self._parts[table] = part + 1
            rows.clear()

    def _conform(self, table: str, data: dict[str, list[Any]], schema: pa.Schema) -> pa.Table:
        """This flush's rows in the table's schema. A column whose type the first
        rows could not tell (all None: Arrow's null type) or that widens (ints,
        then floats) gets the wider type, and the parts already written are
        rewritten in it, so that every part of a table has one schema."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pa.table(data, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
        fresh = _infer(data)
        try:
            wider = pa.unify_schemas([schema, fresh.schema], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(
                f"table {table!r}: column types changed between flushes: {exc}"
            ) from None
        folder = self.dir / table
        for part in range(self._parts.get(table, 0)):
            target = folder / f"part-{part:05d}.parquet"
            _write_part(pq.read_table(target).cast(wider), target, table, pq)
        self._schemas[table] = wider
        return fresh.cast(wider)

    def write_summary(self, summary: dict[str, Any]) -> None:
        with self._verdict:
            write_json(self.dir / SUMMARY, summary)

    def announce_stop(self, error: str) -> None:
        """Say at once, from any thread, that the run is stopping and why (a
        stop signal's watcher, before it touches HELICS): if the process then
        dies before :meth:`finish` (a crash, a SIGKILL, its grace running out),
        the verdict is on disk with its real reason and the guardian completes
        the summary from the parts on disk. Once :meth:`finish` has begun it
        writes the verdict itself and this does nothing."""
        with self._verdict:
            if self.claimed and not self._finishing:
                write_json(self.dir / SUMMARY, bare_verdict(error))

    def finish(
        self, *, complete: bool, error: str | None, summarise: Callable[[Path], dict[str, Any]]
    ) -> dict[str, Any]:
        """Flush everything and write the final ``summary.json``. If the flush
        fails (disk full), the run is incomplete and the summary says why.
        A store that never claimed its folder writes nothing."""
        if not self.claimed:
            return {}
        with self._verdict:
            self._finishing = True
        if not complete:
            # first the verdict, cheaply: a stop may not leave time to summarise
            self.write_summary(bare_verdict(error))
        try:
            self.flush()
        except StoreError as exc:
            complete = False
            why = str(exc.strerror)
            error = (error if why in error else f"{error}; {why}") if error else why
        try:
            summary = summarise(self.dir)
        except Exception as exc:
            summary = {"summary_error": f"{type(exc).__name__}: {exc}"}
        summary["complete"] = complete
        summary["status"] = "complete" if complete else "incomplete"
        if error:
            summary["error"] = error
        self.write_summary(summary)
        return summary


def bare_verdict(error: str | None) -> dict[str, Any]:
    """The summary written first when a run stops: the verdict and its reason,
    before anything is summarised (that may not get done: see ``guardian``)."""
    return {"complete": False, "status": "incomplete", "error": error}


def is_bare_verdict(summary: dict[str, Any]) -> bool:
    """A stop's verdict with nothing summarised yet."""
    return summary.get("status") == "incomplete" and set(summary) <= {"complete", "status", "error"}


KILLED_RECORDER = (
    "the recorder was killed before it could finish (SIGKILL: e.g. SIGINT to "
    "helics run, which kills every federate, or the out-of-memory killer)"
)
"""The verdict the recorder's guardian writes (``guardian``): a launcher that
knows more (which federate failed) replaces it."""


def verdict_missing(summary: dict[str, Any]) -> bool:
    """No one who knew why has said so yet: the summary still says running (or
    nothing), or only the guardian's generic verdict is there."""
    return summary.get("status") != "incomplete" or summary.get("error") == KILLED_RECORDER


def mark_incomplete(
    results_dir: str | Path,
    error: str,
    summarise: Callable[[Path], dict[str, Any]],
    *,
    only_if: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """After a run whose recorder was killed before it could finish: summarise
    the parts already on disk and say the run is incomplete, and why. With
    ``only_if``, only when it holds for the summary on disk (checked and written
    under a lock: the guardian, the launcher and its watchdog may all try)."""
    folder = Path(results_dir)
    lock = os.open(folder / ".verdict.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if only_if is not None:
            try:
                current = json.loads((folder / SUMMARY).read_text())
            except (OSError, ValueError):
                current = {}
            if not only_if(current):
                return dict(current)
        try:
            summary = summarise(folder)
        except Exception as exc:
            summary = {"summary_error": f"{type(exc).__name__}: {exc}"}
        summary.update(complete=False, status="incomplete", error=error)
        write_json(folder / SUMMARY, summary)
        return summary
    finally:
        os.close(lock)


def write_json(target: Path, data: dict[str, Any]) -> None:
    """Replace ``target`` atomically; on a full disk, rewrite it in place
    (truncating first frees the block the new text needs)."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)
        with open(target, "w") as f:
            f.write(text)


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "disk full (no space left on device)"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return exc.strerror or str(exc)


def _write_part(arrow: pa.Table, target: Path, table: str, pq: Any) -> None:
    """Write one part through a hidden temporary and a rename (a reader never
    sees half a part); a full disk is a :class:`StoreError` naming the table."""
    tmp = target.parent / f".{target.name}.tmp"
    try:
        pq.write_table(arrow, tmp, compression="zstd")
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)  # frees the space a full disk needs
        if isinstance(exc, OSError):
            raise StoreError(
                exc.errno or errno.EIO, f"cannot write results table {table!r}: {_why(exc)}"
            ) from None
        raise


def _infer(data: dict[str, list[Any]]) -> pa.Table:
    """Arrow table with ints promoted to float where a column mixes them."""
    import pyarrow as pa

    arrays = {}
    for name, values in data.items():
        types = set(map(type, values))  # the per-value walk only where ints meet floats
        if any(issubclass(t, float) for t in types) and any(
            issubclass(t, int) and not issubclass(t, bool) for t in types
        ):
            values = [
                float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values
            ]
        arrays[name] = pa.array(values)
    return pa.table(arrays)
