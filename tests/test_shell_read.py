"""The federate shell's message read path returns exactly the bytes sent,
whatever their size (it reads HELICS's buffer directly, see ``message_bytes``)."""

from __future__ import annotations

import helics as h

from dsosim.federates.common.shell import message_bytes


def test_message_bytes_are_the_bytes_sent_at_every_size() -> None:
    broker = h.helicsCreateBroker("inproc", "dsosim_read_path", "-f 1")
    info = h.helicsCreateFederateInfo()
    h.helicsFederateInfoSetCoreTypeFromString(info, "inproc")
    h.helicsFederateInfoSetCoreInitString(info, "--federates=1 --broker=dsosim_read_path")
    fed = h.helicsCreateMessageFederate("reader", info)
    try:
        ep = h.helicsFederateRegisterGlobalEndpoint(fed, "reader", "")
        h.helicsFederateEnterExecutingMode(fed)
        payloads = [b"", b"\x00", bytes(range(256)) * 40, b"\x00abc\x00" * 999]
        payloads += [bytes([i % 251]) * (17 * i + 1) for i in range(60)]
        for p in payloads:
            h.helicsEndpointSendBytesTo(ep, p, "reader")
        h.helicsFederateRequestTime(fed, 1.0)
        got = []
        while h.helicsEndpointHasMessage(ep):
            got.append(message_bytes(h.helicsEndpointGetMessage(ep)))
        assert got == payloads
    finally:
        h.helicsFederateDisconnect(fed)
        h.helicsFederateFree(fed)
        h.helicsBrokerDisconnect(broker)
        h.helicsBrokerFree(broker)
