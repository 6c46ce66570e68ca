"""DSO federate: hosts one LDA's distribution operator role on the HELICS bus.

Per interval k (see ``common.schedule``): AGGREGATE reads the aggregators'
bids and sends the LDA curve to the ISO; DISPATCH reads the award and sends
set-points; MEASURE reads the actual responses, runs the power flow and
sends the meter reading to the ISO.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dsosim.federates.common import messages as msg
from dsosim.federates.common.config import FederationConfig, load_federation
from dsosim.federates.common.schedule import Phase, at
from dsosim.federates.common.shell import FederateShell, run_federate
from dsosim.federates.dso.operator import DistributionOperator


def _expect(messages: Sequence[msg.Message], kind: type, interval: int, senders: Sequence[str]) -> dict[str, msg.Message]:
    """Exactly one message of ``kind`` for ``interval`` from each sender."""
    got: dict[str, msg.Message] = {}
    for m in messages:
        if not isinstance(m, kind) or m.interval != interval:
            raise msg.MessageError(m.sender, f"{m.KIND}.interval",
                                   f"unexpected {m.KIND} for interval {m.interval}; "
                                   f"expected {kind.KIND} for interval {interval}")  # type: ignore[attr-defined]
        if m.sender in got:
            raise msg.MessageError(m.sender, m.KIND, f"sent twice for interval {interval}")
        got[m.sender] = m
    missing = sorted(set(senders) - set(got))
    if missing:
        raise RuntimeError(f"interval {interval}: no {kind.KIND} from {missing}")  # type: ignore[attr-defined]
    return got


def run(shell: FederateShell, config: FederationConfig, name: str, base_dir) -> None:  # noqa: ANN001
    cfg = config.dso(name)
    fleets = {a: config.aggregator(a).buses for a in cfg.aggregators}
    operator = DistributionOperator(cfg, fleets, config.time, seed=config.seed, base_dir=base_dir)
    aggs = list(cfg.aggregators)
    dt = config.time.interval_s
    for k in range(config.time.n_intervals):
        shell.advance(at(k, Phase.AGGREGATE, dt))
        bids = _expect(shell.receive(allowed_senders=aggs), msg.FleetBid, k, aggs)
        curve, tables = operator.interface_bid(
            k, {a: {b.location: b.curve for b in m.bids} for a, m in bids.items()})  # type: ignore[attr-defined]
        shell.send(cfg.iso, msg.InterfaceBid(name, k, cfg.td_bus, curve))
        _record(shell, k, tables)

        shell.advance(at(k, Phase.DISPATCH, dt))
        award = _expect(shell.receive(allowed_senders=[cfg.iso]), msg.Award, k, [cfg.iso])[cfg.iso]
        for agg, (setpoints, prices) in sorted(operator.dispatch(k, award.lmp, award.cleared_mw).items()):  # type: ignore[attr-defined]
            shell.send(agg, msg.Dispatch(name, k, setpoints, prices))

        shell.advance(at(k, Phase.MEASURE, dt))
        got = _expect(shell.receive(allowed_senders=aggs), msg.Measurement, k, aggs)
        td_flow, tables = operator.measure(k, {a: m.actual_mw for a, m in got.items()})  # type: ignore[attr-defined]
        shell.send(cfg.iso, msg.Meter(name, k, cfg.td_bus, td_flow))
        _record(shell, k, tables)
        shell.record(k, "traffic", ("interval", "federate", "messages", "bytes"),
                     [(k, name, shell.traffic.messages, shell.traffic.bytes)])
        shell.traffic.messages = shell.traffic.bytes = 0


def _record(shell: FederateShell, k: int, tables: dict) -> None:  # noqa: ANN001
    for table, (cols, rows) in tables.items():
        shell.record(k, table, cols, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsosim.federates.dso")
    parser.add_argument("--config", required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    config, base = load_federation(args.config)
    return run_federate(
        args.name,
        lambda: FederateShell(args.name, config.helics, recorder=config.recorder.name),
        lambda shell: run(shell, config, args.name, base),
    )


if __name__ == "__main__":
    sys.exit(main())
