"""Result store: parts survive a crash, incomplete runs say so, bytes are stable."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from dsosim.federates.recorder.store import ResultStore


def _fill(store: ResultStore, n: int) -> None:
    for k in range(n):
        store.add("market", ("interval", "bus", "lmp"), [(k, 1, 20.0 + k), (k, 2, 21)])
        store.end_interval(k)


def test_flushed_parts_readable_before_finish(tmp_path: Path) -> None:
    store = ResultStore(tmp_path, flush_every=2)
    _fill(store, 5)  # intervals 0-3 flushed, interval 4 buffered
    # as if the process died here:
    frame = pd.read_parquet(tmp_path / "market")
    assert sorted(frame["interval"].unique()) == [0, 1, 2, 3]
    assert frame["lmp"].dtype == float  # the int 21 was promoted, not a mixed column
    assert json.loads((tmp_path / "summary.json").read_text())["complete"] is False


def test_finish_incomplete_keeps_rows_and_error(tmp_path: Path) -> None:
    store = ResultStore(tmp_path, flush_every=100)
    _fill(store, 3)
    summary = store.finish(complete=False, error="dso1 failed", summarise=lambda d: {"n": 1})
    assert summary["complete"] is False
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["error"] == "dso1 failed" and on_disk["status"] == "incomplete"
    assert len(pd.read_parquet(tmp_path / "market")) == 6


def test_same_rows_same_bytes_and_old_results_removed(tmp_path: Path) -> None:
    digests = []
    for _ in range(2):
        store = ResultStore(tmp_path, flush_every=2)
        _fill(store, 3)
        store.finish(complete=True, error=None, summarise=lambda d: {})
        files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
        digests.append(
            {p.name + p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
        )
    assert digests[0] == digests[1]
    assert len(list((tmp_path / "market").glob("part-*.parquet"))) == 2


def test_timestamp_column_follows_interval(tmp_path: Path) -> None:
    from dsosim.federates.common.config import TimeSettings

    time = TimeSettings(
        interval_s=3600.0, n_intervals=30, start=datetime.fromisoformat("2026-07-20T22:00")
    )
    store = ResultStore(tmp_path, flush_every=100, clock=time.timestamp)
    store.add("market", ("interval", "bus", "lmp"), [(0, 1, 20.0), (3, 1, 21.0)])
    store.add("other", ("bus", "lmp"), [(1, 20.0)])  # no interval: no timestamp
    store.finish(complete=True, error=None, summarise=lambda d: {})
    frame = pd.read_parquet(tmp_path / "market")
    assert list(frame.columns) == ["interval", "timestamp", "bus", "lmp"]
    assert frame["timestamp"].tolist() == [
        pd.Timestamp("2026-07-20 22:00"),
        pd.Timestamp("2026-07-21 01:00"),  # the next day: multi-day runs carry dates
    ]
    assert list(pd.read_parquet(tmp_path / "other").columns) == ["bus", "lmp"]


def test_a_column_whose_type_shows_only_later_keeps_every_part_readable(tmp_path: Path) -> None:
    """All None in the first flush (Arrow's null type), floats and ints later:
    the table gets the wider type, earlier parts are rewritten in it."""
    store = ResultStore(tmp_path, flush_every=1)
    cols = ("interval", "x", "n", "note")
    store.add("t", cols, [(0, None, 1, None)])
    store.end_interval(0)
    store.add("t", cols, [(1, 1.5, 2.5, "a")])
    store.end_interval(1)
    store.add("t", cols, [(2, None, 3, None)])
    store.end_interval(2)
    got = pd.read_parquet(tmp_path / "t").sort_values("interval")
    assert got["x"].isna().tolist() == [True, False, True] and got["x"].iloc[1] == 1.5
    assert got["n"].tolist() == [1.0, 2.5, 3.0] and got["note"].iloc[1] == "a"
    store.add("t", cols, [(3, "not a number", 4, None)])
    with pytest.raises(ValueError, match="table 't': column types changed"):
        store.end_interval(3)


def test_a_row_of_the_wrong_width_is_refused_naming_the_table(tmp_path: Path) -> None:
    """Rows are taken column by column at the flush: a row that is short (or
    long) must not shift or drop values silently."""
    store = ResultStore(tmp_path, flush_every=100)
    store.add("market", ("interval", "bus", "lmp"), [(0, 1, 20.0), (0, 2)])
    with pytest.raises(ValueError, match=r"table 'market': rows of \[2, 3\] values for 3"):
        store.flush()


def test_a_stop_announced_before_a_hard_death_keeps_its_reason(tmp_path: Path) -> None:
    """A recorder told to stop writes its reason at once (from its signal
    watcher); if it then dies before summarising, its guardian summarises the
    parts on disk under that reason instead of the generic 'killed' one."""
    import subprocess
    import sys

    from dsosim.federates.recorder.store import KILLED_RECORDER

    store = ResultStore(tmp_path, flush_every=2)
    for k in range(4):  # two parts on disk
        columns = ("interval", "hours", "generation_cost", "congestion_rent", "shed_mw", "status")
        store.add("iso", (*columns, "bids"), [(k, 1 / 12, 100.0, 0.0, 0.0, "optimal", 3)])
        store.end_interval(k)
    store.announce_stop("stopped at interval 4: recorder stopped by SIGTERM")
    bare = json.loads((tmp_path / "summary.json").read_text())
    assert bare == {
        "complete": False,
        "status": "incomplete",
        "error": "stopped at interval 4: recorder stopped by SIGTERM",
    }
    # the process dies here; its guardian sees the pipe close (stdin at EOF)
    guardian = [sys.executable, "-m", "dsosim.federates.recorder.guardian", str(tmp_path)]
    subprocess.run(guardian, stdin=subprocess.DEVNULL, check=True, timeout=120)
    after = json.loads((tmp_path / "summary.json").read_text())
    assert after["error"] == bare["error"] != KILLED_RECORDER
    assert after["status"] == "incomplete" and after["complete"] is False
    # summarised from the parts on disk
    assert after["intervals"] == 4 and after["generation_cost"] == 400.0


def test_a_finishing_store_ignores_a_late_stop_announcement(tmp_path: Path) -> None:
    store = ResultStore(tmp_path, flush_every=100)
    _fill(store, 3)
    store.finish(complete=False, error="dso1 failed", summarise=lambda d: {"n": 1})
    store.announce_stop("late")  # the watcher thread, after the main thread finished
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["error"] == "dso1 failed" and on_disk["n"] == 1
