"""The federation's role calls in one process, without HELICS: the reference
the co-simulation overhead is measured against (``dsosim bench scale``).

Every federate's own ``run`` function (ISO, utilities, independent
operators, aggregators) runs in a thread of this process with a
:class:`LocalShell` in place of the HELICS shell. Exactly one thread runs at
a time: a scheduler grants the lowest requested time (ties in federate
order), and a message sent at time t is delivered at the receiver's first
grant after t, as HELICS does for our uninterruptible federates. The role
calls, their order and their inputs are therefore those of the federation;
only the bus differs.

Two modes:

* ``roles``: messages are handed over as Python objects and result rows are
  dropped (the role calls alone, plus building the rows);
* ``serialised``: every message is msgpack-encoded and decoded with
  validation as on the bus, and the rows go to a :class:`ResultStore` that
  writes the Parquet parts as the recorder does.

Run as ``python -m dsosim.runner.bench.inprocess --config federation.json
--mode roles``: prints one JSON line with the CPU and wall seconds per
interval (from the first grant to the end, as the federation is measured),
start-up time and peak memory. Hardware-in-the-loop federations are not supported (the gateway
talks to real devices in real time).
"""

from __future__ import annotations

import argparse
import heapq
import json
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dsosim.federates.common import messages as msg
from dsosim.federates.common.collector import tune_collector
from dsosim.federates.common.config import FederationConfig, load_federation
from dsosim.federates.common.shell import FederateShell, Traffic

MODES = ("roles", "serialised")


class LocalShell(FederateShell):
    """A federate's shell on the in-process bus (see the module docstring)."""

    def __init__(self, bus: LocalBus, name: str, index: int) -> None:
        # deliberately no super().__init__: nothing of HELICS is created
        self.name = name
        self.recorder = bus.recorder
        self.traffic = bus.traffic_for(name)
        self._seq = 0
        self._rows: list[msg.TableRows] = []
        self.real_time = False
        self._grants: list[tuple[float, float]] = []
        self.time = 0.0
        self._bus = bus
        self._index = index
        self._inbox: list[tuple[float, str, int, Any]] = []
        self._go = threading.Semaphore(0)
        self._cpu_mark = 0.0  # this federate's thread CPU when it last got the bus

    def start(self) -> None:
        return

    def advance(self, t: float) -> float:
        self.send_rows()
        self.charge()
        self._bus.yield_to_scheduler(self, t)
        self._go.acquire()
        self.time = t
        self._cpu_mark = time.thread_time()
        return t

    def charge(self) -> None:
        """Book this thread's CPU since it got the bus to its current grant
        (its set-up before the first grant is booked at time -1)."""
        now = time.thread_time()
        at = self.time if self._bus.started(self) else -1.0
        self._bus.cpu[(at, self.name)] = (
            self._bus.cpu.get((at, self.name), 0.0) + now - self._cpu_mark
        )
        self._cpu_mark = now

    def send(self, destination: str, message: msg.Message) -> None:
        self._bus.deliver(self, destination, message)

    def receive(self, allowed_senders: Sequence[str] | None = None) -> list[msg.Message]:
        due = [m for m in self._inbox if m[0] < self.time]
        self._inbox = [m for m in self._inbox if m[0] >= self.time]
        due.sort(key=lambda item: (item[1], item[2]))
        if not self._bus.serialised:
            return [m[3] for m in due]
        return [
            msg.decode(data, source=src, allowed_senders=allowed_senders) for _, src, _, data in due
        ]

    def close(self) -> None:
        self.send_rows()

    def fail(self, text: str) -> None:
        return


class LocalBus:
    """Scheduler and message delivery for :class:`LocalShell` threads."""

    def __init__(self, config: FederationConfig, *, serialised: bool, results_dir: Path) -> None:
        self.config = config
        self.serialised = serialised
        self.recorder = config.recorder.name if serialised else None
        self.shells: dict[str, LocalShell] = {}
        self._back = threading.Semaphore(0)
        self._waiting: list[tuple[float, int, str]] = []
        self._errors: list[BaseException] = []
        self._store = None
        self._rows: list[tuple[str, int, bytes]] = []
        self._interval = -1
        if serialised:
            from dsosim.federates.recorder.store import ResultStore

            # as the recorder makes it (a test holds the tables byte-identical)
            self._store = ResultStore(
                results_dir, flush_every=config.recorder.flush_every, clock=config.time.timestamp
            )
        self.interval_cpu: dict[int, float] = {}
        self.interval_wall: dict[int, float] = {}
        self.cpu: dict[tuple[float, str], float] = {}
        """Thread CPU seconds of each federate's work at each of its grants
        (federation time, name): what ``dsosim bench phases`` adds up. A
        thread's own clock, so waiting and other threads do not count."""
        self._granted: set[str] = set()

    def started(self, shell: LocalShell) -> bool:
        """Has ``shell`` had a grant yet?"""
        return shell.name in self._granted

    def traffic_for(self, name: str) -> Traffic:
        return Traffic()

    # ------------------------------------------------------------- messages
    def deliver(self, sender: LocalShell, destination: str, message: msg.Message) -> None:
        payload: Any = message
        size = 0
        if self.serialised:
            payload = msg.encode(message)
            size = len(payload)
        if destination == self.recorder:
            # the recorder reads an interval's rows at its end, by (sender, arrival)
            self._rows.append((sender.name, len(self._rows), payload))
            return
        sender.traffic.add(destination, message.KIND, size)
        target = self.shells.get(destination)
        if target is None:
            raise RuntimeError(f"{sender.name} sent {message.KIND} to unknown {destination!r}")
        target._inbox.append((sender.time, sender.name, len(target._inbox), payload))

    # ------------------------------------------------------------ scheduler
    def yield_to_scheduler(self, shell: LocalShell, t: float) -> None:
        heapq.heappush(self._waiting, (t, shell._index, shell.name))
        self._back.release()

    def run(self, bodies: Sequence[tuple[str, Callable[[LocalShell], None]]]) -> float:
        """Run every federate body to its end; returns the set-up wall seconds
        (until every federate first asked for time)."""
        tune_collector()  # as every federate's process does (run_federate)
        t0 = time.perf_counter()
        for index, (name, body) in enumerate(bodies):
            shell = LocalShell(self, name, index)
            self.shells[name] = shell
            thread = threading.Thread(target=self._body, args=(shell, body), daemon=True)
            thread.start()
            self._back.acquire()  # set-up runs one federate at a time
            self._raise()
        setup = time.perf_counter() - t0
        time_settings = self.config.time
        while self._waiting:
            t, _, name = heapq.heappop(self._waiting)
            self._mark(int(t // time_settings.step))
            self._granted.add(name)
            self.shells[name]._go.release()
            self._back.acquire()
            self._raise()
        self._mark(time_settings.n_intervals + 1)  # (no interval n+1: the end)
        if self._store is not None:
            self._store.flush()
        return setup

    def _mark(self, interval: int) -> None:
        if interval > self._interval >= 0 and self._store is not None:
            self._rows.sort(key=lambda item: (item[0], item[1]))
            for sender, _, payload in self._rows:
                batch = msg.decode(payload, source=sender)
                assert isinstance(batch, msg.RowsBatch)
                for rows in batch.parts:
                    self._store.add(rows.table, rows.columns, rows.rows)
            self._rows.clear()
            self._store.end_interval(self._interval)
        self._interval = max(self._interval, interval)
        if interval not in self.interval_cpu:
            self.interval_cpu[interval] = time.process_time()
            self.interval_wall[interval] = time.perf_counter()

    def _body(self, shell: LocalShell, body: Callable[[LocalShell], None]) -> None:
        shell._cpu_mark = time.thread_time()
        try:
            body(shell)
            shell.close()  # as run_federate does: the last rows go out
        except BaseException as exc:  # reported by the scheduler thread
            self._errors.append(exc)
        finally:
            shell.charge()
            self._back.release()

    def _raise(self) -> None:
        if self._errors:
            raise RuntimeError(f"in-process federation failed: {self._errors[0]!r}") from (
                self._errors[0]
            )


def bodies(config: FederationConfig, base: Path) -> list[tuple[str, Callable[[Any], None]]]:
    """Every federate's ``run`` in the order of the federation's names."""
    if config.hil is not None:
        raise ValueError("hardware-in-the-loop federations cannot run in one process")
    from dsosim.federates.aggregator.__main__ import run as run_aggregator
    from dsosim.federates.dso.__main__ import run as run_dso
    from dsosim.federates.imo.__main__ import run as run_imo
    from dsosim.federates.iso.__main__ import run as run_iso

    def body(run: Callable[..., None], *args: Any) -> Callable[[Any], None]:
        return lambda shell: run(shell, config, *args)

    out = [(config.iso.name, body(run_iso))]
    out += [(d.name, body(run_dso, d.name, base)) for d in config.dsos]
    out += [(n, body(run_imo, n)) for n in config.independent_names()]
    out += [(a.name, body(run_aggregator, a.name)) for a in config.aggregators]
    return out


def measure(
    config_path: str | Path, mode: str, results_dir: str | Path | None = None
) -> dict[str, Any]:
    """Run the federation in one process; CPU and wall per interval. In
    ``serialised`` mode the result tables go to ``results_dir`` (a temporary
    folder if None)."""
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    config, base = load_federation(config_path)
    with tempfile.TemporaryDirectory(prefix="dsosim-inprocess-") as tmp:
        out = Path(results_dir) if results_dir is not None else Path(tmp)
        bus = LocalBus(config, serialised=mode == "serialised", results_dir=out)
        setup = bus.run(bodies(config, base))
    n = config.time.n_intervals
    return {
        "mode": mode,
        "intervals": n,
        "cpu_per_interval_s": (bus.interval_cpu[n + 1] - bus.interval_cpu[0]) / n,
        "wall_per_interval_s": (bus.interval_wall[n + 1] - bus.interval_wall[0]) / n,
        "startup_s": (bus.interval_wall[0] - t0),
        "setup_s": setup,
        "total_cpu_s": time.process_time() - cpu0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsosim.runner.bench.inprocess")
    parser.add_argument("--config", required=True, help="federation.json written by dsosim build")
    parser.add_argument("--mode", choices=MODES, default="roles")
    parser.add_argument("--results", default=None, help="keep the serialised mode's tables here")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.config, args.mode, args.results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
