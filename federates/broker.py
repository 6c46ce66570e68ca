"""An in-process HELICS broker, started as one entry of a runner file.

Started from Python (not the ``helics_broker`` wrapper) so that stopping it
never orphans a broker process holding the port, on the port chosen at build,
with the federation's secret broker key (read from the key file beside
``federation.json``, never passed on a command line where ``ps`` shows it).

It also watches the federation:

* **stalls**: every couple of seconds it asks each federate for its granted
  and requested time. If no federate's granted time moves for
  ``stall_timeout_s`` seconds, it stops the federation with a global error
  naming the federate that holds it: the one that does not answer (stopped,
  hung) or that is not requesting a next time (busy) while others wait.
* **who is who**: once everyone has joined it prints the HELICS ids of each
  federate and its core (``id 1879048196 = lda5``), so a HELICS message that
  names only an id can be translated by the launcher.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helics as h

from dsosim.federates.common.config import FederationConfig, load_federation
from dsosim.federates.common.lifecycle import StopSignals, die_with_parent
from dsosim.federates.common.log import federate_log
from dsosim.federates.common.usage import finished_line, stamp
from dsosim.federates.recorder.store import SUMMARY, write_json

LOG = logging.getLogger("broker")
POLL_S = 2.0
QUERY_TIMEOUT_S = 5.0
ID_MAP_PREFIX = "federation ids:"


@dataclass(frozen=True)
class FederateTime:
    name: str
    answered: bool
    granted: float | None = None
    requested: float | None = None

    @property
    def waiting(self) -> bool:
        """Requesting a later time than it has: blocked on someone else."""
        return (
            self.answered
            and self.granted is not None
            and self.requested is not None
            and self.requested > self.granted
        )


def _query(broker: Any, target: str, what: str, timeout_s: float = QUERY_TIMEOUT_S) -> Any:
    """A broker query with a deadline (a stopped federate never answers)."""
    box: list[Any] = []

    def ask() -> None:
        q = h.helicsCreateQuery(target, what)
        try:
            box.append(h.helicsQueryBrokerExecute(q, broker))
        except h.HelicsException as exc:
            box.append({"error": {"message": str(exc)}})
        finally:
            h.helicsQueryFree(q)

    worker = threading.Thread(target=ask, daemon=True)
    worker.start()
    worker.join(timeout_s)
    return box[0] if box else None


def federate_time(broker: Any, name: str) -> FederateTime:
    answer = _query(broker, name, "current_time")
    if not isinstance(answer, dict) or "granted_time" not in answer:
        return FederateTime(name, answered=isinstance(answer, dict))
    return FederateTime(name, True, answer["granted_time"], answer["requested_time"])


def holders(times: list[FederateTime]) -> list[str]:
    """Who holds a stalled federation: whoever does not answer, else whoever
    is not waiting for a grant (busy, or blocked outside HELICS)."""
    silent = [t.name for t in times if not t.answered]
    if silent:
        return silent
    return [t.name for t in times if not t.waiting]


def describe_stall(times: list[FederateTime], stalled_s: float) -> str:
    held = holders(times)
    detail = []
    for t in times:
        if t.name not in held:
            continue
        if not t.answered:
            detail.append(f"{t.name!r} (does not answer: stopped or hung)")
        elif t.granted is None:
            detail.append(f"{t.name!r} (not yet executing)")
        else:
            detail.append(f"{t.name!r} (granted t={t.granted:g} s, not requesting a next time)")
    who = ", ".join(detail) if detail else "no single federate (all are waiting)"
    return f"stalled: no time grant for {stalled_s:.0f} s; the federation is held by {who}"


def id_map(broker: Any) -> dict[int, str]:
    """HELICS ids of every federate and of its core -> federate name."""
    answer = _query(broker, "root", "federate_map")
    out: dict[int, str] = {}

    def walk(node: dict[str, Any]) -> None:
        for child in node.get("cores", []) + node.get("brokers", []):
            walk(child)
        feds = node.get("federates", [])
        for fed in feds:
            out[int(fed["attributes"]["id"])] = fed["attributes"]["name"]
        if len(feds) == 1 and "attributes" in node:
            out[int(node["attributes"]["id"])] = feds[0]["attributes"]["name"]

    if isinstance(answer, dict):
        walk(answer)
    return out


def mark_stalled(results: Path | None, text: str) -> None:
    """Say why in ``summary.json`` at once: ``helics run`` kills every process
    a moment after the first one exits, possibly before the recorder has
    written its own (fuller) verdict. Only a summary this run started
    (``running``) is touched."""
    if results is None:
        return
    try:
        current = json.loads((results / SUMMARY).read_text())
    except (OSError, ValueError):
        return
    if current.get("status") == "running":
        write_json(results / SUMMARY, {"complete": False, "status": "incomplete", "error": text})


def watch(
    broker: Any, config: FederationConfig, stall_timeout_s: float, results: Path | None = None
) -> None:
    """Until the broker disconnects: detect stalls, print the id map once."""
    names = config.federate_names()
    last: tuple[Any, ...] | None = None
    since = time.monotonic()
    mapped = False
    while not h.helicsBrokerWaitForDisconnect(broker, int(POLL_S * 1000)):
        times = [federate_time(broker, n) for n in names]
        if not mapped and all(t.granted is not None for t in times):
            ids = id_map(broker)
            pairs = " ".join(f"{i}={n}" for i, n in sorted(ids.items()))
            LOG.info("%s %s", ID_MAP_PREFIX, pairs)
            mapped = True
        state = tuple((t.answered, t.granted) for t in times)
        now = time.monotonic()
        if state != last:
            last, since = state, now
            continue
        if now - since >= stall_timeout_s:
            text = describe_stall(times, now - since)
            LOG.error("FAILED: %s", text)
            mark_stalled(results, text)
            h.helicsBrokerGlobalError(broker, 4, f"broker: {text}")
            h.helicsBrokerWaitForDisconnect(broker, 10_000)
            raise SystemExit(4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsosim.federates.broker")
    parser.add_argument("--config", required=True, help="federation.json written by dsosim build")
    parser.add_argument(
        "--interface",
        default="127.0.0.1",
        help="address to listen on (loopback unless told otherwise)",
    )
    args = parser.parse_args(argv)
    global LOG
    LOG = federate_log("broker")
    die_with_parent()
    stops = StopSignals("broker").start()
    config, base = load_federation(args.config)
    s = config.helics
    init = (
        f"-f {len(config.federate_names())} --port={s.broker_port}"
        f" --local_interface={args.interface} --maxcosimduration={s.max_cosim_duration_s}s"
    )
    if s.broker_key:
        init += f" --brokerkey={s.broker_key}"
    broker = h.helicsCreateBroker(s.core_type, "", init)
    if not h.helicsBrokerIsConnected(broker):
        LOG.error("FAILED: could not start on port %d", s.broker_port)
        return 1

    def stop(reason: str) -> None:
        h.helicsBrokerGlobalError(broker, 2, reason)

    stops.on_stop(stop)
    LOG.info(stamp("executing"))  # for dsosim bench scale
    try:
        watch(broker, config, s.stall_timeout_s, base / config.recorder.results_dir)
    finally:
        h.helicsBrokerFree(broker)
        h.helicsCloseLibrary()
    LOG.info(finished_line())
    return 128 + stops.signal if stops.signal else 0


if __name__ == "__main__":
    sys.exit(main())
