"""A misbehaving third-party aggregator for failure tests.

Joins the federation under a real aggregator's name and sends well-formed
bids (zero flexibility) until interval ``bad_interval``, where it either
sends a bid whose price is NaN (``nan``: the DSO must reject it naming this
sender and the field) or dies by SIGKILL (``kill``: a crash with no goodbye,
as an out-of-memory kill would be). Either way the federation must stop
promptly with the results so far readable and marked incomplete.
"""

from __future__ import annotations

import os
import signal
import sys

import msgpack

from dsosim.federates.common import messages as msg
from dsosim.federates.common.config import load_federation
from dsosim.federates.common.curves import BidCurve, PlacedCurve
from dsosim.federates.common.schedule import Phase, at
from dsosim.federates.common.shell import FederateShell, run_federate


def main() -> int:
    config_path, name, bad_interval, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    config, _ = load_federation(config_path)
    cfg = config.aggregator(name)

    def body(shell: FederateShell) -> None:
        for k in range(config.time.n_intervals):
            shell.advance(at(k, Phase.BID, config.time))
            if k == bad_interval and mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if k == bad_interval:
                raw = msgpack.packb(
                    {
                        "v": 1,
                        "kind": "fleet_bid",
                        "sender": name,
                        "interval": k,
                        "bids": [[b, [0.0, [[float("nan"), 1.0]]]] for b in cfg.buses],
                    }
                )
                import helics as h

                h.helicsEndpointSendBytesTo(shell._endpoint, raw, cfg.dso)
            else:
                shell.send(
                    cfg.dso,
                    msg.FleetBid(name, k, tuple(PlacedCurve(b, BidCurve(0.0)) for b in cfg.buses)),
                )
            shell.advance(at(k, Phase.REPORT, config.time))
            received = shell.receive()
            setpoints = received[0].setpoints_mw  # type: ignore[union-attr]
            shell.send(cfg.dso, msg.Measurement(name, k, dict(setpoints), dict(setpoints)))

    return run_federate(
        name, lambda: FederateShell(name, config.helics, recorder=config.recorder.name), body
    )


if __name__ == "__main__":
    sys.exit(main())
