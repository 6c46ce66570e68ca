"""Recorder federate: receives result rows from every federate and writes them.

Reads everything sent during interval k at sub-step RECORD, flushes Parquet
parts every ``flush_every`` intervals, and on any stop (clean or not) writes
what it has and a ``summary.json`` saying whether the run is complete.
"""

from __future__ import annotations

import argparse
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from dsosim.federates.common import ledger
from dsosim.federates.common import messages as msg
from dsosim.federates.common.config import RecorderConfig, load_federation
from dsosim.federates.common.log import federate_log
from dsosim.federates.common.schedule import Phase, at
from dsosim.federates.common.shell import REALTIME_COLUMNS, FederateShell, run_federate
from dsosim.federates.common.usage import stamp
from dsosim.federates.recorder import guardian
from dsosim.federates.recorder.store import ResultStore
from dsosim.federates.recorder.summary import summarise


def entitled(rc: RecorderConfig, m: msg.TableRows) -> None:
    """Refuse rows a federate is not entitled to write (see RecorderConfig)."""
    if rc.writers is not None:
        writers = rc.writers.get(m.table)
        if writers is None:
            raise msg.MessageError(
                m.sender,
                "rows.table",
                f"table {m.table!r} is not one this federation writes "
                "(tables are declared in common.tables.TABLES_BY_ROLE)",
            )
        if m.sender not in writers:
            raise msg.MessageError(
                m.sender,
                "rows.table",
                f"may not write table {m.table!r} (only {sorted(writers)} may)",
            )
    if m.table == "settlements" and rc.markets and "market" in m.columns:
        at = m.columns.index("market")
        for i, row in enumerate(m.rows):
            if not rc.may_settle(m.sender, str(row[at])):
                raise msg.MessageError(
                    m.sender,
                    f"rows[{i}].market",
                    f"may not book settlements in market {row[at]!r}",
                )


class Writer:
    """Decodes, checks and stores each RECORD's rows in a thread of its own,
    in order, while the recorder's federate already waits for its next grant:
    its RECORD step only collects the messages' bytes, so the rows' work
    (msgpack, checks, Arrow, Parquet) overlaps the federation's next
    interval instead of holding it (HELICS calls release the interpreter's
    lock). The recorder stays in lock-step: everything sent before a failure
    was received and is written before the results are closed."""

    def __init__(self, write: Callable[..., None]) -> None:
        self._write = write
        self._jobs: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="recorder-writer", daemon=True)
        self._thread.start()

    def put(self, *job: Any) -> None:
        self._jobs.put(job)

    def check(self) -> None:
        """Raise the writer's failure, if it had one (rows it refused)."""
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Wait until every queued step is written; raise the writer's failure."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        self.check()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self.error is not None:
                continue  # after a failure the rest is dropped, as it would be unread
            try:
                self._write(*job)
            except BaseException as exc:
                self.error = exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsosim.federates.recorder")
    parser.add_argument("--config", required=True)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    config, base = load_federation(args.config)
    rc = config.recorder
    # the folder is claimed (old results removed) only once every federate joined
    store = ResultStore(
        base / rc.results_dir,
        flush_every=rc.flush_every,
        clock=config.time.timestamp,
        claim=False,
    )
    senders = [n for n in config.federate_names() if n != rc.name]
    state = {"interval": -1}
    lb = config.ledger_bound
    bound = None if lb is None else ledger.SanityBound(lb.max_mw, lb.max_price)

    log = federate_log(rc.name)
    guard: list[subprocess.Popen[bytes]] = []  # alive as long as the recorder runs

    def body(shell: FederateShell) -> None:
        n = config.time.n_intervals
        shell.start()
        store.claim()
        guard.append(guardian.start(store.dir))
        # Imported once the federation runs, not at the process's start (where
        # they would take a second of CPU from the other federates' start-up;
        # the federation's first RECORD is a few sub-steps away), and not at the
        # first flush or summary either: when a federate fails, helics run
        # stops the recorder soon after, and its last flush must not wait on
        # an import.
        import pandas  # noqa: F401
        import pyarrow.parquet  # noqa: F401

        # the end of its set-up: ``dsosim bench scale`` counts its CPU per
        # interval from here (a one-off import is no cost of an interval)
        log.info(stamp("ready"))
        # One extra step after the last interval: the ISO settles the last
        # interval's imbalance at the start of the next one.
        for k in range(n + 1):
            writer.check()  # rows it refused stop the federation
            shell.advance(at(k, Phase.RECORD, config.time))
            writer.put(k, shell.receive_raw(), shell.take_grants(k))
        writer.close()
        log.info(stamp("intervals done"))  # dsosim bench scale
        summary = store.finish(complete=True, error=None, summarise=summarise)
        log.info("results complete: %s intervals", summary.get("intervals"))

    def write(k: int, raw: list[tuple[str, bytes]], own: list[tuple[Any, ...]]) -> None:
        """RECORD of interval ``k``: its rows decoded, checked and stored."""
        n = config.time.n_intervals
        for src, data in raw:
            for part in _parts(msg.decode(data, source=src, allowed_senders=senders)):
                entitled(rc, part)
                if part.table == "settlements":
                    _add_settlements(store, part, bound, rc.name)
                else:
                    store.add(part.table, part.columns, part.rows)
        if own:
            store.add("realtime", REALTIME_COLUMNS, own)
        state["interval"] = k
        store.end_interval(k)
        if k < n and ((k + 1) % rc.flush_every == 0 or k + 1 == n):
            log.info("progress %d/%d", k + 1, n)

    writer = Writer(write)

    def on_error(text: str) -> None:
        try:
            writer.close()  # what was received is written
        except Exception:
            pass  # the writer's own failure: already the reason we stop
        store.finish(
            complete=False,
            error=f"stopped at interval {state['interval'] + 1}: {text}",
            summarise=summarise,
        )

    def on_signal(reason: str) -> None:
        store.announce_stop(f"stopped at interval {state['interval'] + 1}: {reason}")

    return run_federate(
        rc.name,
        # in lock-step, not a HELICS observer: an observer trails the federation,
        # and when a federate fails, the rows it had not yet read are lost
        lambda: FederateShell(rc.name, config.helics, recorder=None),
        body,
        on_error,
        run_folder=base,
        on_signal=on_signal,
    )


def _parts(m: msg.Message) -> tuple[msg.TableRows, ...]:
    """The tables of a rows message (one, or a batch's)."""
    if isinstance(m, msg.RowsBatch):
        return m.parts
    if isinstance(m, msg.TableRows):
        return (m,)
    raise msg.MessageError(m.sender, "kind", f"recorder only accepts rows, got {m.KIND}")


def _add_settlements(
    store: ResultStore, m: msg.TableRows, bound: ledger.SanityBound | None, name: str
) -> None:
    """The books take only finite payments within the case's sanity bound;
    the others go to ``ledger_refused`` (party, interval, reason), and the
    summary then reports no settlement residual."""
    good, refused = ledger.screen(m.rows, bound, m.columns)
    store.add(m.table, m.columns, good)
    if refused:
        store.add("ledger_refused", ledger.REFUSED_COLUMNS, refused)
        for row in refused[:3]:
            federate_log(name).info("refused from the books (%s): %s", m.sender, row[-1])


if __name__ == "__main__":
    sys.exit(main())
