"""Real-time federations with the HIL gateway and the device emulator, through
``helics run``: fallback and recovery when the emulator is killed and
restarted, the unavailable fallback for a device that stops answering, and
CURVE authentication keeping a plaintext impostor out."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from dsosim.runner.build.federation import BuildResult, build, free_port
from dsosim.runner.launch import LaunchOutcome, launch
from tests.federation import ROOT, SCENARIOS

pytestmark = [pytest.mark.federation, pytest.mark.slow]
INTERVALS = 40
STEP_S = 0.5


def _scenario(tmp: Path, *, fallback: str, extra: str = "") -> Path:
    """configs/scenarios/hil.toml at 0.5 s per interval, sub-steps 50 ms."""
    text = (SCENARIOS / "hil.toml").read_text()
    for old, new in (
        ("step_s = 1.0", f"step_s = {STEP_S}"),
        ("substep_s = 0.1", "substep_s = 0.05"),
        ('fallback = "hold"', f'fallback = "{fallback}"'),
        ("wait_s = 30", "wait_s = 20"),
        ("../feeders/ieee13/Master.dss", str(ROOT / "configs/feeders/ieee13/Master.dss")),
    ):
        assert old in text, old
        text = text.replace(old, new)
    text = text.replace("[hil]\n", f"[hil]\n{extra}")
    path = tmp / "hil.toml"
    path.write_text(text)
    return path


def _emulator(address: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "dsosim.runner.cli", "hil-device", "--connect", address, *args]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    proc.wait(timeout=10)


class _Federation:
    """Builds on free ports (here: OpenDSS is not to be used from two threads)
    and launches in a thread (launch blocks)."""

    def __init__(self, scenario: Path, out: Path) -> None:
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.out = out
        built = build(
            scenario, out, hours=INTERVALS * 5 / 60, port=free_port(), hil_bind=self.address
        )
        self.result: tuple[BuildResult, LaunchOutcome] | None = None
        self.thread = threading.Thread(
            target=lambda: setattr(
                self, "result", (built, launch(built.runner, built.results_dir, timeout_s=240))
            ),
            daemon=True,
        )
        self.thread.start()

    def wait_started(self, timeout_s: float = 60) -> None:
        """Until the gateway says every device is connected (the clock starts)."""
        log = self.out / "hil.log"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if log.exists() and "all devices connected" in log.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise AssertionError(
            f"the gateway never saw its devices: {log.read_text() if log.exists() else 'no log'}"
        )

    def join(self) -> tuple[BuildResult, LaunchOutcome]:
        self.thread.join(timeout=300)
        assert self.result is not None, "federation did not finish"
        return self.result


def _hil(results: Path) -> pd.DataFrame:
    return (
        pd.read_parquet(results / "hil").sort_values(["device", "interval"]).reset_index(drop=True)
    )


def test_killed_emulator_gets_hold_fallback_and_recovers(tmp_path: Path) -> None:
    fed = _Federation(_scenario(tmp_path, fallback="hold"), tmp_path / "run")
    log = tmp_path / "emulator.log"
    emulator = _emulator(fed.address, log, "--device", "bat1", "--device", "pv1")
    try:
        fed.wait_started()
        time.sleep(10 * STEP_S)
        _kill(emulator)  # unplugged mid-run
        time.sleep(8 * STEP_S)
        emulator = _emulator(fed.address, log, "--device", "bat1", "--device", "pv1")
        built, outcome = fed.join()
    finally:
        _kill(emulator, signal.SIGINT)
    assert outcome.ok, outcome.failure
    assert outcome.summary["intervals"] == INTERVALS
    assert outcome.summary["settlement_residual"] == 0.0
    hil = _hil(built.results_dir)
    assert len(hil) == 2 * INTERVALS
    for device, rows in hil.groupby("device"):
        status = rows["status"].tolist()
        assert status[0] == "ok" and status[-1] == "ok", (device, status)
        out = rows[rows["fallback"] != "none"]
        assert len(out) >= 4, (device, status)  # the outage shows, interval by interval
        assert set(out["status"]) <= {"disconnected", "timeout"}
        assert set(out["fallback"]) == {"hold"}
        first_out = int(out["interval"].min())
        back = rows[(rows["interval"] > out["interval"].max())]
        assert (back["fallback"] == "none").all() and len(back) >= 3, (device, status)  # recovered
        held = rows[rows["interval"] == first_out - 1]["used_mw"].item()
        # hold: the last measured output stands for every interval of the outage
        assert out["used_mw"].tolist() == pytest.approx([held] * len(out))
        assert out["measured_kw"].isna().all()
        answered = rows[rows["fallback"] == "none"]
        scale = {"bat1": 5.0 / 165.739, "pv1": 3.0 / 604.825}[str(device)]
        assert answered["used_mw"].tolist() == pytest.approx(
            (answered["measured_kw"] / scale / 1000).tolist(), rel=1e-4
        )
    gateway = pd.read_parquet(built.results_dir / "hil_gateway")
    assert gateway["hellos"].sum() >= 4  # both devices, twice
    # the measured battery output is what the fleet reported to the grid
    ders = pd.read_parquet(built.results_dir / "ders")
    bat = ders[
        (ders["aggregator"] == "agg_storage") & (ders["bus"] == "634") & (ders["type"] == "battery")
    ]
    bat1 = hil[hil["device"] == "bat1"].set_index("interval")
    merged = bat.set_index("interval").join(bat1["used_mw"])
    assert merged["actual_mw"].tolist() == pytest.approx(merged["used_mw"].tolist(), abs=1e-9)
    # real time: one row per grant, and no grant before its wall-clock time (rt_lead = 0)
    rt = pd.read_parquet(built.results_dir / "realtime")
    assert (rt[rt["federate"] == "hil"].groupby("interval").size() == 2).all()
    assert rt["lag_ms"].min() > -5.0
    assert outcome.summary["hil_fallback"] == int((hil["fallback"] != "none").sum())


def test_silent_device_is_unavailable_and_curve_keeps_impostors_out(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dsosim.runner.cli",
            "hil-keys",
            str(keys),
            "--name",
            "gateway",
            "--name",
            "bat1",
            "--name",
            "pv1",
        ],
        check=True,
        capture_output=True,
    )
    allowed = tmp_path / "authorized"
    allowed.mkdir()
    for name in ("bat1", "pv1"):
        shutil.copy(keys / f"{name}.key", allowed)
    extra = (
        f'curve_secret_key = "{keys / "gateway.key_secret"}"\ncurve_authorized_dir = "{allowed}"\n'
    )
    fed = _Federation(_scenario(tmp_path, fallback="unavailable", extra=extra), tmp_path / "run")
    log = tmp_path / "emulator.log"
    devices = []
    for name in ("bat1", "pv1"):
        devices.append(
            _emulator(
                fed.address,
                log,
                "--device",
                name,
                "--silent-after",
                "8",
                "--curve-server-key",
                str(keys / "gateway.key"),
                "--curve-key",
                str(keys / f"{name}.key_secret"),
            )
        )
    impostor = None
    try:
        fed.wait_started()
        # a plaintext client claiming bat1 and answering everything: refused at the handshake
        impostor = _emulator(fed.address, tmp_path / "impostor.log", "--device", "bat1")
        built, outcome = fed.join()
    finally:
        for p in [*devices, *([impostor] if impostor else [])]:
            _kill(p, signal.SIGINT)
    assert outcome.ok, outcome.failure
    hil = _hil(built.results_dir)
    for device, rows in hil.groupby("device"):
        status = rows["status"].tolist()
        assert status[:8] == ["ok"] * 8, (device, status)
        assert set(status[8:]) == {"timeout"}, (device, status)  # connected, never answering again
        silent = rows[rows["interval"] >= 8]
        assert set(silent["fallback"]) == {"unavailable"}
        assert (silent["used_mw"] == 0.0).all()
    assert (
        pd.read_parquet(built.results_dir / "hil_gateway")["hellos"].sum() == 2
    )  # impostor never heard
    ders = pd.read_parquet(built.results_dir / "ders")
    bat = ders[
        (ders["aggregator"] == "agg_storage") & (ders["bus"] == "634") & (ders["type"] == "battery")
    ]
    later = bat[bat["interval"] > 9]
    # unavailable: no output and nothing offered from the next interval on
    assert (
        (later["actual_mw"] == 0.0).all()
        and (later["max_mw"] == 0.0).all()
        and (later["min_mw"] == 0.0).all()
    )
    early = bat[bat["interval"] < 8]
    assert (early["max_mw"] > 0.1).all()
