"""Fault sweep, the results on disk: a writer killed mid-flush never leaves a
table unreadable, and a full disk is a named, incomplete stop (issue item 5)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import uuid
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from dsosim.federates.recorder.store import ResultStore, StoreError


def _fill(store: ResultStore, first: int, n: int, width: int = 1) -> None:
    for k in range(first, first + n):
        store.add("dispatch", ("interval", "loc", "mw"), [(k, f"b{i}", 0.5) for i in range(width)])
        store.end_interval(k)


def test_a_part_interrupted_mid_write_leaves_the_table_readable(tmp_path, monkeypatch) -> None:
    store = ResultStore(tmp_path, flush_every=2)
    _fill(store, 0, 2)  # one good part

    def killed(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")  # what a kill mid-write leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(pq, "write_table", killed)
    with pytest.raises(KeyboardInterrupt):
        _fill(store, 2, 2)
    assert len(pd.read_parquet(tmp_path / "dispatch")) == 2
    # even a temporary left behind by SIGKILL (no clean-up possible) is invisible
    (tmp_path / "dispatch" / ".part-00001.parquet.tmp").write_bytes(b"PAR1 half")
    assert len(pd.read_parquet(tmp_path / "dispatch")) == 2


def test_disk_full_is_a_named_incomplete_stop(tmp_path, monkeypatch) -> None:
    store = ResultStore(tmp_path, flush_every=2)
    _fill(store, 0, 2)

    def full(table, where, **kwargs):
        Path(where).write_bytes(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(StoreError, match="cannot write results table 'dispatch': disk full"):
        _fill(store, 2, 2)
    assert not list((tmp_path / "dispatch").glob(".*.tmp"))
    summary = store.finish(complete=True, error=None, summarise=lambda d: {"intervals": 2})
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert summary["complete"] is False and summary["status"] == "incomplete"
    assert "disk full" in summary["error"]


def test_a_stop_for_a_full_disk_says_so_once(tmp_path, monkeypatch) -> None:
    store = ResultStore(tmp_path, flush_every=100)
    _fill(store, 0, 2)

    def full(table, where, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    stop = "stopped at interval 2: StoreError: [Errno 28] cannot write results table 'dispatch': "
    stop += "disk full (no space left on device)"
    summary = store.finish(complete=False, error=stop, summarise=lambda d: {})
    assert summary["error"] == stop  # the final flush failed the same way: not said twice


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 1 MiB tmpfs (needs root and mount; skipped elsewhere)."""
    where = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_really_full_disk(tiny_disk: Path) -> None:
    store = ResultStore(tiny_disk / "results", flush_every=1)
    with pytest.raises(StoreError, match="disk full"):
        for k in range(10_000):
            store.add(
                "dispatch", ("interval", "loc", "note"), [(k, "b", os.urandom(64).hex())] * 400
            )
            store.end_interval(k)
    summary = store.finish(complete=True, error=None, summarise=lambda d: {})
    assert summary["status"] == "incomplete" and "disk full" in summary["error"]
    on_disk = json.loads((tiny_disk / "results" / "summary.json").read_text())
    assert on_disk["status"] == "incomplete"
    assert len(pd.read_parquet(tiny_disk / "results" / "dispatch")) > 0
