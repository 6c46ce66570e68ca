"""ISO federate: hosts the wholesale market role on the HELICS bus.

Per interval k (see ``common.schedule``): at CLEAR it reads the DSOs'
interface bids for k and their meter readings for k-1, settles k-1's
imbalance, clears k and sends each DSO its award.
"""

from __future__ import annotations

import argparse
import sys

from dsosim.federates.common import messages as msg
from dsosim.federates.common.config import FederationConfig, load_federation
from dsosim.federates.common.schedule import Phase, at
from dsosim.federates.common.shell import FederateShell, run_federate
from dsosim.federates.iso.wholesale import WholesaleMarket


def run(shell: FederateShell, config: FederationConfig) -> None:
    market = WholesaleMarket(config.iso, config.time, seed=config.seed)
    dsos = sorted(market.interfaces)
    n = config.time.n_intervals
    for k in range(n + 1):
        shell.advance(at(k, Phase.CLEAR, config.time.interval_s))
        bids, meters = {}, {}
        for m in shell.receive(allowed_senders=dsos):
            if isinstance(m, msg.InterfaceBid) and m.interval == k < n:
                if m.td_bus != market.interfaces[m.sender]:
                    raise msg.MessageError(m.sender, "interface_bid.td_bus",
                                           f"{m.td_bus} is not its T-D bus {market.interfaces[m.sender]}")
                bids[m.sender] = m.curve
            elif isinstance(m, msg.Meter) and m.interval == k - 1:
                meters[m.sender] = m.actual_mw
            else:
                raise msg.MessageError(m.sender, f"{m.KIND}.interval",
                                       f"unexpected {m.KIND} for interval {m.interval} at interval {k}")
        if k > 0:
            for table, (cols, rows) in market.settle_imbalance(k - 1, meters).items():
                shell.record(k - 1, table, cols, rows)
        if k == n:
            break
        clearing = market.clear(k, bids)
        for dso, (td_bus, lmp, energy, congestion, cleared) in sorted(clearing.awards.items()):
            shell.send(dso, msg.Award(shell.name, k, td_bus, lmp, energy, congestion, cleared))
        for table, (cols, rows) in clearing.tables.items():
            shell.record(k, table, cols, rows)
        shell.record(k, "traffic", ("interval", "federate", "messages", "bytes"),
                     [(k, shell.name, shell.traffic.messages, shell.traffic.bytes)])
        shell.traffic.messages = shell.traffic.bytes = 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsosim.federates.iso")
    parser.add_argument("--config", required=True)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    config, _ = load_federation(args.config)
    name = config.iso.name
    return run_federate(
        name,
        lambda: FederateShell(name, config.helics, recorder=config.recorder.name),
        lambda shell: run(shell, config),
    )


if __name__ == "__main__":
    sys.exit(main())
