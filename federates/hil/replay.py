"""Record and replay what hardware answered (plain Python, no sockets, no HELICS).

Every HIL run records each device's two exchanges per interval in the
``hil_answers`` table (:data:`ANSWER_COLUMNS`): whether it answered, and the
measurement as received. ``dsosim replay RUN_DIR`` reruns the federation as a
pure simulation (no real time, no devices) with a :class:`ReplayGateway` in
place of the :class:`~dsosim.federates.hil.gateway.Gateway`: it hands the HIL
federate the recorded exchanges, so the plausibility checks, the fallbacks and
every federate downstream see exactly what they saw in the real-time run and,
the federation being deterministic, produce the same results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsosim.federates.hil.gateway import COUNTERS, Exchange
from dsosim.federates.hil.protocol import Measurement, Setpoint

ANSWER_COLUMNS = (
    "interval",
    "device",
    "request",
    "seq",
    "status",
    "p_kw",
    "soc",
    "device_status",
    "answers",
    "rtt_ms",
    "protocol",
)
"""``hil_answers``: one row per device, interval and request (``setpoint``,
``read``); ``status`` ``ok`` (answered: the measurement follows), ``timeout``
or ``disconnected``."""


def answer_rows(
    interval: int, request: str, seq: int, exchanges: dict[str, Exchange]
) -> list[tuple[object, ...]]:
    """The recorded rows of one round."""
    rows: list[tuple[object, ...]] = []
    for device in sorted(exchanges):
        ex = exchanges[device]
        m = ex.measurement
        # NaN and "" rather than None: see ``loop.HardwareLoop.rows``
        rows.append(
            (
                interval,
                device,
                request,
                seq,
                ex.status,
                math.nan if m is None else m.p_kw,
                math.nan if m is None or m.soc is None else m.soc,
                "" if m is None else m.status,
                "" if m is None or m.answers is None else m.answers,
                math.nan if ex.rtt_ms is None else ex.rtt_ms,
                ex.version or 0,
            )
        )
    return rows


class ReplayError(RuntimeError):
    """The recording cannot be replayed (missing, incomplete, malformed)."""


def _none(value: Any) -> Any:
    """A missing value as recorded (NaN, "", 0 for the protocol) or as pandas
    reads it (None) -> None."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


class ReplayGateway:
    """Stands in for the gateway with the recorded answers of a run
    (``results_dir``: its results folder). Same calls as ``Gateway``."""

    def __init__(self, results_dir: str | Path, devices: Sequence[str]) -> None:
        import pandas as pd  # only replays need it: the live gateway starts fast

        folder = Path(results_dir)
        answers = folder / "hil_answers"
        if not answers.is_dir():
            raise ReplayError(
                f"{answers} not found: the run recorded no device answers (a run from "
                f"before recording, or not a HIL run)"
            )
        table = pd.read_parquet(answers)
        missing = sorted(set(ANSWER_COLUMNS) - set(table.columns))
        if missing:
            raise ReplayError(f"{answers}: columns {missing} missing")
        self._answers: dict[tuple[int, str, str], Exchange] = {}
        for row in table.itertuples(index=False):
            status = str(row.status)
            m = None
            if status == "ok":
                m = Measurement(
                    str(row.device),
                    int(row.seq),
                    float(row.p_kw),
                    _none(row.soc),
                    str(row.device_status),
                    _none(row.answers),
                )
            version = _none(row.protocol) or None
            self._answers[(int(row.interval), str(row.device), str(row.request))] = Exchange(
                str(row.device),
                status,
                _none(row.rtt_ms),
                m,
                None if version is None else int(version),
            )
        self._counters: dict[int, dict[str, int]] = {}
        self._connected: dict[int, int] = {}
        self._read_wall: dict[int, float | None] = {}
        gateway = folder / "hil_gateway"
        if gateway.is_dir():
            for rec in pd.read_parquet(gateway).to_dict("records"):
                k = int(rec["interval"])
                self._connected[k] = int(rec["connected"])
                self._counters[k] = {c: int(rec.get(c, 0) or 0) for c in COUNTERS}
                self._read_wall[k] = _none(rec.get("read_wall_s"))
        self.devices = tuple(devices)
        self._interval = -1
        self.endpoint = f"replay of {folder}"

    # the Gateway calls the HIL federate makes

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def set_soc(self, device: str, soc: float | None) -> None:
        pass

    def setpoints(self, items: Sequence[Setpoint]) -> dict[str, Exchange]:
        if items:
            self._interval = items[0].interval
        return {sp.device: self._get(sp.device, "setpoint") for sp in items}

    def read(self, items: Sequence[tuple[str, int]]) -> dict[str, Exchange]:
        return {device: self._get(device, "read") for device, _ in items}

    def connected(self) -> list[str]:
        """As many entries as devices were connected in the recording (the
        ids are not recorded; only the number goes into the results)."""
        return ["(recorded)"] * self._connected.get(self._interval, 0)

    def read_wall_s(self) -> float | None:
        """When the run read its devices this interval (its gateway's clock;
        None in recordings from before it was recorded)."""
        return self._read_wall.get(self._interval)

    def take_counters(self) -> dict[str, int]:
        return dict(self._counters.get(self._interval, dict.fromkeys(COUNTERS, 0)))

    def _get(self, device: str, request: str) -> Exchange:
        try:
            return self._answers[(self._interval, device, request)]
        except KeyError:
            raise ReplayError(
                f"the recording has no {request} answer of {device!r} for interval "
                f"{self._interval} (was the run stopped before it?)"
            ) from None
