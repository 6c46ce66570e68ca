"""An in-process HELICS broker, started as one entry of a runner file.

Started from Python (not the ``helics_broker`` wrapper) so that stopping it
never orphans a broker process holding the port, and on a port chosen per
run with its own broker key (see HELICS-NOTES in the design docs).
"""

from __future__ import annotations

import argparse
import sys

import helics as h

from dsosim.federates.common.log import federate_log
from dsosim.federates.common.usage import finished_line, stamp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsosim.federates.broker")
    parser.add_argument("--federates", type=int, required=True)
    parser.add_argument("--core-type", default="zmq")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", default="")
    parser.add_argument(
        "--interface",
        default="127.0.0.1",
        help="address to listen on (loopback unless told otherwise)",
    )
    parser.add_argument(
        "--max-duration",
        type=int,
        default=3600,
        help="wall-clock seconds after which a stuck federation is ended",
    )
    args = parser.parse_args(argv)
    log = federate_log("broker")
    init = (
        f"-f {args.federates} --port={args.port} --local_interface={args.interface}"
        f" --maxcosimduration={args.max_duration}s"
    )
    if args.key:
        init += f" --brokerkey={args.key}"
    broker = h.helicsCreateBroker(args.core_type, "", init)
    if not h.helicsBrokerIsConnected(broker):
        log.error("could not start on port %d", args.port)
        return 1
    log.info(stamp("executing"))  # for dsosim bench scale
    h.helicsBrokerWaitForDisconnect(broker, -1)
    h.helicsBrokerFree(broker)
    h.helicsCloseLibrary()
    log.info(finished_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
