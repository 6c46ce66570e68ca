"""The HELICS plumbing every federate shares, and nothing else.

A :class:`FederateShell` creates one message federate with one global endpoint
named after the federate, moves typed messages (see ``messages``) in and out,
advances time to explicit instants, and turns any exception into a HELICS
*global error*, so that every other federate stops within milliseconds and
the whole federation exits non-zero instead of hanging.

Federates are ``uninterruptible``: they are granted exactly the instants they
request, which keeps the exchange order inside a market interval fixed (see
``schedule``). Messages received at a grant are returned sorted by
(source, arrival order), so processing order never depends on the network.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import helics as h
from helics.capi import ffi as _ffi

from dsosim.federates.common import messages as msg
from dsosim.federates.common.collector import tune_collector
from dsosim.federates.common.config import FederationConfig, HelicsSettings, load_federation
from dsosim.federates.common.lifecycle import (
    AlreadyRunning,
    StopSignals,
    die_with_parent,
    hold_lock,
)
from dsosim.federates.common.log import federate_log
from dsosim.federates.common.usage import finished_line, stamp

M = TypeVar("M", bound=msg.Message)


TRAFFIC_COLUMNS = ("interval", "federate", "to", "kind", "messages", "bytes")
REALTIME_COLUMNS = ("interval", "federate", "t_s", "wall_s", "lag_ms")
"""Real-time tracking: every grant's federation time, the wall time since the
federate entered executing mode (HELICS's real-time zero) and their
difference (positive: the grant came late)."""


@dataclass
class Traffic:
    """Messages and bytes this federate sent to market participants, per
    destination and kind (records sent to the recorder are bookkeeping of the
    simulator, not counted)."""

    counts: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def add(self, destination: str, kind: str, size: int) -> None:
        entry = self.counts.setdefault((destination, kind), [0, 0])
        entry[0] += 1
        entry[1] += size


class FederateShell:
    """One HELICS message federate with a single global endpoint."""

    def __init__(
        self,
        name: str,
        settings: HelicsSettings,
        *,
        recorder: str | None,
        owns_library: bool = True,
        core: str | None = None,
    ) -> None:
        self.name = name
        self.recorder = recorder
        self.owns_library = owns_library
        """False when other federates share this process (``federates.pack``):
        HELICS's library is closed once, by the process, after all of them."""
        self.traffic = Traffic()
        self._seq = 0
        self._rows: list[msg.TableRows] = []
        info = h.helicsCreateFederateInfo()
        h.helicsFederateInfoSetCoreTypeFromString(info, settings.core_type)
        if core is not None:  # a core the process made for several federates (core_init)
            h.helicsFederateInfoSetCoreName(info, core)
        else:
            h.helicsFederateInfoSetCoreInitString(info, core_init(name, settings, 1))
        h.helicsFederateInfoSetFlagOption(info, h.HELICS_FLAG_UNINTERRUPTIBLE, True)
        h.helicsFederateInfoSetFlagOption(info, h.HELICS_FLAG_TERMINATE_ON_ERROR, True)
        h.helicsFederateInfoSetTimeProperty(info, h.HELICS_PROPERTY_TIME_DELTA, 1e-6)
        self.real_time = settings.real_time
        if settings.real_time:
            h.helicsFederateInfoSetFlagOption(info, h.HELICS_FLAG_REALTIME, True)
            h.helicsFederateInfoSetTimeProperty(
                info, h.HELICS_PROPERTY_TIME_RT_LEAD, settings.rt_lead_s
            )
            h.helicsFederateInfoSetTimeProperty(
                info, h.HELICS_PROPERTY_TIME_RT_LAG, settings.rt_lag_s
            )
        self._wall0 = 0.0
        self._started = False
        self._grants: list[tuple[float, float]] = []
        self._fed = h.helicsCreateMessageFederate(name, info)
        self._endpoint = h.helicsFederateRegisterGlobalEndpoint(self._fed, name, "")
        self.time = 0.0

    # ----------------------------------------------------------------- time
    def start(self) -> None:
        """Enter executing mode (collective: returns when every federate has).
        Called by the first :meth:`advance`, so a federate's set-up (feeder
        compile, fleet build) happens before the federation's clock starts: in
        real time, HELICS's wall-clock zero is this moment."""
        if self._started:
            return
        h.helicsFederateEnterExecutingMode(self._fed)
        self._started = True
        self._wall0 = time.perf_counter()
        # the moment the federation's clock starts (``dsosim bench scale`` reads it)
        federate_log(self.name).info(stamp("executing"))

    def advance(self, t: float) -> float:
        """Block until the federation grants time ``t`` (exactly, we are
        uninterruptible). In real time, notes the wall time of the grant."""
        self.start()
        self.send_rows()
        self.time = h.helicsFederateRequestTime(self._fed, t)
        if self.real_time:
            self._grants.append((self.time, time.perf_counter() - self._wall0))
        return self.time

    def take_grants(self, interval: int) -> list[tuple[Any, ...]]:
        """Rows of the ``realtime`` table for the grants since the last call."""
        rows = [(interval, self.name, t, wall, (wall - t) * 1e3) for t, wall in self._grants]
        self._grants.clear()
        return rows

    # ------------------------------------------------------------- messages
    def send(self, destination: str, message: msg.Message) -> None:
        raw = msg.encode(message)
        h.helicsEndpointSendBytesTo(self._endpoint, raw, destination)
        if destination != self.recorder:
            self.traffic.add(destination, message.KIND, len(raw))

    def record(
        self, interval: int, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Rows of a results table for the recorder (if there is one): sent
        with the others of this time step, in one message, when the federate
        next asks for time (or closes), so at the same federation time as
        one message per table and read by the recorder in the same order.
        Values may be numpy scalars and arrays (``messages.encode``)."""
        if self.recorder is None or not rows:
            return
        self._rows.append(msg.TableRows(self.name, interval, table, tuple(columns), rows))

    def send_rows(self) -> None:
        """Send the rows recorded since the last time step (one ``RowsBatch``)."""
        if not self._rows or self.recorder is None:
            return
        parts, self._rows = tuple(self._rows), []
        self.send(self.recorder, msg.RowsBatch(self.name, parts[0].interval, parts))

    def end_interval(self, interval: int) -> None:
        """Send this interval's bookkeeping to the recorder and reset it: the
        traffic counts and, in real time, the wall-clock lag of each grant."""
        rows = [
            (interval, self.name, dest, kind, n, size)
            for (dest, kind), (n, size) in sorted(self.traffic.counts.items())
        ]
        self.traffic.counts.clear()
        self.record(interval, "traffic", TRAFFIC_COLUMNS, rows)
        self.record(interval, "realtime", REALTIME_COLUMNS, self.take_grants(interval))

    def record_tables(
        self, interval: int, tables: Mapping[str, tuple[Sequence[str], Sequence[Sequence[Any]]]]
    ) -> None:
        """Send several results tables (name -> (columns, rows)) to the recorder."""
        for table, (columns, rows) in tables.items():
            self.record(interval, table, columns, rows)

    def receive(self, allowed_senders: Sequence[str] | None = None) -> list[msg.Message]:
        """All messages delivered so far, validated, in a deterministic order."""
        return [
            msg.decode(data, source=src, allowed_senders=allowed_senders)
            for src, data in self.receive_raw()
        ]

    def receive_raw(self) -> list[tuple[str, bytes]]:
        """All messages delivered so far as (sender, bytes), not yet decoded,
        sorted by (sender, arrival order): the order :meth:`receive` gives."""
        raw: list[tuple[str, int, bytes]] = []
        while h.helicsEndpointHasMessage(self._endpoint):
            m = h.helicsEndpointGetMessage(self._endpoint)
            raw.append((sender_of(m), len(raw), message_bytes(m)))
        raw.sort(key=lambda item: (item[0], item[1]))
        return [(src, data) for src, _, data in raw]

    # -------------------------------------------------------------- closing
    def close(self) -> None:
        self.send_rows()
        federate_log(self.name).info(finished_line())
        h.helicsFederateDisconnect(self._fed)
        h.helicsFederateFree(self._fed)
        if self.owns_library:
            h.helicsCloseLibrary()

    def interrupt(self, reason: str) -> None:
        """From another thread (a stop signal): raise a global error, so this
        federate's blocked HELICS call returns and every peer stops too."""
        try:
            h.helicsFederateGlobalError(self._fed, 2, reason)
        except h.HelicsException:
            pass  # already stopping

    def fail(self, text: str) -> None:
        """Raise a global error: every federate in the federation stops."""
        try:
            h.helicsFederateGlobalError(self._fed, 1, f"{self.name}: {text}")
        except h.HelicsException:
            pass  # already in an error state: the federation knows
        try:
            h.helicsFederateFree(self._fed)
            if self.owns_library:
                h.helicsCloseLibrary()
        except h.HelicsException:
            pass


def _first(before: Callable[[str], None], then: Callable[[str], None]) -> Callable[[str], None]:
    """``before(reason)``, then ``then(reason)`` whatever ``before`` did."""

    def both(reason: str) -> None:
        try:
            before(reason)
        finally:
            then(reason)

    return both


def core_init(name: str, settings: HelicsSettings, federates: int) -> str:
    """The init string of the HELICS core of ``federates`` federates, the first
    of them ``name`` (its host's interface is the core's)."""
    init = f"--federates={federates} --broker_address={settings.broker_address}"
    if settings.broker_key:
        init += f" --brokerkey={settings.broker_key}"
    if name in settings.interfaces:  # on another host: say where the broker reaches us
        init += f" --local_interface=tcp://{settings.interfaces[name]}"
    return init + f" --timeout={settings.connect_timeout_s}s"


def sender_of(message: Any) -> str:
    """The endpoint a message came from, as HELICS's core recorded it. A sender
    can set the *original* source of a message it sends to anything (it is
    meant for filters, which this federation has none of): if that differs from
    the real source, the message is a forgery and is refused, naming both."""
    source = h.helicsMessageGetSource(message)
    original = h.helicsMessageGetOriginalSource(message)
    if original and original != source:
        raise msg.MessageError(
            source, "source", f"claims to come from {original!r} but was sent by {source!r}"
        )
    return source


def message_bytes(message: Any) -> bytes:
    """A HELICS message's payload, copied once from HELICS's own buffer.

    ``helics.helicsMessageGetBytes`` allocates its buffer with
    ``ffi.new("char[N]")``, which makes cffi parse a new C type for every new
    message size (about 1 ms each, against microseconds for the copy);
    message sizes vary from interval to interval, so that cost recurs. Here:
    the byte count, the pointer to the bytes HELICS holds for this message
    (valid while ``message`` lives), and one copy."""
    n = h.helicsMessageGetByteCount(message)
    if n == 0:
        return b""
    return _ffi.unpack(_ffi.cast("char *", h.helicsMessageGetBytesPointer(message)), n)


def expect(
    messages: Sequence[msg.Message], kind: type[M], interval: int, senders: Sequence[str]
) -> dict[str, M]:
    """Exactly one message of ``kind`` for ``interval`` from each sender."""
    got: dict[str, M] = {}
    for m in messages:
        if not isinstance(m, kind) or m.interval != interval:
            raise msg.MessageError(
                m.sender,
                f"{m.KIND}.interval",
                f"unexpected {m.KIND} for interval {m.interval}; "
                f"expected {kind.KIND} for interval {interval}",
            )
        if m.sender in got:
            raise msg.MessageError(m.sender, m.KIND, f"sent twice for interval {interval}")
        got[m.sender] = m
    missing = sorted(set(senders) - set(got))
    if missing:
        raise RuntimeError(f"interval {interval}: no {kind.KIND} from {missing}")
    return got


def federate_main(
    kind: str,
    body: Callable[[FederateShell, FederationConfig, str, Path], None],
    argv: list[str] | None = None,
) -> int:
    """The command line every federate process has: ``--config FILE --name NAME``;
    runs ``body(shell, config, name, config_folder)`` inside :func:`run_federate`."""
    parser = argparse.ArgumentParser(prog=f"python -m dsosim.federates.{kind}")
    parser.add_argument("--config", required=True, help="federation.json written by dsosim build")
    parser.add_argument("--name", required=True, help="this federate's name in the federation")
    args = parser.parse_args(argv)
    config, base = load_federation(args.config)
    return run_federate(
        args.name,
        lambda: FederateShell(args.name, config.helics, recorder=config.recorder.name),
        lambda shell: body(shell, config, args.name, base),
        run_folder=base,
    )


def run_federate(
    name: str,
    shell_factory: Callable[[], FederateShell],
    body: Callable[[FederateShell], None],
    on_error: Callable[[str], None] | None = None,
    run_folder: Path | None = None,
    stops: StopSignals | None = None,
    on_signal: Callable[[str], None] | None = None,
) -> int:
    """Create the shell, run ``body`` and translate failures into a clean,
    federation-wide stop. Returns the process exit code. A stop signal (or the
    death of ``helics run``, see ``lifecycle``) is such a failure too, named.

    With ``run_folder`` (where federation.json is), the federate first locks
    ``.NAME.lock`` there: a second launch of the same runner is refused before
    it ever contacts the broker (a HELICS join attempt, even a refused one,
    can break a running federation: see the README, "what happens when things
    go wrong").

    ``stops``: the process's stop signals when several federates share it
    (``federates.pack``, which also interrupts every federate on a stop);
    otherwise this federate takes the process's signals itself.

    ``on_signal(reason)``: run by the signal watcher when a stop signal comes,
    before the HELICS global error that stops the federation (the recorder
    writes its verdict there, so that the reason survives whatever happens to
    the process next)."""
    log = federate_log(name)
    tune_collector()
    shared = stops is not None
    if stops is None:
        die_with_parent()
        stops = StopSignals(name).start()
    if run_folder is not None:
        try:
            hold_lock(run_folder / f".{name}.lock", f"federate {name!r} of {run_folder}")
        except AlreadyRunning as exc:
            log.error(
                "FAILED: %s: another launch of this federation is running; "
                "not joining (it would disturb that run)",
                exc,
            )
            return 2
    try:
        shell = shell_factory()
    except Exception as exc:
        log.error("could not join the federation: %s", exc)
        return 2
    if not shared:
        stops.on_stop(shell.interrupt if on_signal is None else _first(on_signal, shell.interrupt))
    try:
        body(shell)  # the first advance enters executing mode, after the body's set-up
    except h.HelicsException as exc:
        # Another federate raised a global error (or the broker went away), or
        # a stop signal reached this process.
        text = stops.reason or f"stopped by the federation: {exc}"
        log.error(text)
        if on_error is not None:
            on_error(text)
        shell.fail(text)
        return 128 + stops.signal if stops.signal else 3
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        log.error("FAILED: %s", text, exc_info=True)
        if on_error is not None:
            on_error(text)
        shell.fail(text)
        return 1
    if not shared:
        stops.on_stop(None)
    shell.close()
    return 0
